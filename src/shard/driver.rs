//! The shard core's async shell: bridge in, encoder, bridge out.
//!
//! Records are appended to the open file. A barrier pauses its ring; once every open ring is
//! paused (or closed) the epoch ends: the open file is finished and sent, then an `EpochDone`
//! carrying the barriers' offsets, and the rings resume. So every file holds records of exactly
//! one epoch, and the io role learns an epoch is complete only after all of its files.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{EpochLatency, ShardStats, now_ms};
use crate::offsets::SetAside;
use crate::record::{Record, ToShard};
use crate::runtime::bridge::{Fan, Sender};
use crate::runtime::{self, Control};
use crate::sink::encode::FileEncoder;
use crate::sink::upload::{Target, ToIo};

use super::{Alignment, ShardError, ShardState, Step};

/// Names the files one shard core writes: `data/<run_id>-<core>-<seq>.parquet`, relative to the
/// table location.
#[derive(Debug, Clone)]
pub struct FileNames {
    pub run_id: String,
    pub core_index: usize,
    pub next_seq: u64,
}

impl FileNames {
    fn next(&mut self) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        format!(
            "data/{}-{:03}-{:06}.parquet",
            self.run_id, self.core_index, seq
        )
    }
}

/// Where a shard core sets aside the records its encoder rejects (`--dlq-table`): files of the
/// dead-letter table, one per epoch, encoded on this core.
pub struct DeadLetters {
    pub encoder: FileEncoder,
    pub names: FileNames,
    /// Written by an earlier run that crashed before its table commit: not written again.
    pub set_aside: Arc<SetAside>,
}

/// Rows a dead-letter file buffers before they go to its Parquet writer.
const DEAD_LETTER_BATCH: usize = 4096;

/// Everything one shard core owns.
pub struct ShardCore {
    pub core_index: usize,
    pub inputs: Fan<ToShard>,
    pub to_io: Sender<ToIo>,
    pub encoder: FileEncoder,
    pub state: ShardState,
    pub names: FileNames,
    /// How far past an epoch's start its commit is expected (the commit interval): the
    /// reference the epoch's record latencies are measured against.
    pub latency_horizon: Duration,
    /// Test hook (`--debug-slow-shard`): sleep this long before each batch holding this shard.
    pub slow: Option<(u32, Duration)>,
    /// Records the encoder could not decode, from the last append.
    pub rejected: Vec<crate::sink::decode::Rejected>,
    /// `None`: a record that cannot be decoded fails the run.
    pub dead: Option<DeadLetters>,
}

impl ShardCore {
    /// Runs until every input ring is closed and drained. If the run was aborted, stops without
    /// sending anything more.
    pub async fn run(mut self, control: &Control) -> Result<ShardStats, ShardError> {
        let mut stats = ShardStats::default();
        let mut align = Alignment::new(self.core_index);
        let mut epoch = 0u64;
        let mut latency = self.next_latency();
        loop {
            let next = self.inputs.recv().await;
            if control.is_aborted() {
                return Ok(stats);
            }
            match next {
                Some((_, ToShard::Records(batch))) => {
                    if let Some((shard, pause)) = self.slow
                        && batch.records.iter().any(|r| r.shard == shard)
                    {
                        runtime::sleep(pause).await;
                    }
                    for r in &batch.records {
                        self.state.count(r.shard);
                        latency.record(r.timestamp_ms);
                    }
                    stats.rows += batch.records.len() as u64;
                    self.encoder
                        .append(batch.partition, &batch.records, &mut self.rejected)?;
                    if !self.rejected.is_empty() {
                        self.set_aside(batch.partition, &batch.records, &mut stats)?;
                    }
                    let step = self.state.after_append(
                        self.encoder.buffered_rows(),
                        self.encoder.file_rows(),
                        self.encoder.file_bytes() as u64,
                    );
                    match step {
                        Step::Append => {}
                        Step::EncodeBatch => self.encoder.encode_buffered()?,
                        Step::RollFile => self.roll(epoch + 1).await?,
                    }
                }
                Some((ring, ToShard::Barrier(b))) => {
                    align.on_barrier(&b)?;
                    self.inputs.pause(ring);
                    if self.inputs.all_open_paused() {
                        epoch = self.end_epoch(&mut align, &mut latency).await?;
                    }
                }
                // Every ring that is not paused is closed: an epoch in alignment ends now.
                None if align.is_aligning() => {
                    epoch = self.end_epoch(&mut align, &mut latency).await?
                }
                None => break,
            }
        }
        // Records after the last barrier belong to no epoch: a fetch core always ends with a
        // barrier, so there are none unless the run was aborted.
        if self.encoder.file_rows() > 0 {
            tracing::warn!(
                core = self.core_index,
                rows = self.encoder.file_rows(),
                "rows after the last barrier"
            );
        }
        stats.per_shard = self.state.per_shard(self.core_index).collect();
        stats.payload_bytes = self.encoder.payload_bytes();
        Ok(stats)
    }

