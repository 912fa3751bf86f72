//! `SqlRouter` backed by a Wasm component: a pool of configured instances
//! per version; hot swap replaces the version atomically.

use super::engine::LoadedPlugin;
use super::host::HostState;
use super::sql_exports as wit;
use crate::config::OnError;
use crate::error::{Error, PluginFault};
use crate::metrics::metrics;
use crate::seams::{ClassicSplit, ConnInfo, Route, SqlRouter, Statement, StatementClass};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::Arc;
use wasmtime::Store;

struct Instance {
    store: Store<HostState>,
    guest: wit::Guest,
}

/// One version of the router with its instance pool.
pub struct RouterGen {
    plugin: Arc<LoadedPlugin>,
    idle: Mutex<Vec<Instance>>,
}

/// A Wasm `sql-router` plugin.
pub struct WasmSqlRouter {
    name: String,
    on_error: OnError,
    generation: ArcSwap<RouterGen>,
}

impl WasmSqlRouter {
    /// Instantiate and configure one instance now, so a wrong world or a
    /// rejected config fails the load with the plugin's own message.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let generation = RouterGen::start(plugin.clone()).await?;
        Ok(Self { name: plugin.spec.name.clone(), on_error: plugin.spec.on_error, generation: ArcSwap::from_pointee(generation) })
    }

    /// Build and prove the next version (one smoke `route`); nothing
    /// changes until [`Self::commit`].
    pub async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<RouterGen, Error> {
        let generation = RouterGen::start(plugin).await?;
        let stmt = Statement { text: "SELECT 1", class: StatementClass::Read, prepare: false };
        let conn = ConnInfo { user: "switchyard-smoke", schema: None, in_transaction: false, autocommit: true, pinned: false, ms_since_last_write: None };
        generation.call(LoadedPlugin::arm_setup, &stmt, &conn).await?;
        Ok(generation)
    }

    pub fn commit(&self, next: RouterGen) {
        self.generation.store(Arc::new(next));
    }
}

impl RouterGen {
    async fn start(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        let first = Self::instantiate(&plugin).await?;
        Ok(Self { plugin, idle: Mutex::new(vec![first]) })
    }

    async fn instantiate(plugin: &LoadedPlugin) -> Result<Instance, Error> {
        let name = &plugin.spec.name;
        let indices = wit::GuestIndices::new(&plugin.pre).map_err(|e| {
            Error::plugin(PluginFault::Load, name, format!("does not export the sql-router-policy world (switchyard:policy/sql-router@0.1.0): {e:#}"))
        })?;
        let mut store = plugin.new_store();
        plugin.arm_setup(&mut store);
        let instance = plugin.pre.instantiate_async(&mut store).await.map_err(|e| plugin.fault(&e, "instantiate"))?;
        let guest = indices.load(&mut store, &instance).map_err(|e| Error::plugin(PluginFault::Load, name, format!("{e:#}")))?;
        plugin.arm_setup(&mut store);
        plugin
            .timed("configure", guest.call_configure(&mut store, &plugin.spec.config_json))
            .await?
            .map_err(|msg| Error::plugin(PluginFault::Config, name, msg))?;
        Ok(Instance { store, guest })
    }

    async fn call(&self, arm: fn(&LoadedPlugin, &mut Store<HostState>), stmt: &Statement<'_>, conn: &ConnInfo<'_>) -> Result<Route, Error> {
        let popped = self.idle.lock().pop();
        let mut inst = match popped {
            Some(i) => i,
            None => Self::instantiate(&self.plugin).await?,
        };
        let s = wit::Statement { text: stmt.text.to_string(), class: to_wit(stmt.class), prepare: stmt.prepare };
        let c = wit::Connection {
            user: conn.user.to_string(),
            schema: conn.schema.map(str::to_string),
            in_transaction: conn.in_transaction,
            autocommit: conn.autocommit,
            pinned: conn.pinned,
            ms_since_last_write: conn.ms_since_last_write,
        };
        let plugin = self.plugin.clone();
        let isolated = self
            .plugin
            .isolated(async move {
                arm(&plugin, &mut inst.store);
                let out = plugin.timed("route", inst.guest.call_route(&mut inst.store, &s, &c)).await;
                (inst, out)
            })
            .await;
        let (mut inst, out) = isolated.ok_or_else(|| Error::plugin(PluginFault::Trap, &self.plugin.spec.name, "route: the plugin pool lost the call"))?;
        let out = out.map_err(|e| LoadedPlugin::with_panic(e, &mut inst.store))?;
        let mut idle = self.idle.lock();
        if idle.len() < self.plugin.spec.limits.instances {
            idle.push(inst);
        }
        Ok(match out {
            wit::Target::Primary => Route::Primary,
            wit::Target::Replica => Route::Replica,
            wit::Target::Group(g) => Route::Group(g),
            wit::Target::Reject(m) => Route::Reject(m),
        })
    }
}

fn to_wit(c: StatementClass) -> wit::StatementClass {
    match c {
        StatementClass::Read => wit::StatementClass::Read,
        StatementClass::Write => wit::StatementClass::Write,
        StatementClass::LockingRead => wit::StatementClass::LockingRead,
        StatementClass::Transaction => wit::StatementClass::Transaction,
        StatementClass::SessionState => wit::StatementClass::SessionState,
        StatementClass::Other => wit::StatementClass::Other,
    }
}

#[async_trait::async_trait]
impl SqlRouter for WasmSqlRouter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn route(&self, stmt: &Statement<'_>, conn: &ConnInfo<'_>) -> Result<Route, Error> {
        let generation = self.generation.load_full();
        match generation.call(LoadedPlugin::arm, stmt, conn).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let fallback = self.on_error == OnError::Fallback;
                super::faults::log_fault(&self.name, "route", &e, fallback);
                if fallback {
                    metrics().plugin_fallbacks.with_label_values(&[self.name.as_str(), "route"]).inc();
                    Ok(ClassicSplit::decide(stmt))
                } else {
                    Err(e)
                }
            }
        }
    }
}
