//! The Wasm plugin host: the one `bindgen!`, the engine, instance pools,
//! per-call limits and the host imports.

mod access;
pub mod canary;
mod engine;
mod faults;
mod host;
mod inspect;
mod lb;
mod memo;
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
pub use registry::{decisions, sha256_hex, Decided, PluginSlot, Plugins, Slots, Staged, Version};
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

/// Every seam a plugin can plug into, in the order a component's exports
/// are matched against them (the engine names none of them).
pub(crate) static SEAMS: &[seam::SeamKind] =
    &[seam::SeamKind::of::<lb::LbSeam>(), seam::SeamKind::of::<sql::SqlSeam>(), seam::SeamKind::of::<session::SessionSeam>(), seam::SeamKind::of::<access::AccessSeam>()];

/// Prove a plugin nobody uses yet: instantiate and configure it as its seam.
pub(crate) async fn prove(plugin: std::sync::Arc<LoadedPlugin>) -> Result<(), crate::error::Error> {
    plugin.world.prove(plugin.clone()).await
}
