//! The `local` tier: values in this process, with a TTL and a memory cap;
//! past the cap the least recently used go first, and are counted.

use super::StoreError;
use crate::metrics::metrics;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bytes counted per entry beyond its key and value (map and order slots).
const OVERHEAD: usize = 96;

/// How often a waiting `lock` looks again.
const LOCK_POLL: Duration = Duration::from_millis(2);

/// How long a local lock waits for its holder.
const LOCK_WAIT: Duration = Duration::from_secs(2);

struct Entry {
    value: Vec<u8>,
    expires: Instant,
    /// Position in the recency order.
    seq: u64,
    /// The `seq` of the write that stored it: what `cas` compares (a read
    /// moves `seq`, never this).
    version: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// seq -> key, oldest first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    bytes: usize,
}

/// The in-process tier.
pub struct Local {
    inner: Mutex<Inner>,
    /// Integer attributes (access control's mutable attributes on one node).
    counters: Mutex<HashMap<String, i64>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    max_bytes: usize,
    ttl: Duration,
}

impl Local {
    pub fn new(max_bytes: u64, ttl_s: u32) -> Self {
        Self { inner: Mutex::default(), counters: Mutex::default(), locks: Mutex::default(), max_bytes: max_bytes as usize, ttl: Duration::from_secs(u64::from(ttl_s.max(1))) }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_versioned(key).map(|(v, _)| v)
    }

