//! Centralized-dynamic sessions (paper 003's improved mechanism): a
//! session's static part (the keys listed in `static_keys`: user name,
//! system parameters) is replicated to every gateway node and re-broadcast
//! only when it changes; the dynamic part (cart, forms) lives in memcached
//! and moves point to point. A request sees both parts merged.
//!
//! It reads the same memcached record as `centralized` (`prefix` +
//! id in `tier`), so a hot swap from centralized keeps every session: the
//! first write moves the static keys to their own tier.

use switchyard_sdk::session::stored::{Settings, Stored};
use switchyard_sdk::session::{Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

/// The centralized-dynamic strategy.
pub struct CentralizedDynamic(Stored);

/// Defaults under the operator's config.
pub fn defaults() -> serde_json::Value {
    serde_json::json!({
        "cookie": "sy_session",
        "prefix": "session:",
        "tier": "central",
        "ttl_s": 1800,
        "static_keys": ["user"],
        "static_tier": "replicated",
    })
}

impl SessionStrategy for CentralizedDynamic {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse_over(defaults())?;
        Ok(Self(Stored::new(s)?.split()?))
    }

    fn before_request(&mut self, req: &Request) -> Action {
        self.0.before(req)
    }

    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        self.0.after(context, resp)
    }
}

switchyard_sdk::export_session!(CentralizedDynamic);
