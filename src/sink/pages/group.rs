//! The Kafka columns of one row group, appended record by record straight from the fetch
//! buffers and cut into pages as they fill: partitions as runs of a dictionary, offsets and
//! timestamps delta-encoded, keys through a dictionary while it pays, header keys and values and
//! record values plain. Each page goes to its column's [`ChunkWriter`] as soon as it is cut.

use parquet::basic::{Compression, Encoding};
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::statistics::Statistics;

use super::body::Body;
use super::chunk::{ChunkWriter, Closed};
use super::interned::Interned;
use super::{Leaves, delta, hybrid};
use crate::record::RecordRef;
use crate::sink::stats;
use bytes::Bytes;

/// Uncompressed bytes a data page holds at most (Parquet's usual 1 MiB).
pub const PAGE_BYTES: usize = 1 << 20;

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

/// The definition levels of an optional top-level leaf (record keys, values): 1 present, 0 null.
#[derive(Default)]
struct Defs {
    defs: Vec<u8>,
    /// The page's levels as it has them, when it is cut.
    levels: Vec<u8>,
}

impl Defs {
    fn push(&mut self, present: bool) {
        self.defs.push(u8::from(present));
    }

    /// Values (nulls included) in the page.
    fn len(&self) -> usize {
        self.defs.len()
    }

    /// The page's levels, encoded; the next page starts empty.
    fn take(&mut self) -> &[u8] {
        self.levels.clear();
        put_levels(&self.defs, 1, &mut self.levels);
        self.defs.clear();
        &self.levels
    }
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

    pub fn finish(&mut self, mut chunk: ChunkWriter, rows: u64) -> Closed {
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
        Ok((chunk, Some(stats)))
    }
}

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

    pub fn finish(&mut self, mut chunk: ChunkWriter) -> Closed {
        self.cut(&mut chunk)?;
        let stats = Statistics::int64(Some(self.min), Some(self.max), None, Some(0), false);
        (self.min, self.max) = (i64::MAX, i64::MIN);
        Ok((chunk, Some(stats)))
    }
}

/// Record keys: optional bytes, through a dictionary until it stops paying, then plain
/// ([`Interned`]), with the chunk's min, max and null count.
pub struct Keys {
    defs: Defs,
    values: Interned,
    nulls: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            defs: Defs::default(),
            values: Interned::bounded(),
            nulls: 0,
        }
    }
}

impl Keys {
    pub fn push(&mut self, key: Option<&[u8]>) {
        self.defs.push(key.is_some());
        match key {
            Some(k) => self.values.push(k),
            None => self.nulls += 1,
        }
    }

    pub fn full(&self) -> bool {
        self.values.full()
    }

    pub fn pending(&self) -> usize {
        self.values.pending() + self.defs.len() / 8
    }

    /// Whether the dictionary should stop.
    pub fn dictionary_spent(&self) -> bool {
        self.values.spent()
    }

    pub fn cut(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        let n = self.defs.len();
        if n > 0 {
            self.values.cut(self.defs.take(), n, n, chunk)?;
        }
        Ok(())
    }

    /// Stops the dictionary: the rest of the file's keys are plain.
    pub fn spend_dictionary(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        if !self.values.spend_in_page() {
            self.cut(chunk)?;
            self.values.end_dictionary(chunk)?;
        }
        Ok(())
    }

    /// A new file judges its keys afresh.
    pub fn new_file(&mut self) {
        self.values.new_file();
    }

