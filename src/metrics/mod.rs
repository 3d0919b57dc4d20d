//! Per-core counters, merged on read: the run summary, and the live view served over HTTP.
//!
//! Each role owns its own plain (non-atomic) counters and hands them back when it ends; the app
//! merges them into a run summary. While the run goes, each fetch core also publishes gauges it
//! alone writes ([`live`]), once per response, and the io core publishes its commit state once
//! per commit; `/metrics`, `/status`, `/ready` and the progress line merge them on read
//! ([`expose`], served by [`http`]). No counter is written by two cores, so the hot path never
//! touches a contended cache line. Knows nothing of Kafka, shards' encoding or storage.

pub mod expose;
pub mod group;
pub mod http;
pub mod live;

use std::collections::BTreeMap;

/// What one fetch core did.
#[derive(Debug, Default, Clone)]
pub struct FetchStats {
    pub records: u64,
    /// Per partition: records routed (kept or dropped).
    pub per_partition: BTreeMap<i32, u64>,
    pub dropped: u64,
    pub dropped_per_partition: BTreeMap<i32, u64>,
    pub dropped_per_shard: BTreeMap<u32, u64>,
    /// Per shard core: the most records seen waiting in this core's ring to it.
    pub max_queue_depth: Vec<usize>,
}

impl FetchStats {
    pub fn drop_record(&mut self, partition: i32, shard: u32) {
        self.dropped += 1;
        *self.dropped_per_partition.entry(partition).or_default() += 1;
        *self.dropped_per_shard.entry(shard).or_default() += 1;
    }

    pub fn queue_depth(&mut self, core: usize, depth: usize) {
        if self.max_queue_depth.len() <= core {
            self.max_queue_depth.resize(core + 1, 0);
        }
        self.max_queue_depth[core] = self.max_queue_depth[core].max(depth);
    }
}

/// Kafka timestamp → commit latency of one epoch's records on one shard core, sans the commit
/// time (unknown until the io role commits): values are `reference_ms - timestamp_ms`, so a
/// record's latency is `commit_ms - reference_ms + value`. Keeping the reference near the commit
/// time keeps the values small and the histogram's relative precision meaningful.
#[derive(Debug, Clone)]
pub struct EpochLatency {
    pub reference_ms: i64,
    pub ages_ms: hdrhistogram::Histogram<u64>,
    /// Records stamped after the reference (clock skew, or an epoch far longer than planned).
    pub late: u64,
}

/// Wall-clock milliseconds since the Unix epoch (Kafka timestamps' clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Most milliseconds a latency histogram tracks (a week); older records are clamped to it.
pub const MAX_LATENCY_MS: u64 = 7 * 24 * 3_600_000;

pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3).expect("valid histogram bounds")
}

impl EpochLatency {
    pub fn new(reference_ms: i64) -> Self {
        Self {
            reference_ms,
            ages_ms: latency_histogram(),
            late: 0,
        }
    }

    /// One timestamp (the reference [`Self::record_all`] is checked against).
    #[cfg(test)]
    pub fn record(&mut self, timestamp_ms: i64) {
        self.record_n(timestamp_ms, 1);
    }

    fn record_n(&mut self, timestamp_ms: i64, n: u64) {
        let age = self.reference_ms.saturating_sub(timestamp_ms);
        if age < 0 {
            self.late += n;
        }
        self.ages_ms
            .saturating_record_n(age.clamp(1, MAX_LATENCY_MS as i64) as u64, n);
    }

    /// Records every timestamp of `timestamps`; a run of equal ones (a producer's batch shares
    /// its millisecond) is one histogram update.
    pub fn record_all(&mut self, timestamps: impl Iterator<Item = i64>) {
        let mut run: Option<(i64, u64)> = None;
        for t in timestamps {
            run = match run {
                Some((last, n)) if last == t => Some((last, n + 1)),
                Some((last, n)) => {
                    self.record_n(last, n);
                    Some((t, 1))
                }
                None => Some((t, 1)),
            };
        }
        if let Some((last, n)) = run {
            self.record_n(last, n);
        }
    }

    /// Adds this epoch's records, committed at `commit_ms`, to a histogram of latencies (ms).
    pub fn settle(&self, commit_ms: i64, into: &mut hdrhistogram::Histogram<u64>) {
        let shift = commit_ms.saturating_sub(self.reference_ms);
        for v in self.ages_ms.iter_recorded() {
            let ms = (v.value_iterated_to() as i64).saturating_add(shift);
            let _ = into.record_n(
                ms.clamp(1, MAX_LATENCY_MS as i64) as u64,
                v.count_at_value(),
            );
        }
    }
}

