//! The unit of work that crosses cores: a batch of one partition's records bound for one shard
//! core, as views into one shared buffer.
//!
//! Owns only data shapes. The source fills them, the bridge carries them, the shard consumes
//! them; none of those is known here. A [`Batch`] holds the buffer a Fetch answer arrived in (or
//! the one its compressed batches were decompressed into) and compact [`RecordView`]s into it:
//! no record owns an allocation, and dropping the last batch of an answer frees its buffer.
//! [`Record`] is the owned form, for tests, benches and cold paths.

use bytes::Bytes;
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

/// One header as owned bytes: a key and a value that may be null.
pub type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

/// One Kafka record with its own bytes (tests, benches, replay, dead letters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the Unix epoch (Kafka's CreateTime or LogAppendTime).
    pub timestamp_ms: i64,
    /// The shard the router picked; the shard core runs several.
    pub shard: u32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In the producer's order; keys may repeat, values may be null.
    pub headers: Vec<OwnedHeader>,
}

impl Record {
    /// Bytes of payload this record carries (key, value, headers).
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

/// Records of one partition, in offset order, all bound for the same shard core: views into
/// `buf`, their headers in `headers`.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub partition: i32,
    pub buf: Bytes,
    pub headers: Vec<HeaderView>,
    pub records: Vec<RecordView>,
}

impl Batch {
    /// A batch of owned records, copied into one buffer (tests, benches, replay).
    pub fn of_records(partition: i32, records: &[Record]) -> Batch {
        let mut b = BatchBuilder::with_capacity(
            records.len(),
            records.iter().map(Record::payload_bytes).sum(),
        );
        for r in records {
            b.push(
                r.offset,
                r.timestamp_ms,
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            );
        }
        b.finish(partition)
    }

    pub fn records(&self) -> Records<'_> {
        Records {
            buf: &self.buf,
            headers: &self.headers,
            views: &self.records,
        }
    }
}

/// Builds a [`Batch`] by copying records into one buffer.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    headers: Vec<HeaderView>,
    records: Vec<RecordView>,
}

impl BatchBuilder {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            headers: Vec::new(),
            records: Vec::with_capacity(records),
        }
    }

    fn put(&mut self, b: Option<&[u8]>) -> Span {
        match b {
            None => Span::NULL,
            Some(b) => {
                let s = Span {
                    start: self.buf.len() as u32,
                    len: b.len() as u32,
                };
                self.buf.extend_from_slice(b);
                s
            }
        }
    }

    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        let first = self.headers.len();
        for (k, v) in headers {
            let key = self.put(Some(k));
            let value = self.put(v);
            self.headers.push(HeaderView { key, value });
        }
        let view = RecordView {
            offset,
            timestamp_ms,
            shard: 0,
            key: self.put(key),
            value: self.put(value),
            headers: Span {
                start: first as u32,
                len: (self.headers.len() - first) as u32,
            },
        };
        self.records.push(view);
    }

    pub fn finish(self, partition: i32) -> Batch {
        Batch {
            partition,
            buf: Bytes::from(self.buf),
            headers: self.headers,
            records: self.records,
        }
    }
}

/// A run of records to read: views, their buffer and their headers.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    pub buf: &'a [u8],
    pub headers: &'a [HeaderView],
    pub views: &'a [RecordView],
}

impl<'a> Records<'a> {
    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'a>> {
        self.views.get(i).map(|v| self.resolve(v))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'a>> + 'a {
        let (buf, headers) = (self.buf, self.headers);
        self.views
            .iter()
            .map(move |v| RecordRef::of(buf, headers, v))
    }

    /// The records at `range` of this run.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Records<'a> {
        Records {
            views: self.views.get(range).unwrap_or_default(),
            ..*self
        }
    }

    fn resolve(&self, v: &RecordView) -> RecordRef<'a> {
        RecordRef::of(self.buf, self.headers, v)
    }
}

/// One record, read through its view.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub shard: u32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    buf: &'a [u8],
    headers: &'a [HeaderView],
}

impl<'a> RecordRef<'a> {
    fn of(buf: &'a [u8], headers: &'a [HeaderView], v: &RecordView) -> Self {
        let hs = headers
            .get(v.headers.start as usize..)
            .and_then(|h| h.get(..v.headers.len as usize))
            .unwrap_or_default();
        Self {
            offset: v.offset,
            timestamp_ms: v.timestamp_ms,
            shard: v.shard,
            key: v.key.get(buf),
            value: v.value.get(buf),
            buf,
            headers: hs,
        }
    }

    /// Its headers in order: key, value (`None` when null).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let buf = self.buf;
        self.headers
            .iter()
            .map(move |h| (h.key.get(buf).unwrap_or_default(), h.value.get(buf)))
    }

    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Bytes of payload (key, value, headers).
    pub fn payload_bytes(&self) -> usize {
        self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + self
                .headers()
                .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>()
    }

    /// The record with its own bytes.
    pub fn to_owned(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            shard: self.shard,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
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
    pub headers: Vec<OwnedHeader>,
    pub error: String,
}

impl DeadLetter {
    pub fn of(partition: i32, r: RecordRef<'_>, error: &str) -> Self {
        let r = r.to_owned();
        Self {
            partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: r.headers,
            error: error.to_owned(),
        }
    }
}
