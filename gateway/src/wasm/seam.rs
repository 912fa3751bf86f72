//! What every seam's Wasm adapter shares, written once: a generation per
//! plugin version with its instance pool, limits, isolated calls, typed
//! and counted faults, per-hook timings, and the prepare/commit pair a hot
//! swap and a rollback drive. A seam supplies its exports ([`Seam`]) and a
//! smoke call; its adapter is a thin layer over [`Hosted`].

use super::engine::{Bounded, LoadedPlugin};
use super::host::HostState;
use crate::config::OnError;
use crate::error::{Error, PluginFault};
use crate::metrics::metrics;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wasmtime::component::{Instance as WasmInstance, InstancePre};
use wasmtime::Store;

/// A boxed future borrowing an instance for one guest call.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// How a call's deadline is armed: per request, or the setup deadline.
pub type Arm = fn(&LoadedPlugin, &mut Store<HostState>);

/// Give a call closure its higher-ranked signature (closures bound to a
/// `let` do not infer one).
pub fn hint<S: Seam, P, T, F>(f: F) -> F
where
    F: for<'a> FnOnce(&'a mut Instance<S>, P) -> CallFuture<'a, T>,
{
    f
}

/// One seam's exports, as the generic pool needs them.
pub trait Seam: Send + Sync + 'static {
    /// The loaded exports of one instance.
    type Guest: Send + Sync + 'static;
    /// What `configure` answered, kept by the generation (lb: its needs).
    type Setup: Send + Sync + Clone + 'static;
    /// Per-instance host-side state (lb: the backend-set version it saw).
    type Local: Send + Default + 'static;

    /// The seam name (`lb`, `sql`, `session`); a swap must keep it.
    const SEAM: &'static str;
    /// Every hook, as `GET /plugins` times them.
    const HOOKS: &'static [&'static str];
    /// The interface a component exports to plug in here (for errors).
    const EXPORT: &'static str;

    /// The WIT world `pre` exports for this seam, if any (lb: `lb-policy`
    /// or, with `lb-state` too, `lb-policy-stateful`).
    fn world_of(pre: &InstancePre<HostState>) -> Option<&'static str>;

    /// The worlds a component with these export names satisfies, by name
    /// only (loading also checks the function types).
    fn worlds_by_exports(names: &[&str]) -> Vec<&'static str>;

    /// Load the exports, failing with what the component lacks.
    fn load(pre: &InstancePre<HostState>, store: &mut Store<HostState>, instance: &WasmInstance) -> Result<Self::Guest, String>;

    /// Call `configure` with the plugin's config as JSON.
    fn configure<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, config: &'a str) -> CallFuture<'a, Result<Self::Setup, String>>;

    /// Take over the previous version's state (only seams that keep one).
    fn restore<'a>(_guest: &'a Self::Guest, _store: &'a mut Store<HostState>, _state: &'a [u8]) -> Option<CallFuture<'a, Result<(), String>>> {
        None
    }

    /// This version's state for the next one (only seams that keep one).
    fn snapshot<'a>(_guest: &'a Self::Guest, _store: &'a mut Store<HostState>) -> Option<CallFuture<'a, Vec<u8>>> {
        None
    }
}

/// A seam as the engine sees it, without naming its adapter: the engine
/// finds a component's seam by asking each registered kind
/// (`wasm::SEAMS`), so adding a seam adds one entry there and leaves the
/// engine alone.
pub struct SeamKind {
    pub seam: &'static str,
    pub hooks: &'static [&'static str],
    pub export: &'static str,
    pub world_of: fn(&InstancePre<HostState>) -> Option<&'static str>,
    pub worlds_by_exports: fn(&[&str]) -> Vec<&'static str>,
    /// Instantiate and configure a plugin nobody uses yet, as this seam.
    pub prove: fn(Arc<LoadedPlugin>) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

impl SeamKind {
    pub const fn of<S: Seam>() -> Self {
        Self { seam: S::SEAM, hooks: S::HOOKS, export: S::EXPORT, world_of: S::world_of, worlds_by_exports: S::worlds_by_exports, prove: prove::<S> }
    }
}

