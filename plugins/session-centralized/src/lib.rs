//! Centralized sessions (papers 001 and 003, mechanism 3): every attribute
//! lives in memcached under a signed session id; any gateway node and any
//! backend serves any request. Optional per-session locking serializes
//! concurrent requests of one session.

use switchyard_sdk::session::stored::{Defaults, Strategy};

/// The centralized strategy's defaults, under the operator's config.
pub struct Centralized;

impl Defaults for Centralized {
    fn defaults() -> serde_json::Value {
        serde_json::json!({ "cookie": "sy_session", "prefix": "session:", "tier": "central", "ttl_s": 1800 })
    }
}

switchyard_sdk::export_session!(Strategy<Centralized>);
