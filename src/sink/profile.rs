//! What the first batch of a file says about encoding each of its flat columns: a dictionary
//! where values repeat, delta encoding where integers move by small steps, plain bytes otherwise.
//!
//! Sans-IO: takes an Arrow batch, returns one [`Choice`] per column it can judge, and knows
//! nothing of Parquet's writer. [`super::props`] turns the choices into writer properties for
//! that one file, so a topic whose data changes nature changes with it at the next file. A
//! dictionary that stops paying inside a file falls back to plain on its own (Parquet's
//! dictionary page limit); a column judged plain gets no dictionary for the rest of its file.
//!
//! Why: Parquet's default interns every value of every column into a dictionary, which for
//! values that never repeat (sequence numbers, amounts, free text, ids) is hashing, comparing
//! and rehashing that only ends in a fallback. On the typed sample it was a fifth of the shard
//! core's time (BENCHMARKS.md, "Shard core: typed columns").

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

/// Values of a column's first batch that are looked at.
pub const SAMPLE_ROWS: usize = 4096;

/// Below this many non-null values, a column keeps Parquet's defaults: too few to tell.
const MIN_VALUES: usize = 64;

/// How one column of a file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Values repeat (at most half of them distinct): a dictionary and RLE indices.
    Dictionary,
    /// Distinct integers that move by small steps: DELTA_BINARY_PACKED, no dictionary.
    Delta,
    /// Distinct values: plain, no dictionary (zstd still compresses the page).
    Plain,
}

/// The choices for the columns of `batch` named by `judge` (top-level, flat ones only; nested
/// and boolean columns, and columns with too few values, are left out: Parquet's defaults).
pub fn choices(batch: &RecordBatch, judge: impl Fn(&str) -> bool) -> Vec<(String, Choice)> {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| judge(f.name()))
        .filter_map(|(f, col)| Some((f.name().clone(), choose(col)?)))
        .collect()
}

/// The choice for one column, from its first [`SAMPLE_ROWS`] values.
pub fn choose(col: &ArrayRef) -> Option<Choice> {
    let col = col.slice(0, col.len().min(SAMPLE_ROWS));
    match Shape::of(col.as_ref())? {
        Shape::Ints(v) => judge_ints(&v),
        Shape::Other { values, distinct } => judge_distinct(values, distinct),
    }
}

fn judge_distinct(values: usize, distinct: usize) -> Option<Choice> {
    if values < MIN_VALUES {
        None
    } else if distinct * 2 <= values {
        Some(Choice::Dictionary)
    } else {
        Some(Choice::Plain)
    }
}

