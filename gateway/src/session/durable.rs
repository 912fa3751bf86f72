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
    /// marker (`expires_at` is assigned first, so `v`'s test still sees the
    /// marker's expiry), then a look when it changed nothing.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (now, m, t) = (now_s(), super::RETIRED, &self.table);
            let q = format!(
                "INSERT INTO `{t}` (k, v, expires_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE \
                 expires_at = IF(v = ? AND expires_at > ?, expires_at, VALUES(expires_at)), \
                 v = IF(v = ? AND expires_at > ?, v, VALUES(v))"
            );
            conn.exec_drop(q, (key, value, now + i64::from(ttl), m, now, m, now)).await.map_err(unavailable)?;
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

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unavailable(e: mysql_async::Error) -> StoreError {
    StoreError::Unavailable(format!("mariadb: {e}"))
}