fn prove<S: Seam>(plugin: Arc<LoadedPlugin>) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> {
    Box::pin(async move { Generation::<S>::start(plugin, None).await.map(drop) })
}

/// One live instance of a seam's plugin.
pub struct Instance<S: Seam> {
    pub store: Store<HostState>,
    pub guest: S::Guest,
    pub local: S::Local,
}

/// One version of a plugin serving one user, with its own pool. Calls hold
/// an `Arc` to it, so a swap lets them finish on this version.
pub struct Generation<S: Seam> {
    pub plugin: Arc<LoadedPlugin>,
    pub setup: S::Setup,
    /// State from the previous version, restored into each new instance.
    restore: Option<Vec<u8>>,
    idle: Mutex<Vec<Instance<S>>>,
}

impl<S: Seam> Generation<S> {
    /// A generation with one configured (and restored) instance pooled, so
    /// a bad plugin or a rejected config fails now with its own message.
    pub async fn start(plugin: Arc<LoadedPlugin>, restore: Option<Vec<u8>>) -> Result<Self, Error> {
        let (first, setup) = Self::instantiate(&plugin, restore.as_deref()).await?;
        Ok(Self { plugin, setup, restore, idle: Mutex::new(vec![first]) })
    }

    /// A fresh instance: instantiated, configured, restored.
    pub async fn instantiate(plugin: &LoadedPlugin, restore: Option<&[u8]>) -> Result<(Instance<S>, S::Setup), Error> {
        let name = &plugin.spec.name;
        let mut store = plugin.new_store();
        plugin.arm_setup(&mut store);
        let ticking = plugin.engine.ticking();
        let bound = store.data().bound();
        let instance = Bounded::new(std::pin::pin!(plugin.pre.instantiate_async(&mut store)), bound).await.map_err(|e| plugin.fault(&e, "instantiate"))?;
        drop(ticking);
        let guest = S::load(&plugin.pre, &mut store, &instance).map_err(|m| Error::plugin(PluginFault::Load, name, m))?;
        plugin.arm_setup(&mut store);
        let bound = store.data().bound();
        let setup = plugin
            .timed("configure", bound, S::configure(&guest, &mut store, &plugin.spec.config_json))
            .await
            .map_err(|e| LoadedPlugin::with_panic(e, &mut store))?
            .map_err(|msg| Error::plugin(PluginFault::Config, name, msg))?;
        if let Some(bytes) = restore {
            plugin.arm_setup(&mut store);
            let bound = store.data().bound();
            if let Some(call) = S::restore(&guest, &mut store, bytes) {
                plugin
                    .timed("restore", bound, call)
                    .await?
                    .map_err(|msg| Error::plugin(PluginFault::Config, name, format!("restore rejected the previous version's state: {msg}")))?;
            }
        }
        Ok((Instance { store, guest, local: S::Local::default() }, setup))
    }

    async fn checkout(&self) -> Result<Instance<S>, Error> {
        if let Some(i) = self.idle.lock().pop() {
            return Ok(i);
        }
        metrics().plugin_instantiations.with_label_values(&[self.plugin.spec.name.as_str()]).inc();
        // Boxed: instantiating is rare, and its future inline would make
        // every call's future (moved on each hook) kilobytes larger.
        Ok(Box::pin(Self::instantiate(&self.plugin, self.restore.as_deref())).await?.0)
    }

    fn checkin(&self, inst: Instance<S>) {
        let mut idle = self.idle.lock();
        if idle.len() < self.plugin.spec.limits.instances {
            idle.push(inst);
        } else {
            drop(idle);
            metrics().plugin_instances_over_pool.with_label_values(&[self.plugin.spec.name.as_str()]).inc();
        }
    }