    /// Sends what the last append rejected to the dead letters, or fails the run naming the first
    /// of them when there is no dead-letter destination.
    fn set_aside(
        &mut self,
        partition: i32,
        records: &[Record],
        stats: &mut ShardStats,
    ) -> Result<(), ShardError> {
        let Some(dead) = &mut self.dead else {
            let first = self.rejected.swap_remove(0);
            return Err(first.into_error(partition, records).into());
        };
        let before = self.rejected.len();
        self.rejected.retain(|bad| {
            records
                .get(bad.index)
                .is_some_and(|r| !dead.set_aside.contains(partition, r.offset))
        });
        stats.dead_letters_skipped += (before - self.rejected.len()) as u64;
        stats.dead_letters += self.rejected.len() as u64;
        dead.encoder
            .append_dead_letters(partition, records, &self.rejected)?;
        if dead.encoder.buffered_rows() >= DEAD_LETTER_BATCH {
            dead.encoder.encode_buffered()?;
        }
        self.rejected.clear();
        Ok(())
    }

    /// Sends the epoch's dead-letter file to the io role, ahead of the epoch's end.
    async fn flush_dead_letters(&mut self, epoch: u64) -> Result<(), ShardError> {
        let Some(dead) = &mut self.dead else {
            return Ok(());
        };
        let Some(file) = dead.encoder.finish_file()? else {
            return Ok(());
        };
        let msg = ToIo::File {
            epoch,
            path: dead.names.next(),
            file: Box::new(file),
            target: Target::DeadLetters,
        };
        self.send(msg, || format!("the dead letters of epoch {epoch}"))
            .await
    }

    fn next_latency(&self) -> EpochLatency {
        EpochLatency::new(now_ms().saturating_add(self.latency_horizon.as_millis() as i64))
    }

    async fn end_epoch(
        &mut self,
        align: &mut Alignment,
        latency: &mut EpochLatency,
    ) -> Result<u64, ShardError> {
        let Some(end) = align.finish() else {
            return Ok(0);
        };
        self.roll(end.epoch).await?;
        self.flush_dead_letters(end.epoch).await?;
        let epoch = end.epoch;
        let latency = std::mem::replace(latency, self.next_latency());
        self.send(
            ToIo::EpochDone {
                epoch,
                core: self.core_index,
                progress: end.progress,
                latency: Box::new(latency),
            },
            || format!("the end of epoch {epoch}"),
        )
        .await?;
        self.inputs.resume_all();
        Ok(epoch)
    }

    async fn roll(&mut self, epoch: u64) -> Result<(), ShardError> {
        let Some(file) = self.encoder.finish_file()? else {
            return Ok(());
        };
        let path = self.names.next();
        let what = path.clone();
        self.send(
            ToIo::File {
                epoch,
                path,
                file: Box::new(file),
                target: Target::Table,
            },
            || what,
        )
        .await
    }

    async fn send(&self, msg: ToIo, what: impl FnOnce() -> String) -> Result<(), ShardError> {
        self.to_io.send(msg).await.map_err(|_| ShardError::IoGone {
            core: self.core_index,
            what: what(),
        })
    }
}
