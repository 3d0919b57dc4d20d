//! Record batches (magic 2) read in place, transaction-aware. Sans-IO: bytes in, views out.
//!
//! A partition's part of a Fetch response is a run of record batches, the last of which may be
//! cut short (normal: the broker fills up to a byte limit). [`Decoder::decode`] checks each
//! complete batch's CRC-32C, skips control batches and, under `read_committed`, the batches of
//! aborted transactions (the response's `aborted_transactions`, tracked per producer id from its
//! first offset to its ABORT marker, as the Java client does), and emits the records of the rest
//! as [`RecordView`]s: offsets and spans into one shared buffer. When no batch is compressed
//! that buffer is the response itself (nothing copied); otherwise every kept batch's records are
//! decompressed (or copied) once into one fresh buffer. The next fetch offset moves past every
//! complete batch, kept or not, so markers, aborted data and compaction gaps are always passed.
//!
//! Every length and count is checked against the bytes that hold it before it is used; nothing
//! is allocated by a count read from the wire. It knows no connection, shard or table.

use bytes::Bytes;

use super::codec::{self, Codec};
use crate::record::{HeaderView, RecordView, Span};

/// Bytes of a batch before its records: base offset (8), length (4), then the 49 below.
const HEADER: usize = 61;
/// Bytes the batch length counts that precede the records.
const AFTER_LENGTH: usize = HEADER - 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// `read_committed` hides records of aborted transactions; `read_uncommitted` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    #[default]
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    /// The Fetch request's `isolation_level`.
    pub fn wire(self) -> i8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read_committed" => Ok(Self::ReadCommitted),
            "read_uncommitted" => Ok(Self::ReadUncommitted),
            _ => Err("expected read_committed or read_uncommitted".into()),
        }
    }
}

/// One entry of a Fetch response's `aborted_transactions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// Why a partition's bytes could not be read. `offset` is the base offset of the batch at fault
/// (or the fetch offset when the batch header itself is unreadable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record batch at offset {offset}: {problem}")]
pub struct BatchError {
    pub offset: i64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("CRC-32C mismatch (batch says {stored:#010x}, bytes give {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error(
        "message format v{0} (magic {0}) is not supported; icefall reads v2 (Kafka 0.11 and later)"
    )]
    Magic(i8),
    #[error("batch length {0} is shorter than a batch header")]
    ShortBatch(i32),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("record {index}: {what}")]
    Record { index: usize, what: &'static str },
    #[error("batch says {declared} records but holds {found}")]
    Count { declared: i32, found: usize },
    #[error("decoded records would exceed {0} bytes")]
    TooLarge(usize),
}

/// One partition's share of one Fetch response, decoded.
#[derive(Debug, Default)]
pub struct Decoded {
    /// What every span points into.
    pub buf: Bytes,
    pub records: Vec<RecordView>,
    pub headers: Vec<HeaderView>,
    /// The offset to fetch next. `None` when not one complete batch was read.
    pub next_offset: Option<i64>,
    /// A batch at the end that the response cut short: its base offset and full size in bytes.
    pub truncated: Option<(i64, usize)>,
    /// Records passed over: aborted (under `read_committed`) or before the fetch offset.
    pub skipped: u64,
    /// Control batches (transaction markers) passed over.
    pub markers: u64,
}

impl Decoded {
    fn reset(&mut self) {
        self.buf = Bytes::new();
        self.records.clear();
        self.headers.clear();
        self.next_offset = None;
        self.truncated = None;
        self.skipped = 0;
        self.markers = 0;
    }
}

/// The batch header fields icefall uses.
#[derive(Debug, Clone, Copy)]
struct Head {
    base_offset: i64,
    /// Bytes from the base offset to the end of the batch.
    size: usize,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    count: i32,
}

impl Head {
    fn codec(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }
    fn log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }
    fn transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    fn control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta) + 1)
    }
    fn err(&self, problem: Problem) -> BatchError {
        BatchError {
            offset: self.base_offset,
            problem,
        }
    }
}

