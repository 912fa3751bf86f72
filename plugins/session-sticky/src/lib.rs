//! Sticky sessions, as HAProxy's `cookie SRV insert`: the first response
//! sets a signed cookie naming the backend that served it; later requests
//! go back to that backend while it is healthy. The cookie is signed, so a
//! client cannot steer itself to a backend of its choice. When the pinned
//! backend is down the request moves (the backend's in-memory session is
//! lost), the cookie is rewritten and the move is counted.

use switchyard_sdk::session::{set_cookie, Action, Forward, Header, Request, Response, SessionStrategy};
use switchyard_sdk::store::tokens;
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Cookie naming the backend.
    cookie: String,
    /// Cookie lifetime; renewed on every response.
    ttl_s: u32,
    /// Add `Secure` to the cookie (clients reach the gateway over TLS).
    secure: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self { cookie: "sy_backend".into(), ttl_s: 3600, secure: false }
    }
}

/// The sticky strategy.
pub struct Sticky {
    s: Settings,
}

/// What `before_request` hands to `after_response`: the backend the
/// cookie named (empty when none or invalid).
fn context(pin: Option<&str>) -> Vec<u8> {
    pin.unwrap_or("").as_bytes().to_vec()
}

impl SessionStrategy for Sticky {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.cookie.is_empty() || !s.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("cookie: {:?} is not a cookie name ([A-Za-z0-9_-]+)", s.cookie));
        }
        Ok(Self { s })
    }

    fn before_request(&mut self, req: &Request) -> Action {
        let pin = req.cookie(&self.s.cookie).and_then(|t| tokens::verify(&t)).and_then(|p| String::from_utf8(p).ok());
        Action::Forward(Forward { context: context(pin.as_deref()), pin, headers: Vec::new() })
    }

    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        let Some(served) = resp.backend.as_deref() else { return Vec::new() };
        if resp.pin_lost {
            switchyard_sdk::host::counter_add("sessions_moved", 1);
        }
        if context == served.as_bytes() {
            return Vec::new(); // the cookie already names it
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
