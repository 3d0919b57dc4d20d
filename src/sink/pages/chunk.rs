//! One column chunk being written: page bodies compressed and serialized (headers in Thrift by
//! parquet's own page writer) into a buffer of the chunk's own, then handed with the chunk's
//! metadata to the row group (`SerializedRowGroupWriter::append_column`), which splices it into
//! the file. Knows nothing of what the pages hold.

use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// How a chunk's pages are compressed.
pub enum Codec {
    None,
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Codec {
    /// Whether this codec writes `c`.
    pub fn is(&self, c: Compression) -> bool {
        matches!(
            (self, c),
            (Codec::None, Compression::UNCOMPRESSED) | (Codec::Zstd(_), Compression::ZSTD(_))
        )
    }

    pub fn new(c: Compression) -> Result<Self, ParquetError> {
        Ok(match c {
            Compression::UNCOMPRESSED => Codec::None,
            Compression::ZSTD(level) => Codec::Zstd(Box::new(
                zstd::bulk::Compressor::new(level.compression_level())
                    .map_err(|e| ParquetError::External(Box::new(e)))?,
            )),
            other => return Err(ParquetError::NYI(format!("{other} pages"))),
        })
    }

    /// `body` as a page's bytes.
    fn compress(&mut self, body: Bytes) -> Result<Bytes, ParquetError> {
        Ok(match self {
            Codec::None => body,
            Codec::Zstd(z) => {
                let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(body.len()));
                z.compress_to_buffer(&body[..], &mut out)
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
                Bytes::from(out)
            }
        })
    }
}

/// The pages of one column chunk so far, compressed and held until the row group is written.
pub struct ChunkWriter {
    descr: ColumnDescPtr,
    compression: Compression,
    codec: Codec,
    dictionary: Option<CompressedPage>,
    /// Data pages and the row each starts at.
    pages: Vec<(CompressedPage, i64)>,
    /// Values, nulls included (levels, for a nested column).
    values: i64,
    rows: i64,
    /// Compressed bytes of the pages.
    bytes: usize,
    encodings: Vec<Encoding>,
}

impl ChunkWriter {
    /// A chunk of `descr` whose pages `codec` compresses as `compression`.
    pub fn new(descr: ColumnDescPtr, compression: Compression, codec: Codec) -> Self {
        Self {
            descr,
            compression,
            codec,
            dictionary: None,
            pages: Vec::new(),
            values: 0,
            rows: 0,
            bytes: 0,
            encodings: vec![Encoding::RLE],
        }
    }

    /// The dictionary page: `count` values, PLAIN. Written before the data pages.
    pub fn dictionary_page(&mut self, body: &[u8], count: usize) -> Result<(), ParquetError> {
        let page = Page::DictionaryPage {
            buf: self.codec.compress(Bytes::copy_from_slice(body))?,
            num_values: count as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        self.note(&page, Encoding::PLAIN);
        self.dictionary = Some(CompressedPage::new(page, body.len()));
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
        self.note(&page, encoding);
        self.pages.push((CompressedPage::new(page, raw), self.rows));
        self.values += count as i64;
        self.rows += rows as i64;
        Ok(())
    }

    fn note(&mut self, page: &Page, encoding: Encoding) {
        self.bytes += page.buffer().len();
        if !self.encodings.contains(&encoding) {
            self.encodings.push(encoding);
        }
    }

    /// Compressed bytes of the pages so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes the chunk's pages into the file at `out` (the dictionary first): its compressor
    /// (for the next chunk), its metadata and its offset index.
    pub fn write<W: std::io::Write + Send>(
        self,
        out: &mut TrackedWrite<W>,
        rows: u64,
        stats: Option<Statistics>,
    ) -> Written {
        debug_assert_eq!(rows as i64, self.rows, "every row is in a page");
        let mut sizes = (0i64, 0i64);
        let mut write = |page: CompressedPage| {
            let spec = SerializedPageWriter::new(&mut *out).write_page(page)?;
            sizes.0 += spec.uncompressed_size as i64;
            sizes.1 += spec.compressed_size as i64;
            Ok::<_, ParquetError>((spec.offset as i64, spec.compressed_size as i32))
        };
        let dictionary_offset = match self.dictionary {
            Some(page) => Some(write(page)?.0),
            None => None,
        };
        let mut locations = Vec::with_capacity(self.pages.len());
        for (page, first_row_index) in self.pages {
            let (offset, compressed_page_size) = write(page)?;
            locations.push(PageLocation {
                offset,
                compressed_page_size,
                first_row_index,
            });
        }
        let data_offset = locations.first().map(|l| l.offset);
        let first = dictionary_offset
            .or(data_offset)
            .unwrap_or(out.bytes_written() as i64);
        let mut b = ColumnChunkMetaData::builder(self.descr)
            .set_compression(self.compression)
            .set_encodings(self.encodings)
            .set_num_values(self.values)
            .set_total_uncompressed_size(sizes.0)
            .set_total_compressed_size(sizes.1)
            .set_data_page_offset(data_offset.unwrap_or(first))
            .set_dictionary_page_offset(dictionary_offset);
        if let Some(s) = stats {
            b = b.set_statistics(s);
        }
        let index = OffsetIndexMetaData {
            page_locations: locations,
            unencoded_byte_array_data_bytes: None,
        };
        Ok((self.codec, b.build()?, index))
    }
}

/// A written chunk: its compressor, its metadata and its offset index.
pub type Written = Result<(Codec, ColumnChunkMetaData, OffsetIndexMetaData), ParquetError>;

/// A chunk whose last page is cut, and its statistics: ready to be written.
pub type Closed = Result<(ChunkWriter, Option<Statistics>), ParquetError>;
