//! `--dlq-table` and `--dlq-topic`: records that cannot be decoded (malformed JSON, a wrong type,
//! a missing required field, a value over `--max-record-bytes`) land in the dead-letter table or
//! topic, every other record in the main table, each exactly once, also across a SIGKILL and a
//! crash between the dead-letter write and the table's commit of the same epoch.

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

/// Where a scenario sends its dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Table,
    Topic,
}

/// A dead letter as its destination holds it: source (partition, offset), value, reason.
type Letter = ((i32, i64), Option<Vec<u8>>, String);

const DLQ_TOPIC: &str = "events-dlq";
/// Fewer than the source's partitions: source partitions share dead-letter partitions.
const DLQ_PARTITIONS: i32 = 3;

fn dead_letters(dest: Dest, wh: &Path, broker: &Broker) -> Vec<Letter> {
    match dest {
        Dest::Table => {
            let mut out = Vec::new();
            for (file, rows) in read_table(wh, "ns.dead").1 {
                let errors = errors_of(&file);
                assert_eq!(errors.len(), rows.len());
                for (r, error) in rows.into_iter().zip(errors) {
                    out.push(((r.partition, r.offset), r.value, error));
                }
            }
            out
        }
        Dest::Topic => topic_letters(broker),
    }
}

/// Every record of the dead-letter topic, by its `icefall.source.*` headers.
fn topic_letters(broker: &Broker) -> Vec<Letter> {
    let mut out = Vec::new();
    for p in 0..DLQ_PARTITIONS {
        for r in broker.read_partition(DLQ_TOPIC, p) {
            let text = |k: &str| r.header(k).unwrap();
            assert_eq!(text("icefall.source.topic"), "events");
            let sp: i32 = text("icefall.source.partition").parse().unwrap();
            let so: i64 = text("icefall.source.offset").parse().unwrap();
            assert_eq!(sp % DLQ_PARTITIONS, p, "source partition p goes to p mod n");
            out.push(((sp, so), r.value.clone(), text("icefall.error")));
        }
    }
    out
}

/// The main table's committed offsets of `events` (empty before the first commit).
fn committed(wh: &Path) -> BTreeMap<i32, i64> {
    table_view(wh, "ns.events")
        .summary
        .get("icefall.offsets.events")
        .map(|j| icefall::offsets::decode_offsets(j).unwrap())
        .unwrap_or_default()
}

#[test]
fn bad_records_land_in_the_dead_letter_table_exactly_once_across_crashes() {
    exactly_once_across_crashes(Dest::Table);
}

#[test]
fn bad_records_land_in_the_dead_letter_topic_exactly_once_across_crashes() {
    exactly_once_across_crashes(Dest::Topic);
}

