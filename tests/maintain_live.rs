//! Maintenance beside writers and through crashes: two `run --maintain-interval` writers on one
//! table keep every record once and the table bounded; two maintainers racing on the same files
//! commit one compaction (the loser re-checks its inputs and abandons, deleting its output);
//! SIGKILL at any moment of a pass loses nothing and leaves no snapshot missing a file.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Broker, base_args, icefall, icefall_command, read_table, sample, table_view};

fn field(line: &str, name: &str) -> u64 {
    common::field(line, name) as u64
}

/// PyIceberg over the table: rows, distinct (partition, offset) pairs, and the files any
/// snapshot references that are missing.
fn pyiceberg(w: &str) -> (u64, u64, u64) {
    let body = format!(
        "{}d = t.scan().to_arrow()\n\
         pairs = set(zip(d['_kafka_partition'].to_pylist(), d['_kafka_offset'].to_pylist()))\n\
         print(d.num_rows, len(pairs), missing)\n",
        common::COUNT_MISSING_PY
    );
    let out = common::pyiceberg_events(w, &body);
    let n: Vec<u64> = out
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    (n[0], n[1], n[2])
}

fn spawn_maintain(w: &str, extra: &[&str]) -> Child {
    icefall_command()
        .args(["maintain", "--warehouse", w, "--table", "ns.events"])
        .args(["--expire-older-than", "0s", "--retain-last", "1"])
        .args(["--target-file-size", "64MiB"])
        .args(extra)
        .env("ICEFALL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icefall maintain")
}

