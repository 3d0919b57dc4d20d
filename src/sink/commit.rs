//! The Iceberg side: catalog, table, and one commit per epoch with the offsets in its summary.
//!
//! icefall owns the retry loop: every attempt reloads the table, re-reads the offsets other
//! writers committed, lays this writer's offsets over them and builds a fresh fast append. (The
//! iceberg crate's own retry re-applies the same snapshot properties, which would write stale
//! offsets over a concurrent writer's, so it is switched off with `commit.retry.num-retries=0`.)
//! A commit whose outcome is unknown is resolved by looking for its commit id in the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation};
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};

use super::SinkError;
use super::evolve::{self, Evolution};
use super::guard::{Gate, GuardedCatalog};
use super::schema;
use super::storage::{ObjectStoreStorage, ObjectStoreStorageFactory};
use crate::config::TableIdent;
use crate::offsets::{self, COMMIT_ID_KEY, Checkpoint, EPOCH_KEY, SnapshotView};
use crate::record::Offsets;

/// Catalog name, as PyIceberg's `SqlCatalog("icefall", ...)` expects.
pub const CATALOG_NAME: &str = "icefall";
/// Table property that turns off the iceberg crate's own commit retries.
const NO_INTERNAL_RETRIES: (&str, &str) = ("commit.retry.num-retries", "0");
/// How far back to look for a commit id when an outcome is unknown.
const RESOLVE_DEPTH: usize = 1_000;

pub(super) fn catalog_err(what: impl Into<String>) -> impl FnOnce(iceberg::Error) -> SinkError {
    let what = what.into();
    move |source| SinkError::Catalog {
        what,
        source: Box::new(source),
    }
}

/// Where the catalog lives and where tables go.
#[derive(Debug, Clone)]
pub struct CatalogSpec {
    /// `sqlite://<path>?mode=rwc` (the default, `<warehouse>/catalog.db`), `postgres://…` (SQL
    /// catalog on PostgreSQL) or `http(s)://…` (REST catalog).
    pub uri: String,
    /// `file:///abs/warehouse` or `s3://bucket/prefix`.
    pub warehouse_url: String,
}

/// Opens the catalog `spec.uri` names; data and metadata go through `storage`.
pub async fn open_catalog(
    spec: &CatalogSpec,
    storage: ObjectStoreStorage,
) -> Result<Arc<dyn Catalog>, SinkError> {
    let factory = Arc::new(ObjectStoreStorageFactory::new(storage));
    let failed = catalog_err(format!("cannot open catalog {}", redact(&spec.uri)));
    if spec.uri.starts_with("http://") || spec.uri.starts_with("https://") {
        let props = HashMap::from([
            (REST_CATALOG_PROP_URI.to_string(), spec.uri.clone()),
            (
                REST_CATALOG_PROP_WAREHOUSE.to_string(),
                spec.warehouse_url.clone(),
            ),
        ]);
        let catalog = RestCatalogBuilder::default()
            .with_storage_factory(factory)
            .load(CATALOG_NAME, props)
            .await
            .map_err(failed)?;
        return Ok(Arc::new(catalog));
    }
    let bind = if spec.uri.starts_with("postgres") {
        SqlBindStyle::DollarNumeric
    } else {
        SqlBindStyle::QMark
    };
    let catalog = SqlCatalogBuilder::default()
        .uri(spec.uri.clone())
        .warehouse_location(spec.warehouse_url.clone())
        .sql_bind_style(bind)
        .with_storage_factory(factory)
        .load(CATALOG_NAME, HashMap::new())
        .await
        .map_err(failed)?;
    Ok(Arc::new(catalog))
}

/// A catalog URI fit for a log line: the password of `scheme://user:password@host` is hidden.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    match rest.split_once('@') {
        Some((cred, host)) if cred.contains(':') => {
            let user = cred.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => uri.to_string(),
    }
}

fn iceberg_ident(t: &TableIdent) -> iceberg::TableIdent {
    iceberg::TableIdent::new(NamespaceIdent::new(t.namespace.clone()), t.name.clone())
}

