//! Replicated sessions (paper 003, mechanism 2): every attribute lives on
//! every gateway node of `[cluster]`; each write is pushed to all peers, so
//! any node serves any request without a central store, at the price of
//! inter-node traffic that grows with the node count.

use switchyard_sdk::session::stored::{Settings, Stored};
use switchyard_sdk::session::{Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

/// The replicated strategy.
pub struct Replicated(Stored);

/// Defaults under the operator's config.
pub fn defaults() -> serde_json::Value {
    serde_json::json!({ "cookie": "sy_session", "prefix": "session:", "tier": "replicated", "ttl_s": 1800 })
}

impl SessionStrategy for Replicated {
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

switchyard_sdk::export_session!(Replicated);
