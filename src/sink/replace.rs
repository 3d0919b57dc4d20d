//! The `replace` snapshots of maintenance (merged manifests, compacted files), committed by
//! icefall itself: the iceberg crate offers no rewrite action and its `TableCommit` cannot be
//! built outside the crate. A rewrite writes its manifests and manifest list, stages the next
//! metadata file with `TableMetadataBuilder`, and swaps the table's pointer in the SQL catalog
//! with the same compare-and-swap the catalog's own commits use (`metadata_location` must still
//! be the one the rewrite was planned on). A writer that committed meanwhile makes the swap
//! touch no row: a certain failure, after which the rewrite's own files are deleted. An error
//! from the database leaves the outcome unknown and deletes nothing.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use iceberg::MetadataLocation;
use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestListWriter, ManifestWriter,
    ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadataBuilder,
};
use iceberg::table::Table;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::SinkError;
use super::commit::{CATALOG_NAME, catalog_err};
use super::guard::Gate;
use crate::config::TableIdent;

/// Summary key naming what a maintenance snapshot did (`merge-manifests`, `compact`).
pub const MAINTENANCE_KEY: &str = "icefall.maintenance";

/// The SQL catalog's table pointer, swapped by maintenance's own commits.
pub struct Pointer {
    pool: AnyPool,
    postgres: bool,
    gate: Option<Arc<Gate>>,
    pause: Option<Duration>,
}

/// How a swap ended.
pub enum Swap {
    /// The table points at the rewrite (reload it to read it).
    Done,
    /// A writer committed first: nothing of the rewrite is in the table.
    Lost,
}

impl Pointer {
    /// The pointer of a SQL catalog at `uri`; `None` for a REST catalog (whose commits icefall
    /// cannot make itself: rewrites are skipped there).
    pub async fn open(uri: &str) -> Result<Option<Self>, SinkError> {
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return Ok(None);
        }
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(uri)
            .await
            .map_err(|e| SinkError::Maintain {
                table: "(catalog)".into(),
                reason: format!("cannot open the catalog database: {e}"),
            })?;
        Ok(Some(Self {
            pool,
            postgres: uri.starts_with("postgres"),
            gate: None,
            pause: None,
        }))
    }

    /// Swaps take turns with this process's writer through `gate`.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Test hook: every swap waits `pause` first (`--debug-pause-before-swap`).
    pub fn with_pause(mut self, pause: Option<Duration>) -> Self {
        self.pause = pause;
        self
    }

    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_deref()
    }

    pub(super) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `sql` with PostgreSQL's numbered placeholders when the database is PostgreSQL.
    pub(super) fn sql(&self, sql: &str) -> String {
        if !self.postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Points `ident` at `to` if it still points at `from`; `Ok(false)`: it did not. In-process
    /// writers sharing the gate wait while the swap runs.
    async fn swap(&self, ident: &TableIdent, from: &str, to: &str) -> Result<bool, sqlx::Error> {
        let sql = self.sql(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
             AND metadata_location = ?",
        );
        if let Some(p) = self.pause {
            tracing::info!(pause = ?p, "debug: pausing before the swap");
            tokio::time::sleep(p).await;
        }
        let mut turn = Gate::turn(self.gate.as_deref()).await;
        let done = sqlx::query(&sql)
            .bind(to)
            .bind(from)
            .bind(CATALOG_NAME)
            .bind(&ident.namespace)
            .bind(&ident.name)
            .bind(from)
            .execute(&self.pool)
            .await?;
        let swapped = done.rows_affected() == 1;
        if swapped {
            Gate::count(&mut turn);
        }
        Ok(swapped)
    }
}

/// A rewrite of the current snapshot's manifests, ready to commit.
pub struct Rewrite<'a> {
    pub table: &'a Table,
    pub snapshot_id: i64,
    /// The complete manifest list of the new snapshot (kept and new manifests).
    pub manifests: Vec<ManifestFile>,
    pub added: &'a [DataFile],
    pub deleted: &'a [DataFile],
    /// `MAINTENANCE_KEY`'s value.
    pub what: &'static str,
}

