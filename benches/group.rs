//! Consumer groups against a real broker (Tansu, memory engine, on this machine), each icefall a
//! process of its own:
//!
//! - failover: two members share a 12-partition topic while records are produced; one (a
//!   follower: Tansu 0.6 never replaces an expired leader) is SIGKILLed, or SIGTERMed (it commits
//!   and leaves); the time from the signal until the other's `/status` shows every one of those
//!   partitions fetched again. After a SIGKILL that is the session timeout (given below) plus the
//!   rejoin; after a SIGTERM, the rejoin alone.
//! - rate: the same records landed by one `--group` member alone, and by two started together,
//!   each with `--stop-at-end`; wall time from the start until every process has exited (its
//!   last epoch committed and the group left).
//!
//!     cargo bench --bench group [-- ROUNDS RECORDS]      (quick: 5 rounds, 2,000,000 records)

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, http_get, logged_http_addr, wait_for_committed};

const PARTITIONS: i32 = 12;
const SESSION: &str = "6s";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Member {
    child: Child,
    log: Arc<Mutex<String>>,
}

fn member(broker: &str, warehouse: &str, group: &str, extra: &[&str]) -> Member {
    let mut args = vec![
        "--brokers",
        broker,
        "--topic",
        "events",
        "--warehouse",
        warehouse,
        "--table",
        "ns.events",
        "--group",
        group,
        "--session-timeout",
        SESSION,
        "--heartbeat-interval",
        "300ms",
        "--commit-interval",
        "1s",
        "--progress-interval",
        "0s",
    ];
    args.extend(extra);
    let (child, log) = common::spawn_icefall_logged(&args);
    Member { child, log }
}

/// The member's newest holding: (generation, partitions, leader).
fn holding(m: &Member) -> Option<(i32, Vec<i32>, bool)> {
    let log = m.log.lock().expect("log").clone();
    let line = log
        .lines()
        .rfind(|l| l.contains(": holding partitions ["))?;
    let rest = &line[line.find("generation ")? + "generation ".len()..];
    let (generation, rest) = rest.split_once(": holding partitions [")?;
    let parts = rest
        .split_once(']')?
        .0
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    Some((
        generation.parse().ok()?,
        parts,
        line.contains("leader=true"),
    ))
}

/// Waits until the members' newest holdings are one generation covering every partition.
fn settle(members: &[&Member]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h: Vec<_> = members.iter().map(|m| holding(m)).collect();
        let gens: BTreeSet<_> = h.iter().map(|x| x.as_ref().map(|x| x.0)).collect();
        let covered: usize = h.iter().flatten().map(|x| x.1.len()).sum();
        if gens.len() == 1 && !gens.contains(&None) && covered == PARTITIONS as usize {
            return;
        }
        assert!(Instant::now() < deadline, "no settled generation: {h:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `/status` shows records fetched for every partition in `parts`.
fn fetching(addr: &str, parts: &[i32]) -> bool {
    let (code, body) = http_get(addr, "/status");
    if code != 200 {
        return false;
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(rows) = v["partitions"].as_array() else {
        return false;
    };
    parts.iter().all(|p| {
        rows.iter()
            .any(|r| r["partition"] == *p && r["records"].as_u64().is_some_and(|n| n > 0))
    })
}

/// One failover: seconds from `signal` on a follower until the other fetches its partitions.
fn failover(broker: &Broker, round: usize, signal: &str) -> f64 {
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8");
    let group = format!("failover-{signal}-{round}");
    let mut producer = Command::new(env!("CARGO_BIN_EXE_icefall-loadgen"))
        .args(["--brokers", &broker.addr, "--topic", "events"])
        .args(["--records", "60000", "--rate", "2000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("loadgen");
    let first = member(&broker.addr, w, &group, &[]);
    settle(&[&first]);
    let second = member(&broker.addr, w, &group, &[]);
    settle(&[&first, &second]);
    let (mut victim, other) = match holding(&second).is_some_and(|h| !h.2) {
        true => (second, first),
        false => (first, second),
    };
    let lost = holding(&victim).expect("victim holds").1;
    let addr = logged_http_addr(&other.log);
    std::thread::sleep(Duration::from_millis(500));
    let at = Instant::now();
    Command::new("kill")
        .args([signal, &victim.child.id().to_string()])
        .status()
        .expect("kill");
    while !fetching(&addr, &lost) {
        assert!(at.elapsed() < Duration::from_secs(120), "never refetched");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = at.elapsed().as_secs_f64();
    let _ = victim.child.wait();
    let mut other = other;
    let _ = other.child.kill();
    let _ = other.child.wait();
    let _ = producer.kill();
    let _ = producer.wait();
    took
}

/// Seconds for `members` processes in one group to land every record and exit.
fn land(broker: &Broker, members: usize, records: u64, round: usize) -> f64 {
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8");
    let group = format!("rate-{members}-{round}");
    let at = Instant::now();
    let mut running: Vec<Member> = (0..members)
        .map(|_| member(&broker.addr, w, &group, &["--stop-at-end"]))
        .collect();
    for m in &mut running {
        let status = m.child.wait().expect("wait");
        assert!(status.success(), "{}", m.log.lock().expect("log"));
    }
    let took = at.elapsed().as_secs_f64();
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        records as i64,
        Duration::from_secs(5),
    );
    took
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let records: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);

    let broker = Broker::start();
    broker.create_topic("events", PARTITIONS as u32);
    println!("failover, {rounds} rounds, session timeout {SESSION}, heartbeat 300ms:");
    for signal in ["-KILL", "-TERM"] {
        let times: Vec<f64> = (0..rounds).map(|r| failover(&broker, r, signal)).collect();
        println!(
            "  SIG{} of a member -> its partitions fetched again: p50 {:.2} s (runs: {:?})",
            &signal[1..],
            median(times.clone()),
            times
                .iter()
                .map(|t| (t * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
    }

    let bulk = Broker::start();
    bulk.create_topic("events", PARTITIONS as u32);
    bulk.produce("events", records, 1_000);
    println!("rate, {records} records in {PARTITIONS} partitions, --stop-at-end, {rounds} rounds:");
    for members in [1, 2] {
        let times: Vec<f64> = (0..rounds)
            .map(|r| land(&bulk, members, records, r))
            .collect();
        let p50 = median(times.clone());
        println!(
            "  {members} process(es) in one group: p50 {p50:.2} s, {:.0} records/s (runs: {:?})",
            records as f64 / p50,
            times
                .iter()
                .map(|t| (t * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
    }
}
