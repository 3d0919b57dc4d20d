//! Files of [`RawFile`] read back by parquet's own Arrow reader, row for row, with the footer's
//! statistics checked against the rows.

use super::*;
use crate::record::{Batch, Record};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use proptest::prelude::*;

type Header = (Vec<u8>, Option<Vec<u8>>);
/// One row: partition, offset, timestamp (µs), key, headers, value.
type Row = (i32, i64, i64, Option<Vec<u8>>, Vec<Header>, Option<Vec<u8>>);

/// Writes `runs` (partition, records) into one file; its bytes and footer.
/// `None` when they hold no record. The same writer then writes them into a second file,
/// which must come out byte for byte the same (nothing of a file leaks into the next).
fn write(
    runs: &[(i32, Vec<Record>)],
    row_group_rows: usize,
    zstd: i32,
) -> Option<(Bytes, ParquetMetaData)> {
    let schema = schema::raw_arrow_schema();
    let leaves = Leaves::of(&schema).expect("the raw schema is the pages writer's");
    let mut f = RawFile::new(&schema, leaves, zstd, row_group_rows).unwrap();
    let file = |f: &mut RawFile| {
        let mut parts = Vec::new();
        for (p, records) in runs {
            f.append(*p, Batch::of_records(*p, records).records())
                .unwrap();
            parts.extend(f.take_done());
        }
        let (rest, meta) = f.finish().unwrap()?;
        assert!(f.finish().unwrap().is_none(), "one file at a time");
        parts.extend(rest.into_parts());
        Some((Bytes::from(parts.concat()), meta))
    };
    let first = file(&mut f);
    let second = file(&mut f);
    assert_eq!(first.as_ref().map(|f| &f.0), second.as_ref().map(|f| &f.0));
    first
}

fn read(file: Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

/// Every column of `b`, row `i`, in the records' own terms.
fn row(b: &RecordBatch, i: usize) -> Row {
    let bytes = |a: &dyn Array| {
        let a = a.as_binary::<i32>();
        (!a.is_null(i)).then(|| a.value(i).to_vec())
    };
    let list = b.column(4).as_list::<i32>().value(i);
    let entries = list.as_struct();
    let (hk, hv) = (
        entries.column(0).as_string::<i32>(),
        entries.column(1).as_binary::<i32>(),
    );
    let headers = (0..entries.len())
        .map(|j| {
            (
                hk.value(j).as_bytes().to_vec(),
                (!hv.is_null(j)).then(|| hv.value(j).to_vec()),
            )
        })
        .collect();
    (
        b.column(0).as_primitive::<Int32Type>().value(i),
        b.column(1).as_primitive::<Int64Type>().value(i),
        b.column(2)
            .as_primitive::<TimestampMicrosecondType>()
            .value(i),
        bytes(b.column(3).as_ref()),
        headers,
        bytes(b.column(5).as_ref()),
    )
}

fn want(p: i32, r: &Record) -> Row {
    let headers = r
        .headers
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).as_bytes().to_vec(), v.clone()))
        .collect();
    (
        p,
        r.offset,
        r.timestamp_ms.saturating_mul(1000),
        r.key.clone(),
        headers,
        r.value.clone(),
    )
}

/// The footer's statistics of each row group against its rows.
fn check_stats(meta: &ParquetMetaData, rows: &[Row]) {
    let mut at = 0;
    for rg in meta.row_groups() {
        let n = rg.num_rows() as usize;
        let g = &rows[at..at + n];
        at += n;
        let Some(Statistics::Int32(p)) = rg.column(0).statistics() else {
            panic!("partition stats")
        };
        assert_eq!(p.min_opt(), g.iter().map(|r| &r.0).min());
        assert_eq!(p.max_opt(), g.iter().map(|r| &r.0).max());
        for (c, f) in [(1, 1usize), (2, 2)] {
            let Some(Statistics::Int64(s)) = rg.column(c).statistics() else {
                panic!("int64 stats")
            };
            let vals = g.iter().map(|r| if f == 1 { r.1 } else { r.2 });
            assert_eq!(*s.min_opt().unwrap(), vals.clone().min().unwrap());
            assert_eq!(*s.max_opt().unwrap(), vals.max().unwrap());
        }
        let Some(Statistics::ByteArray(k)) = rg.column(3).statistics() else {
            panic!("key stats")
        };
        let keys: Vec<&Vec<u8>> = g.iter().filter_map(|r| r.3.as_ref()).collect();
        assert_eq!(k.null_count_opt(), Some((n - keys.len()) as u64));
        if let (Some(lo), Some(hi)) = (keys.iter().min(), keys.iter().max()) {
            let (min, max) = (k.min_bytes_opt().unwrap(), k.max_bytes_opt().unwrap());
            assert!(min <= lo.as_slice() && lo.starts_with(min));
            assert!(max >= hi.as_slice());
            assert_eq!(k.min_is_exact(), lo.len() <= 64);
        }
        for c in 4..7 {
            assert!(
                rg.column(c).statistics().is_none(),
                "no statistics on opaque bytes"
            );
        }
    }
    assert_eq!(at, rows.len());
}