/// The table `ident` names, loaded afresh.
pub(super) async fn load(catalog: &dyn Catalog, ident: &TableIdent) -> Result<Table, SinkError> {
    catalog
        .load_table(&iceberg_ident(ident))
        .await
        .map_err(catalog_err(format!("cannot load table {ident}")))
}

/// The table, if it exists; checked for compatibility with `shape` like [`ensure_table`] does
/// (`None`: not checked, for readers).
pub async fn load_existing(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    shape: Option<&schema::Shape>,
) -> Result<Option<Table>, SinkError> {
    let id = iceberg_ident(ident);
    if !catalog
        .table_exists(&id)
        .await
        .map_err(catalog_err("cannot list tables"))?
    {
        return Ok(None);
    }
    let table = load(catalog, ident).await?;
    if let Some(shape) = shape
        && let Some(reason) =
            schema::incompatibility(table.metadata().current_schema(), &want(shape)?)
    {
        return Err(SinkError::IncompatibleTable {
            table: ident.to_string(),
            reason,
        });
    }
    Ok(Some(table))
}

/// Loads the table, creating namespace and table on first use. An existing table must be able to
/// take icefall's columns; it gets `commit.retry.num-retries=0` if it lacks it.
fn want(shape: &schema::Shape) -> Result<iceberg::spec::Schema, SinkError> {
    shape.iceberg_schema().map_err(|e| SinkError::Schema {
        reason: format!("the declared schema: {e}"),
    })
}

pub async fn ensure_table(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    shape: &schema::Shape,
) -> Result<Table, SinkError> {
    let ns = NamespaceIdent::new(ident.namespace.clone());
    let id = iceberg_ident(ident);
    let exists = catalog
        .namespace_exists(&ns)
        .await
        .map_err(catalog_err("cannot list namespaces"))?;
    if !exists {
        match catalog.create_namespace(&ns, HashMap::new()).await {
            Ok(_) => {}
            // Another writer created it first.
            Err(_) if catalog.namespace_exists(&ns).await.unwrap_or(false) => {}
            Err(e) => {
                return Err(catalog_err(format!(
                    "cannot create namespace {}",
                    ident.namespace
                ))(e));
            }
        }
    }
    if !catalog
        .table_exists(&id)
        .await
        .map_err(catalog_err("cannot list tables"))?
    {
        let creation = TableCreation::builder()
            .name(ident.name.clone())
            .schema(want(shape)?)
            .properties(HashMap::from([
                (
                    NO_INTERNAL_RETRIES.0.to_string(),
                    NO_INTERNAL_RETRIES.1.to_string(),
                ),
                (
                    "write.parquet.compression-codec".to_string(),
                    "zstd".to_string(),
                ),
            ]))
            .build();
        match catalog.create_table(&ns, creation).await {
            Ok(t) => return Ok(t),
            Err(_) if catalog.table_exists(&id).await.unwrap_or(false) => {}
            Err(e) => return Err(catalog_err(format!("cannot create table {ident}"))(e)),
        }
    }
    let Some(table) = load_existing(catalog, ident, Some(shape)).await? else {
        return Err(SinkError::Catalog {
            what: format!("table {ident} vanished right after it was created"),
            source: Box::new(iceberg::Error::new(ErrorKind::TableNotFound, "no table")),
        });
    };
    if table
        .metadata()
        .properties()
        .get(NO_INTERNAL_RETRIES.0)
        .map(String::as_str)
        != Some(NO_INTERNAL_RETRIES.1)
    {
        let tx = Transaction::new(&table);
        let tx = tx
            .update_table_properties()
            .set(
                NO_INTERNAL_RETRIES.0.to_string(),
                NO_INTERNAL_RETRIES.1.to_string(),
            )
            .apply(tx)
            .map_err(catalog_err(format!("cannot update properties of {ident}")))?;
        return tx
            .commit(catalog)
            .await
            .map_err(catalog_err(format!("cannot update properties of {ident}")));
    }
    Ok(table)
}

