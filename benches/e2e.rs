//! End to end against a real broker, in one run: icefall (release) landing a topic in an Iceberg
//! table, the same client (icefall's own, `src/kafka/`) merely pulling the same records
//! (`icefall-loadgen --fetch`), and a Python consumer appending to Iceberg with PyIceberg
//! (`tools/pyiceberg_consumer.py`). Each runs as its own process, one after another, on the same
//! records in a Tansu broker (memory engine) on this machine; peak memory is each process's
//! maximum resident set (`wait4`). icefall runs three ways: default placement, all on one core,
//! and all on one core with its warehouse in `/dev/shm` (tmpfs, when there is one), which shows
//! what the disk's write path costs apart from icefall's own work. When Debian's `stunnel4` and
//! `openssl` are here (`tools/test` installs stunnel4), a second broker holding the same records
//! sits behind stunnel with certificates made for the run, and the raw fetch and icefall (default
//! placement) also run over TLS, interleaved with the plaintext runs.
//!
//! Rates are each tool's own: icefall's summary (planning, fetch, encode, upload and the final
//! commit), the raw fetch from its first request to its last response, the Python consumer from
//! its first poll to its last append. Wall time includes process start (Python's imports).
//!
//!     cargo bench --bench e2e [-- RECORDS ROUNDS]      (quick: 1,000,000 records, 3 rounds)
//!
//! The Python consumer needs `confluent-kafka`, `pyiceberg` and `pyarrow`: the bench uses
//! `$ICEFALL_PYTHON`, else `target/pyenv` (made by `tools/test`), installing what is missing
//! with pip; without them it says so and reports icefall and the raw fetch only.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::certs::{Certs, Terminator, free_port};
use common::{Broker, Measured, field, icefall_command, loadgen, measure, repo};

