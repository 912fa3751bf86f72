//! Replicated sessions (paper 003, mechanism 2): every attribute lives on
//! every gateway node of `[cluster]`; each write is pushed to all peers, so
//! any node serves any request without a central store, at the price of
//! inter-node traffic that grows with the node count.

use switchyard_sdk::session::stored::{Defaults, Strategy};

/// The replicated strategy's defaults, under the operator's config.
pub struct Replicated;

impl Defaults for Replicated {
    fn defaults() -> serde_json::Value {
        serde_json::json!({ "cookie": "sy_session", "prefix": "session:", "tier": "replicated", "ttl_s": 1800 })
    }
}

switchyard_sdk::export_session!(Strategy<Replicated>);
