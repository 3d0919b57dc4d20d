//! One maintainer at a time per table: a lease row in the SQL catalog's database
//! (`icefall_maintenance_leases`), taken when free or expired and renewed by its holder. The
//! lease only saves a second maintainer the wasted work; correctness rests on the
//! compare-and-swap of every commit (`replace`), so a holder that outlives its lease is safe.

use super::SinkError;
use super::replace::Pointer;
use crate::config::TableIdent;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS icefall_maintenance_leases (\
     catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, \
     table_name VARCHAR(255) NOT NULL, holder VARCHAR(255) NOT NULL, expires_ms BIGINT NOT NULL, \
     PRIMARY KEY (catalog_name, table_namespace, table_name))";

/// Who holds a table's lease, if not us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: String,
    pub expires_ms: i64,
}

fn failed(ident: &TableIdent, e: sqlx::Error) -> SinkError {
    SinkError::Maintain {
        table: ident.to_string(),
        reason: format!("the maintenance lease: {e}"),
    }
}

/// Takes or renews `ident`'s lease for `holder` until `now_ms + ttl_ms`; `Err(Held)`-like
/// `Ok(Some(..))` when another holds it unexpired.
pub async fn acquire(
    p: &Pointer,
    ident: &TableIdent,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Held>, SinkError> {
    let pool = p.pool();
    sqlx::query(CREATE)
        .execute(pool)
        .await
        .map_err(|e| failed(ident, e))?;
    let key = [super::commit::CATALOG_NAME, &ident.namespace, &ident.name];
    let insert = p.sql(
        "INSERT INTO icefall_maintenance_leases VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    );
    let took = sqlx::query(&insert)
        .bind(key[0])
        .bind(key[1])
        .bind(key[2])
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .execute(pool)
        .await
        .map_err(|e| failed(ident, e))?;
    if took.rows_affected() == 1 {
        return Ok(None);
    }
    let update = p.sql(
        "UPDATE icefall_maintenance_leases SET holder = ?, expires_ms = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
         AND (holder = ? OR expires_ms < ?)",
    );
    let renewed = sqlx::query(&update)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(key[0])
        .bind(key[1])
        .bind(key[2])
        .bind(holder)
        .bind(now_ms)
        .execute(pool)
        .await
        .map_err(|e| failed(ident, e))?;
    if renewed.rows_affected() == 1 {
        return Ok(None);
    }
    let select = p.sql(
        "SELECT holder, expires_ms FROM icefall_maintenance_leases \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
    );
    let row: Option<(String, i64)> = sqlx::query_as(&select)
        .bind(key[0])
        .bind(key[1])
        .bind(key[2])
        .fetch_optional(pool)
        .await
        .map_err(|e| failed(ident, e))?;
    Ok(Some(row.map_or(
        Held {
            holder: "(unknown)".into(),
            expires_ms: now_ms,
        },
        |(holder, expires_ms)| Held { holder, expires_ms },
    )))
}

/// Gives the lease up (if `holder` still has it), so the next maintainer need not wait.
pub async fn release(p: &Pointer, ident: &TableIdent, holder: &str) -> Result<(), SinkError> {
    let sql = p.sql(
        "UPDATE icefall_maintenance_leases SET expires_ms = 0 \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND holder = ?",
    );
    sqlx::query(&sql)
        .bind(super::commit::CATALOG_NAME)
        .bind(&ident.namespace)
        .bind(&ident.name)
        .bind(holder)
        .execute(p.pool())
        .await
        .map_err(|e| failed(ident, e))?;
    Ok(())
}

/// This process's name as a maintainer: host, process id and a random part, the same for
/// every pipeline it runs (a `--group` member's next generation renews its own lease).
pub fn holder_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}/{}/{}", std::process::id(), &tag[..8])
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_releases_or_its_lease_expires() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = Pointer::open("sqlite::memory:").await.unwrap().unwrap();
            let t: TableIdent = "ns.events".parse().unwrap();
            let other: TableIdent = "ns.other".parse().unwrap();
            assert_eq!(acquire(&p, &t, "a", 1_000, 100).await.unwrap(), None);
            let held = acquire(&p, &t, "b", 1_050, 100).await.unwrap().unwrap();
            assert_eq!((held.holder.as_str(), held.expires_ms), ("a", 1_100));
            // Another table's lease is its own.
            assert_eq!(acquire(&p, &other, "b", 1_050, 100).await.unwrap(), None);
            // The holder renews; past its expiry another takes it.
            assert_eq!(acquire(&p, &t, "a", 1_090, 100).await.unwrap(), None);
            assert!(acquire(&p, &t, "b", 1_150, 100).await.unwrap().is_some());
            assert_eq!(acquire(&p, &t, "b", 1_191, 100).await.unwrap(), None);
            // Released, it is free at once.
            release(&p, &t, "b").await.unwrap();
            assert_eq!(acquire(&p, &t, "a", 1_200, 100).await.unwrap(), None);
        });
    }
}
