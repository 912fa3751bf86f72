//! The `central` tier: memcached over its meta protocol (`memcache`'s
//! async `exp` client, one connection pool per server; docs/decisions.md
//! says why), async end to end. Keys are spread over the servers by
//! rendezvous hashing; with `backups` each value is also copied to the next
//! server(s) in its order, and a read whose primary is down or has lost the
//! value reads a backup and puts the value back, so losing one server loses
//! no session. A read refreshes the TTL in the same round trip (`mg … v T`);
//! a lock is one `ms … ME` (add).

mod pipe;
mod servers;

pub use servers::Server;

use super::{StoreError, RETIRED};
use crate::config::CentralSpec;
use crate::error::Error;
use crate::metrics::metrics;
use memcache::exp::{AsyncMetaClient, Error as McError, Meta, MutationStatus};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a waiting `lock` tries again: from the first to the last
/// interval, doubling, so many waiters do not crowd the server.
const LOCK_POLL: Duration = Duration::from_millis(2);
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

/// Compare-and-swap attempts before an update gives up (each lost race
/// means another request's update went through).
const CAS_TRIES: usize = 64;

/// Client flags of a retired key (`store.retire`): the value is the marker.
const RETIRED_FLAGS: u32 = 1;

/// memcached reads an expiry over 30 days as an absolute Unix time.
const RELATIVE_TTL_MAX: u64 = 30 * 24 * 3600;

/// The CAS value of each key's last read on its primary, so the write
/// that usually follows costs one round trip. A stale entry only makes
/// that write take the general path; past `HINTS_MAX` entries (keys read
/// but never written) the table starts over.
#[derive(Default)]
struct Hints(parking_lot::Mutex<std::collections::HashMap<String, (usize, u64)>>);

const HINTS_MAX: usize = 65_536;

impl Hints {
    fn remember(&self, key: &str, server: usize, cas: Option<u64>) {
        let Some(cas) = cas else { return };
        let mut m = self.0.lock();
        if m.len() >= HINTS_MAX {
            m.clear();
        }
        m.insert(key.to_string(), (server, cas));
    }

    fn take(&self, key: &str) -> Option<(usize, u64)> {
        self.0.lock().remove(key)
    }
}

/// The memcached servers.
pub struct Central {
    hints: Hints,
    servers: Vec<Server>,
    backups: usize,
    ttl_s: u32,
    lock_timeout: Duration,
    lock_ttl_s: u32,
}

impl Central {
    /// A client for `spec.servers`; no connection is made until first use,
    /// so a memcached that starts later is picked up without a restart.
    pub fn new(spec: &CentralSpec) -> Result<Self, Error> {
        let timeout = Duration::from_millis(spec.timeout_ms);
        Ok(Self {
            hints: Hints::default(),
            servers: spec.servers.iter().map(|a| Server::new(*a, spec.pool, timeout)).collect(),
            backups: spec.backups,
            ttl_s: spec.ttl_s,
            lock_timeout: Duration::from_millis(spec.lock_timeout_ms),
            lock_ttl_s: spec.lock_ttl_s,
        })
    }

    /// Each server and its state (`up`, `down: why`).
    pub fn states(&self) -> Vec<(String, String)> {
        self.servers.iter().map(|s| (s.addr.to_string(), s.state())).collect()
    }

