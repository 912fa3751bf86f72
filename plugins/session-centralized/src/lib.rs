//! Centralized sessions (papers 001 and 003, mechanism 3): every attribute
//! lives in memcached under a signed session id; any gateway node and any
//! backend serves any request. Optional per-session locking serializes
//! concurrent requests of one session.

use switchyard_sdk::session::stored::{Settings, Stored};
use switchyard_sdk::session::{Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

/// The centralized strategy.
pub struct Centralized(Stored);

/// Defaults under the operator's config.
pub fn defaults() -> serde_json::Value {
    serde_json::json!({ "cookie": "sy_session", "prefix": "session:", "tier": "central", "ttl_s": 1800 })
}

impl SessionStrategy for Centralized {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse_over(defaults())?;
        Ok(Self(Stored::new(s)?))
    }

    fn before_request(&mut self, req: &Request) -> Action {
        self.0.before(req)
    }

    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        self.0.after(context, resp)
    }
}

switchyard_sdk::export_session!(Centralized);