fn record() -> impl Strategy<Value = Record> {
    let key = prop::option::weighted(
        0.9,
        prop_oneof![
            (0u8..30).prop_map(|k| format!("key-{k}").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..80),
        ],
    );
    let header = (
        prop_oneof![
            Just(b"seq".to_vec()),
            Just(b"k\xff".to_vec()),
            prop::collection::vec(any::<u8>(), 0..6)
        ],
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
    );
    (
        any::<i64>(),
        key,
        prop::collection::vec(header, 0..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(ts, key, headers, value)| Record {
            offset: 0,
            timestamp_ms: ts >> 4,
            shard: 0,
            key,
            value,
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn files_read_back_row_for_row(
        runs in prop::collection::vec((0i32..4, prop::collection::vec(record(), 0..60)), 1..8),
        start in any::<i64>(),
        row_group_rows in 1usize..100,
    ) {
        let mut offset = start >> 2;
        let runs: Vec<(i32, Vec<Record>)> = runs.into_iter().map(|(p, rs)| {
            let rs = rs.into_iter().map(|mut r| { offset = offset.wrapping_add(1 + (r.timestamp_ms & 7)); r.offset = offset; r }).collect();
            (p, rs)
        }).collect();
        let expect: Vec<_> = runs.iter().flat_map(|(p, rs)| rs.iter().map(move |r| want(*p, r))).collect();
        let Some((file, meta)) = write(&runs, row_group_rows, 1) else {
            prop_assert!(expect.is_empty(), "no file for no records");
            return Ok(());
        };
        let b = read(file);
        prop_assert_eq!(b.num_rows(), expect.len());
        for (i, w) in expect.iter().enumerate() {
            prop_assert_eq!(&row(&b, i), w, "row {}", i);
        }
        check_stats(&meta, &expect);
    }
}

fn sample(n: usize, key: impl Fn(usize) -> Option<Vec<u8>>, value_bytes: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            offset: 1_000 + i as i64,
            timestamp_ms: 1_700_000_000_000 + (i as i64) / 3,
            shard: 0,
            key: key(i),
            value: Some((0..value_bytes).map(|b| (i * 31 + b * 7) as u8).collect()),
            headers: vec![(b"seq".to_vec(), Some(i.to_string().into_bytes()))],
        })
        .collect()
}

fn key_encodings(meta: &ParquetMetaData) -> Vec<Vec<Encoding>> {
    meta.row_groups()
        .iter()
        .map(|rg| rg.column(3).encodings().collect())
        .collect()
}

use parquet::basic::Encoding;

/// The encodings of leaf `col`'s data pages in the first row group, in order.
fn data_page_encodings(file: Bytes, col: usize) -> Vec<Encoding> {
    use parquet::file::reader::FileReader;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    let pages = reader
        .get_row_group(0)
        .unwrap()
        .get_column_page_reader(col)
        .unwrap();
    pages
        .map(Result::unwrap)
        .filter(|p| p.is_data_page())
        .map(|p| p.encoding())
        .collect()
}

/// Keys that repeat stay in a dictionary; unique keys are judged within the first page and
/// written plain (no dictionary at all); keys that stop repeating after a page make the
/// dictionary stop mid-chunk. Every row reads back.
#[test]
fn the_key_dictionary_stops_when_keys_stop_repeating() {
    let dictionary = |e: &Vec<Encoding>| e.contains(&Encoding::RLE_DICTIONARY);
    let repeating = sample(20_000, |i| Some(format!("k{}", i % 500).into_bytes()), 20);
    let (file, meta) = write(&[(0, repeating.clone())], 8_192, 1).expect("a file");
    assert!(key_encodings(&meta).iter().all(dictionary));
    let b = read(file);
    assert_eq!(row(&b, 19_999), want(0, &repeating[19_999]));

    let unique = sample(30_000, |i| Some(format!("unique-{i}").into_bytes()), 20);
    let (file, meta) = write(&[(7, unique.clone())], 16_384, 1).expect("a file");
    let enc = key_encodings(&meta);
    assert!(!enc.iter().any(dictionary), "{enc:?}");
    let b = read(file);
    let rows: Vec<_> = (0..b.num_rows()).map(|i| row(&b, i)).collect();
    let expect: Vec<_> = unique.iter().map(|r| want(7, r)).collect();
    assert_eq!(rows, expect);
    check_stats(&meta, &expect);

    // A first page of repeating keys, then long unique ones.
    let n = 290_000;
    let later = |i: usize| {
        let k = if i < 280_000 {
            format!("{}", i % 100)
        } else {
            format!("{i:0>300}")
        };
        Some(k.into_bytes())
    };
    let mixed = sample(n, later, 4);
    let (file, meta) = write(&[(1, mixed.clone())], 400_000, 1).expect("a file");
    let pages = data_page_encodings(file.clone(), 3);
    let switch = pages
        .iter()
        .position(|e| *e == Encoding::PLAIN)
        .expect("plain pages");
    assert!(
        switch > 0
            && pages[..switch]
                .iter()
                .all(|e| *e == Encoding::RLE_DICTIONARY),
        "{pages:?}"
    );
    assert!(
        pages[switch..].iter().all(|e| *e == Encoding::PLAIN),
        "{pages:?}"
    );
    let b = read(file);
    let expect: Vec<_> = mixed.iter().map(|r| want(1, r)).collect();
    for i in (0..n).step_by(101).chain(279_990..n) {
        assert_eq!(row(&b, i), expect[i], "row {i}");
    }
    check_stats(&meta, &expect);
}

/// Many pages per chunk (values, headers, offsets past a page each), several row groups.
#[test]
fn chunks_of_many_pages_read_back() {
    let records = sample(
        300_000,
        |i| (i % 7 != 0).then(|| format!("{}", i % 1000).into_bytes()),
        40,
    );
    let (file, meta) = write(
        &[
            (1, records[..100_000].to_vec()),
            (2, records[100_000..].to_vec()),
        ],
        200_000,
        3,
    )
    .expect("a file");
    assert_eq!(meta.num_row_groups(), 2);
    let b = read(file);
    assert_eq!(b.num_rows(), 300_000);
    let expect: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| want(if i < 100_000 { 1 } else { 2 }, r))
        .collect();
    for i in (0..300_000).step_by(997).chain([299_999]) {
        assert_eq!(row(&b, i), expect[i], "row {i}");
    }
    check_stats(&meta, &expect);
}

