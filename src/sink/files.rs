//! A table's data files in the warehouse: opening the warehouse, where a file goes, its upload
//! (one put, or a multipart upload fed with the parts of a file still being written) and its
//! description for a commit. Knows nothing of epochs or commits.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use iceberg::spec::{DataFile, Schema};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::SinkError;
use super::encode::EncodedFile;
use super::stats;
use super::storage::MEMORY_ROOT;
use super::storage::ObjectStoreStorage;
use super::upload::Target;
use crate::config::WarehouseLocation;
/// Opens the warehouse a run writes to and proves it writable by writing and deleting a probe
/// object through the store the run will use. Returns the storage and the warehouse URL
/// (`file:///abs/dir` or `s3://bucket/prefix`).
pub async fn open_warehouse(
    location: &WarehouseLocation,
) -> Result<(ObjectStoreStorage, String), SinkError> {
    let shown = match location {
        WarehouseLocation::Local(dir) => dir.to_path_buf(),
        WarehouseLocation::S3 { bucket, prefix } => {
            PathBuf::from(format!("s3://{bucket}/{prefix}"))
        }
        WarehouseLocation::Memory => PathBuf::from("memory://"),
    };
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| SinkError::WarehouseNotWritable {
        path: shown.clone(),
        source,
    };
    let (storage, url) = match location {
        WarehouseLocation::Local(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.into()))?;
            let abs = std::fs::canonicalize(dir).map_err(|e| fail(e.into()))?;
            (
                ObjectStoreStorage::local(),
                format!("file://{}", abs.display()),
            )
        }
        WarehouseLocation::S3 { bucket, prefix } => {
            let storage = ObjectStoreStorage::s3(bucket).map_err(|e| fail(e.into()))?;
            let url = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            };
            (storage, url)
        }
        WarehouseLocation::Memory => (ObjectStoreStorage::memory(), MEMORY_ROOT.to_string()),
    };
    let store = storage.store().map_err(|e| fail(e.into()))?;
    let probe = format!("{url}/.icefall-write-check-{}", uuid::Uuid::new_v4());
    let probe = storage.locate(&probe).map_err(|e| fail(e.into()))?;
    store
        .put(&probe, PutPayload::from_static(b"icefall"))
        .await
        .map_err(|e| fail(e.into()))?;
    store.delete(&probe).await.map_err(|e| fail(e.into()))?;
    Ok((storage, url))
}

/// Where a table's data files go and how they are described.
#[derive(Debug, Clone)]
pub struct TableFiles {
    pub storage: ObjectStoreStorage,
    /// The table location (`file:///…/ns/table`).
    pub location: String,
    pub schema: Schema,
    pub partition_spec_id: i32,
    /// `--evolve`: the schema grows while the run goes; files are described in the latest.
    pub evolution: Option<Arc<super::evolve::Evolution>>,
}

/// Bytes per part of a streamed file's multipart upload (S3 wants at least 5 MiB but the last).
const STREAM_PART_BYTES: usize = 8 << 20;

/// The multipart upload of a file still being written.
pub(super) struct Stream {
    location: String,
    parts: WriteMultipart,
}

impl Stream {
    fn failed(&self, source: object_store::Error) -> SinkError {
        SinkError::Upload {
            path: self.location.clone(),
            source: Box::new(source),
        }
    }

    /// Hands `parts` to the upload, waiting while `in_flight` part uploads are still running.
    pub(super) async fn push(
        &mut self,
        parts: Vec<Bytes>,
        in_flight: usize,
    ) -> Result<(), SinkError> {
        for p in parts {
            if let Err(e) = self.parts.wait_for_capacity(in_flight).await {
                return Err(self.failed(e));
            }
            self.parts.put(p);
        }
        Ok(())
    }

    /// Uploads the file's last `parts` and completes the upload; returns the file's location.
    pub(super) async fn finish(mut self, parts: Vec<Bytes>) -> Result<String, SinkError> {
        for p in parts {
            self.parts.put(p);
        }
        let Stream { location, parts } = self;
        match parts.finish().await {
            Ok(_) => Ok(location),
            Err(source) => Err(SinkError::Upload {
                path: location,
                source: Box::new(source),
            }),
        }
    }

