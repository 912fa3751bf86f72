//! The Wasm plugin host: the one `bindgen!`, the engine, instance pools,
//! per-call limits and the host imports.

mod access;
pub mod canary;
mod engine;
mod faults;
mod host;
mod inspect;
mod lb;
mod registry;
mod seam;
mod session;
mod sql;
mod watch;

pub use access::WasmAccess;
pub use engine::{Engine, LoadedPlugin, World};
pub use host::{HostState, PluginShared};
pub use inspect::report as inspect;
pub use lb::{LbUser, WasmLb};
pub use seam::{CanaryOp, SwapTarget};
pub use session::WasmSession;
pub use registry::{sha256_hex, PluginSlot, Plugins, Slots, Staged, Version};
pub use sql::WasmSqlRouter;
pub use watch::{reload_if_changed, PluginWatcher};

mod bindings {
    wasmtime::component::bindgen!({
        world: "host",
        path: "../wit",
        // Calls run on a fiber (`call_async`), so an import that waits —
        // WASI's stderr flush today, store I/O in later seams — yields to
        // the Pingora worker instead of blocking its thread.
        exports: { default: async },
        // A store call suspends the plugin while memcached or MariaDB answers.
        imports: { "switchyard:policy/store": async },
        with: {
            "switchyard:policy/types.request": super::host::RequestRef,
        },
    });
}

/// Generated types the rest of the host uses, and nothing else.
pub(crate) use bindings::exports::switchyard::policy::access as access_exports;
pub(crate) use bindings::exports::switchyard::policy::lb as lb_exports;
pub(crate) use bindings::exports::switchyard::policy::lb_state as lb_state_exports;
pub(crate) use bindings::exports::switchyard::policy::session as session_exports;
pub(crate) use bindings::exports::switchyard::policy::sql_router as sql_exports;
pub(crate) use bindings::switchyard::policy::{clock, log, metrics, shared, store, tokens, types};

/// Prove a plugin nobody uses yet: instantiate and configure it as its seam.
pub(crate) async fn prove(plugin: std::sync::Arc<LoadedPlugin>) -> Result<(), crate::error::Error> {
    match plugin.world {
        World::Lb | World::LbStateful => seam::Generation::<lb::LbSeam>::start(plugin, None).await.map(drop),
        World::SqlRouter => seam::Generation::<sql::SqlSeam>::start(plugin, None).await.map(drop),
        World::Session => seam::Generation::<session::SessionSeam>::start(plugin, None).await.map(drop),
        World::Access => seam::Generation::<access::AccessSeam>::start(plugin, None).await.map(drop),
    }
}
