//! One wasmtime engine with an epoch ticker; plugins compile once at load.
//! A call that runs long (noticed within `CHECK`) yields at each tick and
//! finishes on the plugin pool, so a looping plugin never holds a proxy
//! worker for long.

use super::host::{HostState, PluginShared};
use crate::config::PluginSpec;
use crate::error::{Error, PluginFault};
use crate::metrics::metrics;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::UpdateDeadline;

/// Epoch tick: the granularity of call deadlines. The deadline counts wall
/// time without store waits once the call has run on a CPU for
/// `YIELD_AFTER`, the yield point CPU time (`CallClock`).
pub const TICK: Duration = Duration::from_millis(1);

/// Least deadline of setup calls (see `LoadedPlugin::arm_setup`).
pub const SETUP_DEADLINE_MS: u64 = 1000;

/// A call that has run this long yields to its executor at the next tick.
/// Measured calls take 1-4 us, so only a runaway plugin gets here.
pub const YIELD_AFTER: Duration = Duration::from_micros(500);

/// After one of its calls had to move to the plugin pool, a plugin's calls
/// go straight there for this long, so a looping plugin costs the proxy
/// workers one slice a second, not one per request.
const SLOW_FOR: Duration = Duration::from_secs(1);

/// The shared wasmtime engine.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    ticker: Arc<Ticker>,
    pool: Arc<PluginPool>,
    /// The session store tiers every plugin's `store` import reaches.
    stores: Arc<crate::session::Stores>,
}

/// How long the epoch thread keeps looking after the last guest call:
/// under load calls come back to back, and waking a parked thread per call
/// would cost more than looking.
const LINGER: Duration = Duration::from_millis(100);

/// How often the epoch thread looks for a guest call older than a `TICK`
/// while only short ones run. Each wake-up of that thread costs about 24 µs
/// of CPU on a 2-core VM (docs/bench.md, "sessions"), and calls take 1-4 µs,
/// so it wakes 200 times a second, not 1,000; a call that runs long is
/// noticed within this, then ticked every `TICK`.
const CHECK: Duration = Duration::from_millis(5);

/// The thread that advances the epoch every `TICK` while a guest call has
/// run longer than a tick, looks every `CHECK` while only short calls run,
/// and sleeps (no wake-ups) once none has for `LINGER`.
struct Ticker {
    /// When each call in progress started (`now_ns`), by slot.
    calls: parking_lot::Mutex<Calls>,
    thread: OnceLock<std::thread::Thread>,
    /// The thread's kernel id (its wake-ups are in /proc/self/task/TID).
    #[cfg(test)]
    tid: std::sync::atomic::AtomicI32,
}

/// The start times of the calls in progress; 0 marks a free slot.
#[derive(Default)]
struct Calls {
    started: Vec<u64>,
    free: Vec<usize>,
}

impl Calls {
    fn take(&mut self, now: u64) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.started[i] = now;
                i
            }
            None => {
                self.started.push(now);
                self.started.len() - 1
            }
        }
    }

    /// Whether no call is in progress.
    fn idle(&self) -> bool {
        self.free.len() == self.started.len()
    }

    fn give(&mut self, i: usize) {
        self.started[i] = 0;
        self.free.push(i);
    }

    /// The start of the oldest call in progress, if any.
    fn oldest(&self) -> Option<u64> {
        self.started.iter().copied().filter(|&t| t != 0).min()
    }
}

/// A guest call in progress: the epoch advances while it runs long.
pub(crate) struct Ticking(Arc<Ticker>, usize);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.calls.lock().give(self.1);
    }
}

