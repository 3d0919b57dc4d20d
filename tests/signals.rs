//! SIGTERM and SIGINT stop fetching, flush everything already routed, make a final commit and
//! exit 0 within `--drain-timeout`: the final snapshot's offsets cover every record routed before
//! the signal, and its files hold exactly a prefix of every partition (no gap, no duplicate).

mod common;

use std::time::{Duration, Instant};

use common::{Broker, assert_prefixes, base_args, read_table, spawn_icefall, wait_for_files};

fn stop_mid_run(signal: i32, broker: &Broker) {
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend([
        "--file-max-bytes",
        "256KiB",
        "--batch-rows",
        "512",
        "--drain-timeout",
        "20s",
    ]);
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
        "took {:?} to stop: over the drain timeout",
        signalled.elapsed()
    );

    let stdout = String::from_utf8_lossy(&out.stdout);
    let routed: u64 = stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("records="))
        .expect("summary")
        .parse()
        .unwrap();
    let (view, files) = read_table(wh.path(), "ns.events");
    let offsets = icefall::offsets::decode_offsets(&view.summary["icefall.offsets.events"])
        .expect("the final snapshot holds the offsets");
    assert_eq!(
        offsets.values().sum::<i64>() as u64,
        routed,
        "the final snapshot's offsets cover every routed record: {offsets:?}"
    );
    let counts = assert_prefixes(&files);
    let rows: i64 = counts.values().sum();
    assert!(rows > 0, "nothing landed");
    assert_eq!(rows as u64, routed, "every routed record is flushed");
    // A partition whose first fetch had not come back before the signal is committed at
    // offset 0 and has no rows: compare the partitions that hold something.
    let held: std::collections::BTreeMap<i32, i64> =
        offsets.into_iter().filter(|&(_, next)| next > 0).collect();
    assert_eq!(
        counts, held,
        "committed offsets = rows in the table, per partition"
    );
}

#[test]
fn sigterm_and_sigint_flush_what_was_routed_and_exit_0() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 100_000, 300);
    stop_mid_run(libc::SIGTERM, &broker);
    stop_mid_run(libc::SIGINT, &broker);
}
