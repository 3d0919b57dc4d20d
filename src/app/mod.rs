//! `icefall run`: wires config, placement, source, shards and sink together and reports.
//!
//! Owns the order of start-up (validate placement, prove the warehouse writable, plan partitions,
//! create rings, start roles) and of shut-down (join every role, pick the root cause of a failure,
//! merge per-core counters). It holds no per-record logic.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, RunConfig};
use crate::metrics::live::{FetchLive, Live};
use crate::metrics::{FetchStats, IoStats, RunSummary, ShardStats};
use crate::offsets::EpochTracker;
use crate::record::{Offsets, ToShard};
use crate::routing::overload::Overload;
use crate::routing::{Router, assign_partitions};
use crate::runtime::bridge::{self, Fan};
use crate::runtime::{self, Control, RuntimeError};
use crate::shard::driver::{DeadLetters, Evolving, FileNames, ShardCore};
use crate::shard::{RollPolicy, ShardError, ShardState};
use crate::sink::SinkError;
use crate::sink::commit::{self, Committer, RetryPolicy};
use crate::sink::encode::FileEncoder;
use crate::sink::evolve::Evolution;
use crate::sink::schema::Shape;
use crate::sink::upload::{self, EpochClock, IoRole, TableFiles, ToIo};
use crate::source::emit::Emitter;
use crate::source::fetch::FetchCore;
use crate::source::memory::{MemoryInput, MemorySource};
use crate::source::{self, PartitionPlan, SourceError};

/// Files the io role writes at once.
const UPLOADS_IN_FLIGHT: usize = 4;
/// Slots of each fetch→shard ring kept for barriers, beyond `--ring-batches`.
const BARRIER_SLOTS: usize = 8;
/// Capacity of each shard→io ring, in messages (files and end-of-epoch markers).
const FILE_RING: usize = 4;

mod dead_letters;
mod group;
pub mod maintain;
mod setup;

pub(crate) use setup::{
    avro_schemas, catalog_spec, encode_options, setup_runtime, source_config, table_shape,
};
use setup::{infer_shape, listen};

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
    /// 2: bad flags or placement; 3: Kafka; 4: storage; 5: catalog or table; 7: an undecodable
    /// record; 8: fenced by another writer; 1: anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Runtime(
                RuntimeError::CoreNotOnline { .. }
                | RuntimeError::Overlap { .. }
                | RuntimeError::TooFewShards { .. },
            ) => 2,
            Error::Runtime(_) => 1,
            Error::Source(_) | Error::Sink(SinkError::DeadLetterTopic { .. }) => 3,
            Error::Sink(SinkError::Fenced { .. }) => 8,
            Error::Sink(SinkError::Undecodable { .. })
            | Error::Shard(ShardError::Sink(SinkError::Undecodable { .. })) => 7,
            Error::Sink(e) | Error::Shard(ShardError::Sink(e)) => {
                if e.is_catalog() {
                    5
                } else {
                    4
                }
            }
            Error::Shard(ShardError::IoGone { .. }) => 4,
            Error::Shard(ShardError::Misaligned { .. }) => 1,
        }
    }

    fn is_secondary(&self) -> bool {
        matches!(self, Error::Source(e) if e.is_secondary())
            || matches!(self, Error::Shard(ShardError::IoGone { .. }))
    }
}

/// Where a run's records come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// `--brokers` and `--topic`.
    Kafka,
    /// Generated in memory (the pipeline bench): Kafka's flags are not used.
    Memory(MemoryInput),
}

pub use crate::report::one_line;

/// Runs the pipeline to the end (or to a stop signal) and returns what it did. With `--group`,
/// as a consumer-group member: one pipeline per generation, over the partitions it is assigned.
pub fn run(cfg: RunConfig, control: Arc<Control>) -> Result<RunSummary, Error> {
    match cfg.group.clone() {
        Some(group) => group::run(cfg, group, control),
        None => run_with(cfg, control, Input::Kafka),
    }
}

/// [`run`], with the records from `input`.
pub fn run_with(cfg: RunConfig, control: Arc<Control>, input: Input) -> Result<RunSummary, Error> {
    pipeline(cfg, control, input, &|_| {})
}

