//! How each column of a data file is encoded: the Parquet writer properties of a table's schema,
//! for the files `ArrowWriter` writes (typed, dead-letter and legacy-map tables; raw-record
//! tables are written by `sink::pages`, which makes the same choices for the Kafka columns
//! but for header values, stored DELTA_LENGTH_BYTE_ARRAY and uncompressed there).
//!
//! Chosen by measurement (BENCHMARKS.md, "Shard core: column encodings"): Parquet's defaults
//! (a dictionary and min/max statistics on every column) cost the shard core most where they
//! cannot pay off. Offsets and timestamps rise by small steps, so they are delta-encoded without
//! a dictionary (a dictionary of unique values only fills up and falls back). Record values and
//! header values are mostly unique: no dictionary, and no statistics, since min/max of opaque
//! bytes prunes nothing (their Iceberg null counts are then left unknown, never guessed). Keys
//! and partitions keep their statistics (keys are what users filter on) and get a dictionary
//! when a file's first batch shows them repeating ([`for_file`]). Header keys lose
//! their statistics (no reader prunes on a field inside a list: Iceberg keeps bounds for
//! top-level columns only, in Java as in [`super::stats`]; the comparisons cost the shard core
//! ~6 ns per record) and their dictionary: a handful of short names repeated in every record is
//! what zstd shrinks as well as a dictionary does, and interning them (a hash and a compare per
//! header) cost more than the zstd pass (BENCHMARKS.md, "Shard core: typed columns").
//!
//! Header values are compressed with Snappy, not zstd: short, mostly unique values (ids,
//! sequence numbers, trace contexts) are where zstd is slowest per byte. On the e2e sample it was
//! the largest single cost of the shard core; Snappy makes files ~1.5% larger (BENCHMARKS.md,
//! "Shard core: header columns").
//!
//! Values that zstd cannot shrink (encrypted, already compressed, random) are written
//! uncompressed: each file decides from a sample of its first batch ([`Sample`]), so a topic
//! whose values change nature changes with them at the next file.
//!
//! The typed columns of `--format json`/`avro` (and any column the rules above leave alone) are
//! judged per file too: [`for_file`] applies what [`super::profile`] saw in the first batch (a
//! dictionary where values repeat, DELTA_BINARY_PACKED for integers moving by small steps, plain
//! otherwise) and sizes the column writers' batches to the rows (BENCHMARKS.md, "Shard core:
//! typed columns").

use arrow_schema::Schema;
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::profile::Choice;
use super::schema;

/// Bytes of values a file's compressibility is judged on.
pub const SAMPLE_BYTES: usize = 64 << 10;

/// What a sample of a file's values says about compressing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// zstd saves at least 3% (or the sample is too small to tell): compress.
    Compresses,
    /// zstd saves less than 3%: store the values as they are.
    Incompressible,
}

impl Sample {
    /// Judges `bytes` (at most [`SAMPLE_BYTES`] are looked at) at the table's zstd level.
    pub fn of(bytes: &[u8], zstd_level: i32) -> Sample {
        let bytes = &bytes[..bytes.len().min(SAMPLE_BYTES)];
        if bytes.len() < 4096 {
            return Sample::Compresses;
        }
        match zstd::bulk::compress(bytes, zstd_level) {
            Ok(z) if z.len() as u64 * 100 >= bytes.len() as u64 * 97 => Sample::Incompressible,
            _ => Sample::Compresses,
        }
    }
}

