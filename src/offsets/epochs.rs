//! When an epoch may be committed: every shard core has reported it and every file it sent is
//! uploaded. Sans-IO bookkeeping of the io core; knows nothing of catalogs or stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Ranges, merge};
use crate::record::{Offsets, Progress};

#[derive(Debug)]
struct EpochState<F> {
    done_cores: usize,
    files_pending: usize,
    files: Vec<F>,
    offsets: Offsets,
    dropped: Ranges,
    /// Each fetch core's report reaches every shard core: count it once.
    seen: Vec<Arc<Progress>>,
}

impl<F> Default for EpochState<F> {
    fn default() -> Self {
        Self {
            done_cores: 0,
            files_pending: 0,
            files: Vec::new(),
            offsets: Offsets::new(),
            dropped: Ranges::new(),
            seen: Vec::new(),
        }
    }
}

/// An epoch ready to commit: every shard core ended it and every file is uploaded.
#[derive(Debug)]
pub struct ReadyEpoch<F> {
    pub epoch: u64,
    pub files: Vec<F>,
    /// This writer's partitions, cumulative: everything committed before plus this epoch.
    pub offsets: Offsets,
    /// What this epoch dropped.
    pub dropped: Ranges,
    /// Nothing to write: no file and no offset moved.
    pub is_noop: bool,
}

/// The io role's view of epochs in flight. Epochs commit strictly in order.
#[derive(Debug)]
pub struct EpochTracker<F> {
    shard_cores: usize,
    committed: Offsets,
    epochs: BTreeMap<u64, EpochState<F>>,
}

impl<F> EpochTracker<F> {
    /// `start` is where this writer's partitions begin (the recovered or chosen offsets).
    pub fn new(shard_cores: usize, start: Offsets) -> Self {
        Self {
            shard_cores,
            committed: start,
            epochs: BTreeMap::new(),
        }
    }

    pub fn committed(&self) -> &Offsets {
        &self.committed
    }

    pub fn on_file_sent(&mut self, epoch: u64) {
        self.epochs.entry(epoch).or_default().files_pending += 1;
    }

    pub fn on_file_uploaded(&mut self, epoch: u64, file: F) {
        let e = self.epochs.entry(epoch).or_default();
        e.files_pending = e.files_pending.saturating_sub(1);
        e.files.push(file);
    }

    pub fn on_epoch_done(&mut self, epoch: u64, reports: &[Arc<Progress>]) {
        let e = self.epochs.entry(epoch).or_default();
        e.done_cores += 1;
        for r in reports {
            if e.seen.iter().any(|s| Arc::ptr_eq(s, r)) {
                continue;
            }
            e.offsets
                .extend(r.next_offsets.iter().map(|(p, v)| (*p, *v)));
            e.dropped.union(&r.dropped);
            e.seen.push(r.clone());
        }
    }

    /// Epochs seen but not yet committed.
    pub fn pending(&self) -> usize {
        self.epochs.len()
    }

    /// The oldest epoch, if it is complete. Take it, commit it, then call [`Self::committed_as`].
    pub fn take_ready(&mut self) -> Option<ReadyEpoch<F>> {
        let (&epoch, e) = self.epochs.first_key_value()?;
        if e.done_cores < self.shard_cores || e.files_pending > 0 {
            return None;
        }
        let e = self.epochs.remove(&epoch)?;
        let offsets = merge(&self.committed, &e.offsets);
        let is_noop = e.files.is_empty() && offsets == self.committed && e.dropped.is_empty();
        Some(ReadyEpoch {
            epoch,
            files: e.files,
            offsets,
            dropped: e.dropped,
            is_noop,
        })
    }

    /// Records that an epoch's offsets are now in the table.
    pub fn committed_as(&mut self, offsets: Offsets) {
        self.committed = offsets;
    }
}
