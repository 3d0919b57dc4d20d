//! The unit of work that crosses cores: a batch of one partition's records bound for one shard core.
//!
//! Owns only data shapes. The source fills them, the bridge carries them, the shard consumes them;
//! none of those is known here. Records own their bytes (moved, never copied, from fetch to shard).

use std::collections::BTreeMap;

/// One Kafka record, decoupled from the client library that fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the Unix epoch (Kafka's CreateTime or LogAppendTime).
    pub timestamp_ms: i64,
    /// The shard the router picked; the shard core runs several.
    pub shard: u32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header keys are unique here (the fetch client keeps the last of duplicates).
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Record {
    /// Bytes of payload this record carries (key, value, headers).
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Records of one partition, in offset order, all bound for the same shard core.
#[derive(Debug, Default)]
pub struct Batch {
    pub partition: i32,
    pub records: Vec<Record>,
}
