//! The unit of work that crosses cores: a batch of one partition's records bound for one shard core.
//!
//! Owns only data shapes. The source fills them, the bridge carries them, the shard consumes them;
//! none of those is known here. Records own their bytes (moved, never copied, from fetch to shard).

use std::collections::BTreeMap;

/// A range of a shared buffer: a key, a value, a header key or value. `len == u32::MAX` is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub const NULL: Span = Span {
        start: 0,
        len: u32::MAX,
    };

    pub fn is_null(self) -> bool {
        self.len == u32::MAX
    }

    /// The bytes this span names in `buf`; `None` when null (or, defensively, out of range).
    pub fn get(self, buf: &[u8]) -> Option<&[u8]> {
        if self.is_null() {
            return None;
        }
        let start = self.start as usize;
        buf.get(start..start + self.len as usize)
    }

    /// Bytes named (0 when null).
    pub fn bytes(self) -> usize {
        if self.is_null() { 0 } else { self.len as usize }
    }
}

/// One record as the fetch core decoded it: offsets and spans into its batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordView {
    pub offset: i64,
    /// Milliseconds since the Unix epoch (Kafka's CreateTime or LogAppendTime).
    pub timestamp_ms: i64,
    /// The shard the router picked.
    pub shard: u32,
    pub key: Span,
    pub value: Span,
    /// A range of the batch's header list (not of its buffer).
    pub headers: Span,
}

/// One header, in the order the producer wrote it; keys may repeat, values may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderView {
    pub key: Span,
    pub value: Span,
}

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
    /// The record `v` names in `buf`, with its headers from `headers` (copied out).
    pub fn from_view(buf: &[u8], headers: &[HeaderView], v: &RecordView) -> Record {
        let own = |s: Span| s.get(buf).map(<[u8]>::to_vec);
        let hs = headers
            .get(v.headers.start as usize..)
            .and_then(|h| h.get(..v.headers.len as usize))
            .unwrap_or_default();
        Record {
            offset: v.offset,
            timestamp_ms: v.timestamp_ms,
            shard: v.shard,
            key: own(v.key),
            value: own(v.value),
            headers: hs
                .iter()
                .map(|h| {
                    let k =
                        String::from_utf8_lossy(h.key.get(buf).unwrap_or_default()).into_owned();
                    (k, own(h.value).unwrap_or_default())
                })
                .collect(),
        }
    }

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

/// Per partition, the offset after the last record routed before a barrier.
pub type Offsets = std::collections::BTreeMap<i32, i64>;

/// What a fetch core reports at a barrier: where its partitions are, and what it dropped since
/// its previous barrier. One value is shared by the barriers of all its rings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The fetch core's partitions and their next offsets.
    pub next_offsets: Offsets,
    /// Offsets routed but dropped (a full ring at the live tail) in this epoch.
    pub dropped: crate::offsets::Ranges,
}

/// An aligned-checkpoint marker. A fetch core puts one into every ring after the records it has
/// routed so far; epoch N holds exactly the records routed before barrier N.
#[derive(Debug, Clone)]
pub struct Barrier {
    pub epoch: u64,
    pub fetch_core: usize,
    pub progress: std::sync::Arc<Progress>,
    /// The fetch core sends nothing after this one.
    pub last: bool,
}

/// What a fetch core sends a shard core.
#[derive(Debug)]
pub enum ToShard {
    Records(Batch),
    Barrier(Barrier),
}

impl ToShard {
    /// Records carried: a ring's capacity counts these; a barrier weighs nothing.
    pub fn records(&self) -> usize {
        match self {
            ToShard::Records(b) => b.records.len(),
            ToShard::Barrier(_) => 0,
        }
    }
}

/// A record set aside for `--dlq-topic`: as it came from Kafka, and why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub error: String,
}

impl DeadLetter {
    pub fn of(partition: i32, r: &Record, error: &str) -> Self {
        Self {
            partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
            error: error.to_owned(),
        }
    }
}
