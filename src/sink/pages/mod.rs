//! icefall's own Parquet writer for raw-record tables: the Kafka columns and the value bytes
//! written page by page straight from the fetch buffers, with no Arrow batch in between.
//!
//! Owns the encodings (RLE / bit-packed levels and dictionary indices, DELTA_BINARY_PACKED, a
//! byte dictionary, PLAIN), page cutting, each column chunk's statistics, and the choices a file
//! carries (keys through a dictionary until it stops paying; values compressed or not, judged
//! on the file's first 64 KiB of them), and the file's layout: row groups of whole column
//! chunks, each chunk's pages written once into the file when its row group is done. parquet's
//! own page writer (`SerializedPageWriter`) writes the page headers and its metadata writer
//! (`ParquetMetaDataWriter`) the footer and offset index, so the files have what `ArrowWriter`
//! gives the same schema: the same leaves, levels, field ids and Arrow schema.
//!
//! Why: the generic path (Arrow builders, then `ArrowWriter` computing levels from arrays)
//! copied every byte twice more and spent most of the shard core on headers' list levels, on
//! buffers regrown by doubling and on pages assembled twice (BENCHMARKS.md, issue 17). Here
//! each value is copied once into its page and levels come from the record's shape.
//!
//! It knows the raw schema only (see [`Leaves::of`]); typed, dead-letter and legacy-map tables
//! keep `ArrowWriter` ([`super::encode`]). It knows nothing of Kafka clients or uploads.

mod body;
mod chunk;
mod delta;
mod dict;
mod group;
mod hybrid;
mod interned;

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, ArrowSchemaConverter, encode_arrow_schema};
use parquet::basic::{Compression, Type as Physical, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataWriter,
    RowGroupMetaData,
};
use parquet::file::page_index::offset_index::OffsetIndexMetaData;
use parquet::file::writer::TrackedWrite;
use parquet::schema::types::{ColumnDescPtr, SchemaDescPtr};

use super::chunks::Chunks;
use super::props;
use super::schema;
use crate::record::Records;
use chunk::{ChunkWriter, Codec};
use group::{Deltas, Headers, Keys, Partitions, Values};

/// What the files say wrote them: parquet's page and footer writers lay them out.
const CREATED_BY: &str = concat!("parquet-rs (icefall ", env!("CARGO_PKG_VERSION"), ")");

/// The leaves of the raw schema, in file order, checked to be what this writer writes.
#[derive(Clone)]
pub struct Leaves([ColumnDescPtr; Leaves::COUNT]);

impl Leaves {
    pub const COUNT: usize = 7;

    /// The leaves of `schema` when it is exactly the raw-record schema with list headers
    /// (names, physical types and levels); `None` for any other.
    pub fn of(schema: &SchemaRef) -> Option<Self> {
        let descr = ArrowSchemaConverter::new().convert(schema).ok()?;
        let want: [(&str, Physical, i16, i16); Self::COUNT] = [
            (schema::PARTITION, Physical::INT32, 0, 0),
            (schema::OFFSET, Physical::INT64, 0, 0),
            (schema::TIMESTAMP, Physical::INT64, 0, 0),
            (schema::KEY, Physical::BYTE_ARRAY, 1, 0),
            (schema::HEADERS, Physical::BYTE_ARRAY, 2, 1),
            (schema::HEADERS, Physical::BYTE_ARRAY, 3, 1),
            (schema::VALUE, Physical::BYTE_ARRAY, 1, 0),
        ];
        let cols = descr.columns();
        if cols.len() != Self::COUNT {
            return None;
        }
        for (c, (name, ty, def, rep)) in cols.iter().zip(want) {
            let top = c.path().parts().first()?;
            if top != name
                || c.physical_type() != ty
                || c.max_def_level() != def
                || c.max_rep_level() != rep
            {
                return None;
            }
        }
        let (k, v) = (
            cols[4].path().parts().last()?,
            cols[5].path().parts().last()?,
        );
        if k != "key" || v != "value" {
            return None;
        }
        Some(Self(std::array::from_fn(|i| cols[i].clone())))
    }
}