fn exactly_once_across_crashes(dest: Dest) {
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
        "--max-record-bytes",
        "1KiB",
        "--commit-interval",
        "300ms",
        "--fetch-max-bytes",
        "32KiB",
    ]);
    match dest {
        Dest::Table => args.extend(["--dlq-table", "ns.dead"]),
        Dest::Topic => {
            broker.create_topic(DLQ_TOPIC, DLQ_PARTITIONS as u32);
            args.extend(["--dlq-topic", DLQ_TOPIC]);
        }
    }

    // Run 1: killed at an arbitrary point once something is committed.
    produce_half(&broker, 0);
    let mut child = spawn_icefall(&args);
    wait_for_committed(wh.path(), "ns.events", "events", 1, Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill: BTreeSet<(i32, i64)> = main_rows(wh.path()).iter().map(|r| r.0).collect();

    // Run 2: dies right after writing dead letters the table's offsets do not yet cover.
    produce_half(&broker, 1);
    let mut dying = args.clone();
    dying.push("--debug-die-after-dlq-commit");
    let out = icefall(&dying);
    assert_eq!(
        out.status.code(),
        Some(137),
        "run 2 dies after writing dead letters: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table_offsets = committed(wh.path());
    let ahead = dead_letters(dest, wh.path(), &broker)
        .iter()
        .filter(|((p, o), ..)| table_offsets.get(p).is_none_or(|c| o >= c))
        .count();
    assert!(
        ahead > 0,
        "dead letters were written past the table's offsets before the crash"
    );

    // Run 3: to the end, over a third part produced after the crash, so it meets records of
    // every kind of its own whatever run 2 got through.
    produce_half(&broker, 2);
    let mut last = args.clone();
    last.push("--stop-at-end");
    let out = icefall(&last);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run 3: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Run 3 re-reads what run 2 (and run 1) wrote but did not commit: not written again.
    assert_eq!(
        stdout_field(&stdout, "dead_letters_skipped"),
        ahead as u64,
        "the dead letters written before the crash are not written again"
    );
    assert!(stdout_field(&stdout, "dead_letters") > 0);
    assert!(!stderr.contains("record counts disagree"), "{stderr}");

    // Every produced record is in exactly one of the table and the dead letters, where its kind
    // says.
    let main = main_rows(wh.path());
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
    for ((p, o), value, error) in dead_letters(dest, wh.path(), &broker) {
        let seq = seq_of(p, o);
        let kind = kind_of(seq);
        assert_ne!(
            kind,
            Kind::Good,
            "a good record in the DLQ: seq {seq}: {error}"
        );
        assert_eq!(
            value.as_deref(),
            Some(&value_of(seq)[..]),
            "the dead letter keeps the value's bytes"
        );
        assert!(!error.is_empty());
        if kind == Kind::Oversized {
            assert!(error.contains("1024"), "oversized names the limit: {error}");
        }
        assert!(
            in_dead.insert((p, o), error).is_none(),
            "({p}, {o}) twice in the dead letters"
        );
    }
    let mut missing = Vec::new();
    for p in 0..PARTITIONS {
        for o in 0..3 * PER_PARTITION_HALF {
            let key = (p, o);
            match (in_main.contains_key(&key), in_dead.contains_key(&key)) {
                (true, false) | (false, true) => {}
                (true, true) => panic!("{key:?} in both the table and the dead letters"),
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
    let offsets = committed(wh.path());
    assert_eq!(
        offsets.values().sum::<i64>(),
        PARTITIONS as i64 * 3 * PER_PARTITION_HALF
    );
    match dest {
        // Both tables carry the same offsets: the dead-letter table's commit came first each
        // epoch.
        Dest::Table => {
            let dead_view = table_view(wh.path(), "ns.dead");
            let dead_offsets =
                icefall::offsets::decode_offsets(&dead_view.summary["icefall.offsets.events"])
                    .unwrap();
            assert!(dead_offsets.iter().all(|(p, o)| offsets[p] >= *o));
        }
        // The table records how far the topic was written when it committed.
        Dest::Topic => {
            let view = table_view(wh.path(), "ns.events");
            let ends = icefall::offsets::decode_offsets(
                &view.summary[&icefall::offsets::dead_letter_offsets_key(DLQ_TOPIC)],
            )
            .unwrap();
            let total: i64 = ends.values().sum();
            assert!(
                total > 0 && total <= in_dead.len() as i64 + ahead as i64,
                "{ends:?}"
            );
        }
    }
}

#[test]
fn a_dead_letter_topic_must_exist_and_differ_from_the_source() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let wh = tempfile::tempdir().unwrap();
    let schema = repo().join("tests/data/sample-json.schema.json");
    let run = |dlq: &str| {
        let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
        args.extend(["--stop-at-end", "--format", "json"]);
        args.extend(["--schema", schema.to_str().unwrap(), "--dlq-topic", dlq]);
        icefall(&args)
    };
    common::assert_clean_failure(&run("events"), 2, &["--dlq-topic", "other than --topic"]);
    common::assert_clean_failure(&run("nowhere"), 3, &["\"nowhere\"", "does not exist"]);
}
