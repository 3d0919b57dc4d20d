//! Storage: Parquet encoding, object_store upload.
//!
//! Owns the table's Arrow schema (with Iceberg field ids on every column), the per-core
//! [`encode::FileEncoder`] that turns records into finished Parquet files in memory (raw-record
//! tables page by page through icefall's own writer, `pages`; typed and dead-letter tables
//! through Arrow builders and parquet's `ArrowWriter`), and the io
//! role's [`upload`] loop that writes those files through `object_store`. It is the only module
//! that imports `object_store` and `parquet`. It does not decide *when* a file is closed (the shard
//! state machine does), does not parse values (typed columns come from `crate::decode`) and knows
//! nothing of Kafka clients or executors.

pub mod chunks;
mod columns;
pub mod commit;
pub mod encode;
pub mod evolve;
pub mod files;
pub mod guard;
pub mod lease;
pub mod maintain;
pub mod orphans;
mod pages;
pub mod profile;
pub mod props;
pub mod replace;
pub mod rewrite;
pub mod schema;
pub mod stats;
pub mod storage;
pub mod upload;

use std::path::PathBuf;

/// Storage failures. `WarehouseNotWritable` and `Upload` name the path; all are fatal for a run.
/// A data file as a commit takes it.
pub type DataFile = iceberg::spec::DataFile;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("warehouse {path} is not writable")]
    WarehouseNotWritable {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("encoding Parquet for shard core {core} failed")]
    Encode {
        core: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error(
        "partition {partition} offset {offset}: cannot decode the value ({reason}); give --dlq-table or --dlq-topic to set such records aside"
    )]
    Undecodable {
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("building an Arrow batch for shard core {core} failed")]
    Arrow {
        core: usize,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{what}")]
    Catalog {
        what: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("table {table} cannot take icefall's records: {reason}")]
    IncompatibleTable { table: String, reason: String },
    #[error("committing epoch {epoch} to {table} failed after {attempts} attempt(s)")]
    Commit {
        table: String,
        epoch: u64,
        attempts: u32,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error(
        "epoch {epoch} of {topic} is not committed to {table}: another writer moved its partitions ({moved}); its files are not added and the table keeps that writer's records"
    )]
    Fenced {
        table: String,
        topic: String,
        epoch: u64,
        moved: String,
    },
    #[error("producing dead letters to topic {topic} failed: {reason}")]
    DeadLetterTopic { topic: String, reason: String },
    #[error("reading the checkpoint: {0}")]
    Checkpoint(String),
    #[error("table schema: {reason}")]
    Schema { reason: String },
    #[error("maintaining {table}: {reason}")]
    Maintain { table: String, reason: String },
    #[error("uploading {path} failed")]
    Upload {
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

impl SinkError {
    /// The error that stops a run with no dead-letter destination, naming the record `bad`
    /// points at in `records`.
    pub fn undecodable(
        bad: crate::decode::Rejected,
        partition: i32,
        records: crate::record::Records<'_>,
    ) -> Self {
        SinkError::Undecodable {
            partition,
            offset: records.get(bad.index).map_or(-1, |r| r.offset),
            reason: bad.reason,
        }
    }

    /// True for failures of the catalog or the table (as opposed to the object store).
    pub fn is_catalog(&self) -> bool {
        matches!(
            self,
            SinkError::Catalog { .. }
                | SinkError::IncompatibleTable { .. }
                | SinkError::Commit { .. }
                | SinkError::Checkpoint(_)
                | SinkError::Maintain { .. }
        )
    }
}
