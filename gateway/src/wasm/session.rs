//! `SessionPolicy` backed by a Wasm component: the generic pool (`seam.rs`)
//! plus what only this seam does: lend the request, carry the request's
//! store locks between its two hooks, check the headers a plugin adds, and
//! keep both hooks of a request on one plugin version.

use super::engine::LoadedPlugin;
use super::host::{Deferred, HostState, Read, WritePlan};
use super::memo::{Memo, Trace};
use super::seam::{self, CallFuture, Generation, Hosted, Seam, SwapTarget};
use super::session_exports as wit;
use crate::error::{Error, PluginFault};
use crate::metrics::plugin_fault;
use crate::proxy::INTERNAL_PREFIX;
use crate::seams::session::Headers;
use crate::seams::{Forward, NoSession, Outcome, Reply, RequestView, SessionAction, SessionOutcome, SessionPolicy, SessionRun};
use crate::session::{Stores, Tier};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use wasmtime::component::{Instance as WasmInstance, InstancePre};
use wasmtime::Store;

/// The session seam's exports.
pub struct SessionSeam;

/// What `configure` said the strategy reads: the backend response
/// headers `after-response` gets (`None`: all), lowercase.
#[derive(Clone, Default)]
pub struct Needs {
    headers: Option<Arc<[HeaderName]>>,
}

impl Needs {
    fn from_wit(needs: wit::Needs) -> Result<Self, String> {
        let Some(names) = needs.response_headers else { return Ok(Self::default()) };
        let headers = names
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("configure asked for response header {n:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { headers: Some(headers) })
    }

    /// Whether the backend's response carries a header the strategy reads
    /// (with no list, every header is read: always).
    fn names_any(&self, all: &http::HeaderMap) -> bool {
        self.headers.as_ref().is_none_or(|names| names.iter().any(|n| all.contains_key(n)))
    }

    /// The backend's headers the strategy reads, as `after-response` gets them.
    fn pick(&self, all: Option<&http::HeaderMap>) -> Vec<wit::Header> {
        let Some(all) = all else { return Vec::new() };
        let header = |(name, value): (&HeaderName, &HeaderValue)| wit::Header { name: name.as_str().to_string(), value: String::from_utf8_lossy(value.as_bytes()).into_owned() };
        match &self.headers {
            None => all.iter().map(header).collect(),
            Some(names) => names.iter().flat_map(|n| all.get_all(n).iter().map(move |v| header((n, v)))).collect(),
        }
    }
}

impl Seam for SessionSeam {
    type Guest = wit::Guest;
    type Setup = Needs;
    type Local = ();
    const SEAM: &'static str = "session";
    const HOOKS: &'static [&'static str] = &["configure", "before-request", "after-response"];
    const EXPORT: &'static str = "switchyard:policy/session@0.1.0";

    fn world_of(pre: &InstancePre<HostState>) -> Option<&'static str> {
        super::session_exports::GuestIndices::new(pre).ok().map(|_| "session-policy")
    }

    fn worlds_by_exports(names: &[&str]) -> Vec<&'static str> {
        if names.contains(&Self::EXPORT) { vec!["session-policy"] } else { Vec::new() }
    }

    fn load(pre: &InstancePre<HostState>, store: &mut Store<HostState>, instance: &WasmInstance) -> Result<Self::Guest, String> {
        let indices = wit::GuestIndices::new(pre)
            .map_err(|e| format!("does not export the session-policy world (switchyard:policy/session@0.1.0): {e:#}"))?;
        indices.load(store, instance).map_err(|e| format!("{e:#}"))
    }

    fn configure<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, config: &'a str) -> CallFuture<'a, Result<Needs, String>> {
        Box::pin(async move { Ok(guest.call_configure(store, config).await?.and_then(Needs::from_wit)) })
    }
}

/// Locks a request holds: (tier, key, owner).
type Locks = Vec<(Tier, String, String)>;

/// The principal a hook said the request's session belongs to.
type Principal = Option<String>;

/// The store calls a hook made (`SEEN_*` bits), for the session outcome.
type Seen = u8;

/// A Wasm session plugin serving one route.
pub struct WasmSession {
    hosted: Hosted<SessionSeam>,
    route: String,
    stores: Arc<Stores>,
    hints: Arc<Hints>,
}

/// The memo counters of one plugin (`switchyard_session_memo_total`).
struct MemoCounts {
    hit: prometheus::IntCounter,
    stale: prometheus::IntCounter,
}

