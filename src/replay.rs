//! `icefall replay-dropped`: re-read what the drop ledger names and append it, exactly once.
//!
//! Reads the table's whole history for the topic's drop ledger (`icefall.dropped.<topic>`) and
//! what earlier replays appended (`icefall.replayed.<topic>`), fetches exactly the difference from
//! Kafka, writes it as Parquet, and commits it as one snapshot whose summary names those ranges
//! as replayed. The run's offsets are carried forward unchanged, so a pipeline resuming after it
//! (or running beside it: the commit merges like a second writer's) is unaffected. A replay that
//! dies before its commit leaves only unreferenced files and is simply run again; one that
//! committed is never repeated, because its ranges are subtracted from then on.

use std::time::Instant;

use crate::app::{self, Error};
use crate::config::RunConfig;
use crate::offsets::{LedgerKind, Ranges};
use crate::record::Offsets;
use crate::sink::commit::{self, Committer, RetryPolicy};
use crate::sink::encode::FileEncoder;
use crate::sink::upload::{self, TableFiles};
use crate::sink::{DataFile, SinkError};
use crate::source::ranges::RangeReader;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Offsets the ledger named that no replay had appended yet.
    pub outstanding: u64,
    /// Records read back and appended.
    pub appended: u64,
    pub files: u64,
    pub snapshot: Option<i64>,
}

impl ReplaySummary {
    /// Named but not readable from Kafka any more inside a range (compaction): reported, and
    /// marked replayed so they are not looked for again.
    pub fn missing(&self) -> u64 {
        self.outstanding.saturating_sub(self.appended)
    }

    pub fn line(&self) -> String {
        format!(
            "replayed outstanding={} appended={} missing={} files={} snapshot={}",
            self.outstanding,
            self.appended,
            self.missing(),
            self.files,
            self.snapshot.map_or("none".to_string(), |s| s.to_string())
        )
    }
}

/// Replays every outstanding drop of `cfg.topic` into `cfg.table`.
pub fn replay(cfg: RunConfig) -> Result<ReplaySummary, Error> {
    let rt = app::setup_runtime()?;
    let avro = app::avro_schemas(&cfg, &rt)?;
    rt.block_on(replay_async(cfg, avro))
}

async fn replay_async(
    cfg: RunConfig,
    avro: Option<crate::decode::avro::AvroSchemas>,
) -> Result<ReplaySummary, Error> {
    let started = Instant::now();
    let (storage, warehouse_url) = upload::open_warehouse(&cfg.warehouse).await?;
    let spec = app::catalog_spec(&cfg, warehouse_url)?;
    let catalog = commit::open_catalog(&spec, storage.clone()).await?;
    let Some(table) = commit::load_existing(
        catalog.as_ref(),
        &cfg.table,
        crate::app::table_shape(&cfg, avro.as_ref())?.as_ref(),
    )
    .await?
    else {
        return Err(SinkError::Checkpoint(format!(
            "table {} does not exist: there is no drop ledger to replay",
            cfg.table
        ))
        .into());
    };
    let ledger = commit::ledger(&table, &cfg.topic).await?;
    let todo: Ranges = ledger.outstanding();
    let mut summary = ReplaySummary {
        outstanding: todo.count(),
        ..Default::default()
    };
    tracing::info!(
        dropped = ledger.dropped.count(),
        replayed_before = ledger.replayed.count(),
        outstanding = summary.outstanding,
        ranges = todo.range_count(),
        "drop ledger read"
    );
    if todo.is_empty() {
        return Ok(summary);
    }
    let epoch = commit::checkpoint(&table, &cfg.topic)?.map_or(0, |c| c.epoch);
    let (files, arrow_schema) = TableFiles::for_table(&table, &cfg.table, &storage)?;
    let mut encoder = FileEncoder::new(0, arrow_schema, &app::encode_options(&cfg, avro))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut data_files = Vec::new();
    let source = app::source_config(&cfg);
    let (mut client, readers) = RangeReader::open_all(&source, &todo).await?;
    for mut reader in readers {
        while let Some(records) = reader.next(&mut client, &source).await? {
            summary.appended += records.len() as u64;
            let mut rejected = Vec::new();
            let batch = crate::record::Batch::of_records(reader.partition(), &records);
            encoder.append(reader.partition(), batch.records(), &mut rejected)?;
            if let Some(bad) = rejected.into_iter().next() {
                return Err(
                    SinkError::undecodable(bad, reader.partition(), batch.records()).into(),
                );
            }
            if encoder.buffered_rows() >= cfg.batch_rows.get() {
                encoder.encode_buffered()?;
            }
            if encoder.file_bytes() as u64 >= cfg.file_max_bytes.0 {
                upload_file(&mut encoder, &files, &run_id, &mut data_files).await?;
            }
        }
    }
    upload_file(&mut encoder, &files, &run_id, &mut data_files).await?;
    summary.files = data_files.len() as u64;
    if summary.missing() > 0 {
        tracing::warn!(
            missing = summary.missing(),
            "offsets in the ledger no longer readable in Kafka (compacted, or transaction markers)"
        );
    }
    let retry = RetryPolicy {
        base: cfg.commit_retry_base,
        cap: cfg.commit_retry_cap,
        attempts: cfg.commit_retries.get(),
    };
    let mut committer = Committer::new(catalog, cfg.table.clone(), cfg.topic.clone(), retry, table);
    let extra =
        commit::ledger_entries(&files, LedgerKind::Replayed, &cfg.topic, &todo, &run_id).await?;
    let done = committer
        .commit(epoch, data_files, None, &Offsets::new(), extra)
        .await?;
    summary.snapshot = done.snapshot_id;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        attempts = done.attempts,
        "replay committed"
    );
    Ok(summary)
}

async fn upload_file(
    encoder: &mut FileEncoder,
    files: &TableFiles,
    run_id: &str,
    out: &mut Vec<DataFile>,
) -> Result<(), SinkError> {
    if let Some(file) = encoder.finish_file()? {
        let rel = format!("data/replay-{run_id}-{:06}.parquet", out.len());
        out.push(files.upload(rel, Box::new(file)).await?);
    }
    Ok(())
}