#[test]
fn long_keys_get_bounds_that_still_bound() {
    let long = |c: u8| Some(vec![c; 200]);
    let records = sample(10, |i| long(b'a' + i as u8), 4);
    let (_, meta) = write(&[(0, records)], 100, 1).expect("a file");
    let Some(Statistics::ByteArray(k)) = meta.row_group(0).column(3).statistics() else {
        panic!()
    };
    assert_eq!(k.min_bytes_opt().unwrap(), &[b'a'; 64][..]);
    let mut hi = vec![b'j'; 63];
    hi.push(b'k');
    assert_eq!(k.max_bytes_opt().unwrap(), &hi[..]);
    assert!(!k.min_is_exact() && !k.max_is_exact());
}

/// Header keys go through a dictionary too: names that repeat keep it, unique ones make the
/// first page plain, and names that stop repeating after a page make it stop mid-chunk.
#[test]
fn header_keys_keep_a_dictionary_while_names_repeat() {
    let with_header_keys = |n: usize, name: &dyn Fn(usize) -> Vec<u8>| -> Vec<Record> {
        sample(n, |i| Some(format!("{}", i % 10).into_bytes()), 4)
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.headers = vec![(name(i), Some(vec![i as u8]))];
                r
            })
            .collect()
    };
    let check = |records: &[Record], pages_want: &dyn Fn(&[Encoding])| {
        let (file, meta) = write(&[(2, records.to_vec())], 400_000, 1).expect("a file");
        pages_want(&data_page_encodings(file.clone(), 4));
        let b = read(file);
        let expect: Vec<Row> = records.iter().map(|r| want(2, r)).collect();
        for i in (0..records.len()).step_by(97).chain([records.len() - 1]) {
            assert_eq!(row(&b, i), expect[i], "row {i}");
        }
        check_stats(&meta, &expect);
    };
    let repeating = with_header_keys(10_000, &|i| format!("name-{}", i % 5).into_bytes());
    check(&repeating, &|p| {
        assert!(p.iter().all(|e| *e == Encoding::RLE_DICTIONARY), "{p:?}")
    });
    let unique = with_header_keys(10_000, &|i| format!("name-{i}").into_bytes());
    check(&unique, &|p| {
        assert!(p.iter().all(|e| *e == Encoding::PLAIN), "{p:?}")
    });
    let later = with_header_keys(270_000, &|i| {
        if i < 265_000 {
            b"trace".to_vec()
        } else {
            format!("{i:0>300}").into_bytes()
        }
    });
    check(&later, &|p| {
        let switch = p
            .iter()
            .position(|e| *e == Encoding::PLAIN)
            .expect("plain pages");
        assert!(
            switch > 0 && p[switch..].iter().all(|e| *e == Encoding::PLAIN),
            "{p:?}"
        );
    });
}
