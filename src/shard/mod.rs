//! The shard core's state machine: what to do after each batch arrives.
//!
//! Owns the flush decisions (hand rows to the encoder, roll the file) and the per-shard counters of
//! the shards this core runs. It is sans-IO: it takes sizes and returns a [`Step`]; it never awaits
//! and is tested without threads. The [`driver`] is the thin async shell that feeds it batches from
//! the bridge, runs the encoder and sends finished files to the io role. Order is kept by
//! construction: batches are appended in the order they arrive, and each ring is FIFO.

pub mod driver;

use std::num::{NonZeroU64, NonZeroUsize};

use crate::sink::SinkError;

/// Shard-core failures.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("shard core {core}: the io role stopped before taking file {path}")]
    IoGone { core: usize, path: String },
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
