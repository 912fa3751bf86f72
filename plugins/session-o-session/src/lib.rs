//! O-Session (paper 002): the message later pages need is stored under a
//! passport id in a key-value store (memcached by default, MariaDB with
//! `tier = "durable"` where messages must survive a memcached restart).
//! The signed passport travels in a cookie or the `switchyard-passport`
//! header, so an offline client keeps it; the gateway holds nothing per
//! user, and a restart of the gateway or the backends loses nothing.

use switchyard_sdk::session::stored::{Defaults, Settings, Stored, Strategy};

/// The O-Session strategy's defaults: passports live for a long exam.
pub struct OSession;

impl Defaults for OSession {
    fn defaults() -> serde_json::Value {
        serde_json::json!({
            "cookie": "sy_passport",
            "header": "switchyard-passport",
            "prefix": "passport:",
            "tier": "central",
            "ttl_s": 4 * 3600,
        })
    }

    fn build(s: Settings) -> Result<Stored, String> {
        if s.lock {
            return Err("lock: O-Session holds no per-user locks (messages are written by one page at a time)".into());
        }
        Stored::new(s)
    }
}

switchyard_sdk::export_session!(Strategy<OSession>);