impl MemoCounts {
    fn of(plugin: &str) -> Self {
        let c = |outcome| crate::metrics::metrics().session_memo.with_label_values(&[plugin, outcome]);
        Self { hit: c("hit"), stale: c("stale") }
    }
}

impl WasmSession {
    pub async fn new(plugin: Arc<LoadedPlugin>, route: &str) -> Result<Self, Error> {
        let stores = plugin.engine.stores().clone();
        let hosted = Hosted::new(plugin).await?;
        let hints = Arc::new(Hints { counts: Some(MemoCounts::of(&hosted.name)), ..Hints::default() });
        Ok(Self { hosted, route: route.to_string(), stores, hints })
    }
}

/// What one `before-request` call gave: its action, the locks the request
/// holds, its principal, its store calls, the keys it asked to have read
/// before it is called again (`read-ahead`), and its `write-back`.
type Before = (wit::Action, Locks, Principal, Seen, Vec<(Tier, String)>, Option<WritePlan>, Trace);

/// What `before-request` gave the request: [`Before`] but the keys.
type Began = (wit::Action, Locks, Principal, Seen, Option<WritePlan>);

/// `before-request` on one generation. A call that asks for keys
/// (`read-ahead`) gives up its instance while the gateway reads them, and
/// is made again with the values at hand: no instance waits on a read.
/// The keys asked for are remembered by the request's cookies (`hints`),
/// so the session's next request has them read before its first call and
/// needs that one call only.
async fn before(generation: &Generation<SessionSeam>, arm: seam::Arm, req: &Arc<RequestView>, stores: &Arc<Stores>, hints: &Hints) -> Result<Began, Error> {
    let hint = hints.key(generation, req);
    let (mut known, memo) = hint.and_then(|h| hints.get(h)).unwrap_or_default();
    // Cookies not seen before: the keys written by the response that set
    // one of them (a login's next request), read ahead as for a known one.
    let set_by_response = hint.is_some() && known.is_empty() && memo.is_none();
    if set_by_response {
        known = hints.written_for(generation, req);
    }
    let had_memo = memo.is_some();
    // Boxed: the reads' futures stay out of every session call's future.
    let early = match memo {
        Some(m) => match Box::pin(repeat(generation, &m, req, stores, hints)).await {
            Ok(began) => return Ok(began),
            // The keys the memo read are the session's (its one part, or both).
            Err(Some(read)) if known.len() == read.len() && read.iter().all(|(t, k, _)| known.contains(&(*t, k.clone()))) => Some(read),
            Err(_) if known.is_empty() => None,
            Err(_) => Some(Box::pin(read_wanted(stores, known.clone())).await),
        },
        None if known.is_empty() => None,
        None => Some(Box::pin(read_wanted(stores, known.clone())).await),
    };
    let (action, locks, principal, seen, wanted, plan, trace) = before_once(generation, arm, req, Locks::new(), early, true).await?;
    if wanted.is_empty() {
        if let Some(h) = hint.filter(|_| set_by_response && !known.is_empty() && locks.is_empty()) {
            hints.put(h, known);
        }
        hints.remember(hint, had_memo, || Memo::record(trace, Arc::downgrade(&generation.plugin), generation_id(generation), req, &action, !locks.is_empty(), &plan));
        return Ok((action, locks, principal, seen, plan));
    }
    if let Some(h) = hint {
        // A call that locks reads after its lock: nothing to read early.
        // Otherwise the keys read early and those still wanted, so a
        // session whose keys were only partly known is known in full.
        if locks.is_empty() {
            known.extend(wanted.iter().filter(|w| !known.contains(w)).cloned().collect::<Vec<_>>());
            known.truncate(super::host::MOST_AHEAD);
            hints.put(h, known);
        } else {
            hints.forget(h);
        }
    }
    let read = Box::pin(read_wanted(stores, wanted)).await;
    let (action, locks, principal, again, _, plan, trace) = before_once(generation, arm, req, locks, Some(read), false).await?;
    hints.remember(hint, false, || Memo::record(trace, Arc::downgrade(&generation.plugin), generation_id(generation), req, &action, !locks.is_empty(), &plan));
    Ok((action, locks, principal, seen | again, plan))
}

/// A generation's identity while it lives (a memo's and a hint's).
fn generation_id(generation: &Generation<SessionSeam>) -> usize {
    std::ptr::from_ref(generation) as usize
}

