//! Host imports (log, metrics, clock, shared state, the request resource)
//! and the per-store state they run on.

use super::{clock, log, metrics, shared, store, tokens, types};
use crate::config::PluginSpec;
use crate::seams::session::{SEEN_LOADED, SEEN_RENEWED, SEEN_STORED, SEEN_STORE_ERROR};
use crate::seams::RequestView;
use crate::session::{StoreError, Stores, Tier};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A call's clocks. The deadline counts wall time minus store waits (a
/// call holds its instance and its request meanwhile), but a call only
/// traps for it once it has also run on a CPU for a while ([`over`]); the
/// yield point counts thread CPU time while its Wasm runs, so a call the
/// OS preempted or queued (milliseconds on a busy 2-core machine) is not
/// mistaken for a loop, failed or pushed to the low-priority plugin pool.
#[derive(Debug, Default)]
pub(crate) struct CallClock {
    wall_used: std::time::Duration,
    wall_mark: Option<std::time::Instant>,
    cpu_used: std::time::Duration,
    /// Thread CPU time when Wasm last (re)started on this thread.
    cpu_mark: Option<std::time::Duration>,
    /// The store waits, as the away bound reads them while a call holds
    /// the store (`engine::Bounded`).
    pub(crate) waits: Arc<StoreWaits>,
}

impl CallClock {
    /// A call starts. The CPU clock is first read at the call's first
    /// epoch tick (`cpu`), not here: reading a thread's CPU time is a
    /// system call, and most calls end before any tick.
    pub(crate) fn start(&mut self) {
        self.wall_used = std::time::Duration::ZERO;
        self.wall_mark = Some(std::time::Instant::now());
        self.cpu_used = std::time::Duration::ZERO;
        self.cpu_mark = None;
    }

    /// A store call: neither clock runs until [`Self::resume`].
    pub(crate) fn pause(&mut self) {
        if let Some(m) = self.wall_mark.take() {
            self.wall_used += m.elapsed();
        }
        self.waits.begin();
        self.yielded();
    }

    /// The call yields: it may resume on another thread, so its CPU mark
    /// is dropped (taken again at the next tick); wall time runs on.
    pub(crate) fn yielded(&mut self) {
        if let Some(m) = self.cpu_mark.take() {
            self.cpu_used += thread_cpu().saturating_sub(m);
        }
    }

    /// Back from a store call, on this thread (the CPU mark is taken again
    /// at the next tick).
    pub(crate) fn resume(&mut self) {
        self.waits.end();
        self.wall_mark = Some(std::time::Instant::now());
    }

    /// Wall time so far, store waits excluded.
    pub(crate) fn wall(&self) -> std::time::Duration {
        self.wall_used + self.wall_mark.map_or(std::time::Duration::ZERO, |m| m.elapsed())
    }

    /// CPU time so far on the threads that ran the call's Wasm.
    pub(crate) fn cpu(&mut self) -> std::time::Duration {
        match self.cpu_mark {
            Some(m) => self.cpu_used + thread_cpu().saturating_sub(m),
            None => {
                self.cpu_mark = Some(thread_cpu());
                self.cpu_used
            }
        }
    }
}

/// A call past its deadline that has not run `YIELD_AFTER` of CPU since
/// its first tick still traps at this many times its budget; so does one
/// away in a host await other than a store's (`engine::Bounded`).
pub(crate) const AWAY_BOUND: u32 = 4;

/// What bounds one call while it awaits the host: its budget, and the
/// store waits that do not count against it.
pub(crate) struct CallBound {
    pub(crate) budget: std::time::Duration,
    pub(crate) waits: Arc<StoreWaits>,
}

/// The store waits of one instance's calls, readable from outside its
/// store while a call holds it, in `now_ns` nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct StoreWaits {
    /// Spent in finished store waits, over the store's life.
    waited: std::sync::atomic::AtomicU64,
    /// When the wait in progress began; 0 when none is.
    since: std::sync::atomic::AtomicU64,
}

