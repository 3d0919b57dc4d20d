//! A finished Parquet file described as an Iceberg `DataFile`: record count, size, and per-column
//! sizes, value counts, null counts and lower/upper bounds, all read from the file's footer.
//!
//! Bounds are kept for top-level primitive columns (binary ones truncated to 16 bytes, the
//! upper bound rounded up so it stays an upper bound); columns inside the headers map get sizes
//! and counts only.

use std::collections::HashMap;

use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, PrimitiveType, Schema, Type,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

use super::SinkError;

/// Longest binary bound kept, as Iceberg's default metrics mode `truncate(16)`.
const BOUND_BYTES: usize = 16;

#[derive(Default)]
struct Column {
    size: u64,
    values: u64,
    nulls: u64,
    lower: Option<Datum>,
    upper: Option<Datum>,
    /// Some chunk's maximum has no representable upper bound: the file gets none.
    unbounded: bool,
    /// Some chunk has no null count (statistics off for the column): the file's is unknown.
    nulls_unknown: bool,
}

/// The `DataFile` for a file written at `path` (its full location) with `size` bytes.
pub fn data_file(
    path: String,
    size: u64,
    metadata: &ParquetMetaData,
    schema: &Schema,
    partition_spec_id: i32,
) -> Result<DataFile, SinkError> {
    let top_level: HashMap<i32, PrimitiveType> = schema
        .as_struct()
        .fields()
        .iter()
        .filter_map(|f| match f.field_type.as_ref() {
            Type::Primitive(p) => Some((f.id, p.clone())),
            _ => None,
        })
        .collect();
    let mut cols: HashMap<i32, Column> = HashMap::new();
    for rg in metadata.row_groups() {
        for chunk in rg.columns() {
            let info = chunk.column_descr().self_type().get_basic_info();
            if !info.has_id() {
                continue;
            }
            let id = info.id();
            let c = cols.entry(id).or_default();
            c.size += chunk.compressed_size().max(0) as u64;
            c.values += chunk.num_values().max(0) as u64;
            let Some(stats) = chunk.statistics() else {
                c.nulls_unknown = true;
                continue;
            };
            match stats.null_count_opt() {
                Some(n) => c.nulls += n,
                None => c.nulls_unknown = true,
            }
            if let Some(ty) = top_level.get(&id)
                && let Some((lo, hi)) = bounds(stats, ty)
            {
                if c.lower.as_ref().is_none_or(|old| lo < *old) {
                    c.lower = Some(lo);
                }
                match hi {
                    None => c.unbounded = true,
                    Some(hi) if c.upper.as_ref().is_none_or(|old| hi > *old) => c.upper = Some(hi),
                    Some(_) => {}
                }
            }
        }
    }
    let mut b = DataFileBuilder::default();
    b.content(DataContentType::Data)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .partition_spec_id(partition_spec_id)
        .record_count(metadata.file_metadata().num_rows().max(0) as u64)
        .file_size_in_bytes(size)
        .column_sizes(cols.iter().map(|(id, c)| (*id, c.size)).collect())
        .value_counts(cols.iter().map(|(id, c)| (*id, c.values)).collect())
        .null_value_counts(
            cols.iter()
                .filter(|(_, c)| !c.nulls_unknown)
                .map(|(id, c)| (*id, c.nulls))
                .collect(),
        )
        .lower_bounds(
            cols.iter()
                .filter_map(|(id, c)| Some((*id, c.lower.clone()?)))
                .collect(),
        )
        .upper_bounds(
            cols.iter()
                .filter_map(|(id, c)| Some((*id, c.upper.clone().filter(|_| !c.unbounded)?)))
                .collect(),
        );
    b.build().map_err(|e| SinkError::Schema {
        reason: format!("cannot describe data file: {e}"),
    })
}

