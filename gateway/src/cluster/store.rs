//! The replicated tier's data: a map of versioned values. A version is a
//! Lamport counter and the writing node's id; a delta applies only if its
//! version is newer than what the key holds, so a late or duplicated delta
//! never overwrites a newer value, and every node converges on the same
//! value whatever order deltas arrive in. A delete is a tombstone (kept
//! until it expires) for the same reason; a retired key (a renewed session
//! id) beats every value until it expires.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A key's version: (Lamport counter, node id), compared in that order.
pub type Version = (u64, u32);

/// One key's state, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub version: Version,
    /// `None`: deleted.
    pub value: Option<Vec<u8>>,
    /// Wall-clock expiry, ms since the Unix epoch.
    pub expires_ms: u64,
}

/// What a conditional write (`store.add`, `store.cas`) expects the key
/// to hold on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing live.
    Absent,
    /// The value of this opaque version ([`Versioned::versioned`]).
    Version(u64),
}

/// Why a conditional write changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key holds something else than expected.
    Changed,
    /// The key is retired.
    Retired,
}

/// The versioned map.
#[derive(Default)]
pub struct Versioned {
    map: HashMap<String, Entry>,
    clock: u64,
    bytes: usize,
}

impl Versioned {
    /// A local write by `node`: the next version, applied and returned
    /// for broadcast; `None` when the key is retired (nothing changes; a
    /// key is retired once).
    pub fn write(&mut self, node: u32, key: &str, value: Option<Vec<u8>>, expires_ms: u64, now_ms: u64) -> Option<Entry> {
        if self.retired(key, now_ms) {
            return None;
        }
        self.clock += 1;
        let e = Entry { key: key.to_string(), version: (self.clock, node), value, expires_ms };
        self.put(e.clone());
        Some(e)
    }

    /// A local write of `value` if the key holds what `expect` says, decided
    /// on this node only (a peer may accept a conflicting write meanwhile;
    /// then the newer version wins on every node, as for any write).
    pub fn write_if(&mut self, node: u32, key: &str, value: Vec<u8>, expires_ms: u64, now_ms: u64, expect: Expect) -> Result<Entry, Refused> {
        if self.retired(key, now_ms) {
            return Err(Refused::Retired);
        }
        let current = self.versioned(key, now_ms).map(|(_, v)| v);
        let ok = match expect {
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        };
        if !ok {
            return Err(Refused::Changed);
        }
        self.write(node, key, Some(value), expires_ms, now_ms).ok_or(Refused::Retired)
    }

    /// A live value and its version as one opaque number: the Lamport
    /// counter's low 32 bits and the node id (exact until a node's clock
    /// passes 2^32 writes).
    pub fn versioned(&self, key: &str, now_ms: u64) -> Option<(&[u8], u64)> {
        let e = self.map.get(key).filter(|e| e.expires_ms > now_ms)?;
        Some((e.value.as_deref()?, (e.version.0 << 32) | u64::from(e.version.1)))
    }

    /// Apply a peer's entry; false if it is stale (not newer than ours).
    /// A retirement beats any value whatever their versions, so a write
    /// racing a retire on another node cannot bring the key back and
    /// every node still converges (on retired).
    pub fn apply(&mut self, e: Entry, now_ms: u64) -> bool {
        self.clock = self.clock.max(e.version.0);
        let Some(cur) = self.map.get(&e.key) else {
            self.put(e);
            return true;
        };
        let cur_retired = is_retired(cur.value.as_deref()) && cur.expires_ms > now_ms;
        let stale = match (cur_retired, is_retired(e.value.as_deref())) {
            (true, false) => true,
            (false, true) => false,
            _ => cur.version >= e.version,
        };
        if stale {
            return false;
        }
        self.put(e);
        true
    }

    fn retired(&self, key: &str, now_ms: u64) -> bool {
        self.map.get(key).is_some_and(|e| e.expires_ms > now_ms && is_retired(e.value.as_deref()))
    }

    fn put(&mut self, e: Entry) {
        self.bytes += size(&e);
        if let Some(old) = self.map.insert(e.key.clone(), e) {
            self.bytes -= size(&old);
        }
    }

