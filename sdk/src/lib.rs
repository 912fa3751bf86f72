//! Switchyard SDK: write gateway policies as WebAssembly components.
//!
//! A policy is a plain Rust type that implements one trait per seam and is
//! exported with one macro. The SDK hides `wit-bindgen` entirely.
//!
//! ```no_run
//! use switchyard_sdk::lb::{Backend, LoadBalancer, Request, LiveStat};
//! use switchyard_sdk::Config;
//!
//! #[derive(Default)]
//! struct RoundRobin { next: usize }
//!
//! impl LoadBalancer for RoundRobin {
//!     fn configure(_config: &Config) -> Result<Self, String> { Ok(Self::default()) }
//!     fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
//!         let pick = switchyard_sdk::lb::next_healthy(backends, self.next)?;
//!         self.next = pick + 1;
//!         Some(pick)
//!     }
//! }
//!
//! switchyard_sdk::export_lb!(RoundRobin);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! file in `target/wasm32-wasip2/release/` is the component the gateway loads.
#![warn(missing_docs)]

/// The heap of a plugin built with the `talc` feature (on by default):
/// freed small blocks kept by size class, in front of Talc.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: heap::Classes<talc::wasm::WasmDynamicTalc> = heap::Classes::new(talc::wasm::new_wasm_dynamic_allocator());

#[cfg(any(test, all(feature = "talc", target_family = "wasm", not(target_feature = "atomics"))))]
mod heap;

#[cfg(feature = "access")]
pub mod access;
pub mod config;
pub mod host;
#[cfg(feature = "lb")]
pub mod lb;
pub mod rand;
#[cfg(feature = "session")]
pub mod session;
#[cfg(feature = "sql")]
pub mod sql;
pub mod state;
pub mod store;

pub use config::Config;

/// Generated bindings. Plugin code should not need them; they are public so
/// the export macros can reach them.
#[doc(hidden)]
///
/// A component exports exactly one world, so each seam's bindings sit
/// behind a cargo feature (`lb`, the default, or `sql`): a crate that bound
/// both worlds would have to export both.
pub mod bindings {
    /// The host imports every seam shares.
    pub mod host {
        wit_bindgen::generate!({
            world: "imports",
            path: "../wit",
        });
    }

    /// Bindings of the `lb-policy-stateful` world (`lb` plus `lb-state`;
    /// a policy without state answers an empty snapshot).
    #[cfg(feature = "lb")]
    pub mod lb {
        wit_bindgen::generate!({
            world: "lb-policy-stateful",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_lb_policy",
            default_bindings_module: "switchyard_sdk::bindings::lb",
            with: {
                "switchyard:policy/log@0.1.0": crate::bindings::host::switchyard::policy::log,
                "switchyard:policy/metrics@0.1.0": crate::bindings::host::switchyard::policy::metrics,
                "switchyard:policy/clock@0.1.0": crate::bindings::host::switchyard::policy::clock,
                "switchyard:policy/shared@0.1.0": crate::bindings::host::switchyard::policy::shared,
            },
        });
    }

    /// Bindings of the `access-policy` world.
    #[cfg(feature = "access")]
    pub mod access {
        wit_bindgen::generate!({
            world: "access-policy",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_access",
            default_bindings_module: "switchyard_sdk::bindings::access",
            with: {
                "switchyard:policy/log@0.1.0": crate::bindings::host::switchyard::policy::log,
                "switchyard:policy/metrics@0.1.0": crate::bindings::host::switchyard::policy::metrics,
                "switchyard:policy/clock@0.1.0": crate::bindings::host::switchyard::policy::clock,
                "switchyard:policy/shared@0.1.0": crate::bindings::host::switchyard::policy::shared,
                "switchyard:policy/store@0.1.0": crate::bindings::host::switchyard::policy::store,
                "switchyard:policy/tokens@0.1.0": crate::bindings::host::switchyard::policy::tokens,
            },
        });
    }

    /// Bindings of the `session-policy` world.
    #[cfg(feature = "session")]
    pub mod session {
        wit_bindgen::generate!({
            world: "session-policy",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_session",
            default_bindings_module: "switchyard_sdk::bindings::session",
            with: {
                "switchyard:policy/log@0.1.0": crate::bindings::host::switchyard::policy::log,
                "switchyard:policy/metrics@0.1.0": crate::bindings::host::switchyard::policy::metrics,
                "switchyard:policy/clock@0.1.0": crate::bindings::host::switchyard::policy::clock,
                "switchyard:policy/shared@0.1.0": crate::bindings::host::switchyard::policy::shared,
                "switchyard:policy/store@0.1.0": crate::bindings::host::switchyard::policy::store,
                "switchyard:policy/tokens@0.1.0": crate::bindings::host::switchyard::policy::tokens,
            },
        });
    }

    /// Bindings of the `sql-router-policy` world.
    #[cfg(feature = "sql")]
    pub mod sql {
        wit_bindgen::generate!({
            world: "sql-router-policy",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_sql_router",
            default_bindings_module: "switchyard_sdk::bindings::sql",
            additional_derives: [PartialEq],
            with: {
                "switchyard:policy/log@0.1.0": crate::bindings::host::switchyard::policy::log,
                "switchyard:policy/metrics@0.1.0": crate::bindings::host::switchyard::policy::metrics,
                "switchyard:policy/clock@0.1.0": crate::bindings::host::switchyard::policy::clock,
                "switchyard:policy/shared@0.1.0": crate::bindings::host::switchyard::policy::shared,
            },
        });
    }
}

#[doc(hidden)]
pub use wit_bindgen;