/// Lower and (when one exists) upper bound of one column chunk, in the column's Iceberg type.
fn bounds(stats: &Statistics, ty: &PrimitiveType) -> Option<(Datum, Option<Datum>)> {
    match (stats, ty) {
        (Statistics::Int32(s), PrimitiveType::Int) => {
            Some((Datum::int(*s.min_opt()?), Some(Datum::int(*s.max_opt()?))))
        }
        (Statistics::Int64(s), PrimitiveType::Long) => {
            Some((Datum::long(*s.min_opt()?), Some(Datum::long(*s.max_opt()?))))
        }
        (Statistics::Int64(s), PrimitiveType::Timestamptz) => Some((
            Datum::timestamptz_micros(*s.min_opt()?),
            Some(Datum::timestamptz_micros(*s.max_opt()?)),
        )),
        (Statistics::ByteArray(s), PrimitiveType::Binary) => {
            let lo = s.min_bytes_opt()?;
            let hi = s.max_bytes_opt()?;
            let lower = &lo[..lo.len().min(BOUND_BYTES)];
            Some((
                Datum::binary(lower.iter().copied()),
                truncate_upper(hi).map(Datum::binary),
            ))
        }
        _ => None,
    }
}

/// The shortest value of at most 16 bytes that is >= `max`, if there is one.
fn truncate_upper(max: &[u8]) -> Option<Vec<u8>> {
    if max.len() <= BOUND_BYTES {
        return Some(max.to_vec());
    }
    let mut v = max[..BOUND_BYTES].to_vec();
    while let Some(last) = v.pop() {
        if last < u8::MAX {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::sink::encode::{EncodeOptions, FileEncoder};
    use crate::sink::schema;

    #[test]
    fn upper_bounds_round_up_and_give_up_on_all_ff() {
        assert_eq!(truncate_upper(b"abc").unwrap(), b"abc");
        let long = [b'a'; 20];
        let mut want = vec![b'a'; 15];
        want.push(b'b');
        assert_eq!(truncate_upper(&long).unwrap(), want);
        let mut ff = vec![b'a'; 15];
        ff.extend([0xff; 5]);
        assert_eq!(
            truncate_upper(&ff).unwrap(),
            [vec![b'a'; 14], vec![b'b']].concat()
        );
        assert_eq!(truncate_upper(&[0xff; 17]), None);
    }

    #[test]
    fn data_file_carries_counts_and_bounds_by_field_id() {
        let mut enc =
            FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default()).unwrap();
        let recs: Vec<Record> = (10..20)
            .map(|o| Record {
                offset: o,
                timestamp_ms: 1_000 + o,
                shard: 0,
                key: (o % 2 == 0).then(|| format!("k{o}").into_bytes()),
                value: Some(vec![o as u8; 3]),
                headers: Default::default(),
            })
            .collect();
        enc.append(
            4,
            crate::record::Batch::of_records(4, &recs).records(),
            &mut Vec::new(),
        )
        .unwrap();
        let f = enc.finish_file().unwrap().unwrap();
        let df = data_file(
            "file:///x.parquet".into(),
            f.size(),
            &f.metadata,
            &schema::iceberg_schema(),
            0,
        )
        .unwrap();
        assert_eq!(df.record_count(), 10);
        assert_eq!(df.file_size_in_bytes(), f.size());
        assert_eq!(df.value_counts()[&2], 10);
        assert_eq!(df.null_value_counts()[&4], 5, "odd offsets have no key");
        assert_eq!(df.lower_bounds()[&1], Datum::int(4));
        assert_eq!(df.lower_bounds()[&2], Datum::long(10));
        assert_eq!(df.upper_bounds()[&2], Datum::long(19));
        assert_eq!(df.upper_bounds()[&3], Datum::timestamptz_micros(1_019_000));
        assert_eq!(df.lower_bounds()[&4], Datum::binary(b"k10".iter().copied()));
        assert!(df.column_sizes().keys().all(|id| (1..=9).contains(id)));
        // The value column carries no statistics (sink::props): its null count is unknown,
        // not zero, and it has no bounds.
        assert_eq!(df.value_counts()[&6], 10);
        assert!(!df.null_value_counts().contains_key(&6));
        assert!(!df.lower_bounds().contains_key(&6));
    }
}
