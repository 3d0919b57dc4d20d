//! Two icefall processes on disjoint partitions of one topic commit concurrently to the same table
//! and catalog: both progress, no commit is lost (every record is in the table once), and the
//! newest snapshot carries the offsets of all partitions; two on the same partitions: one is
//! fenced, none duplicates.

mod common;

use std::collections::BTreeMap;

use common::{Broker, base_args, read_table, sample, spawn_icefall, verify_sample};

const RECORDS: u64 = 200_000;

fn field(stdout: &str, name: &str) -> u64 {
    stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

#[test]
fn disjoint_writers_share_a_table_without_losing_commits() {
    let broker = Broker::start();
    broker.create_topic("events", 8);
    broker.produce("events", RECORDS, 1_000);
    let wh = tempfile::tempdir().unwrap();
    let w = wh.path().to_str().unwrap();
    let mut children = Vec::new();
    for parts in ["0-3", "4-7"] {
        let mut args = base_args(&broker.addr, "events", w);
        // Small fetches spread the work over many epochs, so the writers' commits interleave; a
        // 50 ms pause before each batch makes a writer last many commit intervals however
        // fast the machine (a lower bound by construction, not a guess at its speed).
        args.extend([
            "--partitions",
            parts,
            "--commit-interval",
            "100ms",
            "--fetch-max-bytes",
            "32KiB",
            "--debug-slow-shard",
            "0:50ms",
        ]);
        args.extend([
            "--commit-retry-base",
            "10ms",
            "--commit-retries",
            "50",
            "--stop-at-end",
        ]);
        children.push(spawn_icefall(&args));
    }
    let mut commits = 0;
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "writer {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (c, attempts) = (field(&stdout, "commits"), field(&stdout, "commit_attempts"));
        assert!(c > 0, "writer {i} committed nothing");
        if attempts > c {
            // Retried failures are logged with their cause.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr
                .lines()
                .find(|l| l.contains("commit failed; retrying"))
                .expect("a retry log line");
            assert!(
                line.contains("conflict") && line.contains("error="),
                "{line}"
            );
        }
        eprintln!(
            "writer {i}: {c} commits in {attempts} attempts ({} conflicts retried)",
            attempts - c
        );
        commits += c;
    }

    let (view, files) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 1_000,
        ..Default::default()
    };
    assert_eq!(verify_sample(&files, &shape, RECORDS) as u64, RECORDS);
    assert_eq!(
        view.snapshots as u64, commits,
        "one snapshot per commit, none lost"
    );
    assert!(commits >= 6, "expected interleaved commits, got {commits}");
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for r in files.iter().flat_map(|(_, rows)| rows) {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    let offsets =
        icefall::offsets::decode_offsets(&view.summary["icefall.offsets.events"]).unwrap();
    assert_eq!(
        offsets.len(),
        8,
        "newest snapshot carries every partition: {offsets:?}"
    );
    assert_eq!(offsets, per_partition);
}

/// Two writers on the same partitions (a misconfiguration, or a member that lost its partitions
/// and does not know it yet): the first to commit wins, the other's commit is fenced (exit 8,
/// naming the partition and both offsets), and the table holds every record once.
#[test]
fn overlapping_writers_are_fenced_and_never_duplicate() {
    const N: u64 = 20_000;
    let broker = Broker::start();
    broker.create_topic("events", 8);
    broker.produce("events", N, 1_000);
    let wh = tempfile::tempdir().unwrap();
    let w = wh.path().to_str().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut args = base_args(&broker.addr, "events", w);
            args.extend(["--commit-interval", "100ms", "--fetch-max-bytes", "32KiB"]);
            args.extend([
                "--debug-slow-shard",
                "0:20ms",
                "--commit-retry-base",
                "10ms",
            ]);
            args.extend(["--commit-retries", "50", "--stop-at-end"]);
            spawn_icefall(&args)
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
    let fenced: Vec<_> = outs.iter().filter(|o| o.status.code() == Some(8)).collect();
    let done: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert!(
        fenced.len() == 1 && done.len() == 1,
        "exit codes {codes:?}: {}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let stderr = String::from_utf8_lossy(&fenced[0].stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("another writer moved its partitions"))
        .unwrap_or_else(|| panic!("no fencing line in:\n{stderr}"));
    assert!(
        line.contains("is at") && line.contains("partition") && line.contains("not committed"),
        "{line}"
    );

    let (view, files) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 1_000,
        ..Default::default()
    };
    assert_eq!(
        verify_sample(&files, &shape, N) as u64,
        N,
        "every record once"
    );
    let offsets =
        icefall::offsets::decode_offsets(&view.summary["icefall.offsets.events"]).unwrap();
    assert_eq!(offsets.values().sum::<i64>(), N as i64);
}