    /// Gives up the upload of a file that will not be finished.
    pub(super) async fn abort(self) -> Result<(), object_store::Error> {
        self.parts.abort().await
    }
}

pub(super) struct Uploaded {
    pub(super) epoch: u64,
    /// Uploaded in parts while it was written.
    pub(super) streamed: bool,
    pub(super) file: DataFile,
    pub(super) target: Target,
    pub(super) rows: u64,
    pub(super) bytes: u64,
}

impl TableFiles {
    /// Where and how data files of `table` are written, and the Arrow schema to encode in.
    pub fn for_table(
        table: &iceberg::table::Table,
        ident: &crate::config::TableIdent,
        storage: &ObjectStoreStorage,
    ) -> Result<(Self, arrow_schema::SchemaRef), SinkError> {
        let meta = table.metadata();
        let table_schema = meta.current_schema().as_ref().clone();
        let arrow_schema =
            super::schema::arrow_schema(&table_schema).map_err(|source| SinkError::Catalog {
                what: format!("cannot map the schema of {ident} to Arrow"),
                source: Box::new(source),
            })?;
        let files = TableFiles {
            storage: storage.clone(),
            location: meta.location().to_string(),
            schema: table_schema,
            partition_spec_id: meta.default_partition_spec_id(),
            evolution: None,
        };
        Ok((files, arrow_schema))
    }

    /// The store, the path in it and the full location of `rel` (relative to the table).
    fn place(&self, rel: &str) -> Result<(&Arc<dyn ObjectStore>, StorePath, String), SinkError> {
        let location = format!("{}/{}", self.location.trim_end_matches('/'), rel);
        let path: StorePath = self
            .storage
            .locate(&location)
            .map_err(|e| SinkError::Catalog {
                what: format!("cannot place {location}"),
                source: Box::new(e),
            })?;
        let store: &Arc<dyn ObjectStore> =
            self.storage.store().map_err(|e| SinkError::Catalog {
                what: format!("no store for {location}"),
                source: Box::new(e),
            })?;
        Ok((store, path, location))
    }

    /// Writes `bytes` at `rel` (relative to the table location); returns the full location.
    pub async fn put_bytes(&self, rel: &str, payload: PutPayload) -> Result<String, SinkError> {
        let (store, path, location) = self.place(rel)?;
        store
            .put(&path, payload)
            .await
            .map_err(|source| SinkError::Upload {
                path: location.clone(),
                source: Box::new(source),
            })?;
        Ok(location)
    }

    /// Uploads one finished file (`rel` to the table location) and describes it for a commit.
    pub async fn upload(&self, rel: String, file: Box<EncodedFile>) -> Result<DataFile, SinkError> {
        Ok(self.put(0, rel, file, Target::Table, None).await?.file)
    }

    /// Starts the multipart upload of a file at `rel` whose parts come while it is written.
    pub(super) async fn open_stream(&self, rel: &str) -> Result<Stream, SinkError> {
        let (store, path, location) = self.place(rel)?;
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|source| SinkError::Upload {
                path: location.clone(),
                source: Box::new(source),
            })?;
        Ok(Stream {
            location,
            parts: WriteMultipart::new_with_chunk_size(upload, STREAM_PART_BYTES),
        })
    }

    /// Uploads a finished file: in one put, or as the end of the multipart upload its earlier
    /// parts went to.
    pub(super) async fn put(
        &self,
        epoch: u64,
        rel: String,
        mut file: Box<EncodedFile>,
        target: Target,
        stream: Option<Stream>,
    ) -> Result<Uploaded, SinkError> {
        let size = file.size();
        let streamed = stream.is_some();
        let parts = std::mem::take(&mut file.parts);
        let location = match stream {
            None => self.put_bytes(&rel, PutPayload::from_iter(parts)).await?,
            Some(s) => s.finish(parts).await?,
        };
        let grown = self.evolution.as_ref().map(|e| e.schema());
        let data_file = stats::data_file(
            location,
            size,
            &file.metadata,
            grown.as_deref().unwrap_or(&self.schema),
            self.partition_spec_id,
        )?;
        Ok(Uploaded {
            epoch,
            streamed,
            file: data_file,
            target,
            rows: file.rows,
            bytes: size,
        })
    }
}
