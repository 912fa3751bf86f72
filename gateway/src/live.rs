//! The part of the running config a reload replaces in one step: routes,
//! upstreams and the plugin users they hold ([`Routing`]). A request loads
//! the current generation once; a reload builds the next one beside it,
//! then swaps, and requests in flight finish on the one they started on.

use crate::access::{AccessHost, RouteGate};
use crate::config::{PluginSpec, ValidConfig};
use crate::error::Error;
use crate::proxy::{route_label, Router};
use crate::seams::{LbPolicy, RoundRobin, SessionPolicy};
use crate::session::Stores;
use crate::upstream::Upstream;
use crate::wasm::{LbUser, PluginSlot, Slots, SwapTarget, WasmAccess, WasmLb, WasmSession};
use arc_swap::ArcSwap;
use pingora::server::ShutdownWatch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An upstream's lb policy, kept across reloads while the upstream keeps
/// its name and its plugin (round robin positions, learned latencies).
#[derive(Clone)]
struct Lb {
    slot: Option<Arc<PluginSlot>>,
    policy: Arc<dyn LbPolicy>,
    wasm: Option<Arc<WasmLb>>,
}

/// One generation of routes and upstreams.
pub struct Routing {
    /// 1 at start, one more per applied reload.
    pub number: u64,
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
    lbs: BTreeMap<String, Lb>,
    /// What this generation runs on plugins; enlisted on their slots while
    /// it serves, so a swap moves them too.
    users: Vec<(Arc<PluginSlot>, Arc<dyn SwapTarget>)>,
}

impl Routing {
    /// Build every upstream, session strategy and access check of `cfg`
    /// from `slots`, carrying over what `previous` had for upstreams and
    /// backends that stay. Every error found is returned.
    pub async fn build(cfg: &ValidConfig, slots: &Slots, stores: &Arc<Stores>, previous: Option<&Routing>) -> Result<Self, Vec<Error>> {
        let mut b = Builder { slots, errors: Vec::new(), users: Vec::new() };
        let (upstreams, lbs) = b.upstreams(cfg, previous).await;
        let sessions = b.sessions(cfg).await;
        let gates = b.gates(cfg, stores).await;
        if !b.errors.is_empty() {
            return Err(b.errors);
        }
        Ok(Self {
            number: previous.map_or(1, |p| p.number + 1),
            router: Router::new(&cfg.routes, &upstreams, &sessions, &gates),
            upstreams,
            lbs,
            users: b.users,
        })
    }

    /// The users this generation runs on `slot`.
    pub fn users_of(&self, slot: &Arc<PluginSlot>) -> Vec<Arc<dyn SwapTarget>> {
        self.users.iter().filter(|(s, _)| Arc::ptr_eq(s, slot)).map(|(_, u)| u.clone()).collect()
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    fn enlist(&self) {
        for (slot, user) in &self.users {
            slot.add_user(user.clone());
        }
    }

    fn retire(&self) {
        for (slot, user) in &self.users {
            slot.remove_users(std::slice::from_ref(user));
        }
    }
}

/// One build's shared state: where plugins come from, what went wrong,
/// which users it created.
struct Builder<'a> {
    slots: &'a Slots,
    errors: Vec<Error>,
    users: Vec<(Arc<PluginSlot>, Arc<dyn SwapTarget>)>,
}

