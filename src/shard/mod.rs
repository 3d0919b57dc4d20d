//! The shard core's state machine: what to do after each batch or barrier arrives.
//!
//! Owns the flush decisions (hand rows to the encoder, roll the file), checkpoint alignment
//! ([`Alignment`]: an epoch ends when every open input ring has delivered its barrier) and the
//! per-shard counters of the shards this core runs. It is sans-IO: it takes sizes and returns a [`Step`]; it never awaits
//! and is tested without threads. The [`driver`] is the thin async shell that feeds it batches from
//! the bridge, runs the encoder and sends finished files to the io role. Order is kept by
//! construction: batches are appended in the order they arrive, and each ring is FIFO.

pub mod driver;

use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;

use crate::record::{Barrier, Progress};
use crate::sink::SinkError;

/// Shard-core failures.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("shard core {core}: the io role stopped before taking {what}")]
    IoGone { core: usize, what: String },
    #[error(
        "shard core {core}: barrier for epoch {got} from fetch core {fetch_core} while aligning epoch {expected}"
    )]
    Misaligned {
        core: usize,
        fetch_core: usize,
        expected: u64,
        got: u64,
    },
}

/// An epoch every input ring has closed with its barrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: u64,
    /// The barriers' reports (offsets, drops), one per fetch core that sent one.
    pub progress: Vec<Arc<Progress>>,
}

/// Checkpoint alignment: collects the barriers of one epoch. The driver pauses a ring once it
/// delivered its barrier, so no record of the next epoch is read before the epoch ends.
#[derive(Debug, Default)]
pub struct Alignment {
    core: usize,
    aligning: Option<u64>,
    progress: Vec<Arc<Progress>>,
    last_done: u64,
}

impl Alignment {
    pub fn new(core: usize) -> Self {
        Self {
            core,
            ..Default::default()
        }
    }

    /// Records a barrier. All barriers of an epoch carry the same number, above the last one.
    pub fn on_barrier(&mut self, b: &Barrier) -> Result<(), ShardError> {
        let expected = self.aligning.unwrap_or(self.last_done + 1);
        if b.epoch != expected && !(self.aligning.is_none() && b.epoch > self.last_done) {
            return Err(ShardError::Misaligned {
                core: self.core,
                fetch_core: b.fetch_core,
                expected,
                got: b.epoch,
            });
        }
        self.aligning = Some(b.epoch);
        self.progress.push(b.progress.clone());
        Ok(())
    }

    /// True while some ring has delivered a barrier the others have not.
    pub fn is_aligning(&self) -> bool {
        self.aligning.is_some()
    }

    /// Ends the epoch being aligned (the driver calls this once every open ring is paused).
    pub fn finish(&mut self) -> Option<EpochEnd> {
        let epoch = self.aligning.take()?;
        self.last_done = epoch;
        Some(EpochEnd {
            epoch,
            progress: std::mem::take(&mut self.progress),
        })
    }
}

/// When to encode and when to roll.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    pub batch_rows: NonZeroUsize,
    pub file_max_bytes: u64,
    pub file_max_rows: NonZeroU64,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep appending.
    Append,
    /// Enough rows are buffered: hand them to the Parquet writer.
    EncodeBatch,
    /// The file is big enough: close it and send it to the io role.
    RollFile,
}

/// Per shard core: the roll policy and per-shard row counts.
#[derive(Debug)]
pub struct ShardState {
    policy: RollPolicy,
    shard_cores: u32,
    /// Rows per local shard; shard `s` is at `s / shard_cores`.
    rows_per_shard: Vec<u64>,
}

impl ShardState {
    pub fn new(policy: RollPolicy, shards: u32, shard_cores: u32) -> Self {
        let local = shards.div_ceil(shard_cores) as usize;
        Self {
            policy,
            shard_cores,
            rows_per_shard: vec![0; local],
        }
    }

    /// Counts a record for its shard.
    #[inline]
    pub fn count(&mut self, shard: u32) {
        if let Some(n) = self
            .rows_per_shard
            .get_mut((shard / self.shard_cores) as usize)
        {
            *n += 1;
        }
    }

    /// Rows per shard id, for the shards this core (index `core_index`) runs.
    pub fn per_shard(&self, core_index: usize) -> impl Iterator<Item = (u32, u64)> + '_ {
        let c = self.shard_cores;
        self.rows_per_shard
            .iter()
            .enumerate()
            .map(move |(i, n)| (i as u32 * c + core_index as u32, *n))
    }

    /// Decides after a batch was appended, from the encoder's current sizes.
    pub fn after_append(&self, buffered_rows: usize, file_rows: u64, file_bytes: u64) -> Step {
        if file_rows >= self.policy.file_max_rows.get() || file_bytes >= self.policy.file_max_bytes
        {
            Step::RollFile
        } else if buffered_rows >= self.policy.batch_rows.get() {
            Step::EncodeBatch
        } else {
            Step::Append
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barrier(epoch: u64, fetch_core: usize, p: i32, o: i64) -> Barrier {
        Barrier {
            epoch,
            fetch_core,
            progress: Arc::new(Progress {
                next_offsets: crate::record::Offsets::from([(p, o)]),
                dropped: Default::default(),
            }),
            last: false,
        }
    }

    #[test]
    fn alignment_collects_one_epoch_at_a_time() {
        let mut a = Alignment::new(0);
        assert_eq!(a.finish(), None);
        a.on_barrier(&barrier(1, 0, 0, 10)).unwrap();
        assert!(a.is_aligning());
        a.on_barrier(&barrier(1, 1, 1, 20)).unwrap();
        let end = a.finish().unwrap();
        assert_eq!(end.epoch, 1);
        assert_eq!(end.progress.len(), 2);
        assert!(!a.is_aligning());
        let e = a.on_barrier(&barrier(1, 0, 0, 11)).unwrap_err();
        assert!(e.to_string().contains("epoch 1"), "{e}");
        a.on_barrier(&barrier(3, 0, 0, 12)).unwrap();
        let e = a.on_barrier(&barrier(4, 1, 1, 21)).unwrap_err();
        assert!(matches!(
            e,
            ShardError::Misaligned {
                expected: 3,
                got: 4,
                ..
            }
        ));
    }

    fn state() -> ShardState {
        let policy = RollPolicy {
            batch_rows: NonZeroUsize::new(100).unwrap(),
            file_max_bytes: 1_000,
            file_max_rows: NonZeroU64::new(500).unwrap(),
        };
        ShardState::new(policy, 8, 2)
    }

    #[test]
    fn encodes_at_batch_rows_and_rolls_at_size_or_rows() {
        let s = state();
        assert_eq!(s.after_append(99, 99, 0), Step::Append);
        assert_eq!(s.after_append(100, 100, 0), Step::EncodeBatch);
        assert_eq!(s.after_append(10, 300, 999), Step::Append);
        assert_eq!(s.after_append(10, 300, 1_000), Step::RollFile);
        assert_eq!(s.after_append(0, 500, 10), Step::RollFile);
    }

    #[test]
    fn counts_rows_per_shard_of_this_core() {
        let mut s = state();
        for shard in [1, 3, 3, 7] {
            s.count(shard);
        }
        let got: Vec<(u32, u64)> = s.per_shard(1).collect();
        assert_eq!(got, vec![(1, 1), (3, 2), (5, 0), (7, 1)]);
    }
}
