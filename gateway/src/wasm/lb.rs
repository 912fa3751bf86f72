//! `LbPolicy` backed by a Wasm component: the generic pool (`seam.rs`)
//! plus what only this seam does: push the backend set when it changed,
//! pass compact live stats, check the answer is in range.

use super::engine::LoadedPlugin;
use super::host::{HostState, RequestRef};
use super::seam::{self, Arm, CallFuture, Generation, Hosted, Seam, SwapTarget};
use super::{lb_exports, lb_state_exports, types};
use crate::error::{Error, PluginFault};
use crate::metrics::plugin_fault;
use crate::seams::{LbError, LbPolicy, RequestView, RoundRobin};
use crate::upstream::{LiveStat, Upstream};
use std::sync::Arc;
use wasmtime::component::{Instance as WasmInstance, InstancePre};
use wasmtime::Store;

/// The lb seam's exports.
pub struct LbSeam;

/// Per instance: the backend-set version it last saw, and a buffer for
/// the live stats of one call.
#[derive(Default)]
pub struct LbLocal {
    seen_version: u64,
    live: Vec<types::LiveStat>,
}

impl Seam for LbSeam {
    type Guest = (lb_exports::Guest, Option<lb_state_exports::Guest>);
    /// Whether the policy asked for live stats.
    type Setup = bool;
    type Local = LbLocal;
    const SEAM: &'static str = "lb";
    const HOOKS: &'static [&'static str] = &["configure", "set-backends", "select", "snapshot", "restore"];
    const EXPORT: &'static str = "switchyard:policy/lb@0.1.0";

    fn world_of(pre: &InstancePre<HostState>) -> Option<&'static str> {
        super::lb_exports::GuestIndices::new(pre).ok()?;
        Some(if super::lb_state_exports::GuestIndices::new(pre).is_ok() { "lb-policy-stateful" } else { "lb-policy" })
    }

    fn worlds_by_exports(names: &[&str]) -> Vec<&'static str> {
        match (names.contains(&Self::EXPORT), names.contains(&"switchyard:policy/lb-state@0.1.0")) {
            (true, true) => vec!["lb-policy-stateful", "lb-policy"],
            (true, false) => vec!["lb-policy"],
            _ => Vec::new(),
        }
    }

    fn load(pre: &InstancePre<HostState>, store: &mut Store<HostState>, instance: &WasmInstance) -> Result<Self::Guest, String> {
        let indices = lb_exports::GuestIndices::new(pre)
            .map_err(|e| format!("does not export the lb-policy world (switchyard:policy/lb@0.1.0): {e:#}"))?;
        let guest = indices.load(&mut *store, instance).map_err(|e| format!("{e:#}"))?;
        let state = match lb_state_exports::GuestIndices::new(pre) {
            Ok(s) => Some(s.load(&mut *store, instance).map_err(|e| format!("{e:#}"))?),
            Err(_) => None,
        };
        Ok((guest, state))
    }

    fn configure<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, config: &'a str) -> CallFuture<'a, Result<bool, String>> {
        Box::pin(async move { Ok(guest.0.call_configure(store, config).await?.map(|n| n.contains(lb_exports::Needs::LIVE_STATS))) })
    }

    fn restore<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, state: &'a [u8]) -> Option<CallFuture<'a, Result<(), String>>> {
        let st = guest.1.as_ref()?;
        Some(Box::pin(st.call_restore(store, state)))
    }

    fn snapshot<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>) -> Option<CallFuture<'a, Vec<u8>>> {
        let st = guest.1.as_ref()?;
        Some(Box::pin(st.call_snapshot(store)))
    }
}

/// A Wasm lb plugin serving one upstream.
pub struct WasmLb {
    hosted: Hosted<LbSeam>,
    fallback: RoundRobin,
    /// `[plugins.NAME] canary_header`: what a canary splits by, else the
    /// client address.
    canary_header: Option<http::HeaderName>,
}

impl WasmLb {
    /// Instantiate and configure one instance now, so a bad plugin or a
    /// rejected config fails the load with the plugin's own message.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let canary_header = plugin.spec.canary_header.clone();
        Ok(Self { hosted: Hosted::new(plugin).await?, fallback: RoundRobin::default(), canary_header })
    }

    /// Build the next generation from `plugin` and prove it on `upstream`:
    /// a fresh instance is configured and makes one smoke `select`, then
    /// the current version's state (if both export `lb-state`) is restored
    /// into a first pooled instance. Nothing changes until `commit`.
    pub async fn prepare(&self, plugin: Arc<LoadedPlugin>, upstream: &Upstream) -> Result<Generation<LbSeam>, Error> {
        let smoke = Generation::<LbSeam>::start(plugin.clone(), None).await?;
        let req = Arc::new(RequestView::default());
        // No backend fitting the empty request is an answer too; a fault is not.
        let _ = select(&smoke, LoadedPlugin::arm_setup, &req, upstream).await?;
        self.hosted.next(plugin).await
    }
}

