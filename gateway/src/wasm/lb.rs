//! `LbPolicy` backed by a Wasm component: a pool of long-lived instances,
//! the backend set pushed when it changes, compact stats per call.

use super::engine::LoadedPlugin;
use super::host::{HostState, RequestRef};
use super::{lb_exports, types};
use crate::config::OnError;
use crate::error::{Error, PluginFault};
use crate::seams::{LbError, LbPolicy, RequestView, RoundRobin};
use crate::upstream::{LiveStat, Upstream};
use parking_lot::Mutex;
use std::sync::Arc;
use wasmtime::Store;

/// One live instance with the backend-set version it last saw.
struct Instance {
    store: Store<HostState>,
    guest: lb_exports::Guest,
    seen_version: u64,
    live: Vec<types::LiveStat>,
}

/// A Wasm lb plugin serving one upstream.
pub struct WasmLb {
    plugin: Arc<LoadedPlugin>,
    needs_live: bool,
    idle: Mutex<Vec<Instance>>,
    fallback: RoundRobin,
}

impl WasmLb {
    /// Instantiate and configure one instance now, so a bad plugin or a
    /// rejected config fails the load with the plugin's own message.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let (first, needs) = instantiate(&plugin).await?;
        Ok(Self {
            needs_live: needs.contains(lb_exports::Needs::LIVE_STATS),
            plugin,
            idle: Mutex::new(vec![first]),
            fallback: RoundRobin::default(),
        })
    }

    async fn checkout(&self) -> Result<Instance, Error> {
        if let Some(i) = self.idle.lock().pop() {
            return Ok(i);
        }
        Ok(instantiate(&self.plugin).await?.0)
    }

    fn checkin(&self, inst: Instance) {
        let mut idle = self.idle.lock();
        if idle.len() < self.plugin.spec.limits.instances {
            idle.push(inst);
        }
    }

    /// One decision in Wasm. A failed instance is dropped, never reused.
    async fn call(&self, req: &Arc<RequestView>, upstream: &Upstream) -> Result<Result<usize, String>, Error> {
        let mut inst = self.checkout().await?;
        match self.call_on(&mut inst, req, upstream).await {
            Ok(r) => {
                self.checkin(inst);
                match r {
                    Ok(i) => self.check_index(i, upstream).map(Ok),
                    Err(msg) => Ok(Err(msg)),
                }
            }
            Err(e) => Err(self.plugin.classify(&e)),
        }
    }

    async fn call_on(&self, inst: &mut Instance, req: &RequestRef, upstream: &Upstream) -> wasmtime::Result<Result<u32, String>> {
        let version = upstream.version();
        if inst.seen_version != version {
            let set: Vec<types::Backend> = upstream
                .backends()
                .iter()
                .map(|b| types::Backend { address: b.address.clone(), weight: b.weight, healthy: b.is_healthy() })
                .collect();
            self.plugin.arm(&mut inst.store);
            inst.guest.call_set_backends(&mut inst.store, &set).await?;
            inst.seen_version = version;
        }
        inst.live.clear();
        if self.needs_live {
            inst.live.extend(upstream.backends().iter().map(|b| to_wit(b.stats.live())));
        }
        let handle = inst.store.data_mut().lend(req)?;
        let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
        self.plugin.arm(&mut inst.store);
        let out = inst.guest.call_select(&mut inst.store, borrowed, &inst.live).await;
        inst.store.data_mut().table.delete(handle)?;
        out
    }

    fn check_index(&self, i: u32, upstream: &Upstream) -> Result<usize, Error> {
        let n = upstream.backends().len();
        if (i as usize) < n {
            Ok(i as usize)
        } else {
            Err(Error::plugin(PluginFault::BadReturn, &self.plugin.spec.name, format!("select returned index {i}, the upstream has {n} backends")))
        }
    }
}

fn to_wit(s: LiveStat) -> types::LiveStat {
    types::LiveStat { active: s.active, ewma_us: s.ewma_us, age_ms: s.age_ms, error_permille: s.error_permille }
}

async fn instantiate(plugin: &LoadedPlugin) -> Result<(Instance, lb_exports::Needs), Error> {
    let name = &plugin.spec.name;
    let indices = lb_exports::GuestIndices::new(&plugin.pre).map_err(|e| {
        Error::plugin(PluginFault::Load, name, format!("does not export the lb-policy world (switchyard:policy/lb@0.1.0): {e:#}"))
    })?;
    let mut store = plugin.new_store();
    plugin.arm(&mut store);
    let instance = plugin.pre.instantiate_async(&mut store).await.map_err(|e| plugin.classify(&e))?;
    let guest = indices.load(&mut store, &instance).map_err(|e| Error::plugin(PluginFault::Load, name, format!("{e:#}")))?;
    plugin.arm(&mut store);
    let needs = guest
        .call_configure(&mut store, &plugin.spec.config_json)
        .await
        .map_err(|e| plugin.classify(&e))?
        .map_err(|msg| Error::plugin(PluginFault::Config, name, msg))?;
    Ok((Instance { store, guest, seen_version: 0, live: Vec::new() }, needs))
}

#[async_trait::async_trait]
impl LbPolicy for WasmLb {
    fn name(&self) -> &str {
        &self.plugin.spec.name
    }

    async fn select(&self, req: &Arc<RequestView>, upstream: &Upstream) -> Result<usize, LbError> {
        match self.call(req, upstream).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(msg)) => Err(LbError::NoBackend(format!("plugin {:?}: {msg}", self.plugin.spec.name))),
            Err(e) => {
                let fallback = self.plugin.spec.on_error == OnError::Fallback;
                tracing::error!(plugin = %self.plugin.spec.name, fault = e.fault.map_or("", |f| f.as_str()), on_error = if fallback { "fallback" } else { "fail-closed" }, "{e}");
                if fallback {
                    self.fallback.select(req, upstream).await
                } else {
                    Err(LbError::Plugin(e))
                }
            }
        }
    }
}
