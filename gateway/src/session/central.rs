//! The `central` tier: memcached through the `memcache` crate (a blocking
//! client with an r2d2 pool per server, run on the blocking pool). A read
//! refreshes the TTL; locks are `add` of `lock:KEY` with an expiry.

use super::{blocking, StoreError};
use crate::config::CentralSpec;
use crate::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiting `lock` tries again.
const LOCK_POLL: Duration = Duration::from_millis(5);

/// memcached servers.
pub struct Central {
    client: Arc<memcache::Client>,
    ttl_s: u32,
    timeout: Duration,
    lock_timeout: Duration,
    lock_ttl_s: u32,
}

impl Central {
    /// A client for `spec.servers`; no connection is made until first use,
    /// so a memcached that starts later is picked up without a restart.
    pub fn new(spec: &CentralSpec) -> Result<Self, Error> {
        let timeout = Duration::from_millis(spec.timeout_ms);
        let mut b = memcache::Client::builder()
            .with_max_pool_size(spec.pool)
            .with_min_idle_conns(0)
            .with_connection_timeout(timeout);
        for s in &spec.servers {
            // `timeout` here is the socket read/write timeout of each connection.
            // The binary protocol: its `add` reports an existing key as an error
            // (the crate maps ASCII NOT_STORED to success), which locks rely on.
            let url = format!("memcache://{s}?timeout={}&tcp_nodelay=true", timeout.as_secs_f64());
            b = b.add_server(url.as_str()).map_err(|e| Error::internal(format!("session.central.servers: {s}: {e}")))?;
        }
        let client = b.build().map_err(|e| Error::internal(format!("session.central: {e}")))?;
        Ok(Self {
            client: Arc::new(client),
            ttl_s: spec.ttl_s,
            timeout,
            lock_timeout: Duration::from_millis(spec.lock_timeout_ms),
            lock_ttl_s: spec.lock_ttl_s,
        })
    }

    fn ttl(&self, ttl_s: u32) -> u32 {
        if ttl_s == 0 {
            self.ttl_s
        } else {
            ttl_s
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (c, k, ttl) = (self.client.clone(), key.to_string(), self.ttl_s);
        let value = blocking(self.timeout, move || c.get::<Vec<u8>>(&k).map_err(unavailable)).await?;
        if value.is_some() {
            // Refresh the TTL off the request path: an unmodified session
            // must not expire while it is used.
            let (c, k) = (self.client.clone(), key.to_string());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = c.touch(&k, ttl) {
                    tracing::debug!("memcached touch {k}: {e}");
                }
            });
        }
        Ok(value)
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        let (c, k, ttl) = (self.client.clone(), key.to_string(), self.ttl(ttl_s));
        blocking(self.timeout, move || c.set(&k, value.as_slice(), ttl).map_err(unavailable)).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (c, k) = (self.client.clone(), key.to_string());
        blocking(self.timeout, move || c.delete(&k).map(|_| ()).map_err(unavailable)).await
    }

    /// Add `lock:KEY` = token, retrying until the lock timeout.
    pub async fn lock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let until = Instant::now() + self.lock_timeout;
        let lock_key = lock_key(key);
        loop {
            let (c, k, t, ttl) = (self.client.clone(), lock_key.clone(), token.to_string(), self.lock_ttl_s);
            let taken = blocking(self.timeout, move || match c.add(&k, t.as_str(), ttl) {
                Ok(()) => Ok(true),
                Err(memcache::MemcacheError::CommandError(_)) => Ok(false),
                Err(e) => Err(unavailable(e)),
            })
            .await?;
            if taken {
                return Ok(true);
            }
            if Instant::now() + LOCK_POLL >= until {
                return Ok(false);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Delete `lock:KEY` if `token` still owns it (a lock that expired and
    /// was taken by another request is left alone).
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let (c, k, t) = (self.client.clone(), lock_key(key), token.to_string());
        blocking(self.timeout, move || {
            let owner = c.get::<String>(&k).map_err(unavailable)?;
            if owner.as_deref() == Some(t.as_str()) {
                c.delete(&k).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

fn lock_key(key: &str) -> String {
    // Keys are at most 250 bytes; a lock key must fit too.
    let mut k = format!("lock:{key}");
    k.truncate(super::MAX_KEY);
    k
}

fn unavailable(e: memcache::MemcacheError) -> StoreError {
    match e {
        memcache::MemcacheError::IOError(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => StoreError::Timeout,
        other => StoreError::Unavailable(format!("memcached: {other}")),
    }
}