    pub fn finish(&mut self, mut chunk: ChunkWriter) -> Closed {
        self.cut(&mut chunk)?;
        let stats = match self.values.finish(&mut chunk)? {
            (Some(lo), Some(hi)) => {
                let lo_exact = lo.len() <= STAT_BYTES;
                let lo = lo[..lo.len().min(STAT_BYTES)].to_vec();
                // Past STAT_BYTES, the shortest bound above `hi`; the value itself if none.
                let up = (hi.len() > STAT_BYTES)
                    .then(|| stats::truncate_upper(&hi, STAT_BYTES))
                    .flatten();
                let (hi, hi_exact) = match up {
                    Some(up) => (up, false),
                    None => (hi, true),
                };
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
        self.nulls = 0;
        Ok((chunk, Some(stats)))
    }
}

/// The headers: a list of (key, value) per record, two leaves sharing repetition levels. Keys
/// go through a dictionary ([`Interned`]: a handful of names repeated in every record; one
/// checked for UTF-8 once, when it first comes); values DELTA_LENGTH_BYTE_ARRAY, uncompressed:
/// short, mostly unique values (sequence numbers, ids, trace contexts) that a compressor spends
/// the most time on per byte saved.
#[derive(Default)]
pub struct Headers {
    rep: Vec<u8>,
    key_defs: Vec<u8>,
    value_defs: Vec<u8>,
    keys: Interned,
    values: Body,
    /// The lengths of the page's non-null values.
    value_lengths: Vec<i64>,
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
            if !self.keys.known(k) {
                self.keys.push(String::from_utf8_lossy(k).as_bytes());
            }
            match v {
                Some(v) => {
                    self.value_defs.push(3);
                    self.value_lengths.push(v.len() as i64);
                    self.values.push_bytes(v);
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

    pub fn full(&self) -> bool {
        self.keys.full() || self.values.len() >= PAGE_BYTES || self.rep.len() >= PAGE_BYTES / 4
    }

    pub fn pending(&self) -> usize {
        self.keys.pending() + self.values.len() + self.rep.len() / 2
    }

    /// Whether the keys' dictionary should stop.
    pub fn dictionary_spent(&self) -> bool {
        self.keys.spent()
    }

    /// Stops the keys' dictionary: the rest of the file's header keys are plain.
    pub fn spend_dictionary(
        &mut self,
        key: &mut ChunkWriter,
        value: &mut ChunkWriter,
    ) -> Result<(), ParquetError> {
        if !self.keys.spend_in_page() {
            self.cut(key, value)?;
            self.keys.end_dictionary(key)?;
        }
        Ok(())
    }

    /// A new file judges its header keys afresh.
    pub fn new_file(&mut self) {
        self.keys.new_file();
    }

    /// Ends the key leaf's chunk (its last page already cut).
    pub fn finish_keys(&mut self, mut chunk: ChunkWriter) -> Closed {
        self.keys.finish(&mut chunk)?;
        Ok((chunk, None))
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
        // Both leaves start with the same repetition levels: encoded once.
        self.levels.clear();
        put_levels(&self.rep, 1, &mut self.levels);
        let rep = self.levels.len();
        put_levels(&self.key_defs, 2, &mut self.levels);
        self.keys.cut(&self.levels, n, self.records, key)?;
        self.levels.truncate(rep);
        put_levels(&self.value_defs, 2, &mut self.levels);
        delta::encode(&self.value_lengths, &mut self.levels);
        let page = self.values.take(&self.levels);
        value.data_page(page, n, self.records, Encoding::DELTA_LENGTH_BYTE_ARRAY)?;
        self.value_lengths.clear();
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
    defs: Defs,
    plain: Body,
}

impl Values {
    pub fn push(&mut self, v: Option<&[u8]>) {
        self.defs.push(v.is_some());
        if let Some(v) = v {
            self.plain.push(v);
        }
    }

    pub fn full(&self) -> bool {
        self.plain.len() >= PAGE_BYTES
    }

    pub fn pending(&self) -> usize {
        self.plain.len()
    }

    pub fn cut(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        let n = self.defs.len();
        if n > 0 {
            let page = self.plain.take(self.defs.take());
            chunk.data_page(page, n, n, Encoding::PLAIN)?;
        }
        Ok(())
    }
}

/// Which compression each leaf's pages get.
pub fn leaf_compression(zstd: Compression, values: Compression) -> [Compression; Leaves::COUNT] {
    [
        zstd,
        zstd,
        zstd,
        zstd,
        zstd,
        Compression::UNCOMPRESSED,
        values,
    ]
}
