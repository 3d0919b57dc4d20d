//! The overload policy against a real broker: a slowed shard at the live tail drops only its own
//! records and names each one in the drop ledger; `replay-dropped` brings them back exactly once;
//! a backfill with `auto` and a tiny queue drops nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{
    Broker, Row, base_args, icefall_command, read_table, sample, spawn_icefall_logged,
    stdout_field, table_ledger, table_view, verify_sample, verify_sample_set, wait_for_committed,
    wait_for_log,
};

const CAUGHT_UP: &str = "overload: caught up";

/// Two cores for two shard cores where the machine has them (one shard each); else one.
fn layout() -> (String, bool) {
    let online = icefall::runtime::online_cores().expect("online cores");
    let cores =
        icefall::config::CoreList::new(online.iter().copied().take(2).collect()).expect("cores");
    (cores.to_string(), cores.len() >= 2)
}

/// `shards` shards on the layout's cores (fetch and shard roles share them).
fn placed_args<'a>(
    broker: &'a str,
    warehouse: &'a str,
    cores: &'a str,
    shards: &'a str,
) -> Vec<&'a str> {
    let mut args = base_args(broker, "events", warehouse);
    args.extend([
        "--fetch-cores",
        cores,
        "--shard-cores",
        cores,
        "--shards",
        shards,
    ]);
    args
}

/// [`placed_args`] with `--overload auto`.
fn auto_args<'a>(
    broker: &'a str,
    warehouse: &'a str,
    cores: &'a str,
    shards: &'a str,
) -> Vec<&'a str> {
    let mut args = placed_args(broker, warehouse, cores, shards);
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

/// Records per ring, (fetch core, shard core), of the sample stream (every record keyed), as
/// icefall assigns partitions and routes keys.
fn per_ring(
    shape: &sample::Shape,
    n: u64,
    partitions: u32,
    shards: u32,
    cores: u32,
) -> BTreeMap<(usize, usize), u64> {
    let router = icefall::routing::Router::new(shards, cores);
    let all: Vec<i32> = (0..partitions as i32).collect();
    let owners = icefall::routing::assign_partitions(&all, cores as usize);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let k = shape.key(i).expect("every record is keyed");
        let p = sample::kafka_partition(&k, partitions) as i32;
        let fetch = owners
            .iter()
            .position(|ps| ps.contains(&p))
            .expect("an owner");
        *out.entry((fetch, router.core_of(router.shard_of(Some(&k), p))))
            .or_default() += 1;
    }
    out
}

