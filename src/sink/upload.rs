//! The io role: write finished files through `object_store`, a few at a time.
//!
//! Files arrive over the bridge from every shard core. Each is written with one `put`, which the
//! local store stages under a temporary name and renames into place, so a `.parquet` name only
//! ever appears complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::SinkError;
use super::encode::EncodedFile;
use crate::config::TableIdent;
use crate::metrics::IoStats;
use crate::runtime::bridge::Fan;

/// A file a shard core finished, with its path relative to the warehouse.
#[derive(Debug)]
pub struct PendingFile {
    pub path: String,
    pub file: EncodedFile,
}

/// Where a table's files go.
#[derive(Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    root: PathBuf,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("root", &self.root)
            .finish()
    }
}

impl Warehouse {
    /// Opens (creating if needed) a local warehouse directory and proves it is writable by
    /// writing and deleting a probe object through the same store the run will use.
    pub async fn open_local(dir: &Path) -> Result<Self, SinkError> {
        let fail =
            |source: Box<dyn std::error::Error + Send + Sync>| SinkError::WarehouseNotWritable {
                path: dir.to_path_buf(),
                source,
            };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.into()))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| fail(e.into()))?;
        let probe = StorePath::from(format!(".icefall-write-check-{}", uuid::Uuid::new_v4()));
        store
            .put(&probe, PutPayload::from_static(b"icefall"))
            .await
            .map_err(|e| fail(e.into()))?;
        store.delete(&probe).await.map_err(|e| fail(e.into()))?;
        Ok(Self {
            store: Arc::new(store),
            root: dir.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<namespace>/<table>/data`, relative to the warehouse.
    pub fn data_dir(table: &TableIdent) -> String {
        format!("{}/{}/data", table.namespace, table.name)
    }

    async fn put(&self, pending: PendingFile) -> Result<(u64, u64), SinkError> {
        let len = pending.file.bytes.len() as u64;
        let rows = pending.file.rows;
        let location = StorePath::from(pending.path.as_str());
        self.store
            .put(&location, PutPayload::from(pending.file.bytes))
            .await
            .map_err(|source| SinkError::Upload {
                path: pending.path,
                source,
            })?;
        Ok((len, rows))
    }
}

/// Uploads every file the shard cores send until they all close their rings.
pub async fn run(
    mut files: Fan<PendingFile>,
    warehouse: Warehouse,
    max_in_flight: usize,
) -> Result<IoStats, SinkError> {
    let mut stats = IoStats::default();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = files.recv(), if open && in_flight.len() < max_in_flight => match next {
                Some((_, file)) => in_flight.push(warehouse.put(file)),
                None => open = false,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (bytes, rows) = done?;
                stats.files += 1;
                stats.bytes += bytes;
                stats.rows += rows;
            }
        }
    }
    Ok(stats)
}
