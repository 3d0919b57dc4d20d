//! The live state as Prometheus text (`/metrics`), as JSON (`/status`) and as a progress line.
//! Pure functions of a [`Live`]: no IO, unit-tested on their output.

use std::fmt::Write;

use super::live::{Live, PartitionView};

/// `le` bounds of the commit duration histogram, seconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// `le` bounds of the record latency histogram, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

pub(super) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Prometheus histogram from an HdrHistogram whose values are in `unit` seconds.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    h: &hdrhistogram::Histogram<u64>,
    unit: f64,
    bounds: &[f64],
) {
    header(out, name, "histogram", help);
    let mut counts = vec![0u64; bounds.len()];
    let mut sum = 0.0;
    for v in h.iter_recorded() {
        let secs = h.highest_equivalent(v.value_iterated_to()) as f64 * unit;
        let n = v.count_at_value();
        sum += secs * n as f64;
        if let Some(i) = bounds.iter().position(|b| secs <= *b) {
            counts[i] += n;
        }
    }
    let mut cumulative = 0;
    for (b, n) in bounds.iter().zip(&counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", h.len());
}

/// The Prometheus text exposition of `live`.
pub fn prometheus(live: &Live) -> String {
    let mut out = String::with_capacity(4096);
    let topic = escape(&live.topic);
    let parts = live.partitions();
    let per_partition = |out: &mut String,
                         name: &str,
                         kind: &str,
                         help: &str,
                         f: &dyn Fn(&PartitionView) -> Option<i64>| {
        header(out, name, kind, help);
        for p in &parts {
            if let Some(v) = f(p) {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{topic}\",partition=\"{}\"}} {v}",
                    p.partition
                );
            }
        }
    };
    per_partition(
        &mut out,
        "icefall_records_total",
        "counter",
        "Records read from Kafka (kept or dropped).",
        &|p| Some(p.records as i64),
    );
    per_partition(
        &mut out,
        "icefall_dropped_total",
        "counter",
        "Records dropped at the live tail (each named in the drop ledger).",
        &|p| Some(p.dropped as i64),
    );
    per_partition(
        &mut out,
        "icefall_committed_offset",
        "gauge",
        "Next offset the table's last snapshot holds.",
        &|p| p.committed,
    );
    per_partition(
        &mut out,
        "icefall_position",
        "gauge",
        "Next offset to be routed.",
        &|p| Some(p.position),
    );
    per_partition(
        &mut out,
        "icefall_high_watermark",
        "gauge",
        "High watermark from the last Fetch response.",
        &|p| p.high_watermark,
    );
    per_partition(
        &mut out,
        "icefall_partition_lag",
        "gauge",
        "High watermark minus committed offset.",
        &PartitionView::lag,
    );
    header(
        &mut out,
        "icefall_queue_depth",
        "gauge",
        "Records waiting in the rings to a shard core (label shard: the shard core's index).",
    );
    for (i, d) in live.queue_depths().iter().enumerate() {
        let cpu = live.shard_cores.get(i).map_or(0, |c| c.0);
        let _ = writeln!(
            out,
            "icefall_queue_depth{{shard=\"{i}\",cpu=\"{cpu}\"}} {d}"
        );
    }
    header(
        &mut out,
        "icefall_kafka_connections",
        "gauge",
        "Connections a fetch core's Kafka client holds to brokers (fetches in flight included).",
    );
    for f in &live.fetch {
        let _ = writeln!(
            out,
            "icefall_kafka_connections{{fetch_core=\"{}\",cpu=\"{}\"}} {}",
            f.index,
            f.cpu,
            f.connections.get()
        );
    }
    header(
        &mut out,
        "icefall_overload_dropping",
        "gauge",
        "1 while a fetch core drops records bound for full rings (live tail), 0 while it blocks.",
    );
    for f in &live.fetch {
        let d = f.dropping.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "icefall_overload_dropping{{fetch_core=\"{}\",cpu=\"{}\"}} {}",
            f.index, f.cpu, d as u8
        );
    }
    header(
        &mut out,
        "icefall_ready",
        "gauge",
        "1 when every partition is within the live threshold.",
    );
    let _ = writeln!(
        out,
        "icefall_ready {}",
        live.readiness(&parts).is_ok() as u8
    );
    header(
        &mut out,
        "icefall_uptime_seconds",
        "gauge",
        "Seconds since the run started.",
    );
    let _ = writeln!(
        out,
        "icefall_uptime_seconds {:.3}",
        live.started.elapsed().as_secs_f64()
    );
    let io = live.io();
    header(
        &mut out,
        "icefall_commits_total",
        "counter",
        "Iceberg snapshots committed.",
    );
    let _ = writeln!(out, "icefall_commits_total {}", io.commits());
    header(
        &mut out,
        "icefall_dead_letters_total",
        "counter",
        "Records that could not be decoded, committed to the dead-letter table.",
    );
    let _ = writeln!(out, "icefall_dead_letters_total {}", io.dead_letters);
    header(
        &mut out,
        "icefall_unknown_fields_total",
        "counter",
        "Top-level JSON fields the table has no column for, ignored (--evolve adds them).",
    );
    let unknown: i64 = live.unknown_fields.iter().map(|g| g.get()).sum();
    let _ = writeln!(out, "icefall_unknown_fields_total {unknown}");
    maintenance(&mut out, &io.maintenance);
    histogram(
        &mut out,
        "icefall_commit_duration_seconds",
        "Iceberg commit duration (retries included).",
        &io.commit_us,
        1e-6,
        COMMIT_BUCKETS,
    );
    histogram(
        &mut out,
        "icefall_record_latency_seconds",
        "Kafka timestamp to the commit that made the record visible.",
        &io.latency_ms,
        1e-3,
        LATENCY_BUCKETS,
    );
    out
}

