//! The io role: upload finished files, and commit each epoch once it is complete.
//!
//! Files arrive over the bridge from every shard core, followed by each core's end-of-epoch
//! marker. A file larger than a row group arrives in parts while it is written: its upload is a
//! multipart upload that starts with the first part and completes when the file is finished
//! (a smaller file is one put). Uploads run a few at a time; an epoch is committed (one snapshot, its files and the
//! offsets) once every shard core has ended it and all its files are uploaded, strictly in epoch
//! order, while later epochs keep uploading. The io role also ticks the epoch clock that makes
//! fetch cores send barriers every commit interval.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use iceberg::spec::DataFile;

use super::SinkError;
use super::commit::{self, Committed, Committer};
use super::encode::EncodedFile;
use super::files::Stream;
pub use super::files::{TableFiles, open_warehouse};
use crate::metrics::{EpochLatency, IoStats, now_ms};
use crate::offsets::{self, EpochTracker, LedgerKind};
use crate::record::{DeadLetter, Offsets, Progress};
use crate::runtime::bridge::Fan;

/// Which table a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Table,
    /// `--dlq-table`.
    DeadLetters,
}

/// What a shard core sends the io role.
#[derive(Debug)]
pub enum ToIo {
    /// Written row groups of a file still open, in order; its [`ToIo::File`] follows.
    FilePart {
        path: String,
        parts: Vec<bytes::Bytes>,
        target: Target,
    },
    /// A finished file of `epoch`, `path` relative to the location of the `target` table.
    File {
        epoch: u64,
        path: String,
        file: Box<EncodedFile>,
        target: Target,
    },
    /// `--dlq-topic`: records of `epoch` that could not be decoded, to produce before its commit.
    DeadLetters {
        epoch: u64,
        letters: Vec<DeadLetter>,
    },
    /// The shard core has sent every file of `epoch`; the barriers' reports, and the latency
    /// sketch of the epoch's records on this core.
    EpochDone {
        epoch: u64,
        core: usize,
        progress: Vec<Arc<Progress>>,
        latency: Box<EpochLatency>,
    },
}

/// Epochs requested so far; fetch cores send a barrier for every epoch up to it. A fetch core
/// waiting on Kafka also waits on the clock, so a barrier leaves as soon as its epoch is asked
/// for: a shard core aligning an epoch pauses the rings that delivered their barrier until the
/// others do, and in drop mode a paused ring that fills drops records of a shard that keeps up.
#[derive(Debug, Default)]
pub struct EpochClock {
    epoch: AtomicU64,
    moved: tokio::sync::Notify,
}

impl EpochClock {
    pub fn new(start: u64) -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicU64::new(start),
            moved: tokio::sync::Notify::new(),
        })
    }

    pub fn requested(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn tick(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.moved.notify_waiters();
    }

    /// Makes sure at least `epoch` is requested (a finishing fetch core calls this).
    pub fn at_least(&self, epoch: u64) {
        if self.epoch.fetch_max(epoch, Ordering::AcqRel) < epoch {
            self.moved.notify_waiters();
        }
    }

    /// Resolves once an epoch after `seen` is requested.
    pub async fn past(&self, seen: u64) {
        loop {
            let moved = self.moved.notified();
            let mut moved = std::pin::pin!(moved);
            // Registered before the check: a tick between the check and the await still wakes.
            moved.as_mut().enable();
            if self.requested() > seen {
                return;
            }
            moved.await;
        }
    }
}

/// The dead-letter table, committed before the main table in every epoch that has dead letters,
/// with the same offsets: after a crash between the two commits, the dead letters below its
/// offsets are known to be written (`offsets::SetAside`).
pub struct DeadLetterTable {
    pub files: TableFiles,
    pub committer: Committer,
    /// Test hook (`--debug-die-after-dlq-commit`).
    pub die_after_commit: bool,
}

/// `--dlq-topic`: where the io role produces dead letters (a Kafka client the app plugs in; this
/// module knows no Kafka client).
#[async_trait::async_trait(?Send)]
pub trait LetterBox {
    fn topic(&self) -> &str;
    /// Produces `letters`, acknowledged; the end offsets of the partitions written to.
    async fn produce(&self, letters: Vec<DeadLetter>) -> Result<Offsets, String>;
}

/// The dead-letter topic, produced to before the main table's commit of the same epoch; the
/// topic's end offsets go into that commit's summary, so a restart knows where to look for dead
/// letters whose epoch was not committed (`offsets::SetAside::exact`).
pub struct DeadLetterTopic {
    pub producer: Box<dyn LetterBox>,
    /// End offsets recorded in the table so far.
    pub ends: Offsets,
    /// Test hook (`--debug-die-after-dlq-commit`).
    pub die_after_produce: bool,
}

/// Where the io role writes dead letters.
pub enum DeadLetterSink {
    Table(Box<DeadLetterTable>),
    Topic(DeadLetterTopic),
}