impl StoreWaits {
    pub(crate) fn begin(&self) {
        self.since.store(crate::upstream::now_ns(), std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        let since = self.since.swap(0, std::sync::atomic::Ordering::Relaxed);
        if since != 0 {
            self.waited.fetch_add(crate::upstream::now_ns().saturating_sub(since), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Store wait time up to `now`, the wait in progress included.
    pub(crate) fn total(&self, now: u64) -> u64 {
        let since = self.since.load(std::sync::atomic::Ordering::Relaxed);
        self.waited.load(std::sync::atomic::Ordering::Relaxed) + if since != 0 { now.saturating_sub(since) } else { 0 }
    }
}

/// The deadline rule: wall time (store waits excluded) is past `budget`,
/// and the call has run on a CPU for `YIELD_AFTER` since its first tick,
/// the CPU a call needs to yield for it (after its first yield the CPU
/// clock keeps at least that), so a thread the host preempted past the
/// deadline finishes its few microseconds instead of failing its request.
/// A call away that long for another reason (a WASI sleep) traps at
/// `AWAY_BOUND` times its budget.
pub(crate) fn over(wall: std::time::Duration, cpu: std::time::Duration, budget: std::time::Duration) -> bool {
    wall >= budget && (cpu >= super::engine::YIELD_AFTER || wall >= budget * AWAY_BOUND)
}

/// This thread's CPU time. Through nix (libc), not rustix: rustix parses
/// the vDSO at its first clock call, which faults under valgrind (and the
/// thread clocks are a system call either way), so the instruction-count
/// bench (`benches/instructions.sh`) could not run a Wasm plugin.
fn thread_cpu() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(std::time::Duration::ZERO, std::time::Duration::from)
}

/// What a `request` resource handle points at.
pub type RequestRef = Arc<RequestView>;

/// Bounds on what a plugin may keep in shared state.
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_ENTRIES: usize = 10_000;

/// State shared by every instance of one loaded plugin.
pub struct PluginShared {
    pub name: String,
    counters: Mutex<HashMap<String, i64>>,
    kv: Mutex<HashMap<String, Vec<u8>>>,
    /// Names of plugin-defined metrics, bounded by `MAX_PLUGIN_METRICS`.
    metric_names: Mutex<std::collections::HashSet<String>>,
}

impl PluginShared {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), counters: Mutex::default(), kv: Mutex::default(), metric_names: Mutex::default() }
    }

    /// Add to the plugin's counter `name` (`metrics.counter-add`).
    pub(crate) fn count(&self, name: &str, delta: u64) {
        if self.metric_allowed(name) {
            crate::metrics::metrics().plugin_counter.with_label_values(&[self.name.as_str(), name]).inc_by(delta as f64);
        }
    }

    /// May this plugin define (or update) metric `name`?
    fn metric_allowed(&self, name: &str) -> bool {
        let mut names = self.metric_names.lock();
        if names.contains(name) {
            return true;
        }
        let ok = names.len() < crate::metrics::MAX_PLUGIN_METRICS
            && !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            names.insert(name.to_string());
        } else {
            tracing::warn!(plugin = %self.name, metric = name, "plugin metric refused: name must be [A-Za-z0-9_]{{1,64}}, at most {} per plugin", crate::metrics::MAX_PLUGIN_METRICS);
        }
        ok
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    wasi: WasiCtx,
    shared: Arc<PluginShared>,
    /// The current call's own CPU time, and how much it may use.
    pub(crate) clock: CallClock,
    pub(crate) call_budget: std::time::Duration,
    /// Set when the epoch callback made the current call yield for CPU
    /// (not when it waits on a store): such a call moves to the plugin pool.
    pub(crate) cpu_yield: Arc<std::sync::atomic::AtomicBool>,
    /// The message of a panic the plugin reported (SDK panic hook) during
    /// the current call; shown with the trap that follows.
    pub(crate) last_panic: Option<String>,
    /// The session store tiers and token keys.
    stores: Arc<Stores>,
    /// Locks the current request holds: (tier, key, owner token). The
    /// session adapter moves them between the request and the instance.
    pub(crate) locks: Vec<(Tier, String, String)>,
    /// The principal the current request's session belongs to, as the
    /// plugin told `store.index`; the session adapter moves it to the
    /// request (a revoke of that principal cuts its response).
    pub(crate) principal: Option<String>,
    /// The store calls of the current session hook (`SEEN_*` bits of
    /// `seams::session`), for the access log's session outcome.
    pub(crate) seen: u8,
    /// `read-ahead`: the reads of this call, made before it.
    pub(crate) ahead: Ahead,
    /// `set-deferred` in `after-response`: writes the session adapter
    /// makes once the call returns; `None` elsewhere (written at once).
    pub(crate) deferred: Option<Vec<Deferred>>,
    /// `write-back` in `before-request`: the write the session adapter
    /// makes itself for a plain update, instead of `after-response`.
    pub(crate) write_back: Option<WritePlan>,
    /// `remember` in `before-request`, and what the call did that a memo
    /// repeats (`wasm/memo.rs`).
    pub(crate) trace: super::memo::Trace,
}