/// Reads the header at the start of `b`. `Ok(None)`: the batch is not complete in `b`.
fn head(b: &[u8], fetch_offset: i64) -> Result<Option<(Head, bool)>, BatchError> {
    if b.len() < 12 {
        return Ok(None);
    }
    let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
    let length = i32::from_be_bytes(b[8..12].try_into().unwrap_or_default());
    if length < AFTER_LENGTH as i32 {
        // A magic byte we cannot read says more than a short length.
        if b.len() > MAGIC_AT && b[MAGIC_AT] as i8 != 2 && length >= 5 {
            return Err(BatchError {
                offset: base_offset,
                problem: Problem::Magic(b[MAGIC_AT] as i8),
            });
        }
        return Err(BatchError {
            offset: if length < 0 {
                fetch_offset
            } else {
                base_offset
            },
            problem: Problem::ShortBatch(length),
        });
    }
    let size = 12 + length as usize;
    if b.len() > MAGIC_AT && b[MAGIC_AT] as i8 != 2 {
        return Err(BatchError {
            offset: base_offset,
            problem: Problem::Magic(b[MAGIC_AT] as i8),
        });
    }
    let complete = b.len() >= size;
    if b.len() < HEADER {
        let h = Head {
            base_offset,
            size,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            count: 0,
        };
        return Ok(Some((h, false)));
    }
    let be = |at: usize, n: usize| &b[at..at + n];
    let h = Head {
        base_offset,
        size,
        attributes: i16::from_be_bytes(be(ATTRIBUTES_AT, 2).try_into().unwrap_or_default()),
        last_offset_delta: i32::from_be_bytes(be(23, 4).try_into().unwrap_or_default()),
        base_timestamp: i64::from_be_bytes(be(27, 8).try_into().unwrap_or_default()),
        max_timestamp: i64::from_be_bytes(be(35, 8).try_into().unwrap_or_default()),
        producer_id: i64::from_be_bytes(be(43, 8).try_into().unwrap_or_default()),
        count: i32::from_be_bytes(be(57, 4).try_into().unwrap_or_default()),
    };
    Ok(Some((h, complete)))
}

/// Where a fetch after `data` (one partition of a Fetch response) starts, from its batch headers
/// alone: the `next_offset` that [`Decoder::decode`] gives `data` when it decodes it (past every
/// complete batch, whatever it holds). Lets the next request leave before the records are
/// routed. `None` when not one complete batch is there or a header is malformed (decoding will
/// then say why); a cut-short tail ends the walk, as it ends decoding.
pub fn next_offset(data: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut next: Option<i64> = None;
    while let Some(rest) = data.get(at..).filter(|r| !r.is_empty()) {
        match head(rest, -1) {
            Ok(Some((h, true))) => {
                next = Some(next.map_or(h.next_offset(), |n| n.max(h.next_offset())));
                at += h.size;
            }
            Ok(_) => break,
            Err(_) => return None,
        }
    }
    next
}

/// Transaction state across the batches of one response (Java's `CompletedFetch`).
#[derive(Debug, Default)]
struct Transactions {
    /// Aborted transactions not yet reached, sorted by first offset.
    pending: Vec<Aborted>,
    next: usize,
    /// Producers whose open transaction is aborted.
    aborting: Vec<i64>,
}

impl Transactions {
    fn reset(&mut self, aborted: &[Aborted]) {
        self.pending.clear();
        self.pending.extend_from_slice(aborted);
        self.pending.sort_unstable_by_key(|a| a.first_offset);
        self.next = 0;
        self.aborting.clear();
    }

