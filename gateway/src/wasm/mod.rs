//! The Wasm plugin host: the one `bindgen!`, the engine, instance pools,
//! per-call limits and the host imports.

mod engine;
mod host;
mod lb;

pub use engine::{Engine, LoadedPlugin};
pub use host::{HostState, PluginShared};
pub use lb::WasmLb;

mod bindings {
    wasmtime::component::bindgen!({
        world: "host",
        path: "../wit",
        // Calls run on a fiber (`call_async`), so an import that waits —
        // WASI's stderr flush today, store I/O in later seams — yields to
        // the Pingora worker instead of blocking its thread.
        exports: { default: async },
        with: {
            "switchyard:policy/types.request": super::host::RequestRef,
        },
    });
}

/// Generated types the rest of the host uses, and nothing else.
pub(crate) use bindings::exports::switchyard::policy::lb as lb_exports;
pub(crate) use bindings::switchyard::policy::{clock, log, metrics, shared, types};