/// One run of the pipeline; `publish` is handed its live view once the roles are planned.
fn pipeline(
    cfg: RunConfig,
    control: Arc<Control>,
    input: Input,
    publish: &dyn Fn(Arc<Live>),
) -> Result<RunSummary, Error> {
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

    let security = &cfg.kafka_security;
    tracing::info!(
        security_protocol = security.protocol(),
        sasl_mechanism = security.sasl.as_ref().map(|s| s.mechanism.name()),
        "kafka"
    );
    if security.tls.as_ref().is_some_and(|t| !t.verify_hostname) {
        tracing::warn!(
            "ssl.endpoint.identification.algorithm=none: brokers' certificates are not checked against their host names"
        );
    }
    let source_cfg = Arc::new(source_config(&cfg));
    let setup = setup_runtime()?;
    let avro = avro_schemas(&cfg, &setup)?;
    let declared = table_shape(&cfg, avro.as_ref())?;
    let (storage, warehouse_url) = setup.block_on(upload::open_warehouse(&cfg.warehouse))?;
    let catalog_spec = catalog_spec(&cfg, warehouse_url)?;
    // Read the checkpoint of an existing table, validate Kafka, and only then create anything.
    let (catalog, resumed, existing) = setup.block_on(async {
        let catalog = commit::open_catalog(&catalog_spec, storage.clone()).await?;
        let (resumed, existing) =
            match commit::load_existing(catalog.as_ref(), &cfg.table, declared.as_ref()).await? {
                Some(t) => (
                    commit::checkpoint(&t, &cfg.topic)?,
                    Some(Shape::of_table(t.metadata().current_schema())),
                ),
                None => (None, None),
            };
        Ok::<_, SinkError>((catalog, resumed, existing))
    })?;
    let committed = resumed
        .as_ref()
        .map(|c| c.offsets.clone())
        .unwrap_or_default();
    let first_epoch = resumed.as_ref().map_or(0, |c| c.epoch);
    if let Some(c) = &resumed {
        tracing::info!(
            snapshot = c.snapshot,
            epoch = c.epoch,
            partitions = c.offsets.len(),
            "resuming from the table's offsets"
        );
    }
    let plans = match &input {
        Input::Kafka => setup.block_on(source::plan(
            &source_cfg,
            cfg.start,
            cfg.partitions.as_deref(),
            cfg.stop_at_end,
            &committed,
        ))?,
        Input::Memory(m) => (0..m.partitions as i32)
            .map(|partition| PartitionPlan {
                partition,
                start: 0,
                stop_at: Some(m.records_per_partition as i64),
                high_watermark: m.records_per_partition as i64,
            })
            .collect(),
    };
    let shape = match (declared, existing, cfg.infer_schema) {
        (Some(s), _, _) => s,
        (None, Some(s), _) => s,
        (None, None, Some(n)) => infer_shape(&setup, &source_cfg, &plans, n.get())?,
        (None, None, None) => {
            return Err(ConfigError::invalid(
                "--format",
                "json",
                "needs --schema FILE or --infer-schema N",
            )
            .into());
        }
    };
    let table = setup.block_on(commit::ensure_table(catalog.as_ref(), &cfg.table, &shape))?;
    let dead = dead_letters::prepare(
        &cfg,
        &setup,
        catalog.as_ref(),
        &storage,
        &table,
        &source_cfg,
        &committed,
    )?;
    drop(catalog);
    drop(setup);
    let planned = started.elapsed();
    for p in &plans {
        tracing::info!(partition = p.partition, start = p.start, high_watermark = p.high_watermark, stop_at = ?p.stop_at, "partition");
    }
    let (mut table_files, arrow_schema) = TableFiles::for_table(&table, &cfg.table, &storage)?;
    let evolution = match cfg.evolve {
        true => {
            let meta = table.metadata();
            let e = Evolution::new(
                meta.current_schema().as_ref().clone(),
                meta.last_column_id(),
            )?;
            Some(Arc::new(e))
        }
        false => None,
    };
    table_files.evolution = evolution.clone();
    let start_offsets: Offsets = plans.iter().map(|p| (p.partition, p.start)).collect();
    let clock = EpochClock::new(first_epoch);

    let router = Router::new(shards, shard_cores as u32);
    let owned = assign_partitions(
        &plans.iter().map(|p| p.partition).collect::<Vec<_>>(),
        placement.fetch.len(),
    );
    let live = Arc::new(Live {
        topic: cfg.topic.clone(),
        table: cfg.table.to_string(),
        overload: format!("{:?}", cfg.overload).to_lowercase(),
        live_threshold: cfg.live_threshold,
        started,
        fetch: (0..placement.fetch.len())
            .map(|f| {
                let starts: Vec<(i32, i64)> = plans
                    .iter()
                    .filter(|p| owned[f].contains(&p.partition))
                    .map(|p| (p.partition, p.start))
                    .collect();
                let l = FetchLive::new(f, placement.fetch[f], &starts, shard_cores);
                Arc::new(crossbeam_utils::CachePadded::new(l))
            })
            .collect(),
        shard_cores: (0..shard_cores)
            .map(|i| {
                let hosted = (0..shards).filter(|s| router.core_of(*s) == i).collect();
                (placement.shard[i], hosted)
            })
            .collect(),
        unknown_fields: Live::per_shard_core(shard_cores),
        io_cpu: placement.io,
        io: Live::new_io(start_offsets.clone()),
    });
    publish(live.clone());
    let listener = match cfg.http_addr {
        Some(addr) => Some(listen(addr)?),
        None => None,
    };

    // rings[f][s]: fetch core f → shard core s.
    let mut to_shards: Vec<Vec<bridge::Sender<ToShard>>> =
        (0..placement.fetch.len()).map(|_| Vec::new()).collect();
    let mut shard_inputs: Vec<Vec<bridge::Receiver<ToShard>>> =
        (0..shard_cores).map(|_| Vec::new()).collect();
    for senders in &mut to_shards {
        for inputs in &mut shard_inputs {
            let (tx, rx) = bridge::weighted(
                cfg.ring_batches.get(),
                cfg.queue_capacity.get(),
                BARRIER_SLOTS,
                ToShard::records,
            );
            senders.push(tx);
            inputs.push(rx);
        }
    }
    let mut file_rings = Vec::new();

    // Time-ordered, so a table's data files sort in the order runs wrote them.
    let run_id = format!(
        "{:013}-{:08x}",
        crate::metrics::now_ms(),
        uuid::Uuid::new_v4().as_u128() as u32
    );
    let policy = RollPolicy {
        batch_rows: cfg.batch_rows,
        file_max_bytes: cfg.file_max_bytes.0,
        file_max_rows: cfg.file_max_rows,
    };
    let encode = encode_options(&cfg, avro);

    let mut errors: Vec<Error> = Vec::new();
    let mut shard_handles = Vec::new();
    for (i, inputs) in shard_inputs.into_iter().enumerate() {
        let (tx, rx) = bridge::channel::<ToIo>(FILE_RING);
        file_rings.push(rx);
        // Data and dead-letter files share the name scheme, in their own tables' folders.
        let names = FileNames::new(run_id.clone(), i);
        let core = ShardCore {
            core_index: i,
            inputs: Fan::new(inputs),
            to_io: tx,
            encoder: FileEncoder::new(i, arrow_schema.clone(), &encode)?,
            state: ShardState::new(policy, shards, shard_cores as u32),
            first_epoch,
            names: names.clone(),
            latency_horizon: cfg.commit_interval,
            rejected: Vec::new(),
            dead: match &dead {
                Some((plan, set_aside)) => Some(DeadLetters {
                    out: dead_letters::shard_out(plan, i, &encode, &names)?,
                    set_aside: set_aside.clone(),
                }),
                None => None,
            },
            evolve: evolution.clone().map(|evolution| Evolving {
                evolution,
                encode: encode.clone(),
            }),
            live: live.clone(),
            slow: cfg
                .slow_shard
                .filter(|(shard, _)| *shard < shards && router.core_of(*shard) == i),
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
        let inputs = Fan::new(file_rings);
        let (ident, topic, spec) = (cfg.table.clone(), cfg.topic.clone(), catalog_spec.clone());
        let shape = shape.clone();
        let retry = RetryPolicy {
            base: cfg.commit_retry_base,
            cap: cfg.commit_retry_cap,
            attempts: cfg.commit_retries.get(),
        };
        let (clock, interval) = (clock.clone(), cfg.commit_interval);
        let (live, progress) = (live.clone(), cfg.progress_interval);
        let die_after_dlq_commit = cfg.die_after_dlq_commit;
        let evolution = evolution.clone();
        let source_cfg = source_cfg.clone();
        let run_cfg = cfg.clone();
        runtime::spawn_tokio("io", placement.io, move || async move {
            if let Some(l) = listener {
                runtime::detach(crate::metrics::http::serve(
                    l,
                    crate::metrics::http::Served::Run(live.clone()),
                ));
            }
            if let Some(every) = progress {
                runtime::detach(crate::metrics::http::progress(live.clone(), every));
            }
            let r = async {
                // The catalog's connection pool belongs to this runtime: open it here.
                let catalog = commit::open_catalog(&spec, table_files.storage.clone()).await?;
                let table = commit::ensure_table(catalog.as_ref(), &ident, &shape).await?;
                let dead_letters = match dead {
                    Some((plan, _)) => Some(
                        dead_letters::io_sink(
                            plan,
                            catalog.clone(),
                            &source_cfg,
                            retry,
                            die_after_dlq_commit,
                        )
                        .await?,
                    ),
                    None => None,
                };
                let gate = Arc::new(crate::sink::guard::Gate::default());
                let storage = table_files.storage.clone();
                let maintainer =
                    maintain::in_process(&run_cfg, &spec, catalog.clone(), storage, gate.clone());
                if let Some((m, every)) = maintainer.await? {
                    runtime::detach(maintain::every(m, every, live.clone()));
                }
                let mut committer =
                    Committer::new(catalog, ident, topic, retry, table).with_gate(gate);
                if let Some(e) = evolution {
                    committer = committer.with_evolution(e);
                }
                let role = IoRole {
                    inputs,
                    dead_letters,
                    committer,
                    files: table_files,
                    tracker: EpochTracker::new(shard_cores, start_offsets),
                    clock,
                    commit_interval: interval,
                    max_in_flight: UPLOADS_IN_FLIGHT,
                    live,
                };
                role.run().await
            }
            .await;
            if r.is_err() {
                ctl.abort();
            }
            r
        })
    };

    let mut fetch_handles = Vec::new();
    if errors.is_empty() {
        for (f, senders) in to_shards.into_iter().enumerate() {
            let partitions: Vec<_> = plans
                .iter()
                .copied()
                .filter(|p| owned[f].contains(&p.partition))
                .collect();
            let ids: Vec<i32> = partitions.iter().map(|p| p.partition).collect();
            let overload = Overload::new(cfg.overload, cfg.live_threshold, &ids);
            let emitter = Emitter::new(
                f,
                router.clone(),
                senders,
                clock.clone(),
                first_epoch,
                overload,
                live.fetch[f].clone(),
            );
            let ctl = control.clone();
            let spawned = match &input {
                Input::Kafka => {
                    let mut core = FetchCore {
                        partitions,
                        emitter,
                    };
                    let cfg = source_cfg.clone();
                    runtime::spawn_tokio("fetch", placement.fetch[f], move || async move {
                        let r = core.run(&cfg, &ctl).await;
                        if r.is_err() {
                            ctl.abort();
                        }
                        drop(core); // closes the rings only after a failure is flagged
                        r
                    })
                }
                Input::Memory(m) => {
                    let mut core = MemorySource {
                        input: m.clone(),
                        partitions: ids,
                        emitter,
                    };
                    runtime::spawn_tokio("fetch", placement.fetch[f], move || async move {
                        let r = core.run(&ctl).await;
                        if r.is_err() {
                            ctl.abort();
                        }
                        drop(core);
                        r
                    })
                }
            };
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
    if let Some(((cold, cold_rows), (hot, hot_rows))) = summary.skew() {
        tracing::info!(
            partitions = summary.per_partition.len(),
            shards = summary.per_shard.len(),
            hottest_shard = hot,
            hottest_rows = hot_rows,
            coldest_shard = cold,
            coldest_rows = cold_rows,
            max_queue_depth_per_shard_core = ?summary.max_queue_depth,
            "skew"
        );
    }
    if summary.dropped > 0 {
        tracing::warn!(
            dropped = summary.dropped,
            per_partition = ?summary.dropped_per_partition,
            per_shard = ?summary.dropped_per_shard,
            ledger_ranges = io_stats.dropped_ranges,
            "records dropped at the live tail; `icefall replay-dropped` re-reads them"
        );
    }
    if io_stats.late_timestamps > 0 {
        tracing::warn!(
            records = io_stats.late_timestamps,
            "record timestamps later than their epoch's latency reference (clock skew?): their latency reads high"
        );
    }
    let kept = summary.records - summary.dropped;
    let landed = io_stats.rows + io_stats.dead_letter_rows + summary.dead_letters_skipped;
    if summary.rows_written != kept || landed != kept {
        tracing::error!(
            routed = summary.records,
            dropped = summary.dropped,
            encoded = summary.rows_written,
            uploaded = io_stats.rows,
            dead_letters = io_stats.dead_letter_rows,
            dead_letters_skipped = summary.dead_letters_skipped,
            "record counts disagree"
        );
    }
    Ok(summary)
}
