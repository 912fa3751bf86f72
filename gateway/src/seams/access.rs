//! The access seam: `AccessCheck` decides before a usage, re-checks while
//! it lasts and names attribute updates when it ends (UCON_ABC). The proxy
//! enforces every answer and fails closed.

use crate::error::Error;

/// One usage as a policy sees it: JSON attribute sets, the right.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub subject: String,
    pub object: String,
    pub right: String,
    pub context: String,
}

/// A mutable attribute change: `delta`, refused outside `[min, max]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrUpdate {
    pub name: String,
    pub delta: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub reason: String,
}

/// A pre-decision.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessDecision {
    Permit { pre_updates: Vec<AttrUpdate>, ongoing_every_ms: Option<u32> },
    Deny(String),
    Obligation { reason: String, fulfil_at: String },
}

/// How a usage ended.
#[derive(Debug, Clone, Copy)]
pub struct UsageOutcome {
    pub status: u16,
    pub completed: bool,
    /// The request reached a backend (which may have acted on it).
    pub sent: bool,
    /// The backend's own status, if it answered.
    pub upstream_status: Option<u16>,
}

/// A route's access policy. Every method's error is a fault the proxy
/// answers with 503 (fail-closed).
#[async_trait::async_trait]
pub trait AccessCheck: Send + Sync {
    fn name(&self) -> &str;
    async fn pre(&self, usage: &Usage) -> Result<AccessDecision, Error>;
    /// `Ok(Err(reason))` revokes the usage.
    async fn ongoing(&self, usage: &Usage, elapsed_ms: u64) -> Result<Result<(), String>, Error>;
    async fn post(&self, usage: &Usage, outcome: UsageOutcome) -> Result<Vec<AttrUpdate>, Error>;
}
