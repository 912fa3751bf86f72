//! One wasmtime engine with an epoch ticker; plugins compile once at load.

use super::host::{HostState, PluginShared};
use crate::config::PluginSpec;
use crate::error::{Error, PluginFault};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};

/// Epoch tick: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(1);

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

    /// Compile a plugin file and link it against the host imports. Fails
    /// with a `Load` fault naming what is wrong (not wasm, not a component,
    /// an import the host does not provide).
    pub fn load(&self, spec: &PluginSpec) -> Result<Arc<LoadedPlugin>, Error> {
        let bytes = std::fs::read(&spec.path)
            .map_err(|e| Error::plugin(PluginFault::Load, &spec.name, format!("cannot read {}: {e}", spec.path.display())))?;
        self.load_bytes(spec, &bytes)
    }

    /// As [`Self::load`], from bytes.
    pub fn load_bytes(&self, spec: &PluginSpec, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, Error> {
        let fail = |m: String| Error::plugin(PluginFault::Load, &spec.name, m);
        if !bytes.starts_with(b"\0asm") {
            return Err(fail("not a WebAssembly file".into()));
        }
        let component = Component::from_binary(&self.inner, bytes)
            .map_err(|e| fail(format!("not a valid component (build with --target wasm32-wasip2): {e:#}")))?;
        let linker = self.linker().map_err(|e| fail(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| fail(format!("unsatisfied import: {e:#}")))?;
        Ok(Arc::new(LoadedPlugin {
            spec: spec.clone(),
            engine: self.clone(),
            pre,
            shared: Arc::new(PluginShared::new(&spec.name)),
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
        Ok(linker)
    }
}

/// A compiled, linked plugin: instantiate it as often as needed.
pub struct LoadedPlugin {
    pub spec: PluginSpec,
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub shared: Arc<PluginShared>,
}

impl LoadedPlugin {
    /// A fresh store with this plugin's limits.
    pub(crate) fn new_store(&self) -> wasmtime::Store<HostState> {
        let mut store = wasmtime::Store::new(self.engine.raw(), HostState::new(&self.spec, self.shared.clone()));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }

    /// Arm the deadline for the next call.
    pub(crate) fn arm(&self, store: &mut wasmtime::Store<HostState>) {
        let ticks = self.spec.limits.deadline_ms.div_ceil(TICK.as_millis() as u64).max(1);
        // +1: the current tick may be about to end.
        store.set_epoch_deadline(ticks + 1);
    }

    /// Turn a wasmtime error from a call into a typed plugin fault.
    pub(crate) fn classify(&self, err: &wasmtime::Error) -> Error {
        let fault = match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginFault::Deadline,
            _ if format!("{err:?}").contains("growing memory") => PluginFault::MemoryCap,
            _ => PluginFault::Trap,
        };
        let detail = match fault {
            PluginFault::Deadline => format!("call ran past its {} ms deadline", self.spec.limits.deadline_ms),
            PluginFault::MemoryCap => format!("memory would exceed the {} MiB cap", self.spec.limits.memory_mb),
            _ => format!("{err:#}").lines().next().unwrap_or("trap").to_string(),
        };
        Error::plugin(fault, &self.spec.name, detail)
    }
}
