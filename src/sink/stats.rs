//! A finished Parquet file described as an Iceberg `DataFile`: record count, size, and per-column
//! sizes, value counts, null counts and lower/upper bounds, all read from the file's footer.
//!
//! Bounds are kept for every top-level primitive column, in the column's Iceberg type (binary
//! truncated to 16 bytes and strings to 16 characters, as Iceberg's default `truncate(16)`, the
//! upper bound rounded up so it stays one; none for a float chunk whose bound is NaN). Columns
//! inside structs, lists and the headers map get sizes and counts only.

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
/// Every primitive type has bounds; a float chunk whose minimum or maximum is NaN has none.
fn bounds(stats: &Statistics, ty: &PrimitiveType) -> Option<(Datum, Option<Datum>)> {
    use PrimitiveType as P;
    let both = |lo: Datum, hi: Datum| Some((lo, Some(hi)));
    match (stats, ty) {
        (Statistics::Boolean(s), P::Boolean) => {
            both(Datum::bool(*s.min_opt()?), Datum::bool(*s.max_opt()?))
        }
        (Statistics::Int32(s), P::Int) => {
            both(Datum::int(*s.min_opt()?), Datum::int(*s.max_opt()?))
        }
        (Statistics::Int32(s), P::Date) => {
            both(Datum::date(*s.min_opt()?), Datum::date(*s.max_opt()?))
        }
        (Statistics::Int64(s), P::Time) => both(
            Datum::time_micros(*s.min_opt()?).ok()?,
            Datum::time_micros(*s.max_opt()?).ok()?,
        ),
        (Statistics::Int64(s), _) => {
            let at = |v: i64| match ty {
                P::Long => Some(Datum::long(v)),
                P::Timestamp => Some(Datum::timestamp_micros(v)),
                P::Timestamptz => Some(Datum::timestamptz_micros(v)),
                P::TimestampNs => Some(Datum::timestamp_nanos(v)),
                P::TimestamptzNs => Some(Datum::timestamptz_nanos(v)),
                _ => decimal(i128::from(v), ty),
            };
            both(at(*s.min_opt()?)?, at(*s.max_opt()?)?)
        }
        (Statistics::Int32(s), P::Decimal { .. }) => both(
            decimal(i128::from(*s.min_opt()?), ty)?,
            decimal(i128::from(*s.max_opt()?), ty)?,
        ),
        (Statistics::Float(s), P::Float) => {
            let (lo, hi) = (*s.min_opt()?, *s.max_opt()?);
            (!lo.is_nan() && !hi.is_nan()).then(|| (Datum::float(lo), Some(Datum::float(hi))))
        }
        (Statistics::Double(s), P::Double) => {
            let (lo, hi) = (*s.min_opt()?, *s.max_opt()?);
            (!lo.is_nan() && !hi.is_nan()).then(|| (Datum::double(lo), Some(Datum::double(hi))))
        }
        (Statistics::ByteArray(s), P::String) => {
            let lo = std::str::from_utf8(s.min_bytes_opt()?).ok()?;
            let hi = std::str::from_utf8(s.max_bytes_opt()?).ok()?;
            let lower: String = lo.chars().take(BOUND_BYTES).collect();
            Some((
                Datum::string(lower),
                truncate_upper_str(hi).map(Datum::string),
            ))
        }
        (Statistics::ByteArray(s), P::Binary) => {
            let lo = s.min_bytes_opt()?;
            let hi = s.max_bytes_opt()?;
            let lower = &lo[..lo.len().min(BOUND_BYTES)];
            Some((
                Datum::binary(lower.iter().copied()),
                truncate_upper(hi, BOUND_BYTES).map(Datum::binary),
            ))
        }
        (Statistics::FixedLenByteArray(s), P::Decimal { .. } | P::Uuid | P::Fixed(_)) => {
            let at = |b: &[u8]| match ty {
                P::Decimal { .. } => Datum::try_from_bytes(b, ty.clone()).ok(),
                P::Uuid => Some(Datum::uuid(uuid::Uuid::from_slice(b).ok()?)),
                _ => Some(Datum::fixed(b.iter().copied())),
            };
            both(at(s.min_bytes_opt()?)?, at(s.max_bytes_opt()?)?)
        }
        _ => None,
    }
}

/// An unscaled decimal as a value of `ty`; `None` unless `ty` is a decimal type.
fn decimal(unscaled: i128, ty: &PrimitiveType) -> Option<Datum> {
    matches!(ty, PrimitiveType::Decimal { .. })
        .then(|| Datum::try_from_bytes(&unscaled.to_be_bytes(), ty.clone()).ok())
        .flatten()
}

