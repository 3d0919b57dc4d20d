//! One maintenance pass on an Iceberg table: the snapshots `maintain::plan_expiry` lets go are
//! expired in one commit, which also stores the drop and replay ledgers they carried (table
//! properties `icefall.ledger.<kind>.<topic>`, read back by `commit::ledger`). Only after that
//! commit has succeeded are the manifest lists, manifests and data files deleted that no kept
//! snapshot reaches (`maintain::unreachable`). A failed commit deletes nothing.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Instant;

use iceberg::Catalog;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use super::SinkError;
use super::commit::catalog_err;
use super::guard::Gate;
use super::replace::Pointer;
use super::rewrite;
use super::storage::ObjectStoreStorage;
use crate::config::maintain::MaintainConfig;
use crate::maintain::{
    Manifests, MergePolicy, Policy, Snapshot, SnapshotFiles, plan_expiry, unreachable,
};
use crate::offsets::{Ledger, LedgerKind, Ranges};

/// Iceberg's defaults for the properties a pass honours.
const MAX_AGE_MS: i64 = 5 * 24 * 3600 * 1000;
const MAX_AGE_KEY: &str = "history.expire.max-snapshot-age-ms";
const RETAIN_KEY: &str = "history.expire.min-snapshots-to-keep";

/// What one pass did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    pub expired_snapshots: usize,
    pub deleted_files: usize,
    pub deleted_bytes: u64,
    pub manifests_before: usize,
    pub manifests_after: usize,
    /// Small data files rewritten, and the files they became.
    pub compacted_files: usize,
    pub into_files: usize,
    /// Unreferenced files swept (`--orphans`).
    pub orphans: usize,
    pub seconds: f64,
}

impl Pass {
    /// The line `icefall maintain` prints.
    pub fn line(&self) -> String {
        format!(
            "maintained expired_snapshots={} deleted_files={} deleted_bytes={} manifests_before={} manifests_after={} compacted_files={} into_files={} orphans={} seconds={:.3}",
            self.expired_snapshots,
            self.deleted_files,
            self.deleted_bytes,
            self.manifests_before,
            self.manifests_after,
            self.compacted_files,
            self.into_files,
            self.orphans,
            self.seconds
        )
    }
}

/// The table property holding the folded `kind` ledger of `topic`.
pub fn ledger_property(kind: LedgerKind, topic: &str) -> String {
    format!("icefall.ledger.{}.{topic}", kind.name())
}

/// The table property listing the folded `kind` ledger files of `topic` (a JSON array).
pub fn ledger_files_property(kind: LedgerKind, topic: &str) -> String {
    format!("icefall.ledger-files.{}.{topic}", kind.name())
}

fn policy(table: &Table, cfg: &MaintainConfig, now_ms: i64) -> Policy {
    let props = table.metadata().properties();
    let age = cfg.expire_older_than.map_or_else(
        || {
            props
                .get(MAX_AGE_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(MAX_AGE_MS)
        },
        |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
    );
    let retain_last = cfg.retain_last.unwrap_or_else(|| {
        props
            .get(RETAIN_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(NonZeroUsize::MIN)
    });
    Policy {
        cutoff_ms: now_ms.saturating_sub(age),
        retain_last,
    }
}

/// Every snapshot's manifest list and manifests, each manifest's entries read once however many
/// snapshots name it; and the sizes of what was read, for the bytes a pass frees.
#[derive(Default)]
pub(super) struct Files {
    pub(super) manifests: Manifests,
    sizes: HashMap<String, u64>,
}

impl Files {
    pub(super) async fn of(&mut self, table: &Table, id: i64) -> Result<SnapshotFiles, SinkError> {
        let what = || format!("reading the manifests of snapshot {id}");
        let Some(s) = table.metadata().snapshot_by_id(id) else {
            return Ok(SnapshotFiles::default());
        };
        let list = table
            .manifest_list_reader(s)
            .load()
            .await
            .map_err(catalog_err(what()))?;
        // The list's size (a missing list counts as 0).
        if let Ok(input) = table.file_io().new_input(s.manifest_list())
            && let Ok(m) = input.metadata().await
        {
            self.sizes.insert(s.manifest_list().to_owned(), m.size);
        }
        let mut out = SnapshotFiles {
            manifest_list: s.manifest_list().to_owned(),
            manifests: Vec::with_capacity(list.entries().len()),
        };
        for m in list.entries() {
            if !self.manifests.contains_key(&m.manifest_path) {
                let manifest = m
                    .load_manifest(table.file_io())
                    .await
                    .map_err(catalog_err(what()))?;
                let entries = manifest
                    .entries()
                    .iter()
                    .map(|e| {
                        let f = e.data_file();
                        self.sizes
                            .insert(f.file_path().to_owned(), f.file_size_in_bytes());
                        (f.file_path().to_owned(), e.is_alive())
                    })
                    .collect();
                self.sizes
                    .insert(m.manifest_path.clone(), m.manifest_length.max(0) as u64);
                self.manifests.insert(m.manifest_path.clone(), entries);
            }
            out.manifests.push(m.manifest_path.clone());
        }
        Ok(out)
    }
}

/// The folded ledgers merged with what the table's properties already hold.
fn fold_properties(table: &Table, folded: &[(String, Ledger)]) -> Vec<(String, String)> {
    let props = table.metadata().properties();
    let mut out = Vec::new();
    for (topic, ledger) in folded {
        for (kind, ranges) in [
            (LedgerKind::Dropped, &ledger.dropped),
            (LedgerKind::Replayed, &ledger.replayed),
        ] {
            let key = ledger_property(kind, topic);
            let mut all = props
                .get(&key)
                .and_then(|v| Ranges::decode(v).ok())
                .unwrap_or_default();
            all.union(ranges);
            if !all.is_empty() {
                out.push((key, all.encode()));
            }
            let files_key = ledger_files_property(kind, topic);
            let mut files: Vec<String> = props
                .get(&files_key)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            files.extend(
                ledger
                    .files
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, f)| f.clone()),
            );
            files.sort();
            files.dedup();
            if !files.is_empty() {
                out.push((files_key, serde_json::Value::from(files).to_string()));
            }
        }
    }
    out
}