    /// A live value.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&[u8]> {
        self.map.get(key).filter(|e| e.expires_ms > now_ms).and_then(|e| e.value.as_deref())
    }

    /// Every entry (for a state transfer), tombstones included.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.map.values()
    }

    /// Drop what has expired (values and tombstones alike).
    pub fn expire(&mut self, now_ms: u64) {
        let gone: Vec<String> = self.map.values().filter(|e| e.expires_ms <= now_ms).map(|e| e.key.clone()).collect();
        for k in gone {
            if let Some(old) = self.map.remove(&k) {
                self.bytes -= size(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn is_retired(value: Option<&[u8]>) -> bool {
    value == Some(crate::session::RETIRED)
}

fn size(e: &Entry) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 48
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_stale_or_duplicate_delta_is_rejected() {
        let mut a = Versioned::default();
        let v1 = a.write(1, "k", Some(b"one".to_vec()), u64::MAX, 0).unwrap();
        let v2 = a.write(1, "k", Some(b"two".to_vec()), u64::MAX, 0).unwrap();
        let mut b = Versioned::default();
        assert!(b.apply(v2.clone(), 0));
        assert!(!b.apply(v1, 0), "late delta");
        assert!(!b.apply(v2, 0), "duplicate delta");
        assert_eq!(b.get("k", 0), Some(&b"two"[..]));
    }

    #[test]
    fn a_delete_beats_the_write_it_follows_in_any_order() {
        let mut a = Versioned::default();
        let put = a.write(1, "k", Some(b"x".to_vec()), u64::MAX, 0).unwrap();
        let del = a.write(1, "k", None, u64::MAX, 0).unwrap();
        let mut b = Versioned::default();
        assert!(b.apply(del, 0));
        assert!(!b.apply(put, 0));
        assert_eq!(b.get("k", 0), None);
    }

    #[test]
    fn a_retirement_beats_a_concurrent_write_on_every_node() {
        let retired = || Some(crate::session::RETIRED.to_vec());
        let (mut a, mut b) = (Versioned::default(), Versioned::default());
        let base = a.write(1, "s", Some(b"{}".to_vec()), u64::MAX, 0).unwrap();
        assert!(b.apply(base, 0));
        // Node 2 writes after node 1 retired, before it heard of it: a newer version.
        let retire = a.write(1, "s", retired(), u64::MAX, 0).unwrap();
        b.write(2, "s", Some(b"{\"cart\":1}".to_vec()), u64::MAX, 0).unwrap();
        let late = b.write(2, "s", Some(b"{\"cart\":2}".to_vec()), u64::MAX, 0).unwrap();
        assert!(late.version > retire.version);
        assert!(!a.apply(late, 0), "node 1 keeps the retirement");
        assert!(b.apply(retire, 0), "node 2 takes it");
        for n in [&a, &b] {
            assert_eq!(n.get("s", 0), Some(crate::session::RETIRED));
        }
        assert!(a.write(1, "s", Some(b"{}".to_vec()), u64::MAX, 0).is_none(), "a local write is refused too");
        assert!(a.write(1, "s", None, u64::MAX, 0).is_none(), "and so is a delete");
        assert!(a.write(1, "s", Some(b"{}".to_vec()), u64::MAX, u64::MAX).is_some(), "an expired retirement frees the key");
    }

    #[test]
    fn add_and_cas_decide_on_this_nodes_versions() {
        let mut a = Versioned::default();
        let w = |a: &mut Versioned, v: &[u8], expect| a.write_if(1, "n", v.to_vec(), u64::MAX, 0, expect);
        assert!(w(&mut a, b"1", Expect::Absent).is_ok());
        assert_eq!(w(&mut a, b"9", Expect::Absent), Err(Refused::Changed), "present");
        let (_, version) = a.versioned("n", 0).unwrap();
        assert!(w(&mut a, b"2", Expect::Version(version)).is_ok());
        assert_eq!(w(&mut a, b"3", Expect::Version(version)), Err(Refused::Changed), "the version read is gone");
        assert_eq!(a.get("n", 0), Some(&b"2"[..]));
        // A peer's newer write moves the version too.
        let (_, mine) = a.versioned("n", 0).unwrap();
        let mut b = Versioned::default();
        let theirs = b.write(2, "n", Some(b"7".to_vec()), u64::MAX, 100).unwrap();
        let theirs = Entry { version: (theirs.version.0 + 10, 2), ..theirs };
        assert!(a.apply(theirs, 0));
        assert_eq!(w(&mut a, b"4", Expect::Version(mine)), Err(Refused::Changed));
        // Deleted or expired: absent again.
        a.write(1, "n", None, u64::MAX, 0).unwrap();
        assert!(w(&mut a, b"5", Expect::Absent).is_ok(), "a tombstone is absent");
        a.write(1, "e", Some(b"x".to_vec()), 10, 0).unwrap();
        assert!(a.write_if(1, "e", b"y".to_vec(), u64::MAX, 20, Expect::Absent).is_ok(), "an expired value is absent");
    }

    #[test]
    fn add_and_cas_on_a_retired_key_are_refused() {
        let mut a = Versioned::default();
        a.write(1, "s", Some(b"{}".to_vec()), u64::MAX, 0).unwrap();
        let (_, version) = a.versioned("s", 0).unwrap();
        a.write(1, "s", Some(crate::session::RETIRED.to_vec()), u64::MAX, 0).unwrap();
        assert_eq!(a.write_if(1, "s", b"x".to_vec(), u64::MAX, 0, Expect::Absent), Err(Refused::Retired));
        assert_eq!(a.write_if(1, "s", b"x".to_vec(), u64::MAX, 0, Expect::Version(version)), Err(Refused::Retired));
    }

    proptest! {
        /// Nodes that receive the same deltas in any order, any number of
        /// times, end with the same values.
        #[test]
        fn replicas_converge_whatever_the_order(
            writes in proptest::collection::vec((0u32..3, 0usize..4, proptest::option::of(any::<u8>()), 0u8..6), 1..40),
            order in any::<prop::sample::Index>(),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut nodes: Vec<Versioned> = (0..3).map(|_| Versioned::default()).collect();
            let mut log = Vec::new();
            for (node, key, value, retire) in writes {
                let value = if retire == 0 { Some(crate::session::RETIRED.to_vec()) } else { value.map(|v| vec![v]) };
                // The writer's peers see it later; the writer's clock moves on.
                log.extend(nodes[node as usize].write(node, &format!("k{key}"), value, u64::MAX, 0));
            }
            let mut shuffled = log.clone();
            let n = shuffled.len();
            shuffled.rotate_left(order.index(n));
            for d in &dups {
                shuffled.push(log[d.index(n)].clone());
            }
            let mut a = Versioned::default();
            let mut b = Versioned::default();
            for e in &log { a.apply(e.clone(), 0); }
            for e in &shuffled { b.apply(e.clone(), 0); }
            for k in 0..4 {
                let key = format!("k{k}");
                prop_assert_eq!(a.get(&key, 0), b.get(&key, 0));
            }
        }
    }
}
