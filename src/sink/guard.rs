//! A catalog wrapper that makes "commit on top of the snapshot I read" exact.
//!
//! `Transaction::commit` reloads the table and, if it changed, silently re-applies the append on
//! top of the newer snapshot: with the snapshot properties computed from the older one. For
//! icefall those properties are the carried-forward offsets of other writers, so a silent rebase
//! would commit stale offsets. The guard watches that reload: when the head snapshot is not the
//! one the offsets were merged from, the commit is refused as a retryable conflict before
//! anything is written, and icefall's own loop reloads and merges again. Races after the reload
//! are caught by the catalog's own requirement check (compare-and-swap on the metadata).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};

/// The turn an in-process writer and maintainer take at the table: each holds it for one commit
/// attempt (never across a backoff, or a writer retrying against another process would starve
/// its maintainer), and the maintainer counts its commits in it, so the writer reloads the table
/// before its next attempt instead of losing one (and a backoff) to a conflict with its own
/// process.
#[derive(Debug, Default)]
pub struct Gate(tokio::sync::Mutex<u64>);

/// A held turn (`None`: no gate, nobody to take turns with).
pub type Turn<'a> = Option<tokio::sync::MutexGuard<'a, u64>>;

impl Gate {
    /// Waits for the turn at `gate`, if there is one; the guard holds the count of the
    /// maintainer's commits.
    pub async fn turn(gate: Option<&Gate>) -> Turn<'_> {
        match gate {
            Some(g) => Some(g.0.lock().await),
            None => None,
        }
    }

    /// Counts one commit of the maintainer in its held turn.
    pub fn count(turn: &mut Turn<'_>) {
        if let Some(t) = turn {
            **t += 1;
        }
    }
}

#[derive(Debug, Default)]
struct Expect {
    /// The head snapshot the next commit must build on (`Some(None)`: an empty table).
    base: Option<Option<i64>>,
    rebased: bool,
}

/// Delegates everything to the inner catalog; guards `update_table`.
#[derive(Debug, Clone)]
pub struct GuardedCatalog {
    inner: Arc<dyn Catalog>,
    expect: Arc<Mutex<Expect>>,
}

impl GuardedCatalog {
    pub fn new(inner: Arc<dyn Catalog>) -> Self {
        Self {
            inner,
            expect: Arc::default(),
        }
    }

    /// The next commit must land on `base` (the head snapshot the offsets were merged from).
    pub fn expect_base(&self, base: Option<i64>) {
        let mut e = self.expect.lock().unwrap_or_else(|p| p.into_inner());
        e.base = Some(base);
        e.rebased = false;
    }

    pub fn clear(&self) {
        *self.expect.lock().unwrap_or_else(|p| p.into_inner()) = Expect::default();
    }
}

#[async_trait]
impl Catalog for GuardedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        ns: &NamespaceIdent,
        props: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(ns, props).await
    }
    async fn get_namespace(&self, ns: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(ns).await
    }
    async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(ns).await
    }
    async fn update_namespace(
        &self,
        ns: &NamespaceIdent,
        props: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(ns, props).await
    }
    async fn drop_namespace(&self, ns: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(ns).await
    }
    async fn list_tables(&self, ns: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(ns).await
    }
    async fn create_table(&self, ns: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        self.inner.create_table(ns, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        let t = self.inner.load_table(table).await?;
        let mut e = self.expect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = e.base
            && t.metadata().current_snapshot_id() != base
        {
            e.rebased = true;
        }
        Ok(t)
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let rebased = self
            .expect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rebased;
        if rebased {
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!(
                    "{} gained a snapshot since its offsets were read",
                    commit.identifier()
                ),
            )
            .with_retryable(true));
        }
        self.inner.update_table(commit).await
    }
}