/// What one shard core did.
#[derive(Debug, Default, Clone)]
pub struct ShardStats {
    pub rows: u64,
    /// Key, value and header bytes of the rows written.
    pub payload_bytes: u64,
    /// Per shard id: rows written.
    pub per_shard: BTreeMap<u32, u64>,
    /// Records set aside as undecodable (to the dead-letter table or topic).
    pub dead_letters: u64,
    /// Undecodable records an earlier run had already set aside: not written again.
    pub dead_letters_skipped: u64,
    /// Top-level JSON fields the table has no column for, ignored.
    pub unknown_fields: u64,
    /// Columns this core added to the table's schema (`--evolve`).
    pub columns_added: u64,
}

/// What the io core did.
#[derive(Debug, Default, Clone)]
pub struct IoStats {
    pub files: u64,
    /// Of `files`, those uploaded in parts while they were written (multipart uploads).
    pub streamed_files: u64,
    pub bytes: u64,
    pub rows: u64,
    /// Dead letters written (rows of the dead-letter table, or records produced to its topic).
    pub dead_letter_rows: u64,
    pub commits: u64,
    pub commit_attempts: u64,
    /// Commit latency in microseconds.
    pub commit_latency_us: Option<hdrhistogram::Histogram<u64>>,
    /// Kafka timestamp → commit, in milliseconds, of every committed record.
    pub record_latency_ms: Option<hdrhistogram::Histogram<u64>>,
    /// Records whose timestamp was after their epoch's latency reference (clock skew).
    pub late_timestamps: u64,
    /// Ranges in all drop ledgers committed.
    pub dropped_ranges: u64,
    /// This writer's partitions and their offsets as last committed.
    pub committed: crate::record::Offsets,
}

/// The merged view of a run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub payload_bytes: u64,
    pub files: u64,
    pub streamed_files: u64,
    pub file_bytes: u64,
    pub rows_written: u64,
    pub commits: u64,
    pub commit_attempts: u64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub seconds: f64,
    pub per_partition: BTreeMap<i32, u64>,
    pub per_shard: BTreeMap<u32, u64>,
    pub dropped: u64,
    pub dropped_per_partition: BTreeMap<i32, u64>,
    pub dropped_per_shard: BTreeMap<u32, u64>,
    /// Undecodable records set aside in this run, and those an earlier run had already set aside.
    pub dead_letters: u64,
    pub dead_letters_skipped: u64,
    pub unknown_fields: u64,
    pub columns_added: u64,
    /// Per shard core: the deepest any fetch core saw its ring (records).
    pub max_queue_depth: Vec<usize>,
}

