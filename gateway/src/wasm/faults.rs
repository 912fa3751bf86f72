//! Plugin fault logging, rate-limited: the first fault of a kind in a
//! plugin's hook is logged at once, repeats within a second are counted and
//! reported in the next line, so a plugin failing every request cannot
//! flood the log.

use crate::error::Error;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most one line per plugin and hook in this interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// Per plugin, hook and kind of fault: when a line last went out, and how
/// many faults were counted since.
static SEEN: Mutex<Option<HashMap<(String, &'static str, &'static str), (Instant, u64)>>> = Mutex::new(None);

/// Log that `plugin`'s `hook` failed with `e` and what `on_error` did,
/// unless a line for the same plugin and hook went out within INTERVAL.
pub fn log_fault(plugin: &str, hook: &'static str, e: &Error, fallback: bool) {
    let now = Instant::now();
    let fault = e.fault.map_or("", |f| f.as_str());
    let suppressed = {
        let mut seen = SEEN.lock();
        let entry = seen.get_or_insert_with(HashMap::new).entry((plugin.to_string(), hook, fault)).or_insert((now - INTERVAL, 0));
        if now.duration_since(entry.0) < INTERVAL {
            entry.1 += 1;
            return;
        }
        let suppressed = entry.1;
        *entry = (now, 0);
        suppressed
    };
    let on_error = if fallback { "fallback" } else { "fail-closed" };
    if suppressed > 0 {
        tracing::error!(plugin, hook, fault, on_error, repeated = suppressed, "{e} (and {suppressed} more {fault} faults of this hook in the last second)");
    } else {
        tracing::error!(plugin, hook, fault, on_error, "{e}");
    }
}