const PARTITIONS: u32 = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A Python with confluent-kafka, pyiceberg and pyarrow, or why there is none.
fn python() -> Result<PathBuf, String> {
    let py = std::env::var_os("ICEFALL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/pyenv/bin/python"));
    let has = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import confluent_kafka, pyiceberg, pyarrow"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&py) {
        return Ok(py);
    }
    if !py.exists() {
        let venv = repo().join("target/pyenv");
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("python3 -m venv failed".into());
        }
    }
    let pip = py.with_file_name("pip");
    let installed = Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(["confluent-kafka", "pyiceberg[sql-sqlite,pyarrow]"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && has(&py) {
        Ok(py)
    } else {
        Err(format!(
            "{} lacks confluent-kafka/pyiceberg and pip could not install them",
            py.display()
        ))
    }
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The same records in a broker reached through stunnel: its TLS address, the client options
/// for it, and what must live while it is used.
struct TlsBroker {
    addr: String,
    options: Vec<String>,
    _terminator: Terminator,
    _broker: Broker,
    _certs: Certs,
}

impl TlsBroker {
    fn start(records: u64) -> Result<TlsBroker, String> {
        if !have("stunnel4", "-version") || !have("openssl", "version") {
            return Err("stunnel4 or openssl is missing (tools/test installs stunnel4)".into());
        }
        let certs = Certs::make();
        let port = free_port();
        let addr = format!("localhost:{port}");
        let broker = Broker::start_with("memory", &[("BROKER_ADVERTISE", &addr)]);
        let terminator = Terminator::start(&certs, port, &broker.addr, false);
        broker.create_topic("e2e", PARTITIONS);
        let options = vec![
            "--kafka-option".to_string(),
            "security.protocol=ssl".to_string(),
            "--kafka-option".to_string(),
            format!("ssl.ca.location={}", certs.path("ca.pem")),
        ];
        let mut args = vec!["--records".to_string(), records.to_string()];
        args.extend(["--keys".to_string(), "1000".to_string()]);
        args.extend(options.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loadgen(&addr, "e2e", &args);
        Ok(TlsBroker {
            addr,
            options,
            _terminator: terminator,
            _broker: broker,
            _certs: certs,
        })
    }
}

struct Row {
    round: usize,
    tool: &'static str,
    records: f64,
    rate: f64,
    wall_s: f64,
    peak_rss_mb: f64,
    /// CPU seconds (user + system) per million records.
    cpu_per_m: f64,
    /// The system part of `cpu_per_m`.
    sys_per_m: f64,
}

impl Row {
    /// `line` holds the tool's own `records=` and `records_per_sec=`.
    fn of(round: usize, tool: &'static str, m: &Measured, line: &str) -> Self {
        let records = field(line, "records");
        let millions = (records / 1e6).max(1e-9);
        Row {
            round,
            tool,
            records,
            rate: field(line, "records_per_sec"),
            wall_s: m.wall_s,
            peak_rss_mb: m.peak_rss_mb,
            cpu_per_m: m.cpu_s / millions,
            sys_per_m: m.sys_s / millions,
        }
    }
}

const RAW: &str = "raw fetch (icefall client)";
const RAW_TLS: &str = "raw fetch over TLS";
const ICEFALL: &str = "icefall (default placement)";
const ICEFALL_TLS: &str = "icefall (default placement) over TLS";

fn raw_fetch(addr: &str, options: &[String]) -> Measured {
    measure(
        Command::new(env!("CARGO_BIN_EXE_icefall-loadgen"))
            .args(["--brokers", addr, "--topic", "e2e", "--fetch"])
            .args(options),
    )
}

/// One icefall run to the end of the topic; `None` when a tmpfs warehouse is asked for and
/// there is no tmpfs.
fn run_icefall(
    addr: &str,
    cores: Option<&String>,
    in_memory: bool,
    shm: &Option<PathBuf>,
    options: &[String],
) -> Option<Measured> {
    let wh = match (in_memory, shm) {
        (true, Some(dir)) => tempfile::tempdir_in(dir).expect("warehouse"),
        (true, None) => return None,
        (false, _) => tempfile::tempdir().expect("warehouse"),
    };
    let mut cmd = icefall_command();
    cmd.args(["run", "--brokers", addr, "--topic", "e2e"])
        .args(["--warehouse", wh.path().to_str().expect("utf8")])
        .args(["--table", "ns.events", "--stop-at-end"])
        .args(options)
        .env("ICEFALL_LOG", "warn");
    if let Some(c) = cores {
        cmd.args(["--fetch-cores", c, "--shard-cores", c, "--io-core", c]);
    }
    Some(measure(&mut cmd))
}

fn summary(m: &Measured) -> &str {
    m.stdout
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or("")
}

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let full = std::env::var_os("ICEFALL_BENCH_FULL").is_some();
    let records = nums
        .first()
        .copied()
        .unwrap_or(if full { 5_000_000 } else { 1_000_000 });
    let rounds = nums.get(1).copied().unwrap_or(3) as usize;
    let online = icefall::runtime::online_cores().expect("cores");
    let one = online[online.len() - 1].to_string();

    let broker = Broker::start();
    broker.create_topic("e2e", PARTITIONS);
    let produced = measure(
        Command::new(env!("CARGO_BIN_EXE_icefall-loadgen"))
            .args(["--brokers", &broker.addr, "--topic", "e2e"])
            .args(["--records", &records.to_string(), "--keys", "1000"]),
    );
    println!(
        "e2e: {records} sample records (10-byte keys from 1,000, 100-byte values, 1-3 headers) in {PARTITIONS} partitions; online cores {online:?}"
    );
    println!("loadgen: {}", produced.stdout.trim());
    // The same run with its files in memory: what the disk's write path costs (buffered ext4
    // writes in a VM charge the writer ~1.6 ms of system time per MB here).
    let shm = Some(PathBuf::from("/dev/shm")).filter(|d| d.is_dir());
    let tls = TlsBroker::start(records);
    if let Err(why) = &tls {
        println!("TLS runs skipped: {why}");
    }
    let py = python();
    if let Err(why) = &py {
        println!("pyiceberg consumer skipped: {why}");
    }

    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=rounds {
        let raw = raw_fetch(&broker.addr, &[]);
        rows.push(Row::of(round, RAW, &raw, &raw.stdout));
        if let Ok(t) = &tls {
            let raw = raw_fetch(&t.addr, &t.options);
            rows.push(Row::of(round, RAW_TLS, &raw, &raw.stdout));
            let m = run_icefall(&t.addr, None, false, &shm, &t.options).expect("a warehouse");
            rows.push(Row::of(round, ICEFALL_TLS, &m, summary(&m)));
        }
        for (tool, cores, in_memory) in [
            (ICEFALL, None, false),
            ("icefall (one core)", Some(&one), false),
            ("icefall (one core, warehouse in tmpfs)", Some(&one), true),
        ] {
            let Some(m) = run_icefall(&broker.addr, cores, in_memory, &shm, &[]) else {
                continue;
            };
            assert_eq!(
                field(summary(&m), "records"),
                records as f64,
                "{}",
                m.stdout
            );
            rows.push(Row::of(round, tool, &m, summary(&m)));
        }
        // Python is slow: once in the quick profile.
        if let Ok(py) = &py
            && (round == 1 || full)
        {
            let wh = tempfile::tempdir().expect("warehouse");
            let m = measure(
                Command::new(py)
                    .arg(repo().join("tools/pyiceberg_consumer.py"))
                    .args(["--brokers", &broker.addr, "--topic", "e2e"])
                    .args(["--records", &records.to_string()])
                    .args(["--warehouse", wh.path().to_str().expect("utf8")]),
            );
            rows.push(Row::of(round, "Python + PyIceberg", &m, &m.stdout));
        }
    }

    println!(
        "| round | tool | records | records/s | wall s | peak RSS MB | CPU s per M records | of which system |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} |",
            r.round, r.tool, r.records, r.rate, r.wall_s, r.peak_rss_mb, r.cpu_per_m, r.sys_per_m
        );
    }
    let med = |tool: &str, of: fn(&Row) -> f64| {
        median(rows.iter().filter(|r| r.tool == tool).map(of).collect())
    };
    let rate = |tool: &str| med(tool, |r| r.rate);
    let mem = |tool: &str| med(tool, |r| r.peak_rss_mb);
    let cpu = |tool: &str| med(tool, |r| r.cpu_per_m);
    let sys = |tool: &str| med(tool, |r| r.sys_per_m);
    let raw = rate(RAW);
    let icefall = rate(ICEFALL);
    let one_core = rate("icefall (one core)");
    let python = rate("Python + PyIceberg");
    println!(
        "| median | records/s | ratio | peak RSS MB | CPU s per M records | of which system | CPU ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let raw_cpu = cpu(RAW);
    println!(
        "| {RAW} | {raw:.0} | 1.00 | {:.0} | {raw_cpu:.2} | {:.2} | 1.00 |",
        mem(RAW),
        sys(RAW)
    );
    for (tool, rate) in [
        (ICEFALL, icefall),
        ("icefall (one core)", one_core),
        (
            "icefall (one core, warehouse in tmpfs)",
            rate("icefall (one core, warehouse in tmpfs)"),
        ),
        ("Python + PyIceberg", python),
        (RAW_TLS, rate(RAW_TLS)),
        (ICEFALL_TLS, rate(ICEFALL_TLS)),
    ] {
        if rate.is_nan() {
            continue;
        }
        println!(
            "| {tool} | {rate:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} |",
            rate / raw,
            mem(tool),
            cpu(tool),
            sys(tool),
            cpu(tool) / raw_cpu
        );
    }
    println!(
        "icefall / raw fetch = {:.2} (goal >= 0.80); icefall / Python+PyIceberg = {:.1}x (goal >= 4x)",
        icefall / raw,
        icefall / python
    );
    if tls.is_ok() {
        println!(
            "over TLS: icefall {:.0} of plaintext's {icefall:.0} records/s ({:.2}), {:.2} of the TLS raw fetch; CPU s per M records {:.2} vs {:.2}",
            rate(ICEFALL_TLS),
            rate(ICEFALL_TLS) / icefall,
            rate(ICEFALL_TLS) / rate(RAW_TLS),
            cpu(ICEFALL_TLS),
            cpu(ICEFALL)
        );
    }
}