/// The commit side of the io role, moved into each commit and back.
struct Committers {
    table: Committer,
    dead: Option<Committer>,
    topic: Option<(Box<dyn LetterBox>, Offsets)>,
    die_after_dead_commit: bool,
}

/// Everything the io role owns.
pub struct IoRole {
    pub inputs: Fan<ToIo>,
    pub files: TableFiles,
    pub committer: Committer,
    pub dead_letters: Option<DeadLetterSink>,
    pub tracker: EpochTracker<(Target, DataFile)>,
    pub clock: Arc<EpochClock>,
    pub commit_interval: Duration,
    pub max_in_flight: usize,
    /// Commit state published for /metrics, once per commit.
    pub live: Arc<crate::metrics::live::Live>,
}

/// The table a file of `target` belongs to.
fn table_of<'a>(
    target: Target,
    files: &'a TableFiles,
    dead_files: Option<&'a TableFiles>,
) -> Result<&'a TableFiles, SinkError> {
    match target {
        Target::Table => Ok(files),
        Target::DeadLetters => dead_files.ok_or_else(|| SinkError::Schema {
            reason: "a dead-letter file without --dlq-table".into(),
        }),
    }
}

type CommitOutcome = (Committers, u64, Offsets, Result<Committed, SinkError>);
type CommitFuture = Pin<Box<dyn Future<Output = CommitOutcome>>>;