/// One row group's columns being filled.
#[derive(Default)]
struct Group {
    rows: u64,
    partitions: Partitions,
    offsets: Deltas,
    timestamps: Deltas,
    keys: Keys,
    headers: Headers,
    values: Values,
}

impl Group {
    /// Bytes appended but not yet in a page.
    fn pending(&self) -> usize {
        self.offsets.pending() * 2
            + self.keys.pending()
            + self.headers.pending()
            + self.values.pending()
    }
}

/// One shard core's raw-record files, one open at a time. Its page buffers and compressors
/// outlive row groups and files: a row group allocates little beyond its pages once the first
/// has sized them.
pub struct RawFile {
    /// The open file.
    file: Option<OpenFile>,
    descr: SchemaDescPtr,
    /// The table's Arrow schema, as the file's metadata carries it for Arrow readers.
    arrow_schema: KeyValue,
    leaves: Leaves,
    zstd: Compression,
    zstd_level: i32,
    row_group_rows: u64,
    group: Group,
    /// The open row group's chunk writers, per leaf, once its first page is cut.
    chunks: [Option<ChunkWriter>; Leaves::COUNT],
    /// Per leaf, a written chunk's compressor for the next chunk.
    spare: [Option<Codec>; Leaves::COUNT],
    /// The value leaf's compression, once the file's first values were judged.
    values: Option<Compression>,
    sample: Vec<u8>,
    /// Key, value and header bytes of the records appended.
    payload: u64,
}

/// A file being written: its bytes (shared with the writer that counts them, so that the
/// written row groups can be taken while it goes on), and what its footer will say.
struct OpenFile {
    out: TrackedWrite<Pipe>,
    chunks: Arc<Mutex<Chunks>>,
    row_groups: Vec<RowGroupMetaData>,
    offset_indexes: Vec<Vec<OffsetIndexMetaData>>,
}

/// The file's body as the writer sees it. Parquet's footer writer takes its output by value,
/// so the body is shared rather than owned.
struct Pipe(Arc<Mutex<Chunks>>);

impl std::io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("a writer panicked"))?
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OpenFile {
    fn new() -> Result<Self, ParquetError> {
        let chunks = Arc::new(Mutex::new(Chunks::new()));
        let mut out = TrackedWrite::new(Pipe(chunks.clone()));
        out.write_all(b"PAR1")?;
        Ok(Self {
            out,
            chunks,
            row_groups: Vec::new(),
            offset_indexes: Vec::new(),
        })
    }

    fn lock(chunks: &Mutex<Chunks>) -> Result<std::sync::MutexGuard<'_, Chunks>, ParquetError> {
        chunks
            .lock()
            .map_err(|_| ParquetError::General("a writer panicked".into()))
    }
}

impl RawFile {
    /// A writer for files of `arrow`, whose leaves are `leaves`.
    pub fn new(
        arrow: &SchemaRef,
        leaves: Leaves,
        zstd_level: i32,
        row_group_rows: usize,
    ) -> Result<Self, ParquetError> {
        let descr = Arc::new(ArrowSchemaConverter::new().convert(arrow)?);
        let schema = encode_arrow_schema(arrow);
        Ok(Self {
            file: None,
            descr,
            arrow_schema: KeyValue::new(ARROW_SCHEMA_META_KEY.into(), schema),
            leaves,
            zstd: Compression::ZSTD(ZstdLevel::try_new(zstd_level)?),
            zstd_level,
            row_group_rows: row_group_rows.max(1) as u64,
            group: Group::default(),
            chunks: Default::default(),
            spare: Default::default(),
            values: None,
            sample: Vec::new(),
            payload: 0,
        })
    }