/// `before-request` repeated from a memo, without calling the plugin,
/// when it holds for this request and the key still reads as it needs.
/// `Err`: the plugin decides, with the key's read when it was made.
async fn repeat(generation: &Generation<SessionSeam>, memo: &Memo, req: &RequestView, stores: &Stores, hints: &Hints) -> Result<Began, Option<Read>> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if !memo.holds(Arc::as_ptr(&generation.plugin), generation_id(generation), req, now_ms) {
        return Err(None);
    }
    // A forward that read nothing (sticky's) is repeated with no read.
    let read = if memo.keys.is_empty() { Read::new() } else { Box::pin(read_wanted(stores, memo.keys.clone())).await };
    let values: Option<Vec<&[u8]>> = read.iter().map(|(_, _, r)| r.as_ref().ok()?.as_deref()).collect();
    let Some(r) = values.and_then(|v| memo.replay(&v)) else {
        if let Some(c) = &hints.counts {
            c.stale.inc();
        }
        return Err(Some(read));
    };
    if let Some(c) = &hints.counts {
        c.hit.inc();
    }
    let principal = match r.indexed {
        Some(i) => {
            if !crate::session::index::is_fresh(&i.principal, &i.id, crate::session::index::now_s()) {
                Box::pin(crate::session::index::touch(stores, &generation.plugin.spec.name, &i.principal, &i.id, i.parts, i.ttl_s)).await;
            }
            Some(i.principal)
        }
        None => None,
    };
    Ok((r.action, Locks::new(), principal, crate::seams::session::SEEN_LOADED, r.plan))
}

/// Most sessions whose read-ahead keys and memo are remembered: two
/// generations of half as many ([`Recent`]), so the sessions in use keep
/// theirs however many others come and go.
const MOST_HINTS: usize = 16_384;

/// The keys a session's first `before-request` call asked to have read,
/// by a keyed hash of the plugin version and the request's `Cookie`
/// headers: a request whose cookies are those of an earlier one has the
/// same keys read before its first call. Only the plugin's own asks are
/// remembered, so a client cannot name a key; a value read early and not
/// asked for is dropped. A request without cookies is never hinted.
#[derive(Default)]
struct Hints {
    keys: parking_lot::Mutex<Recent>,
    hasher: std::hash::RandomState,
    counts: Option<MemoCounts>,
}

/// What a session's earlier request left: the keys its first call asked
/// for, and its forward when the plugin let it be repeated (`remember`).
#[derive(Default)]
struct Hint {
    keys: Vec<(Tier, String)>,
    memo: Option<Arc<Memo>>,
}

/// The hints of the sessions seen most recently: a newer and an older
/// generation of at most `MOST_HINTS / 2` each. When the newer is full it
/// becomes the older and the older is dropped; a hint found in the older
/// moves to the newer. So a session that sends a request at least once
/// per `MOST_HINTS / 2` new sessions keeps its hint and its memo, where
/// one map emptied when full would drop every session's at once.
#[derive(Default)]
struct Recent {
    newer: std::collections::HashMap<u64, Hint>,
    older: std::collections::HashMap<u64, Hint>,
}

impl Recent {
    fn get(&mut self, key: u64) -> Option<&mut Hint> {
        if !self.newer.contains_key(&key) {
            let hint = self.older.remove(&key)?;
            self.insert(key, hint);
        }
        self.newer.get_mut(&key)
    }

    fn insert(&mut self, key: u64, hint: Hint) {
        if self.newer.len() >= MOST_HINTS / 2 && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
            self.older.remove(&key);
        }
        self.newer.insert(key, hint);
    }

    fn remove(&mut self, key: u64) {
        self.newer.remove(&key);
        self.older.remove(&key);
    }

    fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }
}

impl Hints {
    fn key(&self, generation: &Generation<SessionSeam>, req: &RequestView) -> Option<u64> {
        use std::hash::{BuildHasher, Hasher};
        let mut cookies = req.headers.get_all(http::header::COOKIE).iter().peekable();
        cookies.peek()?;
        let mut h = self.hasher.build_hasher();
        h.write_usize(std::ptr::from_ref(generation) as usize);
        for c in cookies {
            h.write(c.as_bytes());
            h.write_u8(0);
        }
        Some(h.finish())
    }

    /// Where the keys written for a cookie a response set are kept: the
    /// hash of the plugin version and the cookie's `name=value`, apart from
    /// [`Hints::key`]'s.
    fn pair_key(&self, generation: &Generation<SessionSeam>, pair: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write_usize(generation_id(generation).wrapping_add(1));
        h.write(pair);
        h.finish()
    }

