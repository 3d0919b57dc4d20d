//! One storage stack: the iceberg crate's `Storage` trait served by `object_store`, so table
//! metadata, manifests and data files all go through the same store.
//!
//! A location is a URL: `file:///abs/path` (or a bare absolute path) on the local file system, or
//! `s3://bucket/key` on S3 or an S3-compatible store configured by the usual `AWS_*` environment
//! variables (`AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` for S3-compatible stores). The storage is
//! rooted at one scheme and bucket; it refuses locations elsewhere. It serialises as its root URL
//! and rebuilds the store on first use after deserialising (iceberg may ship a `FileIO` around).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

fn err(what: &str, location: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Unexpected, format!("{what} {location}")).with_source(e)
}

/// The root (and warehouse URL) of the in-memory store.
pub const MEMORY_ROOT: &str = "memory://icefall";

fn memory_store() -> Arc<dyn ObjectStore> {
    static STORE: OnceLock<Arc<dyn ObjectStore>> = OnceLock::new();
    STORE
        .get_or_init(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}

/// iceberg `Storage` over an `object_store`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStoreStorage {
    /// `file://` for the local file system.
    root: String,
    #[serde(skip)]
    store: OnceLock<Arc<dyn ObjectStore>>,
}

impl ObjectStoreStorage {
    /// Storage over the local file system.
    pub fn local() -> Self {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        Self {
            root: "file://".into(),
            store: OnceLock::from(store),
        }
    }

    /// Storage in this process's memory: every memory storage of the process shares one store,
    /// so copies (and copies rebuilt from their serialised form) see the same files.
    pub fn memory() -> Self {
        Self {
            root: MEMORY_ROOT.into(),
            store: OnceLock::from(memory_store()),
        }
    }

    /// Storage over one S3 bucket, configured from the `AWS_*` environment variables.
    pub fn s3(bucket: &str) -> Result<Self> {
        let s = Self {
            root: format!("s3://{bucket}"),
            store: OnceLock::new(),
        };
        s.store()?;
        Ok(s)
    }

    pub fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let built: Arc<dyn ObjectStore> = if self.root == "file://" {
            Arc::new(LocalFileSystem::new())
        } else if self.root == MEMORY_ROOT {
            memory_store()
        } else if let Some(bucket) = self.root.strip_prefix("s3://") {
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| err("cannot configure S3 for", &self.root, e))?;
            Arc::new(s3)
        } else {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!("no object store for {}", self.root),
            ));
        };
        Ok(self.store.get_or_init(|| built))
    }

    /// The object path of a location under this storage's root.
    pub fn locate(&self, location: &str) -> Result<Path> {
        if self.root != "file://" {
            let key = location
                .strip_prefix(self.root.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::DataInvalid,
                        format!("{location} is not under {}", self.root),
                    )
                })?;
            return Path::parse(key).map_err(|e| err("invalid location", location, e));
        }
        let abs = if let Some(rest) = location.strip_prefix("file://") {
            rest
        } else if let Some(rest) = location.strip_prefix("file:") {
            rest
        } else if location.starts_with('/') {
            location
        } else {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("{location} is not a local location (file:// or an absolute path)"),
            ));
        };
        Path::parse(abs.trim_start_matches('/')).map_err(|e| err("invalid location", location, e))
    }

    fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStoreStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.store()?.head(&self.locate(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(err("cannot stat", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let meta = self
            .store()?
            .head(&self.locate(path)?)
            .await
            .map_err(|e| err("cannot stat", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let got = self
            .store()?
            .get(&self.locate(path)?)
            .await
            .map_err(|e| err("cannot read", path, e))?;
        got.bytes().await.map_err(|e| err("cannot read", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(Reader {
            store: self.store()?.clone(),
            path: self.locate(path)?,
            location: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        self.store()?
            .put(&self.locate(path)?, PutPayload::from(bs))
            .await
            .map_err(|e| err("cannot write", path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(Writer {
            storage: self.clone(),
            location: path.to_string(),
            buf: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store()?.delete(&self.locate(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err("cannot delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let store = self.store()?;
        let prefix = self.locate(path)?;
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| err("cannot list", path, e))?;
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err("cannot delete", meta.location.as_ref(), e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(self.shared(), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(self.shared(), path.to_string()))
    }
}

struct Reader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
}

#[async_trait]
impl FileRead for Reader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|e| err("cannot read", &self.location, e))
    }
}

/// Buffers a (metadata-sized) file and puts it whole on close: it appears complete or not at all.
struct Writer {
    storage: ObjectStoreStorage,
    location: String,
    buf: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for Writer {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("{} is already closed", self.location),
            ));
        }
        self.closed = true;
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        self.storage.write(&self.location, bytes).await
    }
}

/// Hands catalogs the shared storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStoreStorageFactory {
    storage: ObjectStoreStorage,
}

impl ObjectStoreStorageFactory {
    pub fn new(storage: ObjectStoreStorage) -> Self {
        Self { storage }
    }
}

#[typetag::serde]
impl StorageFactory for ObjectStoreStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_files_and_refuses_foreign_locations() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectStoreStorage::local();
        let loc = format!("file://{}/a/b.json", dir.path().display());
        assert!(!s.exists(&loc).await.unwrap());
        let mut w = s.writer(&loc).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(
            !s.exists(&loc).await.unwrap(),
            "nothing appears before close"
        );
        w.close().await.unwrap();
        assert_eq!(
            s.read(&loc).await.unwrap(),
            Bytes::from_static(b"hello world")
        );
        assert_eq!(s.metadata(&loc).await.unwrap().size, 11);
        let r = s.reader(&loc).await.unwrap();
        assert_eq!(r.read(6..11).await.unwrap(), Bytes::from_static(b"world"));
        s.delete_prefix(&format!("{}/a", dir.path().display()))
            .await
            .unwrap();
        assert!(!s.exists(&loc).await.unwrap());
        assert!(s.locate("s3://bucket/x").is_err());
        let s3 = ObjectStoreStorage {
            root: "s3://b".into(),
            store: OnceLock::new(),
        };
        assert_eq!(
            s3.locate("s3://b/wh/ns/t/data/x.parquet").unwrap().as_ref(),
            "wh/ns/t/data/x.parquet"
        );
        assert!(s3.locate("s3://other/x").is_err());
        assert!(s3.locate("/tmp/x").is_err());
        let again: ObjectStoreStorage =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        again.write(&loc, Bytes::from_static(b"x")).await.unwrap();
        assert!(s.exists(&loc).await.unwrap());
    }
}