fn finish(child: Child) -> (String, String) {
    let out = child.wait_with_output().expect("wait");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// Small committed rounds: one snapshot and one small file each.
fn rounds(broker: &Broker, w: &str, first: u64, n: u64, per: u64) {
    let mut run = base_args(&broker.addr, "events", w);
    run.push("--stop-at-end");
    for r in 0..n {
        let (records, seq) = (per.to_string(), (first + r * per).to_string());
        broker.loadgen(
            "events",
            &["--records", &records, "--first-seq", &seq, "--keys", "100"],
        );
        let out = icefall(&run);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn compacted_on_disk(dir: &Path) -> usize {
    common::parquet_files(dir)
        .iter()
        .filter(|p| p.to_string_lossy().contains("compacted-"))
        .count()
}

#[test]
fn two_writers_maintaining_in_process_keep_every_record_once_and_the_table_bounded() {
    const RECORDS: u64 = 10_000;
    let broker = Broker::start();
    broker.create_topic("events", 8);
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8 path");
    // The table first, so that it can merge manifests from 10 (Iceberg's default is 100).
    rounds(&broker, w, 0, 1, 100);
    common::set_events_property(w, "commit.manifest.min-count-to-merge", "10");
    // Batches of 10 fetched one at a time, each held 30 ms by shard 0: the writers last many
    // commit intervals however fast the machine (a lower bound by construction).
    let rest = (RECORDS - 100).to_string();
    broker.loadgen(
        "events",
        &["--records", &rest, "--first-seq", "100", "--batch", "10"],
    );
    let mut children = Vec::new();
    for parts in ["0-3", "4-7"] {
        let mut args = base_args(&broker.addr, "events", w);
        args.extend(["--partitions", parts, "--commit-interval", "100ms"]);
        args.extend(["--fetch-max-bytes", "1KiB", "--debug-slow-shard", "0:30ms"]);
        args.extend(["--commit-retry-base", "10ms", "--commit-retries", "50"]);
        args.extend(["--maintain-interval", "1s", "--expire-older-than", "0s"]);
        args.extend(["--retain-last", "3", "--target-file-size", "4MiB"]);
        args.push("--stop-at-end");
        children.push(common::spawn_icefall_logged(&args));
    }
    let (mut commits, mut passes, mut skipped) = (0, Vec::new(), 0);
    for (child, log) in children {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let log = log.lock().expect("log").clone();
        assert!(out.status.success(), "{stdout}{log}");
        commits += common::stdout_field(&stdout, "commits");
        passes.push(log.matches("maintained expired_snapshots=").count());
        skipped += log.matches("pass skipped").count();
    }
    assert!(commits >= 40, "the writers made {commits} commits");
    // The first to take the lease keeps it while it runs: the other only skips.
    assert!(
        passes.iter().filter(|p| **p > 0).count() == 1,
        "in-process passes per writer {passes:?} ({skipped} skipped)"
    );
    let view = table_view(wh.path(), "ns.events");
    eprintln!(
        "{commits} commits, {passes:?} passes ({skipped} skipped): {} snapshots, {} files left",
        view.snapshots,
        view.files.len()
    );
    // Fewer snapshots and files than commits: the passes expired and compacted while the
    // writers went (how many depends on the machine's speed; BENCHMARKS.md bounds 2,000).
    assert!(
        view.snapshots < commits as usize,
        "{} snapshots after {commits} commits",
        view.snapshots
    );
    assert!(
        view.files.len() < commits as usize,
        "{} files after {commits} commits",
        view.files.len()
    );
    assert_eq!(pyiceberg(w), (RECORDS, RECORDS, 0));
    // A restart reads nothing twice.
    let mut run = base_args(&broker.addr, "events", w);
    run.push("--stop-at-end");
    let out = icefall(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(common::stdout_field(&stdout, "records"), 0, "{stdout}");
}

#[test]
fn racing_maintainers_commit_one_compaction_and_the_loser_abandons_its_output() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8 path");
    rounds(&broker, w, 0, 5, 1_000);
    let files = table_view(wh.path(), "ns.events").files.len() as u64;
    assert!(files >= 5);

    // A plans, uploads its compacted file and holds the lease while it waits to swap.
    let a = spawn_maintain(
        w,
        &["--no-merge-manifests", "--debug-pause-before-swap", "4s"],
    );
    let mut a = a;
    let log = common::collect_stderr(&mut a);
    common::wait_for_log(&log, "pausing before the swap", 1, Duration::from_secs(60));
    // B respects the lease: nothing done.
    let (line, stderr) = finish(spawn_maintain(w, &["--no-merge-manifests"]));
    assert_eq!(field(&line, "compacted_files"), 0, "{line}");
    assert!(stderr.contains("holds the lease"), "{stderr}");
    // C is forced past it and compacts the same files first.
    let (line, _) = finish(spawn_maintain(
        w,
        &["--no-merge-manifests", "--ignore-lease"],
    ));
    assert_eq!(field(&line, "compacted_files"), files, "{line}");
    assert_eq!(field(&line, "into_files"), 1, "{line}");
    // A loses the swap, finds its inputs gone and abandons its output.
    let out = a.wait_with_output().expect("wait");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let a_log = log.lock().expect("log").clone();
    assert!(out.status.success(), "{line}{a_log}");
    assert_eq!(field(&line, "compacted_files"), 0, "{line}{a_log}");
    assert!(a_log.contains("bins abandoned"), "{a_log}");
    assert_eq!(
        compacted_on_disk(wh.path()),
        1,
        "the loser's output is deleted"
    );
    assert_eq!(table_view(wh.path(), "ns.events").files.len(), 1);
    assert_eq!(pyiceberg(w), (5_000, 5_000, 0));
}

#[test]
fn sigkill_at_any_moment_of_maintenance_loses_no_row_and_no_referenced_file() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8 path");
    let per = 1_000;
    let mut total = 0;
    // Kills after fixed spreads of delays (no clock guesswork: any moment is a valid one).
    for (i, delay_ms) in [0u64, 30, 80, 150, 250, 400].into_iter().enumerate() {
        rounds(&broker, w, total, 3, per);
        total += 3 * per;
        let mut m = spawn_maintain(w, &["--ignore-lease"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        m.kill().expect("SIGKILL");
        let _ = m.wait();
        assert_eq!(
            pyiceberg(w),
            (total, total, 0),
            "after kill {i} at {delay_ms} ms"
        );
    }
    // Killed while its upload is done and its swap not: the output is an orphan, never read.
    rounds(&broker, w, total, 3, per);
    total += 3 * per;
    let mut m = spawn_maintain(w, &["--debug-pause-before-swap", "30s", "--ignore-lease"]);
    let log = common::collect_stderr(&mut m);
    common::wait_for_log(&log, "pausing before the swap", 1, Duration::from_secs(60));
    m.kill().expect("SIGKILL");
    let _ = m.wait();
    assert_eq!(pyiceberg(w), (total, total, 0));
    // Maintenance and ingestion again.
    let (line, _) = finish(spawn_maintain(
        w,
        &["--orphans", "--orphans-older-than", "0s"],
    ));
    assert!(field(&line, "orphans") >= 1, "{line}");
    rounds(&broker, w, total, 1, per);
    total += per;
    finish(spawn_maintain(w, &[]));
    assert_eq!(pyiceberg(w), (total, total, 0));
    let (_, rows) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 100,
        ..Default::default()
    };
    assert_eq!(common::verify_sample(&rows, &shape, total) as u64, total);
    let mut run = base_args(&broker.addr, "events", w);
    run.push("--stop-at-end");
    let out = icefall(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(common::stdout_field(&stdout, "records"), 0, "{stdout}");
}
