//! One fetch core: a fetch in flight per owned partition, routing each response to shard cores.
//!
//! Partitions are fetched concurrently and independently (a slow partition never stalls the
//! others). A response is routed as a whole: its records are split by shard core into batches,
//! preserving offset order, and each batch is pushed to that core's ring. One fetch per partition
//! is in flight at a time, so a partition's batches enter every ring in offset order.
//!
//! Overload: while the policy ([`Overload`]) blocks, a push waits for room. While it drops, a
//! batch that does not fit is cut where the ring is full: the head goes in, the rest is dropped,
//! counted per partition and shard and named in the drop ledger that the next barrier carries, so
//! the snapshot that moves the offsets past a dropped record also names it. Kept records remain a
//! subsequence in offset order, so per-key order holds. Barriers are never dropped.
//!
//! Checkpoints: whenever the epoch clock has moved past this core's epoch, the core puts a
//! barrier for each new epoch into every ring, after everything it routed so far, carrying the
//! next offset of every partition it owns. When it stops (end reached, or a stop signal) it sends
//! a last barrier, so what it routed is committed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;

use super::{PartitionPlan, SourceConfig, SourceError};
use crate::metrics::FetchStats;
use crate::offsets::Ranges;
use crate::record::{Barrier, Batch, Offsets, Progress, Record, ToShard};
use crate::routing::Router;
use crate::routing::overload::{Overload, Switch};
use crate::runtime::Control;
use crate::runtime::bridge::{Sender, TrySendError};
use crate::sink::upload::EpochClock;

/// How often a fetch core looks at the stop flag while waiting for responses.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Everything one fetch core owns.
pub struct FetchCore {
    pub index: usize,
    pub partitions: Vec<PartitionPlan>,
    pub router: Router,
    /// One ring per shard core, indexed like the shard core list.
    pub rings: Vec<Sender<ToShard>>,
    pub clock: Arc<EpochClock>,
    /// The last epoch this core sent a barrier for.
    pub epoch: u64,
    /// Next offset of every owned partition (advances as records are routed, kept or dropped).
    pub positions: Offsets,
    pub overload: Overload,
    /// Dropped since the last barrier.
    pub dropped: Ranges,
}

struct Owned {
    plan: PartitionPlan,
    client: Arc<PartitionClient>,
}

type Fetched = (usize, Result<(Vec<RecordAndOffset>, i64), SourceError>);

async fn fetch_one(
    cfg: Arc<SourceConfig>,
    idx: usize,
    client: Arc<PartitionClient>,
    offset: i64,
) -> Fetched {
    let max_wait_ms = cfg.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32;
    let fut = client.fetch_records(offset, 1..cfg.fetch_max_bytes, max_wait_ms);
    let r = cfg
        .bounded("fetching", client.partition(), offset, fut)
        .await;
    (idx, r)
}

impl FetchCore {
    /// Fetches and routes until every partition reaches its stop offset, or a stop is requested,
    /// then sends the last barrier. The rings stay open; dropping `self` closes them.
    pub async fn run(
        &mut self,
        cfg: &Arc<SourceConfig>,
        control: &Control,
    ) -> Result<FetchStats, SourceError> {
        self.positions = self
            .partitions
            .iter()
            .map(|p| (p.partition, p.start))
            .collect();
        let stats = self.fetch(cfg, control).await?;
        self.epoch += 1;
        self.clock.at_least(self.epoch);
        self.barrier(true).await?;
        Ok(stats)
    }

    /// Sends a barrier for every epoch the clock has requested and this core has not sent.
    async fn catch_up_epochs(&mut self) -> Result<(), SourceError> {
        while self.epoch < self.clock.requested() {
            self.epoch += 1;
            self.barrier(false).await?;
        }
        Ok(())
    }

    async fn barrier(&mut self, last: bool) -> Result<(), SourceError> {
        let progress = Arc::new(Progress {
            next_offsets: self.positions.clone(),
            dropped: std::mem::take(&mut self.dropped),
        });
        for core in 0..self.rings.len() {
            let b = Barrier {
                epoch: self.epoch,
                fetch_core: self.index,
                progress: progress.clone(),
                last,
            };
            self.push(core, ToShard::Barrier(b)).await?;
        }
        Ok(())
    }

    /// Puts a message into shard core `core`'s ring, waiting while it is full.
    async fn push(&self, core: usize, msg: ToShard) -> Result<(), SourceError> {
        self.rings[core]
            .send(msg)
            .await
            .map_err(|_| SourceError::ShardGone {
                fetch_core: self.index,
                shard_core: core,
            })
    }

