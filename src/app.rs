//! `icefall run`: wires config, placement, source, shards and sink together and reports.
//!
//! Owns the order of start-up (validate placement, prove the warehouse writable, plan partitions,
//! create rings, start roles) and of shut-down (join every role, pick the root cause of a failure,
//! merge per-core counters). It holds no per-record logic.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, RunConfig};
use crate::metrics::{FetchStats, IoStats, RunSummary, ShardStats};
use crate::record::Batch;
use crate::routing::{Router, assign_partitions};
use crate::runtime::bridge::{self, Fan};
use crate::runtime::{self, Control, RuntimeError};
use crate::shard::driver::{FileNames, ShardCore};
use crate::shard::{RollPolicy, ShardError, ShardState};
use crate::sink::SinkError;
use crate::sink::encode::{EncodeOptions, FileEncoder};
use crate::sink::upload::{self, PendingFile, Warehouse};
use crate::source::fetch::FetchCore;
use crate::source::{self, SourceConfig, SourceError};

/// Files the io role writes at once.
const UPLOADS_IN_FLIGHT: usize = 4;
/// Capacity of each shard→io ring, in files.
const FILE_RING: usize = 2;

/// Why a run failed. Each kind has its own exit code (see [`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl Error {
    /// 2: bad flags or placement; 3: Kafka; 4: storage; 1: anything else (a bug).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Runtime(
                RuntimeError::CoreNotOnline { .. }
                | RuntimeError::Overlap { .. }
                | RuntimeError::TooFewShards { .. },
            ) => 2,
            Error::Runtime(_) => 1,
            Error::Source(_) => 3,
            Error::Sink(_) | Error::Shard(ShardError::Sink(_)) => 4,
            Error::Shard(ShardError::IoGone { .. }) => 4,
        }
    }

    fn is_secondary(&self) -> bool {
        matches!(self, Error::Source(e) if e.is_secondary())
            || matches!(self, Error::Shard(ShardError::IoGone { .. }))
    }
}

fn setup_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::Runtime(RuntimeError::Spawn {
                role: "setup",
                core: 0,
                reason: e.to_string(),
            })
        })
}

