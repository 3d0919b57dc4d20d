//! The overload policy against a real broker: a slowed shard at the live tail drops only its own
//! records and names each one in the drop ledger; `replay-dropped` brings them back exactly once;
//! a backfill with `auto` and a tiny queue drops nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{
    Broker, Row, base_args, icefall_command, read_table, sample, spawn_icefall_logged,
    stdout_field, table_ledger, verify_sample, verify_sample_set, wait_for_committed, wait_for_log,
};

const CAUGHT_UP: &str = "overload: caught up";

/// Two cores for two shard cores where the machine has them (one shard each); else one.
fn layout() -> (String, bool) {
    let online = icefall::runtime::online_cores().expect("online cores");
    let cores =
        icefall::config::CoreList::new(online.iter().copied().take(2).collect()).expect("cores");
    (cores.to_string(), cores.len() >= 2)
}

/// Both tests: `auto`, two shards on the layout's cores (fetch and shard roles share them).
fn auto_args<'a>(broker: &'a str, warehouse: &'a str, cores: &'a str) -> Vec<&'a str> {
    let mut args = base_args(broker, "events", warehouse);
    args.extend([
        "--fetch-cores",
        cores,
        "--shard-cores",
        cores,
        "--shards",
        "2",
    ]);
    args.extend(["--overload", "auto"]);
    args
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

fn replay(args: &[&str]) -> String {
    let out = icefall_command()
        .arg("replay-dropped")
        .args(args)
        .env("ICEFALL_LOG", "warn")
        .output()
        .expect("run replay-dropped");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "replay-dropped failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn all_rows(files: &[(PathBuf, Vec<Row>)]) -> impl Iterator<Item = (&PathBuf, &Row)> {
    files
        .iter()
        .flat_map(|(p, rows)| rows.iter().map(move |r| (p, r)))
}

