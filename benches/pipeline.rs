//! The pipeline without a broker: an in-memory source (each simulated answer's records copied
//! from sample templates into one buffer, as a Fetch answer arrives) → the router → the SPSC rings → shard cores (Arrow,
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

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use common::{field, measure};
use icefall::app::{self, Input};
use icefall::config::{Cli, Command as CliCommand, CoreList};
use icefall::record::Record;
use icefall::runtime::{Control, online_cores};
use icefall::source::memory::MemoryInput;

const PARTITIONS: u32 = 8;
const CHILD: &str = "ICEFALL_PIPELINE_CHILD";

fn templates() -> Vec<Record> {
    (0..65_536u64).map(common::sample_record).collect()
}

fn cores_arg(cores: &[usize]) -> String {
    CoreList::new(cores.to_vec()).expect("cores").to_string()
}

/// The child: one run, its summary line on stdout.
fn child(records: u64, fetch: &str, shard: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
    let io = fetch
        .parse::<CoreList>()
        .expect("cores")
        .first()
        .to_string();
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
        &io,
        "--shard-cores",
        shard,
        "--commit-interval",
        "1s",
        "--http-addr",
        "off",
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

fn main() {
    icefall::runtime::tune_malloc();
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
        let m = measure(
            Command::new(&exe)
                .arg(records.to_string())
                .env(CHILD, format!("{fetch};{shard}"))
                .env("ICEFALL_LOG", "warn"),
        );
        let out = &m.stdout;
        let line = out
            .lines()
            .find(|l| l.starts_with("summary "))
            .unwrap_or("");
        assert_eq!(field(line, "records"), records as f64, "{out}");
        let rate = field(line, "records_per_sec");
        let shards = shard.parse::<CoreList>().expect("cores").len() as f64;
        println!(
            "| {name} | {shard} | {rate:.0} | {:.0} | {:.1} | {:.0} ms | {:.0} ms | {:.0} |",
            rate / shards,
            field(line, "payload_bytes") / field(line, "seconds") / 1e6,
            field(line, "latency_p50_ms"),
            field(line, "latency_p99_ms"),
            m.peak_rss_mb,
        );
    }
}
