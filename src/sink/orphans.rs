//! The orphan sweep of `icefall maintain --orphans`: files under the table's location that
//! nothing references and that are older than a threshold. Nothing includes the current and
//! logged metadata files, every snapshot's manifest list, manifests and the data files they list
//! (deleted entries too), statistics files, and the ledger files named by summaries or by
//! maintenance's table properties. Such orphans are uploads a killed run never committed, and the
//! staging files of uploads it left unfinished. The threshold protects uploads still on their way
//! to a commit.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use iceberg::table::Table;
use object_store::{ObjectStore, ObjectStoreExt};

use super::SinkError;
use super::commit::catalog_err;
use super::storage::ObjectStoreStorage;
use crate::offsets::LedgerKind;

/// What a sweep found (and, unless dry, deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Orphans {
    pub paths: Vec<String>,
    pub bytes: u64,
}

/// Every file the table references, as `storage` locates them.
async fn referenced(
    table: &Table,
    storage: &ObjectStoreStorage,
) -> Result<HashSet<String>, SinkError> {
    let meta = table.metadata();
    let mut paths: Vec<String> = Vec::new();
    paths.extend(table.metadata_location().map(str::to_owned));
    paths.extend(meta.metadata_log().iter().map(|m| m.metadata_file.clone()));
    paths.extend(meta.statistics_iter().map(|s| s.statistics_path.clone()));
    paths.extend(
        meta.partition_statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    for (k, v) in meta.properties() {
        if k.starts_with("icefall.ledger-files.") {
            let files: Vec<String> = serde_json::from_str(v).unwrap_or_default();
            paths.extend(files);
        }
    }
    let mut files = super::maintain::Files::default();
    for s in meta.snapshots() {
        let kinds = [LedgerKind::Dropped, LedgerKind::Replayed];
        for (k, v) in &s.summary().additional_properties {
            if kinds.iter().any(|kind| k.starts_with(&kind.file_key(""))) {
                paths.push(v.clone());
            }
        }
        let named = files.of(table, s.snapshot_id()).await?;
        paths.push(named.manifest_list);
    }
    // Every manifest any snapshot names, and every file each lists (deleted entries too).
    for (manifest, entries) in files.manifests {
        paths.push(manifest);
        paths.extend(entries.into_iter().map(|e| e.0));
    }
    let mut out = HashSet::new();
    for p in paths {
        let located = storage
            .locate(&p)
            .map_err(catalog_err(format!("cannot locate {p}")))?;
        out.insert(located.to_string());
    }
    Ok(out)
}

/// The store, and every object under `location`.
async fn list(
    storage: &ObjectStoreStorage,
    location: &str,
) -> Result<
    (
        std::sync::Arc<dyn ObjectStore>,
        Vec<object_store::ObjectMeta>,
    ),
    SinkError,
> {
    let store = storage
        .store()
        .map_err(catalog_err(format!("cannot open the store of {location}")))?;
    let prefix = storage
        .locate(location)
        .map_err(catalog_err(format!("cannot locate {location}")))?;
    let listing = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| unexpected(format!("listing {location}"), e))?;
    Ok((store.clone(), listing))
}

/// A store's failure, in the catalog's error shape (the exit code is the same).
fn unexpected(what: String, e: impl std::fmt::Display) -> SinkError {
    SinkError::Catalog {
        what,
        source: Box::new(iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            e.to_string(),
        )),
    }
}

/// Finds the orphans under `table`'s location older than `cutoff_ms`; deletes them unless `dry`.
pub async fn sweep(
    table: &Table,
    storage: &ObjectStoreStorage,
    cutoff_ms: i64,
    dry: bool,
) -> Result<Orphans, SinkError> {
    let keep = referenced(table, storage).await?;
    let location = table.metadata().location();
    let (store, listing) = list(storage, location).await?;
    let mut out = Orphans::default();
    for o in listing {
        let path = o.location.to_string();
        if keep.contains(&path) || o.last_modified.timestamp_millis() >= cutoff_ms {
            continue;
        }
        if !dry {
            store
                .delete(&o.location)
                .await
                .map_err(|e| SinkError::Catalog {
                    what: format!("deleting the orphan {path}"),
                    source: Box::new(iceberg::Error::new(
                        iceberg::ErrorKind::Unexpected,
                        e.to_string(),
                    )),
                })?;
        }
        out.bytes += o.size;
        out.paths.push(path);
    }
    if let Some(dir) = location.strip_prefix("file://") {
        staging(std::path::Path::new(dir), cutoff_ms, dry, &mut out)?;
    }
    out.paths.sort();
    Ok(out)
}

/// Metadata files of the table that neither the current one nor its metadata log (trimmed to
/// `write.metadata.previous-versions-max` at each commit) names any more, as Iceberg's
/// `write.metadata.delete-after-commit` would delete them. The files are listed first and the
/// table loaded after, so a commit in between keeps its file; and only files written before
/// `cutoff_ms` go, so a writer's metadata file whose compare-and-swap is still on its way stays.
pub async fn old_metadata(
    catalog: &dyn iceberg::Catalog,
    ident: &crate::config::TableIdent,
    storage: &ObjectStoreStorage,
    cutoff_ms: i64,
    dry: bool,
) -> Result<Orphans, SinkError> {
    let Some(before) = super::commit::load_existing(catalog, ident, None).await? else {
        return Ok(Orphans::default());
    };
    let dir = format!(
        "{}/metadata",
        before.metadata().location().trim_end_matches('/')
    );
    let (store, listing) = list(storage, &dir).await?;
    let Some(table) = super::commit::load_existing(catalog, ident, None).await? else {
        return Ok(Orphans::default());
    };
    let mut keep = HashSet::new();
    for p in table.metadata_location().into_iter().chain(
        table
            .metadata()
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.as_str()),
    ) {
        let located = storage
            .locate(p)
            .map_err(catalog_err(format!("cannot locate {p}")))?;
        keep.insert(located.to_string());
    }
    let mut out = Orphans::default();
    for o in listing {
        let path = o.location.to_string();
        let old = o.last_modified.timestamp_millis() < cutoff_ms;
        if !path.ends_with(".metadata.json") || keep.contains(&path) || !old {
            continue;
        }
        if !dry {
            store
                .delete(&o.location)
                .await
                .map_err(|e| unexpected(format!("deleting the old metadata file {path}"), e))?;
        }
        out.bytes += o.size;
        out.paths.push(path);
    }
    out.paths.sort();
    Ok(out)
}

/// A local store's unfinished multipart uploads (`<name>#<n>`), which its listing hides.
fn staging(
    dir: &std::path::Path,
    cutoff_ms: i64,
    dry: bool,
    out: &mut Orphans,
) -> Result<(), SinkError> {
    let err = |path: &std::path::Path, e: std::io::Error| {
        unexpected(format!("sweeping {}", path.display()), e)
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let unfinished = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| {
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                });
            if !unfinished || modified_ms >= cutoff_ms {
                continue;
            }
            if !dry {
                std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
            }
            out.bytes += meta.len();
            out.paths.push(path.display().to_string());
        }
    }
    Ok(())
}