impl RunSummary {
    pub fn merge(fetch: &[FetchStats], shards: &[ShardStats], io: &IoStats, seconds: f64) -> Self {
        let mut s = RunSummary {
            seconds,
            files: io.files,
            streamed_files: io.streamed_files,
            file_bytes: io.bytes,
            commits: io.commits,
            commit_attempts: io.commit_attempts,
            ..Default::default()
        };
        if let Some(h) = io.commit_latency_us.as_ref().filter(|h| !h.is_empty()) {
            s.commit_p50_ms = h.value_at_quantile(0.5) as f64 / 1_000.0;
            s.commit_p99_ms = h.value_at_quantile(0.99) as f64 / 1_000.0;
        }
        if let Some(h) = io.record_latency_ms.as_ref().filter(|h| !h.is_empty()) {
            s.latency_p50_ms = h.value_at_quantile(0.5) as f64;
            s.latency_p99_ms = h.value_at_quantile(0.99) as f64;
        }
        for f in fetch {
            s.records += f.records;
            s.dropped += f.dropped;
            add(&mut s.per_partition, &f.per_partition);
            add(&mut s.dropped_per_partition, &f.dropped_per_partition);
            add(&mut s.dropped_per_shard, &f.dropped_per_shard);
            deepest(&mut s.max_queue_depth, &f.max_queue_depth);
        }
        for sh in shards {
            s.rows_written += sh.rows;
            s.payload_bytes += sh.payload_bytes;
            s.dead_letters += sh.dead_letters;
            s.dead_letters_skipped += sh.dead_letters_skipped;
            s.unknown_fields += sh.unknown_fields;
            s.columns_added += sh.columns_added;
            add(&mut s.per_shard, &sh.per_shard);
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

    /// Adds a later run of the same process (a group member's next generation). Counts add up;
    /// percentiles keep the higher of the two (an upper bound, not a merged quantile).
    pub fn absorb(&mut self, o: &RunSummary) {
        let (a, b) = (self, o);
        a.records += b.records;
        a.payload_bytes += b.payload_bytes;
        a.files += b.files;
        a.streamed_files += b.streamed_files;
        a.file_bytes += b.file_bytes;
        a.rows_written += b.rows_written;
        a.commits += b.commits;
        a.commit_attempts += b.commit_attempts;
        a.commit_p50_ms = a.commit_p50_ms.max(b.commit_p50_ms);
        a.commit_p99_ms = a.commit_p99_ms.max(b.commit_p99_ms);
        a.latency_p50_ms = a.latency_p50_ms.max(b.latency_p50_ms);
        a.latency_p99_ms = a.latency_p99_ms.max(b.latency_p99_ms);
        add(&mut a.per_partition, &b.per_partition);
        add(&mut a.per_shard, &b.per_shard);
        a.dropped += b.dropped;
        add(&mut a.dropped_per_partition, &b.dropped_per_partition);
        add(&mut a.dropped_per_shard, &b.dropped_per_shard);
        a.dead_letters += b.dead_letters;
        a.dead_letters_skipped += b.dead_letters_skipped;
        a.unknown_fields += b.unknown_fields;
        a.columns_added += b.columns_added;
        deepest(&mut a.max_queue_depth, &b.max_queue_depth);
    }

    /// One line, `key=value` pairs, stable for scripts.
    pub fn line(&self) -> String {
        format!(
            "summary records={} dropped={} dead_letters={} dead_letters_skipped={} files={} bytes={} payload_bytes={} commits={} commit_attempts={} commit_p50_ms={:.1} commit_p99_ms={:.1} latency_p50_ms={:.0} latency_p99_ms={:.0} seconds={:.3} records_per_sec={:.0} unknown_fields={} columns_added={} streamed_files={}",
            self.records,
            self.dropped,
            self.dead_letters,
            self.dead_letters_skipped,
            self.files,
            self.file_bytes,
            self.payload_bytes,
            self.commits,
            self.commit_attempts,
            self.commit_p50_ms,
            self.commit_p99_ms,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.seconds,
            self.records_per_sec(),
            self.unknown_fields,
            self.columns_added,
            self.streamed_files,
        )
    }
}

/// Per shard core, the deeper of the two.
fn deepest(into: &mut Vec<usize>, from: &[usize]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (m, d) in into.iter_mut().zip(from) {
        *m = (*m).max(*d);
    }
}

fn add<K: Ord + Copy>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(*k).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_a_later_generation() {
        let mut a = RunSummary {
            records: 10,
            commits: 2,
            commit_p99_ms: 5.0,
            max_queue_depth: vec![3],
            ..Default::default()
        };
        a.per_partition.insert(0, 10);
        let mut b = RunSummary {
            records: 5,
            commits: 1,
            commit_p99_ms: 9.0,
            max_queue_depth: vec![1, 7],
            ..Default::default()
        };
        b.per_partition.insert(0, 2);
        b.per_partition.insert(1, 3);
        a.absorb(&b);
        assert_eq!((a.records, a.commits), (15, 3));
        assert_eq!(a.commit_p99_ms, 9.0);
        assert_eq!(a.max_queue_depth, vec![3, 7]);
        assert_eq!(a.per_partition, BTreeMap::from([(0, 12), (1, 3)]));
    }

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
        assert!(s.line().contains(
            "records=5 dropped=0 dead_letters=0 dead_letters_skipped=0 files=2 bytes=100"
        ));
        let mut sh = ShardStats::default();
        sh.per_shard.insert(3, 7);
        sh.per_shard.insert(1, 2);
        let s = RunSummary::merge(&[], &[sh], &io, 1.0);
        assert_eq!(s.skew(), Some(((1, 2), (3, 7))));
    }

    #[test]
    fn epoch_latency_is_settled_at_commit_time() {
        let mut e = EpochLatency::new(10_000);
        e.record(9_000); // 1 s before the reference
        e.record(9_900);
        e.record(10_050); // after it: late
        let mut h = latency_histogram();
        e.settle(10_500, &mut h); // committed 500 ms after the reference
        assert_eq!((h.len(), e.late), (3, 1));
        assert_eq!(h.max(), h.highest_equivalent(1_500));
        assert_eq!(
            h.min(),
            501,
            "a late record counts as stamped at the reference"
        );
        assert_eq!(h.value_at_quantile(0.5), h.highest_equivalent(600));
    }

    proptest::proptest! {
        /// Runs of equal timestamps recorded at once give the histogram one by one would.
        #[test]
        fn recording_runs_is_recording_each(ts in proptest::collection::vec(9_990i64..10_010, 0..200)) {
            let (mut each, mut runs) = (EpochLatency::new(10_000), EpochLatency::new(10_000));
            for t in &ts {
                each.record(*t);
            }
            runs.record_all(ts.iter().copied());
            proptest::prop_assert_eq!(&each.ages_ms, &runs.ages_ms);
            proptest::prop_assert_eq!(each.late, runs.late);
        }
    }
}
