//! The session seam: `SessionPolicy` decides, before the upstream request,
//! how a request's session travels (pin, headers, or a direct answer), and
//! its [`SessionRun`] stores the changes after the response.

use super::RequestView;
use crate::error::Error;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// Headers as the proxy applies them.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// Send the request on.
#[derive(Debug, Default, Clone)]
pub struct Forward {
    /// Backend address (`host:port`) to send it to while healthy.
    pub pin: Option<String>,
    /// Added to the upstream request (internal names only).
    pub headers: Headers,
    /// Handed to `after` of this request.
    pub context: Vec<u8>,
}

/// Answer the client directly.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// What a session policy wants done with a request.
#[derive(Debug, Clone)]
pub enum SessionAction {
    Forward(Forward),
    Reply(Reply),
}

/// What the upstream answered, for `after`.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// The backend's status, or the gateway's error status.
    pub status: u16,
    /// The backend's response headers (none when it failed); the policy
    /// copies those its strategy reads.
    pub headers: Option<&'a http::HeaderMap>,
    pub backend: Option<String>,
    pub pin_lost: bool,
}

/// One request's session, from `before` to `after`: it runs on the policy
/// version that started it, and releases what the request holds when done.
#[async_trait::async_trait]
pub trait SessionRun: Send + Sync {
    /// Store the changes; answer headers for the client response.
    async fn after(&mut self, context: Vec<u8>, outcome: Outcome<'_>) -> Headers;

    /// An operator ended this request's user's sessions while it ran
    /// (`DELETE /sessions?principal=U`): its response is cut.
    fn revoked(&self) -> bool {
        false
    }

    /// What the strategy did with its store, for the access log.
    fn outcome(&self) -> Option<SessionOutcome> {
        None
    }
}

/// A request's session as the host saw its store calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Stored a session without loading one.
    New,
    Loaded,
    /// Retired a session id (rotation, as at a login).
    Renewed,
    /// A store call failed.
    StoreError,
}

impl SessionOutcome {
    /// Store calls seen during a request's hooks (`SEEN_*` bits).
    pub fn of(seen: u8) -> Option<Self> {
        match seen {
            s if s & SEEN_STORE_ERROR != 0 => Some(Self::StoreError),
            s if s & SEEN_RENEWED != 0 => Some(Self::Renewed),
            s if s & SEEN_LOADED != 0 => Some(Self::Loaded),
            s if s & SEEN_STORED != 0 => Some(Self::New),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Loaded => "loaded",
            Self::Renewed => "renewed",
            Self::StoreError => "store_error",
        }
    }
}

/// A read found a session (a store value, or a valid signed token).
pub const SEEN_LOADED: u8 = 1;
/// A write or a signed token.
pub const SEEN_STORED: u8 = 2;
pub const SEEN_RENEWED: u8 = 4;
pub const SEEN_STORE_ERROR: u8 = 8;

/// A route's session strategy.
#[async_trait::async_trait]
pub trait SessionPolicy: Send + Sync {
    /// Name for logs and metrics.
    fn name(&self) -> &str;
    /// Decide how `req` and its session travel.
    async fn before(&self, req: &Arc<RequestView>) -> Result<(SessionAction, Box<dyn SessionRun>), Error>;
}

/// Nothing to store: what a failed policy falls back to.
pub struct NoSession;

#[async_trait::async_trait]
impl SessionRun for NoSession {
    async fn after(&mut self, _context: Vec<u8>, _outcome: Outcome<'_>) -> Headers {
        Vec::new()
    }
}

#[async_trait::async_trait]
impl SessionPolicy for NoSession {
    fn name(&self) -> &str {
        "builtin:none"
    }

    async fn before(&self, _req: &Arc<RequestView>) -> Result<(SessionAction, Box<dyn SessionRun>), Error> {
        Ok((SessionAction::Forward(Forward::default()), Box::new(NoSession)))
    }
}
