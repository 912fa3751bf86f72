//! Centralized-dynamic sessions (paper 003's improved mechanism): a
//! session's static part (the keys listed in `static_keys`: user name,
//! system parameters) is replicated to every gateway node and re-broadcast
//! only when it changes; the dynamic part (cart, forms) lives in memcached
//! and moves point to point. A request sees both parts merged.
//!
//! It reads the same memcached record as `centralized` (`prefix` +
//! id in `tier`), so a hot swap from centralized keeps every session: the
//! first write moves the static keys to their own tier.

use switchyard_sdk::session::stored::{Defaults, Settings, Stored, Strategy};

/// The centralized-dynamic strategy's defaults.
pub struct CentralizedDynamic;

impl Defaults for CentralizedDynamic {
    fn defaults() -> serde_json::Value {
        serde_json::json!({
            "cookie": "sy_session",
            "prefix": "session:",
            "tier": "central",
            "ttl_s": 1800,
            "static_keys": ["user"],
            "static_tier": "replicated",
        })
    }

    fn build(s: Settings) -> Result<Stored, String> {
        Stored::new(s)?.split()
    }
}

switchyard_sdk::export_session!(Strategy<CentralizedDynamic>);
