//! The `central` tier: memcached through the `memcache` crate (a blocking
//! client with an r2d2 pool per server, run on the blocking pool). A read
//! refreshes the TTL. A lock is a counter `lock:KEY` with an expiry: the
//! request whose `incr` makes it 1 holds it, and records itself in
//! `lockowner:KEY` (the crate's ASCII `add` does not say whether it stored,
//! and its binary protocol stalled under concurrent use here).

use super::{blocking, StoreError};
use crate::config::CentralSpec;
use crate::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiting `lock` tries again: from the first to the last
/// interval, doubling, so many waiters do not crowd the pool.
const LOCK_POLL: Duration = Duration::from_millis(2);
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

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
        // Pools built unchecked: the crate's own builder connects to every
        // server at once and fails when one is down.
        let mut pools = Vec::new();
        for s in &spec.servers {
            // `timeout` here is the socket read/write timeout of each connection.
            let url = format!("memcache://{s}?timeout={}&tcp_nodelay=true&protocol=ascii", timeout.as_secs_f64());
            let url = memcache::Url::parse(&url).map_err(|e| Error::internal(format!("session.central.servers: {s}: {e}")))?;
            pools.push(
                r2d2::Pool::builder()
                    .max_size(spec.pool)
                    .min_idle(Some(0))
                    .connection_timeout(timeout)
                    .build_unchecked(memcache::ConnectionManager::new(url)),
            );
        }
        let client = memcache::Client::with_pools(pools).map_err(|e| Error::internal(format!("session.central: {e}")))?;
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

    /// Write, unless the key is retired (a retire is such a write of the
    /// marker, so a key is retired once). The check and the write are one
    /// compare-and-swap on a key that exists: a retire landing in between
    /// makes the swap fail and the retry see it.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        let (c, k, ttl) = (self.client.clone(), key.to_string(), self.ttl(ttl_s));
        blocking(self.timeout.saturating_mul(2), move || {
            for _ in 0..CAS_TRIES {
                match gets(&c, &k)? {
                    Some((current, _)) if current == super::RETIRED => return Err(StoreError::Retired),
                    Some((_, cas)) => {
                        if c.cas(&k, value.as_slice(), ttl, cas).map_err(unavailable)? {
                            return Ok(());
                        }
                    }
                    None => return c.set(&k, value.as_slice(), ttl).map_err(unavailable),
                }
            }
            Err(StoreError::Unavailable(format!("memcached: {k} kept changing under {CAS_TRIES} compare-and-swap attempts")))
        })
        .await
    }

    /// Delete, unless the key is retired (it stays so until it expires).
    /// memcached has no conditional delete: a retire landing between the
    /// check and the delete is undone, which frees an id that holds
    /// nothing (the session already moved to its new id).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (c, k) = (self.client.clone(), key.to_string());
        blocking(self.timeout, move || match gets(&c, &k)? {
            Some((current, _)) if current == super::RETIRED => Ok(()),
            Some(_) => c.delete(&k).map(|_| ()).map_err(unavailable),
            None => Ok(()),
        })
        .await
    }

    /// Take `lock:KEY`, retrying until the lock timeout.
    pub async fn lock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let until = Instant::now() + self.lock_timeout;
        let (lock_key, owner_key) = (lock_key(key), owner_key(key));
        let mut wait = LOCK_POLL;
        loop {
            let (c, k, o, t, ttl) = (self.client.clone(), lock_key.clone(), owner_key.clone(), token.to_string(), self.lock_ttl_s);
            let taken = blocking(self.timeout, move || {
                // Creates the counter at 0 if absent (and says nothing if not).
                c.add(&k, "0", ttl).map_err(unavailable)?;
                match c.increment(&k, 1) {
                    Ok(1) => {
                        c.set(&o, t.as_str(), ttl).map_err(unavailable)?;
                        Ok(true)
                    }
                    Ok(_) => Ok(false),
                    // It expired between add and incr: try again.
                    Err(memcache::MemcacheError::CommandError(_)) => Ok(false),
                    Err(e) => Err(unavailable(e)),
                }
            })
            .await?;
            if taken {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(false);
            }
            tokio::time::sleep(wait.min(until - now)).await;
            wait = (wait * 2).min(LOCK_POLL_MAX);
        }
    }

    /// Release `lock:KEY` if `token` still owns it (a lock that expired and
    /// was taken by another request is left alone).
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let (c, k, o, t) = (self.client.clone(), lock_key(key), owner_key(key), token.to_string());
        blocking(self.timeout, move || {
            let owner = c.get::<String>(&o).map_err(unavailable)?;
            if owner.as_deref() == Some(t.as_str()) {
                c.delete(&k).map_err(unavailable)?;
                c.delete(&o).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

/// CAS attempts before an update gives up (each lost race means another
/// node's update went through).
const CAS_TRIES: usize = 64;

impl Central {
    /// Read an integer attribute (0 when absent).
    pub async fn counter(&self, key: &str) -> Result<i64, StoreError> {
        let (c, k) = (self.client.clone(), key.to_string());
        blocking(self.timeout, move || Ok(c.get::<String>(&k).map_err(unavailable)?.and_then(|v| v.trim().parse().ok()).unwrap_or(0))).await
    }

    /// Add `delta` to the integer at `key` if the result stays within
    /// `[min, max]`, atomically across every gateway node (memcached
    /// `gets` + `cas`, retried). `Ok(Ok(new))`: applied; `Ok(Err(current))`:
    /// refused by the bounds.
    pub async fn update_counter(&self, key: &str, delta: i64, min: Option<i64>, max: Option<i64>) -> Result<Result<i64, i64>, StoreError> {
        let (c, k, ttl) = (self.client.clone(), key.to_string(), self.ttl_s);
        blocking(self.timeout.saturating_mul(4), move || {
            c.add(&k, "0", ttl).map_err(unavailable)?;
            for _ in 0..CAS_TRIES {
                let got = c.gets::<(Vec<u8>, u32, Option<u64>)>(&[k.as_str()]).map_err(unavailable)?;
                let Some((bytes, _, Some(cas))) = got.get(&k).cloned() else {
                    c.add(&k, "0", ttl).map_err(unavailable)?; // expired meanwhile
                    continue;
                };
                let current: i64 = String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0);
                let next = current.saturating_add(delta);
                if min.is_some_and(|m| next < m) || max.is_some_and(|m| next > m) {
                    return Ok(Err(current));
                }
                if c.cas(&k, next.to_string().as_str(), ttl, cas).map_err(unavailable)? {
                    return Ok(Ok(next));
                }
            }
            Err(StoreError::Unavailable(format!("memcached: {k} kept changing under {CAS_TRIES} compare-and-swap attempts")))
        })
        .await
    }
}

/// The value at `key` and its CAS id.
fn gets(c: &memcache::Client, k: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
    let got = c.gets::<(Vec<u8>, u32, Option<u64>)>(&[k]).map_err(unavailable)?;
    Ok(got.get(k).and_then(|(v, _, cas)| cas.map(|cas| (v.clone(), cas))))
}

fn lock_key(key: &str) -> String {
    bounded(format!("lock:{key}"))
}

fn owner_key(key: &str) -> String {
    bounded(format!("lockowner:{key}"))
}

/// Keys are at most 250 bytes; lock keys must fit too (a long key's lock
/// may then share its name with another long key's: a spurious wait, never
/// a lost update).
fn bounded(mut k: String) -> String {
    k.truncate(super::MAX_KEY);
    k
}

fn unavailable(e: memcache::MemcacheError) -> StoreError {
    match e {
        memcache::MemcacheError::IOError(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => StoreError::Timeout,
        other => StoreError::Unavailable(format!("memcached: {other}")),
    }
}
