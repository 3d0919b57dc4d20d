//! The shard core's async shell: bridge in, encoder, bridge out.
//!
//! Records are appended to the open file. A barrier pauses its ring; once every open ring is
//! paused (or closed) the epoch ends: the open file is finished and sent, then an `EpochDone`
//! carrying the barriers' offsets, and the rings resume. So every file holds records of exactly
//! one epoch, and the io role learns an epoch is complete only after all of its files.

use std::sync::Arc;
use std::time::Duration;

use crate::decode::json::infer_fields;
use crate::metrics::live::Live;
use crate::metrics::{EpochLatency, ShardStats, now_ms};
use crate::offsets::SetAside;
use crate::record::{DeadLetter, Records, ToShard};
use crate::runtime::bridge::{Fan, Sender};
use crate::runtime::{self, Control};
use crate::sink::encode::{EncodeOptions, FileEncoder};
use crate::sink::evolve::Evolution;
use crate::sink::upload::{Target, ToIo};
use arrow_schema::DataType;

use super::{Alignment, ShardError, ShardState, Step};

/// Names the files one shard core writes: `data/<run_id>-<core>-<seq>.parquet`, relative to the
/// table location. The open file is named when its first part leaves for the upload.
#[derive(Debug, Clone)]
pub struct FileNames {
    run_id: String,
    core_index: usize,
    next_seq: u64,
    open: Option<String>,
}

impl FileNames {
    pub fn new(run_id: String, core_index: usize) -> Self {
        Self {
            run_id,
            core_index,
            next_seq: 0,
            open: None,
        }
    }

    /// The name of the open file.
    fn open(&mut self) -> String {
        let (run_id, core, seq) = (&self.run_id, self.core_index, &mut self.next_seq);
        self.open
            .get_or_insert_with(|| {
                *seq += 1;
                format!("data/{run_id}-{core:03}-{:06}.parquet", *seq - 1)
            })
            .clone()
    }

    /// The name of the file being closed; the next one gets a new name.
    fn close(&mut self) -> String {
        let name = self.open();
        self.open = None;
        name
    }
}

/// Where a shard core sets aside the records its encoder rejects.
pub struct DeadLetters {
    pub out: DeadLetterOut,
    /// Written by an earlier run that crashed before its table commit: not written again.
    pub set_aside: Arc<SetAside>,
}

/// The dead letters of the open epoch, on their way out.
pub enum DeadLetterOut {
    /// `--dlq-table`: a file of the dead-letter table per epoch, encoded on this core.
    Table {
        encoder: Box<FileEncoder>,
        names: FileNames,
    },
    /// `--dlq-topic`: the records themselves, handed to the io role (which produces them) at
    /// the end of the epoch.
    Topic(Vec<DeadLetter>),
}

/// `--evolve`: where a shard core grows the table's schema, and how it rebuilds its encoder.
pub struct Evolving {
    pub evolution: Arc<Evolution>,
    pub encode: EncodeOptions,
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
    /// The epoch the table was resumed at: the first open epoch is the one after it.
    pub first_epoch: u64,
    pub names: FileNames,
    /// How far past an epoch's start its commit is expected (the commit interval): the
    /// reference the epoch's record latencies are measured against.
    pub latency_horizon: Duration,
    /// Test hook (`--debug-slow-shard`): sleep this long before each batch holding this shard.
    pub slow: Option<(u32, Duration)>,
    /// Records the encoder could not decode, from the last append.
    pub rejected: Vec<crate::decode::Rejected>,
    /// `None`: a record that cannot be decoded fails the run.
    pub dead: Option<DeadLetters>,
    /// `Some`: new JSON fields become columns.
    pub evolve: Option<Evolving>,
    /// Published for /metrics: this core's count of ignored unknown fields.
    pub live: Arc<Live>,
}