    /// One guest call under `hook`: an instance from the pool, the call
    /// isolated (see `LoadedPlugin::isolated`) and timed, its answer
    /// checked by `check`. An instance whose call failed or answered
    /// something `check` refused is dropped, never reused.
    pub async fn call<T: Send + 'static, U>(
        &self,
        hook: &'static str,
        arm: Arm,
        f: impl for<'a> FnOnce(&'a mut Instance<S>, ()) -> CallFuture<'a, T> + Send + 'static,
        check: impl FnOnce(T) -> Result<U, Error>,
    ) -> Result<U, Error> {
        self.call_with(hook, arm, |_| (), f, check).await
    }

    /// As [`Self::call`], with `prep` run on the instance's host-side
    /// state first, in place (it may borrow what the call may not).
    pub async fn call_with<P: Send + 'static, T: Send + 'static, U>(
        &self,
        hook: &'static str,
        arm: Arm,
        prep: impl FnOnce(&mut S::Local) -> P,
        f: impl for<'a> FnOnce(&'a mut Instance<S>, P) -> CallFuture<'a, T> + Send + 'static,
        check: impl FnOnce(T) -> Result<U, Error>,
    ) -> Result<U, Error> {
        let started = std::time::Instant::now();
        let mut inst = self.checkout().await?;
        let input = prep(&mut inst.local);
        let plugin = self.plugin.clone();
        let cpu_yield = inst.store.data().cpu_yield.clone();
        let out = self
            .plugin
            .isolated(cpu_yield, async move {
                arm(&plugin, &mut inst.store);
                let bound = inst.store.data().bound();
                let out = plugin.timed(hook, bound, f(&mut inst, input)).await;
                (inst, out)
            })
            .await;
        self.plugin.score.record(started.elapsed(), !matches!(out, Some((_, Ok(_)))));
        let Some((mut inst, out)) = out else {
            crate::accesslog::fault();
            return Err(Error::plugin(PluginFault::Trap, &self.plugin.spec.name, format!("{hook}: the plugin pool lost the call")));
        };
        if out.is_err() {
            // Here, not where the fault is counted: the call may have
            // finished on the plugin pool, outside the request's task.
            crate::accesslog::fault();
        }
        let checked = check(out.map_err(|e| LoadedPlugin::with_panic(e, &mut inst.store))?)?;
        self.checkin(inst);
        Ok(checked)
    }

    /// The state of one idle instance, for the next version. `None` when
    /// this seam keeps none, or every instance is busy.
    pub async fn snapshot(&self) -> Option<Vec<u8>> {
        let mut inst = self.idle.lock().pop()?;
        self.plugin.arm_setup(&mut inst.store);
        let bound = inst.store.data().bound();
        let Some(call) = S::snapshot(&inst.guest, &mut inst.store) else {
            self.checkin(inst);
            return None;
        };
        match self.plugin.timed("snapshot", bound, call).await {
            Ok(bytes) => {
                self.checkin(inst);
                Some(bytes).filter(|b| !b.is_empty())
            }
            Err(e) => {
                tracing::warn!(plugin = %self.plugin.spec.name, "snapshot failed, the new version starts fresh: {e}");
                None
            }
        }
    }
}

/// A seam's plugin serving one user: the generation calls start on (and a
/// canary's, for its share of keys), the `on_error` policy, and the
/// fallback counting.
pub struct Hosted<S: Seam> {
    pub name: String,
    pub on_error: OnError,
    generation: ArcSwap<Generation<S>>,
    canary: arc_swap::ArcSwapOption<Canary<S>>,
}

/// A second version beside the current one, for `percent` % of keys.
pub struct Canary<S: Seam> {
    generation: Arc<Generation<S>>,
    percent: u32,
}

/// What a canary operation asks of each user of the plugin.
pub enum CanaryOp {
    /// Serve a prepared generation (from `prepare`) to this share of keys.
    Start(Box<dyn std::any::Any + Send>, u32),
    /// The canary becomes the version every call starts on.
    Promote,
    /// Back to the current version alone.
    End,
}