impl Ticker {
    fn start(engine: wasmtime::EngineWeak) -> Result<Arc<Self>, Error> {
        let ticker = Arc::new(Self {
            calls: parking_lot::Mutex::new(Calls::default()),
            thread: OnceLock::new(),
            #[cfg(test)]
            tid: std::sync::atomic::AtomicI32::new(0),
        });
        let t = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                #[cfg(test)]
                t.tid.store(rustix::thread::gettid().as_raw_nonzero().get(), Ordering::Release);
                let mut busy_at = std::time::Instant::now();
                while let Some(engine) = engine.upgrade() {
                    let oldest = t.calls.lock().oldest();
                    if oldest.is_some() {
                        busy_at = std::time::Instant::now();
                    } else if busy_at.elapsed() >= LINGER {
                        drop(engine);
                        // Woken by the next call; the timeout notices a dropped engine.
                        std::thread::park_timeout(Duration::from_secs(1));
                        busy_at = std::time::Instant::now();
                        continue;
                    }
                    // Only a call that has run for a tick needs the epoch to
                    // move (its deadline and yield are checked at ticks).
                    let long = oldest.is_some_and(|at| crate::upstream::now_ns().saturating_sub(at) >= TICK.as_nanos() as u64);
                    if long {
                        engine.increment_epoch();
                    }
                    drop(engine);
                    std::thread::sleep(if long { TICK } else { CHECK });
                }
            })
            .map_err(|e| Error::internal(format!("epoch thread: {e}")))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    fn hold(self: &Arc<Self>) -> Ticking {
        let (slot, first) = {
            let mut calls = self.calls.lock();
            let first = calls.idle();
            (calls.take(crate::upstream::now_ns()), first)
        };
        if first {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Ticking(self.clone(), slot)
    }
}

/// Low-priority threads where slow plugin calls finish, time-sliced at
/// every epoch tick; started on first use.
struct PluginPool {
    threads: usize,
    rt: OnceLock<Option<PoolRuntime>>,
}

/// Shut down without blocking: the engine may drop inside a runtime.
struct PoolRuntime(Option<tokio::runtime::Runtime>);

impl Drop for PoolRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PluginPool {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        let rt = self.rt.get_or_init(|| {
            let built = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.threads)
                .thread_name("switchyard-plugin")
                .on_thread_start(lower_priority)
                .enable_all()
                .build();
            match built {
                Ok(rt) => Some(PoolRuntime(Some(rt))),
                Err(e) => {
                    tracing::error!("cannot start the plugin pool, slow plugin calls stay on the proxy workers: {e}");
                    None
                }
            }
        });
        rt.as_ref().and_then(|r| r.0.as_ref()).map(|r| r.handle().clone())
    }
}

/// Pool threads run at nice 19: a spinning plugin yields the CPU to the
/// proxy workers whenever they have work (Linux applies it per thread).
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!("plugin pool thread keeps its priority: {e}");
    }
}

impl Engine {
    /// Build the engine and start the thread that advances its epoch; slow
    /// calls finish on a pool of 2 threads.
    pub fn new() -> Result<Self, Error> {
        Self::with_pool_threads(2)
    }