    /// Keep `keys`, which a response's `after-response` wrote, for each
    /// cookie the response sets (`name=value`, before any attribute).
    fn wrote_for<'a>(&self, generation: &Generation<SessionSeam>, set_cookies: impl Iterator<Item = &'a HeaderValue>, keys: &[(Tier, String)]) {
        for c in set_cookies {
            let pair = c.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            if pair.len() > 1 {
                self.keys.lock().insert(self.pair_key(generation, pair), Hint { keys: keys.to_vec(), memo: None });
            }
        }
    }

    /// The keys kept by [`Hints::wrote_for`] for one of the request's
    /// cookies (the first found), or none.
    fn written_for(&self, generation: &Generation<SessionSeam>, req: &RequestView) -> Vec<(Tier, String)> {
        let pairs = req.headers.get_all(http::header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).map(<[u8]>::trim_ascii);
        let keys: Vec<u64> = pairs.filter(|p| p.len() > 1).map(|p| self.pair_key(generation, p)).collect();
        let mut recent = self.keys.lock();
        keys.into_iter().find_map(|k| recent.get(k).map(|h| h.keys.clone())).unwrap_or_default()
    }

    fn get(&self, key: u64) -> Option<(Vec<(Tier, String)>, Option<Arc<Memo>>)> {
        self.keys.lock().get(key).map(|h| (h.keys.clone(), h.memo.clone()))
    }

    fn put(&self, key: u64, wanted: Vec<(Tier, String)>) {
        self.keys.lock().insert(key, Hint { keys: wanted, memo: None });
    }

    /// Keep the memo a call left for the session's next requests, or drop
    /// the one it had (`had`): a call that did not remember ends it.
    fn remember(&self, key: Option<u64>, had: bool, memo: impl FnOnce() -> Option<Memo>) {
        let Some(key) = key else { return };
        let memo = memo();
        if memo.is_none() && !had {
            return;
        }
        let mut keys = self.keys.lock();
        if let Some(h) = keys.get(key) {
            h.memo = memo.map(Arc::new);
        } else if memo.is_some() {
            // A session whose reads never wait (local, replicated) has no keys.
            keys.insert(key, Hint { keys: Vec::new(), memo: memo.map(Arc::new) });
        }
    }

    /// Drop every memo and hint (a new plugin version serves).
    fn clear(&self) {
        self.keys.lock().clear();
    }

    fn forget(&self, key: u64) {
        self.keys.lock().remove(key);
    }
}

/// Read the keys a first `before-request` call asked for, two at a time
/// (the usual one key, two when the session is split, in one round trip).
async fn read_wanted(stores: &Stores, wanted: Vec<(Tier, String)>) -> Read {
    let mut read = Read::new();
    let mut wanted = wanted.into_iter();
    while let Some((t1, k1)) = wanted.next() {
        let Some((t2, k2)) = wanted.next() else {
            let a = stores.get(t1, &k1).await;
            read.push((t1, k1, a));
            break;
        };
        let (a, b) = tokio::join!(stores.get(t1, &k1), stores.get(t2, &k2));
        read.extend([(t1, k1, a), (t2, k2, b)]);
    }
    read
}

/// One `before-request` call: `locks` the request holds already, `read`
/// the keys read for it (`None`: none; the first call's are read early);
/// `ahead`: it may ask for keys and be called again.
async fn before_once(generation: &Generation<SessionSeam>, arm: seam::Arm, req: &Arc<RequestView>, locks: Locks, read: Option<Read>, ahead: bool) -> Result<Before, Error> {
    let early = ahead && read.is_some();
    let read = read.unwrap_or_default();
    let req = req.clone();
    let call = seam::hint::<SessionSeam, (), Before, _>(move |inst, ()| {
        Box::pin(async move {
            let data = inst.store.data_mut();
            data.locks = locks;
            data.principal = None;
            data.seen = 0;
            data.ahead = super::host::Ahead { read, wanted: ahead.then(Vec::new), early };
            data.deferred = None;
            data.write_back = None;
            data.trace = Trace::default();
            let handle = data.lend(&req)?;
            let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
            let out = inst.guest.call_before_request(&mut inst.store, borrowed).await;
            let data = inst.store.data_mut();
            data.table.delete(handle)?;
            let wanted = std::mem::take(&mut data.ahead).wanted.unwrap_or_default();
            Ok((out?, std::mem::take(&mut data.locks), data.principal.take(), data.seen, wanted, data.write_back.take(), std::mem::take(&mut data.trace)))
        })
    });
    generation.call("before-request", arm, call, Ok).await
}

