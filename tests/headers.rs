//! Headers and wide topics against Tansu, cross-checked with clients icefall did not write:
//! confluent-kafka (librdkafka) produces records whose headers repeat a key and carry a null
//! value, and PyIceberg reads them back exactly as produced; a topic of 256 partitions lands
//! whole while each fetch core holds one connection per broker.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, base_args, icefall, repo};

#[test]
fn headers_from_librdkafka_land_exactly_as_produced_read_by_pyiceberg() {
    let python = common::python_with("confluent_kafka, pyiceberg");
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let script = repo().join("tests/kafka_headers.py");
    let script = script.to_str().unwrap();
    let out = common::python_stdout(
        &python,
        &[script, "produce", &broker.addr, "events", "3000"],
    );
    assert!(out.contains("produced records=3000"), "{out}");
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.push("--stop-at-end");
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "icefall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = common::python_stdout(&python, &[script, "check", w, "ns.events", "3000"]);
    assert!(stdout.contains("headers rows=3000 exact=yes"), "{stdout}");
}

#[test]
fn a_topic_of_256_partitions_lands_whole_over_one_connection_per_broker_per_fetch_core() {
    const N: u64 = 25_600;
    let broker = Broker::start();
    broker.create_topic("wide", 256);
    broker.produce("wide", N, 1_000);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "wide", wh.path().to_str().unwrap());
    args.extend(["--commit-interval", "1s", "--http-addr", "127.0.0.1:0"]);
    let (mut child, log) = common::spawn_icefall_logged(&args);
    let addr = common::logged_http_addr(&log);
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let (_, text) = common::http_get(&addr, "/metrics");
        if common::metric_sum(&text, "icefall_committed_offset") >= N as f64 {
            break text;
        }
        assert!(Instant::now() < deadline, "not everything was committed");
        std::thread::sleep(Duration::from_millis(200));
    };
    let per_core: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("icefall_kafka_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!per_core.is_empty(), "{metrics}");
    assert!(
        per_core.iter().all(|&c| c == 1.0),
        "one broker: one connection per fetch core, got {per_core:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let (_, files) = common::read_table(wh.path(), "ns.events");
    let shape = common::sample::Shape {
        keys: 1_000,
        ..Default::default()
    };
    assert_eq!(common::verify_sample(&files, &shape, N) as u64, N);
}
