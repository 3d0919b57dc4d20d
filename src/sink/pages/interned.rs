//! A byte-array leaf written through a dictionary while the dictionary pays, then plain: record
//! keys and header keys. Sans-IO but for the pages it hands to its chunk; the owner supplies
//! each page's levels.
//!
//! The dictionary page must come first in a chunk, but it is only whole when the chunk ends:
//! dictionary-encoded pages wait (a few bytes per value) until it is written. When the values
//! stop repeating within the chunk's first page, that page turns plain and the chunk has no
//! dictionary at all; later, the dictionary and the pages waiting for it go out and the rest of
//! the file is plain.

use bytes::Bytes;
use parquet::basic::Encoding;
use parquet::errors::ParquetError;

use super::body::Body;
use super::chunk::ChunkWriter;
use super::dict::Dictionary;
use super::group::PAGE_BYTES;
use super::hybrid;

/// The dictionary stops past this many bytes, or once at least [`JUDGED_AFTER`] values were
/// seen and more than half of them were distinct.
const DICT_BYTES: usize = PAGE_BYTES;
const JUDGED_AFTER: u64 = 4096;

/// A chunk's least and greatest value, when kept and when it has values.
pub type Bounds = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A page cut before its chunk's dictionary was written: body, values, rows, encoding.
type Waiting = (Bytes, usize, usize, Encoding);

#[derive(Default)]
pub struct Interned {
    dict: Dictionary,
    indices: Vec<u32>,
    waiting: Vec<Waiting>,
    plain: Body,
    /// Plain from now on (for the rest of the file).
    plain_mode: bool,
    /// Values seen in this chunk.
    seen: u64,
    /// Whether min and max are kept (record keys; not header keys, which no reader prunes on).
    bounded: bool,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
}

impl Interned {
    /// A leaf whose chunks keep their min and max.
    pub fn bounded() -> Self {
        Self {
            bounded: true,
            ..Self::default()
        }
    }

    /// Appends `v` (header keys: valid UTF-8, which the caller checked).
    pub fn push(&mut self, v: &[u8]) {
        self.seen += 1;
        if self.plain_mode {
            self.bound(v);
            self.plain.push(v);
        } else {
            self.indices.push(self.dict.intern(v));
        }
    }

    /// Appends `v` if the dictionary holds it already (so it was checked when it came first);
    /// false, and nothing appended, otherwise.
    pub fn known(&mut self, v: &[u8]) -> bool {
        if self.plain_mode {
            return false;
        }
        match self.dict.find(v) {
            Some(i) => {
                self.seen += 1;
                self.indices.push(i);
                true
            }
            None => false,
        }
    }

    fn bound(&mut self, v: &[u8]) {
        if !self.bounded {
            return;
        }
        if self.min.as_deref().is_none_or(|m| v < m) {
            self.min = Some(v.to_vec());
        }
        if self.max.as_deref().is_none_or(|m| v > m) {
            self.max = Some(v.to_vec());
        }
    }

    pub fn full(&self) -> bool {
        self.plain.len() >= PAGE_BYTES || self.indices.len() >= PAGE_BYTES / 4
    }

    pub fn pending(&self) -> usize {
        self.plain.len() + self.indices.len() * 2
    }

    /// Whether the dictionary should stop.
    pub fn spent(&self) -> bool {
        !self.plain_mode
            && (self.dict.page().len() > DICT_BYTES
                || (self.seen >= JUDGED_AFTER && self.dict.len() as u64 * 2 > self.seen))
    }

    /// Stops the dictionary within the chunk's first page when no page waits for it (the page
    /// turns plain; true), else leaves it to the owner: cut the page, then
    /// [`Self::end_dictionary`] (false).
    pub fn spend_in_page(&mut self) -> bool {
        if !self.waiting.is_empty() {
            return false;
        }
        for &i in &self.indices {
            self.plain.push(self.dict.get(i));
        }
        self.indices.clear();
        self.bound_dictionary();
        self.dict.clear();
        self.plain_mode = true;
        true
    }

    /// Writes the dictionary and the pages waiting for it; the rest of the file is plain.
    pub fn end_dictionary(&mut self, chunk: &mut ChunkWriter) -> Result<(), ParquetError> {
        self.flush_dictionary(chunk)?;
        self.plain_mode = true;
        Ok(())
    }

    /// Cuts a page of `count` levels and `rows` rows: `levels` (as the page has them), then
    /// the values.
    pub fn cut(
        &mut self,
        levels: &[u8],
        count: usize,
        rows: usize,
        chunk: &mut ChunkWriter,
    ) -> Result<(), ParquetError> {
        if self.plain_mode {
            return chunk.data_page(self.plain.take(levels), count, rows, Encoding::PLAIN);
        }
        let page = if self.indices.is_empty() {
            // No values (all null): no dictionary needed.
            (Bytes::copy_from_slice(levels), count, rows, Encoding::PLAIN)
        } else {
            let width = hybrid::width_of(self.dict.len().saturating_sub(1) as u64);
            let mut body = Vec::with_capacity(levels.len() + 1 + self.indices.len() * 2);
            body.extend_from_slice(levels);
            body.push(width);
            hybrid::encode(&self.indices, width, &mut body);
            self.indices.clear();
            (Bytes::from(body), count, rows, Encoding::RLE_DICTIONARY)
        };
        self.waiting.push(page);
        Ok(())
    }

    fn bound_dictionary(&mut self) {
        if !self.bounded {
            return;
        }
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
        for (body, count, rows, encoding) in self.waiting.drain(..) {
            chunk.data_page(body, count, rows, encoding)?;
        }
        self.dict.clear();
        Ok(())
    }

    /// Ends the chunk (its last page already cut): the dictionary and waiting pages go out;
    /// the chunk's min and max (when kept), and the next chunk starts afresh but for the
    /// file's plain mode.
    pub fn finish(&mut self, chunk: &mut ChunkWriter) -> Result<Bounds, ParquetError> {
        self.flush_dictionary(chunk)?;
        self.seen = 0;
        Ok((self.min.take(), self.max.take()))
    }

    /// A new file judges its values afresh.
    pub fn new_file(&mut self) {
        self.plain_mode = false;
    }
}
