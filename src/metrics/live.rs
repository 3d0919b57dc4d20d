//! Live state for `/metrics`, `/status`, `/ready` and the progress line, read while the run goes.
//!
//! Each fetch core owns one [`FetchLive`] and is its only writer: it stores its counters and
//! gauges once per fetch response or batch (never per record) with plain loads and stores, so
//! no cache line is written by two cores and no read-modify-write sits on the hot path. The io
//! core updates [`IoLive`] under a mutex once per commit. Readers merge on read.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::{EpochLatency, latency_histogram};
use crate::record::Offsets;

/// A counter with one writer: `add` is a load and a store, not an atomic read-modify-write.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v + n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge with one writer.
#[derive(Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new(v: i64) -> Self {
        Self(AtomicI64::new(v))
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One partition, as its fetch core sees it.
#[derive(Debug)]
pub struct PartitionLive {
    pub partition: i32,
    /// Records routed (kept or dropped).
    pub records: Count,
    pub dropped: Count,
    /// Next offset to route.
    pub position: Gauge,
    /// From the last Fetch response; -1 until one arrived.
    pub high_watermark: Gauge,
    /// Reached its `--stop-at-end` offset.
    pub done: AtomicBool,
}

/// What one fetch core publishes.
#[derive(Debug)]
pub struct FetchLive {
    pub index: usize,
    /// The CPU it runs on.
    pub cpu: usize,
    /// Sorted by partition.
    pub partitions: Vec<PartitionLive>,
    /// Records waiting in this core's ring to each shard core, as of its last push.
    pub queue_depth: Vec<Gauge>,
    /// The overload policy drops (live tail) rather than blocks.
    pub dropping: AtomicBool,
    /// Connections its Kafka client holds to brokers (one per broker it fetches from).
    pub connections: Gauge,
}

impl FetchLive {
    pub fn new(index: usize, cpu: usize, starts: &[(i32, i64)], shard_cores: usize) -> Self {
        let mut partitions: Vec<PartitionLive> = starts
            .iter()
            .map(|&(partition, start)| PartitionLive {
                partition,
                records: Count::default(),
                dropped: Count::default(),
                position: Gauge::new(start),
                high_watermark: Gauge::new(-1),
                done: AtomicBool::new(false),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Self {
            index,
            cpu,
            partitions,
            queue_depth: (0..shard_cores).map(|_| Gauge::new(0)).collect(),
            dropping: AtomicBool::new(false),
            connections: Gauge::new(0),
        }
    }

    pub fn partition(&self, p: i32) -> Option<&PartitionLive> {
        self.partitions
            .binary_search_by_key(&p, |x| x.partition)
            .ok()
            .map(|i| &self.partitions[i])
    }
}

/// What the io core publishes, once per commit.
#[derive(Debug)]
pub struct IoLive {
    /// Commit duration, microseconds.
    pub commit_us: hdrhistogram::Histogram<u64>,
    /// Kafka timestamp → commit, milliseconds, of every committed record.
    pub latency_ms: hdrhistogram::Histogram<u64>,
    /// Offsets in the table (the resumed checkpoint or the start until the first commit).
    pub committed: Offsets,
    pub last_commit_ms: Option<i64>,
    /// Undecodable records committed to the dead-letter table.
    pub dead_letters: u64,
    /// `run --maintain-interval`: what the in-process passes did.
    pub maintenance: MaintenanceLive,
}

/// Totals of the in-process maintenance passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenanceLive {
    pub passes: u64,
    pub failed: u64,
    /// Passes left to another maintainer that held the table's lease.
    pub skipped: u64,
    pub expired_snapshots: u64,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    pub compacted_files: u64,
    pub into_files: u64,
    pub seconds: f64,
    pub last_pass_ms: Option<i64>,
}

impl IoLive {
    pub fn commits(&self) -> u64 {
        self.commit_us.len()
    }
}

/// Everything a reader of the live state can see.
#[derive(Debug)]
pub struct Live {
    pub topic: String,
    pub table: String,
    pub overload: String,
    pub live_threshold: u64,
    pub started: Instant,
    pub fetch: Vec<std::sync::Arc<CachePadded<FetchLive>>>,
    /// CPU of each shard core, and the shards it hosts.
    pub shard_cores: Vec<(usize, Vec<u32>)>,
    /// Per shard core (its only writer): top-level JSON fields the table has no column for,
    /// ignored so far.
    pub unknown_fields: Vec<CachePadded<Gauge>>,
    pub io_cpu: usize,
    pub io: Mutex<IoLive>,
}

/// One partition, merged from its fetch core and the io core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub fetch_core: usize,
    pub records: u64,
    pub dropped: u64,
    pub position: i64,
    pub high_watermark: Option<i64>,
    pub committed: Option<i64>,
    pub done: bool,
    pub dropping: bool,
}

impl PartitionView {
    /// High watermark minus committed offset, once both are known.
    pub fn lag(&self) -> Option<i64> {
        Some((self.high_watermark? - self.committed?).max(0))
    }
}

