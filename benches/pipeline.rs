//! The pipeline without a broker: an in-memory source (records cloned from sample templates, as
//! a Kafka client's decoding allocates them) → the router → the SPSC rings → shard cores (Arrow,
//! Parquet zstd 1) → the io core uploading to an in-memory object store and committing to an
//! Iceberg catalog (SQLite, temp file) every second. It is icefall's own `run`, with
//! `source::memory` in place of Kafka and `memory://` as the warehouse.
//!
//! Runs 1..N shard cores (N: the cores this process may use, minus the one that runs fetch and
//! io), every core running both a fetch and a shard role, and everything on one core. Each configuration runs in a child process (this binary,
//! re-executed), so its peak resident set is its own. Latency is each record's time from its
//! simulated fetch to the commit that made it visible (the runs' HdrHistograms).
//!
//!     cargo bench --bench pipeline [-- RECORDS]      (quick: 2,000,000 records)

#[path = "../tools/sample.rs"]
mod sample;

use std::process::{Command, Stdio};
use std::sync::Arc;

use clap::Parser;
use icefall::app::{self, Input};
use icefall::config::{Cli, Command as CliCommand};
use icefall::record::Record;
use icefall::runtime::{Control, online_cores};
use icefall::source::memory::MemoryInput;

/// The allocator the `icefall` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u32 = 8;
const CHILD: &str = "ICEFALL_PIPELINE_CHILD";

fn templates() -> Vec<Record> {
    let shape = sample::Shape::default();
    (0..65_536u64)
        .map(|i| Record {
            offset: 0,
            timestamp_ms: 0,
            shard: 0,
            key: shape.key(i),
            value: shape.value(i),
            headers: shape.headers(i).into_iter().collect(),
        })
        .collect()
}

fn cores_arg(cores: &[usize]) -> String {
    cores
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The child: one run, its summary line on stdout.
fn child(records: u64, fetch: &str, shard: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
    let cli = Cli::try_parse_from([
        "icefall",
        "run",
        "--brokers",
        "127.0.0.1:9",
        "--topic",
        "memory",
        "--warehouse",
        "memory://",
        "--catalog",
        &catalog,
        "--table",
        "bench.pipeline",
        "--fetch-cores",
        fetch,
        "--io-core",
        fetch.split(',').next().expect("a core"),
        "--shard-cores",
        shard,
        "--commit-interval",
        "1s",
    ])
    .expect("flags");
    let CliCommand::Run(args) = cli.command else {
        unreachable!("run")
    };
    let cfg = args.validate().expect("config");
    let input = MemoryInput {
        partitions: PARTITIONS,
        records_per_partition: records / u64::from(PARTITIONS),
        templates: Arc::new(templates()),
        per_fetch: 4_096,
    };
    let summary = app::run_with(cfg, Control::new(), Input::Memory(input)).expect("run");
    println!("{}", summary.line());
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let records = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(2_000_000);
    if let Ok(spec) = std::env::var(CHILD) {
        let (fetch, shard) = spec.split_once(';').expect("fetch;shard");
        child(records, fetch, shard);
        return;
    }
    let online = online_cores().expect("cores");
    let mut configs: Vec<(String, String, String)> = Vec::new();
    let first = online[0];
    for k in 1..online.len() {
        configs.push((
            format!("{k} shard core(s)"),
            first.to_string(),
            cores_arg(&online[1..=k]),
        ));
    }
    if online.len() > 1 {
        // Every core runs a fetch role and a shard role (io on the first).
        configs.push((
            format!("{} cores, fetch and shard on each", online.len()),
            cores_arg(&online),
            cores_arg(&online),
        ));
    }
    configs.push((
        "one core (fetch, shard, io)".into(),
        first.to_string(),
        first.to_string(),
    ));
    println!(
        "pipeline: {records} records in {PARTITIONS} in-memory partitions (sample shape: 10-byte keys from 1,000, 100-byte values, 1-3 headers); fetch and io on core {first}; online {online:?}"
    );
    println!(
        "| configuration | shard cores | records/s | per shard core | payload MB/s | latency p50 | latency p99 | peak RSS MB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("exe");
    for (name, fetch, shard) in configs {
        let started = std::time::Instant::now();
        // Reaped by wait4 below, which also gives its peak memory.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(&exe)
            .arg(records.to_string())
            .env(CHILD, format!("{fetch};{shard}"))
            .env("ICEFALL_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id() as libc::pid_t;
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stdout.expect("stdout"), &mut out);
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 reaps our own child and fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert!(
            rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{name}: failed ({status}) after {:?}: {out}",
            started.elapsed()
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("summary "))
            .unwrap_or("");
        assert_eq!(field(line, "records"), records as f64, "{out}");
        let rate = field(line, "records_per_sec");
        let shards = shard.split(',').count() as f64;
        println!(
            "| {name} | {shard} | {rate:.0} | {:.0} | {:.1} | {:.0} ms | {:.0} ms | {:.0} |",
            rate / shards,
            field(line, "payload_bytes") / field(line, "seconds") / 1e6,
            field(line, "latency_p50_ms"),
            field(line, "latency_p99_ms"),
            usage.ru_maxrss as f64 / 1024.0,
        );
    }
}