    /// A value and the version `cas` compares.
    pub fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let inner = &mut *g;
        let e = inner.map.get_mut(key)?;
        if e.expires <= now {
            let e = inner.map.remove(key).expect("present");
            inner.order.remove(&e.seq);
            inner.bytes -= size(key, &e.value);
            return None;
        }
        // Read refreshes recency and the TTL, as the central tier does.
        inner.order.remove(&e.seq);
        inner.next_seq += 1;
        e.seq = inner.next_seq;
        e.expires = now + self.ttl;
        inner.order.insert(e.seq, key.to_string());
        Some((e.value.clone(), e.version))
    }

    pub fn set(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<(), StoreError> {
        self.write_if(key, value, ttl_s, |_| true).map(drop)
    }

    /// Store only if `key` holds nothing live: false if it does.
    pub fn add(&self, key: &str, value: Vec<u8>, ttl_s: u32) -> Result<bool, StoreError> {
        self.write_if(key, value, ttl_s, |current| current.is_none())
    }

    /// Store only if `key` still holds `version`: false if it changed.
    pub fn cas(&self, key: &str, value: Vec<u8>, ttl_s: u32, version: u64) -> Result<bool, StoreError> {
        self.write_if(key, value, ttl_s, |current| current == Some(version))
    }

    /// Write if `expect` accepts the key's live version (`None`: nothing
    /// live), all under the mutex; a live retired key refuses every write.
    fn write_if(&self, key: &str, value: Vec<u8>, ttl_s: u32, expect: impl FnOnce(Option<u64>) -> bool) -> Result<bool, StoreError> {
        let need = size(key, &value);
        if need > self.max_bytes {
            return Err(StoreError::TooLarge);
        }
        let ttl = if ttl_s == 0 { self.ttl } else { Duration::from_secs(u64::from(ttl_s)) };
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let live = inner.map.get(key).filter(|old| old.expires > Instant::now());
        if live.is_some_and(|old| old.value == super::RETIRED) {
            return Err(StoreError::Retired);
        }
        if !expect(live.map(|old| old.version)) {
            return Ok(false);
        }
        if let Some(old) = inner.map.remove(key) {
            inner.order.remove(&old.seq);
            inner.bytes -= size(key, &old.value);
        }
        let mut evicted = 0u64;
        while inner.bytes + need > self.max_bytes {
            let Some((_, victim)) = inner.order.pop_first() else { break };
            if let Some(v) = inner.map.remove(&victim) {
                inner.bytes -= size(&victim, &v.value);
                evicted += 1;
            }
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.order.insert(seq, key.to_string());
        inner.map.insert(key.to_string(), Entry { value, expires: Instant::now() + ttl, seq, version: seq });
        inner.bytes += need;
        let m = metrics();
        m.session_local_bytes.set(inner.bytes as i64);
        m.session_local_entries.set(inner.map.len() as i64);
        if evicted > 0 {
            m.session_evictions.with_label_values(&["local"]).inc_by(evicted);
        }
        Ok(true)
    }

    pub fn delete(&self, key: &str) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if inner.map.get(key).is_some_and(|old| old.value == super::RETIRED) {
            return; // stays retired until it expires
        }
        if let Some(old) = inner.map.remove(key) {
            inner.order.remove(&old.seq);
            inner.bytes -= size(key, &old.value);
        }
    }

    /// Values held now (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// An integer attribute (0 when absent).
    pub fn counter(&self, key: &str) -> i64 {
        self.counters.lock().get(key).copied().unwrap_or(0)
    }

    /// Add `delta` if the result stays within `[min, max]`: `Ok(new)`, or
    /// `Err(current)` when the bounds refuse it.
    pub fn update_counter(&self, key: &str, delta: i64, min: Option<i64>, max: Option<i64>) -> Result<i64, i64> {
        let mut c = self.counters.lock();
        let v = c.entry(key.to_string()).or_insert(0);
        let next = v.saturating_add(delta);
        if min.is_some_and(|m| next < m) || max.is_some_and(|m| next > m) {
            return Err(*v);
        }
        *v = next;
        Ok(next)
    }

    pub async fn lock(&self, key: &str, token: &str) -> bool {
        let until = Instant::now() + LOCK_WAIT;
        loop {
            {
                let mut locks = self.locks.lock();
                let now = Instant::now();
                let free = locks.get(key).is_none_or(|(_, exp)| *exp <= now);
                if free {
                    locks.insert(key.to_string(), (token.to_string(), now + self.ttl.min(Duration::from_secs(30))));
                    return true;
                }
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    pub fn unlock(&self, key: &str, token: &str) {
        let mut locks = self.locks.lock();
        if locks.get(key).is_some_and(|(t, _)| t == token) {
            locks.remove(key);
        }
    }
}

fn size(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_the_cap() {
        let l = Local::new(3 * (OVERHEAD as u64 + 2 + 10), 60);
        for k in ["k1", "k2", "k3"] {
            l.set(k, vec![0; 10], 0).unwrap();
        }
        assert!(l.get("k1").is_some(), "k1 is now the most recent");
        l.set("k4", vec![0; 10], 0).unwrap();
        assert!(l.get("k2").is_none(), "k2 was least recently used");
        assert!(l.get("k1").is_some() && l.get("k3").is_some() && l.get("k4").is_some());
    }

    #[test]
    fn expired_values_are_absent() {
        let l = Local::new(1 << 20, 60);
        l.set("a", b"x".to_vec(), 1).unwrap();
        assert_eq!(l.get("a"), Some(b"x".to_vec()));
        {
            let mut g = l.inner.lock();
            g.map.get_mut("a").unwrap().expires = Instant::now() - Duration::from_millis(1);
        }
        assert_eq!(l.get("a"), None);
    }

    #[test]
    fn a_retired_key_refuses_writes_and_deletes_until_it_expires() {
        let l = Local::new(1 << 20, 60);
        l.set("s", b"{}".to_vec(), 0).unwrap();
        l.set("s", super::super::RETIRED.to_vec(), 1).unwrap();
        assert_eq!(l.set("s", b"{\"user\":\"x\"}".to_vec(), 0), Err(StoreError::Retired));
        assert_eq!(l.set("s", super::super::RETIRED.to_vec(), 1), Err(StoreError::Retired), "a key is retired once");
        l.delete("s");
        assert_eq!(l.get("s").as_deref(), Some(super::super::RETIRED), "the tier keeps the marker; Stores::get hides it");
        l.inner.lock().map.get_mut("s").unwrap().expires = Instant::now() - Duration::from_millis(1);
        assert_eq!(l.set("s", b"{}".to_vec(), 0), Ok(()), "an expired retirement frees the key");
    }

    #[test]
    fn add_stores_only_what_is_absent_and_cas_only_over_the_version_read() {
        let l = Local::new(1 << 20, 60);
        assert_eq!(l.add("n", b"1".to_vec(), 0), Ok(true));
        assert_eq!(l.add("n", b"9".to_vec(), 0), Ok(false), "present: not overwritten");
        let (v, version) = l.get_versioned("n").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(l.get_versioned("n").unwrap().1, version, "a read is not a write");
        assert_eq!(l.cas("n", b"2".to_vec(), 0, version), Ok(true));
        assert_eq!(l.cas("n", b"3".to_vec(), 0, version), Ok(false), "the version read is gone");
        assert_eq!(l.get("n").unwrap(), b"2");
        let (_, v2) = l.get_versioned("n").unwrap();
        l.set("n", b"2".to_vec(), 0).unwrap();
        assert_eq!(l.cas("n", b"4".to_vec(), 0, v2), Ok(false), "a set of the same bytes is still a change");
        l.delete("n");
        assert_eq!(l.cas("n", b"5".to_vec(), 0, v2), Ok(false), "deleted since");
        assert_eq!(l.add("n", b"6".to_vec(), 0), Ok(true), "absent again");
        l.inner.lock().map.get_mut("n").unwrap().expires = Instant::now() - Duration::from_millis(1);
        assert_eq!(l.add("n", b"7".to_vec(), 0), Ok(true), "an expired value is absent");
    }

    #[test]
    fn add_and_cas_on_a_retired_key_are_refused() {
        let l = Local::new(1 << 20, 60);
        l.set("s", b"{}".to_vec(), 0).unwrap();
        let (_, version) = l.get_versioned("s").unwrap();
        l.set("s", super::super::RETIRED.to_vec(), 0).unwrap();
        assert_eq!(l.add("s", b"x".to_vec(), 0), Err(StoreError::Retired));
        assert_eq!(l.cas("s", b"x".to_vec(), 0, version), Err(StoreError::Retired));
        let (_, retired) = l.get_versioned("s").unwrap();
        assert_eq!(l.cas("s", b"x".to_vec(), 0, retired), Err(StoreError::Retired), "even with the marker's own version");
    }

    #[test]
    fn concurrent_cas_increments_lose_nothing() {
        let l = std::sync::Arc::new(Local::new(1 << 20, 60));
        l.add("c", b"0".to_vec(), 0).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        loop {
                            let (v, version) = l.get_versioned("c").unwrap();
                            let n: u64 = String::from_utf8(v).unwrap().parse().unwrap();
                            if l.cas("c", (n + 1).to_string().into_bytes(), 0, version).unwrap() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(l.get("c").unwrap(), b"2000");
    }

    #[test]
    fn a_value_over_the_cap_is_refused() {
        let l = Local::new(200, 60);
        assert_eq!(l.set("a", vec![0; 500], 0), Err(StoreError::TooLarge));
    }
}