    /// As [`Engine::new`], with `threads` in the plugin pool.
    pub fn with_pool_threads(threads: usize) -> Result<Self, Error> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        // Compile on one thread: a hot swap under load must leave the other
        // cores to the proxy (measured: parallel compiles tripled p99).
        cfg.parallel_compilation(false);
        // `perf` names guest functions when asked (/tmp/perf-PID.map).
        if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let inner = wasmtime::Engine::new(&cfg).map_err(|e| Error::internal(format!("wasm engine: {e}")))?;
        let ticker = Ticker::start(inner.weak())?;
        Ok(Self {
            inner,
            ticker,
            pool: Arc::new(PluginPool { threads: threads.max(1), rt: OnceLock::new() }),
            stores: Arc::new(crate::session::Stores::none()),
        })
    }

    /// Keep the epoch advancing for a guest call (deadlines and yields
    /// need it) until the returned guard drops.
    pub(crate) fn ticking(&self) -> Ticking {
        self.ticker.hold()
    }

    /// Give plugins the `[session]` store tiers (before any plugin loads).
    pub fn with_stores(mut self, stores: Arc<crate::session::Stores>) -> Self {
        self.stores = stores;
        self
    }

    /// The session store tiers.
    pub fn stores(&self) -> &Arc<crate::session::Stores> {
        &self.stores
    }

    pub(crate) fn raw(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Compile a plugin and link it against the host imports. Fails with a
    /// `Load` fault naming what is wrong (not wasm, not a component, an
    /// import the host does not provide, no Switchyard world exported).
    /// `shared` is the plugin's gateway-wide state, kept across versions.
    pub fn load_bytes(&self, spec: &PluginSpec, bytes: &[u8], shared: Arc<PluginShared>) -> Result<Arc<LoadedPlugin>, Error> {
        let fail = |m: String| Error::plugin(PluginFault::Load, &spec.name, m);
        if !bytes.starts_with(b"\0asm") {
            return Err(fail("not a WebAssembly file".into()));
        }
        let component = Component::from_binary(&self.inner, bytes)
            .map_err(|e| fail(format!("not a valid component (build with --target wasm32-wasip2): {e:#}")))?;
        let linker = self.linker().map_err(|e| fail(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| fail(format!("unsatisfied import: {e:#}")))?;
        let world = World::of(&pre).map_err(fail)?;
        let reads_request = reads_request(&self.inner, &component);
        Ok(Arc::new(LoadedPlugin {
            spec: spec.clone(),
            engine: self.clone(),
            pre,
            shared,
            world,
            reads_request,
            slow_until_ns: AtomicU64::new(0),
            call_seconds: Default::default(),
            score: Default::default(),
            routed: Default::default(),
            outcomes: Default::default(),
        }))
    }

    fn linker(&self) -> wasmtime::Result<Linker<HostState>> {
        use wasmtime::component::HasSelf;
        let mut linker = Linker::new(&self.inner);
        // WASI without preopens or sockets: std works, files and network don't.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::metrics::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::clock::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::shared::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::store::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        super::tokens::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        Ok(linker)
    }
}

/// A compiled, linked plugin: instantiate it as often as needed.
pub struct LoadedPlugin {
    pub spec: PluginSpec,
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub shared: Arc<PluginShared>,
    /// The Switchyard world the component exports.
    pub world: World,
    /// The component imports a method of `request`: it may read the
    /// request, so the host builds the view for it.
    pub reads_request: bool,
    /// Until when (`upstream::now_ns`) calls start on the plugin pool.
    slow_until_ns: AtomicU64,
    /// `plugin_call_seconds` per hook, resolved at the hook's first call.
    call_seconds: parking_lot::RwLock<Vec<(&'static str, prometheus::Histogram)>>,
    /// Calls, faults and latency of this version (a canary's evidence).
    pub score: super::canary::Scorecard,
    /// The requests this version routed (an lb canary's evidence): set
    /// on the request by the lb seam, counted when the request ends.
    pub routed: Arc<super::canary::Scorecard>,
    /// What this version decided while a canary ran (a canary's evidence).
    pub outcomes: super::canary::Outcomes,
}

impl LoadedPlugin {
    /// The same compiled component with another `config` table (JSON): no
    /// recompile; `configure` runs with it at the next instantiation.
    pub fn with_config(&self, config_json: String) -> Self {
        Self {
            spec: PluginSpec { config_json, config_line: None, ..self.spec.clone() },
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            shared: self.shared.clone(),
            world: self.world,
            reads_request: self.reads_request,
            slow_until_ns: AtomicU64::new(0),
            call_seconds: parking_lot::RwLock::new(Vec::new()),
            score: Default::default(),
            routed: Default::default(),
            outcomes: Default::default(),
        }
    }
}

/// Whether `component` imports any method of the `request` resource.
pub(crate) fn reads_request(engine: &wasmtime::Engine, component: &Component) -> bool {
    use wasmtime::component::types::ComponentItem;
    component.component_type().imports(engine).any(|(name, item)| {
        name.starts_with("switchyard:policy/types@")
            && matches!(&item.ty, ComponentItem::ComponentInstance(inst) if inst.exports(engine).any(|(f, _)| f.starts_with("[method]request.")))
    })
}

/// The Switchyard world a plugin exports, and the seam it plugs into
/// (found among the registered seams, `wasm::SEAMS`).
#[derive(Clone, Copy)]
pub struct World {
    name: &'static str,
    kind: &'static super::seam::SeamKind,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for World {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl World {
    fn of(pre: &InstancePre<HostState>) -> Result<Self, String> {
        let seams = super::SEAMS;
        if let Some((name, kind)) = seams.iter().find_map(|k| (k.world_of)(pre).map(|w| (w, k))) {
            return Ok(Self { name, kind });
        }
        let worlds: Vec<String> = seams.iter().map(|k| format!("the {} world ({})", (k.worlds_by_exports)(&[k.export]).join(" or "), k.export)).collect();
        Err(format!("exports no Switchyard world: neither {}", worlds.join(", nor ")))
    }

    /// World names a component with these export names satisfies, by name
    /// only (loading also checks the function types).
    pub fn from_exports<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'static str> {
        let names: Vec<&str> = names.collect();
        super::SEAMS.iter().map(|k| (k.worlds_by_exports)(&names)).find(|w| !w.is_empty()).unwrap_or_default()
    }

    /// The WIT world name.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The seam it plugs into; a swap must keep the seam.
    pub fn seam(self) -> &'static str {
        self.kind.seam
    }

    /// Every hook of its seam, as `GET /plugins` times them.
    pub fn hooks(self) -> &'static [&'static str] {
        self.kind.hooks
    }

    /// Instantiate and configure `plugin` (of this world) as its seam.
    pub async fn prove(self, plugin: Arc<LoadedPlugin>) -> Result<(), crate::error::Error> {
        (self.kind.prove)(plugin).await
    }
}