/// The counters of `run --maintain-interval`'s passes.
fn maintenance(out: &mut String, m: &super::live::MaintenanceLive) {
    let series: [(&str, &str, String); 9] = [
        (
            "passes",
            "Maintenance passes completed.",
            m.passes.to_string(),
        ),
        (
            "failures",
            "Maintenance passes that failed (the next one tries again).",
            m.failed.to_string(),
        ),
        (
            "skipped",
            "Passes skipped: another maintainer held the table's lease.",
            m.skipped.to_string(),
        ),
        (
            "expired_snapshots",
            "Snapshots expired.",
            m.expired_snapshots.to_string(),
        ),
        (
            "deleted_files",
            "Files deleted (unreachable after expiry, old metadata).",
            m.deleted_files.to_string(),
        ),
        (
            "deleted_bytes",
            "Bytes of the deleted files.",
            m.deleted_bytes.to_string(),
        ),
        (
            "compacted_files",
            "Small data files rewritten by compaction.",
            m.compacted_files.to_string(),
        ),
        (
            "compaction_outputs",
            "Data files compaction wrote.",
            m.into_files.to_string(),
        ),
        (
            "seconds",
            "Time spent in maintenance passes.",
            format!("{:.3}", m.seconds),
        ),
    ];
    for (name, help, value) in series {
        let name = format!("icefall_maintenance_{name}_total");
        header(out, &name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// `/status`: where every partition and shard runs and where it stands.
pub fn status(live: &Live) -> serde_json::Value {
    use serde_json::json;
    let depths = live.queue_depths();
    let parts = live.partitions();
    let ready = live.readiness(&parts).is_ok();
    let partitions: Vec<_> = parts
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "fetch_core": p.fetch_core,
                "fetch_cpu": live.fetch.get(p.fetch_core).map(|f| f.cpu),
                "position": p.position,
                "high_watermark": p.high_watermark,
                "committed_offset": p.committed,
                "lag": p.lag(),
                "records": p.records,
                "dropped": p.dropped,
                "overload_mode": if p.dropping { "drop" } else { "block" },
                "done": p.done,
            })
        })
        .collect();
    let shards: Vec<_> = live
        .shard_cores
        .iter()
        .enumerate()
        .map(|(i, (cpu, shards))| {
            json!({"shard_core": i, "cpu": cpu, "shards": shards, "queue_depth": depths.get(i)})
        })
        .collect();
    // Last: reading the partitions above locks the io state too.
    let io = live.io();
    json!({
        "topic": live.topic,
        "table": live.table,
        "overload": live.overload,
        "live_threshold": live.live_threshold,
        "uptime_seconds": live.started.elapsed().as_secs_f64(),
        "ready": ready,
        "partitions": partitions,
        "shard_cores": shards,
        "io": {"cpu": live.io_cpu, "commits": io.commits(), "last_commit_ms": io.last_commit_ms},
        "maintenance": {
            "passes": io.maintenance.passes,
            "failures": io.maintenance.failed,
            "skipped": io.maintenance.skipped,
            "compacted_files": io.maintenance.compacted_files,
            "expired_snapshots": io.maintenance.expired_snapshots,
            "last_pass_ms": io.maintenance.last_pass_ms,
        },
    })
}