/// Repeating integers keep their dictionary; distinct ones are delta-encoded when the spread
/// of their steps needs at most three quarters of the bits the spread of their values does
/// (plain otherwise: random ids gain nothing from deltas).
fn judge_ints(v: &[i64]) -> Option<Choice> {
    let choice = judge_distinct(v.len(), distinct(v.iter()))?;
    if choice == Choice::Dictionary {
        return Some(choice);
    }
    let spread = |it: &mut dyn Iterator<Item = i64>| {
        let (lo, hi) = it.fold((i64::MAX, i64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        bits(hi.wrapping_sub(lo) as u64)
    };
    let values = spread(&mut v.iter().copied());
    let steps = spread(&mut v.windows(2).map(|w| w[1].wrapping_sub(w[0])));
    Some(if steps * 4 <= values * 3 {
        Choice::Delta
    } else {
        Choice::Plain
    })
}

fn bits(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Bits of the [`distinct`] estimator: 8 per sampled value, so its error stays near 1%.
const COUNT_BITS: usize = SAMPLE_ROWS * 8;

/// Distinct items, estimated by linear counting (a bitmap of hashes; Whang et al. 1990): a
/// few nanoseconds per item, where a hash set costs several times that.
fn distinct<T: std::hash::Hash>(items: impl Iterator<Item = T>) -> usize {
    let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let mut bitmap = vec![0u64; COUNT_BITS / 64];
    for item in items {
        let h = state.hash_one(item) as usize % COUNT_BITS;
        bitmap[h / 64] |= 1 << (h % 64);
    }
    let set: u32 = bitmap.iter().map(|w| w.count_ones()).sum();
    let (m, empty) = (COUNT_BITS as f64, (COUNT_BITS as u32 - set).max(1) as f64);
    (m * (m / empty).ln()).round() as usize
}

/// The non-null values of a column sample, as far as judging needs them.
enum Shape {
    /// Integer-like columns (any width of 4 or 8 bytes: ints, dates, times, timestamps).
    Ints(Vec<i64>),
    /// Floats, decimals and byte arrays: how many values, how many distinct.
    Other { values: usize, distinct: usize },
}

impl Shape {
    fn of(col: &dyn Array) -> Option<Shape> {
        use DataType as T;
        let data = col.to_data();
        let valid = |i: usize| col.is_valid(i);
        let (offset, buffers) = (data.offset(), data.buffers());
        let fixed = |width: usize| -> Option<Vec<&[u8]>> {
            let bytes = buffers.first()?.as_slice();
            let bytes = bytes.get(offset * width..(offset + col.len()) * width)?;
            Some(
                bytes
                    .chunks_exact(width)
                    .enumerate()
                    .filter(|(i, _)| valid(*i))
                    .map(|(_, b)| b)
                    .collect(),
            )
        };
        let other = |items: Vec<&[u8]>| Shape::Other {
            values: items.len(),
            distinct: distinct(items.iter()),
        };
        Some(match col.data_type() {
            T::Int32 | T::UInt32 | T::Date32 | T::Time32(_) => Shape::Ints(
                fixed(4)?
                    .iter()
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
            ),
            T::Int64 | T::UInt64 | T::Date64 | T::Time64(_) | T::Timestamp(..) | T::Duration(_) => {
                Shape::Ints(
                    fixed(8)?
                        .iter()
                        .map(|b| i64::from_le_bytes(b[..8].try_into().unwrap_or_default()))
                        .collect(),
                )
            }
            T::Float32 | T::Decimal32(..) => other(fixed(4)?),
            T::Decimal64(..) => other(fixed(8)?),
            T::Decimal128(..) => other(fixed(16)?),
            T::Decimal256(..) => other(fixed(32)?),
            T::Float64 => other(fixed(8)?),
            T::FixedSizeBinary(_) => other(col.as_fixed_size_binary().iter().flatten().collect()),
            T::Utf8 => other(
                col.as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::as_bytes)
                    .collect(),
            ),
            T::LargeUtf8 => other(
                col.as_string::<i64>()
                    .iter()
                    .flatten()
                    .map(str::as_bytes)
                    .collect(),
            ),
            T::Binary => other(col.as_binary::<i32>().iter().flatten().collect()),
            T::LargeBinary => other(col.as_binary::<i64>().iter().flatten().collect()),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn of(a: impl Array + 'static) -> Option<Choice> {
        choose(&(Arc::new(a) as ArrayRef))
    }

    #[test]
    fn each_kind_of_column_gets_what_pays() {
        let n = 8192i64;
        let seq = Int64Array::from_iter_values(0..n);
        assert_eq!(of(seq), Some(Choice::Delta), "a sequence moves by one");
        let ms = Int64Array::from_iter_values((0..n).map(|i| 1_700_000_000_000 + i * 3));
        assert_eq!(
            of(ms),
            Some(Choice::Delta),
            "timestamps move by milliseconds"
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ids = Int64Array::from_iter_values((0..n).map(|_| next() as i64));
        assert_eq!(of(ids), Some(Choice::Plain), "random ids gain nothing");
        let few = Int64Array::from_iter_values((0..n).map(|i| i % 100));
        assert_eq!(of(few), Some(Choice::Dictionary));
        let amounts = Float64Array::from_iter_values((0..n).map(|_| (next() % 100_000) as f64));
        assert_eq!(of(amounts), Some(Choice::Plain));
        let users = StringArray::from_iter_values((0..n).map(|i| format!("user-{}", i % 1000)));
        assert_eq!(
            of(users),
            Some(Choice::Dictionary),
            "1,000 users in 4,096 rows"
        );
        let notes = StringArray::from_iter_values((0..n).map(|_| format!("{:x}", next())));
        assert_eq!(of(notes), Some(Choice::Plain));
        let nulls = StringArray::from_iter((0..n).map(|i| (i % 200 == 0).then(|| i.to_string())));
        assert_eq!(of(nulls), None, "21 values are too few to tell");
        assert_eq!(of(arrow_array::BooleanArray::from(vec![true; 100])), None);
    }

    #[test]
    fn a_slice_is_judged_on_its_own_rows() {
        let repeating = (0..5000).map(|i| format!("k{}", i % 10));
        let unique = (0..5000).map(|i| format!("u{i}"));
        let all: ArrayRef = Arc::new(StringArray::from_iter_values(repeating.chain(unique)));
        assert_eq!(choose(&all.slice(5000, 5000)), Some(Choice::Plain));
        assert_eq!(choose(&all.slice(0, 5000)), Some(Choice::Dictionary));
        let ints: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        assert_eq!(choose(&ints.slice(9000, 1000)), Some(Choice::Delta));
    }
}