#[test]
fn a_slow_shard_at_the_live_tail_drops_only_its_records_names_each_and_replay_restores_them() {
    const N: u64 = 40_000;
    const KEYS: u64 = 500;
    const SLOW_SHARD: u32 = 0;
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().unwrap();
    let wh_path = wh.path().to_str().unwrap();
    let (cores, two_cores) = layout();
    let mut args = auto_args(&broker.addr, wh_path, &cores);
    args.extend([
        "--live-threshold",
        "1000000",
        "--queue-capacity",
        "1000",
        "--debug-slow-shard",
        "0:50ms",
        // Long enough for an epoch's ledger to outgrow the summary and go to a file.
        "--commit-interval",
        "2s",
        "--fetch-max-wait",
        "100ms",
    ]);
    let (child, log) = spawn_icefall_logged(&args);
    // The topic is empty: every fetch core is caught up at once, so auto drops from here on.
    let fetch_cores = cores.split(',').count();
    wait_for_log(&log, CAUGHT_UP, fetch_cores, Duration::from_secs(60));

    // A live stream the fast shard keeps up with and the slowed one cannot.
    broker.loadgen(
        "events",
        &[
            "--records",
            &N.to_string(),
            "--keys",
            &KEYS.to_string(),
            "--rate",
            "20000",
            "--batch",
            "100",
        ],
    );
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        N as i64,
        Duration::from_secs(120),
    );
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let text = log.lock().unwrap().clone();
    assert!(out.status.success(), "exit {:?}: {text}", out.status.code());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let dropped = stdout_field(&stdout, "dropped");
    assert!(
        dropped > 0,
        "the slowed shard dropped nothing: {stdout}\n{text}"
    );
    assert_eq!(stdout_field(&stdout, "records"), N, "{stdout}");

    // Rows plus ledger are exactly the produced set; disjoint; no row twice.
    let ledger = table_ledger(wh.path(), "ns.events", "events");
    assert_eq!(
        ledger.dropped.count(),
        dropped,
        "every drop is in the ledger"
    );
    assert!(ledger.replayed.is_empty());
    let spilled = std::fs::read_dir(wh.path().join("ns/events/metadata"))
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("icefall-dropped-")
            })
        })
        .count();
    eprintln!(
        "dropped {dropped} in {} ranges; {spilled} snapshot ledger(s) over {} bytes went to files",
        ledger.dropped.range_count(),
        icefall::offsets::LEDGER_INLINE_MAX
    );
    assert!(
        spilled > 0,
        "no ledger went to a file: the file path is untested"
    );
    let (view, files) = read_table(wh.path(), "ns.events");
    let offsets =
        icefall::offsets::decode_offsets(&view.summary["icefall.offsets.events"]).unwrap();
    assert_eq!(
        offsets.values().sum::<i64>(),
        N as i64,
        "the offsets moved past every drop"
    );
    let mut seen = BTreeSet::new();
    for (_, r) in all_rows(&files) {
        assert!(
            seen.insert((r.partition, r.offset)),
            "p{} o{} twice",
            r.partition,
            r.offset
        );
        assert!(
            !ledger.dropped.contains(r.partition, r.offset),
            "p{} o{} is in the table and the ledger",
            r.partition,
            r.offset
        );
    }
    assert_eq!(seen.len() as u64 + dropped, N);
    for (p, next) in &offsets {
        for o in 0..*next {
            assert!(
                seen.contains(&(*p, o)) || ledger.dropped.contains(*p, o),
                "p{p} o{o} is neither in the table nor in the ledger"
            );
        }
    }
    // Kept rows keep per-key order (files in path order are write order per shard core).
    let mut last: BTreeMap<(i32, Vec<u8>), i64> = BTreeMap::new();
    for (path, r) in all_rows(&files) {
        if let Some(k) = &r.key
            && let Some(prev) = last.insert((r.partition, k.clone()), r.offset)
        {
            assert!(
                prev < r.offset,
                "key order broken at p{} o{} in {}",
                r.partition,
                r.offset,
                path.display()
            );
        }
    }

    // Replay: every produced record exactly once, byte-equal; the replayed ones were bound for
    // the slowed shard only.
    let shape = sample::Shape {
        keys: KEYS,
        ..Default::default()
    };
    let replay_args = base_args(&broker.addr, "events", wh_path);
    let stdout = replay(&replay_args);
    assert_eq!(stdout_field(&stdout, "appended"), dropped, "{stdout}");
    assert_eq!(stdout_field(&stdout, "missing"), 0, "{stdout}");
    let (view, files) = read_table(wh.path(), "ns.events");
    assert_eq!(verify_sample_set(&files, &shape, N) as u64, N);
    let router = icefall::routing::Router::new(2, if two_cores { 2 } else { 1 });
    let mut replayed = 0;
    for (_, r) in all_rows(&files).filter(|(_, r)| ledger.dropped.contains(r.partition, r.offset)) {
        replayed += 1;
        if two_cores {
            assert_eq!(
                router.shard_of(r.key.as_deref(), r.partition),
                SLOW_SHARD,
                "p{} o{} was bound for a shard that keeps up, yet it was dropped",
                r.partition,
                r.offset
            );
        }
    }
    assert_eq!(replayed, dropped);
    let ledger = table_ledger(wh.path(), "ns.events", "events");
    assert!(
        ledger.outstanding().is_empty(),
        "everything dropped is replayed"
    );

    // A second replay adds nothing (and no snapshot).
    let stdout = replay(&replay_args);
    assert_eq!(
        (
            stdout_field(&stdout, "outstanding"),
            stdout_field(&stdout, "appended")
        ),
        (0, 0),
        "{stdout}"
    );
    let (again, files) = read_table(wh.path(), "ns.events");
    assert_eq!(again.snapshots, view.snapshots);
    assert_eq!(verify_sample_set(&files, &shape, N) as u64, N);
}

#[test]
fn a_backfill_with_auto_and_a_tiny_queue_drops_nothing() {
    const N: u64 = 100_000;
    const KEYS: u64 = 800;
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", N, KEYS);
    let wh = tempfile::tempdir().unwrap();
    let (cores, _) = layout();
    let mut args = auto_args(&broker.addr, wh.path().to_str().unwrap(), &cores);
    args.extend([
        "--queue-capacity",
        "16",
        "--ring-batches",
        "2",
        "--debug-slow-shard",
        "0:2ms",
        "--fetch-max-bytes",
        "64KiB",
        "--commit-interval",
        "300ms",
    ]);
    // Not --stop-at-end: the run backfills from 0, catches up, and goes on at the live tail.
    let (child, log) = spawn_icefall_logged(&args);
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        N as i64,
        Duration::from_secs(180),
    );
    let fetch_cores = cores.split(',').count();
    wait_for_log(&log, CAUGHT_UP, fetch_cores, Duration::from_secs(30));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let text = log.lock().unwrap().clone();
    assert!(out.status.success(), "exit {:?}: {text}", out.status.code());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout_field(&stdout, "dropped"), 0, "{stdout}");
    assert!(!text.contains("records dropped"), "{text}");
    let ledger = table_ledger(wh.path(), "ns.events", "events");
    assert!(ledger.dropped.is_empty(), "ledger: {:?}", ledger.dropped);
    let (_, files) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: KEYS,
        ..Default::default()
    };
    assert_eq!(verify_sample(&files, &shape, N) as u64, N);
}