/// Most reads one call may ask for ahead, and most writes it may defer:
/// past them a plugin's store calls are made at once, so one request
/// cannot make the gateway read or write without bound after its hook.
pub(crate) const MOST_AHEAD: usize = 16;

/// Keys read before a session hook call: (tier, key, what the read gave).
pub(crate) type Read = Vec<(Tier, String, Result<Option<Vec<u8>>, StoreError>)>;

/// The read-ahead state of one session hook call.
#[derive(Default)]
pub(crate) struct Ahead {
    /// Keys read before this call and what the read gave (taken by `get`).
    pub(crate) read: Read,
    /// Keys to read before the call is made again; `None`: this call is
    /// not made again, so a key is read when asked.
    pub(crate) wanted: Option<Vec<(Tier, String)>>,
    /// `read` was read before the first call, from the keys the session's
    /// previous request asked for: a lock the call takes makes it stale,
    /// so taking one drops it (the call then asks, and is called again).
    pub(crate) early: bool,
}

/// A write `after-response` left to the session adapter.
pub(crate) struct Deferred {
    pub(crate) tier: Tier,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) ttl_s: u32,
    pub(crate) on_failure: Vec<(String, String)>,
}

/// A `write-back` the session adapter keeps for the response.
#[derive(Clone)]
pub(crate) struct WritePlan {
    pub(crate) tier: Tier,
    pub(crate) key: String,
    /// The attributes as loaded (a JSON object; empty for none).
    pub(crate) base: Vec<u8>,
    pub(crate) ttl_s: u32,
    pub(crate) max_bytes: usize,
    /// Names only the plugin may change.
    pub(crate) guard: Vec<String>,
    /// A split session's other part as loaded (`write-back-split`; empty
    /// for none): a name set to the text it holds there is left out.
    pub(crate) other_part: Vec<u8>,
    /// The plugin counter a write adds to (empty: none).
    pub(crate) counter: String,
    pub(crate) on_failure: Vec<(String, String)>,
}

impl WritePlan {
    /// The write for a backend's `x-switchyard-session-set` value `set`:
    /// `Some(None)` when it changes nothing, `None` when the plugin must
    /// see it (`after-response`).
    pub(crate) fn write_for(self, set: &[u8]) -> Option<Option<Deferred>> {
        match crate::session::merge::apply(&self.base, &self.other_part, set, &self.guard, self.max_bytes) {
            crate::session::merge::Merged::ToPlugin => None,
            crate::session::merge::Merged::Same => Some(None),
            crate::session::merge::Merged::Changed(value) => Some(Some(Deferred { tier: self.tier, key: self.key, value, ttl_s: self.ttl_s, on_failure: self.on_failure })),
        }
    }
}

