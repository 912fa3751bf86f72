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
