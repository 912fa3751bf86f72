//! Host services: logging, metrics, clocks and state shared by all instances.
//!
//! Instance globals are per instance (the gateway runs a pool of instances),
//! so state that must be shared across the gateway goes through [`shared`].

use crate::bindings::host::switchyard::policy as wit;

/// Log a message into the gateway's log, tagged with the plugin name.
pub fn log_info(message: &str) {
    wit::log::log(wit::log::Level::Info, message);
}

/// Log a warning.
pub fn log_warn(message: &str) {
    wit::log::log(wit::log::Level::Warn, message);
}

/// Log an error.
pub fn log_error(message: &str) {
    wit::log::log(wit::log::Level::Error, message);
}

/// Hand a panic's message to the gateway before the instance traps, so
/// the fault it logs says what went wrong (the trap alone does not). The
/// export macros install it on `configure`.
#[doc(hidden)]
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| wit::log::log(wit::log::Level::Error, &format!("{PANIC_PREFIX}{info}"))));
    });
}

/// How the gateway recognises a panic report among log lines.
#[doc(hidden)]
pub const PANIC_PREFIX: &str = "panic: ";

/// Add to a plugin counter; it shows in `/metrics` with the plugin's name.
pub fn counter_add(name: &str, delta: u64) {
    wit::metrics::counter_add(name, delta);
}

/// Set a plugin gauge.
pub fn gauge_set(name: &str, value: f64) {
    wit::metrics::gauge_set(name, value);
}

/// Wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    wit::clock::now_ms()
}

/// Monotonic nanoseconds, for intervals.
pub fn monotonic_ns() -> u64 {
    wit::clock::monotonic_ns()
}

/// 64 random bits from the host.
pub fn random_u64() -> u64 {
    wit::clock::random_u64()
}

/// State shared by every instance of this plugin.
pub mod shared {
    use super::wit;

    /// Atomically add to a shared counter and return the new value.
    pub fn counter_add(key: &str, delta: i64) -> i64 {
        wit::shared::counter_add(key, delta)
    }

    /// Read a shared value.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        wit::shared::kv_get(key)
    }

    /// Write a shared value; empty deletes.
    pub fn set(key: &str, value: &[u8]) {
        wit::shared::kv_set(key, value)
    }
}
