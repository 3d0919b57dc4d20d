use super::*;
use crate::record::{Batch, Record};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn rec(offset: i64, key: Option<&str>, value: &[u8], headers: &[(&str, &[u8])]) -> Record {
    Record {
        offset,
        timestamp_ms: 1_700_000_000_000 + offset,
        shard: 0,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.to_vec()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.to_vec())))
            .collect(),
    }
}

/// `r` encoded alone into a file of `schema`, and read back.
fn one_record_file(schema: SchemaRef, r: &Record) -> RecordBatch {
    let mut enc = FileEncoder::new(0, schema, &EncodeOptions::default()).unwrap();
    enc.append(
        0,
        Batch::of_records(0, std::slice::from_ref(r)).records(),
        &mut Vec::new(),
    )
    .unwrap();
    let file = enc.finish_file().unwrap().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.to_bytes()).unwrap();
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    arrow_select_concat(&batches)
}

/// Repeated keys and null values stay as they were, in order; a legacy map table takes the
/// same records (null as empty bytes).
#[test]
fn headers_keep_order_repeats_and_nulls() {
    let r = Record {
        offset: 1,
        headers: vec![
            (b"k".to_vec(), Some(b"1".to_vec())),
            (b"k".to_vec(), None),
            (b"a".to_vec(), Some(b"2".to_vec())),
        ],
        ..Record::default()
    };
    let read = |schema: SchemaRef| one_record_file(schema, &r).column(4).clone();
    let list = read(schema::raw_arrow_schema());
    let entries = list.as_list::<i32>().value(0);
    let entries = entries.as_struct();
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_binary::<i32>();
    let got: Vec<_> = (0..3)
        .map(|i| (keys.value(i), (!values.is_null(i)).then(|| values.value(i))))
        .collect();
    assert_eq!(
        got,
        [("k", Some(&b"1"[..])), ("k", None), ("a", Some(&b"2"[..]))]
    );

    let mut fields: Vec<_> = schema::iceberg_schema().as_struct().fields().to_vec();
    let mut h = (*fields[4]).clone();
    h.field_type = Box::new(schema::legacy_headers_type());
    fields[4] = Arc::new(h);
    let legacy = iceberg::spec::Schema::builder()
        .with_fields(fields)
        .build()
        .unwrap();
    let map = read(schema::arrow_schema(&legacy).unwrap());
    let m = map.as_map().value(0);
    assert_eq!(m.column(0).as_string::<i32>().value(1), "k");
    assert_eq!(m.column(1).as_binary::<i32>().value(1), b"");
}

/// A header key that is not UTF-8 keeps its record: the bad bytes become U+FFFD.
#[test]
fn a_header_key_that_is_not_utf8_is_replaced_not_lost() {
    let r = Record {
        offset: 1,
        headers: vec![(b"k\xffz".to_vec(), Some(b"v".to_vec()))],
        ..Record::default()
    };
    let b = one_record_file(schema::raw_arrow_schema(), &r);
    let list = b.column(4).as_list::<i32>().value(0);
    let keys = list
        .as_struct()
        .column(0)
        .as_string::<i32>()
        .value(0)
        .to_owned();
    assert_eq!(keys, "k\u{fffd}z");
}

#[test]
fn round_trips_through_parquet_with_field_ids() {
    let mut enc =
        FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default()).unwrap();
    let batch = vec![
        rec(5, Some("a"), b"x", &[("h1", b"v1"), ("h2", b"")]),
        rec(6, None, b"", &[]),
    ];
    enc.append(3, Batch::of_records(3, &batch).records(), &mut Vec::new())
        .unwrap();
    enc.encode_buffered().unwrap();
    enc.append(
        3,
        Batch::of_records(3, &[rec(9, Some("b"), b"yz", &[])]).records(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(enc.file_rows(), 3);
    // a + x + h1 v1 h2, nothing, b + yz.
    assert_eq!(enc.payload_bytes(), 8 + 3);
    let file = enc.finish_file().unwrap().unwrap();
    assert_eq!(file.rows, 3);
    assert!(enc.finish_file().unwrap().is_none(), "no empty files");

    let reader = ParquetRecordBatchReaderBuilder::try_new(file.to_bytes()).unwrap();
    let parquet_schema = reader.parquet_schema();
    let ids: Vec<i32> = parquet_schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.get_basic_info().id())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let b = arrow_select_concat(&batches);
    assert_eq!(b.num_rows(), 3);
    let offsets = b.column(1).as_primitive::<Int64Type>();
    assert_eq!(offsets.values(), &[5, 6, 9]);
    let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_700_000_000_005_000);
    assert_eq!(file.metadata.file_metadata().num_rows(), 3);
    let keys = b.column(3).as_binary::<i32>();
    assert_eq!(keys.value(0), b"a");
    assert!(keys.is_null(1));
    let headers = b.column(4).as_list::<i32>();
    let first = headers.value(0);
    let first = first.as_struct();
    let hk = first.column(0).as_string::<i32>();
    let hv = first.column(1).as_binary::<i32>();
    assert_eq!((hk.value(0), hv.value(0)), ("h1", &b"v1"[..]));
    assert_eq!((hk.value(1), hv.value(1)), ("h2", &b""[..]));
    assert!(!hv.is_null(1), "an empty header value is not a null one");
    assert_eq!(headers.value(1).len(), 0);
    let values = b.column(5).as_binary::<i32>();
    assert_eq!(values.value(1), b"");
    assert!(!values.is_null(1), "an empty value is not a null value");
}