/// What one `after-response` call gave: the client's headers, the locks,
/// the principal, its store calls and the writes it deferred.
type After = (Vec<wit::Header>, Locks, Principal, Seen, Vec<Deferred>, Vec<(Tier, String)>);

/// `after-response` on one generation, with the request's locks.
async fn after(generation: &Generation<SessionSeam>, context: Vec<u8>, outcome: Outcome<'_>, locks: Locks) -> Result<After, Error> {
    let resp = wit::Response {
        status: outcome.status,
        headers: generation.setup.pick(outcome.headers),
        backend: outcome.backend,
        pin_lost: outcome.pin_lost,
    };
    let call = seam::hint::<SessionSeam, (), After, _>(move |inst, ()| {
        Box::pin(async move {
            let data = inst.store.data_mut();
            data.locks = locks;
            data.principal = None;
            data.seen = 0;
            data.deferred = Some(Vec::new());
            data.ahead = Default::default();
            data.trace = Trace::default();
            let out = inst.guest.call_after_response(&mut inst.store, &context, &resp).await;
            let data = inst.store.data_mut();
            let set = std::mem::take(&mut data.trace).set;
            let deferred = data.deferred.take().unwrap_or_default();
            Ok((out?, std::mem::take(&mut data.locks), data.principal.take(), data.seen, deferred, set))
        })
    });
    generation.call("after-response", LoadedPlugin::arm, call, Ok).await
}

/// Check a plugin's headers: valid names and values; `internal` says
/// whether they must (upstream) or must not (client) be internal ones.
fn headers(plugin: &str, hook: &str, list: Vec<wit::Header>, internal: bool) -> Result<Headers, Error> {
    list.into_iter()
        .map(|h| {
            let bad = |why: String| {
                plugin_fault(plugin, hook, PluginFault::BadReturn);
                Error::plugin(PluginFault::BadReturn, plugin, format!("{hook} returned header {:?}: {why}", h.name))
            };
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            // Upstream: the exact prefix. Client: nothing a client could
            // take for an internal header (`x_switchyard_*` too).
            let refused = if internal { !name.as_str().starts_with(INTERNAL_PREFIX) } else { crate::proxy::is_internal(name.as_str()) };
            if refused {
                let rule = if internal { format!("upstream headers must start with {INTERNAL_PREFIX}") } else { format!("client headers may not be internal ones ({INTERNAL_PREFIX}*, or with _ for -)") };
                return Err(bad(rule));
            }
            let value = HeaderValue::from_str(&h.value).map_err(|e| bad(format!("invalid value: {e}")))?;
            Ok((name, value))
        })
        .collect()
}

fn action(plugin: &str, a: wit::Action) -> Result<SessionAction, Error> {
    Ok(match a {
        wit::Action::Forward(f) => SessionAction::Forward(Forward { pin: f.pin, headers: headers(plugin, "before-request", f.headers, true)?, context: f.context }),
        wit::Action::Reply(r) => {
            if !(200..=599).contains(&r.status) {
                plugin_fault(plugin, "before-request", PluginFault::BadReturn);
                return Err(Error::plugin(PluginFault::BadReturn, plugin, format!("before-request replied with status {}", r.status)));
            }
            SessionAction::Reply(Reply { status: r.status, headers: headers(plugin, "before-request", r.headers, false)?, body: r.body })
        }
    })
}

/// One request on one generation; releases its locks when it ends.
struct Run {
    generation: Arc<Generation<SessionSeam>>,
    /// Where the keys its `after-response` wrote are kept for the cookie it
    /// sets ([`Hints::wrote_for`]).
    hints: Arc<Hints>,
    locks: Locks,
    stores: Arc<Stores>,
    name: String,
    /// The request of a principal: a revoke of theirs cuts it.
    watch: Option<crate::session::index::Watch>,
    /// The store calls of both hooks.
    seen: Seen,
    /// A canary ran when the request started: its outcome is counted for
    /// the version that served it.
    canary: bool,
    /// The split cookie that keeps this user on its side, for the response.
    pin: Option<http::HeaderValue>,
    /// When the request needs no `after-response` call (`forward.after`).
    skip: Skip,
    /// The write the gateway makes itself for a plain update (`write-back`).
    write_back: Option<WritePlan>,
}

