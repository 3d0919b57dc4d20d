//! One Kafka fetch core: a fetch in flight per owned partition, each response handed to the
//! [`Emitter`] (routing, overload, barriers).
//!
//! Partitions are fetched concurrently and independently (a slow partition never stalls the
//! others). One fetch per partition is in flight at a time, so a partition's batches enter every
//! ring in offset order. The overload policy is fed each response's next offset and the high
//! watermark that response reports (never ListOffsets).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;

use super::emit::Emitter;
use super::{PartitionPlan, SourceConfig, SourceError};
use crate::metrics::FetchStats;
use crate::runtime::Control;

/// How often a fetch core looks at the stop flag while waiting for responses.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Everything one Kafka fetch core owns.
pub struct FetchCore {
    pub partitions: Vec<PartitionPlan>,
    pub emitter: Emitter,
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
        self.emitter.positions = self
            .partitions
            .iter()
            .map(|p| (p.partition, p.start))
            .collect();
        let stats = self.fetch(cfg, control).await?;
        self.emitter.finish().await?;
        Ok(stats)
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
            self.emitter.finished(p.partition);
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
        while !in_flight.is_empty() {
            if control.should_stop() {
                break;
            }
            self.emitter.catch_up_epochs().await?;
            let next = tokio::select! {
                n = in_flight.next() => n,
                _ = self.emitter.clock.past(self.emitter.epoch) => continue,
                _ = stop_poll.tick() => continue,
            };
            let Some((idx, result)) = next else {
                break;
            };
            let (mut records, high_watermark) = result?;
            let o = &owned[idx];
            let partition = o.plan.partition;
            let mut position = self
                .emitter
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
            self.emitter
                .emit(partition, records, position, &mut stats)
                .await?;
            if o.plan.is_done(position) {
                self.emitter.finished(partition);
            } else {
                in_flight.push(fetch_one(cfg.clone(), idx, o.client.clone(), position));
                self.emitter.observe(partition, position, high_watermark);
            }
        }
        Ok(stats)
    }
}
