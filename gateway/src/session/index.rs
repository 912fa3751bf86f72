//! A user's sessions, listed and ended everywhere: an index from principal
//! to session ids, kept in the tier each session lives in (so replicated
//! with the `replicated` tier), and the requests in flight of each
//! principal on this node, so `DELETE /sessions?principal=U` also cuts
//! their responses.
//!
//! Races are harmless by construction: each node writes only its own list
//! per (tier, principal) (`switchyard-sessions:NODE:HASH`), under a lock of
//! this process, so no two writers ever read-modify-write the same key. A
//! reader (the admin API) merges every node's list and keeps only the
//! sessions whose key still reads something; an ended, renewed or expired
//! session drops out at once, and out of its list at its node's next write
//! or when its entry's time is up.

use super::{StoreError, Stores, Tier};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Key prefix of a node's list of one principal's sessions in one tier.
pub const LIST_PREFIX: &str = "switchyard-sessions:";
/// Replicated key by which a revoke tells the other nodes to cut the
/// principal's responses (`Cluster` calls [`signalled`] when one lands).
pub const SIGNAL_PREFIX: &str = "switchyard-revoke:";
/// A session's index entry is rewritten at most this often per node (its
/// `last_seen` is that coarse); its expiry allows for it.
pub const REFRESH_S: u64 = 60;
/// Most sessions one list keeps (the least recently seen go first).
const MAX_PER_LIST: usize = 256;
/// Longest principal accepted (bytes).
pub const MAX_PRINCIPAL: usize = 256;
/// Most sessions this node remembers having indexed (for the throttle and
/// the per-strategy counts).
const MAX_SEEN: usize = 200_000;

/// One session in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// The session plugin's name.
    pub strategy: String,
    /// Unix seconds: first indexed, last indexed, and when the entry lapses.
    pub created: u64,
    pub last_seen: u64,
    pub expires: u64,
    pub ttl_s: u32,
    /// Every stored part: (tier name, key). The first is what is read to
    /// tell whether the session still lives.
    pub parts: Vec<(String, String)>,
    /// The node that wrote the entry (`[cluster] id`), if any.
    #[serde(default)]
    pub node: Option<u32>,
}

/// A node's sessions of one principal in one tier.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct List {
    pub principal: String,
    pub sessions: Vec<Entry>,
}

impl List {
    /// Add or refresh `e` (keeping when it was created); lapsed entries go,
    /// and past [`MAX_PER_LIST`] the least recently seen.
    pub fn upsert(&mut self, mut e: Entry, now: u64) {
        if let Some(old) = self.sessions.iter().find(|x| x.id == e.id) {
            e.created = old.created.min(e.created);
        }
        self.sessions.retain(|x| x.expires > now && x.id != e.id);
        self.sessions.push(e);
        if self.sessions.len() > MAX_PER_LIST {
            self.sessions.sort_by_key(|x| std::cmp::Reverse(x.last_seen));
            self.sessions.truncate(MAX_PER_LIST);
        }
    }

    /// Drop `id` and lapsed entries; whether anything changed.
    pub fn remove(&mut self, id: &str, now: u64) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|x| x.expires > now && x.id != id);
        self.sessions.len() != before
    }
}

/// Merge several nodes' entries: one per session id, the earliest
/// `created`, and the latest `last_seen` with its node.
pub fn merge(lists: impl IntoIterator<Item = Entry>, now: u64) -> Vec<Entry> {
    let mut by_id: BTreeMap<String, Entry> = BTreeMap::new();
    for e in lists.into_iter().filter(|e| e.expires > now) {
        match by_id.get_mut(&e.id) {
            None => {
                by_id.insert(e.id.clone(), e);
            }
            Some(cur) => {
                let created = cur.created.min(e.created);
                if e.last_seen > cur.last_seen {
                    *cur = e;
                }
                cur.created = created;
            }
        }
    }
    by_id.into_values().collect()
}