/// Writer properties for files of `arrow` (a table's Arrow schema) whose values sampled as
/// `values`.
pub fn writer_properties(
    arrow: &Schema,
    zstd_level: i32,
    row_group_rows: usize,
    values: Sample,
) -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(zstd_level)?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows));
    if values == Sample::Incompressible {
        b = b.set_column_compression(ColumnPath::from(schema::VALUE), Compression::UNCOMPRESSED);
    }
    for name in [schema::OFFSET, schema::TIMESTAMP] {
        let path = ColumnPath::from(name);
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    let parquet = ArrowSchemaConverter::new().convert(arrow)?;
    for leaf in parquet.columns() {
        let path = leaf.path().clone();
        let header = header_leaf(path.parts());
        if opaque(path.parts()) || header == Some(HeaderLeaf::Key) {
            b = b.set_column_dictionary_enabled(path.clone(), false);
        }
        if opaque(path.parts()) || header == Some(HeaderLeaf::Key) {
            b = b.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
        if header == Some(HeaderLeaf::Value) {
            b = b.set_column_compression(path, Compression::SNAPPY);
        }
    }
    Ok(b.build())
}

/// Bytes of rows the column writers take at a time, at most (see [`for_file`]).
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// The properties of one file: `base` (from [`writer_properties`]) with the encodings its first
/// batch chose for its flat columns ([`super::profile::choices`]), and as many rows per write
/// batch as fit [`WRITE_BATCH_BYTES`] at the `row_bytes` its first batch averaged, between
/// 64 and 8,192 (Parquet's default is 1,024 whatever the rows hold). Column writers check
/// their page limits once per write batch, so the bound keeps pages near Parquet's 1 MiB;
/// fewer, larger batches cut the per-batch work of every column writer (BENCHMARKS.md, "Shard
/// core: typed columns").
pub fn for_file(
    base: &WriterProperties,
    choices: &[(String, Choice)],
    row_bytes: usize,
) -> WriterProperties {
    let rows = (WRITE_BATCH_BYTES / row_bytes.max(1)).clamp(64, 8192);
    let mut b = base.clone().into_builder().set_write_batch_size(rows);
    for (name, choice) in choices {
        let path = ColumnPath::from(name.as_str());
        b = match choice {
            Choice::Dictionary => b.set_column_dictionary_enabled(path, true),
            Choice::Delta => b
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
            Choice::Plain => b.set_column_dictionary_enabled(path, false),
        };
    }
    b.build()
}

/// The columns a file's first batch decides the encoding of: all flat ones but those whose
/// encoding is fixed above (offsets, timestamps, raw values).
pub fn judged(name: &str) -> bool {
    ![
        schema::OFFSET,
        schema::TIMESTAMP,
        schema::VALUE,
        schema::HEADERS,
    ]
    .contains(&name)
}

/// The two leaves of the headers column, in either layout (a list of structs or a legacy map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderLeaf {
    Key,
    Value,
}

fn header_leaf(parts: &[String]) -> Option<HeaderLeaf> {
    match parts {
        [first, _, .., last] if first == schema::HEADERS => match last.as_str() {
            "key" => Some(HeaderLeaf::Key),
            "value" => Some(HeaderLeaf::Value),
            _ => None,
        },
        _ => None,
    }
}

