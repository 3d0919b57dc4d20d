//! Per-core counters, merged on read.
//!
//! Each role owns its own plain (non-atomic) counters and hands them back when it ends; the app
//! merges them into a run summary. No counter is shared between cores, so the hot path never
//! touches a contended cache line. Knows nothing of Kafka, executors or storage.

use std::collections::BTreeMap;

/// What one fetch core did.
#[derive(Debug, Default, Clone)]
pub struct FetchStats {
    pub records: u64,
    pub payload_bytes: u64,
    /// Per partition: records routed.
    pub per_partition: BTreeMap<i32, u64>,
}

/// What one shard core did.
#[derive(Debug, Default, Clone)]
pub struct ShardStats {
    pub rows: u64,
    /// Per shard id: rows written.
    pub per_shard: BTreeMap<u32, u64>,
}

/// What the io core did.
#[derive(Debug, Default, Clone)]
pub struct IoStats {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
    pub commits: u64,
    pub commit_attempts: u64,
    /// Commit latency in microseconds.
    pub commit_latency_us: Option<hdrhistogram::Histogram<u64>>,
    /// This writer's partitions and their offsets as last committed.
    pub committed: crate::record::Offsets,
}

/// The merged view of a run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub payload_bytes: u64,
    pub files: u64,
    pub file_bytes: u64,
    pub rows_written: u64,
    pub commits: u64,
    pub commit_attempts: u64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub seconds: f64,
    pub per_partition: BTreeMap<i32, u64>,
    pub per_shard: BTreeMap<u32, u64>,
}

impl RunSummary {
    pub fn merge(fetch: &[FetchStats], shards: &[ShardStats], io: &IoStats, seconds: f64) -> Self {
        let mut s = RunSummary {
            seconds,
            files: io.files,
            file_bytes: io.bytes,
            commits: io.commits,
            commit_attempts: io.commit_attempts,
            ..Default::default()
        };
        if let Some(h) = io.commit_latency_us.as_ref().filter(|h| !h.is_empty()) {
            s.commit_p50_ms = h.value_at_quantile(0.5) as f64 / 1_000.0;
            s.commit_p99_ms = h.value_at_quantile(0.99) as f64 / 1_000.0;
        }
        for f in fetch {
            s.records += f.records;
            s.payload_bytes += f.payload_bytes;
            for (p, n) in &f.per_partition {
                *s.per_partition.entry(*p).or_default() += n;
            }
        }
        for sh in shards {
            s.rows_written += sh.rows;
            for (id, n) in &sh.per_shard {
                *s.per_shard.entry(*id).or_default() += n;
            }
        }
        s
    }

    /// The least and most loaded shard, as (shard, rows): a hot key or partition shows here.
    pub fn skew(&self) -> Option<((u32, u64), (u32, u64))> {
        let coldest = self.per_shard.iter().min_by_key(|(_, n)| **n)?;
        let hottest = self.per_shard.iter().max_by_key(|(_, n)| **n)?;
        Some(((*coldest.0, *coldest.1), (*hottest.0, *hottest.1)))
    }

    pub fn records_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// One line, `key=value` pairs, stable for scripts.
    pub fn line(&self) -> String {
        format!(
            "summary records={} files={} bytes={} payload_bytes={} commits={} commit_attempts={} commit_p50_ms={:.1} commit_p99_ms={:.1} seconds={:.3} records_per_sec={:.0}",
            self.records,
            self.files,
            self.file_bytes,
            self.payload_bytes,
            self.commits,
            self.commit_attempts,
            self.commit_p50_ms,
            self.commit_p99_ms,
            self.seconds,
            self.records_per_sec()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_per_core_counters() {
        let mut a = FetchStats {
            records: 3,
            ..Default::default()
        };
        a.per_partition.insert(0, 3);
        let mut b = FetchStats {
            records: 2,
            ..Default::default()
        };
        b.per_partition.insert(0, 1);
        b.per_partition.insert(1, 1);
        let io = IoStats {
            files: 2,
            bytes: 100,
            rows: 5,
            ..Default::default()
        };
        let s = RunSummary::merge(&[a, b], &[], &io, 2.0);
        assert_eq!(s.records, 5);
        assert_eq!(s.per_partition[&0], 4);
        assert_eq!(s.records_per_sec(), 2.5);
        assert!(s.line().contains("records=5 files=2 bytes=100"));
        let mut sh = ShardStats::default();
        sh.per_shard.insert(3, 7);
        sh.per_shard.insert(1, 2);
        let s = RunSummary::merge(&[], &[sh], &io, 1.0);
        assert_eq!(s.skew(), Some(((1, 2), (3, 7))));
    }
}