/// Iceberg's defaults for the rewrites' table properties.
const TARGET_FILE_KEY: &str = "write.target-file-size-bytes";
const TARGET_FILE_BYTES: u64 = 512 << 20;
const MERGE_ENABLED_KEY: &str = "commit.manifest-merge.enabled";
const MANIFEST_TARGET_KEY: &str = "commit.manifest.target-size-bytes";
const MANIFEST_TARGET_BYTES: u64 = 8 << 20;
const MERGE_MIN_COUNT_KEY: &str = "commit.manifest.min-count-to-merge";
const MERGE_MIN_COUNT: usize = 100;

/// The compaction target and (if merging is on) the merge policy, flags over table properties.
fn rewrite_settings(table: &Table, cfg: &MaintainConfig) -> (Option<u64>, Option<MergePolicy>) {
    let props = table.metadata().properties();
    let num = |k: &str, d: u64| props.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let target = cfg
        .target_file_size
        .unwrap_or_else(|| num(TARGET_FILE_KEY, TARGET_FILE_BYTES));
    let enabled = props.get(MERGE_ENABLED_KEY).is_none_or(|v| v != "false");
    let merge = (cfg.merge_manifests && enabled).then(|| MergePolicy {
        target_bytes: num(MANIFEST_TARGET_KEY, MANIFEST_TARGET_BYTES),
        min_count: num(MERGE_MIN_COUNT_KEY, MERGE_MIN_COUNT as u64) as usize,
    });
    (cfg.compact.then_some(target), merge)
}

/// A whole pass but the sweeps: compaction and manifest merging (SQL catalogs; `pointer` is
/// `None` for REST), then expiry and the reachable-file cleanup.
pub async fn run(
    catalog: &dyn Catalog,
    pointer: Option<&Pointer>,
    storage: &ObjectStoreStorage,
    ident: &crate::config::TableIdent,
    cfg: &MaintainConfig,
    now_ms: i64,
) -> Result<Pass, SinkError> {
    let started = Instant::now();
    let Some(table) = super::commit::load_existing(catalog, ident, None).await? else {
        return Err(SinkError::Maintain {
            table: ident.to_string(),
            reason: "no such table".into(),
        });
    };
    // The list alone: its manifests are read by the steps that need them.
    let before = match table.metadata().current_snapshot() {
        Some(s) => table
            .manifest_list_reader(s)
            .load()
            .await
            .map_err(catalog_err(format!("reading the manifest list of {ident}")))?
            .entries()
            .len(),
        None => 0,
    };
    let (target, merge) = rewrite_settings(&table, cfg);
    let (mut compacted, mut into) = (0, 0);
    match pointer {
        Some(p) => {
            if let Some(target) = target {
                let c = rewrite::compact(catalog, p, storage, ident, target, cfg.dry_run).await?;
                (compacted, into) = (c.files, c.into);
            }
            if let Some(policy) = merge {
                rewrite::merge_manifests(catalog, p, ident, policy, cfg.dry_run).await?;
            }
        }
        None if target.is_some() || merge.is_some() => {
            tracing::info!("a REST catalog: no compaction and no manifest merging");
        }
        None => {}
    }
    let gate = pointer.and_then(Pointer::gate);
    let mut pass = expire(catalog, ident, cfg, now_ms, gate).await?;
    pass.manifests_before = before;
    pass.compacted_files = compacted;
    pass.into_files = into;
    pass.seconds = started.elapsed().as_secs_f64();
    Ok(pass)
}

