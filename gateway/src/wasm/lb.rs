//! `LbPolicy` backed by a Wasm component: a pool of long-lived instances,
//! the backend set pushed when it changes, compact stats per call, and a
//! generation that hot swap replaces atomically.

use super::engine::LoadedPlugin;
use super::host::{HostState, RequestRef};
use super::{lb_exports, lb_state_exports, types};
use crate::config::OnError;
use crate::error::{Error, PluginFault};
use crate::metrics::{metrics, plugin_fault};
use crate::seams::{LbError, LbPolicy, RequestView, RoundRobin};
use crate::upstream::{LiveStat, Upstream};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus::Histogram;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Store;

/// One live instance with the backend-set version it last saw.
struct Instance {
    store: Store<HostState>,
    guest: lb_exports::Guest,
    state: Option<lb_state_exports::Guest>,
    seen_version: u64,
    live: Vec<types::LiveStat>,
}

/// One version of the plugin serving one upstream, with its own pool.
/// Calls hold an `Arc` to it, so a swap lets them finish on this version.
pub struct Generation {
    plugin: Arc<LoadedPlugin>,
    needs_live: bool,
    /// State from the previous version, restored into each new instance.
    restore: Option<Vec<u8>>,
    idle: Mutex<Vec<Instance>>,
    select_seconds: Histogram,
}

/// A Wasm lb plugin serving one upstream.
pub struct WasmLb {
    name: String,
    on_error: OnError,
    generation: ArcSwap<Generation>,
    fallback: RoundRobin,
}

impl WasmLb {
    /// Instantiate and configure one instance now, so a bad plugin or a
    /// rejected config fails the load with the plugin's own message.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let generation = Generation::start(plugin.clone(), None).await?;
        Ok(Self {
            name: plugin.spec.name.clone(),
            on_error: plugin.spec.on_error,
            generation: ArcSwap::from_pointee(generation),
            fallback: RoundRobin::default(),
        })
    }

    /// Build the next generation from `plugin` and prove it on `upstream`:
    /// a fresh instance is configured and makes one smoke `select`, then
    /// the current version's state (if both export `lb-state`) is restored
    /// into a first pooled instance. Nothing changes until [`Self::commit`].
    pub async fn prepare(&self, plugin: Arc<LoadedPlugin>, upstream: &Upstream) -> Result<Generation, Error> {
        let (mut smoke, needs) = Generation::instantiate(&plugin, None).await?;
        let needs_live = needs.contains(lb_exports::Needs::LIVE_STATS);
        let req = Arc::new(RequestView::default());
        let set = smoke.pending_set(upstream, needs_live);
        let answer = select_on(LoadedPlugin::arm_setup, &plugin, &mut smoke, set, &req).await.map_err(|e| plugin.fault(&e, "select"))?;
        if let Ok(i) = answer {
            check_index(&plugin, i, upstream)?;
        }
        let state = self.generation.load().snapshot().await;
        Generation::start(plugin, state).await
    }

    /// Serve every call that starts from now on with `next`.
    pub fn commit(&self, next: Generation) {
        self.generation.store(Arc::new(next));
    }
}

impl Generation {
    /// A generation with one configured (and restored) instance pooled.
    async fn start(plugin: Arc<LoadedPlugin>, restore: Option<Vec<u8>>) -> Result<Self, Error> {
        let (first, needs) = Self::instantiate(&plugin, restore.as_deref()).await?;
        Ok(Self {
            needs_live: needs.contains(lb_exports::Needs::LIVE_STATS),
            select_seconds: metrics().plugin_call_seconds.with_label_values(&[plugin.spec.name.as_str(), "select"]),
            plugin,
            restore,
            idle: Mutex::new(vec![first]),
        })
    }

    async fn instantiate(plugin: &LoadedPlugin, restore: Option<&[u8]>) -> Result<(Instance, lb_exports::Needs), Error> {
        let name = &plugin.spec.name;
        let indices = lb_exports::GuestIndices::new(&plugin.pre).map_err(|e| {
            Error::plugin(PluginFault::Load, name, format!("does not export the lb-policy world (switchyard:policy/lb@0.1.0): {e:#}"))
        })?;
        let state_indices = lb_state_exports::GuestIndices::new(&plugin.pre).ok();
        let mut store = plugin.new_store();
        plugin.arm_setup(&mut store);
        let instance = plugin.pre.instantiate_async(&mut store).await.map_err(|e| plugin.fault(&e, "instantiate"))?;
        let load_err = |e: wasmtime::Error| Error::plugin(PluginFault::Load, name, format!("{e:#}"));
        let guest = indices.load(&mut store, &instance).map_err(load_err)?;
        let state = state_indices.map(|s| s.load(&mut store, &instance)).transpose().map_err(load_err)?;
        plugin.arm_setup(&mut store);
        let needs = plugin
            .timed("configure", guest.call_configure(&mut store, &plugin.spec.config_json))
            .await?
            .map_err(|msg| Error::plugin(PluginFault::Config, name, msg))?;
        if let (Some(bytes), Some(st)) = (restore, &state) {
            plugin.arm_setup(&mut store);
            plugin
                .timed("restore", st.call_restore(&mut store, bytes))
                .await?
                .map_err(|msg| Error::plugin(PluginFault::Config, name, format!("restore rejected the previous version's state: {msg}")))?;
        }
        Ok((Instance { store, guest, state, seen_version: 0, live: Vec::new() }, needs))
    }