/// The shortest string of at most 16 characters that is >= `max` (Iceberg truncates strings by
/// code point), if there is one.
fn truncate_upper_str(max: &str) -> Option<String> {
    let mut chars: Vec<char> = max.chars().take(BOUND_BYTES + 1).collect();
    if chars.len() <= BOUND_BYTES {
        return Some(max.to_owned());
    }
    chars.truncate(BOUND_BYTES);
    while let Some(last) = chars.pop() {
        // The next scalar value: past the surrogates, none after char::MAX.
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The shortest value of at most `len` bytes that is >= `max`, if there is one.
pub(super) fn truncate_upper(max: &[u8], len: usize) -> Option<Vec<u8>> {
    if max.len() <= len {
        return Some(max.to_vec());
    }
    let mut v = max[..len].to_vec();
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
        assert_eq!(truncate_upper(b"abc", BOUND_BYTES).unwrap(), b"abc");
        let long = [b'a'; 20];
        let mut want = vec![b'a'; 15];
        want.push(b'b');
        assert_eq!(truncate_upper(&long, BOUND_BYTES).unwrap(), want);
        let mut ff = vec![b'a'; 15];
        ff.extend([0xff; 5]);
        assert_eq!(
            truncate_upper(&ff, BOUND_BYTES).unwrap(),
            [vec![b'a'; 14], vec![b'b']].concat()
        );
        assert_eq!(truncate_upper(&[0xff; 17], BOUND_BYTES), None);
    }

    #[test]
    fn string_upper_bounds_truncate_by_code_point() {
        assert_eq!(truncate_upper_str("short").unwrap(), "short");
        let long = "é".repeat(20);
        let want = format!("{}ê", "é".repeat(15));
        assert_eq!(truncate_upper_str(&long).unwrap(), want);
        assert!(truncate_upper_str(&long).unwrap().as_str() >= long.as_str());
        // U+D7FF's successor is U+E000 (no surrogates); char::MAX has none: carry leftwards.
        let carry = format!("{}\u{d7ff}{}", "a".repeat(15), "b".repeat(3));
        assert_eq!(
            truncate_upper_str(&carry).unwrap(),
            format!("{}\u{e000}", "a".repeat(15))
        );
        let max = format!("a{}", "\u{10ffff}".repeat(17));
        assert_eq!(truncate_upper_str(&max).unwrap(), "b");
        assert_eq!(truncate_upper_str(&"\u{10ffff}".repeat(17)), None);
    }

    #[test]
    fn every_primitive_type_gets_bounds_in_its_own_type() {
        use PrimitiveType as P;
        let case = |stats: Statistics, ty: P| bounds(&stats, &ty).map(|(lo, hi)| (lo, hi.unwrap()));
        let dec = P::Decimal {
            precision: 12,
            scale: 2,
        };
        let d = |s: &str| {
            Datum::decimal_from_str(s)
                .unwrap()
                .to(&Type::Primitive(dec.clone()))
                .unwrap()
        };
        assert_eq!(
            case(
                Statistics::int64(Some(-150), Some(1234), None, Some(0), false),
                dec.clone()
            ),
            Some((d("-1.50"), d("12.34")))
        );
        let wide = P::Decimal {
            precision: 30,
            scale: 0,
        };
        let be =
            |v: i128| parquet::data_type::FixedLenByteArray::from(v.to_be_bytes()[3..].to_vec());
        let (lo, hi) = case(
            Statistics::fixed_len_byte_array(Some(be(-7)), Some(be(1 << 90)), None, Some(0), false),
            wide,
        )
        .unwrap();
        assert_eq!(lo.literal(), &iceberg::spec::PrimitiveLiteral::Int128(-7));
        assert_eq!(
            hi.literal(),
            &iceberg::spec::PrimitiveLiteral::Int128(1 << 90)
        );
        assert_eq!(
            case(
                Statistics::int32(Some(19_723), Some(19_750), None, Some(0), false),
                P::Date
            ),
            Some((Datum::date(19_723), Datum::date(19_750)))
        );
        assert_eq!(
            case(
                Statistics::int64(Some(5), Some(9), None, Some(0), false),
                P::Timestamp
            ),
            Some((Datum::timestamp_micros(5), Datum::timestamp_micros(9)))
        );
        assert_eq!(
            case(
                Statistics::int64(Some(5), Some(9), None, Some(0), false),
                P::TimestamptzNs
            ),
            Some((Datum::timestamptz_nanos(5), Datum::timestamptz_nanos(9)))
        );
        assert_eq!(
            case(
                Statistics::double(Some(-0.5), Some(2.5), None, Some(0), false),
                P::Double
            ),
            Some((Datum::double(-0.5), Datum::double(2.5)))
        );
        assert_eq!(
            case(
                Statistics::float(Some(f32::NAN), Some(1.0), None, Some(0), false),
                P::Float
            ),
            None
        );
        assert_eq!(
            case(
                Statistics::boolean(Some(false), Some(true), None, Some(0), false),
                P::Boolean
            ),
            Some((Datum::bool(false), Datum::bool(true)))
        );
        let text = |s: &str| Some(parquet::data_type::ByteArray::from(s));
        assert_eq!(
            case(
                Statistics::byte_array(text("cat-0"), text("cat-4"), None, Some(0), false),
                P::String
            ),
            Some((Datum::string("cat-0"), Datum::string("cat-4")))
        );
        let bad = Some(parquet::data_type::ByteArray::from(vec![0xff, 0xfe]));
        assert_eq!(
            case(
                Statistics::byte_array(bad.clone(), bad, None, Some(0), false),
                P::String
            ),
            None,
            "bytes that are not UTF-8 are no string bound"
        );
        // A type the chunk's physical type cannot hold gets none.
        assert_eq!(
            case(
                Statistics::int32(Some(1), Some(2), None, Some(0), false),
                P::Long
            ),
            None
        );
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
