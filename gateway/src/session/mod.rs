//! Session store tiers for the `store` and `tokens` imports: `local` (this
//! process), `central` (memcached), `durable` (MariaDB), and HMAC-signed
//! tokens. Plugins reach them through [`Stores`]; every call is bounded by
//! its tier's timeout and answers a typed error.

mod central;
mod durable;
pub mod index;
mod local;
pub mod merge;
mod tokens;

pub use central::Central;
pub use durable::Durable;
pub use local::Local;
pub use tokens::{new_id, Tokens};

use crate::config::SessionSpec;
use crate::metrics::metrics;
use std::future::Future;
use std::time::Instant;

/// Longest key a tier accepts (memcached's limit).
pub const MAX_KEY: usize = 250;

/// Largest value a tier accepts (memcached's default item size).
pub const MAX_VALUE: usize = 1024 * 1024;

/// What a retired key holds in every tier: it reads as absent and
/// refuses writes until it expires (`Stores::retire`). No session value
/// is this: stored sessions are JSON, passports and counters text.
pub const RETIRED: &[u8] = b"\0switchyard:retired";

/// Which tier a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Local,
    Replicated,
    Central,
    Durable,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Replicated => "replicated",
            Tier::Central => "central",
            Tier::Durable => "durable",
        }
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    NotConfigured,
    Timeout,
    Unavailable(String),
    TooLarge,
    /// The key is retired: a write would bring it back.
    Retired,
}

impl StoreError {
    fn label(&self) -> &'static str {
        match self {
            StoreError::NotConfigured => "not_configured",
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::TooLarge => "too_large",
            StoreError::Retired => "retired",
        }
    }
}

/// Every configured tier and the token keys.
pub struct Stores {
    pub local: Local,
    pub replicated: Option<std::sync::Arc<crate::cluster::Cluster>>,
    pub central: Option<Central>,
    pub durable: Option<Durable>,
    pub tokens: Tokens,
}

impl Stores {
    /// Build the tiers; nothing connects yet (a store that is down at
    /// start is reached once it is up, without a restart).
    pub fn new(spec: &SessionSpec, cluster: Option<std::sync::Arc<crate::cluster::Cluster>>) -> Result<Self, crate::error::Error> {
        Ok(Self {
            local: Local::new(spec.local.max_mb << 20, spec.local.ttl_s),
            replicated: cluster,
            central: spec.central.as_ref().map(Central::new).transpose()?,
            durable: spec.durable.as_ref().map(Durable::new).transpose()?,
            tokens: Tokens::new(spec.keys.clone()),
        })
    }

    /// No tier and no key: what a config without `[session]` gets.
    pub fn none() -> Self {
        Self { local: Local::new(64 << 20, 1800), replicated: None, central: None, durable: None, tokens: Tokens::new(Vec::new()) }
    }

    // The durable tier's calls are boxed: its driver's futures are large,
    // and inline they would be moved with every central call's future.
    pub async fn get(&self, tier: Tier, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let value = timed(tier, "get", async {
            match tier {
                Tier::Local => Ok(self.local.get(key)),
                Tier::Replicated => Ok(self.replicated()?.get(key)),
                Tier::Central => self.central()?.get(key).await,
                Tier::Durable => Box::pin(self.durable()?.get(key)).await,
            }
        })
        .await?;
        Ok(value.filter(|v| v != RETIRED))
    }

    /// Write a value, unless the key is retired: `Err(Retired)` then,
    /// decided atomically by each tier (a retire that races this write
    /// either comes first and refuses it, or comes after and wins).
    pub async fn set(&self, tier: Tier, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(tier, "set", &value)?;
        timed(tier, "set", self.write(tier, key, value, ttl_s)).await
    }

