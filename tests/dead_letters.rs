//! `--dlq-table`: records that cannot be decoded (malformed JSON, a wrong type, a missing required
//! field, a value over `--max-record-bytes`) land in the dead-letter table, every other record in
//! the main table, each exactly once, also across a SIGKILL and a crash between the dead-letter
//! commit and the table's commit of the same epoch.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use common::{
    Broker, base_args, icefall, read_table, repo, spawn_icefall, stdout_field, table_view,
    wait_for_committed,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const PARTITIONS: i32 = 4;
const PER_PARTITION_HALF: i64 = 2_500;

/// What a produced record is, by its place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    Malformed,
    WrongType,
    MissingRequired,
    Oversized,
}

fn kind_of(seq: i64) -> Kind {
    match seq % 11 {
        3 => Kind::Malformed,
        5 => Kind::WrongType,
        7 => Kind::MissingRequired,
        9 if seq % 3 == 0 => Kind::Oversized,
        _ => Kind::Good,
    }
}

/// The value of the record with this sequence number (`--schema` is sample-json.schema.json:
/// `seq` and `user` required).
fn value_of(seq: i64) -> Vec<u8> {
    match kind_of(seq) {
        Kind::Good => format!(r#"{{"seq":{seq},"user":"u{}","amount":{seq}.5}}"#, seq % 17),
        Kind::Malformed => format!(r#"{{"seq":{seq},"user":"u"#),
        Kind::WrongType => format!(r#"{{"seq":{seq},"user":"u","amount":"lots"}}"#),
        Kind::MissingRequired => format!(r#"{{"user":"u","note":"{seq}"}}"#),
        Kind::Oversized => format!(
            r#"{{"seq":{seq},"user":"u","note":"{}"}}"#,
            "x".repeat(1_500)
        ),
    }
    .into_bytes()
}

/// Sequence number of (partition, offset): partitions are filled in order, offset by offset.
fn seq_of(partition: i32, offset: i64) -> i64 {
    offset * PARTITIONS as i64 + partition as i64
}

fn produce_half(broker: &Broker, half: i64) {
    for p in 0..PARTITIONS {
        let first = half * PER_PARTITION_HALF;
        for chunk in (first..first + PER_PARTITION_HALF)
            .collect::<Vec<_>>()
            .chunks(500)
        {
            let values: Vec<Option<Vec<u8>>> = chunk
                .iter()
                .map(|&o| Some(value_of(seq_of(p, o))))
                .collect();
            broker.produce_values("events", p, &values);
        }
    }
}

/// (partition, offset) → seq of every row of the main (typed) table.
fn main_rows(warehouse: &Path) -> Vec<((i32, i64), i64)> {
    let view = table_view(warehouse, "ns.events");
    let mut rows = Vec::new();
    for f in &view.files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (p, o, s) = (col("_kafka_partition"), col("_kafka_offset"), col("seq"));
            let (p, o, s) = (
                p.as_primitive::<Int32Type>(),
                o.as_primitive::<Int64Type>(),
                s.as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                rows.push(((p.value(i), o.value(i)), s.value(i)));
            }
        }
    }
    rows
}

/// The `error` column of a dead-letter file, in row order.
fn errors_of(file: &Path) -> Vec<String> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for b in reader.build().unwrap() {
        let b = b.unwrap();
        let e = b.column_by_name("error").expect("error column");
        out.extend(e.as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
    }
    out
}

#[test]
fn bad_records_land_in_the_dead_letter_table_exactly_once_across_crashes() {
    let broker = Broker::start();
    broker.create_topic("events", PARTITIONS as u32);
    let wh = tempfile::tempdir().unwrap();
    let schema = repo().join("tests/data/sample-json.schema.json");
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend([
        "--format",
        "json",
        "--schema",
        schema.to_str().unwrap(),
        "--dlq-table",
        "ns.dead",
        "--max-record-bytes",
        "1KiB",
        "--commit-interval",
        "300ms",
        "--fetch-max-bytes",
        "32KiB",
    ]);

    // Run 1: killed at an arbitrary point once something is committed.
    produce_half(&broker, 0);
    let mut child = spawn_icefall(&args);
    wait_for_committed(wh.path(), "ns.events", "events", 1, Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill: BTreeSet<(i32, i64)> = main_rows(wh.path()).iter().map(|r| r.0).collect();
    let dead_rows = |wh: &Path| -> usize {
        read_table(wh, "ns.dead")
            .1
            .iter()
            .map(|(_, rows)| rows.len())
            .sum()
    };
    let dead_after_kill = dead_rows(wh.path());

    // Run 2: dies right after committing dead letters the table's offsets do not yet cover.
    produce_half(&broker, 1);
    let mut dying = args.clone();
    dying.push("--debug-die-after-dlq-commit");
    let out = icefall(&dying);
    assert_eq!(
        out.status.code(),
        Some(137),
        "run 2 dies after its dead-letter commit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ahead = dead_rows(wh.path()) - dead_after_kill;
    assert!(
        ahead > 0,
        "the dead-letter table got a commit before the crash"
    );

    // Run 3: to the end.
    let mut last = args.clone();
    last.push("--stop-at-end");
    let out = icefall(&last);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run 3: {stderr}");
    // Run 3 re-reads the epoch run 2 died in: its dead letters are already in the DLQ table.
    assert_eq!(
        stdout_field(
            &String::from_utf8_lossy(&out.stdout),
            "dead_letters_skipped"
        ),
        ahead as u64,
        "the dead letters committed before the crash are not written again"
    );
    assert!(stdout_field(&String::from_utf8_lossy(&out.stdout), "dead_letters") > 0);
    assert!(!stderr.contains("record counts disagree"), "{stderr}");

    // Every produced record is in exactly one of the two tables, where its kind says.
    let main = main_rows(wh.path());
    let (dead_view, dead_files) = read_table(wh.path(), "ns.dead");
    let mut in_main = BTreeMap::new();
    for ((p, o), seq) in &main {
        assert!(
            in_main.insert((*p, *o), *seq).is_none(),
            "({p}, {o}) twice in the table"
        );
        assert_eq!(
            *seq,
            seq_of(*p, *o),
            "the row's decoded seq is its record's"
        );
        assert_eq!(
            kind_of(*seq),
            Kind::Good,
            "a bad record in the table: seq {seq}"
        );
    }
    assert!(after_kill.iter().all(|k| in_main.contains_key(k)));
    let mut in_dead = BTreeMap::new();
    for (file, rows) in &dead_files {
        let errors = errors_of(file);
        assert_eq!(errors.len(), rows.len());
        for (r, error) in rows.iter().zip(errors) {
            let seq = seq_of(r.partition, r.offset);
            let kind = kind_of(seq);
            assert_ne!(
                kind,
                Kind::Good,
                "a good record in the DLQ: seq {seq}: {error}"
            );
            assert_eq!(
                r.value.as_deref(),
                Some(&value_of(seq)[..]),
                "the dead letter keeps the value's bytes"
            );
            assert!(!error.is_empty());
            if kind == Kind::Oversized {
                assert!(error.contains("1024"), "oversized names the limit: {error}");
            }
            assert!(
                in_dead.insert((r.partition, r.offset), error).is_none(),
                "({}, {}) twice in the dead-letter table",
                r.partition,
                r.offset
            );
        }
    }
    let mut missing = Vec::new();
    for p in 0..PARTITIONS {
        for o in 0..2 * PER_PARTITION_HALF {
            let key = (p, o);
            match (in_main.contains_key(&key), in_dead.contains_key(&key)) {
                (true, false) | (false, true) => {}
                (true, true) => panic!("{key:?} in both tables"),
                (false, false) => missing.push(key),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} records lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let kinds: BTreeSet<String> = in_dead
        .keys()
        .map(|&(p, o)| format!("{:?}", kind_of(seq_of(p, o))))
        .collect();
    assert_eq!(
        kinds.len(),
        4,
        "every kind of bad record is set aside: {kinds:?}"
    );
    // Both tables carry the same offsets: the dead-letter table's commit came first each epoch.
    let offsets = icefall::offsets::decode_offsets(
        &table_view(wh.path(), "ns.events").summary["icefall.offsets.events"],
    )
    .unwrap();
    let dead_offsets =
        icefall::offsets::decode_offsets(&dead_view.summary["icefall.offsets.events"]).unwrap();
    assert_eq!(
        offsets.values().sum::<i64>(),
        PARTITIONS as i64 * 2 * PER_PARTITION_HALF
    );
    assert!(dead_offsets.iter().all(|(p, o)| offsets[p] >= *o));
}
