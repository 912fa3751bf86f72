//! One wasmtime engine with an epoch ticker; plugins compile once at load.

use super::host::{HostState, PluginShared};
use crate::config::PluginSpec;
use crate::error::{Error, PluginFault};
use crate::metrics::metrics;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};

/// Epoch tick: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Least deadline of setup calls (see `LoadedPlugin::arm_setup`).
pub const SETUP_DEADLINE_MS: u64 = 1000;

/// The shared wasmtime engine.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
}

impl Engine {
    /// Build the engine and start the thread that advances its epoch.
    pub fn new() -> Result<Self, Error> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        // Compile on one thread: a hot swap under load must leave the other
        // cores to the proxy (measured: parallel compiles tripled p99).
        cfg.parallel_compilation(false);
        let inner = wasmtime::Engine::new(&cfg).map_err(|e| Error::internal(format!("wasm engine: {e}")))?;
        let weak = inner.weak();
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| Error::internal(format!("epoch thread: {e}")))?;
        Ok(Self { inner })
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
        Ok(Arc::new(LoadedPlugin { spec: spec.clone(), engine: self.clone(), pre, shared, world }))
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
}

const LB_EXPORT: &str = "switchyard:policy/lb@0.1.0";
const LB_STATE_EXPORT: &str = "switchyard:policy/lb-state@0.1.0";
const SQL_EXPORT: &str = "switchyard:policy/sql-router@0.1.0";

/// The Switchyard worlds a plugin can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `lb-policy`: exports `lb`.
    Lb,
    /// `lb-policy-stateful`: exports `lb` and `lb-state`.
    LbStateful,
    /// `sql-router-policy`: exports `sql-router`.
    SqlRouter,
}

impl World {
    fn of(pre: &InstancePre<HostState>) -> Result<Self, String> {
        match super::lb_exports::GuestIndices::new(pre) {
            Ok(_) if super::lb_state_exports::GuestIndices::new(pre).is_ok() => Ok(Self::LbStateful),
            Ok(_) => Ok(Self::Lb),
            Err(_) if super::sql_exports::GuestIndices::new(pre).is_ok() => Ok(Self::SqlRouter),
            Err(e) => Err(format!(
                "exports no Switchyard world: neither the lb-policy world (switchyard:policy/lb@0.1.0) nor the sql-router-policy world (switchyard:policy/sql-router@0.1.0): {e:#}"
            )),
        }
    }

    /// World names a component with these export names satisfies, by name
    /// only (loading also checks the function types).
    pub fn from_exports<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'static str> {
        let names: Vec<&str> = names.collect();
        let has = |n: &str| names.contains(&n);
        match (has(LB_EXPORT), has(LB_STATE_EXPORT)) {
            (true, true) => vec![Self::LbStateful.name(), Self::Lb.name()],
            (true, false) => vec![Self::Lb.name()],
            _ if has(SQL_EXPORT) => vec![Self::SqlRouter.name()],
            _ => Vec::new(),
        }
    }

    /// The WIT world name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lb => "lb-policy",
            Self::LbStateful => "lb-policy-stateful",
            Self::SqlRouter => "sql-router-policy",
        }
    }

    /// The seam it plugs into; a swap must keep the seam.
    pub fn seam(self) -> &'static str {
        match self {
            Self::Lb | Self::LbStateful => "lb",
            Self::SqlRouter => "sql",
        }
    }
}

impl LoadedPlugin {
    /// A fresh store with this plugin's limits.
    pub(crate) fn new_store(&self) -> wasmtime::Store<HostState> {
        let mut store = wasmtime::Store::new(self.engine.raw(), HostState::new(&self.spec, self.shared.clone()));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }

    /// Arm the deadline for instantiation, `configure`, `restore` and swap
    /// smoke calls: off the request path, so a host busy enough to preempt
    /// the call for a few ms does not fail a load; a loop still ends.
    pub(crate) fn arm_setup(&self, store: &mut wasmtime::Store<HostState>) {
        let ms = self.spec.limits.deadline_ms.max(SETUP_DEADLINE_MS);
        store.set_epoch_deadline(ms.div_ceil(TICK.as_millis() as u64) + 1);
    }

    /// Arm the deadline for the next call.
    pub(crate) fn arm(&self, store: &mut wasmtime::Store<HostState>) {
        let ticks = self.spec.limits.deadline_ms.div_ceil(TICK.as_millis() as u64).max(1);
        // +1: the current tick may be about to end.
        store.set_epoch_deadline(ticks + 1);
    }

    /// Await one guest call: time it under `hook` and turn a failure into
    /// a typed, counted fault. Arm the store's deadline first.
    pub(crate) async fn timed<T>(&self, hook: &str, call: impl std::future::Future<Output = wasmtime::Result<T>>) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let out = call.await;
        metrics().plugin_call_seconds.with_label_values(&[self.spec.name.as_str(), hook]).observe(started.elapsed().as_secs_f64());
        out.map_err(|e| self.fault(&e, hook))
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
            _ => format!("{hook}: {}", format!("{err:#}").lines().next().unwrap_or("trap")),
        };
        Error::plugin(fault, &self.spec.name, detail)
    }
}
