//! Records → one Parquet file in memory, per shard core.
//!
//! Raw-record tables go straight from the fetch buffers into pages (`sink::pages`): no
//! Arrow batch in between. Typed, dead-letter and legacy-map tables append records to Arrow
//! column builders (one copy of each byte, no per-record allocation of its own), turn the
//! builders into a record batch every `batch_rows` rows, and stream batches into an
//! `ArrowWriter` writing into chunks. Once a row group is written its
//! chunks can be taken ([`FileEncoder::take_parts`]) and uploaded while the file goes on, so a
//! file never has to sit whole in memory.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_schema::{FieldRef, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;

use super::SinkError;
use super::chunks::Chunks;
use super::columns::{Columns, Layout, Sizes};
use super::pages::{Leaves, RawFile};
use super::profile;
use super::props;
use super::schema;
use crate::decode::Rejected;
use crate::decode::avro::{AvroSchemas, AvroValues};
use crate::decode::json::JsonValues;
use crate::record::Records;

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    /// Values larger than this are rejected (typed tables).
    pub max_record_bytes: usize,
    /// Typed tables of `--format avro`: the writer schemas (else values are JSON).
    pub avro: Option<AvroSchemas>,
    /// Raw-record tables: write through Arrow builders and `ArrowWriter` rather than icefall's
    /// own pages (`sink::pages`). Not a flag: the "before" of the kernels bench, and the
    /// reference the pages writer's files are checked against.
    pub arrow_writer: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
            max_record_bytes: 1 << 20,
            avro: None,
            arrow_writer: false,
        }
    }
}

impl EncodedFile {
    /// The file as one buffer (a copy; for tests and readers, not the upload path). Whole only
    /// if no part of it was taken while it was written.
    pub fn to_bytes(&self) -> Bytes {
        debug_assert_eq!(
            self.parts.iter().map(Bytes::len).sum::<usize>() as u64,
            self.size
        );
        Bytes::from(self.parts.concat())
    }

    /// The file's length in bytes, parts taken while it was written included.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A finished Parquet file, ready to upload.
#[derive(Debug)]
pub struct EncodedFile {
    /// The file's bytes not taken yet ([`FileEncoder::take_parts`]), in order (see
    /// [`super::chunks`]).
    pub parts: Vec<Bytes>,
    size: u64,
    pub rows: u64,
    /// The footer, for the table's per-column statistics.
    pub metadata: ParquetMetaData,
}

/// A typed table's value decoder.
enum Values {
    Json(Box<JsonValues>),
    Avro(Box<AvroValues>),
}

impl Values {
    fn schema(&self) -> &SchemaRef {
        match self {
            Values::Json(j) => j.schema(),
            Values::Avro(a) => a.schema(),
        }
    }

    /// `walked`: the JSON keys of `records` were already looked at and none is unknown.
    fn decode(
        &mut self,
        records: Records<'_>,
        good: &mut Vec<bool>,
        rejected: &mut Vec<Rejected>,
        walked: bool,
    ) -> Option<RecordBatch> {
        match self {
            Values::Json(j) if walked => j.decode_known(records, good, rejected),
            Values::Json(j) => j.decode(records, good, rejected),
            Values::Avro(a) => a.decode(records, good, rejected),
        }
    }
}

/// One shard core's encoder: at most one open file at a time.
pub struct FileEncoder {
    core: usize,
    schema: SchemaRef,
    layout: Layout,
    /// For files whose values compress, and for files whose values do not.
    props: [WriterProperties; 2],
    zstd_level: i32,
    cols: Columns,
    /// What the buffered rows hold so far; becomes the next batch's capacity hint.
    sizes: Sizes,
    buffered: usize,
    writer: Option<ArrowWriter<Chunks>>,
    file_rows: u64,
    /// Key, value and header bytes of every record appended.
    payload_bytes: u64,
    /// Typed tables: the decoder of the value fields.
    json: Option<Values>,
    good: Vec<bool>,
    /// A dead-letter table's encoder: rows come from [`Self::append_dead_letters`].
    dead_letters: bool,
    /// Raw-record tables: icefall's own writer (`sink::pages`) instead of Arrow builders
    /// and `ArrowWriter`.
    raw: Option<Box<RawFile>>,
}

impl FileEncoder {
    /// An encoder for files of `schema` (the table's schema in Arrow terms, see [`schema`]).
    pub fn new(core: usize, schema: SchemaRef, opts: &EncodeOptions) -> Result<Self, SinkError> {
        let layout = Layout::of(&schema).ok_or_else(|| SinkError::Schema {
            reason: "the table's Arrow schema lacks the timestamp or headers column".into(),
        })?;
        let dead_letters = schema.field_with_name(schema::ERROR).is_ok();
        let json = match schema.field_with_name(schema::VALUE) {
            Ok(_) => None,
            Err(_) => {
                let fields: Vec<FieldRef> = schema.fields().iter().skip(5).cloned().collect();
                let values = Arc::new(arrow_schema::Schema::new(fields));
                let fail = |reason| SinkError::Schema {
                    reason: format!("the value fields cannot be decoded: {reason}"),
                };
                Some(match &opts.avro {
                    None => Values::Json(Box::new(
                        JsonValues::new(values, opts.max_record_bytes).map_err(fail)?,
                    )),
                    Some(schemas) => Values::Avro(Box::new(
                        AvroValues::new(values, schemas.clone(), opts.max_record_bytes)
                            .map_err(fail)?,
                    )),
                })
            }
        };
        let props = |values| {
            props::writer_properties(&schema, opts.zstd_level, opts.row_group_rows, values)
                .map_err(|source| SinkError::Encode { core, source })
        };
        let props = [
            props(props::Sample::Compresses)?,
            props(props::Sample::Incompressible)?,
        ];
        let raw = match json {
            None if !dead_letters && !opts.arrow_writer => Leaves::of(&schema),
            _ => None,
        };
        let raw = match raw {
            Some(leaves) => Some(Box::new(
                RawFile::new(&schema, leaves, opts.zstd_level, opts.row_group_rows)
                    .map_err(|source| SinkError::Encode { core, source })?,
            )),
            None => None,
        };
        Ok(Self {
            core,
            cols: Columns::with_capacity(Sizes::default(), &layout),
            schema,
            layout,
            props,
            zstd_level: opts.zstd_level,
            sizes: Sizes::default(),
            buffered: 0,
            writer: None,
            file_rows: 0,
            payload_bytes: 0,
            good: Vec::new(),
            raw,
            json,
            dead_letters,
        })
    }

