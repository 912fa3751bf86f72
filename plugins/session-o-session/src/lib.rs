//! O-Session (paper 002): the message later pages need is stored under a
//! passport id in a key-value store (memcached by default, MariaDB with
//! `tier = "durable"` where messages must survive a memcached restart).
//! The signed passport travels in a cookie or the `switchyard-passport`
//! header, so an offline client keeps it; the gateway holds nothing per
//! user, and a restart of the gateway or the backends loses nothing.

use switchyard_sdk::session::stored::{Settings, Stored};
use switchyard_sdk::session::{Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

/// The O-Session strategy.
pub struct OSession(Stored);

/// Defaults under the operator's config: passports live for a long exam.
pub fn defaults() -> serde_json::Value {
    serde_json::json!({
        "cookie": "sy_passport",
        "header": "switchyard-passport",
        "prefix": "passport:",
        "tier": "central",
        "ttl_s": 4 * 3600,
    })
}

impl SessionStrategy for OSession {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse_over(defaults())?;
        if s.lock {
            return Err("lock: O-Session holds no per-user locks (messages are written by one page at a time)".into());
        }
        Ok(Self(Stored::new(s)?))
    }

    fn before_request(&mut self, req: &Request) -> Action {
        self.0.before(req)
    }

    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        self.0.after(context, resp)
    }
}

switchyard_sdk::export_session!(OSession);
