//! The Kafka columns of one row group, appended record by record straight from the fetch
//! buffers and cut into pages as they fill: partitions as runs of a dictionary, offsets and
//! timestamps delta-encoded, keys through a dictionary while it pays, header keys and values and
//! record values plain. Each page goes to its column's [`ChunkWriter`] as soon as it is cut.

use parquet::basic::{Compression, Encoding};
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::statistics::Statistics;

use super::body::Body;
use super::chunk::ChunkWriter;
use super::dict::Dictionary;
use super::{Leaves, delta, hybrid};
use crate::record::RecordRef;
use bytes::Bytes;

/// Uncompressed bytes a data page holds at most (Parquet's usual 1 MiB).
pub const PAGE_BYTES: usize = 1 << 20;

/// A chunk's key dictionary stops (the rest of its file is plain) past this many bytes, or
/// once at least this many keys were seen and more than half of them were distinct.
const DICT_BYTES: usize = PAGE_BYTES;
const DICT_JUDGED_AFTER: u64 = 4096;

/// Longest min/max of keys kept in the footer (readers need no more to prune).
const STAT_BYTES: usize = 64;

/// `levels` as a v1 page has them: a 4-byte little-endian length, then the hybrid.
fn put_levels(levels: &[u8], width: u8, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    hybrid::encode(levels, width, out);
    let n = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Partitions: a shard gets long runs of one partition, so one dictionary page and one data
/// page of RLE runs hold a whole chunk.
#[derive(Default)]
pub struct Partitions {
    runs: Vec<(i32, u64)>,
}

impl Partitions {
    pub fn push(&mut self, p: i32, n: u64) {
        match self.runs.last_mut() {
            Some((last, count)) if *last == p => *count += n,
            _ => self.runs.push((p, n)),
        }
    }

    pub fn finish(&mut self, mut chunk: ChunkWriter, rows: u64) -> Finished {
        let mut distinct: Vec<i32> = Vec::new();
        let mut index: std::collections::HashMap<i32, u64> = Default::default();
        for (p, _) in &self.runs {
            index.entry(*p).or_insert_with(|| {
                distinct.push(*p);
                distinct.len() as u64 - 1
            });
        }
        let width = hybrid::width_of(distinct.len().saturating_sub(1) as u64);
        let mut body = vec![width];
        for (p, n) in &self.runs {
            hybrid::rle_run(index.get(p).copied().unwrap_or(0), *n, width, &mut body);
        }
        let dict: Vec<u8> = distinct.iter().flat_map(|p| p.to_le_bytes()).collect();
        chunk.dictionary_page(&dict, distinct.len())?;
        let n = rows as usize;
        chunk.data_page(Bytes::from(body), n, n, Encoding::RLE_DICTIONARY)?;
        let (lo, hi) = (distinct.iter().min(), distinct.iter().max());
        let stats = Statistics::int32(lo.copied(), hi.copied(), None, Some(0), false);
        self.runs.clear();
        chunk.finish(rows, Some(stats))
    }
}

use super::chunk::Finished;

/// Offsets or timestamps: required 64-bit integers, DELTA_BINARY_PACKED, with min and max.
pub struct Deltas {
    page: Vec<i64>,
    body: Vec<u8>,
    min: i64,
    max: i64,
}

impl Default for Deltas {
    fn default() -> Self {
        Self {
            page: Vec::new(),
            body: Vec::new(),
            min: i64::MAX,
            max: i64::MIN,
        }
    }
}

impl Deltas {
    pub fn push(&mut self, v: i64) {
        self.page.push(v);
    }

    pub fn full(&self) -> bool {
        self.page.len() >= PAGE_BYTES / 8
    }

    pub fn pending(&self) -> usize {
        self.page.len()
    }

    pub fn cut(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if self.page.is_empty() {
            return Ok(());
        }
        let (lo, hi) = self
            .page
            .iter()
            .fold((self.min, self.max), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        (self.min, self.max) = (lo, hi);
        self.body.clear();
        delta::encode(&self.page, &mut self.body);
        let n = self.page.len();
        let body = Bytes::copy_from_slice(&self.body);
        chunk.data_page(body, n, n, Encoding::DELTA_BINARY_PACKED)?;
        self.page.clear();
        Ok(())
    }

    pub fn finish(&mut self, mut chunk: ChunkWriter, rows: u64) -> Finished {
        self.cut(&mut chunk)?;
        let stats = Statistics::int64(Some(self.min), Some(self.max), None, Some(0), false);
        (self.min, self.max) = (i64::MAX, i64::MIN);
        chunk.finish(rows, Some(stats))
    }
}

/// Record keys: optional bytes, through a dictionary until it stops paying, then plain.
#[derive(Default)]
pub struct Keys {
    defs: Vec<u8>,
    dict: Dictionary,
    indices: Vec<u32>,
    /// Dictionary-encoded pages waiting for the dictionary page, which must come first.
    waiting: Vec<(Vec<u8>, usize, Encoding)>,
    plain: Body,
    /// The page's levels, when it is cut.
    levels: Vec<u8>,
    /// Plain from now on (for the rest of the file).
    pub plain_mode: bool,
    seen: u64,
    nulls: u64,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
}

impl Keys {
    pub fn push(&mut self, key: Option<&[u8]>) {
        let Some(k) = key else {
            self.defs.push(0);
            self.nulls += 1;
            return;
        };
        self.defs.push(1);
        self.seen += 1;
        if self.plain_mode {
            self.bound(k);
            self.plain.push(k);
        } else {
            self.indices.push(self.dict.intern(k));
        }
    }

    fn bound(&mut self, k: &[u8]) {
        if self.min.as_deref().is_none_or(|m| k < m) {
            self.min = Some(k.to_vec());
        }
        if self.max.as_deref().is_none_or(|m| k > m) {
            self.max = Some(k.to_vec());
        }
    }

    pub fn full(&self) -> bool {
        self.plain.len() >= PAGE_BYTES || self.indices.len() >= PAGE_BYTES / 4
    }

    pub fn pending(&self) -> usize {
        self.plain.len() + self.indices.len() * 2
    }

    /// Whether the dictionary should stop (checked once per appended run).
    pub fn dictionary_spent(&self) -> bool {
        !self.plain_mode
            && (self.dict.page().len() > DICT_BYTES
                || (self.seen >= DICT_JUDGED_AFTER && self.dict.len() as u64 * 2 > self.seen))
    }

    pub fn cut(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if self.defs.is_empty() {
            return Ok(());
        }
        if self.plain_mode {
            self.levels.clear();
            put_levels(&self.defs, 1, &mut self.levels);
            let n = self.defs.len();
            chunk.data_page(self.plain.take(&self.levels), n, n, Encoding::PLAIN)?;
            self.defs.clear();
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.defs.len() / 4 + self.indices.len() * 2 + 64);
        put_levels(&self.defs, 1, &mut body);
        if self.indices.is_empty() {
            // All null: no values, no dictionary needed.
            self.waiting.push((body, self.defs.len(), Encoding::PLAIN));
        } else {
            let width = hybrid::width_of(self.dict.len().saturating_sub(1) as u64);
            body.push(width);
            hybrid::encode(&self.indices, width, &mut body);
            let count = self.defs.len();
            self.waiting.push((body, count, Encoding::RLE_DICTIONARY));
            self.indices.clear();
        }
        self.defs.clear();
        Ok(())
    }

    /// Ends the dictionary: the page so far, the dictionary page and the pages waiting for it
    /// go out; later keys of the file are plain.
    pub fn spend_dictionary(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if self.waiting.is_empty() {
            // Still in the chunk's first page: its keys become plain, the chunk needs no
            // dictionary at all.
            for &i in &self.indices {
                self.plain.push(self.dict.get(i));
            }
            self.indices.clear();
            self.bound_dictionary();
            self.dict.clear();
        } else {
            self.cut(chunk)?;
            self.flush_dictionary(chunk)?;
        }
        self.plain_mode = true;
        Ok(())
    }

    /// Widens min and max to the dictionary's values.
    fn bound_dictionary(&mut self) {
        let (mut lo, mut hi) = (self.min.take(), self.max.take());
        for v in self.dict.values() {
            if lo.as_deref().is_none_or(|m| v < m) {
                lo = Some(v.to_vec());
            }
            if hi.as_deref().is_none_or(|m| v > m) {
                hi = Some(v.to_vec());
            }
        }
        (self.min, self.max) = (lo, hi);
    }

    fn flush_dictionary(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if self.dict.len() > 0 {
            self.bound_dictionary();
            chunk.dictionary_page(self.dict.page(), self.dict.len())?;
        }
        for (body, count, encoding) in self.waiting.drain(..) {
            chunk.data_page(Bytes::from(body), count, count, encoding)?;
        }
        self.dict.clear();
        Ok(())
    }

    pub fn finish(&mut self, mut chunk: ChunkWriter, rows: u64) -> Finished {
        self.cut(&mut chunk)?;
        self.flush_dictionary(&mut chunk)?;
        let (min, max) = (self.min.take(), self.max.take());
        let stats = match (min, max) {
            (Some(lo), Some(hi)) => {
                let (lo, lo_exact) = truncate_lower(lo);
                let (hi, hi_exact) = truncate_upper(hi);
                let s = parquet::file::statistics::ValueStatistics::new(
                    Some(ByteArray::from(lo)),
                    Some(ByteArray::from(hi)),
                    None,
                    Some(self.nulls),
                    false,
                )
                .with_min_is_exact(lo_exact)
                .with_max_is_exact(hi_exact);
                Statistics::ByteArray(s)
            }
            _ => Statistics::byte_array(None, None, None, Some(self.nulls), false),
        };
        (self.seen, self.nulls) = (0, 0);
        chunk.finish(rows, Some(stats))
    }
}

/// A lower bound of at most [`STAT_BYTES`]: a prefix; whether it is the value itself.
fn truncate_lower(mut v: Vec<u8>) -> (Vec<u8>, bool) {
    let exact = v.len() <= STAT_BYTES;
    v.truncate(STAT_BYTES);
    (v, exact)
}

/// An upper bound of at most [`STAT_BYTES`] where one exists (a prefix with its last byte
/// below 0xff raised by one), else the value itself; whether it is the value itself.
fn truncate_upper(v: Vec<u8>) -> (Vec<u8>, bool) {
    if v.len() <= STAT_BYTES {
        return (v, true);
    }
    let mut prefix = v[..STAT_BYTES].to_vec();
    while let Some(last) = prefix.pop() {
        if last < 0xff {
            prefix.push(last + 1);
            return (prefix, false);
        }
    }
    (v, true)
}

/// The headers: a list of (key, value) per record, two leaves sharing repetition levels.
#[derive(Default)]
pub struct Headers {
    rep: Vec<u8>,
    key_defs: Vec<u8>,
    value_defs: Vec<u8>,
    keys: Body,
    values: Body,
    /// Records in the page.
    records: usize,
    levels: Vec<u8>,
}

impl Headers {
    /// Appends `r`'s headers; returns their key and value bytes.
    pub fn push(&mut self, r: &RecordRef<'_>) -> usize {
        let mut rep = 0;
        let mut bytes = 0;
        self.records += 1;
        for (k, v) in r.headers() {
            self.rep.push(rep);
            rep = 1;
            self.key_defs.push(2);
            bytes += k.len() + v.map_or(0, <[u8]>::len);
            // Kafka header keys are strings; bytes that are not UTF-8 are replaced, not lost.
            if k.is_ascii() || std::str::from_utf8(k).is_ok() {
                self.keys.push(k);
            } else {
                self.keys.push(String::from_utf8_lossy(k).as_bytes());
            }
            match v {
                Some(v) => {
                    self.value_defs.push(3);
                    self.values.push(v);
                }
                None => self.value_defs.push(2),
            }
        }
        if rep == 0 {
            // An empty list.
            self.rep.push(0);
            self.key_defs.push(1);
            self.value_defs.push(1);
        }
        bytes
    }

    pub fn pending(&self) -> usize {
        self.keys.len() + self.values.len() + self.rep.len() / 2
    }

    pub fn full(&self) -> bool {
        self.keys.len() + self.values.len() >= PAGE_BYTES || self.rep.len() >= PAGE_BYTES / 4
    }

    pub fn cut(
        &mut self,
        key: &mut ChunkWriter,
        value: &mut ChunkWriter,
    ) -> Result<(), ParquetError> {
        if self.rep.is_empty() {
            return Ok(());
        }
        let n = self.rep.len();
        for (chunk, defs, plain) in [
            (&mut *key, &self.key_defs, &mut self.keys),
            (&mut *value, &self.value_defs, &mut self.values),
        ] {
            self.levels.clear();
            put_levels(&self.rep, 1, &mut self.levels);
            put_levels(defs, 2, &mut self.levels);
            chunk.data_page(plain.take(&self.levels), n, self.records, Encoding::PLAIN)?;
        }
        self.records = 0;
        self.rep.clear();
        self.key_defs.clear();
        self.value_defs.clear();
        Ok(())
    }
}

/// Record values: optional bytes, plain.
#[derive(Default)]
pub struct Values {
    defs: Vec<u8>,
    plain: Body,
    levels: Vec<u8>,
}

impl Values {
    pub fn push(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.defs.push(1);
                self.plain.push(v);
            }
            None => self.defs.push(0),
        }
    }

    pub fn full(&self) -> bool {
        self.plain.len() >= PAGE_BYTES
    }

    pub fn pending(&self) -> usize {
        self.plain.len()
    }

    pub fn cut(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if self.defs.is_empty() {
            return Ok(());
        }
        self.levels.clear();
        put_levels(&self.defs, 1, &mut self.levels);
        let n = self.defs.len();
        chunk.data_page(self.plain.take(&self.levels), n, n, Encoding::PLAIN)?;
        self.defs.clear();
        Ok(())
    }
}

/// Which compression each leaf's pages get.
pub fn leaf_compression(zstd: Compression, values: Compression) -> [Compression; Leaves::COUNT] {
    [zstd, zstd, zstd, zstd, zstd, Compression::SNAPPY, values]
}
