//! Overload: a producer faster than icefall, once with `--overload block` and once with `drop`.
//!
//! Starts a Tansu broker (memory engine) with `tools/broker` (through the integration tests'
//! harness), runs the release `icefall` binary in
//! follow mode on an empty topic, then produces `N` records at a fixed rate with `icefall-loadgen`
//! while icefall runs with a heavier sink (`--zstd-level`, one shard core) than the producer, so
//! the producer outruns it. When the committed offsets reach the end of the topic, icefall gets
//! SIGTERM and its summary line gives records routed, dropped, and the Kafka-timestamp-to-commit
//! latency percentiles of every committed record (an HdrHistogram fed per epoch by the shard
//! cores, settled at commit time by the io core).
//!
//!     cargo bench --bench overload [-- RECORDS RATE]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Broker, field, icefall_command, loadgen, wait_for_committed};

struct Outcome {
    produce_rate: f64,
    routed: f64,
    dropped: f64,
    seconds: f64,
    p50: f64,
    p99: f64,
}

fn run(broker: &Broker, mode: &str, records: u64, rate: u64) -> Outcome {
    let topic = format!("overload-{mode}");
    broker.create_topic(&topic, 4);
    let addr = broker.addr.as_str();
    let wh = tempfile::tempdir().expect("warehouse");
    let online = icefall::runtime::online_cores().expect("cores");
    let core = online[online.len() - 1].to_string();
    let mut child = icefall_command()
        .args(["run", "--brokers", addr, "--topic", &topic])
        .args(["--warehouse", wh.path().to_str().expect("utf8")])
        .args(["--table", "bench.overload", "--overload", mode])
        .args([
            "--fetch-cores",
            &core,
            "--shard-cores",
            &core,
            "--io-core",
            &core,
        ])
        .args(["--zstd-level", "12", "--commit-interval", "1s"])
        .args(["--queue-capacity", "20000", "--fetch-max-wait", "100ms"])
        .env("ICEFALL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn icefall");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let produced = loadgen(
        addr,
        &topic,
        &[
            "--records",
            &records.to_string(),
            "--rate",
            &rate.to_string(),
            "--keys",
            "10000",
            "--value-bytes",
            "200",
            "--batch",
            "500",
        ],
    );
    let total = records as i64;
    wait_for_committed(
        wh.path(),
        "bench.overload",
        &topic,
        total,
        Duration::from_secs(600),
    );
    let seconds = started.elapsed().as_secs_f64();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert!(
        child.wait().expect("wait").success(),
        "{mode}: icefall failed"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summary "))
        .expect("summary")
        .to_string();
    Outcome {
        produce_rate: field(&produced, "records_per_sec"),
        routed: field(&line, "records"),
        dropped: field(&line, "dropped"),
        seconds,
        p50: field(&line, "latency_p50_ms"),
        p99: field(&line, "latency_p99_ms"),
    }
}

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let records = nums.first().copied().unwrap_or(1_000_000);
    let rate = nums.get(1).copied().unwrap_or(100_000);
    let broker = Broker::start();
    println!(
        "overload: {records} records produced at {rate}/s into 4 partitions; icefall on one core, zstd 12, 1 s commits"
    );
    println!(
        "| mode | produced/s | routed | kept | dropped | drop rate | kept/s | latency p50 | latency p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in ["block", "drop"] {
        let o = run(&broker, mode, records, rate);
        let kept = o.routed - o.dropped;
        println!(
            "| {mode} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}% | {:.0} | {:.0} ms | {:.0} ms |",
            o.produce_rate,
            o.routed,
            kept,
            o.dropped,
            100.0 * o.dropped / o.routed.max(1.0),
            kept / o.seconds,
            o.p50,
            o.p99
        );
    }
}
