//! icefall: a thread-per-core Kafka processor that lands records as Parquet in Apache
//! Iceberg tables, keeping per-key order, with the Kafka offsets in the same snapshot.
//!
//! Records flow `kafka` (icefall's own Kafka client) → `source` (fetch cores on tokio) →
//! `routing` (key hash → shard) → `runtime::bridge` (one SPSC ring per fetch core × shard core)
//! → `shard` (glommio executors: Arrow + Parquet) → `sink` (io core: object_store). `app` wires
//! them; `config` validates flags.
//! See ARCHITECTURE.md for the map.

pub mod app;
pub mod config;
pub mod decode;
pub mod kafka;
pub mod maintain;
pub mod metrics;
pub mod offsets;
pub mod record;
pub mod replay;
pub mod report;
pub mod routing;
pub mod runtime;
pub mod secret;
pub mod shard;
pub mod sink;
pub mod source;