/// Columns of opaque bytes: the raw value and the header values.
fn opaque(parts: &[String]) -> bool {
    match parts {
        [only] => only == schema::VALUE,
        _ => header_leaf(parts) == Some(HeaderLeaf::Value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::schema::raw_arrow_schema;

    #[test]
    fn opaque_columns_lose_dictionary_and_statistics_and_offsets_are_delta_encoded() {
        let props = writer_properties(&raw_arrow_schema(), 1, 1024, Sample::Compresses).unwrap();
        let parquet = ArrowSchemaConverter::new()
            .convert(&raw_arrow_schema())
            .unwrap();
        let (mut opaque_leaves, mut header_keys) = (0, 0);
        for leaf in parquet.columns() {
            let p = leaf.path();
            let dict = props.dictionary_enabled(p);
            let stats = props.statistics_enabled(p);
            if opaque(p.parts()) {
                opaque_leaves += 1;
                assert!(!dict, "{p}");
                assert_eq!(stats, EnabledStatistics::None, "{p}");
            } else if header_leaf(p.parts()) == Some(HeaderLeaf::Key) {
                header_keys += 1;
                assert!(!dict, "{p}: a few names zstd shrinks as well, for less");
                assert_eq!(
                    stats,
                    EnabledStatistics::None,
                    "{p}: no reader prunes on it"
                );
            } else {
                assert_ne!(stats, EnabledStatistics::None, "{p} keeps its statistics");
            }
            let snappy = props.compression(p) == Compression::SNAPPY;
            assert_eq!(
                snappy,
                header_leaf(p.parts()) == Some(HeaderLeaf::Value),
                "{p}"
            );
        }
        assert_eq!(opaque_leaves, 2, "the value and the header value");
        assert_eq!(header_keys, 1);
        let legacy = ArrowSchemaConverter::new()
            .convert(&legacy_map_schema())
            .unwrap();
        let leaves: Vec<_> = legacy
            .columns()
            .iter()
            .filter_map(|c| header_leaf(c.path().parts()))
            .collect();
        assert_eq!(
            leaves,
            [HeaderLeaf::Key, HeaderLeaf::Value],
            "a legacy map's leaves"
        );
        for name in [schema::OFFSET, schema::TIMESTAMP] {
            let p = ColumnPath::from(name);
            assert!(!props.dictionary_enabled(&p));
            assert_eq!(props.encoding(&p), Some(Encoding::DELTA_BINARY_PACKED));
        }
        assert!(props.dictionary_enabled(&ColumnPath::from(schema::KEY)));
        assert!(!opaque(&[
            "_kafka_headers".into(),
            "list".into(),
            "element".into(),
            "key".into()
        ]));
        let value = ColumnPath::from(schema::VALUE);
        assert!(matches!(props.compression(&value), Compression::ZSTD(_)));
        let raw = writer_properties(&raw_arrow_schema(), 1, 1024, Sample::Incompressible).unwrap();
        assert_eq!(raw.compression(&value), Compression::UNCOMPRESSED);
        let key = ColumnPath::from(schema::KEY);
        assert!(matches!(raw.compression(&key), Compression::ZSTD(_)));
    }

    /// The Arrow schema of a table created with the legacy `map<string, binary>` headers.
    fn legacy_map_schema() -> Schema {
        let mut fields: Vec<_> = schema::iceberg_schema().as_struct().fields().to_vec();
        let mut h = (*fields[4]).clone();
        h.field_type = Box::new(schema::legacy_headers_type());
        fields[4] = std::sync::Arc::new(h);
        let legacy = iceberg::spec::Schema::builder()
            .with_fields(fields)
            .build()
            .unwrap();
        (*schema::arrow_schema(&legacy).unwrap()).clone()
    }

    #[test]
    fn samples_tell_text_from_noise() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"user\":\"user-{:04}\",\"ok\":true}}", i % 97).into_bytes())
            .collect();
        assert_eq!(Sample::of(&text, 1), Sample::Compresses);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..SAMPLE_BYTES * 2)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(Sample::of(&noise, 1), Sample::Incompressible);
        assert_eq!(
            Sample::of(&noise[..100], 1),
            Sample::Compresses,
            "too small to tell"
        );
    }

    /// The value column's codec in a file of `values`, after checking the file reads back.
    fn value_codec(values: Vec<Vec<u8>>) -> Compression {
        use crate::record::{Batch, Record};
        use crate::sink::encode::{EncodeOptions, FileEncoder};
        use arrow_array::cast::AsArray;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let recs: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                offset: i as i64,
                timestamp_ms: 0,
                shard: 0,
                key: None,
                value: Some(v.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut enc = FileEncoder::new(0, raw_arrow_schema(), &EncodeOptions::default()).unwrap();
        enc.append(0, Batch::of_records(0, &recs).records(), &mut Vec::new())
            .unwrap();
        let file = enc.finish_file().unwrap().unwrap();
        let mut back = Vec::new();
        for b in ParquetRecordBatchReaderBuilder::try_new(file.to_bytes())
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let col = b.column_by_name(schema::VALUE).unwrap().as_binary::<i32>();
            back.extend(col.iter().map(|v| v.unwrap().to_vec()));
        }
        assert_eq!(back, values, "read back row for row");
        let rg = file.metadata.row_group(0);
        let value = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == schema::VALUE)
            .unwrap();
        value.compression()
    }

    #[test]
    fn a_file_of_random_values_stores_them_uncompressed_and_text_stays_compressed() {
        let mut x = 7u64;
        let random: Vec<Vec<u8>> = (0..2_000)
            .map(|_| {
                (0..100)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 56) as u8
                    })
                    .collect()
            })
            .collect();
        assert_eq!(value_codec(random), Compression::UNCOMPRESSED);
        let text: Vec<Vec<u8>> = (0..2_000)
            .map(|i| format!("{{\"user\":\"user-{:04}\",\"n\":{i}}}", i % 50).into_bytes())
            .collect();
        assert!(matches!(value_codec(text), Compression::ZSTD(_)));
    }
}