impl HostState {
    pub fn new(spec: &PluginSpec, shared: Arc<PluginShared>, stores: Arc<Stores>) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size((spec.limits.memory_mb as usize) << 20)
            .trap_on_grow_failure(true)
            .instances(16)
            .tables(16)
            .memories(4)
            .build();
        // No preopened directories, no sockets, no env, no args.
        let wasi = WasiCtx::builder().build();
        Self {
            table: ResourceTable::new(),
            limits,
            wasi,
            shared,
            clock: CallClock::default(),
            cpu_yield: Arc::default(),
            call_budget: std::time::Duration::from_millis(spec.limits.deadline_ms),
            last_panic: None,
            stores,
            locks: Vec::new(),
            principal: None,
            seen: 0,
            ahead: Ahead::default(),
            deferred: None,
            write_back: None,
            trace: Default::default(),
        }
    }


    /// The armed call's bound (`engine::Bounded`), taken before the call
    /// borrows the store.
    pub(crate) fn bound(&self) -> CallBound {
        CallBound { budget: self.call_budget, waits: self.clock.waits.clone() }
    }

    /// Put a request in the table for the duration of one call.
    pub(crate) fn lend(&mut self, req: &RequestRef) -> wasmtime::Result<Resource<RequestRef>> {
        Ok(self.table.push(req.clone())?)
    }

    /// Begin a store call this hook awaits holding its instance: the
    /// deadline clock stops, and a call to a store across the network
    /// counts in `switchyard_plugin_store_waits_total`.
    fn wait_on(&mut self, t: Tier) -> Arc<Stores> {
        if matches!(t, Tier::Central | Tier::Durable) {
            crate::metrics::metrics().plugin_store_waits.with_label_values(&[self.shared.name.as_str(), t.as_str()]).inc();
        }
        self.clock.pause();
        self.stores.clone()
    }

    /// Note a store call for the session outcome: `bit` if it succeeded
    /// and `hit`, a store error if it failed.
    fn saw<T, E>(&mut self, out: &Result<T, E>, hit: bool, bit: u8) {
        self.seen |= match out {
            Ok(_) if hit => bit,
            Ok(_) => 0,
            Err(_) => SEEN_STORE_ERROR,
        };
    }

    fn req(&self, r: &Resource<RequestRef>) -> &RequestView {
        self.table.get(r).expect("the host lends the request for the whole call")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn method(&mut self, r: Resource<RequestRef>) -> String {
        self.req(&r).method.clone()
    }
    fn path(&mut self, r: Resource<RequestRef>) -> String {
        self.req(&r).path.clone()
    }
    fn host(&mut self, r: Resource<RequestRef>) -> Option<String> {
        self.req(&r).host.clone()
    }
    fn header(&mut self, r: Resource<RequestRef>, name: String) -> Option<String> {
        self.req(&r).header(&name).map(str::to_string)
    }
    fn cookie(&mut self, r: Resource<RequestRef>, name: String) -> Option<String> {
        self.req(&r).cookie(&name).map(str::to_string)
    }
    fn client_ip(&mut self, r: Resource<RequestRef>) -> Option<String> {
        self.req(&r).client_ip.map(|ip| ip.to_string())
    }
    fn drop(&mut self, r: Resource<RequestRef>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// The prefix the SDK's panic hook puts before a panic message.
const PANIC_PREFIX: &str = "panic: ";

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        // A panic is reported with the fault it causes (rate-limited there).
        if let (log::Level::Error, Some(panic)) = (level, message.strip_prefix(PANIC_PREFIX)) {
            self.last_panic = Some(panic.replace('\n', " ").chars().take(1000).collect());
            return;
        }
        let plugin = &self.shared.name;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) {
        self.shared.count(&name, delta);
    }
    fn gauge_set(&mut self, name: String, value: f64) {
        if self.shared.metric_allowed(&name) {
            crate::metrics::metrics().plugin_gauge.with_label_values(&[self.shared.name.as_str(), name.as_str()]).set(value);
        }
    }
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
    fn monotonic_ns(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }
    fn random_u64(&mut self) -> u64 {
        // RandomState is seeded from the OS once per thread and perturbed per
        // call: plenty for seeding a balancer's generator.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(process_start().elapsed().as_nanos());
        h.finish()
    }
}

