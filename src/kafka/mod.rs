//! icefall's Kafka client: the only code that speaks the Kafka wire protocol.
//!
//! Owns connections (framing, correlation ids, ApiVersions negotiation), cluster metadata and the
//! leader cache, Fetch, ListOffsets and Produce, and the record-batch codec ([`batch`] reads
//! batches in place and transaction-aware; [`encode`] writes them). Requests and responses use
//! the message codecs of the `kafka-protocol` crate; record batches are read by icefall's own
//! decoder (kafka-protocol's collapses duplicate header keys and trusts counts). It knows no
//! shard, router, table or storage: callers get offsets, spans and shared buffers.

pub mod assign;
pub mod batch;
pub mod client;
pub mod codec;
pub mod conn;
pub mod coordinator;
pub mod encode;
pub mod error;
pub mod fetch;
pub mod group;
pub mod produce;
pub mod sasl;
pub mod session;
pub mod tls;

pub use batch::{Aborted, BatchError, Decoded, Decoder, Isolation, Problem};
pub use client::{Client, ClientConfig, OffsetAt};
pub use codec::{Codec, CodecError};
pub use conn::{Conn, ConnConfig, Security};
pub use error::KafkaError;
pub use produce::{HeaderRef, ProduceRecord, Producer, ProducerConfig};