    /// The schema of the files this encoder writes.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Top-level JSON fields the table has no column for, ignored so far.
    pub fn unknown_fields(&self) -> u64 {
        match &self.json {
            Some(Values::Json(j)) => j.unknown_fields(),
            _ => 0,
        }
    }

    /// `--evolve`: the top-level JSON fields of `records` the table has no column for, looked
    /// for before [`Self::append`] so the schema can grow first.
    pub fn new_fields(&self, records: Records<'_>) -> Vec<String> {
        match &self.json {
            Some(Values::Json(j)) => j.new_fields(records),
            _ => Vec::new(),
        }
    }

    /// The same encoder for files of another `schema` (the table's, grown by `--evolve`); only
    /// between files. Its counters carry over.
    pub fn reshape(&mut self, schema: SchemaRef, opts: &EncodeOptions) -> Result<(), SinkError> {
        debug_assert!(self.writer.is_none() && self.buffered == 0, "between files");
        let mut next = FileEncoder::new(self.core, schema, opts)?;
        next.payload_bytes = self.payload_bytes;
        if let (Some(Values::Json(old)), Some(Values::Json(new))) = (&self.json, &mut next.json) {
            new.carry_counts(old);
        }
        *self = next;
        Ok(())
    }

    /// Appends one partition's records (in offset order) to the open file. The records stay the
    /// caller's: the shard core hands them back to the fetch core that allocated them, so their
    /// memory is freed on the thread that allocated it.
    ///
    /// Typed tables decode each value into the declared fields; a record that does not decode is
    /// left out and reported in `rejected` (its index in `records`, and why).
    pub fn append(
        &mut self,
        partition: i32,
        records: Records<'_>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        self.append_values(partition, records, rejected, false)
    }

    /// [`Self::append`] of records [`Self::new_fields`] just found no unknown field in: their
    /// keys are not walked again.
    pub fn append_known(
        &mut self,
        partition: i32,
        records: Records<'_>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        self.append_values(partition, records, rejected, true)
    }

    fn append_values(
        &mut self,
        partition: i32,
        records: Records<'_>,
        rejected: &mut Vec<Rejected>,
        walked: bool,
    ) -> Result<(), SinkError> {
        if let Some(raw) = &mut self.raw {
            let core = self.core;
            let before = raw.payload_bytes();
            raw.append(partition, records)
                .map_err(|source| SinkError::Encode { core, source })?;
            self.payload_bytes += raw.payload_bytes() - before;
            self.buffered += records.len();
            return Ok(());
        }
        let typed = self.json.is_some();
        if let Some(json) = &mut self.json
            && let Some(b) = json.decode(records, &mut self.good, rejected, walked)
        {
            self.cols.decoded.push(b);
        }
        let z = &mut self.sizes;
        let before = z.key_bytes + z.value_bytes + z.header_key_bytes + z.header_value_bytes;
        for (i, r) in records.iter().enumerate() {
            if typed && !self.good[i] {
                continue;
            }
            self.cols
                .push(z, partition, r, typed)
                .map_err(|source| SinkError::Arrow {
                    core: self.core,
                    source,
                })?;
            self.buffered += 1;
        }
        z.rows = self.buffered;
        let after = z.key_bytes + z.value_bytes + z.header_key_bytes + z.header_value_bytes;
        self.payload_bytes += (after - before) as u64;
        Ok(())
    }