/// Totals for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub records: u64,
    pub dropped: u64,
    pub lag: i64,
    pub commits: u64,
    pub last_commit_ms: Option<i64>,
}

pub fn totals(live: &Live) -> Totals {
    let mut t = Totals::default();
    for p in live.partitions() {
        t.records += p.records;
        t.dropped += p.dropped;
        t.lag += p.lag().unwrap_or(0);
    }
    let io = live.io();
    t.commits = io.commits();
    t.last_commit_ms = io.last_commit_ms;
    t
}

/// `records=… records_per_sec=… lag=… dropped=… commits=… last_commit_s_ago=…`
pub fn progress_line(now: Totals, before: Totals, seconds: f64, now_ms: i64) -> String {
    let rate = if seconds > 0.0 {
        (now.records - before.records.min(now.records)) as f64 / seconds
    } else {
        0.0
    };
    let ago = now.last_commit_ms.map_or("never".to_string(), |t| {
        format!("{:.1}s", (now_ms - t).max(0) as f64 / 1000.0)
    });
    format!(
        "records={} records_per_sec={rate:.0} lag={} dropped={} commits={} last_commit={ago} ago",
        now.records, now.lag, now.dropped, now.commits
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::live::FetchLive;
    use crossbeam_utils::CachePadded;
    use std::sync::Arc;
    use std::time::Instant;

    fn live() -> Live {
        let f = FetchLive::new(0, 3, &[(0, 0), (1, 0)], 1);
        f.partition(0).unwrap().records.add(10);
        f.partition(0).unwrap().high_watermark.set(10);
        f.partition(0).unwrap().position.set(10);
        f.queue_depth[0].set(4);
        Live {
            topic: "events".into(),
            table: "ns.t".into(),
            overload: "auto".into(),
            live_threshold: 100,
            started: Instant::now(),
            fetch: vec![Arc::new(CachePadded::new(f))],
            shard_cores: vec![(1, vec![0, 1])],
            unknown_fields: Live::per_shard_core(1),
            io_cpu: 0,
            io: Live::new_io([(0, 0), (1, 0)].into_iter().collect()),
        }
    }

    #[test]
    fn prometheus_text_has_the_named_series() {
        let l = live();
        l.committed(&[(0, 6)].into_iter().collect(), 2_000, &[], 3, 0);
        l.unknown_fields[0].set(12);
        let t = prometheus(&l);
        for line in [
            "icefall_records_total{topic=\"events\",partition=\"0\"} 10",
            "icefall_committed_offset{topic=\"events\",partition=\"0\"} 6",
            "icefall_partition_lag{topic=\"events\",partition=\"0\"} 4",
            "icefall_queue_depth{shard=\"0\",cpu=\"1\"} 4",
            "icefall_commit_duration_seconds_bucket{le=\"0.0025\"} 1",
            "icefall_commit_duration_seconds_bucket{le=\"0.001\"} 0",
            "icefall_commit_duration_seconds_count 1",
            "icefall_record_latency_seconds_count 0",
            "icefall_ready 0",
            "icefall_dead_letters_total 3",
            "icefall_unknown_fields_total 12",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in\n{t}");
        }
        assert!(
            !t.contains("icefall_partition_lag{topic=\"events\",partition=\"1\"}"),
            "no lag before a high watermark is known"
        );
    }

    #[test]
    fn status_names_cores_and_positions() {
        let s = status(&live());
        assert_eq!(s["partitions"][0]["fetch_cpu"], 3);
        assert_eq!(s["partitions"][0]["high_watermark"], 10);
        assert_eq!(
            s["partitions"][1]["high_watermark"],
            serde_json::Value::Null
        );
        assert_eq!(s["shard_cores"][0]["shards"], serde_json::json!([0, 1]));
        assert_eq!(s["ready"], false);
    }

    #[test]
    fn progress_line_reports_rate_lag_and_last_commit() {
        let before = Totals::default();
        let now = Totals {
            records: 500,
            lag: 7,
            commits: 2,
            last_commit_ms: Some(1_000),
            ..Default::default()
        };
        let line = progress_line(now, before, 2.0, 3_500);
        assert_eq!(
            line,
            "records=500 records_per_sec=250 lag=7 dropped=0 commits=2 last_commit=2.5s ago"
        );
    }
}