    /// Appends one partition's records (in offset order) to the open file, opening one if
    /// none is.
    pub fn append(&mut self, partition: i32, records: Records<'_>) -> Result<(), ParquetError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(OpenFile::new()?);
        }
        let mut rest = records;
        while !rest.is_empty() {
            let room = (self.row_group_rows - self.group.rows) as usize;
            let now = rest.slice(0..room.min(rest.len()));
            rest = rest.slice(now.len()..rest.len());
            self.append_run(partition, now)?;
            if self.group.rows >= self.row_group_rows {
                self.close_group()?;
            }
        }
        Ok(())
    }

    fn append_run(&mut self, partition: i32, records: Records<'_>) -> Result<(), ParquetError> {
        self.group.partitions.push(partition, records.len() as u64);
        for r in records.iter() {
            let g = &mut self.group;
            g.offsets.push(r.offset);
            g.timestamps.push(r.timestamp_ms.saturating_mul(1_000));
            g.keys.push(r.key);
            let header_bytes = g.headers.push(&r);
            g.values.push(r.value);
            let full = g.offsets.full() || g.keys.full() || g.headers.full() || g.values.full();
            let (k, v) = (r.key.unwrap_or_default(), r.value.unwrap_or_default());
            self.payload += (k.len() + v.len() + header_bytes) as u64;
            if self.values.is_none() && self.sample.len() < props::SAMPLE_BYTES {
                self.sample.extend_from_slice(v);
            }
            let spent = g.keys.dictionary_spent() || g.headers.dictionary_spent();
            if full || spent {
                self.cut_full()?;
            }
        }
        self.group.rows += records.len() as u64;
        Ok(())
    }

    /// Makes leaf `i`'s chunk writer if its first page is about to be cut.
    fn open(&mut self, i: usize) -> Result<(), ParquetError> {
        if self.chunks[i].is_none() {
            let compression = self.compression(i);
            let codec = match self.spare[i].take() {
                Some(codec) if codec.is(compression) => codec,
                _ => Codec::new(compression)?,
            };
            let descr = self.leaves.0[i].clone();
            self.chunks[i] = Some(ChunkWriter::new(descr, compression, codec));
        }
        Ok(())
    }

    fn compression(&mut self, i: usize) -> Compression {
        if i == 6 && self.values.is_none() {
            self.values = Some(match props::Sample::of(&self.sample, self.zstd_level) {
                props::Sample::Compresses => self.zstd,
                props::Sample::Incompressible => Compression::UNCOMPRESSED,
            });
            self.sample.clear();
        }
        group::leaf_compression(self.zstd, self.values.unwrap_or(self.zstd))[i]
    }

    /// Cuts the pages that are full.
    fn cut_full(&mut self) -> Result<(), ParquetError> {
        let opened = "opened above";
        if self.group.offsets.full() {
            self.open(1)?;
            self.open(2)?;
            let [_, o, t, ..] = &mut self.chunks;
            self.group.offsets.cut(o.as_mut().expect(opened))?;
            self.group.timestamps.cut(t.as_mut().expect(opened))?;
        }
        if self.group.keys.dictionary_spent() {
            self.open(3)?;
            self.group
                .keys
                .spend_dictionary(self.chunks[3].as_mut().expect(opened))?;
        }
        if self.group.keys.full() {
            self.open(3)?;
            self.group
                .keys
                .cut(self.chunks[3].as_mut().expect(opened))?;
        }
        let headers = &self.group.headers;
        if headers.dictionary_spent() || headers.full() {
            self.open(4)?;
            self.open(5)?;
            let [.., k, v, _] = &mut self.chunks;
            let (k, v) = (k.as_mut().expect(opened), v.as_mut().expect(opened));
            if self.group.headers.dictionary_spent() {
                self.group.headers.spend_dictionary(k, v)?;
            }
            if self.group.headers.full() {
                self.group.headers.cut(k, v)?;
            }
        }
        if self.group.values.full() {
            self.open(6)?;
            self.group
                .values
                .cut(self.chunks[6].as_mut().expect(opened))?;
        }
        Ok(())
    }

    /// Writes the open row group (if it holds rows) into the file.
    fn close_group(&mut self) -> Result<(), ParquetError> {
        let rows = self.group.rows;
        if rows == 0 {
            return Ok(());
        }
        for i in 0..Leaves::COUNT {
            self.open(i)?;
        }
        let mut chunks = std::mem::take(&mut self.chunks).map(|c| c.expect("opened above"));
        let g = &mut self.group;
        let [.., hk, hv, v] = &mut chunks;
        g.headers.cut(hk, hv)?;
        g.values.cut(v)?;
        let [p, o, t, k, hk, hv, v] = chunks;
        let closed = [
            g.partitions.finish(p, rows)?,
            g.offsets.finish(o)?,
            g.timestamps.finish(t)?,
            g.keys.finish(k)?,
            g.headers.finish_keys(hk)?,
            (hv, None),
            (v, None),
        ];
        g.rows = 0;
        let Some(file) = self.file.as_mut() else {
            return Err(ParquetError::General("no open file".into()));
        };
        let start = file.out.bytes_written() as i64;
        let mut columns = Vec::with_capacity(Leaves::COUNT);
        let mut index = Vec::with_capacity(Leaves::COUNT);
        for (spare, (chunk, stats)) in self.spare.iter_mut().zip(closed) {
            let (codec, column, offsets) = chunk.write(&mut file.out, rows, stats)?;
            *spare = Some(codec);
            columns.push(column);
            index.push(offsets);
        }
        let group = RowGroupMetaData::builder(self.descr.clone())
            .set_num_rows(rows as i64)
            .set_total_byte_size(columns.iter().map(|c| c.uncompressed_size()).sum())
            .set_column_metadata(columns)
            .set_file_offset(start)
            .set_ordinal(file.row_groups.len() as i16)
            .build()?;
        file.row_groups.push(group);
        file.offset_indexes.push(index);
        Ok(())
    }

    /// Rows in the open file.
    pub fn rows(&self) -> u64 {
        let written = self.file.as_ref().map_or(0, |f| {
            f.row_groups.iter().map(|g| g.num_rows() as u64).sum()
        });
        written + self.group.rows
    }

    /// Bytes written into the open file so far, plus the open row group's pages (an estimate).
    pub fn bytes(&self) -> usize {
        let pages: usize = self.chunks.iter().flatten().map(ChunkWriter::bytes).sum();
        let written = self.file.as_ref().map_or(0, |f| f.out.bytes_written());
        written + pages + self.group.pending()
    }

    /// Key, value and header bytes of the records appended so far.
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// The open file's full chunks written since the last call (see [`Chunks::take_done`]).
    pub fn take_done(&mut self) -> Vec<Bytes> {
        match self.file.as_ref().map(|f| OpenFile::lock(&f.chunks)) {
            Some(Ok(mut chunks)) => chunks.take_done(),
            _ => Vec::new(),
        }
    }

    /// Writes the open file's last row group and its footer: the file's bytes not taken yet
    /// and its metadata; `None` when no file is open. The next file judges its keys and values
    /// afresh.
    pub fn finish(&mut self) -> Result<Option<(Chunks, ParquetMetaData)>, ParquetError> {
        if self.file.is_none() {
            return Ok(None);
        }
        self.close_group()?;
        let Some(file) = self.file.take() else {
            return Ok(None);
        };
        let rows = file.row_groups.iter().map(RowGroupMetaData::num_rows).sum();
        let meta = FileMetaData::new(
            1,
            rows,
            Some(CREATED_BY.into()),
            Some(vec![self.arrow_schema.clone()]),
            self.descr.clone(),
            None,
        );
        let metadata = ParquetMetaDataBuilder::new(meta)
            .set_row_groups(file.row_groups)
            .set_offset_index(Some(file.offset_indexes))
            .build();
        // The footer (offset index, file metadata, length, magic) goes after the row groups;
        // the writer flushes it when the footer writer drops it.
        ParquetMetaDataWriter::new_with_tracked(file.out, &metadata).finish()?;
        let chunks = std::mem::take(&mut *OpenFile::lock(&file.chunks)?);
        self.values = None;
        self.sample.clear();
        self.group.keys.new_file();
        self.group.headers.new_file();
        Ok(Some((chunks, metadata)))
    }
}

#[cfg(test)]
mod tests;