impl ShardCore {
    /// Runs until every input ring is closed and drained. If the run was aborted, stops without
    /// sending anything more.
    pub async fn run(mut self, control: &Control) -> Result<ShardStats, ShardError> {
        let mut stats = ShardStats::default();
        let mut align = Alignment::new(self.core_index);
        // The last epoch ended: files rolled before the next barrier belong to the one after.
        let mut epoch = self.first_epoch;
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
                    }
                    latency.record_all(batch.records.iter().map(|r| r.timestamp_ms));
                    stats.rows += batch.records.len() as u64;
                    let (p, records) = (batch.partition, batch.records());
                    if self.evolve.is_some() && self.evolve(records, epoch + 1, &mut stats).await? {
                        self.encoder.append_known(p, records, &mut self.rejected)?;
                    } else {
                        self.encoder.append(p, records, &mut self.rejected)?;
                    }
                    if let Some(g) = self.live.unknown_fields.get(self.core_index) {
                        g.set(self.encoder.unknown_fields() as i64);
                    }
                    if !self.rejected.is_empty() {
                        self.set_aside(batch.partition, batch.records(), &mut stats)?;
                    }
                    let step = self.state.after_append(
                        self.encoder.buffered_rows(),
                        self.encoder.file_rows(),
                        self.encoder.file_bytes() as u64,
                    );
                    match step {
                        Step::Append => {}
                        Step::EncodeBatch => {
                            self.encoder.encode_buffered()?;
                            self.stream_parts().await?;
                        }
                        Step::RollFile => self.roll(epoch + 1).await?,
                    }
                }
                Some((ring, ToShard::Barrier(b))) => {
                    align.on_barrier(&b)?;
                    self.inputs.pause(ring);
                    if self.inputs.all_open_paused() {
                        epoch = self
                            .end_epoch(&mut align, &mut latency)
                            .await?
                            .unwrap_or(epoch);
                    }
                }
                // Every ring that is not paused is closed: an epoch in alignment ends now.
                None if align.is_aligning() => {
                    epoch = self
                        .end_epoch(&mut align, &mut latency)
                        .await?
                        .unwrap_or(epoch);
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
        stats.unknown_fields = self.encoder.unknown_fields();
        Ok(stats)
    }

    /// `--evolve`: when `records` hold top-level fields the table lacks, infers their types from
    /// these records, grows the schema (or takes what another core added), finishes the open
    /// file and goes on in the new schema. Fields only ever null here wait for a value. `true`
    /// when `records` hold no field the table lacks (nothing to count when appending them).
    async fn evolve(
        &mut self,
        records: Records<'_>,
        epoch: u64,
        stats: &mut ShardStats,
    ) -> Result<bool, ShardError> {
        let Some(ev) = self.evolve.as_ref() else {
            return Ok(false);
        };
        let names = self.encoder.new_fields(records);
        if names.is_empty() {
            return Ok(true);
        }
        let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value).collect();
        // Values that disagree on a new field's type leave it out: the decoder rejects the
        // ones that do not fit what the table then has.
        let Ok(inferred) = infer_fields(&values) else {
            return Ok(false);
        };
        let fields: Vec<_> = inferred
            .fields()
            .iter()
            .filter(|f| names.contains(f.name()) && *f.data_type() != DataType::Null)
            .cloned()
            .collect();
        if fields.is_empty() {
            return Ok(false);
        }
        let grown = ev.evolution.extend(&arrow_schema::Schema::new(fields))?;
        let encode = ev.encode.clone();
        for (field, ty) in &grown.added {
            tracing::info!(
                core = self.core_index,
                field,
                r#type = ty,
                "--evolve: adding a column"
            );
        }
        stats.columns_added += grown.added.len() as u64;
        if grown.arrow.as_ref() != self.encoder.schema().as_ref() {
            self.roll(epoch).await?;
            self.encoder.reshape(grown.arrow, &encode)?;
        }
        Ok(false)
    }

    /// Sends what the last append rejected to the dead letters, or fails the run naming the first
    /// of them when there is no dead-letter destination.
    fn set_aside(
        &mut self,
        partition: i32,
        records: Records<'_>,
        stats: &mut ShardStats,
    ) -> Result<(), ShardError> {
        let Some(dead) = &mut self.dead else {
            let first = self.rejected.swap_remove(0);
            return Err(crate::sink::SinkError::undecodable(first, partition, records).into());
        };
        let before = self.rejected.len();
        self.rejected.retain(|bad| {
            records
                .get(bad.index)
                .is_some_and(|r| !dead.set_aside.contains(partition, r.offset))
        });
        stats.dead_letters_skipped += (before - self.rejected.len()) as u64;
        stats.dead_letters += self.rejected.len() as u64;
        match &mut dead.out {
            DeadLetterOut::Table { encoder, .. } => {
                encoder.append_dead_letters(partition, records, &self.rejected)?;
                if encoder.buffered_rows() >= DEAD_LETTER_BATCH {
                    encoder.encode_buffered()?;
                }
            }
            DeadLetterOut::Topic(letters) => {
                for bad in &self.rejected {
                    if let Some(r) = records.get(bad.index) {
                        letters.push(DeadLetter::of(partition, r, &bad.reason));
                    }
                }
            }
        }
        self.rejected.clear();
        Ok(())
    }

    /// Sends the epoch's dead letters to the io role, ahead of the epoch's end.
    async fn flush_dead_letters(&mut self, epoch: u64) -> Result<(), ShardError> {
        let msg = match self.dead.as_mut().map(|d| &mut d.out) {
            None => return Ok(()),
            Some(DeadLetterOut::Table { encoder, names }) => {
                let Some(file) = encoder.finish_file()? else {
                    return Ok(());
                };
                ToIo::File {
                    epoch,
                    path: names.close(),
                    file: Box::new(file),
                    target: Target::DeadLetters,
                }
            }
            Some(DeadLetterOut::Topic(letters)) if letters.is_empty() => return Ok(()),
            Some(DeadLetterOut::Topic(letters)) => ToIo::DeadLetters {
                epoch,
                letters: std::mem::take(letters),
            },
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
    ) -> Result<Option<u64>, ShardError> {
        let Some(end) = align.finish() else {
            return Ok(None);
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
        Ok(Some(epoch))
    }

    /// Sends the open file's written row groups to the io role, which uploads them while the
    /// file goes on (the rest follows when it is rolled).
    async fn stream_parts(&mut self) -> Result<(), ShardError> {
        let parts = self.encoder.take_parts();
        if parts.is_empty() {
            return Ok(());
        }
        let path = self.names.open();
        let what = path.clone();
        self.send(
            ToIo::FilePart {
                path,
                parts,
                target: Target::Table,
            },
            || what,
        )
        .await
    }

    async fn roll(&mut self, epoch: u64) -> Result<(), ShardError> {
        let Some(file) = self.encoder.finish_file()? else {
            return Ok(());
        };
        let path = self.names.close();
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