    /// Store only if `key` holds nothing: Ok(false) if it holds a value,
    /// `Err(Retired)` if it is retired. Atomic in each tier (on `replicated`
    /// on this node only).
    pub async fn add(&self, tier: Tier, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<bool, StoreError> {
        check_key(key)?;
        check_value(tier, "add", &value)?;
        timed(tier, "add", async {
            match tier {
                Tier::Local => self.local.add(key, value, ttl_s),
                Tier::Replicated => self.replicated()?.write_if(key, value, ttl_s, crate::cluster::Expect::Absent),
                Tier::Central => self.central()?.add(key, value, ttl_s).await,
                Tier::Durable => Box::pin(self.durable()?.add(key, value, ttl_s)).await,
            }
        })
        .await
    }

    /// A value and the opaque version `cas` compares; a retired key reads
    /// as absent, as in `get`.
    pub async fn get_versioned(&self, tier: Tier, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        check_key(key)?;
        let value = timed(tier, "get_versioned", async {
            match tier {
                Tier::Local => Ok(self.local.get_versioned(key)),
                Tier::Replicated => Ok(self.replicated()?.get_versioned(key)),
                Tier::Central => self.central()?.get_versioned(key).await,
                Tier::Durable => Box::pin(self.durable()?.get_versioned(key)).await,
            }
        })
        .await?;
        Ok(value.filter(|(v, _)| v != RETIRED))
    }

    /// Compare-and-set: write only if `key` still holds `version`. Ok(false)
    /// if it changed (or is gone), `Err(Retired)` if it is retired.
    pub async fn cas(&self, tier: Tier, key: &str, value: Vec<u8>, ttl_s: u32, version: u64) -> Result<bool, StoreError> {
        check_key(key)?;
        check_value(tier, "cas", &value)?;
        timed(tier, "cas", async {
            match tier {
                Tier::Local => self.local.cas(key, value, ttl_s, version),
                Tier::Replicated => self.replicated()?.write_if(key, value, ttl_s, crate::cluster::Expect::Version(version)),
                Tier::Central => self.central()?.cas(key, value, ttl_s, version).await,
                Tier::Durable => Box::pin(self.durable()?.cas(key, value, ttl_s, version)).await,
            }
        })
        .await
    }

    /// Retire `key` for `ttl_s` (0: the tier's default): it reads as
    /// absent and refuses every `set` until then, on every node. A renewed
    /// session id retires its old key so the id cannot be used again.
    pub async fn retire(&self, tier: Tier, key: &str, ttl_s: u32) -> Result<(), StoreError> {
        check_key(key)?;
        timed(tier, "retire", self.write(tier, key, RETIRED.to_vec(), ttl_s)).await
    }

    async fn write(&self, tier: Tier, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        match tier {
            Tier::Local => self.local.set(key, value, ttl_s),
            Tier::Replicated => self.replicated()?.set(key, Some(value), ttl_s),
            Tier::Central => self.central()?.set(key, value, ttl_s).await,
            Tier::Durable => Box::pin(self.durable()?.set(key, value, ttl_s)).await,
        }
    }

    /// Remove a value; a retired key stays retired (deleting it would
    /// free the id for reuse).
    pub async fn delete(&self, tier: Tier, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        timed(tier, "delete", async {
            match tier {
                Tier::Local => {
                    self.local.delete(key);
                    Ok(())
                }
                Tier::Replicated => self.replicated()?.set(key, None, 0),
                Tier::Central => self.central()?.delete(key).await,
                Tier::Durable => Box::pin(self.durable()?.delete(key)).await,
            }
        })
        .await
    }

    /// Take `key`'s lock with `token` as its owner. Ok(false): another
    /// owner held it for the whole lock timeout.
    pub async fn lock(&self, tier: Tier, key: &str, token: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        timed(tier, "lock", async {
            match tier {
                Tier::Local => Ok(self.local.lock(key, token).await),
                Tier::Central => self.central()?.lock(key, token).await,
                Tier::Replicated | Tier::Durable => Err(StoreError::Unavailable(format!("the {} tier has no locks: lock in the central or local tier", tier.as_str()))),
            }
        })
        .await
    }

    /// Release `key`'s lock if `token` still owns it.
    pub async fn unlock(&self, tier: Tier, key: &str, token: &str) -> Result<(), StoreError> {
        timed(tier, "unlock", async {
            match tier {
                Tier::Local => {
                    self.local.unlock(key, token);
                    Ok(())
                }
                Tier::Central => self.central()?.unlock(key, token).await,
                Tier::Replicated | Tier::Durable => Ok(()),
            }
        })
        .await
    }

    fn replicated(&self) -> Result<&crate::cluster::Cluster, StoreError> {
        self.replicated.as_deref().ok_or(StoreError::NotConfigured)
    }

    fn central(&self) -> Result<&Central, StoreError> {
        self.central.as_ref().ok_or(StoreError::NotConfigured)
    }

    fn durable(&self) -> Result<&Durable, StoreError> {
        self.durable.as_ref().ok_or(StoreError::NotConfigured)
    }
}

/// memcached's key rule, applied to every tier so a plugin's keys work
/// on all of them.
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(StoreError::TooLarge);
    }
    if key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(StoreError::Unavailable(format!("key {key:?}: keys may not contain spaces or control characters")));
    }
    Ok(())
}

/// The value limits every write shares: memcached's item size, and the
/// retired marker is the tier's own.
fn check_value(tier: Tier, op: &str, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE {
        return Err(count(tier, op, StoreError::TooLarge));
    }
    if value == RETIRED {
        return Err(count(tier, op, StoreError::Unavailable("this value is reserved for retired keys".into())));
    }
    Ok(())
}

async fn timed<T>(tier: Tier, op: &'static str, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let started = Instant::now();
    let out = call.await;
    let (seconds, ok) = handles(tier, op);
    seconds.observe(started.elapsed().as_secs_f64());
    match out {
        Ok(v) => {
            ok.inc();
            Ok(v)
        }
        Err(e) => Err(count(tier, op, e)),
    }
}

/// The latency histogram and the `ok` counter of (`tier`, `op`), looked up
/// once per worker thread: every session request makes store calls, and a
/// labelled lookup hashes the labels under the family's lock.
fn handles(tier: Tier, op: &'static str) -> (prometheus::Histogram, prometheus::IntCounter) {
    type Handles = std::collections::HashMap<(Tier, &'static str), (prometheus::Histogram, prometheus::IntCounter)>;
    thread_local! {
        static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::new(Handles::new());
    }
    HANDLES.with(|h| {
        h.borrow_mut()
            .entry((tier, op))
            .or_insert_with(|| {
                let m = metrics();
                (m.session_store_seconds.with_label_values(&[tier.as_str(), op]), m.session_store_calls.with_label_values(&[tier.as_str(), op, "ok"]))
            })
            .clone()
    })
}

fn count(tier: Tier, op: &str, e: StoreError) -> StoreError {
    metrics().session_store_calls.with_label_values(&[tier.as_str(), op, e.label()]).inc();
    e
}