    /// True when `h`'s records belong to an aborted transaction. Also consumes markers.
    fn aborted(&mut self, h: &Head, marker: Option<ControlType>) -> bool {
        if h.producer_id < 0 {
            return false;
        }
        let last = h.next_offset() - 1;
        while let Some(a) = self
            .pending
            .get(self.next)
            .filter(|a| a.first_offset <= last)
        {
            if !self.aborting.contains(&a.producer_id) {
                self.aborting.push(a.producer_id);
            }
            self.next += 1;
        }
        if h.control() {
            if marker == Some(ControlType::Abort) {
                self.aborting.retain(|&p| p != h.producer_id);
            }
            return false;
        }
        h.transactional() && self.aborting.contains(&h.producer_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlType {
    Abort,
    Commit,
    Other,
}

/// Reusable decoding state (one per fetch core): the transaction tracker and a scratch buffer.
#[derive(Debug)]
pub struct Decoder {
    /// The most bytes one partition's records may decompress to in one response.
    pub max_bytes: usize,
    txns: Transactions,
}

impl Decoder {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            txns: Transactions::default(),
        }
    }

    /// Decodes `data` (one partition of a Fetch response), keeping records at or after
    /// `fetch_offset`. On error `out` holds nothing usable.
    pub fn decode(
        &mut self,
        data: &Bytes,
        fetch_offset: i64,
        isolation: Isolation,
        aborted: &[Aborted],
        out: &mut Decoded,
    ) -> Result<(), BatchError> {
        out.reset();
        match isolation {
            Isolation::ReadCommitted => self.txns.reset(aborted),
            Isolation::ReadUncommitted => self.txns.reset(&[]),
        }
        let batches = self.complete_batches(data, fetch_offset, out)?;
        let copy = batches.iter().any(|(h, _)| h.codec() != 0 && !h.control());
        let mut owned: Vec<u8> = Vec::new();
        for &(h, at) in &batches {
            let body = &data[at + HEADER..at + h.size];
            let marker = if h.control() {
                Some(control_type(&h, body).map_err(|p| h.err(p))?)
            } else {
                None
            };
            let skip = self.txns.aborted(&h, marker);
            out.next_offset = Some(
                out.next_offset
                    .map_or(h.next_offset(), |n| n.max(h.next_offset())),
            );
            if h.control() {
                out.markers += 1;
                continue;
            }
            if skip || h.next_offset() <= fetch_offset {
                out.skipped += u64::try_from(h.count.max(0)).unwrap_or(0);
                continue;
            }
            if copy {
                let start = owned.len();
                if h.codec() == 0 {
                    if start + body.len() > self.max_bytes {
                        return Err(h.err(Problem::TooLarge(self.max_bytes)));
                    }
                    owned.extend_from_slice(body);
                } else {
                    let codec = Codec::from_attribute(h.codec()).map_err(|e| h.err(e.into()))?;
                    codec
                        .decompress_into(body, &mut owned, self.max_bytes)
                        .map_err(|e| h.err(e.into()))?;
                }
                records(&owned, start, &h, fetch_offset, out)?;
            } else {
                records(&data[..at + h.size], at + HEADER, &h, fetch_offset, out)?;
            }
        }
        out.buf = if copy {
            Bytes::from(owned)
        } else {
            data.clone()
        };
        Ok(())
    }

    /// The complete batches of `data` (header and position), CRC checked; notes a cut-short tail.
    fn complete_batches(
        &self,
        data: &Bytes,
        fetch_offset: i64,
        out: &mut Decoded,
    ) -> Result<Vec<(Head, usize)>, BatchError> {
        let mut batches = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let Some((h, complete)) = head(&data[at..], fetch_offset)? else {
                break;
            };
            if !complete {
                out.truncated = Some((h.base_offset, h.size));
                break;
            }
            let stored = u32::from_be_bytes(
                data[at + CRC_AT..at + ATTRIBUTES_AT]
                    .try_into()
                    .unwrap_or_default(),
            );
            let computed = crc32c::crc32c(&data[at + ATTRIBUTES_AT..at + h.size]);
            if stored != computed {
                return Err(h.err(Problem::Crc { stored, computed }));
            }
            batches.push((h, at));
            at += h.size;
        }
        Ok(batches)
    }
}

/// The type of a control batch's marker (its first record's key: version, type).
fn control_type(h: &Head, body: &[u8]) -> Result<ControlType, Problem> {
    let scratch;
    let body = if h.codec() == 0 {
        body
    } else {
        let mut v = Vec::new();
        Codec::from_attribute(h.codec())?.decompress_into(body, &mut v, 1 << 20)?;
        scratch = v;
        &scratch[..]
    };
    let mut c = Cursor { b: body, at: 0 };
    let Some(r) = c.record(0)? else {
        return Ok(ControlType::Other);
    };
    let key = r.key.get(body).unwrap_or_default();
    Ok(match key.get(2..4) {
        Some([0, 0]) => ControlType::Abort,
        Some([0, 1]) => ControlType::Commit,
        _ => ControlType::Other,
    })
}

