//! `icefall maintain`: opens the warehouse and the catalog as `run` does and runs one
//! maintenance pass (`sink::maintain`) on the table.

use crate::config::RunConfig;
use crate::sink::commit;
use crate::sink::maintain::{self, Pass};
use crate::sink::upload;

use super::{Error, catalog_spec, setup_runtime};

/// One pass; what it did.
pub fn maintain(cfg: &RunConfig) -> Result<Pass, Error> {
    let rt = setup_runtime()?;
    rt.block_on(async {
        let (storage, warehouse_url) = upload::open_warehouse(&cfg.warehouse).await?;
        let spec = catalog_spec(cfg, warehouse_url)?;
        let catalog = commit::open_catalog(&spec, storage).await?;
        let pass = maintain::expire(
            catalog.as_ref(),
            &cfg.table,
            &cfg.maintain,
            crate::metrics::now_ms(),
        )
        .await?;
        Ok(pass)
    })
}
