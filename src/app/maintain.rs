//! Maintenance passes (`sink::maintain`): `icefall maintain` opens the warehouse and the
//! catalog as `run` does and runs one; `run --maintain-interval` runs one on its io core every
//! interval, taking turns with its own writer. Either takes the table's lease first
//! (`sink::lease`) and skips its pass while another maintainer holds it.

use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;

use crate::config::maintain::MaintainConfig;
use crate::config::{RunConfig, TableIdent};
use crate::metrics::live::Live;
use crate::sink::SinkError;
use crate::sink::commit;
use crate::sink::guard::Gate;
use crate::sink::lease;
use crate::sink::maintain::{self, Pass};
use crate::sink::orphans;
use crate::sink::replace::Pointer;
use crate::sink::storage::ObjectStoreStorage;
use crate::sink::upload;

use super::{Error, catalog_spec, setup_runtime};

/// A metadata file younger than this may belong to a commit still on its way: it stays.
const METADATA_IN_FLIGHT_MS: i64 = 10 * 60 * 1000;
/// How long `icefall maintain`'s lease lasts (a pass that takes longer is still safe).
const LEASE_MS: i64 = 15 * 60 * 1000;

/// What a pass works on.
pub struct Maintainer {
    pub catalog: Arc<dyn Catalog>,
    pub pointer: Option<Pointer>,
    pub storage: ObjectStoreStorage,
    pub table: TableIdent,
    pub cfg: MaintainConfig,
    pub holder: String,
}

/// How one attempt at a pass ended.
pub enum Outcome {
    Done(Pass),
    /// Another maintainer holds the lease.
    Skipped(lease::Held),
}

impl Maintainer {
    /// One pass under the lease (`lease_ms` long): rewrites, expiry, old metadata files, and
    /// with `--orphans` the sweep. `release`: give the lease up after it (a one-off pass);
    /// else keep it for the next.
    pub async fn pass(&self, lease_ms: i64, release: bool) -> Result<Outcome, SinkError> {
        let now = crate::metrics::now_ms();
        let leased = match (&self.pointer, self.cfg.ignore_lease || self.cfg.dry_run) {
            (Some(p), false) => {
                if let Some(held) =
                    lease::acquire(p, &self.table, &self.holder, now, lease_ms).await?
                {
                    return Ok(Outcome::Skipped(held));
                }
                Some(p)
            }
            _ => None,
        };
        let r = self.pass_leased(now).await;
        if let Some(p) = leased.filter(|_| release)
            && let Err(e) = lease::release(p, &self.table, &self.holder).await
        {
            tracing::warn!(error = %e, "cannot release the maintenance lease (it expires)");
        }
        r.map(Outcome::Done)
    }

    async fn pass_leased(&self, now: i64) -> Result<Pass, SinkError> {
        let (c, m, t) = (self.catalog.as_ref(), &self.cfg, &self.table);
        let mut pass = maintain::run(c, self.pointer.as_ref(), &self.storage, t, m, now).await?;
        let settled = now.saturating_sub(METADATA_IN_FLIGHT_MS);
        let old = orphans::old_metadata(c, t, &self.storage, settled, m.dry_run).await?;
        pass.deleted_files += old.paths.len();
        pass.deleted_bytes += old.bytes;
        if let Some(age) = m.orphans {
            let table = commit::load_existing(c, t, None)
                .await?
                .ok_or_else(|| SinkError::Checkpoint(format!("no table {t}")))?;
            let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            let found = orphans::sweep(&table, &self.storage, cutoff, m.dry_run).await?;
            for p in &found.paths {
                match m.dry_run {
                    true => tracing::info!(path = %p, "orphan (dry run: kept)"),
                    false => tracing::info!(path = %p, "orphan deleted"),
                }
            }
            pass.orphans = found.paths.len();
            if !m.dry_run {
                pass.deleted_bytes += found.bytes;
            }
        }
        Ok(pass)
    }
}

/// `icefall maintain`: one pass; what it did (nothing while another maintainer holds the lease).
pub fn maintain(cfg: &RunConfig) -> Result<Pass, Error> {
    let rt = setup_runtime()?;
    rt.block_on(async {
        let (storage, warehouse_url) = upload::open_warehouse(&cfg.warehouse).await?;
        let spec = catalog_spec(cfg, warehouse_url)?;
        let catalog = commit::open_catalog(&spec, storage.clone()).await?;
        let pointer = Pointer::open(&spec.uri).await?;
        let m = Maintainer {
            catalog,
            pointer: pointer.map(|p| p.with_pause(cfg.maintain.pause_before_swap)),
            storage,
            table: cfg.table.clone(),
            cfg: cfg.maintain.clone(),
            holder: lease::holder_name(),
        };
        match m.pass(LEASE_MS, true).await? {
            Outcome::Done(p) => Ok(p),
            Outcome::Skipped(held) => {
                tracing::warn!(
                    holder = %held.holder,
                    until_ms = held.expires_ms,
                    "another maintainer holds the lease of {}: pass skipped (--ignore-lease runs anyway)",
                    cfg.table
                );
                Ok(Pass::default())
            }
        }
    })
}

/// `run --maintain-interval`: a pass every `every` on the io core, for as long as the run goes.
/// A failed pass is logged and counted; the next one tries again.
pub async fn every(m: Maintainer, every: Duration, live: Arc<Live>) {
    // Longer than the interval: the holder keeps it from pass to pass while it lives.
    let lease_ms = i64::try_from(every.as_millis().saturating_mul(2)).unwrap_or(i64::MAX) + 60_000;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let r = m.pass(lease_ms, false).await;
        let mut io = live.io();
        let s = &mut io.maintenance;
        match r {
            Ok(Outcome::Done(p)) => {
                tracing::info!(table = %m.table, "{}", p.line());
                s.passes += 1;
                s.expired_snapshots += p.expired_snapshots as u64;
                s.deleted_files += p.deleted_files as u64;
                s.deleted_bytes += p.deleted_bytes;
                s.compacted_files += p.compacted_files as u64;
                s.into_files += p.into_files as u64;
                s.last_pass_ms = Some(crate::metrics::now_ms());
            }
            Ok(Outcome::Skipped(held)) => {
                tracing::info!(holder = %held.holder, "another maintainer holds the lease: pass skipped");
                s.skipped += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "maintenance pass failed; the next one tries again");
                s.failed += 1;
            }
        }
        s.seconds += started.elapsed().as_secs_f64();
    }
}

/// The in-process maintainer of `run`, sharing `gate` with the writer; `None` without
/// `--maintain-interval`.
pub async fn in_process(
    cfg: &RunConfig,
    spec: &commit::CatalogSpec,
    catalog: Arc<dyn Catalog>,
    storage: ObjectStoreStorage,
    gate: Arc<Gate>,
) -> Result<Option<(Maintainer, Duration)>, SinkError> {
    let Some(interval) = cfg.maintain.interval else {
        return Ok(None);
    };
    let pointer = Pointer::open(&spec.uri).await?.map(|p| p.with_gate(gate));
    let mut m = cfg.maintain.clone();
    // The orphan sweep stays with `icefall maintain --orphans`.
    m.orphans = None;
    m.dry_run = false;
    Ok(Some((
        Maintainer {
            catalog,
            pointer,
            storage,
            table: cfg.table.clone(),
            cfg: m,
            holder: lease::holder_name(),
        },
        interval,
    )))
}
