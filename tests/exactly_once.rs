//! Exactly-once across crashes: icefall is SIGKILLed at random moments, restarted each time, then
//! run to the end. The table (only the files its current snapshot references) holds every
//! (partition, offset) exactly once, byte-equal, in per-key order, and the last snapshot's
//! offsets equal the high watermarks.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Broker, base_args, icefall, read_table, sample, spawn_icefall, verify_sample};

const RECORDS: u64 = 500_000;
const KEYS: u64 = 2_000;

#[test]
fn sigkill_and_restart_lands_every_record_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("events", 8);
    broker.produce("events", RECORDS, KEYS);
    let wh = tempfile::tempdir().unwrap();
    let w = wh.path().to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.extend([
        "--commit-interval",
        "200ms",
        "--file-max-bytes",
        "2MiB",
        "--stop-at-end",
        // Paced by construction, not by this machine's speed: one shard, which sleeps 300 ms
        // before each batch it gets (Tansu's answers make ~20 of them: 6 s or more in all), so
        // the runs cannot reach the end within 5 kill waits of at most 600 ms each.
        "--shards",
        "1",
        "--debug-slow-shard",
        "0:300ms",
    ]);

    // Kill moments drawn from a seed printed for reproduction.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill seed {seed}");
    let mut kills = 0;
    let mut round = 0u64;
    while kills < 5 {
        round += 1;
        assert!(
            round < 20,
            "icefall kept finishing before it could be killed"
        );
        let wait = Duration::from_millis(100 + sample::mix(seed ^ round) % 500);
        let mut child = spawn_icefall(&args);
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            break; // reached the end already
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        eprintln!("killed run {round} after {wait:?}");
    }
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (view, files) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: KEYS,
        ..Default::default()
    };
    assert_eq!(verify_sample(&files, &shape, RECORDS) as u64, RECORDS);

    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (_, rows) in &files {
        for r in rows {
            *per_partition.entry(r.partition).or_default() += 1;
        }
    }
    let offsets =
        icefall::offsets::decode_offsets(&view.summary["icefall.offsets.events"]).unwrap();
    assert_eq!(
        offsets, per_partition,
        "last snapshot's offsets are the high watermarks"
    );
    assert!(view.summary.contains_key("icefall.commit-id"));
    eprintln!(
        "{kills} kills, {} snapshots, {} committed files",
        view.snapshots,
        view.files.len()
    );
    assert!(kills >= 5, "only {kills} kills happened");
}
