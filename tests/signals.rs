//! SIGTERM and SIGINT stop fetching, flush everything already routed, and exit 0: the files hold
//! exactly a prefix of every partition (no gap, no duplicate) and as many rows as were routed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Broker, base_args, read_warehouse, spawn_icefall, wait_for_files};

fn stop_mid_run(signal: i32, broker: &Broker) {
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--file-max-bytes", "256KiB", "--batch-rows", "512"]);
    // Without --stop-at-end icefall runs until told to stop; signal once data is flowing.
    let mut child = spawn_icefall(&args);
    let data = wh.path().join("ns/events/data");
    wait_for_files(&mut child, &data, 1);
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let signalled = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "signal {signal}: exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "took {:?} to stop",
        signalled.elapsed()
    );

    let stdout = String::from_utf8_lossy(&out.stdout);
    let routed: u64 = stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("records="))
        .expect("summary")
        .parse()
        .unwrap();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (_, rows) in read_warehouse(&data) {
        for r in rows {
            per_partition.entry(r.partition).or_default().push(r.offset);
        }
    }
    let rows: usize = per_partition.values().map(Vec::len).sum();
    assert!(rows > 0, "nothing landed");
    assert_eq!(rows as u64, routed, "every routed record is flushed");
    for (p, mut offs) in per_partition {
        offs.sort_unstable();
        let n = offs.len() as i64;
        assert_eq!(
            offs,
            (0..n).collect::<Vec<_>>(),
            "partition {p}: not a gap-free, duplicate-free prefix"
        );
    }
}

#[test]
fn sigterm_and_sigint_flush_what_was_routed_and_exit_0() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 100_000, 300);
    stop_mid_run(libc::SIGTERM, &broker);
    stop_mid_run(libc::SIGINT, &broker);
}