impl LoadedPlugin {
    /// A fresh store with this plugin's limits.
    pub(crate) fn new_store(&self) -> wasmtime::Store<HostState> {
        let mut store = wasmtime::Store::new(self.engine.raw(), HostState::new(&self.spec, self.shared.clone(), self.engine.stores.clone()));
        store.limiter(|s| &mut s.limits);
        // Checked at every tick: past the deadline the call traps; past
        // YIELD_AFTER it yields, so it never holds its thread for long.
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            // One read of the thread's CPU clock (a system call) per tick.
            let cpu = data.clock.cpu();
            if super::host::over(data.clock.wall(), cpu, data.call_budget) {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            if cpu >= YIELD_AFTER {
                data.cpu_yield.store(true, Ordering::Relaxed);
                data.clock.yielded();
                return Ok(UpdateDeadline::Yield(1));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// Run a guest call so that its CPU costs only the requests that use
    /// this plugin. It starts inline (no hand-off for the usual few-us
    /// call) and stays there while it waits on a store; once it yields for
    /// CPU (`cpu_yield`, set by the epoch callback), it finishes on the
    /// plugin pool. `None` if the pool lost the call (it panicked).
    pub(crate) async fn isolated<T: Send + 'static>(&self, cpu_yield: Arc<std::sync::atomic::AtomicBool>, call: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let mut call = Box::pin(call);
        let now = crate::upstream::now_ns();
        cpu_yield.store(false, Ordering::Relaxed);
        if self.slow_until_ns.load(Ordering::Relaxed) <= now {
            let inline = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if cpu_yield.load(Ordering::Relaxed) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            if let Some(out) = inline {
                return Some(out);
            }
            self.slow_until_ns.store(crate::upstream::now_ns() + SLOW_FOR.as_nanos() as u64, Ordering::Relaxed);
        }
        let Some(pool) = self.engine.pool.handle() else { return Some(call.await) };
        metrics().plugin_offloads.with_label_values(&[self.spec.name.as_str()]).inc();
        pool.spawn(call).await.ok()
    }

    /// Arm the deadline for instantiation, `configure`, `restore` and swap
    /// smoke calls: off the request path, so a host busy enough to preempt
    /// the call for a few ms does not fail a load; a loop still ends.
    pub(crate) fn arm_setup(&self, store: &mut wasmtime::Store<HostState>) {
        let ms = self.spec.limits.deadline_ms.max(SETUP_DEADLINE_MS);
        Self::arm_for(store, Duration::from_millis(ms));
    }

    /// Arm the deadline for the next call.
    pub(crate) fn arm(&self, store: &mut wasmtime::Store<HostState>) {
        Self::arm_for(store, Duration::from_millis(self.spec.limits.deadline_ms));
    }

    fn arm_for(store: &mut wasmtime::Store<HostState>, budget: Duration) {
        let data = store.data_mut();
        data.clock.start();
        data.call_budget = budget;
        store.set_epoch_deadline(1);
    }

    /// Await one guest call: time it under `hook` and turn a failure into
    /// a typed, counted fault. Arm the store's deadline first.
    /// `bound` is the store's [`HostState::bound`], read before the call
    /// borrows the store: the call is [`Bounded`] by it.
    pub(crate) async fn timed<T>(&self, hook: &'static str, bound: super::host::CallBound, call: impl std::future::Future<Output = wasmtime::Result<T>>) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let _ticking = self.engine.ticking();
        let out = Bounded::new(std::pin::pin!(call), bound).await;
        self.call_seconds(hook).observe(started.elapsed().as_secs_f64());
        out.map_err(|e| self.fault(&e, hook))
    }

    /// The `plugin_call_seconds` histogram of `hook`, looked up by label
    /// only at its first call.
    pub(crate) fn call_seconds(&self, hook: &'static str) -> prometheus::Histogram {
        if let Some((_, h)) = self.call_seconds.read().iter().find(|(k, _)| *k == hook) {
            return h.clone();
        }
        let h = metrics().plugin_call_seconds.with_label_values(&[self.spec.name.as_str(), hook]);
        self.call_seconds.write().push((hook, h.clone()));
        h
    }

    /// Turn a wasmtime error from a `hook` call into a typed plugin fault,
    /// and count it.
    pub(crate) fn fault(&self, err: &wasmtime::Error, hook: &str) -> Error {
        let fault = match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginFault::Deadline,
            _ if format!("{err:?}").contains("growing memory") => PluginFault::MemoryCap,
            _ => PluginFault::Trap,
        };
        crate::metrics::plugin_fault(&self.spec.name, hook, fault);
        let detail = match fault {
            PluginFault::Deadline => format!("{hook} ran past its {} ms deadline", self.spec.limits.deadline_ms),
            PluginFault::MemoryCap => format!("{hook}: memory would exceed the {} MiB cap", self.spec.limits.memory_mb),
            _ => format!("{hook}: {}", trap_text(err)),
        };
        Error::plugin(fault, &self.spec.name, detail)
    }

    /// Put the panic message the plugin reported during the call (if any)
    /// in front of a fault's message, and forget it.
    pub(crate) fn with_panic(e: Error, store: &mut wasmtime::Store<HostState>) -> Error {
        match store.data_mut().last_panic.take() {
            Some(panic) if e.fault == Some(PluginFault::Trap) => Error { message: format!("{}; the plugin {panic}", e.message), ..e },
            _ => e,
        }
    }
}

/// A guest call (every one, through `LoadedPlugin::timed`, and each
/// instantiation), bounded while it awaits the host. The epoch interrupts
/// only running Wasm, so a call parked in a host await that is not a
/// store's (a WASI sleep, a pollable) would last as long as it asked.
/// Once such a call has been away `AWAY_BOUND` times its budget, store
/// waits excluded, it ends with the deadline's trap, and the caller drops
/// its instance as after any trap. Free for a call that ends at its first
/// poll (nearly all); one that waits pays one timer.
pub(crate) struct Bounded<F> {
    call: F,
    bound: Duration,
    waits: Arc<super::host::StoreWaits>,
    /// Armed at the first `Pending`: the timer, when it was armed, and the
    /// store wait time then.
    timer: Option<(std::pin::Pin<Box<tokio::time::Sleep>>, u64, u64)>,
}

impl<F> Bounded<F> {
    /// `call` on a store armed as `bound` says.
    pub(crate) fn new(call: F, bound: super::host::CallBound) -> Self {
        Self { call, bound: bound.budget * super::host::AWAY_BOUND, waits: bound.waits, timer: None }
    }
}

impl<T, F: Future<Output = wasmtime::Result<T>> + Unpin> Future for Bounded<F> {
    type Output = wasmtime::Result<T>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = std::pin::Pin::new(&mut this.call).poll(cx) {
            return Poll::Ready(out);
        }
        let (timer, armed, waited) = this.timer.get_or_insert_with(|| {
            let now = crate::upstream::now_ns();
            (Box::pin(tokio::time::sleep(this.bound)), now, this.waits.total(now))
        });
        while timer.as_mut().poll(cx).is_ready() {
            let now = crate::upstream::now_ns();
            let away = now.saturating_sub(*armed).saturating_sub(this.waits.total(now).saturating_sub(*waited));
            match this.bound.checked_sub(Duration::from_nanos(away)) {
                Some(left) if !left.is_zero() => timer.as_mut().reset(tokio::time::Instant::now() + left),
                _ => return Poll::Ready(Err(wasmtime::Trap::Interrupt.into())),
            }
        }
        Poll::Pending
    }
}