/// A file larger than a chunk gives up its written row groups while it goes on; the parts
/// taken and the rest make the whole file.
#[test]
fn written_row_groups_leave_before_the_file_is_finished() {
    let opts = EncodeOptions {
        row_group_rows: 4096,
        ..EncodeOptions::default()
    };
    let mut enc = FileEncoder::new(0, schema::raw_arrow_schema(), &opts).unwrap();
    // Bytes zstd cannot shrink: the file is as large as its values.
    let value = |o: i64| -> Vec<u8> {
        let mut x = (o as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut taken = Vec::new();
    for batch in 0..12i64 {
        let records: Vec<Record> = (0..1000)
            .map(|i| rec(batch * 1000 + i, Some("k"), &value(batch * 1000 + i), &[]))
            .collect();
        enc.append(2, Batch::of_records(2, &records).records(), &mut Vec::new())
            .unwrap();
        enc.encode_buffered().unwrap();
        taken.extend(enc.take_parts());
    }
    assert!(
        !taken.is_empty(),
        "12 MB of rows in 4096-row groups fill chunks"
    );
    let file = enc.finish_file().unwrap().unwrap();
    let taken_bytes: usize = taken.iter().map(Bytes::len).sum();
    let rest: usize = file.parts.iter().map(Bytes::len).sum();
    assert_eq!((taken_bytes + rest) as u64, file.size());
    taken.extend(file.parts.iter().cloned());
    let whole = Bytes::from(taken.concat());
    let reader = ParquetRecordBatchReaderBuilder::try_new(whole).unwrap();
    assert!(reader.metadata().num_row_groups() >= 3);
    let mut next = 0i64;
    for b in reader.build().unwrap() {
        let b = b.unwrap();
        let offsets = b.column(1).as_primitive::<Int64Type>();
        let values = b.column(5).as_binary::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(offsets.value(i), next);
            assert_eq!(values.value(i), value(next).as_slice());
            next += 1;
        }
    }
    assert_eq!(next, 12_000);
}

/// Column writers take up to 8,192 rows at a time only while that stays near 1 MiB: a file of
/// 16 KiB values still has pages of about 1 MiB, and reads back whole.
#[test]
fn large_values_keep_pages_near_a_mebibyte() {
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    let value: Vec<u8> = (0..16 << 10)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let recs: Vec<Record> = (0..1024).map(|o| rec(o, Some("k"), &value, &[])).collect();
    let mut enc =
        FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default()).unwrap();
    enc.append(0, Batch::of_records(0, &recs).records(), &mut Vec::new())
        .unwrap();
    let file = enc.finish_file().unwrap().unwrap();
    let opts = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(file.to_bytes(), opts).unwrap();
    let col = b
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.path().string() == schema::VALUE)
        .unwrap();
    let pages = &b.metadata().offset_index().unwrap()[0][col].page_locations;
    assert!(
        pages.len() >= 8,
        "16 MiB of values in {} pages",
        pages.len()
    );
    assert!(
        pages.iter().all(|p| p.compressed_page_size < 3 << 20),
        "{pages:?}"
    );
    let rows: usize = b.build().unwrap().map(|r| r.unwrap().num_rows()).sum();
    assert_eq!(rows, 1024);
}