/// Why a principal is refused (admin input, or what a plugin passed).
pub fn check_principal(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("principal: empty; give the user's name, as the session's principal attribute holds it".into());
    }
    if p.len() > MAX_PRINCIPAL {
        return Err(format!("principal: {} bytes is over the {MAX_PRINCIPAL}-byte limit", p.len()));
    }
    if p.chars().any(char::is_control) {
        return Err("principal: control characters (newline, tab, NUL ...) are not allowed".into());
    }
    Ok(())
}

/// The store key of `node`'s list of `principal`'s sessions: the principal
/// is hashed, so any name makes a valid key of fixed length.
pub fn list_key(node: u32, principal: &str) -> String {
    format!("{LIST_PREFIX}{node}:{}", hash(principal))
}

fn signal_key(principal: &str) -> String {
    format!("{SIGNAL_PREFIX}{}", hash(principal))
}

fn hash(principal: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(principal.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The tier of a name stored in an entry.
pub fn tier_named(name: &str) -> Option<Tier> {
    [Tier::Local, Tier::Replicated, Tier::Central, Tier::Durable].into_iter().find(|t| t.as_str() == name)
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What this node remembers of a session it indexed.
struct Seen {
    principal: String,
    strategy: String,
    written: u64,
    expires: u64,
}

/// This process's part: the throttle, the list locks, the requests in flight.
#[derive(Default)]
struct Local {
    seen: Mutex<HashMap<String, Seen>>,
    /// One lock per list key stripe: a node's writes of one list never race.
    stripes: [tokio::sync::Mutex<()>; 16],
    watching: Mutex<HashMap<String, HashMap<u64, Arc<AtomicBool>>>>,
    next: AtomicU64,
}

fn local() -> &'static Local {
    static L: OnceLock<Local> = OnceLock::new();
    L.get_or_init(Local::default)
}

fn stripe(key: &str) -> &'static tokio::sync::Mutex<()> {
    let i = key.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    &local().stripes[i % 16]
}

fn node(stores: &Stores) -> u32 {
    stores.replicated.as_ref().map_or(0, |c| c.id)
}

/// Record that session `id` (of plugin `strategy`) belongs to `principal`.
/// Rewrites this node's list only when the session is new to this node,
/// changed hands, or was last written [`REFRESH_S`] ago.
pub async fn index(stores: &Stores, strategy: &str, principal: &str, id: &str, parts: Vec<(Tier, String)>, ttl_s: u32) -> Result<(), StoreError> {
    let Some((tier, _)) = parts.first() else { return Ok(()) };
    let now = now_s();
    if is_fresh(principal, id, now) {
        return Ok(());
    }
    let (tier, key) = (*tier, list_key(node(stores), principal));
    let ttl_s = if ttl_s == 0 { 1800 } else { ttl_s };
    let entry = Entry {
        id: id.to_string(),
        strategy: strategy.to_string(),
        created: now,
        last_seen: now,
        expires: now + u64::from(ttl_s) + REFRESH_S,
        ttl_s,
        parts: parts.iter().map(|(t, k)| (t.as_str().to_string(), k.clone())).collect(),
        node: stores.replicated.as_ref().map(|c| c.id),
    };
    let _guard = stripe(&key).lock().await;
    let mut list = read(stores, tier, &key).await?.unwrap_or_else(|| List { principal: principal.to_string(), sessions: Vec::new() });
    list.upsert(entry, now);
    write(stores, tier, &key, &list).await?;
    remember(id, Seen { principal: principal.to_string(), strategy: strategy.to_string(), written: now, expires: now + u64::from(ttl_s) });
    Ok(())
}

/// [`index`] as a plugin's `store.index` (or a memo repeating it) makes
/// it: best effort, a failure logged and never the request's.
pub async fn touch(stores: &Stores, strategy: &str, principal: &str, id: &str, parts: Vec<(Tier, String)>, ttl_s: u32) {
    if let Err(e) = index(stores, strategy, principal, id, parts, ttl_s).await {
        tracing::warn!(plugin = %strategy, "session index not updated: {e:?}");
    }
}

/// Whether this node wrote `id` as `principal`'s less than [`REFRESH_S`]
/// before `now`: [`index`] then has nothing to do (checked first by
/// callers that would otherwise box its future on every request).
pub fn is_fresh(principal: &str, id: &str, now: u64) -> bool {
    local().seen.lock().get(id).is_some_and(|s| s.principal == principal && s.written + REFRESH_S > now)
}

/// Drop session `id` from this node's list of `principal` in `tier`.
pub async fn unindex(stores: &Stores, principal: &str, id: &str, tier: Tier) -> Result<(), StoreError> {
    local().seen.lock().remove(id);
    let key = list_key(node(stores), principal);
    let _guard = stripe(&key).lock().await;
    let Some(mut list) = read(stores, tier, &key).await? else { return Ok(()) };
    if list.remove(id, now_s()) {
        write(stores, tier, &key, &list).await?;
    }
    Ok(())
}

fn remember(id: &str, seen: Seen) {
    let mut map = local().seen.lock();
    if map.len() >= MAX_SEEN {
        let now = now_s();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SEEN {
            map.clear(); // only the throttle and the counts lose: lists are intact
        }
    }
    map.insert(id.to_string(), seen);
}

async fn read(stores: &Stores, tier: Tier, key: &str) -> Result<Option<List>, StoreError> {
    Ok(stores.get(tier, key).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn write(stores: &Stores, tier: Tier, key: &str, list: &List) -> Result<(), StoreError> {
    if list.sessions.is_empty() {
        return stores.delete(tier, key).await;
    }
    let ttl = list.sessions.iter().map(|e| e.expires.saturating_sub(now_s())).max().unwrap_or(1).clamp(1, u64::from(u32::MAX));
    let bytes = serde_json::to_vec(list).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    stores.set(tier, key, bytes, ttl as u32).await
}

/// What the admin API finds for a principal.
#[derive(Debug, Default)]
pub struct Found {
    /// Live sessions (their first part still reads something).
    pub sessions: Vec<Entry>,
    /// Every unexpired entry, live or not (what a revoke retires).
    pub all: Vec<Entry>,
    /// Tiers that could not be read, with why.
    pub errors: Vec<String>,
}

/// The tiers configured here and the nodes whose lists each may hold.
fn sources(stores: &Stores) -> Vec<(Tier, Vec<u32>)> {
    let nodes = stores.replicated.as_ref().map_or_else(|| vec![0], |c| c.node_ids());
    let mut out = vec![(Tier::Local, vec![node(stores)])];
    if stores.replicated.is_some() {
        out.push((Tier::Replicated, nodes.clone()));
    }
    if stores.central.is_some() {
        out.push((Tier::Central, nodes.clone()));
    }
    if stores.durable.is_some() {
        out.push((Tier::Durable, nodes));
    }
    out
}

/// Every node's sessions of `principal`, merged, in every tier.
pub async fn find(stores: &Stores, principal: &str) -> Found {
    let mut found = Found::default();
    let mut entries = Vec::new();
    for (tier, nodes) in sources(stores) {
        for n in nodes {
            match read(stores, tier, &list_key(n, principal)).await {
                Ok(list) => entries.extend(list.into_iter().flat_map(|l| l.sessions)),
                Err(e) => found.errors.push(format!("{} tier, node {n}: {e:?}", tier.as_str())),
            }
        }
    }
    found.all = merge(entries, now_s());
    for e in &found.all {
        let Some((tier, key)) = e.parts.first().and_then(|(t, k)| Some((tier_named(t)?, k))) else { continue };
        match stores.get(tier, key).await {
            Ok(Some(_)) => found.sessions.push(e.clone()),
            Ok(None) => {}
            Err(err) => found.errors.push(format!("session {}…: {} tier: {err:?}", prefix(&e.id), tier.as_str())),
        }
    }
    found
}

/// What a revoke did.
#[derive(Debug, Default)]
pub struct Revoked {
    /// Live sessions ended.
    pub sessions: usize,
    /// Responses in flight on this node cut.
    pub cut: usize,
    pub errors: Vec<String>,
}

/// End every session of `principal` on every tier and node: each part is
/// retired (it reads nothing and cannot be written back), this node's
/// responses of the principal are cut, and with `[cluster]` every other
/// node is told to cut its own.
pub async fn revoke(stores: &Stores, principal: &str) -> Revoked {
    let found = find(stores, principal).await;
    let mut out = Revoked { sessions: found.sessions.len(), cut: 0, errors: found.errors };
    for e in &found.all {
        for (t, key) in &e.parts {
            let Some(tier) = tier_named(t) else { continue };
            match stores.retire(tier, key, e.ttl_s).await {
                Ok(()) | Err(StoreError::Retired) => {}
                Err(err) => out.errors.push(format!("session {}…: {} tier: not retired: {err:?}", prefix(&e.id), tier.as_str())),
            }
        }
    }
    out.cut = cut(principal);
    if let Some(cluster) = &stores.replicated {
        if let Err(e) = cluster.set(&signal_key(principal), Some(principal.as_bytes().to_vec()), 60) {
            out.errors.push(format!("other nodes not told to cut responses: {e:?}"));
        }
    }
    out
}

/// A peer's revoke reached this node (a replicated [`SIGNAL_PREFIX`] key).
pub fn signalled(value: &[u8]) {
    if let Ok(principal) = std::str::from_utf8(value) {
        let n = cut(principal);
        tracing::info!(principal, cut = n, "sessions revoked on another node: responses in flight cut");
    }
}

/// Cut every response in flight of `principal` on this node, and forget
/// its sessions here; how many were cut.
pub fn cut(principal: &str) -> usize {
    local().seen.lock().retain(|_, s| s.principal != principal);
    let watching = local().watching.lock();
    let Some(flags) = watching.get(principal) else { return 0 };
    flags.values().for_each(|f| f.store(true, Ordering::Relaxed));
    flags.len()
}

/// Live sessions this node indexed, per strategy (sessions it has served
/// within their TTL and not seen end).
pub fn counts() -> BTreeMap<String, usize> {
    let now = now_s();
    let mut out = BTreeMap::new();
    for s in local().seen.lock().values().filter(|s| s.expires > now) {
        *out.entry(s.strategy.clone()).or_default() += 1;
    }
    out
}

/// A request in flight of a principal; a revoke sets its flag. Dropping
/// it (the request ended) unregisters it.
pub struct Watch {
    principal: String,
    n: u64,
    flag: Arc<AtomicBool>,
}

impl Watch {
    pub fn new(principal: String) -> Self {
        let (n, flag) = (local().next.fetch_add(1, Ordering::Relaxed), Arc::new(AtomicBool::new(false)));
        local().watching.lock().entry(principal.clone()).or_default().insert(n, flag.clone());
        Self { principal, n, flag }
    }

    /// The principal's sessions were revoked while this request ran.
    pub fn revoked(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watching = local().watching.lock();
        if let Some(flags) = watching.get_mut(&self.principal) {
            flags.remove(&self.n);
            if flags.is_empty() {
                watching.remove(&self.principal);
            }
        }
    }
}

/// What the admin API shows of a session id: never the whole id (it is a
/// bearer secret once signed).
pub fn prefix(id: &str) -> &str {
    &id[..id.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, seen: u64, node: u32) -> Entry {
        Entry { id: id.into(), strategy: "s".into(), created: seen, last_seen: seen, expires: seen + 100, ttl_s: 40, parts: vec![("central".into(), format!("session:{id}"))], node: Some(node) }
    }

    #[test]
    fn an_upsert_refreshes_keeps_created_and_drops_lapsed_entries() {
        let mut l = List::default();
        l.upsert(entry("a", 10, 1), 10);
        l.upsert(entry("b", 20, 1), 20);
        l.upsert(entry("a", 50, 1), 50);
        assert_eq!(l.sessions.len(), 2);
        let a = l.sessions.iter().find(|e| e.id == "a").unwrap();
        assert_eq!((a.created, a.last_seen), (10, 50));
        l.upsert(entry("c", 130, 1), 130); // b lapsed at 120
        assert_eq!(l.sessions.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert!(l.remove("a", 130));
        assert!(!l.remove("a", 130));
    }

    #[test]
    fn a_list_is_bounded_by_the_least_recently_seen() {
        let mut l = List::default();
        for i in 0..(MAX_PER_LIST as u64 + 5) {
            l.upsert(entry(&format!("s{i}"), 1000 + i, 1), 1000);
        }
        assert_eq!(l.sessions.len(), MAX_PER_LIST);
        assert!(!l.sessions.iter().any(|e| e.id == "s0"));
    }

    #[test]
    fn nodes_lists_merge_into_one_entry_per_session() {
        let merged = merge([entry("a", 10, 1), entry("a", 30, 2), entry("b", 5, 3), entry("old", 0, 1)], 101);
        assert_eq!(merged.len(), 2, "{merged:?}");
        let a = &merged[0];
        assert_eq!((a.id.as_str(), a.created, a.last_seen, a.node), ("a", 10, 30, Some(2)));
    }

    #[test]
    fn principals_are_checked_and_hashed_into_valid_keys() {
        assert!(check_principal("alice@example.com").is_ok());
        assert!(check_principal("名前 with spaces").is_ok());
        assert!(check_principal("").unwrap_err().contains("empty"));
        assert!(check_principal("a\nb").unwrap_err().contains("control"));
        assert!(check_principal(&"x".repeat(MAX_PRINCIPAL + 1)).unwrap_err().contains("limit"));
        let k = list_key(3, "名前 with spaces");
        assert!(k.starts_with("switchyard-sessions:3:") && k.len() < 64 && !k.contains(' '), "{k}");
        assert_ne!(list_key(3, "alice"), list_key(3, "bob"));
        assert_ne!(list_key(3, "alice"), list_key(2, "alice"));
    }

    #[test]
    fn a_cut_reaches_only_the_principals_requests_in_flight() {
        let (a1, a2, b) = (Watch::new("cut-alice".into()), Watch::new("cut-alice".into()), Watch::new("cut-bob".into()));
        assert_eq!(cut("cut-alice"), 2);
        assert!(a1.revoked() && a2.revoked() && !b.revoked());
        drop((a1, a2));
        assert_eq!(cut("cut-alice"), 0, "ended requests unregister");
    }

    #[tokio::test]
    async fn an_index_lists_live_sessions_and_a_revoke_retires_them() {
        let stores = Stores::none();
        let parts = |id: &str| vec![(Tier::Local, format!("sess:{id}"))];
        for id in ["idx-a1", "idx-a2", "idx-a3"] {
            stores.set(Tier::Local, &format!("sess:{id}"), b"{}".to_vec(), 60).await.unwrap();
            index(&stores, "idx-test", "idx-alice", id, parts(id), 60).await.unwrap();
        }
        stores.set(Tier::Local, "sess:idx-b1", b"{}".to_vec(), 60).await.unwrap();
        index(&stores, "idx-test", "idx-bob", "idx-b1", parts("idx-b1"), 60).await.unwrap();
        // Logged out (retired by the plugin) and unindexed; expired (key gone).
        stores.retire(Tier::Local, "sess:idx-a2", 60).await.unwrap();
        unindex(&stores, "idx-alice", "idx-a2", Tier::Local).await.unwrap();
        stores.delete(Tier::Local, "sess:idx-a3").await.unwrap();
        let found = find(&stores, "idx-alice").await;
        assert_eq!(found.sessions.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["idx-a1"]);
        assert_eq!(counts().get("idx-test"), Some(&3), "a1, a3 (not seen to end) and bob's");
        let r = revoke(&stores, "idx-alice").await;
        assert_eq!((r.sessions, r.errors.len()), (1, 0));
        assert_eq!(stores.get(Tier::Local, "sess:idx-a1").await.unwrap(), None);
        assert_eq!(stores.set(Tier::Local, "sess:idx-a1", b"{}".to_vec(), 60).await, Err(StoreError::Retired), "cannot be written back");
        assert!(find(&stores, "idx-alice").await.sessions.is_empty());
        assert_eq!(find(&stores, "idx-bob").await.sessions.len(), 1, "another user is untouched");
    }
}
