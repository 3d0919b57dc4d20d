//! What every fetch core does with records once it has them, whatever they came from: route them
//! to shard cores, apply the overload policy, and put checkpoint barriers into every ring.
//!
//! A response is routed as a whole: its records are split by shard core into batches, keeping
//! offset order, and each batch is pushed to that core's ring. While the policy ([`Overload`])
//! blocks, a push waits for room. While it drops, a batch that does not fit is cut where the ring
//! is full: the head goes in, the rest is dropped, counted per partition and shard and named in
//! the drop ledger that the next barrier carries, so the snapshot that moves the offsets past a
//! dropped record also names it. Kept records remain a subsequence in offset order, so per-key
//! order holds. Barriers are never dropped.
//!
//! Checkpoints: whenever the epoch clock has moved past this core's epoch, the core puts a
//! barrier for each new epoch into every ring, after everything it routed so far, carrying the
//! next offset of every partition it owns. When it stops it sends a last barrier, so what it
//! routed is committed.

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::SourceError;
use crate::metrics::FetchStats;
use crate::metrics::live::FetchLive;
use crate::offsets::Ranges;
use bytes::Bytes;

use crate::record::{Barrier, Batch, HeaderView, Offsets, Progress, RecordView, Span, ToShard};
use crate::routing::Router;
use crate::routing::overload::{Overload, Switch};
use crate::runtime::bridge::{Sender, TrySendError};
use crate::sink::upload::EpochClock;

/// One partition's fetched records, from whichever source: views into `buf`, in offset order.
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    pub buf: &'a Bytes,
    pub records: &'a [RecordView],
    pub headers: &'a [HeaderView],
}

impl<'a> Fetched<'a> {
    pub fn of_batch(b: &'a Batch) -> Self {
        Self {
            buf: &b.buf,
            records: &b.records,
            headers: &b.headers,
        }
    }
}

/// Per shard core, the views of the answer being routed.
#[derive(Debug, Default)]
pub struct PerCore {
    records: Vec<RecordView>,
    headers: Vec<HeaderView>,
}

impl PerCore {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.headers.clear();
    }

    /// The routed views as one partition's batch, leaving this empty.
    pub fn take(&mut self, partition: i32, buf: &Bytes) -> Batch {
        Batch {
            partition,
            buf: buf.clone(),
            headers: std::mem::take(&mut self.headers),
            records: std::mem::take(&mut self.records),
        }
    }
}

/// One fetch core's routing state: its rings, its epoch, its partitions' positions and its drops.
pub struct Emitter {
    pub index: usize,
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
    /// Per shard core, the records of the response being routed.
    per_core: Vec<PerCore>,
    /// What this core publishes for /metrics (it is the only writer).
    pub live: Arc<CachePadded<FetchLive>>,
}

impl Emitter {
    pub fn new(
        index: usize,
        router: Router,
        rings: Vec<Sender<ToShard>>,
        clock: Arc<EpochClock>,
        epoch: u64,
        overload: Overload,
        live: Arc<CachePadded<FetchLive>>,
    ) -> Self {
        let per_core = rings.iter().map(|_| PerCore::default()).collect();
        Self {
            index,
            router,
            rings,
            clock,
            epoch,
            positions: Offsets::new(),
            overload,
            dropped: Ranges::default(),
            per_core,
            live,
        }
    }

    /// Sends a barrier for every epoch the clock has requested and this core has not sent.
    pub async fn catch_up_epochs(&mut self) -> Result<(), SourceError> {
        while self.epoch < self.clock.requested() {
            self.epoch += 1;
            self.barrier(false).await?;
        }
        Ok(())
    }

    /// The last barrier: this core routes nothing more.
    pub async fn finish(&mut self) -> Result<(), SourceError> {
        self.epoch += 1;
        self.clock.at_least(self.epoch);
        self.barrier(true).await
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

    /// Routes one response of `partition` (records in offset order) and moves the partition's
    /// position to `position`.
    pub async fn emit(
        &mut self,
        partition: i32,
        fetched: Fetched<'_>,
        position: i64,
        stats: &mut FetchStats,
    ) -> Result<(), SourceError> {
        self.positions.insert(partition, position);
        let n = fetched.records.len() as u64;
        stats.records += n;
        *stats.per_partition.entry(partition).or_default() += n;
        if let Some(p) = self.live.partition(partition) {
            p.records.add(n);
            p.position.set(position);
        }
        if n == 0 {
            return Ok(());
        }
        let mut per_core = std::mem::take(&mut self.per_core);
        route(&self.router, partition, fetched, &mut per_core);
        for (core, pc) in per_core.iter_mut().enumerate() {
            if pc.records.is_empty() {
                continue;
            }
            let batch = pc.take(partition, fetched.buf);
            if self.overload.dropping() {
                self.offer(core, batch, stats)?;
            } else {
                self.push(core, ToShard::Records(batch)).await?;
            }
            let depth = self.rings[core].weight();
            stats.queue_depth(core, depth);
            self.live.queue_depth[core].set(depth as i64);
        }
        self.per_core = per_core;
        Ok(())
    }

    /// Tells the overload policy where `partition` stands against its high watermark.
    pub fn observe(&mut self, partition: i32, position: i64, high_watermark: i64) {
        if let Some(p) = self.live.partition(partition) {
            p.high_watermark.set(high_watermark);
        }
        if let Some(s) = self.overload.observe(partition, position, high_watermark) {
            self.log_switch(s);
        }
    }

    /// Tells the overload policy `partition` is done.
    pub fn finished(&mut self, partition: i32) {
        if let Some(p) = self.live.partition(partition) {
            p.done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(s) = self.overload.finished(partition) {
            self.log_switch(s);
        }
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
        let n = (refused.len() + rest.len()) as u64;
        if n > 0
            && let Some(p) = self.live.partition(partition)
        {
            p.dropped.add(n);
        }
        Ok(())
    }

    fn log_switch(&self, s: Switch) {
        self.live
            .dropping
            .store(s.dropping, std::sync::atomic::Ordering::Relaxed);
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
}

/// Splits one partition's fetched records by shard core, keeping offset order within each core;
/// each core's header views are copied next to its records (their spans re-based).
pub fn route(router: &Router, partition: i32, fetched: Fetched<'_>, per_core: &mut [PerCore]) {
    let hint = fetched.records.len() / per_core.len().max(1) + 1;
    for pc in per_core.iter_mut() {
        pc.records.reserve(hint);
    }
    for v in fetched.records {
        let shard = router.shard_of(v.key.get(fetched.buf), partition);
        let pc = &mut per_core[router.core_of(shard)];
        let mut v = *v;
        v.shard = shard;
        if v.headers.len > 0 {
            let start = pc.headers.len();
            let hs = fetched
                .headers
                .get(v.headers.start as usize..)
                .and_then(|h| h.get(..v.headers.len as usize))
                .unwrap_or_default();
            pc.headers.extend_from_slice(hs);
            v.headers = Span {
                start: start as u32,
                len: hs.len() as u32,
            };
        }
        pc.records.push(v);
    }
}