async fn run_commit(fut: &mut Option<CommitFuture>) -> CommitOutcome {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl IoRole {
    /// Runs until every shard core has closed its ring and every complete epoch is committed.
    pub async fn run(self) -> Result<IoStats, SinkError> {
        let IoRole {
            mut inputs,
            files,
            committer,
            dead_letters,
            mut tracker,
            clock,
            commit_interval,
            max_in_flight,
            live,
        } = self;
        let mut stats = IoStats::default();
        let mut sketches: std::collections::BTreeMap<u64, Vec<Box<EpochLatency>>> =
            Default::default();
        let (dead_files, dead_committer, topic, die) = match dead_letters {
            Some(DeadLetterSink::Table(d)) => {
                let d = *d;
                (Some(d.files), Some(d.committer), None, d.die_after_commit)
            }
            Some(DeadLetterSink::Topic(t)) => {
                (None, None, Some((t.producer, t.ends)), t.die_after_produce)
            }
            None => (None, None, None, false),
        };
        let mut committer = Some(Committers {
            table: committer,
            dead: dead_committer,
            topic,
            die_after_dead_commit: die,
        });
        // Per epoch: dead letters for the topic, produced when the epoch is committed.
        let mut letters: std::collections::BTreeMap<u64, Vec<DeadLetter>> = Default::default();
        let mut committing: Option<CommitFuture> = None;
        // Per epoch in commit: rows of its dead-letter files, published once it is committed.
        let mut dead_rows: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut uploads = FuturesUnordered::new();
        // Files still being written whose parts are uploading, by table and path.
        let mut streams: std::collections::HashMap<(Target, String), Stream> = Default::default();
        let mut open = true;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + commit_interval,
            commit_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if committing.is_none()
                && let Some(ready) = tracker.take_ready()
            {
                if ready.is_noop {
                    sketches.remove(&ready.epoch);
                    tracker.committed_as(ready.offsets);
                    continue;
                }
                let mut c = committer
                    .take()
                    .expect("committer is home when nothing is committing");
                let (epoch, offsets) = (ready.epoch, ready.offsets);
                let (data_files, dead_files): (Vec<_>, Vec<_>) = ready
                    .files
                    .into_iter()
                    .partition(|(t, _)| *t == Target::Table);
                let data_files: Vec<DataFile> = data_files.into_iter().map(|(_, f)| f).collect();
                let dead_files: Vec<DataFile> = dead_files.into_iter().map(|(_, f)| f).collect();
                let epoch_letters = letters.remove(&epoch).unwrap_or_default();
                let dead_count: u64 = dead_files.iter().map(DataFile::record_count).sum();
                dead_rows.insert(epoch, dead_count + epoch_letters.len() as u64);
                let dropped = ready.dropped;
                stats.dropped_ranges += dropped.range_count() as u64;
                let prior = tracker.committed().clone();
                let name = format!("{epoch:08}-{}", uuid::Uuid::new_v4().simple());
                let table_files = files.clone();
                committing = Some(Box::pin(async move {
                    let r = async {
                        // Dead letters first: once the table's offsets pass them they must be in.
                        if let Some(dead) = c.dead.as_mut().filter(|_| !dead_files.is_empty()) {
                            c.table.check_fence(epoch, &prior, &offsets).await?;
                            dead.commit(epoch, dead_files, None, &offsets, Vec::new()).await?;
                            if c.die_after_dead_commit {
                                tracing::warn!(epoch, "--debug-die-after-dlq-commit: exiting before the table's commit");
                                std::process::exit(137);
                            }
                        }
                        let mut extra = commit::ledger_entries(
                            &table_files,
                            LedgerKind::Dropped,
                            c.table.topic(),
                            &dropped,
                            &name,
                        )
                        .await?;
                        if let Some((producer, ends)) = c.topic.as_mut() {
                            if !epoch_letters.is_empty() {
                                let reached = producer.produce(epoch_letters).await.map_err(|reason| {
                                    SinkError::DeadLetterTopic { topic: producer.topic().to_owned(), reason }
                                })?;
                                for (p, end) in reached {
                                    let e = ends.entry(p).or_insert(end);
                                    *e = (*e).max(end);
                                }
                                if c.die_after_dead_commit {
                                    tracing::warn!(epoch, "--debug-die-after-dlq-commit: exiting before the table's commit");
                                    std::process::exit(137);
                                }
                            }
                            if !ends.is_empty() {
                                extra.push((offsets::dead_letter_offsets_key(producer.topic()), offsets::encode_offsets(ends)));
                            }
                        }
                        c.table.commit(epoch, data_files, Some(&prior), &offsets, extra).await
                    }
                    .await;
                    (c, epoch, offsets, r)
                }));
            }
            if !open && uploads.is_empty() && committing.is_none() {
                if tracker.pending() > 0 {
                    tracing::warn!(
                        epochs = tracker.pending(),
                        "epochs left incomplete at shutdown; their files are not committed"
                    );
                }
                for ((_, path), s) in streams.drain() {
                    tracing::warn!(
                        path,
                        "a file left unfinished at shutdown: its upload is aborted"
                    );
                    if let Err(e) = s.abort().await {
                        tracing::warn!(path, error = %e, "could not abort the upload");
                    }
                }
                break;
            }
            tokio::select! {
                next = inputs.recv(), if open && uploads.len() < max_in_flight => match next {
                    Some((_, ToIo::FilePart { path, parts, target })) => {
                        let to = table_of(target, &files, dead_files.as_ref())?;
                        let key = (target, path);
                        let s = match streams.entry(key) {
                            std::collections::hash_map::Entry::Occupied(s) => s.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                let s = to.open_stream(&v.key().1).await?;
                                v.insert(s)
                            }
                        };
                        s.push(parts, max_in_flight).await?;
                    }
                    Some((_, ToIo::File { epoch, path, file, target })) => {
                        tracker.on_file_sent(epoch);
                        let to = table_of(target, &files, dead_files.as_ref())?;
                        let stream = streams.remove(&(target, path.clone()));
                        uploads.push(to.put(epoch, path, file, target, stream));
                    }
                    Some((_, ToIo::DeadLetters { epoch, letters: l })) => {
                        stats.dead_letter_rows += l.len() as u64;
                        letters.entry(epoch).or_default().extend(l);
                    }
                    Some((_, ToIo::EpochDone { epoch, progress, latency: sketch, .. })) => {
                        tracker.on_epoch_done(epoch, &progress);
                        sketches.entry(epoch).or_default().push(sketch);
                    }
                    None => open = false,
                },
                Some(done) = uploads.next(), if !uploads.is_empty() => {
                    let u = done?;
                    stats.files += 1;
                    stats.streamed_files += u64::from(u.streamed);
                    stats.bytes += u.bytes;
                    match u.target {
                        Target::Table => stats.rows += u.rows,
                        Target::DeadLetters => stats.dead_letter_rows += u.rows,
                    }
                    tracker.on_file_uploaded(u.epoch, (u.target, u.file));
                }
                (c, epoch, offsets, result) = run_commit(&mut committing), if committing.is_some() => {
                    committing = None;
                    committer = Some(c);
                    let done = result?;
                    let now = now_ms();
                    let epoch_sketches = sketches.remove(&epoch).unwrap_or_default();
                    stats.late_timestamps += epoch_sketches.iter().map(|s| s.late).sum::<u64>();
                    stats.commits += 1;
                    stats.commit_attempts += u64::from(done.attempts);
                    tracing::debug!(snapshot = ?done.snapshot_id, attempts = done.attempts, ms = done.elapsed.as_millis() as u64, "committed");
                    tracker.committed_as(offsets);
                    live.committed(
                        tracker.committed(),
                        done.elapsed.as_micros() as u64,
                        &epoch_sketches,
                        dead_rows.remove(&epoch).unwrap_or(0),
                        now,
                    );
                }
                _ = ticker.tick() => clock.tick(),
            }
        }
        // The commit and record latency histograms live where /metrics reads them.
        let io = live.io();
        stats.commit_latency_us = Some(io.commit_us.clone());
        stats.record_latency_ms = Some(io.latency_ms.clone());
        stats.committed = tracker.committed().clone();
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::EpochClock;

    #[tokio::test]
    async fn a_waiting_fetch_core_wakes_when_the_clock_moves() {
        let clock = EpochClock::new(3);
        // Already past: resolves at once.
        clock.past(2).await;
        let ticker = {
            let clock = clock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                clock.tick();
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), clock.past(3))
            .await
            .expect("woken by the tick");
        assert_eq!(clock.requested(), 4);
        ticker.join().unwrap();
        clock.at_least(9);
        clock.past(8).await;
    }
}