impl shared::Host for HostState {
    fn counter_add(&mut self, key: String, delta: i64) -> i64 {
        let mut c = self.shared.counters.lock();
        if key.len() > MAX_KEY || (c.len() >= MAX_ENTRIES && !c.contains_key(&key)) {
            tracing::warn!(plugin = %self.shared.name, "shared counter refused: key too long or too many keys");
            return 0;
        }
        let v = c.entry(key).or_default();
        *v = v.wrapping_add(delta);
        *v
    }
    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.shared.kv.lock().get(&key).cloned()
    }
    fn kv_set(&mut self, key: String, value: Vec<u8>) {
        let mut kv = self.shared.kv.lock();
        if value.is_empty() {
            kv.remove(&key);
        } else if key.len() > MAX_KEY || value.len() > MAX_VALUE || (kv.len() >= MAX_ENTRIES && !kv.contains_key(&key)) {
            tracing::warn!(plugin = %self.shared.name, "shared kv-set refused: key, value or entry count over its limit");
        } else {
            kv.insert(key, value);
        }
    }
}

fn tier(t: store::Tier) -> Tier {
    match t {
        store::Tier::Local => Tier::Local,
        store::Tier::Replicated => Tier::Replicated,
        store::Tier::Central => Tier::Central,
        store::Tier::Durable => Tier::Durable,
    }
}

fn to_wit(e: StoreError) -> store::StoreError {
    match e {
        StoreError::NotConfigured => store::StoreError::NotConfigured,
        StoreError::Timeout => store::StoreError::Timeout,
        StoreError::Unavailable(m) => store::StoreError::Unavailable(m),
        StoreError::TooLarge => store::StoreError::TooLarge,
        StoreError::Retired => store::StoreError::Retired,
    }
}

// Every store call is awaited boxed: wasmtime moves each import's future
// into a box of its own per call, and the tiers' futures inline would make
// even the calls answered at once (a read-ahead hit, a deferred write)
// copy kilobytes.
impl store::Host for HostState {
    async fn get(&mut self, t: store::Tier, key: String) -> Result<Option<Vec<u8>>, store::StoreError> {
        let out = match self.ahead.read.iter().position(|(rt, k, _)| *rt == tier(t) && *k == key) {
            Some(i) => self.ahead.read.swap_remove(i).2.map_err(to_wit),
            None => {
                let stores = self.wait_on(tier(t));
                let out = Box::pin(stores.get(tier(t), &key)).await.map_err(to_wit);
                self.clock.resume();
                out
            }
        };
        self.saw(&out, matches!(out, Ok(Some(_))), SEEN_LOADED);
        self.trace.read(tier(t), key, &out);
        out
    }

