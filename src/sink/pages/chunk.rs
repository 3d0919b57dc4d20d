//! One column chunk being written: page bodies compressed and serialized (headers in Thrift by
//! parquet's own page writer) into a buffer of the chunk's own, then handed with the chunk's
//! metadata to the row group (`SerializedRowGroupWriter::append_column`), which splices it into
//! the file. Knows nothing of what the pages hold.

use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// How a chunk's pages are compressed.
pub enum Codec {
    None,
    Snappy(Box<snap::raw::Encoder>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Codec {
    /// Whether this codec writes `c`.
    pub fn is(&self, c: Compression) -> bool {
        matches!(
            (self, c),
            (Codec::None, Compression::UNCOMPRESSED)
                | (Codec::Snappy(_), Compression::SNAPPY)
                | (Codec::Zstd(_), Compression::ZSTD(_))
        )
    }

    pub fn new(c: Compression) -> Result<Self, ParquetError> {
        Ok(match c {
            Compression::UNCOMPRESSED => Codec::None,
            Compression::SNAPPY => Codec::Snappy(Box::new(snap::raw::Encoder::new())),
            Compression::ZSTD(level) => Codec::Zstd(Box::new(
                zstd::bulk::Compressor::new(level.compression_level())
                    .map_err(|e| ParquetError::External(Box::new(e)))?,
            )),
            other => return Err(ParquetError::NYI(format!("{other} pages"))),
        })
    }

    /// `body` as a page's bytes.
    fn compress(&mut self, body: Bytes) -> Result<Bytes, ParquetError> {
        let ext = |e: std::io::Error| ParquetError::External(Box::new(e));
        Ok(match self {
            Codec::None => body,
            Codec::Snappy(enc) => {
                let mut out = vec![0; snap::raw::max_compress_len(body.len())];
                let n = enc
                    .compress(&body, &mut out)
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
                out.truncate(n);
                Bytes::from(out)
            }
            Codec::Zstd(z) => {
                let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(body.len()));
                z.compress_to_buffer(&body[..], &mut out).map_err(ext)?;
                Bytes::from(out)
            }
        })
    }
}

/// The pages of one column chunk so far.
pub struct ChunkWriter {
    descr: ColumnDescPtr,
    compression: Compression,
    codec: Codec,
    sink: TrackedWrite<Vec<u8>>,
    dictionary_offset: Option<i64>,
    data_offset: Option<i64>,
    /// Values, nulls included (levels, for a nested column).
    values: i64,
    uncompressed: i64,
    compressed: i64,
    encodings: Vec<Encoding>,
    /// Where each data page starts, for the offset index readers skip pages by.
    pages: Vec<PageLocation>,
    rows: i64,
}

impl ChunkWriter {
    /// A chunk of `descr` whose pages `codec` compresses as `compression`, written into `buf`
    /// (empty; a finished chunk's, so that its capacity is reused).
    pub fn new(descr: ColumnDescPtr, compression: Compression, codec: Codec, buf: Vec<u8>) -> Self {
        Self {
            descr,
            compression,
            codec,
            sink: TrackedWrite::new(buf),
            dictionary_offset: None,
            data_offset: None,
            values: 0,
            uncompressed: 0,
            compressed: 0,
            encodings: vec![Encoding::RLE],
            pages: Vec::new(),
            rows: 0,
        }
    }

    /// The dictionary page: `count` values, PLAIN. Before any data page.
    pub fn dictionary_page(&mut self, body: &[u8], count: usize) -> Result<(), ParquetError> {
        debug_assert!(self.data_offset.is_none(), "the dictionary comes first");
        let page = Page::DictionaryPage {
            buf: self.codec.compress(Bytes::copy_from_slice(body))?,
            num_values: count as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let (at, _) = self.write(page, body.len(), Encoding::PLAIN)?;
        self.dictionary_offset = Some(at);
        Ok(())
    }

    /// A data page (v1) of `count` values (levels) of `rows` records: its levels, then its
    /// values in `encoding`. Pages start at a record.
    pub fn data_page(
        &mut self,
        body: Bytes,
        count: usize,
        rows: usize,
        encoding: Encoding,
    ) -> Result<(), ParquetError> {
        let raw = body.len();
        let page = Page::DataPage {
            buf: self.codec.compress(body)?,
            num_values: count as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let (at, size) = self.write(page, raw, encoding)?;
        self.data_offset.get_or_insert(at);
        self.values += count as i64;
        self.pages.push(PageLocation {
            offset: at,
            compressed_page_size: size,
            first_row_index: self.rows,
        });
        self.rows += rows as i64;
        Ok(())
    }

    /// Writes `page`: where it starts and its size with its header.
    fn write(&mut self, page: Page, raw: usize, enc: Encoding) -> Result<(i64, i32), ParquetError> {
        let spec =
            SerializedPageWriter::new(&mut self.sink).write_page(CompressedPage::new(page, raw))?;
        self.uncompressed += spec.uncompressed_size as i64;
        self.compressed += spec.compressed_size as i64;
        if !self.encodings.contains(&enc) {
            self.encodings.push(enc);
        }
        Ok((spec.offset as i64, spec.compressed_size as i32))
    }

    /// Bytes of pages written so far.
    pub fn bytes(&self) -> usize {
        self.sink.bytes_written()
    }

    /// The chunk's bytes, its compressor (for the next chunk) and what the row group needs to
    /// splice the bytes in.
    pub fn finish(self, rows: u64, stats: Option<Statistics>) -> Finished {
        let first = self.dictionary_offset.or(self.data_offset).unwrap_or(0);
        let mut b = ColumnChunkMetaData::builder(self.descr)
            .set_compression(self.compression)
            .set_encodings(self.encodings)
            .set_num_values(self.values)
            .set_total_compressed_size(self.compressed)
            .set_total_uncompressed_size(self.uncompressed)
            .set_data_page_offset(self.data_offset.unwrap_or(first))
            .set_dictionary_page_offset(self.dictionary_offset);
        if let Some(s) = stats {
            b = b.set_statistics(s);
        }
        let metadata = b.build()?;
        let buf = self.sink.into_inner()?;
        let close = ColumnCloseResult {
            bytes_written: buf.len() as u64,
            rows_written: rows,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(OffsetIndexMetaData {
                page_locations: self.pages,
                unencoded_byte_array_data_bytes: None,
            }),
        };
        Ok((self.codec, buf, close))
    }
}

/// A finished chunk: its compressor, its bytes and its metadata.
pub type Finished = Result<(Codec, Vec<u8>, ColumnCloseResult), ParquetError>;
