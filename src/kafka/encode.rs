//! Record batches (magic 2) written: what the producer sends, and what the tests' broker serves.
//! Headers are written as given: in order, keys may repeat, values may be null. Sans-IO.

use super::codec::{Codec, CodecError};

/// One record to write. Offsets and timestamps are absolute; the batch stores deltas.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

/// The batch-wide fields.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    pub codec: Codec,
    /// -1 when not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when not idempotent.
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub log_append_time: bool,
    pub partition_leader_epoch: i32,
    /// The batch's last offset when compaction removed records after the last one kept.
    pub last_offset: Option<i64>,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            codec: Codec::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            log_append_time: false,
            partition_leader_epoch: -1,
            last_offset: None,
        }
    }
}

/// Appends a transaction marker of producer `producer_id` at `offset` to `out`: a control batch
/// whose one record's key is version 0 and 0 (ABORT) or 1 (COMMIT), its value version 0 and the
/// coordinator epoch.
pub fn encode_marker(
    producer_id: i64,
    offset: i64,
    commit: bool,
    coordinator_epoch: i32,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let key = [0, 0, 0, u8::from(commit)];
    let e = coordinator_epoch.to_be_bytes();
    let value = [0, 0, e[0], e[1], e[2], e[3]];
    let r = OutRecord {
        offset,
        timestamp_ms: 0,
        key: Some(&key),
        value: Some(&value),
        headers: &[],
    };
    let spec = BatchSpec {
        producer_id,
        producer_epoch: 0,
        transactional: true,
        control: true,
        ..BatchSpec::default()
    };
    encode_batch(&spec, &[r], out)
}

/// Appends one batch of `records` (at least one, offsets ascending) to `out`.
pub fn encode_batch(
    spec: &BatchSpec,
    records: &[OutRecord<'_>],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let base_offset = first.offset;
    let base_ts = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let mut plain = Vec::with_capacity(records.len() * 32);
    for r in records {
        record(r, base_offset, base_ts, &mut plain);
    }
    let start = out.len();
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // length, set below
    out.extend_from_slice(&spec.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes()); // CRC, set below
    let attributes = spec.codec.attribute()
        | if spec.log_append_time { 0x08 } else { 0 }
        | if spec.transactional { 0x10 } else { 0 }
        | if spec.control { 0x20 } else { 0 };
    out.extend_from_slice(&attributes.to_be_bytes());
    let last_offset = spec.last_offset.unwrap_or(last.offset).max(last.offset);
    let last_delta = i32::try_from(last_offset - base_offset).unwrap_or(i32::MAX);
    out.extend_from_slice(&last_delta.to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&spec.producer_id.to_be_bytes());
    out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
    out.extend_from_slice(&spec.base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    spec.codec.compress_into(&plain, out)?;
    let length = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 21..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn record(r: &OutRecord<'_>, base_offset: i64, base_ts: i64, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32);
    body.push(0); // attributes
    varlong(r.timestamp_ms - base_ts, &mut body);
    varlong(r.offset - base_offset, &mut body);
    bytes(r.key, &mut body);
    bytes(r.value, &mut body);
    varlong(r.headers.len() as i64, &mut body);
    for (k, v) in r.headers {
        bytes(Some(k), &mut body);
        bytes(*v, &mut body);
    }
    varlong(body.len() as i64, out);
    out.extend_from_slice(&body);
}

fn bytes(b: Option<&[u8]>, out: &mut Vec<u8>) {
    match b {
        None => varlong(-1, out),
        Some(b) => {
            varlong(b.len() as i64, out);
            out.extend_from_slice(b);
        }
    }
}

/// Kafka's zig-zag varint.
pub fn varlong(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}