fn view(table: &Table, id: i64) -> Option<SnapshotView<'_>> {
    let s = table.metadata().snapshot_by_id(id)?;
    Some(SnapshotView {
        id,
        parent: s.parent_snapshot_id(),
        summary: &s.summary().additional_properties,
    })
}

/// A summary property of the newest snapshot in the table's current ancestry that has it
/// (snapshots of other writers and of maintenance may be newer).
pub fn newest_summary(table: &Table, key: &str) -> Option<String> {
    let head = table.metadata().current_snapshot_id();
    offsets::newest(head, |id| view(table, id), key).cloned()
}

/// The newest checkpoint of `topic` in the table's current ancestry.
pub fn checkpoint(table: &Table, topic: &str) -> Result<Option<Checkpoint>, SinkError> {
    offsets::recover(
        table.metadata().current_snapshot_id(),
        |id| view(table, id),
        topic,
    )
    .map_err(|e| SinkError::Checkpoint(e.to_string()))
}

/// Every drop and replay of `topic` recorded in the table's current ancestry, ledger files read.
pub async fn ledger(table: &Table, topic: &str) -> Result<offsets::Ledger, SinkError> {
    let mut ledger = offsets::ledger(
        table.metadata().current_snapshot_id(),
        |id| view(table, id),
        topic,
    )
    .map_err(|e| SinkError::Checkpoint(e.to_string()))?;
    // What maintenance folded out of expired snapshots.
    let props = table.metadata().properties();
    for kind in [offsets::LedgerKind::Dropped, offsets::LedgerKind::Replayed] {
        let key = super::maintain::ledger_property(kind, topic);
        if let Some(json) = props.get(&key) {
            let ranges = offsets::Ranges::decode(json)
                .map_err(|reason| SinkError::Checkpoint(format!("{key}: {reason}")))?;
            ledger.add(kind, &ranges);
        }
        let key = super::maintain::ledger_files_property(kind, topic);
        if let Some(json) = props.get(&key) {
            let files: Vec<String> = serde_json::from_str(json)
                .map_err(|e| SinkError::Checkpoint(format!("{key}: {e}")))?;
            ledger.files.extend(files.into_iter().map(|f| (kind, f)));
        }
    }
    for (kind, location) in std::mem::take(&mut ledger.files) {
        let what = || format!("cannot read the {} ledger file {location}", kind.name());
        let bytes = table
            .file_io()
            .new_input(&location)
            .map_err(catalog_err(what()))?
            .read()
            .await
            .map_err(catalog_err(what()))?;
        let json = String::from_utf8_lossy(&bytes);
        let ranges = offsets::Ranges::decode(&json)
            .map_err(|reason| SinkError::Checkpoint(format!("{location}: {reason}")))?;
        ledger.add(kind, &ranges);
    }
    Ok(ledger)
}

/// The summary entries naming `ranges` as a `kind` ledger: inline when small, else written to
/// `<table>/metadata/icefall-<kind>-<name>.json` (before the commit that names it).
pub async fn ledger_entries(
    files: &super::upload::TableFiles,
    kind: offsets::LedgerKind,
    topic: &str,
    ranges: &offsets::Ranges,
    name: &str,
) -> Result<Vec<(String, String)>, SinkError> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let json = ranges.encode();
    if json.len() <= offsets::LEDGER_INLINE_MAX {
        return Ok(vec![(kind.key(topic), json)]);
    }
    let rel = format!("metadata/icefall-{}-{name}.json", kind.name());
    let location = files
        .put_bytes(&rel, object_store::PutPayload::from(json))
        .await?;
    Ok(vec![(kind.file_key(topic), location)])
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub attempts: u32,
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n >= 1): uniform in [0, min(cap, base * 2^(n-1))].
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        exp.min(self.cap).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// xorshift64*: jitter needs spread, not cryptography.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one successful commit cost.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub snapshot_id: Option<i64>,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Commits epochs to one table, serially.
pub struct Committer {
    catalog: GuardedCatalog,
    ident: TableIdent,
    topic: String,
    retry: RetryPolicy,
    table: Table,
    jitter: Jitter,
    /// `--evolve`: columns the files need are added in the epoch's own commit.
    evolution: Option<Arc<Evolution>>,
    /// Shared with the in-process maintainer (`run --maintain-interval`), and its commits seen.
    gate: Option<(Arc<Gate>, u64)>,
}