/// Attempts of a pass whose commit loses the race to a writer's (each plans afresh).
const ATTEMPTS: u32 = 5;

/// Expires what the policy lets go on `ident` and deletes what that leaves unreachable. A commit that loses the compare-and-swap to a concurrent writer is
/// planned again on the new metadata, up to [`ATTEMPTS`] times.
pub async fn expire(
    catalog: &dyn Catalog,
    ident: &crate::config::TableIdent,
    cfg: &MaintainConfig,
    now_ms: i64,
    gate: Option<&Gate>,
) -> Result<Pass, SinkError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match pass(catalog, ident, cfg, now_ms, gate).await {
            Err(SinkError::Catalog { source, .. })
                if source.kind() == iceberg::ErrorKind::CatalogCommitConflicts
                    && attempt < ATTEMPTS =>
            {
                tracing::info!(
                    attempt,
                    "a writer committed meanwhile: planning the pass again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            Ok(mut p) => {
                p.seconds = started.elapsed().as_secs_f64();
                return Ok(p);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn pass(
    catalog: &dyn Catalog,
    ident: &crate::config::TableIdent,
    cfg: &MaintainConfig,
    now_ms: i64,
    gate: Option<&Gate>,
) -> Result<Pass, SinkError> {
    let table = super::commit::load(catalog, ident).await?;
    let meta = table.metadata();
    let snapshots: Vec<Snapshot<'_>> = meta
        .snapshots()
        .map(|s| Snapshot {
            id: s.snapshot_id(),
            parent: s.parent_snapshot_id(),
            timestamp_ms: s.timestamp_ms(),
            summary: &s.summary().additional_properties,
        })
        .collect();
    let plan = plan_expiry(
        &snapshots,
        meta.current_snapshot_id(),
        policy(&table, cfg, now_ms),
    )
    .map_err(|e| SinkError::Checkpoint(e.to_string()))?;
    let mut files = Files::default();
    let current = match meta.current_snapshot_id() {
        Some(c) => files.of(&table, c).await?.manifests.len(),
        None => 0,
    };
    let mut out = Pass {
        manifests_before: current,
        manifests_after: current,
        ..Pass::default()
    };
    if plan.expire.is_empty() {
        return Ok(out);
    }
    let mut expired = Vec::new();
    for s in &plan.expire {
        expired.push(files.of(&table, *s).await?);
    }
    out.expired_snapshots = plan.expire.len();
    let committed = if cfg.dry_run {
        table.clone()
    } else {
        let tx = Transaction::new(&table);
        let mut props = tx.update_table_properties();
        for (k, v) in fold_properties(&table, &plan.folded) {
            props = props.set(k, v);
        }
        let tx = props
            .apply(tx)
            .map_err(catalog_err("cannot plan the ledger's properties"))?;
        let tx = tx
            .expire_snapshots()
            .expire_snapshot_ids(plan.expire.iter().copied())
            .expire_older_than_ms(0)
            .retain_last(1)
            .apply(tx)
            .map_err(catalog_err("cannot plan the expiry"))?;
        let mut turn = Gate::turn(gate).await;
        let t = tx
            .commit(catalog)
            .await
            .map_err(catalog_err(format!("expiring snapshots of {ident}")))?;
        Gate::count(&mut turn);
        t
    };
    // What the table keeps now, writers' new snapshots included.
    let mut kept = Vec::new();
    let gone: std::collections::BTreeSet<i64> = plan.expire.iter().copied().collect();
    let ids: Vec<i64> = committed
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .filter(|s| !gone.contains(s))
        .collect();
    for s in ids {
        kept.push(files.of(&committed, s).await?);
    }
    let doomed = unreachable(&kept, &expired, &files.manifests);
    for path in doomed
        .manifest_lists
        .iter()
        .chain(&doomed.manifests)
        .chain(&doomed.data_files)
    {
        if !cfg.dry_run {
            committed
                .file_io()
                .delete(path)
                .await
                .map_err(catalog_err(format!("deleting {path}")))?;
        }
        out.deleted_files += 1;
        out.deleted_bytes += files.sizes.get(path).copied().unwrap_or(0);
    }
    if let Some(c) = committed.metadata().current_snapshot_id() {
        out.manifests_after = files.of(&committed, c).await?.manifests.len();
    }
    Ok(out)
}
