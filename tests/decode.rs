//! `--format json`: record values decoded on the shard cores into the fields `--schema` declares.

mod common;

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use common::{Broker, assert_clean_failure, base_args, icefall, repo, sample, table_view};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn schema_file() -> String {
    repo()
        .join("tests/data/sample-json.schema.json")
        .display()
        .to_string()
}

/// Every (seq, user, amount, offset) row of the table's committed files.
fn typed_rows(warehouse: &Path) -> Vec<(i64, String, Option<f64>, i64)> {
    let view = table_view(warehouse, "ns.events");
    let mut rows = Vec::new();
    for f in &view.files {
        let file = std::fs::File::open(f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let names: Vec<String> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(!names.contains(&"value".to_string()), "{names:?}");
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
            let user = b.column_by_name("user").unwrap().as_string::<i32>();
            let amount = b
                .column_by_name("amount")
                .unwrap()
                .as_primitive::<Float64Type>();
            let offset = b
                .column_by_name("_kafka_offset")
                .unwrap()
                .as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let amount = (!arrow_array::Array::is_null(amount, i)).then(|| amount.value(i));
                rows.push((
                    seq.value(i),
                    user.value(i).to_string(),
                    amount,
                    offset.value(i),
                ));
            }
        }
    }
    rows
}

/// `n` sample records from `first` with JSON values (500 keys, no tombstones) into `events`.
fn produce_json(broker: &Broker, n: u64, first: u64) {
    broker.loadgen(
        "events",
        &[
            "--records",
            &n.to_string(),
            "--first-seq",
            &first.to_string(),
            "--keys",
            "500",
            "--payload",
            "json",
            "--null-value-every",
            "0",
        ],
    );
}

#[test]
fn json_values_land_as_typed_columns() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let n = 20_000u64;
    produce_json(&broker, n, 0);
    let wh = tempfile::tempdir().unwrap();
    let schema = schema_file();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--format", "json", "--schema", &schema]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let shape = sample::Shape {
        keys: 500,
        null_value_every: 0,
        ..sample::Shape::default()
    };
    let mut rows = typed_rows(wh.path());
    assert_eq!(rows.len() as u64, n);
    rows.sort_by_key(|r| r.0);
    for (i, (seq, user, amount, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64, "every record once");
        assert_eq!(user, &format!("user-{:06}", shape.key_index(i as u64)));
        assert!(amount.is_some_and(|a| a >= 0.0));
    }
}

#[test]
fn an_undecodable_value_without_a_dlq_fails_naming_partition_and_offset() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let good = |i: u64| Some(format!(r#"{{"seq":{i},"user":"u{i}"}}"#).into_bytes());
    let mut values: Vec<Option<Vec<u8>>> = (0..50).map(good).collect();
    values.push(Some(br#"{"seq":50,"user":"#.to_vec()));
    values.extend((51..60).map(good));
    broker.produce_values("events", 0, &values);
    let wh = tempfile::tempdir().unwrap();
    let schema = schema_file();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--format", "json", "--schema", &schema]);
    let out = icefall(&args);
    assert_clean_failure(
        &out,
        7,
        &["partition 0 offset 50", "malformed JSON", "--dlq-table"],
    );
    // Nothing of the failed epoch is committed: the table holds no rows.
    let view = table_view(wh.path(), "ns.events");
    assert!(view.files.is_empty(), "{:?}", view.files);
}

#[test]
fn a_bad_schema_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"type":"struct","fields":[{"id":1,"name":"x","required":true,"type":"lnog"}]}"#,
    )
    .unwrap();
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args("127.0.0.1:9", "events", wh.path().to_str().unwrap());
    let p = bad.to_str().unwrap();
    args.extend(["--format", "json", "--schema", p]);
    assert_clean_failure(&icefall(&args), 2, &["--schema", "bad.json"]);
    let mut args = base_args("127.0.0.1:9", "events", wh.path().to_str().unwrap());
    args.extend(["--format", "json"]);
    assert_clean_failure(&icefall(&args), 2, &["--format \"json\"", "needs --schema"]);
}

#[test]
fn infer_schema_types_the_columns_from_the_first_records_and_keeps_them_on_restart() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    produce_json(&broker, 3_000, 0);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--format", "json", "--infer-schema", "100"]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run finds the table and decodes into its columns (no new inference).
    produce_json(&broker, 2_000, 3_000);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = typed_rows(wh.path());
    assert_eq!(rows.len(), 5_000);
    rows.sort_by_key(|r| r.0);
    assert!(
        rows.iter().enumerate().all(|(i, r)| r.0 == i as i64),
        "every record once"
    );
}
