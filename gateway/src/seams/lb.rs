//! The load-balancing seam: `LbPolicy`, its builtin round robin and a mock.

use super::RequestView;
use crate::error::Error;
use crate::upstream::Upstream;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why no backend was chosen.
#[derive(Debug, Clone)]
pub enum LbError {
    /// The policy found no backend that fits (503, not a plugin fault).
    NoBackend(String),
    /// The plugin failed and its `on_error` is `fail-closed` (503).
    Plugin(Error),
}

/// Chooses a backend of an upstream for one request.
///
/// The answer is an index into `upstream.backends()`. The caller enforces
/// health and retry exclusions, so a policy cannot route to a down backend.
#[async_trait::async_trait]
pub trait LbPolicy: Send + Sync {
    /// Name for logs and `/upstreams`.
    fn name(&self) -> &str;
    /// Whether `select` reads `req`; if not, the request view is not built
    /// and the policy is shown an empty one.
    fn reads_request(&self) -> bool {
        true
    }
    /// Whether `select` runs plugin code, which can fault.
    fn runs_plugin(&self) -> bool {
        true
    }
    /// Choose a backend for `req`.
    async fn select(&self, req: &std::sync::Arc<RequestView>, upstream: &Upstream) -> Result<usize, LbError>;
}

/// The builtin: round robin over healthy backends, also the fallback of
/// every Wasm lb plugin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

#[async_trait::async_trait]
impl LbPolicy for RoundRobin {
    fn name(&self) -> &str {
        "builtin:round-robin"
    }

    fn reads_request(&self) -> bool {
        false
    }

    fn runs_plugin(&self) -> bool {
        false
    }

    async fn select(&self, _req: &std::sync::Arc<RequestView>, upstream: &Upstream) -> Result<usize, LbError> {
        let backends = upstream.backends();
        let n = backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| backends[i].is_healthy())
            .ok_or_else(|| LbError::NoBackend(format!("upstream {:?} has no healthy backend", upstream.name())))
    }
}

/// A scripted policy for unit tests: returns the given answers in turn.
#[cfg(test)]
pub struct MockLb(pub parking_lot::Mutex<std::collections::VecDeque<Result<usize, LbError>>>);

#[cfg(test)]
#[async_trait::async_trait]
impl LbPolicy for MockLb {
    fn name(&self) -> &str {
        "mock"
    }
    async fn select(&self, _req: &std::sync::Arc<RequestView>, _u: &Upstream) -> Result<usize, LbError> {
        self.0.lock().pop_front().expect("mock ran out of answers")
    }
}