    /// Dead-letter tables: appends the records `rejected` names, as they came from Kafka, each
    /// with its reason.
    pub fn append_dead_letters(
        &mut self,
        partition: i32,
        records: Records<'_>,
        rejected: &[Rejected],
    ) -> Result<(), SinkError> {
        debug_assert!(self.dead_letters, "a dead-letter table's encoder");
        for bad in rejected {
            let Some(r) = records.get(bad.index) else {
                continue;
            };
            self.cols
                .push(&mut self.sizes, partition, r, false)
                .map_err(|source| SinkError::Arrow {
                    core: self.core,
                    source,
                })?;
            self.cols.error.append_value(&bad.reason);
            self.buffered += 1;
        }
        self.sizes.rows = self.buffered;
        Ok(())
    }

    /// Key, value and header bytes of every record appended so far.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Rows appended but not yet handed to the Parquet writer.
    pub fn buffered_rows(&self) -> usize {
        self.buffered
    }

    /// Rows in the open file, buffered ones included.
    pub fn file_rows(&self) -> u64 {
        match &self.raw {
            Some(raw) => raw.rows(),
            None => self.file_rows + self.buffered as u64,
        }
    }

    /// Encoded size of the open file so far (bytes written plus the open row group's estimate).
    pub fn file_bytes(&self) -> usize {
        if let Some(raw) = &self.raw {
            return raw.bytes();
        }
        self.writer
            .as_ref()
            .map_or(0, |w| w.bytes_written() + w.in_progress_size())
    }

    /// How the values of a file's first batch compress (raw tables; typed tables have no value
    /// column and always compress).
    fn sample_values(&self, batch: &RecordBatch) -> props::Sample {
        let Ok(i) = batch.schema().index_of(schema::VALUE) else {
            return props::Sample::Compresses;
        };
        match batch.column(i).as_binary_opt::<i32>() {
            Some(values) => props::Sample::of(values.value_data(), self.zstd_level),
            None => props::Sample::Compresses,
        }
    }

    /// Hands the buffered rows to the Parquet writer as one record batch.
    /// Raw-record tables write their rows as they are appended: this only resets the count
    /// of rows since the last call, which paces [`Self::take_parts`].
    pub fn encode_buffered(&mut self) -> Result<(), SinkError> {
        if self.raw.is_some() {
            self.buffered = 0;
            return Ok(());
        }
        if self.buffered == 0 {
            return Ok(());
        }
        let core = self.core;
        let values = self.json.as_ref().map(Values::schema);
        let cols = self
            .cols
            .finish(values, self.dead_letters)
            .map_err(|source| SinkError::Arrow { core, source })?;
        let batch = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|source| SinkError::Arrow { core, source })?;
        let z = &self.sizes;
        let row_bytes = (z.key_bytes + z.value_bytes + z.header_key_bytes + z.header_value_bytes)
            / self.buffered;
        let mut sizes = std::mem::take(&mut self.sizes);
        if self.json.is_some() {
            // Typed tables decode values into other columns: the bytes builder stays empty.
            sizes.value_bytes = 0;
        }
        self.cols = Columns::with_capacity(sizes, &self.layout);
        if self.writer.is_none() {
            let [compressed, uncompressed] = &self.props;
            let base = match self.sample_values(&batch) {
                props::Sample::Compresses => compressed,
                props::Sample::Incompressible => uncompressed,
            };
            let choices = profile::choices(&batch, props::judged);
            let props = props::for_file(base, &choices, row_bytes);
            let w = ArrowWriter::try_new(Chunks::new(), self.schema.clone(), Some(props))
                .map_err(|source| SinkError::Encode { core, source })?;
            self.writer = Some(w);
        }
        let writer = self.writer.as_mut().expect("writer opened above");
        writer
            .write(&batch)
            .map_err(|source| SinkError::Encode { core, source })?;
        self.file_rows += self.buffered as u64;
        self.buffered = 0;
        Ok(())
    }

    /// The bytes of the open file's written row groups not taken yet, in order (empty until a
    /// row group is written): to upload while the file goes on.
    pub fn take_parts(&mut self) -> Vec<Bytes> {
        if let Some(raw) = &mut self.raw {
            return raw.take_done();
        }
        self.writer
            .as_mut()
            .map(|w| w.inner_mut().take_done())
            .unwrap_or_default()
    }

    /// Closes the open file and returns what of it was not taken yet; `None` when it holds no
    /// rows.
    pub fn finish_file(&mut self) -> Result<Option<EncodedFile>, SinkError> {
        if let Some(raw) = &mut self.raw {
            let core = self.core;
            let rows = raw.rows();
            let done = raw
                .finish()
                .map_err(|source| SinkError::Encode { core, source })?;
            self.buffered = 0;
            return Ok(done.map(|(buf, metadata)| EncodedFile {
                size: buf.len() as u64,
                parts: buf.into_parts(),
                rows,
                metadata,
            }));
        }
        self.encode_buffered()?;
        let Some(mut writer) = self.writer.take() else {
            return Ok(None);
        };
        let core = self.core;
        let metadata = writer
            .finish()
            .map_err(|source| SinkError::Encode { core, source })?;
        // The footer is written: the buffer is the whole file.
        let buf = std::mem::take(writer.inner_mut());
        let rows = std::mem::take(&mut self.file_rows);
        Ok(Some(EncodedFile {
            size: buf.len() as u64,
            parts: buf.into_parts(),
            rows,
            metadata,
        }))
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