/// Runs the pipeline to the end (or to a stop signal) and returns what it did.
pub fn run(cfg: RunConfig, control: Arc<Control>) -> Result<RunSummary, Error> {
    let started = Instant::now();
    let online = runtime::online_cores()?;
    let placement = runtime::place(
        &online,
        cfg.fetch_cores.as_ref(),
        cfg.shard_cores.as_ref(),
        cfg.io_core,
    )?;
    let shard_cores = placement.shard.len();
    let shards = cfg.shards.map_or(shard_cores as u32, |n| n.get());
    if (shards as usize) < shard_cores {
        return Err(RuntimeError::TooFewShards {
            shards,
            cores: shard_cores,
        }
        .into());
    }
    tracing::info!(
        fetch = ?placement.fetch, shard = ?placement.shard, io = placement.io, shards,
        "placement"
    );

    let source_cfg = Arc::new(SourceConfig {
        brokers: cfg.brokers.clone(),
        topic: cfg.topic.clone(),
        fetch_max_bytes: cfg.fetch_max_bytes.0 as i32,
        fetch_max_wait: cfg.fetch_max_wait,
        timeout: cfg.kafka_timeout,
    });
    let setup = setup_runtime()?;
    let warehouse = setup.block_on(Warehouse::open_local(&cfg.warehouse))?;
    let plans = setup.block_on(source::plan(
        &source_cfg,
        cfg.start,
        cfg.partitions.as_deref(),
        cfg.stop_at_end,
    ))?;
    drop(setup);
    let planned = started.elapsed();
    for p in &plans {
        tracing::info!(partition = p.partition, start = p.start, high_watermark = p.high_watermark, stop_at = ?p.stop_at, "partition");
    }

    let router = Router::new(shards, shard_cores as u32);
    let owned = assign_partitions(
        &plans.iter().map(|p| p.partition).collect::<Vec<_>>(),
        placement.fetch.len(),
    );

    // rings[f][s]: fetch core f → shard core s.
    let mut to_shards: Vec<Vec<bridge::Sender<Batch>>> =
        (0..placement.fetch.len()).map(|_| Vec::new()).collect();
    let mut shard_inputs: Vec<Vec<bridge::Receiver<Batch>>> =
        (0..shard_cores).map(|_| Vec::new()).collect();
    for senders in &mut to_shards {
        for inputs in &mut shard_inputs {
            let (tx, rx) = bridge::channel(cfg.ring_batches.get());
            senders.push(tx);
            inputs.push(rx);
        }
    }
    let mut file_rings = Vec::new();

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let data_dir = Warehouse::data_dir(&cfg.table);
    let policy = RollPolicy {
        batch_rows: cfg.batch_rows,
        file_max_bytes: cfg.file_max_bytes.0,
        file_max_rows: cfg.file_max_rows,
    };
    let encode = EncodeOptions {
        zstd_level: cfg.zstd_level,
        row_group_rows: (cfg
            .file_max_rows
            .min(NonZeroU64::new(256 * 1024).expect("non-zero"))
            .get()) as usize,
    };

    let mut errors: Vec<Error> = Vec::new();
    let mut shard_handles = Vec::new();
    for (i, inputs) in shard_inputs.into_iter().enumerate() {
        let (tx, rx) = bridge::channel::<PendingFile>(FILE_RING);
        file_rings.push(rx);
        let core = ShardCore {
            core_index: i,
            inputs: Fan::new(inputs),
            files: tx,
            encoder: FileEncoder::new(i, &encode)?,
            state: ShardState::new(policy, shards, shard_cores as u32),
            names: FileNames {
                data_dir: data_dir.clone(),
                run_id: run_id.clone(),
                core_index: i,
                next_seq: 0,
            },
        };
        let ctl = control.clone();
        let spawned = runtime::spawn_glommio("shard", placement.shard[i], move || async move {
            let r = core.run(&ctl).await;
            if r.is_err() {
                ctl.abort();
            }
            r
        });
        match spawned {
            Ok(h) => shard_handles.push(h),
            Err(e) => {
                control.abort();
                errors.push(e.into());
                break;
            }
        }
    }

    let io_handle = {
        let ctl = control.clone();
        let files = Fan::new(file_rings);
        runtime::spawn_tokio("io", placement.io, move || async move {
            let r = upload::run(files, warehouse, UPLOADS_IN_FLIGHT).await;
            if r.is_err() {
                ctl.abort();
            }
            r
        })
    };

    let mut fetch_handles = Vec::new();
    if errors.is_empty() {
        for (f, senders) in to_shards.into_iter().enumerate() {
            let partitions = plans
                .iter()
                .copied()
                .filter(|p| owned[f].contains(&p.partition))
                .collect();
            let mut core = FetchCore {
                index: f,
                partitions,
                router: router.clone(),
                rings: senders,
            };
            let ctl = control.clone();
            let cfg = source_cfg.clone();
            let spawned = runtime::spawn_tokio("fetch", placement.fetch[f], move || async move {
                let r = core.run(&cfg, &ctl).await;
                if r.is_err() {
                    ctl.abort();
                }
                drop(core); // closes the rings only after a failure is flagged
                r
            });
            match spawned {
                Ok(h) => fetch_handles.push(h),
                Err(e) => {
                    control.abort();
                    errors.push(e.into());
                    break;
                }
            }
        }
    } else {
        drop(to_shards);
    }

    let mut fetch_stats: Vec<FetchStats> = Vec::new();
    for h in fetch_handles {
        match h.join() {
            Ok(Ok(s)) => fetch_stats.push(s),
            Ok(Err(e)) => errors.push(e.into()),
            Err(e) => {
                control.abort();
                errors.push(e.into());
            }
        }
    }
    let fetched = started.elapsed();
    let mut shard_stats: Vec<ShardStats> = Vec::new();
    for h in shard_handles {
        match h.join() {
            Ok(Ok(s)) => shard_stats.push(s),
            Ok(Err(e)) => errors.push(e.into()),
            Err(e) => errors.push(e.into()),
        }
    }
    let flushed = started.elapsed();
    let io_stats = match io_handle.map(|h| h.join()) {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => {
            errors.push(e.into());
            IoStats::default()
        }
        Ok(Err(e)) | Err(e) => {
            errors.push(e.into());
            IoStats::default()
        }
    };
    tracing::info!(
        planned_s = planned.as_secs_f64(),
        fetched_s = fetched.as_secs_f64(),
        flushed_s = flushed.as_secs_f64(),
        uploaded_s = started.elapsed().as_secs_f64(),
        "phases (seconds since start)"
    );
    if !errors.is_empty() {
        let root = errors.iter().position(|e| !e.is_secondary()).unwrap_or(0);
        return Err(errors.swap_remove(root));
    }
    let summary = RunSummary::merge(
        &fetch_stats,
        &shard_stats,
        &io_stats,
        started.elapsed().as_secs_f64(),
    );
    if summary.rows_written != summary.records || io_stats.rows != summary.records {
        tracing::error!(
            routed = summary.records,
            encoded = summary.rows_written,
            uploaded = io_stats.rows,
            "record counts disagree"
        );
    }
    Ok(summary)
}