impl<S: Seam> Hosted<S> {
    /// Start serving `plugin` (one configured instance now).
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let generation = Generation::start(plugin.clone(), None).await?;
        Ok(Self { name: plugin.spec.name.clone(), on_error: plugin.spec.on_error, generation: ArcSwap::from_pointee(generation), canary: Default::default() })
    }

    /// The version new calls start on.
    pub fn current(&self) -> Arc<Generation<S>> {
        self.generation.load_full()
    }

    /// The version a call keyed by `key` starts on: the canary's for its
    /// share of keys (see [`super::canary::in_share`]), else the current.
    pub fn pick<K: std::hash::Hash>(&self, key: Option<K>) -> Arc<Generation<S>> {
        self.pick_during(key).0
    }

    /// [`Self::pick`], and whether a canary runs (its outcome is then
    /// counted for the version picked), from one reading of the canary.
    pub fn pick_during<K: std::hash::Hash>(&self, key: Option<K>) -> (Arc<Generation<S>>, bool) {
        match &*self.canary.load() {
            Some(c) if super::canary::in_share(key, c.percent) => (c.generation.clone(), true),
            Some(_) => (self.current(), true),
            None => (self.current(), false),
        }
    }

    pub fn has_canary(&self) -> bool {
        self.canary.load().is_some()
    }

    /// Apply a canary operation (a prepared generation of another seam is
    /// refused and logged).
    pub fn canary(&self, op: CanaryOp) {
        match op {
            CanaryOp::Start(prepared, percent) => match prepared.downcast::<Generation<S>>() {
                Ok(g) => self.canary.store(Some(Arc::new(Canary { generation: Arc::new(*g), percent }))),
                Err(_) => tracing::error!(plugin = %self.name, "internal: a canary prepared a generation of another seam; not started"),
            },
            CanaryOp::Promote => {
                if let Some(c) = self.canary.swap(None) {
                    self.generation.store(c.generation.clone());
                }
            }
            CanaryOp::End => self.canary.store(None),
        }
    }

    /// The next version, with this one's state carried over; nothing
    /// changes until [`Self::commit`].
    pub async fn next(&self, plugin: Arc<LoadedPlugin>) -> Result<Generation<S>, Error> {
        let state = self.generation.load().snapshot().await;
        Generation::start(plugin, state).await
    }

    /// Serve every call that starts from now on with `next`.
    pub fn commit(&self, next: Generation<S>) {
        self.generation.store(Arc::new(next));
    }

    /// Log a failed call and say whether to fall back (and count it).
    pub fn fell_back(&self, hook: &'static str, e: &Error) -> bool {
        let fallback = self.on_error == OnError::Fallback;
        super::faults::log_fault(&self.name, hook, e, fallback);
        if fallback {
            metrics().plugin_fallbacks.with_label_values(&[self.name.as_str(), hook]).inc();
        }
        fallback
    }
}

/// Something running a plugin that a swap must move to the new version:
/// an upstream's lb, the SQL router, a route's session strategy.
#[async_trait::async_trait]
pub trait SwapTarget: Send + Sync {
    /// Who uses the plugin, for `GET /plugins` (`upstream`, `sql`, `route /cart`).
    fn user(&self) -> String;
    /// Build and prove the next version (configure, restore, one smoke
    /// call); nothing changes yet.
    async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<Box<dyn std::any::Any + Send>, Error>;
    /// Switch to what `prepare` built.
    fn commit(&self, prepared: Box<dyn std::any::Any + Send>);
    /// Start, promote or end a canary version (see [`Hosted::canary`]).
    fn canary(&self, op: CanaryOp);
}

/// Commit a prepared generation of seam `S` into `hosted`.
pub fn commit_any<S: Seam>(hosted: &Hosted<S>, prepared: Box<dyn std::any::Any + Send>) {
    match prepared.downcast::<Generation<S>>() {
        Ok(g) => hosted.commit(*g),
        Err(_) => tracing::error!(plugin = %hosted.name, "internal: a swap prepared a generation of another seam; the old version keeps serving"),
    }
}