impl Builder<'_> {
    /// The slot a section names; `None` when it failed to load (reported already).
    fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.get(name).cloned()
    }

    async fn upstreams(&mut self, cfg: &ValidConfig, previous: Option<&Routing>) -> (Vec<Arc<Upstream>>, BTreeMap<String, Lb>) {
        let mut upstreams = Vec::new();
        let mut lbs = BTreeMap::new();
        for u in &cfg.upstreams {
            let slot = u.lb.as_deref().map(|n| self.slot(n));
            let kept = previous.and_then(|p| p.lbs.get(&u.name)).filter(|lb| match (&lb.slot, &slot) {
                (None, None) => true,
                (Some(a), Some(Some(b))) => Arc::ptr_eq(a, b),
                _ => false,
            });
            let lb = match (kept, slot) {
                (Some(lb), _) => lb.clone(),
                (None, None) => Lb { slot: None, policy: Arc::new(RoundRobin::default()), wasm: None },
                (None, Some(None)) => continue,
                (None, Some(Some(slot))) => match WasmLb::new(slot.current().plugin.clone()).await {
                    Ok(w) => {
                        let w = Arc::new(w);
                        Lb { slot: Some(slot), policy: w.clone(), wasm: Some(w) }
                    }
                    Err(e) => {
                        self.errors.push(locate(e, &slot.spec));
                        continue;
                    }
                },
            };
            let upstream = Arc::new(Upstream::carrying(u, lb.policy.clone(), previous.and_then(|p| p.upstream(&u.name)).map(|u| &**u)));
            if let (Some(slot), Some(w)) = (&lb.slot, &lb.wasm) {
                self.users.push((slot.clone(), Arc::new(LbUser { upstream: upstream.clone(), lb: w.clone() })));
            }
            lbs.insert(u.name.clone(), lb);
            upstreams.push(upstream);
        }
        (upstreams, lbs)
    }

    /// A plugin user built on `slot`: enlisted with this generation, or
    /// its error kept (at its config line).
    fn adopt<T: SwapTarget + 'static>(&mut self, slot: Arc<PluginSlot>, built: Result<T, Error>) -> Option<Arc<T>> {
        match built {
            Ok(user) => {
                let user = Arc::new(user);
                self.users.push((slot, user.clone()));
                Some(user)
            }
            Err(e) => {
                self.errors.push(locate(e, &slot.spec));
                None
            }
        }
    }

    /// Each route's session strategy, parallel to the routes.
    async fn sessions(&mut self, cfg: &ValidConfig) -> Vec<Option<Arc<dyn SessionPolicy>>> {
        let mut sessions = Vec::new();
        for r in &cfg.routes {
            let Some(slot) = r.session.as_deref().and_then(|n| self.slot(n)) else {
                sessions.push(None);
                continue;
            };
            let built = WasmSession::new(slot.current().plugin.clone(), &route_label(r)).await;
            sessions.push(self.adopt(slot, built).map(|s| s as Arc<dyn SessionPolicy>));
        }
        sessions
    }

    /// Each route's access check, parallel to the routes.
    async fn gates(&mut self, cfg: &ValidConfig, stores: &Arc<Stores>) -> Vec<Option<Arc<RouteGate>>> {
        let host = cfg.access.as_ref().map(|a| Arc::new(AccessHost::new(a, stores.clone())));
        let mut gates = Vec::new();
        for r in &cfg.routes {
            let (Some(spec), Some(host)) = (r.access.as_ref(), &host) else {
                gates.push(None);
                continue;
            };
            let Some(slot) = self.slot(&spec.plugin) else {
                gates.push(None);
                continue;
            };
            let built = WasmAccess::new(slot.current().plugin.clone(), &route_label(r)).await;
            gates.push(self.adopt(slot, built).map(|policy| Arc::new(RouteGate { host: host.clone(), policy, spec: spec.clone() })));
        }
        gates
    }
}

/// A plugin's rejection of its config names the line of that config.
pub fn locate(e: Error, spec: &PluginSpec) -> Error {
    match (e.fault, spec.config_line) {
        (Some(crate::error::PluginFault::Config), Some(line)) => Error { message: format!("line {line}: plugins.{}.config: {}", spec.name, e.message), ..e },
        _ => e,
    }
}

/// The routing serving now, and a signal for what restarts per generation
/// (health checks, plugin file watchers).
pub struct Live {
    routing: ArcSwap<Routing>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Live {
    /// Serve `first`, enlisting its plugin users.
    pub fn new(first: Routing) -> Arc<Self> {
        first.enlist();
        let number = first.number;
        Arc::new(Self { routing: ArcSwap::from_pointee(first), changes: tokio::sync::watch::Sender::new(number) })
    }

    /// The generation serving now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// What a request matches in the generation serving now.
    pub fn route(&self, req: &pingora::http::RequestHeader) -> Option<Arc<crate::proxy::Matched>> {
        self.routing.load().router.route(req).cloned()
    }

    /// Serve `next` from now on: its users join their plugins, the
    /// previous generation's leave them.
    pub fn install(&self, next: Routing) {
        next.enlist();
        let number = next.number;
        self.routing.swap(Arc::new(next)).retire();
        self.changed(number);
    }

    /// Restart what runs per generation (the plugin set changed too).
    pub fn changed(&self, number: u64) {
        self.changes.send_replace(number);
    }

    /// Run `start`'s tasks for the current generation, restarting them on
    /// each change, until shutdown.
    pub async fn per_generation(&self, mut shutdown: ShutdownWatch, start: impl Fn(&Routing) -> Vec<tokio::task::JoinHandle<()>>) {
        let mut changes = self.changes.subscribe();
        loop {
            changes.mark_unchanged();
            let tasks = start(&self.routing());
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                r = changes.changed() => r.is_err(),
            };
            tasks.iter().for_each(|t| t.abort());
            if stop {
                return;
            }
        }
    }
}