/// What the first batch shows decides each flat column's encoding, and the footer says so:
/// repeating keys keep a dictionary, unique keys are plain, offsets are delta-encoded.
#[test]
fn the_first_batch_decides_each_columns_encoding() {
    use parquet::basic::Encoding;
    let encodings = |key: &dyn Fn(i64) -> String| {
        let recs: Vec<Record> = (0..4096)
            .map(|o| rec(o, Some(&key(o)), b"v", &[]))
            .collect();
        let mut enc =
            FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default()).unwrap();
        enc.append(0, Batch::of_records(0, &recs).records(), &mut Vec::new())
            .unwrap();
        let file = enc.finish_file().unwrap().unwrap();
        let read = ParquetRecordBatchReaderBuilder::try_new(file.to_bytes()).unwrap();
        let got: Vec<(String, Vec<Encoding>)> = file
            .metadata
            .row_group(0)
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.encodings().collect()))
            .collect();
        assert_eq!(
            read.build()
                .unwrap()
                .map(|r| r.unwrap().num_rows())
                .sum::<usize>(),
            4096
        );
        move |name: &str| {
            got.iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .unwrap()
        }
    };
    let repeating = encodings(&|o| format!("user-{}", o % 10));
    assert!(
        repeating(schema::KEY).contains(&Encoding::RLE_DICTIONARY),
        "{:?}",
        repeating(schema::KEY)
    );
    let unique = encodings(&|o| format!("order-{o:08}"));
    assert!(
        !unique(schema::KEY).contains(&Encoding::RLE_DICTIONARY),
        "{:?}",
        unique(schema::KEY)
    );
    assert!(unique(schema::OFFSET).contains(&Encoding::DELTA_BINARY_PACKED));
    assert!(
        unique(schema::PARTITION).contains(&Encoding::RLE_DICTIONARY),
        "one partition repeats"
    );
}

fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    assert_eq!(batches.len(), 1, "small files read back as one batch");
    batches[0].clone()
}

/// The pages writer and `ArrowWriter` write the same rows for the same records, and the
/// table learns the same counts and bounds from either file's footer.
#[test]
fn the_pages_writer_and_arrow_writer_agree_row_for_row_and_on_bounds() {
    let recs: Vec<Record> = (0..20_000i64)
        .map(|o| Record {
            offset: 1_000 + o,
            timestamp_ms: 1_700_000_000_000 + o / 3,
            shard: 0,
            key: (o % 9 != 0).then(|| format!("key-{}", (o * 7) % 300).into_bytes()),
            value: (o % 101 != 0).then(|| vec![(o % 251) as u8; (o % 40) as usize]),
            headers: (0..o % 4)
                .map(|h| {
                    let v = (h != 2).then(|| o.to_string().into_bytes());
                    (format!("h{h}").into_bytes(), v)
                })
                .collect(),
        })
        .collect();
    let write = |arrow_writer: bool| {
        let opts = EncodeOptions {
            row_group_rows: 6_000,
            arrow_writer,
            ..EncodeOptions::default()
        };
        let mut enc = FileEncoder::new(0, schema::raw_arrow_schema(), &opts).unwrap();
        for (p, chunk) in recs.chunks(700).enumerate() {
            let p = (p % 3) as i32;
            enc.append(p, Batch::of_records(p, chunk).records(), &mut Vec::new())
                .unwrap();
            enc.encode_buffered().unwrap();
        }
        assert_eq!(enc.file_rows(), 20_000);
        enc.finish_file().unwrap().unwrap()
    };
    let (pages, arrow) = (write(false), write(true));
    let read = |f: &EncodedFile| {
        let reader = ParquetRecordBatchReaderBuilder::try_new(f.to_bytes()).unwrap();
        let schema = reader.schema().clone();
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        arrow_select::concat::concat_batches(&schema, &batches).unwrap()
    };
    assert_eq!(read(&pages), read(&arrow));
    assert_eq!(
        pages.metadata.num_row_groups(),
        arrow.metadata.num_row_groups()
    );
    let described = |f: &EncodedFile| {
        let df = super::super::stats::data_file(
            "file:///x.parquet".into(),
            f.size(),
            &f.metadata,
            &schema::iceberg_schema(),
            0,
        )
        .unwrap();
        fn sorted<V: std::fmt::Debug>(m: &std::collections::HashMap<i32, V>) -> Vec<(i32, String)> {
            let mut v: Vec<_> = m.iter().map(|(k, v)| (*k, format!("{v:?}"))).collect();
            v.sort();
            v
        }
        (
            df.record_count(),
            sorted(df.value_counts()),
            sorted(df.null_value_counts()),
            sorted(df.lower_bounds()),
            sorted(df.upper_bounds()),
        )
    };
    let (p, a) = (described(&pages), described(&arrow));
    assert_eq!(p, a);
    assert!(
        p.3.len() >= 4,
        "bounds for partition, offset, timestamp and key: {:?}",
        p.3
    );
}
