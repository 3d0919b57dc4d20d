//! How each column of a data file is encoded: the Parquet writer properties of a table's schema.
//!
//! Chosen by measurement (BENCHMARKS.md, "Shard core: column encodings"): Parquet's defaults
//! (a dictionary and min/max statistics on every column) cost the shard core most where they
//! cannot pay off. Offsets and timestamps rise by small steps, so they are delta-encoded without
//! a dictionary (a dictionary of unique values only fills up and falls back). Record values and
//! header values are mostly unique: no dictionary, and no statistics, since min/max of opaque
//! bytes prunes nothing (their Iceberg null counts are then left unknown, never guessed). Keys,
//! partitions and header keys keep both: they repeat, and keys are what users filter on.

use arrow_schema::Schema;
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::schema;

/// Writer properties for files of `arrow` (a table's Arrow schema).
pub fn writer_properties(
    arrow: &Schema,
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(zstd_level)?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows));
    for name in [schema::OFFSET, schema::TIMESTAMP] {
        let path = ColumnPath::from(name);
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    let parquet = ArrowSchemaConverter::new().convert(arrow)?;
    for leaf in parquet.columns() {
        if opaque(leaf.path().parts()) {
            b = b
                .set_column_dictionary_enabled(leaf.path().clone(), false)
                .set_column_statistics_enabled(leaf.path().clone(), EnabledStatistics::None);
        }
    }
    Ok(b.build())
}

/// Raw values, and header values in either header layout (a list of structs or a legacy map).
fn opaque(parts: &[String]) -> bool {
    match parts {
        [only] => only == schema::VALUE,
        [first, .., last] => first == schema::HEADERS && last == "value",
        [] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::schema::raw_arrow_schema;

    #[test]
    fn opaque_columns_lose_dictionary_and_statistics_and_offsets_are_delta_encoded() {
        let props = writer_properties(&raw_arrow_schema(), 1, 1024).unwrap();
        let parquet = ArrowSchemaConverter::new()
            .convert(&raw_arrow_schema())
            .unwrap();
        let mut opaque_leaves = 0;
        for leaf in parquet.columns() {
            let p = leaf.path();
            let dict = props.dictionary_enabled(p);
            let stats = props.statistics_enabled(p);
            if opaque(p.parts()) {
                opaque_leaves += 1;
                assert!(!dict, "{p}");
                assert_eq!(stats, EnabledStatistics::None, "{p}");
            } else {
                assert_ne!(stats, EnabledStatistics::None, "{p} keeps its statistics");
            }
        }
        assert_eq!(opaque_leaves, 2, "the value and the header value");
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
    }
}