/// Appends the records of one batch, whose record bytes run from `start` to the end of `buf`.
fn records(
    buf: &[u8],
    start: usize,
    h: &Head,
    fetch_offset: i64,
    out: &mut Decoded,
) -> Result<(), BatchError> {
    let mut c = Cursor { b: buf, at: start };
    let mut found = 0usize;
    // Each record takes at least 7 bytes: bound the reservation by the bytes, not the count.
    let room = (buf.len() - start) / 7;
    out.records
        .reserve(usize::try_from(h.count).unwrap_or(0).min(room));
    while c.at < buf.len() {
        let header_start = out.headers.len();
        let Some(r) = c
            .record_into(found, &mut out.headers)
            .map_err(|p| h.err(p))?
        else {
            break;
        };
        found += 1;
        let offset = h.base_offset.saturating_add(r.offset_delta);
        if offset < fetch_offset {
            out.headers.truncate(header_start);
            out.skipped += 1;
            continue;
        }
        let timestamp_ms = if h.log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.saturating_add(r.timestamp_delta)
        };
        out.records.push(RecordView {
            offset,
            timestamp_ms,
            shard: 0,
            key: r.key,
            value: r.value,
            headers: span(header_start, out.headers.len() - header_start),
        });
    }
    if i64::from(h.count) != found as i64 {
        return Err(h.err(Problem::Count {
            declared: h.count,
            found,
        }));
    }
    Ok(())
}

fn span(start: usize, len: usize) -> Span {
    Span {
        start: start as u32,
        len: len as u32,
    }
}

/// A record's fields before its offset and timestamp are resolved against its batch.
struct Raw {
    offset_delta: i64,
    timestamp_delta: i64,
    key: Span,
    value: Span,
}

/// A bounds-checked reader over record bytes.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// Kafka's zig-zag varint, at most 10 bytes.
    fn varlong(&mut self) -> Option<i64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        self.varlong().and_then(|v| i32::try_from(v).ok())
    }

    /// A length-prefixed field ending by `end`; a length of -1 is null.
    fn bytes(&mut self, end: usize, nullable: bool) -> Option<Span> {
        let n = self.varint()?;
        if n == -1 && nullable {
            return Some(Span::NULL);
        }
        let n = usize::try_from(n).ok()?;
        if self.at.checked_add(n)? > end {
            return None;
        }
        let s = span(self.at, n);
        self.at += n;
        Some(s)
    }

    fn record(&mut self, index: usize) -> Result<Option<Raw>, Problem> {
        let mut scratch = Vec::new();
        self.record_into(index, &mut scratch)
    }

    /// The next record, its headers appended to `headers`. `Ok(None)` at the end of the bytes.
    fn record_into(
        &mut self,
        index: usize,
        headers: &mut Vec<HeaderView>,
    ) -> Result<Option<Raw>, Problem> {
        let bad = |what| Problem::Record { index, what };
        if self.at >= self.b.len() {
            return Ok(None);
        }
        let len = self.varint().ok_or(bad("unreadable length"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or(bad("length runs past the batch"))?;
        let _attributes = self.b.get(self.at).ok_or(bad("no attributes"))?;
        self.at += 1;
        let timestamp_delta = self.varlong().ok_or(bad("unreadable timestamp"))?;
        let offset_delta = self.varint().ok_or(bad("unreadable offset delta"))?;
        let key = self
            .bytes(end, true)
            .ok_or(bad("key runs past the record"))?;
        let value = self
            .bytes(end, true)
            .ok_or(bad("value runs past the record"))?;
        let count = self.varint().ok_or(bad("unreadable header count"))?;
        // Each header takes at least two bytes.
        let count = usize::try_from(count)
            .ok()
            .filter(|&n| n <= (end - self.at.min(end)) / 2)
            .ok_or(bad("header count does not fit the record"))?;
        for _ in 0..count {
            let key = self
                .bytes(end, false)
                .ok_or(bad("header key runs past the record"))?;
            let value = self
                .bytes(end, true)
                .ok_or(bad("header value runs past the record"))?;
            headers.push(HeaderView { key, value });
        }
        if self.at != end {
            return Err(bad("bytes left over after the headers"));
        }
        Ok(Some(Raw {
            offset_delta: i64::from(offset_delta),
            timestamp_delta,
            key,
            value,
        }))
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