/// What trapped and where: the trap kind (or the error's first line) and
/// the innermost wasm frames.
fn trap_text(err: &wasmtime::Error) -> String {
    let what = err.downcast_ref::<wasmtime::Trap>().map_or_else(|| format!("{err:#}").lines().next().unwrap_or("trap").to_string(), ToString::to_string);
    let frames: Vec<String> = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.frames().iter().take(6).map(|f| f.func_name().map_or_else(|| format!("func[{}]", f.func_index()), str::to_string)).collect())
        .unwrap_or_default();
    if frames.is_empty() {
        what
    } else {
        format!("{what}; wasm backtrace: {}", frames.join(" <- "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wakeups(tid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("the epoch thread's status");
        status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).and_then(|v| v.trim().parse().ok()).expect("voluntary_ctxt_switches")
    }

    /// No guest call, no ticks: the epoch thread sleeps instead of waking
    /// every millisecond; while only short calls run, it looks every
    /// `CHECK`; while a call runs long, it ticks.
    #[test]
    fn the_epoch_ticks_only_while_a_guest_call_runs() {
        let engine = Engine::new().unwrap();
        let tid = loop {
            match engine.ticker.tid.load(Ordering::Acquire) {
                0 => std::thread::sleep(Duration::from_millis(5)),
                tid => break tid,
            }
        };
        std::thread::sleep(LINGER * 2);
        let before = wakeups(tid);
        std::thread::sleep(Duration::from_millis(500));
        let idle = wakeups(tid) - before;
        assert!(idle <= 3, "an idle engine's epoch thread woke {idle} times in 500 ms");
        // Calls of a few µs, back to back for 500 ms: no call is ever a
        // tick old, so the thread only looks (every 5 ms: about 100 times).
        let before = wakeups(tid);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            drop(engine.ticking());
            std::thread::sleep(Duration::from_micros(50));
        }
        let short = wakeups(tid) - before;
        assert!(short <= 200, "short calls woke the epoch thread {short} times in 500 ms (1 ms ticks would be about 500)");
        let ticking = engine.ticking();
        let before = wakeups(tid);
        std::thread::sleep(Duration::from_millis(500));
        let busy = wakeups(tid) - before;
        drop(ticking);
        assert!(busy >= 50, "the epoch thread woke only {busy} times in 500 ms of a guest call");
    }

    /// A call that never answers: parked in a host await that is not a
    /// store's.
    fn parked() -> std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>> {
        Box::pin(std::future::pending())
    }

    /// A 5 ms budget (a 20 ms bound) over `waits`.
    fn bound(waits: &Arc<super::super::host::StoreWaits>) -> super::super::host::CallBound {
        super::super::host::CallBound { budget: Duration::from_millis(5), waits: waits.clone() }
    }

    fn is_deadline(out: wasmtime::Result<()>) -> bool {
        matches!(out.map_err(|e| e.downcast::<wasmtime::Trap>()), Err(Ok(wasmtime::Trap::Interrupt)))
    }

    /// A call that ends at its first poll passes through; one that stays
    /// away ends with the deadline's trap.
    #[tokio::test]
    async fn a_call_away_in_a_host_await_ends_with_the_deadline_trap() {
        let waits = Arc::new(super::super::host::StoreWaits::default());
        let quick = Bounded::new(Box::pin(async { Ok::<_, wasmtime::Error>(7) }), bound(&waits));
        assert_eq!(quick.await.unwrap(), 7);
        assert!(is_deadline(Bounded::new(parked(), bound(&waits)).await), "a parked call ends as a deadline hit");
    }

    /// Store waits do not count: a call in one is not ended however long
    /// it lasts, and once it ends the call has its whole bound again.
    #[tokio::test]
    async fn a_store_wait_does_not_count_toward_the_bound() {
        let waits = Arc::new(super::super::host::StoreWaits::default());
        waits.begin();
        let mut call = Bounded::new(parked(), bound(&waits));
        // 10x the 20 ms bound inside a store wait: still running.
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut call).await.is_err(), "a call in a store wait was ended");
        waits.end();
        assert!(is_deadline(call.await), "after the wait the call is bounded again");
    }
}