/// One decision. A failed or out-of-range answer drops the instance.
async fn select(generation: &Generation<LbSeam>, arm: Arm, req: &Arc<RequestView>, upstream: &Upstream) -> Result<Result<usize, String>, Error> {
    let (plugin, req) = (generation.plugin.clone(), req.clone());
    let needs_live = generation.setup;
    generation
        .call_with(
            "select",
            arm,
            |local| pending_set(local, upstream, needs_live),
            move |inst, set| Box::pin(async move { select_on(arm, &plugin, inst, set, &req).await }),
            |answer| match answer {
                Ok(i) => check_index(&generation.plugin, i, upstream).map(Ok),
                Err(msg) => Ok(Err(msg)),
            },
        )
        .await
}

/// A backend set to push before the call, with its version.
type PendingSet = Option<(Vec<types::Backend>, u64)>;

/// Read what the call needs from the upstream: the backend set if it moved
/// since this instance saw it, and the live stats.
fn pending_set(local: &mut LbLocal, upstream: &Upstream, needs_live: bool) -> PendingSet {
    local.live.clear();
    if needs_live {
        let now = crate::upstream::now_ns();
        local.live.extend(upstream.backends().iter().map(|b| to_wit(b.stats.live_at(now))));
    }
    let version = upstream.version();
    (local.seen_version != version).then(|| {
        let set = upstream
            .backends()
            .iter()
            .map(|b| types::Backend { address: b.address.clone(), weight: b.weight, healthy: b.is_healthy() })
            .collect();
        (set, version)
    })
}

/// Push the backend set if it moved, then ask for one decision.
async fn select_on(arm: Arm, plugin: &LoadedPlugin, inst: &mut seam::Instance<LbSeam>, set: PendingSet, req: &RequestRef) -> wasmtime::Result<Result<u32, String>> {
    let guest = &inst.guest.0;
    if let Some((set, version)) = set {
        let started = std::time::Instant::now();
        guest.call_set_backends(&mut inst.store, &set).await?;
        plugin.call_seconds("set-backends").observe(started.elapsed().as_secs_f64());
        inst.local.seen_version = version;
        arm(plugin, &mut inst.store);
    }
    let handle = inst.store.data_mut().lend(req)?;
    let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
    let out = guest.call_select(&mut inst.store, borrowed, &inst.local.live).await;
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

/// What an lb canary splits requests by.
#[derive(Hash)]
enum SplitKey<'a> {
    Header(&'a [u8]),
    Client(std::net::IpAddr),
}

/// The configured header's value (none: the request is split at random),
/// else the client address.
fn split_key<'a>(header: Option<&http::HeaderName>, req: &'a RequestView) -> Option<SplitKey<'a>> {
    match header {
        Some(h) => req.headers.get(h).map(|v| SplitKey::Header(v.as_bytes())),
        None => req.client_ip.map(SplitKey::Client),
    }
}

fn to_wit(s: LiveStat) -> types::LiveStat {
    types::LiveStat { active: s.active, ewma_us: s.ewma_us, age_ms: s.age_ms, error_permille: s.error_permille }
}

#[async_trait::async_trait]
impl LbPolicy for WasmLb {
    fn name(&self) -> &str {
        &self.hosted.name
    }

    /// Read off the component: a plugin that imports none of the request's
    /// methods cannot read it. The current version decides (swaps change it).
    fn reads_request(&self) -> bool {
        // A canary splits by client address: the view carries it.
        self.hosted.current().plugin.reads_request || self.hosted.has_canary()
    }

    async fn select(&self, req: &Arc<RequestView>, upstream: &Upstream) -> Result<usize, LbError> {
        let (generation, canary) = self.hosted.pick_during(split_key(self.canary_header.as_ref(), req));
        if canary {
            // The first attempt's version (a retry of a keyed request picks it again).
            let _ = req.routed_by.set(generation.plugin.routed.clone());
        }
        match select(&generation, LoadedPlugin::arm, req, upstream).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(msg)) => Err(LbError::NoBackend(format!("plugin {:?}: {msg}", self.hosted.name))),
            Err(e) if self.hosted.fell_back("select", &e) => self.fallback.select(req, upstream).await,
            Err(e) => Err(LbError::Plugin(e)),
        }
    }
}

/// An upstream balancing with a Wasm lb plugin, as a swap sees it.
pub struct LbUser {
    pub upstream: Arc<Upstream>,
    pub lb: Arc<WasmLb>,
}

#[async_trait::async_trait]
impl SwapTarget for LbUser {
    fn user(&self) -> String {
        self.upstream.name().to_string()
    }

    async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<Box<dyn std::any::Any + Send>, Error> {
        let name = plugin.spec.name.clone();
        let next = self.lb.prepare(plugin, &self.upstream).await.map_err(|e| {
            Error::plugin(e.fault.unwrap_or(PluginFault::Load), &name, format!("on upstream {:?}: {}", self.upstream.name(), e.message))
        })?;
        Ok(Box::new(next))
    }

    fn commit(&self, prepared: Box<dyn std::any::Any + Send>) {
        seam::commit_any(&self.lb.hosted, prepared);
    }

    fn canary(&self, op: seam::CanaryOp) {
        self.lb.hosted.canary(op);
    }
}