/// A forward's `after`, as the host checks it at the response.
enum Skip {
    /// `always`.
    Never,
    /// `unless-pinned`: skipped when this backend (the pin) served it.
    ServedBy(String),
    /// `if-named-headers`: skipped when a backend answered without any
    /// header the strategy names.
    NoNamedHeader,
}

impl Skip {
    fn of(a: &wit::Action) -> Self {
        match a {
            wit::Action::Forward(f) => match (f.after, &f.pin) {
                (wit::After::UnlessPinned, Some(pin)) => Self::ServedBy(pin.clone()),
                (wit::After::IfNamedHeaders, _) => Self::NoNamedHeader,
                _ => Self::Never,
            },
            wit::Action::Reply(_) => Self::Never,
        }
    }
}

#[async_trait::async_trait]
impl SessionRun for Run {
    fn revoked(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.revoked())
    }

    fn outcome(&self) -> Option<SessionOutcome> {
        SessionOutcome::of(self.seen)
    }

    async fn after(&mut self, context: Vec<u8>, outcome: Outcome<'_>) -> Headers {
        let locks = std::mem::take(&mut self.locks);
        let out = match self.written_back(&outcome) {
            Some(writes) => Ok((Vec::new(), locks, None, 0, writes, Vec::new())),
            None if self.skips(&outcome) => Ok((Vec::new(), locks, None, 0, Vec::new(), Vec::new())),
            None => after(&self.generation, context, outcome, locks).await,
        };
        let mut deferred = Vec::new();
        let mut written = Vec::new();
        let mut answer = out.and_then(|(list, locks, principal, seen, writes, set)| {
            self.locks = locks;
            self.seen |= seen;
            self.watch_principal(principal);
            deferred = writes;
            written = set;
            headers(&self.name, "after-response", list, false)
        });
        // Written before the locks go and the client gets its answer. The
        // writes and the unlocks are boxed, and only awaited when there are
        // some: this future is moved into a box on every request.
        let failed = if deferred.is_empty() && written.is_empty() { None } else { Box::pin(self.write_and_keep(deferred, written, &answer)).await };
        if let Some(on_failure) = failed {
            let list = on_failure.into_iter().map(|(name, value)| wit::Header { name, value }).collect();
            answer = headers(&self.name, "after-response", list, false);
        }
        if self.canary {
            self.generation.plugin.outcomes.add(SessionOutcome::of(self.seen).map_or("none", SessionOutcome::as_str));
        }
        if !self.locks.is_empty() {
            Box::pin(self.release()).await;
        }
        let mut headers = answer.unwrap_or_else(|e| {
            super::faults::log_fault(&self.name, "after-response", &e, false);
            Vec::new()
        });
        headers.extend(self.pin.take().map(|c| (http::header::SET_COOKIE, c)));
        headers
    }
}

/// The cookie that keeps a user on one version of a session plugin while
/// a canary of it runs.
pub const SPLIT_COOKIE: &str = "sy_split";

/// A request's canary split key: its `sy_split` cookie; else a new one
/// (`true`), from the client address, so a client that keeps no cookie
/// stays on its side by address, or drawn at random without one.
fn split_key(req: &RequestView) -> Option<(String, bool)> {
    let cookie = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SPLIT_COOKIE)?.strip_prefix('='))
        .filter(|k| (1..=32).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(k) = cookie {
        return Some((k.to_string(), false));
    }
    let point = match req.client_ip {
        Some(ip) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            ip.hash(&mut h);
            h.finish()
        }
        None => crate::upstream::draw(),
    };
    Some((format!("{point:016x}"), true))
}

fn split_cookie(key: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("{SPLIT_COOKIE}={key}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax")).expect("hex is a valid header value")
}

impl Run {
    /// The strategy's `forward.after` says this response needs no
    /// `after-response` call.
    fn skips(&self, outcome: &Outcome<'_>) -> bool {
        match &self.skip {
            Skip::Never => false,
            Skip::ServedBy(pin) => !outcome.pin_lost && outcome.backend.as_ref() == Some(pin),
            Skip::NoNamedHeader => outcome.backend.is_some() && outcome.headers.is_some_and(|h| !self.generation.setup.names_any(h)),
        }
    }