/// Holds by construction, however busy the machine: 3 shards on 2 shard cores, so the core of
/// the slowed shard 0 (it also runs shard 2) gets about two thirds of the records; each ring
/// holds more records and batches than the other core receives in the whole run, so that ring
/// can never fill and none of its records can be dropped. The slowed core receives over 10,000
/// records more than a ring holds, far more than it drains while the stream lasts (at most 5
/// batches a second, each at most one partition's small fetch), so it drops, and its drops
/// interleave with kept records (uniform keys).
#[test]
fn a_slow_shard_at_the_live_tail_drops_only_its_records_names_each_and_replay_restores_them() {
    const N: u64 = 40_000;
    const KEYS: u64 = 500;
    const SLOW_SHARD: u32 = 0;
    let shape = sample::Shape {
        keys: KEYS,
        null_key_every: 0,
        ..Default::default()
    };
    let (cores, two_cores) = layout();
    let shard_cores = if two_cores { 2 } else { 1 };
    // Fetch and shard roles share the layout's cores: as many fetch cores as shard cores.
    let counts = per_ring(&shape, N, 4, 3, shard_cores);
    let slow_core = icefall::routing::Router::new(3, shard_cores).core_of(SLOW_SHARD);
    let fast = counts
        .iter()
        .filter(|((_, c), _)| *c != slow_core)
        .map(|(_, n)| *n)
        .max();
    let capacity = (fast.unwrap_or(0) + 1).to_string();
    if two_cores {
        let slow: u64 = counts
            .iter()
            .filter(|((_, c), _)| *c == slow_core)
            .map(|(_, n)| *n)
            .sum();
        let room = 2 * (fast.unwrap_or(0) + 1);
        assert!(slow > room + 5_000, "{counts:?}");
    }
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().unwrap();
    let wh_path = wh.path().to_str().unwrap();
    let mut args = auto_args(&broker.addr, wh_path, &cores, "3");
    args.extend([
        "--live-threshold",
        "1000000",
        "--queue-capacity",
        &capacity,
        "--ring-batches",
        &capacity,
        "--debug-slow-shard",
        "0:200ms",
        // Small fetches: a batch of the slowed core is at most one partition's small answer.
        "--fetch-max-bytes",
        "16KiB",
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
            "--null-key-every",
            "0",
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
    eprintln!(
        "dropped {dropped} in {} ranges",
        ledger.dropped.range_count()
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

    // Maintenance keeps only the current snapshot: the drops it expires are folded, not lost.
    common::maintain_all(wh_path, &[]);
    assert_eq!(table_view(wh.path(), "ns.events").snapshots, 1);
    let folded = table_ledger(wh.path(), "ns.events", "events");
    assert_eq!(
        folded.dropped, ledger.dropped,
        "maintenance kept the drop ledger"
    );

    // Replay: every produced record exactly once, byte-equal; the replayed ones were bound for
    // the slowed shard only.
    let replay_args = base_args(&broker.addr, "events", wh_path);
    let stdout = replay(&replay_args);
    assert_eq!(stdout_field(&stdout, "appended"), dropped, "{stdout}");
    assert_eq!(stdout_field(&stdout, "missing"), 0, "{stdout}");
    let (_, files) = read_table(wh.path(), "ns.events");
    assert_eq!(verify_sample_set(&files, &shape, N) as u64, N);
    let router = icefall::routing::Router::new(3, shard_cores);
    let mut replayed = 0;
    for (_, r) in all_rows(&files).filter(|(_, r)| ledger.dropped.contains(r.partition, r.offset)) {
        replayed += 1;
        if two_cores {
            assert_eq!(
                router.core_of(router.shard_of(r.key.as_deref(), r.partition)),
                slow_core,
                "p{} o{} was bound for a shard core that keeps up, yet it was dropped",
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
    // And the replays it expires too.
    common::maintain_all(wh_path, &[]);
    let view = table_view(wh.path(), "ns.events");
    assert_eq!(view.snapshots, 1);
    assert!(
        table_ledger(wh.path(), "ns.events", "events")
            .outstanding()
            .is_empty(),
        "the replays are folded with the drops"
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
    let mut args = auto_args(&broker.addr, wh.path().to_str().unwrap(), &cores, "2");
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

fn spilled_ledgers(wh: &std::path::Path) -> usize {
    std::fs::read_dir(wh.join("ns/events/metadata"))
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("icefall-dropped-")
            })
        })
        .count()
}

/// `--overload drop` on a live stream, 3 shards on 2 shard cores with shard 0's core slowed:
/// that core drops most of its records, in runs broken by the other core's kept ones, so the
/// one epoch's ledger outgrows the summary and goes to a file; the table and the ledger together
/// are still exactly the produced set, and replay brings every drop back.
#[test]
fn a_ledger_too_big_for_the_summary_goes_to_a_file_and_replays() {
    const N: u64 = 20_000;
    let (cores, two_cores) = layout();
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().unwrap();
    let wh_path = wh.path().to_str().unwrap();
    let mut args = placed_args(&broker.addr, wh_path, &cores, "3");
    args.extend([
        "--overload",
        "drop",
        "--debug-slow-shard",
        "0:50ms",
        "--queue-capacity",
        "500",
        "--fetch-max-wait",
        "50ms",
        // One epoch for the whole stream: its ledger holds every drop.
        "--commit-interval",
        "10m",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let (child, log) = spawn_icefall_logged(&args);
    let addr = common::logged_http_addr(&log);
    broker.loadgen(
        "events",
        &[
            "--records",
            &N.to_string(),
            "--keys",
            "500",
            "--rate",
            "20000",
            "--batch",
            "100",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while common::metric_sum(
        &common::http_get(&addr, "/metrics").1,
        "icefall_records_total",
    ) < N as f64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not every record was fetched"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let text = log.lock().unwrap().clone();
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let dropped = stdout_field(&stdout, "dropped");
    assert!(dropped > 0, "{stdout}");
    let ledger = table_ledger(wh.path(), "ns.events", "events");
    assert_eq!(ledger.dropped.count(), dropped, "{stdout}");
    if two_cores {
        assert!(
            spilled_ledgers(wh.path()) > 0,
            "{dropped} drops in {} ranges, yet no ledger went to a file",
            ledger.dropped.range_count()
        );
    }
    let (_, files) = read_table(wh.path(), "ns.events");
    let rows = files.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
    assert_eq!(
        rows + dropped,
        N,
        "the table and the ledger hold every record once"
    );
    // Maintenance expires the snapshots that name the ledger files; the files stay named.
    common::maintain_all(wh_path, &[]);
    let folded = table_ledger(wh.path(), "ns.events", "events");
    assert_eq!(
        folded.dropped, ledger.dropped,
        "maintenance kept the ledger files"
    );
    let stdout = replay(&base_args(&broker.addr, "events", wh_path));
    assert_eq!(stdout_field(&stdout, "appended"), dropped, "{stdout}");
    let (_, files) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 500,
        ..Default::default()
    };
    assert_eq!(verify_sample_set(&files, &shape, N) as u64, N);
}