    async fn checkout(&self) -> Result<Instance, Error> {
        if let Some(i) = self.idle.lock().pop() {
            return Ok(i);
        }
        Ok(Self::instantiate(&self.plugin, self.restore.as_deref()).await?.0)
    }

    fn checkin(&self, inst: Instance) {
        let mut idle = self.idle.lock();
        if idle.len() < self.plugin.spec.limits.instances {
            idle.push(inst);
        }
    }

    /// The state of one idle instance, for the next version. `None` when
    /// this version keeps none, or every instance is busy.
    async fn snapshot(&self) -> Option<Vec<u8>> {
        let mut inst = self.idle.lock().pop()?;
        if inst.state.is_none() {
            self.checkin(inst);
            return None;
        }
        let st = inst.state.as_ref().expect("checked above");
        self.plugin.arm_setup(&mut inst.store);
        let out = self.plugin.timed("snapshot", st.call_snapshot(&mut inst.store)).await;
        match out {
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

    /// One decision in Wasm, isolated (see `LoadedPlugin::isolated`). A
    /// failed instance is dropped, never reused.
    async fn call(&self, req: &Arc<RequestView>, upstream: &Upstream) -> Result<Result<usize, String>, Error> {
        let mut inst = self.checkout().await?;
        let started = Instant::now();
        let set = inst.pending_set(upstream, self.needs_live);
        let (plugin, req) = (self.plugin.clone(), req.clone());
        let out = self
            .plugin
            .isolated(async move {
                let out = select_on(LoadedPlugin::arm, &plugin, &mut inst, set, &req).await;
                (inst, out)
            })
            .await;
        self.select_seconds.observe(started.elapsed().as_secs_f64());
        let Some((inst, out)) = out else {
            return Err(Error::plugin(PluginFault::Trap, &self.plugin.spec.name, "select: the plugin pool lost the call"));
        };
        match out {
            Ok(r) => {
                // An out-of-range answer is a failure too: that instance is dropped.
                let checked = match r {
                    Ok(i) => check_index(&self.plugin, i, upstream).map(Ok),
                    Err(msg) => Ok(Err(msg)),
                };
                if checked.is_ok() {
                    self.checkin(inst);
                }
                checked
            }
            Err(e) => {
                let mut inst = inst;
                Err(LoadedPlugin::with_panic(self.plugin.fault(&e, "select"), &mut inst.store))
            }
        }
    }
}

/// How a call's deadline is armed: per request, or the setup deadline.
type Arm = fn(&LoadedPlugin, &mut Store<HostState>);

/// A backend set to push before the call, with its version.
type PendingSet = Option<(Vec<types::Backend>, u64)>;

impl Instance {
    /// Read what the call needs from the upstream: the backend set if it
    /// moved since this instance saw it, and the live stats.
    fn pending_set(&mut self, upstream: &Upstream, needs_live: bool) -> PendingSet {
        self.live.clear();
        if needs_live {
            let now = crate::upstream::now_ns();
            self.live.extend(upstream.backends().iter().map(|b| to_wit(b.stats.live_at(now))));
        }
        let version = upstream.version();
        (self.seen_version != version).then(|| {
            let set = upstream
                .backends()
                .iter()
                .map(|b| types::Backend { address: b.address.clone(), weight: b.weight, healthy: b.is_healthy() })
                .collect();
            (set, version)
        })
    }
}

/// Push the backend set if it moved, then ask for one decision.
async fn select_on(arm: Arm, plugin: &LoadedPlugin, inst: &mut Instance, set: PendingSet, req: &RequestRef) -> wasmtime::Result<Result<u32, String>> {
    if let Some((set, version)) = set {
        arm(plugin, &mut inst.store);
        inst.guest.call_set_backends(&mut inst.store, &set).await?;
        inst.seen_version = version;
    }
    let handle = inst.store.data_mut().lend(req)?;
    let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
    arm(plugin, &mut inst.store);
    let out = inst.guest.call_select(&mut inst.store, borrowed, &inst.live).await;
    inst.store.data_mut().table.delete(handle)?;
    out
}

fn check_index(plugin: &LoadedPlugin, i: u32, upstream: &Upstream) -> Result<usize, Error> {
    let n = upstream.backends().len();
    if (i as usize) < n {
        Ok(i as usize)
    } else {
        plugin_fault(&plugin.spec.name, "select", PluginFault::BadReturn);
        Err(Error::plugin(PluginFault::BadReturn, &plugin.spec.name, format!("select returned index {i}, the upstream has {n} backends")))
    }
}

fn to_wit(s: LiveStat) -> types::LiveStat {
    types::LiveStat { active: s.active, ewma_us: s.ewma_us, age_ms: s.age_ms, error_permille: s.error_permille }
}

#[async_trait::async_trait]
impl LbPolicy for WasmLb {
    fn name(&self) -> &str {
        &self.name
    }

    async fn select(&self, req: &Arc<RequestView>, upstream: &Upstream) -> Result<usize, LbError> {
        let generation = self.generation.load_full();
        match generation.call(req, upstream).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(msg)) => Err(LbError::NoBackend(format!("plugin {:?}: {msg}", self.name))),
            Err(e) => {
                let fallback = self.on_error == OnError::Fallback;
                super::faults::log_fault(&self.name, "select", &e, fallback);
                if fallback {
                    metrics().plugin_fallbacks.with_label_values(&[self.name.as_str(), "select"]).inc();
                    self.fallback.select(req, upstream).await
                } else {
                    Err(LbError::Plugin(e))
                }
            }
        }
    }
}