    /// The writes of the strategy's `write-back` for this response, when
    /// the plugin need not see it: a backend's one `x-switchyard-session-set`
    /// and no header only the plugin handles (`None`: call `after-response`
    /// as `forward.after` says).
    fn written_back(&mut self, outcome: &Outcome<'_>) -> Option<Vec<Deferred>> {
        use crate::session::merge::{PLUGIN_HEADERS, SET_HEADER};
        let mut plan = self.write_back.take()?;
        let headers = outcome.headers.filter(|_| outcome.backend.is_some())?;
        if PLUGIN_HEADERS.iter().any(|h| headers.contains_key(*h)) {
            return None;
        }
        let mut sets = headers.get_all(SET_HEADER).iter();
        let (Some(set), None) = (sets.next(), sets.next()) else { return None };
        let counter = std::mem::take(&mut plan.counter);
        let write = plan.write_for(set.as_bytes())?;
        if write.is_some() && !counter.is_empty() {
            self.generation.plugin.shared.count(&counter, 1);
        }
        Some(write.into_iter().collect())
    }

    /// Register the request as `principal`'s (a login in `after` changes it).
    fn watch_principal(&mut self, principal: Principal) {
        let Some(p) = principal else { return };
        if self.watch.as_ref().is_none_or(|w| w.principal() != p) {
            self.watch = Some(crate::session::index::Watch::new(p));
        }
    }

    /// Make the writes `after-response` deferred, in order; at the first
    /// that fails, stop and give its `on-failure` headers.
    async fn write_deferred(&mut self, writes: Vec<Deferred>) -> Option<Vec<(String, String)>> {
        for w in writes {
            match self.stores.set(w.tier, &w.key, w.value, w.ttl_s).await {
                Ok(()) => self.seen |= crate::seams::session::SEEN_STORED,
                Err(e) => {
                    self.seen |= crate::seams::session::SEEN_STORE_ERROR;
                    tracing::warn!(plugin = %self.name, key = %w.key, "session write not made: {e:?}");
                    return Some(w.on_failure);
                }
            }
        }
        None
    }

    /// [`Run::write_deferred`]; when every write is made, keep their keys
    /// and those `after-response` wrote at once (`written`) for the cookies
    /// the answer sets, so such a cookie's first request has them read
    /// ahead (a login's next request: one call, not two).
    async fn write_and_keep(&mut self, writes: Vec<Deferred>, mut written: Vec<(Tier, String)>, answer: &Result<Headers, Error>) -> Option<Vec<(String, String)>> {
        written.extend(writes.iter().map(|w| (w.tier, w.key.clone())));
        written.truncate(super::host::MOST_AHEAD);
        let failed = self.write_deferred(writes).await;
        if let (None, Ok(list)) = (&failed, answer) {
            let set = list.iter().filter(|(n, _)| *n == http::header::SET_COOKIE).map(|(_, v)| v);
            self.hints.wrote_for(&self.generation, set, &written);
        }
        failed
    }

    async fn release(&mut self) {
        for (tier, key, owner) in self.locks.drain(..) {
            if let Err(e) = self.stores.unlock(tier, &key, &owner).await {
                tracing::warn!(plugin = %self.name, key, "session lock not released (it expires by itself): {e:?}");
            }
        }
    }
}

