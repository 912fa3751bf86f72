//! The `durable` tier: a MariaDB/MySQL table (`mysql_async`), for values
//! that must survive a memcached restart (O-Session's passport messages).

use super::StoreError;
use crate::config::DurableSpec;
use crate::error::Error;
use mysql_async::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;

/// A MariaDB table of key, value, expiry.
pub struct Durable {
    pool: mysql_async::Pool,
    table: String,
    ttl_s: u32,
    timeout: Duration,
    /// The table is created on first use (the database may start later).
    created: OnceCell<()>,
}

impl Durable {
    pub fn new(spec: &DurableSpec) -> Result<Self, Error> {
        let opts = mysql_async::Opts::from_url(&spec.url).map_err(|e| Error::internal(format!("session.durable.url: {e}")))?;
        Ok(Self {
            pool: mysql_async::Pool::new(opts),
            table: spec.table.clone(),
            ttl_s: spec.ttl_s,
            timeout: Duration::from_millis(spec.timeout_ms),
            created: OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<mysql_async::Conn, StoreError> {
        let mut conn = self.pool.get_conn().await.map_err(unavailable)?;
        self.created
            .get_or_try_init(|| async {
                let ddl = format!(
                    "CREATE TABLE IF NOT EXISTS `{}` (k VARBINARY(250) NOT NULL PRIMARY KEY, v LONGBLOB NOT NULL, expires_at BIGINT NOT NULL, KEY (expires_at)) ENGINE=InnoDB",
                    self.table
                );
                conn.query_drop(ddl).await.map_err(unavailable)
            })
            .await?;
        Ok(conn)
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| StoreError::Timeout)?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let now = now_s();
            let q = format!("SELECT v FROM `{}` WHERE k = ? AND expires_at > ?", self.table);
            let v: Option<Vec<u8>> = conn.exec_first(q, (key, now)).await.map_err(unavailable)?;
            if v.is_some() {
                let q = format!("UPDATE `{}` SET expires_at = ? WHERE k = ?", self.table);
                conn.exec_drop(q, (now + i64::from(self.ttl_s), key)).await.map_err(unavailable)?;
            }
            Ok(v)
        })
        .await
    }

    /// Write, unless the key is retired (a retire is such a write of the
    /// marker, so a key is retired once): one upsert that keeps a live
    /// marker, then a look when it changed nothing. Whether the row is a
    /// live marker is decided once, on the row as it was (`@sy_keep`):
    /// MariaDB assigns left to right, so a second test would see the new
    /// expiry and revive an expired marker, silently dropping the write.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (now, m, t) = (now_s(), super::RETIRED, &self.table);
            let q = format!(
                "INSERT INTO `{t}` (k, v, expires_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE \
                 expires_at = IF(@sy_keep := (v = ? AND expires_at > ?), expires_at, VALUES(expires_at)), \
                 v = IF(@sy_keep, v, VALUES(v))"
            );
            conn.exec_drop(q, (key, value, now + i64::from(ttl), m, now)).await.map_err(unavailable)?;
            if conn.affected_rows() == 0 {
                let q = format!("SELECT v = ? AND expires_at > ? FROM `{t}` WHERE k = ?");
                let retired: Option<bool> = conn.exec_first(q, (m, now, key)).await.map_err(unavailable)?;
                if retired == Some(true) {
                    return Err(StoreError::Retired);
                }
            }
            Ok(())
        })
        .await
    }

    /// Store only if the key holds nothing live: an expired row is cleared
    /// first, then a plain INSERT, which the primary key makes atomic (a
    /// duplicate: the key holds a value, or is retired).
    pub async fn add(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<bool, StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (now, t) = (now_s(), &self.table);
            conn.exec_drop(format!("DELETE FROM `{t}` WHERE k = ? AND expires_at <= ?"), (key, now)).await.map_err(unavailable)?;
            match conn.exec_drop(format!("INSERT INTO `{t}` (k, v, expires_at) VALUES (?, ?, ?)"), (key, value, now + i64::from(ttl))).await {
                Ok(()) => Ok(true),
                Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => self.refused(&mut conn, key, None).await,
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    /// A value and its version: the first 8 bytes of its SHA-256 (no
    /// schema change; a write that puts back the same bytes is no change).
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        Ok(self.get(key).await?.map(|v| {
            let version = digest(&v);
            (v, version)
        }))
    }

    /// Write only if the live value still has the digest `version`: one
    /// UPDATE that compares `SHA2(v)` in the row it changes.
    pub async fn cas(&self, key: &str, value: Vec<u8>, ttl_s: u32, version: u64) -> Result<bool, StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (now, t) = (now_s(), &self.table);
            let q = format!("UPDATE `{t}` SET v = ?, expires_at = ? WHERE k = ? AND expires_at > ? AND v <> ? AND LEFT(SHA2(v, 256), 16) = ?");
            conn.exec_drop(q, (&value, now + i64::from(ttl), key, now, super::RETIRED, format!("{version:016x}"))).await.map_err(unavailable)?;
            if conn.affected_rows() == 1 {
                return Ok(true);
            }
            // No row changed: refused, or matched a row already holding
            // these bytes and this expiry (MariaDB counts changed rows).
            self.refused(&mut conn, key, Some((&value, version))).await
        })
        .await
    }

    /// Why a conditional write changed nothing: `Err(Retired)` for a live
    /// retired key; `Ok(true)` if it already holds `wrote` and that was the
    /// version expected (a no-op write); else `Ok(false)`.
    async fn refused(&self, conn: &mut mysql_async::Conn, key: &str, wrote: Option<(&[u8], u64)>) -> Result<bool, StoreError> {
        let q = format!("SELECT v FROM `{}` WHERE k = ? AND expires_at > ?", self.table);
        let current: Option<Vec<u8>> = conn.exec_first(q, (key, now_s())).await.map_err(unavailable)?;
        match (current, wrote) {
            (Some(v), _) if v == super::RETIRED => Err(StoreError::Retired),
            (Some(v), Some((value, version))) => Ok(v == value && digest(&v) == version),
            _ => Ok(false),
        }
    }

    /// Delete, unless the key is retired (it stays so until it expires).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let q = format!("DELETE FROM `{}` WHERE k = ? AND v <> ?", self.table);
            conn.exec_drop(q, (key, super::RETIRED)).await.map_err(unavailable)
        })
        .await
    }
}

/// MariaDB's duplicate-key error.
const ER_DUP_ENTRY: u16 = 1062;

/// A durable value's version: the first 8 bytes of its SHA-256, as
/// `LEFT(SHA2(v, 256), 16)` computes it in SQL.
fn digest(value: &[u8]) -> u64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(value);
    u64::from_be_bytes(d[..8].try_into().expect("32 bytes"))
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unavailable(e: mysql_async::Error) -> StoreError {
    StoreError::Unavailable(format!("mariadb: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_sha256_prefix_sql_computes() {
        // SELECT LEFT(SHA2('abc', 256), 16) = 'ba7816bf8f01cfea'
        assert_eq!(format!("{:016x}", super::digest(b"abc")), "ba7816bf8f01cfea");
    }
}