/// A fresh snapshot id no snapshot of `table` has.
pub fn new_snapshot_id(table: &Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id > 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// A manifest writer for data files of the table's default spec, named for `snapshot_id`.
pub fn manifest_writer(
    table: &Table,
    snapshot_id: i64,
    n: usize,
) -> Result<ManifestWriter, SinkError> {
    let meta = table.metadata();
    let path = format!(
        "{}/metadata/{}-m{n}.avro",
        meta.location().trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    let output = table
        .file_io()
        .new_output(&path)
        .map_err(catalog_err(format!("cannot create {path}")))?;
    Ok(ManifestWriterBuilder::new(
        output,
        Some(snapshot_id),
        meta.current_schema().clone(),
        meta.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data())
}

/// Whether icefall can rewrite this table's manifests (format version 2).
pub fn rewritable(table: &Table) -> bool {
    table.metadata().format_version() == FormatVersion::V2
}

fn summary(rw: &Rewrite<'_>) -> Summary {
    let parent = rw.table.metadata().current_snapshot();
    let before = |k: &str| -> u64 {
        parent
            .and_then(|s| s.summary().additional_properties.get(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let sum = |files: &[DataFile], f: fn(&DataFile) -> u64| files.iter().map(f).sum::<u64>();
    let (add_n, del_n) = (rw.added.len() as u64, rw.deleted.len() as u64);
    let (add_r, del_r) = (
        sum(rw.added, |f| f.record_count()),
        sum(rw.deleted, |f| f.record_count()),
    );
    let (add_b, del_b) = (
        sum(rw.added, |f| f.file_size_in_bytes()),
        sum(rw.deleted, |f| f.file_size_in_bytes()),
    );
    let mut p: HashMap<String, String> = HashMap::new();
    let mut put = |k: &str, v: u64| {
        p.insert(k.to_owned(), v.to_string());
    };
    if add_n > 0 || del_n > 0 {
        put("added-data-files", add_n);
        put("deleted-data-files", del_n);
        put("added-records", add_r);
        put("deleted-records", del_r);
        put("added-files-size", add_b);
        put("removed-files-size", del_b);
    }
    put(
        "total-data-files",
        (before("total-data-files") + add_n).saturating_sub(del_n),
    );
    put(
        "total-records",
        (before("total-records") + add_r).saturating_sub(del_r),
    );
    put(
        "total-files-size",
        (before("total-files-size") + add_b).saturating_sub(del_b),
    );
    for k in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        put(k, before(k));
    }
    p.insert(MAINTENANCE_KEY.to_owned(), rw.what.to_owned());
    // Recovery reads this snapshot as it read its ancestry; the older carriers may expire.
    let meta = rw.table.metadata();
    p.extend(crate::offsets::carried(meta.current_snapshot_id(), |id| {
        let s = meta.snapshot_by_id(id)?;
        Some(crate::offsets::SnapshotView {
            id,
            parent: s.parent_snapshot_id(),
            summary: &s.summary().additional_properties,
        })
    }));
    Summary {
        operation: Operation::Replace,
        additional_properties: p,
    }
}

/// Writes the rewrite's manifest list and metadata file and swaps the table's pointer to them.
/// A lost swap deletes those two files (the caller deletes its manifests); an error leaves
/// them, the outcome being unknown.
pub async fn commit(
    pointer: &Pointer,
    ident: &TableIdent,
    rw: Rewrite<'_>,
) -> Result<Swap, SinkError> {
    let table = rw.table;
    let meta = table.metadata();
    let from = table
        .metadata_location()
        .ok_or_else(|| SinkError::Maintain {
            table: ident.to_string(),
            reason: "the table has no metadata location".into(),
        })?
        .to_owned();
    let seq = meta.next_sequence_number();
    let list_path = format!(
        "{}/metadata/snap-{}-0-{}.avro",
        meta.location().trim_end_matches('/'),
        rw.snapshot_id,
        uuid::Uuid::new_v4()
    );
    let io = table.file_io();
    let failed = |what: String| catalog_err(what);
    let out = io
        .new_output(&list_path)
        .map_err(failed(format!("cannot create {list_path}")))?;
    let writer = out
        .writer()
        .await
        .map_err(failed(format!("cannot create {list_path}")))?;
    let parent = meta.current_snapshot_id();
    let mut list = ManifestListWriter::v2(writer, rw.snapshot_id, parent, seq);
    list.add_manifests(rw.manifests.iter().cloned())
        .map_err(failed(format!("cannot write {list_path}")))?;
    list.close()
        .await
        .map_err(failed(format!("cannot write {list_path}")))?;
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path.clone())
        .with_snapshot_id(rw.snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(seq)
        .with_summary(summary(&rw))
        .with_schema_id(meta.current_schema_id())
        .with_timestamp_ms(crate::metrics::now_ms().max(meta.last_updated_ms()))
        .build();
    let staged = TableMetadataBuilder::new_from_metadata(meta.clone(), Some(from.clone()))
        .set_branch_snapshot(snapshot, MAIN_BRANCH)
        .and_then(|b| b.build())
        .map_err(failed(format!(
            "cannot stage the {} snapshot of {ident}",
            rw.what
        )))?
        .metadata;
    let to = MetadataLocation::from_str(&from)
        .map_err(failed(format!("bad metadata location {from}")))?
        .with_next_version()
        .with_new_metadata(&staged);
    staged
        .write_to(io, &to)
        .await
        .map_err(failed(format!("cannot write {to}")))?;
    let to = to.to_string();
    match pointer.swap(ident, &from, &to).await {
        Ok(true) => {}
        Ok(false) => {
            delete_quietly(table, [&to, &list_path]).await;
            return Ok(Swap::Lost);
        }
        Err(e) => {
            return Err(SinkError::Maintain {
                table: ident.to_string(),
                reason: format!(
                    "the {} commit has an unknown outcome (its files stay for the orphan sweep): {e}",
                    rw.what
                ),
            });
        }
    }
    Ok(Swap::Done)
}

/// Deletes files of a rewrite that is certainly not in the table (a failure is logged: the
/// orphan sweep takes what stays).
pub async fn delete_quietly(table: &Table, paths: impl IntoIterator<Item = &String>) {
    for p in paths {
        if let Err(e) = table.file_io().delete(p).await {
            tracing::warn!(path = %p, error = %e, "cannot delete a rewrite's file");
        }
    }
}

/// What a rewrite changes, whatever the head: the manifests it replaces and those it adds.
pub struct Change<'a> {
    pub replaced: &'a BTreeSet<String>,
    pub manifests: &'a [ManifestFile],
    pub added: &'a [DataFile],
    pub deleted: &'a [DataFile],
    pub what: &'static str,
}

/// How a rewrite on the moving head ended.
pub enum Rebased {
    Done,
    /// A replaced manifest left the head (another rewrite took it), or writers kept winning:
    /// nothing of the rewrite is in the table.
    Gone,
}

/// Swaps before the head is given up for lost.
const REBASES: u32 = 50;

/// Commits `change` as snapshot `sid` on the table's head; when a writer's commit wins the swap,
/// again on the new head (writers only add manifests, so the rewrite stays valid while every
/// manifest it replaces is still listed): only the manifest list and metadata file are written
/// again, never the rewrite's manifests or data files.
pub async fn commit_on_head(
    catalog: &dyn iceberg::Catalog,
    pointer: &Pointer,
    ident: &TableIdent,
    sid: i64,
    change: Change<'_>,
) -> Result<Rebased, SinkError> {
    for attempt in 1..=REBASES {
        let table = super::commit::load(catalog, ident).await?;
        let Some(head) = table.metadata().current_snapshot() else {
            return Ok(Rebased::Gone);
        };
        if table.metadata().snapshot_by_id(sid).is_some() {
            return Ok(Rebased::Gone);
        }
        let listed = table
            .manifest_list_reader(head)
            .load()
            .await
            .map_err(catalog_err(format!("reading the manifest list of {ident}")))?;
        let paths: BTreeSet<&str> = listed
            .entries()
            .iter()
            .map(|m| m.manifest_path.as_str())
            .collect();
        if !change.replaced.iter().all(|r| paths.contains(r.as_str())) {
            return Ok(Rebased::Gone);
        }
        let mut manifests = change.manifests.to_vec();
        manifests.extend(
            listed
                .entries()
                .iter()
                .filter(|m| !change.replaced.contains(&m.manifest_path))
                .cloned(),
        );
        let rw = Rewrite {
            table: &table,
            snapshot_id: sid,
            manifests,
            added: change.added,
            deleted: change.deleted,
            what: change.what,
        };
        match commit(pointer, ident, rw).await? {
            Swap::Done => return Ok(Rebased::Done),
            Swap::Lost => {
                tracing::debug!(
                    attempt,
                    what = change.what,
                    "a writer committed first: on its head again"
                );
                let ms = (5 * u64::from(attempt)).min(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
    tracing::info!(
        what = change.what,
        "writers kept committing first: the rewrite is given up"
    );
    Ok(Rebased::Gone)
}
