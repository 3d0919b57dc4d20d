//! `--evolve`: JSON fields the inferred table lacks become optional columns, added in the same
//! commit as the first files holding them; without it they are ignored and counted. PyIceberg,
//! reading by field id, is the judge of what landed.

mod common;

use std::time::Duration;

use common::{Broker, base_args, icefall, spawn_icefall, stdout_field, wait_for_committed};

const PARTITIONS: i32 = 4;
/// Records per partition before any new field, and after.
const PLAIN: i64 = 500;
const GROWN: i64 = 1_500;

fn seq_of(partition: i32, offset: i64) -> i64 {
    offset * PARTITIONS as i64 + partition as i64
}

/// Partitions 0 and 1 grow a string `color`, 2 and 3 a number `score`; every 7th record a nested
/// `geo`, every 13th a `maybe` that is only ever null (no type to add it with).
fn value_of(partition: i32, offset: i64) -> Vec<u8> {
    let seq = seq_of(partition, offset);
    let mut v = format!(r#"{{"seq":{seq},"user":"u{}""#, seq % 17);
    if offset >= PLAIN {
        if partition < 2 {
            v.push_str(&format!(r#","color":"c{}""#, seq % 5));
        } else {
            v.push_str(&format!(r#","score":{seq}"#));
        }
        if seq % 7 == 0 {
            v.push_str(&format!(r#","geo":{{"lat":{seq}.5}}"#));
        }
        if seq % 13 == 0 {
            v.push_str(r#","maybe":null"#);
        }
    }
    v.push('}');
    v.into_bytes()
}

fn produce(broker: &Broker, offsets: std::ops::Range<i64>) {
    for p in 0..PARTITIONS {
        let all: Vec<i64> = offsets.clone().collect();
        for chunk in all.chunks(500) {
            let values: Vec<Option<Vec<u8>>> =
                chunk.iter().map(|&o| Some(value_of(p, o))).collect();
            broker.produce_values("events", p, &values);
        }
    }
}

/// Checks the table with PyIceberg (by field id) and prints what it found.
const CHECK: &str = r#"
import sys, json
from pyiceberg.catalog.sql import SqlCatalog
w, parts, plain, grown = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = SqlCatalog("icefall", uri=f"sqlite:///{w}/catalog.db", warehouse=f"file://{w}").load_table("ns.events")
fields = {f.name: (f.field_id, str(f.field_type), f.required) for f in t.schema().fields}
print("fields", json.dumps(fields, sort_keys=True))
d = t.scan().to_arrow()
rows = d.select(["_kafka_partition", "_kafka_offset", "seq", "color", "score", "geo"]).to_pylist()
seen = set()
for r in rows:
    p, o = r["_kafka_partition"], r["_kafka_offset"]
    assert (p, o) not in seen, ("twice", p, o)
    seen.add((p, o))
    seq = o * parts + p
    assert r["seq"] == seq, r
    grew = o >= plain
    assert r["color"] == (f"c{seq % 5}" if grew and p < 2 else None), r
    assert r["score"] == (seq if grew and p >= 2 else None), r
    lat = r["geo"]["lat"] if r["geo"] else None
    assert lat == (seq + 0.5 if grew and seq % 7 == 0 else None), r
assert seen == {(p, o) for p in range(parts) for o in range(plain + grown)}, len(seen)
print(f"checked rows={len(rows)} schemas={len(t.schemas())}")
"#;

#[test]
fn new_json_fields_become_columns_across_a_sigkill() {
    let python = common::python_with("pyiceberg");
    let broker = Broker::start();
    broker.create_topic("events", PARTITIONS as u32);
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.extend([
        "--format",
        "json",
        "--infer-schema",
        "100",
        "--evolve",
        "--commit-interval",
        "300ms",
        "--fetch-max-bytes",
        "16KiB",
    ]);

    // Run 1: the table is inferred from records without the new fields.
    produce(&broker, 0..PLAIN);
    let mut to_end = args.clone();
    to_end.push("--stop-at-end");
    let out = icefall(&to_end);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_field(&String::from_utf8_lossy(&out.stdout), "columns_added"),
        0
    );

    // Run 2: new fields arrive; killed once something past them is committed. The rest of the
    // grown records arrive after the kill, so run 3 reads some of them whatever run 2 managed.
    produce(&broker, PLAIN..PLAIN + GROWN / 2);
    let mut child = spawn_icefall(&args);
    let past = (PLAIN * PARTITIONS as i64) + 400;
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        past,
        Duration::from_secs(60),
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Run 3: to the end, from the table's offsets and its grown schema.
    produce(&broker, PLAIN + GROWN / 2..PLAIN + GROWN);
    let out = icefall(&to_end);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("record counts disagree"), "{stderr}");
    // `maybe` is only ever null: never typed, so ignored and counted in every record holding it.
    assert!(stdout_field(&String::from_utf8_lossy(&out.stdout), "unknown_fields") > 0);

    let [parts, plain, grown] = [PARTITIONS, PLAIN as i32, GROWN as i32].map(|n| n.to_string());
    let stdout = common::python_stdout(&python, &["-c", CHECK, w, &parts, &plain, &grown]);
    let fields: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("fields "))
            .expect("fields line"),
    )
    .unwrap();
    let ty = |name: &str| fields[name][1].as_str().map(str::to_owned);
    assert_eq!(ty("seq").as_deref(), Some("long"));
    assert_eq!(ty("color").as_deref(), Some("string"));
    assert_eq!(ty("score").as_deref(), Some("long"));
    assert!(
        ty("geo").is_some_and(|t| t.contains("lat") && t.contains("double")),
        "{fields}"
    );
    assert!(
        fields.get("maybe").is_none(),
        "a null-only field gets no column: {fields}"
    );
    let id = |name: &str| fields[name][0].as_i64().unwrap();
    let mut new_ids = Vec::new();
    for name in ["color", "score", "geo"] {
        assert_eq!(fields[name][2], false, "{name} is optional");
        assert!(
            id(name) > id("user"),
            "{name}: ids after the table's: {fields}"
        );
        new_ids.push(id(name));
    }
    new_ids.sort();
    new_ids.dedup();
    assert_eq!(new_ids.len(), 3, "{fields}");
    let total = (PLAIN + GROWN) * PARTITIONS as i64;
    assert!(
        stdout.contains(&format!("checked rows={total}")),
        "{stdout}"
    );
}

#[test]
fn without_evolve_unknown_fields_are_ignored_and_counted() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let plain: Vec<Option<Vec<u8>>> = (0..200)
        .map(|i| Some(format!(r#"{{"seq":{i},"user":"u"}}"#).into_bytes()))
        .collect();
    broker.produce_values("events", 0, &plain);
    let extra: Vec<Option<Vec<u8>>> = (200..500)
        .map(|i| Some(format!(r#"{{"seq":{i},"extra":{i},"user":"u","more":[1]}}"#).into_bytes()))
        .collect();
    broker.produce_values("events", 0, &extra);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--format", "json", "--infer-schema", "50"]);
    let out = icefall(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout_field(&String::from_utf8_lossy(&out.stdout), "unknown_fields"),
        600,
        "two per record"
    );
    assert_eq!(
        stdout_field(&String::from_utf8_lossy(&out.stdout), "columns_added"),
        0
    );
    assert!(
        stderr.contains("field=extra") && stderr.contains("--evolve"),
        "{stderr}"
    );
    let view = common::table_view(wh.path(), "ns.events");
    let rows: usize = view
        .files
        .iter()
        .map(|f| {
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(f).unwrap(),
            )
            .unwrap();
            let names: Vec<String> = r
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert!(
                !names.iter().any(|n| n == "extra" || n == "more"),
                "{names:?}"
            );
            r.metadata().file_metadata().num_rows() as usize
        })
        .sum();
    assert_eq!(rows, 500, "records with unknown fields still land");

    // --evolve needs an inferred schema.
    let schema = common::repo().join("tests/data/sample-json.schema.json");
    let mut args = base_args("127.0.0.1:9", "events", wh.path().to_str().unwrap());
    args.extend([
        "--format",
        "json",
        "--schema",
        schema.to_str().unwrap(),
        "--evolve",
    ]);
    common::assert_clean_failure(&icefall(&args), 2, &["--evolve", "--infer-schema"]);
}
