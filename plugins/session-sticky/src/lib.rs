//! Sticky sessions, as HAProxy's `cookie SRV insert`: the first response
//! sets a signed cookie naming the backend that served it; later requests
//! go back to that backend while it is healthy. The cookie is signed, so a
//! client cannot steer itself to a backend of its choice. When the pinned
//! backend is down the request moves (the backend's in-memory session is
//! lost), the cookie is rewritten and the move is counted.
//!
//! A request whose cookie is valid with more than half its lifetime left
//! asks for no `after-response` call (`After::UnlessPinned`): served by
//! its pin, there is nothing to write. Past half its lifetime the cookie is
//! signed again, so an active user stays pinned (a sliding expiry). The
//! payload is the backend alone; its age comes from the token's expiry.
//! Until then the forward depends on the cookie alone, so the plugin lets
//! the gateway repeat it (`store.remember`, with nothing read): a pinned
//! user's requests make no call into the plugin at all.

use switchyard_sdk::session::{set_cookie, Action, After, Forward, Header, Request, Response, SessionStrategy};
use switchyard_sdk::store::{self, tokens, Memo};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Cookie naming the backend.
    cookie: String,
    /// Cookie lifetime; signed again once half of it has passed.
    ttl_s: u32,
    /// Add `Secure` to the cookie (clients reach the gateway over TLS).
    secure: bool,
    /// Let the gateway repeat a pinned forward without calling the plugin
    /// (`false`: every request calls it, as before; for comparison).
    memo: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self { cookie: "sy_backend".into(), ttl_s: 3600, secure: false, memo: true }
    }
}

/// The sticky strategy.
pub struct Sticky {
    s: Settings,
}

impl SessionStrategy for Sticky {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.cookie.is_empty() || !s.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("cookie: {:?} is not a cookie name ([A-Za-z0-9_-]+)", s.cookie));
        }
        if s.ttl_s < 2 {
            return Err(format!("ttl_s: {} is too short (at least 2 s: the cookie is renewed at half its lifetime)", s.ttl_s));
        }
        Ok(Self { s })
    }

    fn before_request(&mut self, req: &Request) -> Action {
        let pinned = req.cookie(&self.s.cookie).and_then(|t| Some((String::from_utf8(tokens::verify(&t)?).ok()?, tokens::expires_at(&t)?)));
        let Some((backend, expires)) = pinned else {
            return Action::Forward(Forward { pin: None, headers: Vec::new(), context: Vec::new(), after: After::Always });
        };
        // Fresh while more than half its lifetime is left. The context names
        // the backend the cookie may keep naming; empty when it is due to be
        // signed again.
        let due = expires.saturating_sub(u64::from(self.s.ttl_s / 2));
        if switchyard_sdk::host::now_ms() / 1000 >= due {
            return Action::Forward(Forward { pin: Some(backend), headers: Vec::new(), context: Vec::new(), after: After::Always });
        }
        // Until then this forward is the cookie's alone: the gateway may
        // repeat it for the same cookies without calling the plugin.
        if self.s.memo {
            store::remember(&Memo { until_ms: due.saturating_mul(1000), inputs: Vec::new(), value_header: String::new(), context_at: 0, principal: String::new() });
        }
        Action::Forward(Forward { pin: Some(backend.clone()), headers: Vec::new(), context: backend.into_bytes(), after: After::UnlessPinned })
    }

    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        let Some(served) = resp.backend.as_deref() else { return Vec::new() };
        if resp.pin_lost {
            switchyard_sdk::host::counter_add("sessions_moved", 1);
        }
        if context == served.as_bytes() {
            return Vec::new(); // the cookie already names it and is fresh
        }
        match tokens::sign(served.as_bytes(), self.s.ttl_s) {
            Ok(t) => vec![set_cookie(&self.s.cookie, &t, u64::from(self.s.ttl_s), self.s.secure)],
            Err(e) => {
                switchyard_sdk::host::log_error(&format!("cannot sign the sticky cookie: {e}"));
                Vec::new()
            }
        }
    }

    /// It reads no backend header.
    fn response_headers(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

switchyard_sdk::export_session!(Sticky);