impl Live {
    pub fn new_io(committed: Offsets) -> Mutex<IoLive> {
        Mutex::new(IoLive {
            commit_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            latency_ms: latency_histogram(),
            committed,
            last_commit_ms: None,
            dead_letters: 0,
            maintenance: MaintenanceLive::default(),
        })
    }

    /// One zeroed gauge per shard core.
    pub fn per_shard_core(n: usize) -> Vec<CachePadded<Gauge>> {
        (0..n).map(|_| CachePadded::new(Gauge::new(0))).collect()
    }

    /// Locks the io state; a panicked holder left it usable (it only holds counters).
    pub fn io(&self) -> std::sync::MutexGuard<'_, IoLive> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every partition, sorted.
    pub fn partitions(&self) -> Vec<PartitionView> {
        let committed = self.io().committed.clone();
        let mut out = Vec::new();
        for f in &self.fetch {
            let dropping = f.dropping.load(Ordering::Relaxed);
            for p in &f.partitions {
                let hw = p.high_watermark.get();
                out.push(PartitionView {
                    partition: p.partition,
                    fetch_core: f.index,
                    records: p.records.get(),
                    dropped: p.dropped.get(),
                    position: p.position.get(),
                    high_watermark: (hw >= 0).then_some(hw),
                    committed: committed.get(&p.partition).copied(),
                    done: p.done.load(Ordering::Relaxed),
                    dropping,
                });
            }
        }
        out.sort_by_key(|p| p.partition);
        out
    }

    /// Ready: every owned partition has been fetched up to within the live threshold of its
    /// high watermark (or is done). `Err` names the first one that is not.
    pub fn ready(&self) -> Result<(), String> {
        self.readiness(&self.partitions())
    }

    /// [`Live::ready`] of partitions already read.
    pub fn readiness(&self, parts: &[PartitionView]) -> Result<(), String> {
        for p in parts {
            if p.done {
                continue;
            }
            match p.high_watermark {
                None => return Err(format!("partition {}: not fetched yet", p.partition)),
                Some(hw) if hw - p.position > self.live_threshold as i64 => {
                    return Err(format!(
                        "partition {}: {} records behind the high watermark (threshold {})",
                        p.partition,
                        hw - p.position,
                        self.live_threshold
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Records waiting in the rings to each shard core, summed over fetch cores.
    pub fn queue_depths(&self) -> Vec<i64> {
        let mut d = vec![0; self.shard_cores.len()];
        for f in &self.fetch {
            for (i, g) in f.queue_depth.iter().enumerate() {
                if let Some(x) = d.get_mut(i) {
                    *x += g.get();
                }
            }
        }
        d
    }

    /// Called by the io core after each commit: the commit's duration, and the latency of every
    /// record it made visible.
    pub fn committed(
        &self,
        offsets: &Offsets,
        commit_us: u64,
        sketches: &[Box<EpochLatency>],
        dead_letters: u64,
        now_ms: i64,
    ) {
        let mut io = self.io();
        io.dead_letters += dead_letters;
        let _ = io.commit_us.record(commit_us.max(1));
        for s in sketches {
            s.settle(now_ms, &mut io.latency_ms);
        }
        for (p, o) in offsets {
            io.committed.insert(*p, *o);
        }
        io.last_commit_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn live(threshold: u64) -> Live {
        let f = FetchLive::new(0, 0, &[(1, 0), (0, 5)], 2);
        Live {
            topic: "t".into(),
            table: "ns.t".into(),
            overload: "auto".into(),
            live_threshold: threshold,
            started: Instant::now(),
            fetch: vec![Arc::new(CachePadded::new(f))],
            shard_cores: vec![(1, vec![0]), (2, vec![1])],
            unknown_fields: Live::per_shard_core(2),
            io_cpu: 0,
            io: Live::new_io([(0, 5), (1, 0)].into_iter().collect()),
        }
    }

    #[test]
    fn ready_once_every_partition_is_within_the_threshold() {
        let l = live(10);
        assert!(l.ready().unwrap_err().contains("not fetched yet"));
        let f = &l.fetch[0];
        f.partition(0).unwrap().high_watermark.set(100);
        f.partition(1).unwrap().high_watermark.set(5);
        f.partition(0).unwrap().position.set(80);
        f.partition(1).unwrap().position.set(5);
        assert!(
            l.ready()
                .unwrap_err()
                .contains("partition 0: 20 records behind")
        );
        f.partition(0).unwrap().position.set(90);
        assert_eq!(l.ready(), Ok(()));
        f.partition(0).unwrap().records.add(85);
        f.partition(0).unwrap().records.add(5);
        let views = l.partitions();
        assert_eq!(views[0].records, 90);
        assert_eq!(
            views[0].lag(),
            Some(95),
            "high watermark 100 minus committed 5"
        );
        l.committed(&[(0, 100)].into_iter().collect(), 1500, &[], 0, 7);
        assert_eq!(l.partitions()[0].lag(), Some(0));
        assert_eq!(l.io().commits(), 1);
        assert_eq!(l.io().last_commit_ms, Some(7));
    }

    #[test]
    fn queue_depths_sum_over_fetch_cores() {
        let l = live(10);
        l.fetch[0].queue_depth[1].set(7);
        assert_eq!(l.queue_depths(), vec![0, 7]);
    }
}