    async fn set(&mut self, t: store::Tier, key: String, value: Vec<u8>, ttl_s: u32) -> Result<(), store::StoreError> {
        self.trace.wrote = true;
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.set(tier(t), &key, value, ttl_s)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, true, SEEN_STORED);
        // In `after-response` (a renewal's new id): kept for the cookie the
        // response sets (`session.rs`, `Hints::wrote_for`).
        if out.is_ok() && self.deferred.is_some() && self.trace.set.len() < MOST_AHEAD {
            self.trace.set.push((tier(t), key));
        }
        out
    }

    async fn delete(&mut self, t: store::Tier, key: String) -> Result<(), store::StoreError> {
        self.trace.wrote = true;
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.delete(tier(t), &key)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, false, 0);
        out
    }

    async fn retire(&mut self, t: store::Tier, key: String, ttl_s: u32) -> Result<(), store::StoreError> {
        self.trace.wrote = true;
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.retire(tier(t), &key, ttl_s)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, true, SEEN_RENEWED);
        out
    }

    async fn add(&mut self, t: store::Tier, key: String, value: Vec<u8>, ttl_s: u32) -> Result<bool, store::StoreError> {
        self.trace.wrote = true;
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.add(tier(t), &key, value, ttl_s)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, matches!(out, Ok(true)), SEEN_STORED);
        out
    }

    async fn get_versioned(&mut self, t: store::Tier, key: String) -> Result<Option<store::Versioned>, store::StoreError> {
        self.trace.reads = self.trace.reads.saturating_add(1);
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.get_versioned(tier(t), &key)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, matches!(out, Ok(Some(_))), SEEN_LOADED);
        Ok(out?.map(|(value, version)| store::Versioned { value, version }))
    }

    async fn cas(&mut self, t: store::Tier, key: String, value: Vec<u8>, ttl_s: u32, version: u64) -> Result<bool, store::StoreError> {
        self.trace.wrote = true;
        let stores = self.wait_on(tier(t));
        let out = Box::pin(stores.cas(tier(t), &key, value, ttl_s, version)).await.map_err(to_wit);
        self.clock.resume();
        self.saw(&out, matches!(out, Ok(true)), SEEN_STORED);
        out
    }

    async fn read_ahead(&mut self, t: store::Tier, key: String) -> bool {
        let t = tier(t);
        if matches!(t, Tier::Local | Tier::Replicated) || self.ahead.read.iter().any(|(rt, k, _)| *rt == t && *k == key) {
            return true;
        }
        if let Some(wanted) = self.ahead.wanted.as_mut().filter(|w| w.len() < MOST_AHEAD) {
            wanted.push((t, key));
            return false;
        }
        // Not called again: read it now, for the `get` that follows.
        let stores = self.wait_on(t);
        let out = Box::pin(stores.get(t, &key)).await;
        self.clock.resume();
        self.ahead.read.push((t, key, out));
        true
    }

    async fn set_deferred(&mut self, t: store::Tier, key: String, value: Vec<u8>, ttl_s: u32, on_failure: Vec<(String, String)>) {
        if let Some(deferred) = self.deferred.as_mut().filter(|d| d.len() < MOST_AHEAD) {
            deferred.push(Deferred { tier: tier(t), key, value, ttl_s, on_failure });
            return;
        }
        if let Err(e) = Box::pin(self.set(t, key.clone(), value, ttl_s)).await {
            tracing::warn!(plugin = %self.shared.name, key, "deferred session write failed: {e:?}");
        }
    }

    async fn write_back(&mut self, plan: store::WritePlan) {
        self.write_back_split(plan, Vec::new()).await;
    }

    async fn write_back_split(&mut self, plan: store::WritePlan, other_part: Vec<u8>) {
        let store::WritePlan { tier: t, key, base, ttl_s, max_bytes, guard, counter, on_failure } = plan;
        self.write_back = Some(WritePlan { tier: tier(t), key, base, ttl_s, max_bytes: max_bytes as usize, guard, other_part, counter, on_failure });
    }

    async fn remember(&mut self, memo: store::Memo) {
        self.trace.asked = Some(memo);
    }

    async fn lock(&mut self, t: store::Tier, key: String) -> Result<bool, store::StoreError> {
        let t = tier(t);
        if self.locks.iter().any(|(lt, k, _)| *lt == t && *k == key) {
            return Ok(true); // this request holds it already
        }
        let (stores, owner) = (self.wait_on(t), crate::session::new_id());
        let out = Box::pin(stores.lock(t, &key, &owner)).await.map_err(to_wit);
        self.clock.resume();
        if matches!(out, Ok(true)) {
            self.locks.push((t, key, owner));
            if std::mem::take(&mut self.ahead.early) {
                self.ahead.read.clear();
            }
        }
        out
    }

    async fn index(&mut self, principal: String, id: String, parts: Vec<store::Part>, ttl_s: u32) {
        if let Err(why) = crate::session::index::check_principal(&principal) {
            tracing::debug!(plugin = %self.shared.name, "session not indexed: {why}");
            return;
        }
        self.principal = Some(principal.clone());
        let parts: Vec<(Tier, String)> = parts.into_iter().map(|p| (tier(p.tier), p.key)).collect();
        self.trace.index(&principal, &id, &parts, ttl_s);
        if crate::session::index::is_fresh(&principal, &id, crate::session::index::now_s()) {
            return;
        }
        self.clock.pause();
        let stores = self.stores.clone();
        Box::pin(crate::session::index::touch(&stores, &self.shared.name, &principal, &id, parts, ttl_s)).await;
        self.clock.resume();
    }

    async fn unindex(&mut self, principal: String, id: String, t: store::Tier) {
        self.trace.wrote = true;
        if crate::session::index::check_principal(&principal).is_err() {
            return;
        }
        self.clock.pause();
        let stores = self.stores.clone();
        if let Err(e) = Box::pin(crate::session::index::unindex(&stores, &principal, &id, tier(t))).await {
            tracing::warn!(plugin = %self.shared.name, "session index not updated: {e:?}");
        }
        self.clock.resume();
    }

    async fn unlock(&mut self, t: store::Tier, key: String) -> Result<(), store::StoreError> {
        let t = tier(t);
        let Some(i) = self.locks.iter().position(|(lt, k, _)| *lt == t && *k == key) else { return Ok(()) };
        let (_, key, owner) = self.locks.swap_remove(i);
        let stores = self.wait_on(t);
        let out = Box::pin(stores.unlock(t, &key, &owner)).await.map_err(to_wit);
        self.clock.resume();
        out
    }
}

