//! `icefall maintain`: opens the warehouse and the catalog as `run` does and runs one
//! maintenance pass (`sink::maintain`) on the table.

use crate::config::RunConfig;
use crate::sink::SinkError;
use crate::sink::commit;
use crate::sink::maintain::{self, Pass};
use crate::sink::orphans;
use crate::sink::replace;
use crate::sink::upload;

use super::{Error, catalog_spec, setup_runtime};

/// A metadata file younger than this may belong to a commit still on its way: it stays.
const METADATA_IN_FLIGHT_MS: i64 = 10 * 60 * 1000;

/// One pass; what it did.
pub fn maintain(cfg: &RunConfig) -> Result<Pass, Error> {
    let rt = setup_runtime()?;
    rt.block_on(async {
        let (storage, warehouse_url) = upload::open_warehouse(&cfg.warehouse).await?;
        let spec = catalog_spec(cfg, warehouse_url)?;
        let catalog = commit::open_catalog(&spec, storage.clone()).await?;
        let now = crate::metrics::now_ms();
        let pointer = replace::Pointer::open(&spec.uri).await?;
        let (c, m) = (catalog.as_ref(), &cfg.maintain);
        let mut pass = maintain::run(c, pointer.as_ref(), &storage, &cfg.table, m, now).await?;
        let settled = now.saturating_sub(METADATA_IN_FLIGHT_MS);
        let dry = cfg.maintain.dry_run;
        let old = orphans::old_metadata(catalog.as_ref(), &cfg.table, &storage, settled, dry);
        let old = old.await?;
        pass.deleted_files += old.paths.len();
        pass.deleted_bytes += old.bytes;
        if let Some(age) = cfg.maintain.orphans {
            let table = commit::load_existing(catalog.as_ref(), &cfg.table, None)
                .await?
                .ok_or_else(|| SinkError::Checkpoint(format!("no table {}", cfg.table)))?;
            let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            let found = orphans::sweep(&table, &storage, cutoff, cfg.maintain.dry_run).await?;
            let dry = cfg.maintain.dry_run;
            for p in &found.paths {
                match dry {
                    true => tracing::info!(path = %p, "orphan (dry run: kept)"),
                    false => tracing::info!(path = %p, "orphan deleted"),
                }
            }
            pass.orphans = found.paths.len();
            if !dry {
                pass.deleted_bytes += found.bytes;
            }
        }
        Ok(pass)
    })
}