impl Committer {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        ident: TableIdent,
        topic: String,
        retry: RetryPolicy,
        table: Table,
    ) -> Self {
        let seed = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
        Self {
            catalog: GuardedCatalog::new(catalog),
            ident,
            topic,
            retry,
            table,
            jitter: Jitter(seed),
            evolution: None,
            gate: None,
        }
    }

    /// Commits take turns with the maintainer of this process through `gate`.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some((gate, 0));
        self
    }

    /// Commits also add the columns `evolution` grew (`--evolve`).
    pub fn with_evolution(mut self, evolution: Arc<Evolution>) -> Self {
        self.evolution = Some(evolution);
        self
    }

    async fn reload(&mut self) -> Result<(), SinkError> {
        self.catalog.clear();
        self.table = self
            .catalog
            .load_table(&iceberg_ident(&self.ident))
            .await
            .map_err(catalog_err(format!("cannot load table {}", self.ident)))?;
        Ok(())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Refuses the epoch (`SinkError::Fenced`) when a partition of `ours` is no longer where this
    /// writer left it (`prior`) in the table as it stands now (see [`offsets::fence`]).
    fn fence(
        &self,
        epoch: u64,
        prior: &Offsets,
        base: &Offsets,
        ours: &Offsets,
    ) -> Result<(), SinkError> {
        let moved = offsets::fence(base, prior, ours);
        if moved.is_empty() {
            return Ok(());
        }
        let moved: Vec<String> = moved.iter().map(ToString::to_string).collect();
        Err(SinkError::Fenced {
            table: self.ident.to_string(),
            topic: self.topic.clone(),
            epoch,
            moved: moved.join("; "),
        })
    }

    /// Loads the table and checks the fence before anything of the epoch is written elsewhere
    /// (the dead letters); the commit checks it again against the table it commits on.
    pub async fn check_fence(
        &mut self,
        epoch: u64,
        prior: &Offsets,
        ours: &Offsets,
    ) -> Result<(), SinkError> {
        self.reload().await?;
        let base = checkpoint(&self.table, &self.topic)?
            .map(|c| c.offsets)
            .unwrap_or_default();
        self.fence(epoch, prior, &base, ours)
    }

    /// Appends `files` and this writer's `ours` offsets (other partitions carried forward) as one
    /// snapshot, with `extra` summary entries (the drop ledger). Retries conflicts and transient
    /// failures; never commits the same epoch twice. With `prior` (this writer's offsets in the
    /// table before the epoch) every attempt is fenced against the table it commits on.
    pub async fn commit(
        &mut self,
        epoch: u64,
        files: Vec<DataFile>,
        prior: Option<&Offsets>,
        ours: &Offsets,
        extra: Vec<(String, String)>,
    ) -> Result<Committed, SinkError> {
        let started = Instant::now();
        let gate = self.gate.as_ref().map(|g| Arc::clone(&g.0));
        let table_name = self.ident.to_string();
        let id = offsets::commit_id(&table_name, &self.topic, epoch, ours, &extra);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // The turn is held for one attempt, never across a backoff: a writer backing off
            // from another process's commits must not keep its own maintainer waiting.
            let turn = Gate::turn(gate.as_deref()).await;
            // The maintainer committed since this writer last looked: its head is stale.
            let maintained = match (&turn, &mut self.gate) {
                (Some(t), Some((_, seen))) if **t != *seen => {
                    *seen = **t;
                    true
                }
                _ => false,
            };
            if attempt > 1 || maintained {
                self.reload().await?;
            }
            // The offsets are merged from this head; the guard refuses a commit on any other.
            self.catalog
                .expect_base(self.table.metadata().current_snapshot_id());
            let base = checkpoint(&self.table, &self.topic)?
                .map(|c| c.offsets)
                .unwrap_or_default();
            if let Some(prior) = prior {
                self.fence(epoch, prior, &base, ours)?;
            }
            let merged = offsets::merge(&base, ours);
            let mut props = HashMap::from([
                (
                    offsets::offsets_key(&self.topic),
                    offsets::encode_offsets(&merged),
                ),
                (EPOCH_KEY.to_string(), epoch.to_string()),
                (COMMIT_ID_KEY.to_string(), id.clone()),
            ]);
            props.extend(extra.iter().cloned());
            // The schema every file so far was written in; columns the table lacks are added
            // in this same transaction, before the append.
            let want = self.evolution.as_ref().map(|e| e.schema());
            let adds = want.as_ref().map_or_else(Vec::new, |w| {
                evolve::missing(self.table.metadata().current_schema(), w)
            });
            let mut tx = Ok(Transaction::new(&self.table));
            if !adds.is_empty() {
                tx = tx.and_then(|tx| {
                    let mut update = tx.update_schema();
                    for f in &adds {
                        update = update
                            .add_column(AddColumn::optional(&f.name, (*f.field_type).clone()));
                    }
                    update.apply(tx)
                });
            }
            let result = match tx.and_then(|tx| {
                tx.fast_append()
                    .with_check_duplicate(false)
                    .add_data_files(files.iter().cloned())
                    .set_snapshot_properties(props)
                    .apply(tx)
            }) {
                Ok(tx) => tx.commit(&self.catalog).await,
                Err(e) => Err(e),
            };
            self.catalog.clear();
            let err = match result {
                Ok(table) => {
                    let snapshot_id = table.metadata().current_snapshot_id();
                    if let Some(w) = want.filter(|_| !adds.is_empty()) {
                        evolve::check_ids(table.metadata().current_schema(), &w).map_err(
                            |reason| SinkError::Schema {
                                reason: format!("--evolve on {table_name}: {reason}"),
                            },
                        )?;
                        let names: Vec<&str> = adds.iter().map(|f| f.name.as_str()).collect();
                        tracing::info!(epoch, columns = ?names, schema_id = table.metadata().current_schema_id(), "--evolve: the table's schema grew");
                    }
                    self.table = table;
                    return Ok(Committed {
                        snapshot_id,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                    });
                }
                Err(e) => e,
            };
            let conflict = err.kind() == ErrorKind::CatalogCommitConflicts;
            // An unknown outcome needs a look at the table (a conflict wrote nothing).
            if !conflict && self.reload().await.is_ok() {
                let head = self.table.metadata().current_snapshot_id();
                if offsets::contains_commit(head, |s| view(&self.table, s), &id, RESOLVE_DEPTH) {
                    tracing::warn!(epoch, commit_id = %id, error = %err, "commit reported an error but is in the table");
                    return Ok(Committed {
                        snapshot_id: head,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                    });
                }
            }
            let retryable =
                conflict || err.retryable() || matches!(err.kind(), ErrorKind::Unexpected);
            if !retryable || attempt >= self.retry.attempts {
                return Err(SinkError::Commit {
                    table: table_name,
                    epoch,
                    attempts: attempt,
                    source: Box::new(err),
                });
            }
            let wait = self.retry.delay(attempt, self.jitter.next());
            tracing::warn!(epoch, attempt, ?wait, conflict, error = %err, "commit failed; retrying");
            drop(turn);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("postgres://icefall:s3cret@db:5432/cat"),
            "postgres://icefall:***@db:5432/cat"
        );
        assert_eq!(redact("sqlite:///tmp/c.db"), "sqlite:///tmp/c.db");
        assert_eq!(redact("https://rest.example/v1"), "https://rest.example/v1");
    }

    #[test]
    fn backoff_grows_to_the_cap_and_jitter_spreads_it() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            attempts: 5,
        };
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(9, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(200));
        let mut j = Jitter(42);
        let xs: Vec<f64> = (0..1000).map(|_| j.next()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