impl tokens::Host for HostState {
    fn sign(&mut self, payload: Vec<u8>, ttl_s: u32) -> Result<String, String> {
        let out = self.stores.tokens.sign(&payload, ttl_s);
        self.saw(&out, true, SEEN_STORED);
        out
    }
    fn verify(&mut self, token: String) -> Option<Vec<u8>> {
        let out = self.stores.tokens.verify(&token);
        if out.is_some() {
            self.seen |= SEEN_LOADED;
        }
        out
    }
    fn new_id(&mut self) -> String {
        crate::session::new_id()
    }
}

#[cfg(test)]
mod tests {
    use super::{over, CallClock, AWAY_BOUND};
    use crate::wasm::engine::YIELD_AFTER;
    use std::time::Duration;

    /// Run on this thread's CPU for `d` (CPU time, not wall time, so a
    /// busy test machine cannot make it shorter).
    fn spin(d: Duration) {
        let t = super::thread_cpu();
        while super::thread_cpu() - t < d {
            std::hint::black_box(0u64);
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// A call off the CPU past its deadline (preempted, or a host wait
    /// that is not a store's) is not failed for it until `AWAY_BOUND` times
    /// its budget; one that ran `YIELD_AFTER` of CPU past it is.
    #[test]
    fn only_a_call_that_runs_past_its_deadline_traps() {
        let budget = 5 * MS;
        assert!(!over(4 * MS, 4 * MS, budget), "before the deadline");
        assert!(!over(7 * MS, Duration::from_micros(20), budget), "preempted past it");
        assert!(!over(budget * AWAY_BOUND - MS, Duration::ZERO, budget));
        assert!(over(budget * AWAY_BOUND, Duration::ZERO, budget), "away for {AWAY_BOUND}x its budget");
        assert!(over(budget, YIELD_AFTER, budget), "ran past it");
        assert!(over(6 * MS, 2 * MS, budget));
    }

    /// The clock counts the CPU a call ran, not the time it slept.
    #[test]
    fn the_cpu_clock_counts_running_not_sleeping() {
        let mut away = CallClock::default();
        away.start();
        away.cpu(); // the first tick
        std::thread::sleep(10 * MS);
        assert!(away.cpu() < YIELD_AFTER, "slept, yet {:?} of CPU", away.cpu());
        assert!(away.wall() >= 10 * MS);

        let mut busy = CallClock::default();
        busy.start();
        busy.cpu();
        spin(6 * MS);
        assert!(busy.cpu() >= 6 * MS);
        assert!(over(busy.wall(), busy.cpu(), 5 * MS), "ran {:?} of CPU past a 5 ms deadline", busy.cpu());
    }

    /// Store waits count toward neither clock.
    #[test]
    fn a_store_wait_stops_the_deadline() {
        let mut c = CallClock::default();
        c.start();
        c.pause();
        std::thread::sleep(25 * MS);
        c.resume();
        assert!(c.wall() < 25 * MS, "{:?}", c.wall());
    }
}