    /// The servers a key lives on, in order: its primary first, then its
    /// backups; servers marked down go last (tried only if all are down).
    fn targets(&self, key: &str) -> Vec<usize> {
        if self.servers.len() == 1 {
            return vec![0];
        }
        let order = servers::order(&self.servers, key);
        let (mut live, down): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|&i| !self.servers[i].is_down());
        live.extend(down);
        live
    }

    /// How many servers hold each value: the primary and its backups.
    fn copies(&self) -> usize {
        1 + self.backups.min(self.servers.len() - 1)
    }

    fn ttl(&self, ttl_s: u32) -> u32 {
        if ttl_s == 0 {
            self.ttl_s
        } else {
            ttl_s
        }
    }

    /// A value and its flags, from the primary or else a backup (then put
    /// back where it was missing). `touch`: refresh the TTL as it is read.
    async fn fetch(&self, key: &str, touch: bool) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let ttl = exptime(self.ttl_s);
        let (mut missed, mut failed) = (Vec::new(), None);
        for i in self.targets(key).into_iter().take(self.copies()) {
            match self.servers[i].read(key, touch.then_some(ttl)).await {
                Ok(r) if r.hit => {
                    // Never for a retired key: its CAS value would let a write
                    // that read the session before it was retired replace the mark.
                    if missed.is_empty() && r.flags != RETIRED_FLAGS {
                        self.hints.remember(key, i, r.cas);
                    }
                    let found = (r.value, r.flags);
                    for &m in &missed {
                        // Boxed, as every rare branch here: the common
                        // read's future stays small (it is moved per call).
                        Box::pin(self.rehome(m, key, &found)).await;
                    }
                    return Ok(Some(found));
                }
                Ok(_) => missed.push(i),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if missed.is_empty() => Err(e),
            _ => Ok(None),
        }
    }

    /// Put a value found on a backup back on a server that missed it,
    /// unless that server got a newer one meanwhile (`ME`: add).
    async fn rehome(&self, i: usize, key: &str, (value, flags): &(Vec<u8>, u32)) {
        let ttl = exptime(self.ttl_s);
        let out = self.servers[i].call(|c| c.set(key, value).ttl_raw(ttl).client_flags(*flags).add().send()).await;
        metrics().session_central_rehomed.with_label_values(&[if out.is_ok() { "ok" } else { "failed" }]).inc();
    }

    /// Copy a value to `key`'s backups (after its primary took it).
    async fn copy_to_backups(&self, targets: &[usize], key: &str, value: &[u8], flags: u32, ttl_s: u32) {
        let ttl = exptime(ttl_s);
        // A backup marked down is skipped: a value it misses is put back
        // when it is read there after it returns.
        for &i in targets.iter().skip(1).take(self.copies() - 1).filter(|&&i| !self.servers[i].is_down()) {
            let out = self.servers[i].call(|c| c.set(key, value).ttl_raw(ttl).client_flags(flags).send()).await;
            if let Err(e) = out {
                metrics().session_central_backup_failures.inc();
                tracing::debug!(server = %self.servers[i].addr, "backup copy of {key} not written: {e:?}");
            }
        }
    }

    /// Run `op` on `key`'s primary; if that server fails, once more on the
    /// next one (the failed one is marked down and goes last).
    async fn on_primary<'a, T, F>(&'a self, key: &str, op: impl Fn(&'a AsyncMetaClient) -> F) -> Result<(Vec<usize>, T), StoreError>
    where
        F: Future<Output = Result<T, McError>> + 'a,
    {
        let targets = self.targets(key);
        match self.servers[targets[0]].call(|c| op(c)).await {
            Ok(v) => Ok((targets, v)),
            Err(e) if self.servers.len() == 1 => Err(e),
            Err(_) => {
                let targets = self.targets(key);
                let v = self.servers[targets[0]].call(|c| op(c)).await?;
                Ok((targets, v))
            }
        }
    }

    /// Read a value (refreshing its TTL). A retired key reads as the marker.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.fetch(key, true).await?.map(|(v, flags)| if flags == RETIRED_FLAGS { RETIRED.to_vec() } else { v }))
    }

    /// Write, unless the key is retired (a retire is such a write of the
    /// marker, so a key is retired once). On the primary, the check and
    /// the write are one compare-and-swap (an absent key is added), so a
    /// retire landing in between makes the swap fail and the retry see it;
    /// the backups then get a copy.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        let ttl = self.ttl(ttl_s);
        let flags = if value == RETIRED { RETIRED_FLAGS } else { 0 };
        let targets = match self.set_as_read(key, &value, flags, ttl).await {
            Some(targets) => targets,
            None => {
                let (targets, out) = Box::pin(self.on_primary(key, |c| write_unless_retired(c, key, &value, flags, ttl))).await?;
                out?;
                targets
            }
        };
        if self.copies() > 1 {
            Box::pin(self.copy_to_backups(&targets, key, &value, flags, ttl)).await;
        }
        Ok(())
    }

    /// The common write in one round trip: the session was read on its
    /// primary in this request (or a recent one) and is unchanged since, so
    /// a compare-and-swap with the CAS value of that read is the check and
    /// the write at once (a retire since then changed it). It goes through
    /// the read pipe, behind that read. `None`: no such read, it changed,
    /// or the call failed; the caller takes the general path.
    async fn set_as_read(&self, key: &str, value: &[u8], flags: u32, ttl_s: u32) -> Option<Vec<usize>> {
        let (server, cas) = self.hints.take(key)?;
        let targets = self.targets(key);
        if targets[0] != server {
            return None;
        }
        let applied = self.servers[server].write_as_read(key, value, flags, exptime(ttl_s), cas).await;
        applied.ok().filter(|&a| a).map(|_| targets)
    }

    /// Store only if the key holds nothing (`ms … ME` on the primary, then
    /// a copy to the backups). The primary is read first, and a value only
    /// a backup still holds (the primary restarted) is put back there, so
    /// the add sees it. `Ok(false)`: the key holds a value; a retired key
    /// answers `Err(Retired)`.
    pub async fn add(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<bool, StoreError> {
        let ttl = self.ttl(ttl_s);
        if let Some((_, flags)) = self.fetch(key, false).await? {
            return if flags == RETIRED_FLAGS { Err(StoreError::Retired) } else { Ok(false) };
        }
        let (targets, r) = self.on_primary(key, |c| c.set(key, &value).ttl_raw(exptime(ttl)).add().send()).await?;
        if !r.applied() {
            return self.refused(targets[0], key).await;
        }
        self.copy_to_backups(&targets, key, &value, 0, ttl).await;
        Ok(true)
    }

    /// A value and its version: the primary's CAS value (`mg … v c T`,
    /// refreshing the TTL) tagged with that server ([`Versioned`]). A value
    /// only a backup holds is put back on the primary first, and read
    /// there. A retired key reads as the marker.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let ttl = exptime(self.ttl_s);
        let read = || self.on_primary(key, |c| c.get(key).touch_raw(ttl).meta(Meta::default().cas()).send());
        let (mut targets, mut r) = read().await?;
        if !r.hit() && self.servers.len() > 1 && self.fetch(key, false).await?.is_some() {
            (targets, r) = read().await?;
        }
        if !r.hit() {
            return Ok(None);
        }
        let value = if r.client_flags == Some(RETIRED_FLAGS) { RETIRED.to_vec() } else { r.value.unwrap_or_default() };
        Ok(Some((value, Versioned { server: targets[0], cas: r.item.cas.unwrap_or(0) }.into())))
    }

    /// Write only if the server the version came from is still the key's
    /// primary and holds that CAS value (`ms … C<cas>`), then copy to the
    /// backups. `Ok(false)`: changed, deleted or expired since, or the key
    /// moved to another server (CAS values are per server, and two servers
    /// that got the same writes may count alike). A failed call is not
    /// tried on another server, for the same reason. A retired key answers
    /// `Err(Retired)`.
    pub async fn cas(&self, key: &str, value: Vec<u8>, ttl_s: u32, version: u64) -> Result<bool, StoreError> {
        let (ttl, expected, targets) = (self.ttl(ttl_s), Versioned::from(version), self.targets(key));
        if expected.server != targets[0] {
            // Moved (its server failed or came back): read it again there.
            return Ok(false);
        }
        let r = self.servers[targets[0]].call(|c| c.set(key, &value).ttl_raw(exptime(ttl)).compare_cas(expected.cas).send()).await?;
        if !r.applied() {
            return self.refused(targets[0], key).await;
        }
        self.copy_to_backups(&targets, key, &value, 0, ttl).await;
        Ok(true)
    }

    /// Why a conditional write on server `i` was not applied: the key is
    /// retired (`Err(Retired)`), or it holds something else (`Ok(false)`).
    async fn refused(&self, i: usize, key: &str) -> Result<bool, StoreError> {
        let cur = self.servers[i].call(|c| c.get(key).without_value().send()).await?;
        if cur.hit() && cur.client_flags == Some(RETIRED_FLAGS) {
            return Err(StoreError::Retired);
        }
        Ok(false)
    }

    /// Delete, unless the key is retired (it stays so until it expires):
    /// a delete conditional on the CAS value read, on every copy.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut out = Ok(());
        let mut deleted = false;
        for i in self.targets(key).into_iter().take(self.copies()) {
            match self.servers[i].call(|c| delete_unless_retired(c, key)).await {
                Ok(()) => deleted = true,
                Err(e) => out = Err(e),
            }
        }
        if deleted { Ok(()) } else { out }
    }

    /// Take `lock:KEY` on the key's primary (`ms … ME`, the owner as its
    /// value, expiring after `lock_ttl_s`), retrying until the lock timeout.
    pub async fn lock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let until = Instant::now() + self.lock_timeout;
        let lock = lock_key(key);
        let mut wait = LOCK_POLL;
        loop {
            let (_, r) = self.on_primary(&lock, |c| c.set(&lock, token).ttl_raw(self.lock_ttl_s).add().send()).await?;
            if r.applied() {
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
    /// was taken by another request is left alone): a delete conditional
    /// on the CAS value of the owner read.
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let lock = lock_key(key);
        let lock = &lock;
        self.on_primary(lock, |c| async move {
            let r = c.get(lock).meta(Meta::default().cas()).send().await?;
            if r.hit() && r.value.as_deref() == Some(token.as_bytes()) {
                c.delete(lock).compare_cas(r.item.cas.unwrap_or(0)).send().await?;
            }
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Read an integer attribute (0 when absent).
    pub async fn counter(&self, key: &str) -> Result<i64, StoreError> {
        Ok(self.fetch(key, false).await?.and_then(|(v, _)| String::from_utf8_lossy(&v).trim().parse().ok()).unwrap_or(0))
    }

    /// Add `delta` to the integer at `key` if the result stays within
    /// `[min, max]`, atomically across every gateway node: compare-and-swap
    /// on the key's primary, retried after a lost race. A primary that lost
    /// the value (it restarted) is seeded from a backup first, never from
    /// 0. The backups only ever receive the resulting value, never the
    /// delta, and a swap whose outcome is unknown (written, no answer) is
    /// not retried but refused, so an update is applied at most once; it is
    /// acknowledged after the backup copy. `Ok(Ok(new))`: applied;
    /// `Ok(Err(current))`: refused by the bounds.
    pub async fn update_counter(&self, key: &str, delta: i64, min: Option<i64>, max: Option<i64>) -> Result<Result<i64, i64>, StoreError> {
        let ttl = exptime(self.ttl_s);
        for _ in 0..CAS_TRIES {
            let targets = self.targets(key);
            let primary = &self.servers[targets[0]];
            let got = match primary.call(|c| c.get(key).meta(Meta::default().cas()).send()).await {
                Ok(got) => got,
                // Nothing was changed yet: try the next server (this one is now marked down).
                Err(_) if self.servers.len() > 1 && primary.is_down() => continue,
                Err(e) => return Err(e),
            };
            if !got.hit() {
                let seed = self.counter(key).await?.to_string();
                primary.call(|c| c.set(key, &seed).ttl_raw(ttl).add().send()).await?;
                continue;
            }
            let current: i64 = String::from_utf8_lossy(got.value.as_deref().unwrap_or_default()).trim().parse().unwrap_or(0);
            let next = current.saturating_add(delta);
            if min.is_some_and(|m| next < m) || max.is_some_and(|m| next > m) {
                return Ok(Err(current));
            }
            let text = next.to_string();
            let cas = got.item.cas.unwrap_or(0);
            let r = primary.call(|c| c.set(key, &text).ttl_raw(ttl).compare_cas(cas).send()).await?;
            if r.applied() {
                self.copy_to_backups(&targets, key, text.as_bytes(), 0, self.ttl_s).await;
                return Ok(Ok(next));
            }
        }
        Err(StoreError::Unavailable(format!("memcached: {key} kept changing under {CAS_TRIES} compare-and-swap attempts")))
    }
}

/// A central version: the server that holds the key and its CAS value
/// there, packed in the `u64` plugins see (the server index in the top 8
/// bits, so up to 256 servers; memcached's CAS counter stays far below
/// 2^56).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Versioned {
    server: usize,
    cas: u64,
}

const CAS_BITS: u32 = 56;

impl From<Versioned> for u64 {
    fn from(v: Versioned) -> u64 {
        ((v.server as u64) << CAS_BITS) | (v.cas & ((1 << CAS_BITS) - 1))
    }
}

impl From<u64> for Versioned {
    fn from(v: u64) -> Self {
        Self { server: (v >> CAS_BITS) as usize, cas: v & ((1 << CAS_BITS) - 1) }
    }
}

/// On one server: write unless the key holds the retired marker (its
/// flags say so; the value is not fetched). `Ok(Err(Retired))`: refused.
async fn write_unless_retired(c: &AsyncMetaClient, key: &str, value: &[u8], flags: u32, ttl_s: u32) -> Result<Result<(), StoreError>, McError> {
    let ttl = exptime(ttl_s);
    for _ in 0..CAS_TRIES {
        let cur = c.get(key).without_value().meta(Meta::default().cas()).send().await?;
        if cur.hit() && cur.client_flags == Some(RETIRED_FLAGS) {
            return Ok(Err(StoreError::Retired));
        }
        let set = c.set(key, value).ttl_raw(ttl).client_flags(flags);
        let set = match (cur.hit(), cur.item.cas) {
            (true, Some(cas)) => set.compare_cas(cas),
            _ => set.add(),
        };
        if set.send().await?.applied() {
            return Ok(Ok(()));
        }
    }
    Ok(Err(StoreError::Unavailable(format!("memcached: {key} kept changing under {CAS_TRIES} compare-and-swap attempts"))))
}

/// On one server: delete unless retired, conditional on the CAS value read.
async fn delete_unless_retired(c: &AsyncMetaClient, key: &str) -> Result<(), McError> {
    for _ in 0..CAS_TRIES {
        let cur = c.get(key).without_value().meta(Meta::default().cas()).send().await?;
        if !cur.hit() || cur.client_flags == Some(RETIRED_FLAGS) {
            return Ok(());
        }
        let r = c.delete(key).compare_cas(cur.item.cas.unwrap_or(0)).send().await?;
        if r.applied() || r.status == MutationStatus::NotFound {
            return Ok(());
        }
    }
    Ok(())
}

/// memcached's expiry for a TTL: seconds, or past 30 days an absolute Unix time.
fn exptime(ttl_s: u32) -> u32 {
    if u64::from(ttl_s) <= RELATIVE_TTL_MAX {
        return ttl_s;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(now + u64::from(ttl_s)).unwrap_or(u32::MAX)
}

fn lock_key(key: &str) -> String {
    let mut k = format!("lock:{key}");
    // Keys are at most 250 bytes; a long key's lock may then share its
    // name with another long key's: a spurious wait, never a lost update.
    k.truncate(super::MAX_KEY);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_past_thirty_days_is_an_absolute_time() {
        assert_eq!(exptime(1800), 1800);
        assert_eq!(exptime(30 * 24 * 3600), 30 * 24 * 3600);
        let abs = u64::from(exptime(31 * 24 * 3600));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(abs >= now + 31 * 24 * 3600 - 1 && abs <= now + 31 * 24 * 3600 + 1, "{abs}");
    }

    #[test]
    fn a_version_names_its_server() {
        let v = Versioned { server: 3, cas: 123_456_789 };
        assert_eq!(Versioned::from(u64::from(v)), v);
        assert_ne!(u64::from(v), u64::from(Versioned { server: 1, cas: 123_456_789 }), "same CAS, other server");
    }

    #[test]
    fn lock_keys_fit_memcached() {
        assert_eq!(lock_key(&"k".repeat(300)).len(), super::super::MAX_KEY);
        assert_eq!(lock_key("session:1"), "lock:session:1");
    }
}