impl Drop for Run {
    /// A request that ended before `after` (client gone) frees its locks.
    fn drop(&mut self) {
        if self.locks.is_empty() {
            return;
        }
        let (stores, locks) = (self.stores.clone(), std::mem::take(&mut self.locks));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for (tier, key, owner) in locks {
                    let _ = stores.unlock(tier, &key, &owner).await;
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl SessionPolicy for WasmSession {
    fn name(&self) -> &str {
        &self.hosted.name
    }

    async fn before(&self, req: &Arc<RequestView>) -> Result<(SessionAction, Box<dyn SessionRun>), Error> {
        let split = self.hosted.has_canary().then(|| split_key(req)).flatten();
        let (generation, canary) = self.hosted.pick_during(split.as_ref().map(|(k, _)| k.as_str()));
        // A user new to the split keeps its side by cookie from now on.
        let pin = split.filter(|(_, fresh)| *fresh && canary).map(|(k, _)| split_cookie(&k));
        let out = before(&generation, LoadedPlugin::arm, req, &self.stores, &self.hints).await.and_then(|(a, locks, p, seen, plan)| Ok((Skip::of(&a), action(&self.hosted.name, a)?, locks, p, seen, plan)));
        match out {
            Ok((skip, mut action, locks, principal, seen, plan)) => {
                if canary && matches!(action, SessionAction::Reply(_)) {
                    generation.plugin.outcomes.add("replied");
                }
                let mut pin = pin;
                if let (SessionAction::Reply(r), Some(cookie)) = (&mut action, &pin) {
                    r.headers.push((http::header::SET_COOKIE, cookie.clone()));
                    pin = None;
                }
                let write_back = plan.filter(|_| matches!(action, SessionAction::Forward(_)));
                let mut run = Run { generation, hints: self.hints.clone(), locks, stores: self.stores.clone(), name: self.hosted.name.clone(), watch: None, seen, canary, pin, skip, write_back };
                run.watch_principal(principal);
                Ok((action, Box::new(run)))
            }
            Err(e) if self.hosted.fell_back("before-request", &e) => NoSession.before(req).await,
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl SwapTarget for WasmSession {
    fn user(&self) -> String {
        format!("route {}", self.route)
    }

    /// The next version, proven with one smoke `before-request` on an
    /// empty request (no cookie: a new visitor).
    async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<Box<dyn std::any::Any + Send>, Error> {
        let next = self.hosted.next(plugin).await?;
        let (a, locks, _, _, _) = before(&next, LoadedPlugin::arm_setup, &Arc::new(RequestView::default()), &self.stores, &self.hints).await?;
        for (tier, key, owner) in locks {
            let _ = self.stores.unlock(tier, &key, &owner).await;
        }
        action(&self.hosted.name, a)?;
        Ok(Box::new(next))
    }

    fn commit(&self, prepared: Box<dyn std::any::Any + Send>) {
        seam::commit_any(&self.hosted, prepared);
        self.hints.clear();
    }

    fn canary(&self, op: seam::CanaryOp) {
        self.hosted.canary(op);
        self.hints.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cookie: Option<&str>, ip: Option<[u8; 4]>) -> RequestView {
        let mut r = RequestView { client_ip: ip.map(|o| std::net::IpAddr::from(o)), ..Default::default() };
        if let Some(c) = cookie {
            r.headers.insert(http::header::COOKIE, http::HeaderValue::from_str(c).unwrap());
        }
        r
    }

    #[test]
    fn a_session_in_use_keeps_its_hint_while_many_others_come_and_go() {
        let mut recent = Recent::default();
        let hint = |n: usize| Hint { keys: vec![(Tier::Central, format!("s:{n}"))], memo: None };
        recent.insert(u64::MAX, hint(0));
        for n in 0..10 * MOST_HINTS {
            recent.insert(n as u64, hint(n));
            assert!(recent.newer.len() + recent.older.len() <= MOST_HINTS, "bounded");
            if n % 1000 == 0 {
                assert_eq!(recent.get(u64::MAX).expect("used every 1,000 new sessions").keys[0].1, "s:0");
            }
        }
        assert!(recent.get(0).is_none(), "one not seen since is gone");
        assert_eq!(recent.get((10 * MOST_HINTS - 1) as u64).unwrap().keys[0].1, format!("s:{}", 10 * MOST_HINTS - 1));
        recent.remove(u64::MAX);
        assert!(recent.get(u64::MAX).is_none());
        recent.clear();
        assert!(recent.newer.is_empty() && recent.older.is_empty());
    }

    #[test]
    fn the_split_key_comes_from_the_cookie_else_from_the_address() {
        assert_eq!(split_key(&req(Some("a=1; sy_split=00ff; b=2"), Some([10, 0, 0, 1]))), Some(("00ff".into(), false)));
        let (from_ip, fresh) = split_key(&req(None, Some([10, 0, 0, 1]))).unwrap();
        assert!(fresh);
        assert_eq!(split_key(&req(None, Some([10, 0, 0, 1]))).unwrap().0, from_ip, "one address, one key");
        assert_ne!(split_key(&req(None, Some([10, 0, 0, 2]))).unwrap().0, from_ip);
        // A value that is not 1 to 32 hex digits is ignored.
        assert_eq!(split_key(&req(Some("sy_split=not-hex"), Some([10, 0, 0, 1]))).unwrap(), (from_ip.clone(), true));
        assert_eq!(split_key(&req(Some(&format!("sy_split={}", "a".repeat(33))), Some([10, 0, 0, 1]))).unwrap().1, true);
        assert_eq!(split_cookie("00ff").to_str().unwrap(), "sy_split=00ff; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax");
    }
}