    /// Drop mode: puts what fits of `batch` into the ring and drops the rest.
    fn offer(
        &mut self,
        core: usize,
        mut batch: Batch,
        stats: &mut FetchStats,
    ) -> Result<(), SourceError> {
        let ring = &self.rings[core];
        let rest = batch
            .records
            .split_off(ring.room().min(batch.records.len()));
        let partition = batch.partition;
        // An empty batch would weigh nothing and take a barrier's reserved slot: skip it.
        let refused = if batch.records.is_empty() {
            Vec::new()
        } else {
            match ring.try_send(ToShard::Records(batch)) {
                Ok(()) => Vec::new(),
                // Room by weight, but every slot taken.
                Err(TrySendError::Full(ToShard::Records(b))) => b.records,
                Err(_) => {
                    return Err(SourceError::ShardGone {
                        fetch_core: self.index,
                        shard_core: core,
                    });
                }
            }
        };
        for r in refused.iter().chain(&rest) {
            self.dropped.push(partition, r.offset);
            stats.drop_record(partition, r.shard);
        }
        Ok(())
    }

    fn log_switch(&self, s: Switch) {
        let depths: Vec<usize> = self.rings.iter().map(Sender::weight).collect();
        let now = if s.dropping {
            "caught up; records bound for a full ring are now dropped and named in the ledger"
        } else {
            "backfilling; waiting for room in full rings"
        };
        tracing::info!(
            fetch_core = self.index, partition = s.partition, lag = s.lag, queue_depths = ?depths,
            "overload: {now}"
        );
    }

    async fn fetch(
        &mut self,
        cfg: &Arc<SourceConfig>,
        control: &Control,
    ) -> Result<FetchStats, SourceError> {
        let mut stats = FetchStats::default();
        let (pending, done): (Vec<PartitionPlan>, Vec<PartitionPlan>) =
            self.partitions.iter().partition(|p| !p.is_done(p.start));
        for p in done {
            // Ends the policy's wait for it; with nothing left to read nothing can be dropped.
            let _ = self.overload.finished(p.partition);
        }
        if pending.is_empty() {
            return Ok(stats);
        }
        let client = cfg.connect().await?;
        let mut owned = Vec::with_capacity(pending.len());
        for plan in pending {
            let pc = cfg.partition_client(&client, plan.partition).await?;
            owned.push(Owned {
                plan,
                client: Arc::new(pc),
            });
        }
        let mut in_flight = FuturesUnordered::new();
        for (i, o) in owned.iter().enumerate() {
            in_flight.push(fetch_one(cfg.clone(), i, o.client.clone(), o.plan.start));
        }
        let mut stop_poll = tokio::time::interval(STOP_POLL);
        stop_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut per_core: Vec<Vec<Record>> = (0..self.rings.len()).map(|_| Vec::new()).collect();
        while !in_flight.is_empty() {
            if control.should_stop() {
                break;
            }
            self.catch_up_epochs().await?;
            let next = tokio::select! {
                n = in_flight.next() => n,
                _ = stop_poll.tick() => continue,
            };
            let Some((idx, result)) = next else {
                break;
            };
            let (mut records, high_watermark) = result?;
            let o = &owned[idx];
            let partition = o.plan.partition;
            let mut position = self
                .positions
                .get(&partition)
                .copied()
                .unwrap_or(o.plan.start);
            let mut reached_stop = false;
            if let Some(stop) = o.plan.stop_at {
                // Stop exactly at the watermark taken at start: the same input, the same output.
                let keep = records.partition_point(|r| r.offset < stop);
                reached_stop = keep < records.len();
                records.truncate(keep);
            }
            if let Some(last) = records.last() {
                position = last.offset + 1;
            }
            if reached_stop && let Some(stop) = o.plan.stop_at {
                // Offsets up to the stop that were not returned do not exist (compaction).
                position = position.max(stop);
            }
            self.positions.insert(partition, position);
            let n = records.len() as u64;
            stats.records += n;
            *stats.per_partition.entry(partition).or_default() += n;
            stats.payload_bytes += route(&self.router, partition, records, &mut per_core) as u64;
            for (core, recs) in per_core.iter_mut().enumerate() {
                if recs.is_empty() {
                    continue;
                }
                let batch = Batch {
                    partition,
                    records: std::mem::take(recs),
                };
                if self.overload.dropping() {
                    self.offer(core, batch, &mut stats)?;
                } else {
                    self.push(core, ToShard::Records(batch)).await?;
                }
                stats.queue_depth(core, self.rings[core].weight());
            }
            let switch = if o.plan.is_done(position) {
                self.overload.finished(partition)
            } else {
                in_flight.push(fetch_one(cfg.clone(), idx, o.client.clone(), position));
                self.overload.observe(partition, position, high_watermark)
            };
            if let Some(s) = switch {
                self.log_switch(s);
            }
        }
        Ok(stats)
    }
}

/// Splits one partition's fetched records by shard core, keeping offset order within each core.
/// Returns the payload bytes routed.
pub fn route(
    router: &Router,
    partition: i32,
    records: Vec<RecordAndOffset>,
    per_core: &mut [Vec<Record>],
) -> usize {
    let hint = records.len() / per_core.len().max(1) + 1;
    for v in per_core.iter_mut() {
        v.reserve(hint);
    }
    let mut bytes = 0;
    for ro in records {
        let shard = router.shard_of(ro.record.key.as_deref(), partition);
        let rec = super::to_record(ro, shard);
        bytes += rec.payload_bytes();
        per_core[router.core_of(shard)].push(rec);
    }
    bytes
}
