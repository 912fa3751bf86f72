//! Backend pools: membership, live stats, health, and the pick that enforces
//! health and retry exclusions whatever the lb policy answered.

mod health;
mod peer;
mod stats;

pub use health::HealthChecker;
pub use stats::{draw, now_ns, BackendStats, LiveStat};

use crate::config::{HealthSection, UpstreamSpec};
use crate::seams::{LbError, LbPolicy, RequestView};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One backend and its live state.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub address: String,
    pub weight: u32,
    /// Shared with the same backend in the config before a reload, so
    /// health and stats carry over.
    pub stats: Arc<BackendStats>,
    /// How to reach it (TLS, protocol, timeouts), cloned per request.
    pub peer: pingora::upstreams::peer::HttpPeer,
}

impl Backend {
    /// Routable now (not ejected by active or passive checks).
    pub fn is_healthy(&self) -> bool {
        self.stats.is_healthy()
    }
}

/// The next upstream's version epoch.
static EPOCHS: AtomicU64 = AtomicU64::new(1);

/// A named pool of backends with its policy.
pub struct Upstream {
    name: String,
    backends: Vec<Backend>,
    /// Bumped whenever membership, weight or health changes; policies that
    /// cache the backend set (Wasm instances) refresh when it moves.
    version: AtomicU64,
    lb: Arc<dyn LbPolicy>,
    pub health: HealthSection,
    pub retries: usize,
    pub connect_timeout_ms: u64,
    pub io: crate::config::IoTimeouts,
}

impl Upstream {
    /// Build from its validated spec and chosen policy.
    pub fn new(spec: &UpstreamSpec, lb: Arc<dyn LbPolicy>) -> Self {
        Self::carrying(spec, lb, None)
    }

    /// As [`Self::new`]; a backend that `previous` (the same upstream
    /// before a config reload) also had keeps its health and stats.
    pub fn carrying(spec: &UpstreamSpec, lb: Arc<dyn LbPolicy>, previous: Option<&Upstream>) -> Self {
        if spec.tls.as_ref().is_some_and(|t| !t.verify) {
            tracing::warn!(upstream = %spec.name, "verify = false: backend certificates and names are NOT checked; anyone on the path can pose as these backends");
        }
        let backends = spec
            .backends
            .iter()
            .map(|&(addr, weight)| {
                let kept = previous.and_then(|p| p.backends.iter().find(|b| b.addr == addr));
                let stats = kept.map_or_else(Arc::default, |b| b.stats.clone());
                Backend { addr, address: addr.to_string(), weight, stats, peer: peer::template(spec, addr) }
            })
            .collect();
        Self {
            name: spec.name.clone(),
            backends,
            // Each upstream counts from its own epoch: a policy instance
            // carried over from the upstream before a reload never takes
            // this set for the one it saw.
            version: AtomicU64::new(EPOCHS.fetch_add(1, Ordering::Relaxed) << 32),
            lb,
            health: spec.health.clone(),
            retries: spec.retries,
            connect_timeout_ms: spec.connect_timeout_ms,
            io: spec.io,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn policy_name(&self) -> &str {
        self.lb.name()
    }

    /// Whether the policy reads the request (else it is not built for it).
    pub fn reads_request(&self) -> bool {
        self.lb.reads_request()
    }

    /// Whether picking runs plugin code (whose faults the access log counts).
    pub fn runs_plugin(&self) -> bool {
        self.lb.runs_plugin()
    }

    /// Current version of the backend set (see the field).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn bump_version(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Fill `out` with every backend's live stats, in backend order.
    pub fn live_stats(&self, out: &mut Vec<LiveStat>) {
        out.clear();
        out.extend(self.backends.iter().map(|b| b.stats.live()));
    }

    /// Ask the policy, then enforce: never a down backend, never one this
    /// request already failed on (`tried`). A policy answer that breaks
    /// either moves to the next eligible backend in order.
    pub async fn pick(&self, req: &Arc<RequestView>, tried: &[usize]) -> Result<usize, LbError> {
        let choice = self.lb.select(req, self).await?;
        tracing::trace!(upstream = %self.name, choice, live = ?self.backends.iter().map(|b| b.stats.live()).collect::<Vec<_>>(), "picked");
        let n = self.backends.len();
        let eligible = |i: usize| self.backends[i].is_healthy() && !tried.contains(&i);
        if choice < n && eligible(choice) {
            return Ok(choice);
        }
        (1..=n)
            .map(|k| (choice % n.max(1) + k) % n)
            .find(|&i| eligible(i))
            .ok_or_else(|| LbError::NoBackend(format!("upstream {:?}: no healthy backend left to try", self.name)))
    }

    /// Record the outcome of a request to backend `i`; ejects it after
    /// `max_failures` failures in a row.
    pub fn observe(&self, i: usize, latency: std::time::Duration, failed: bool) {
        let b = &self.backends[i];
        if b.stats.observe(latency, failed, &self.health) {
            tracing::warn!(upstream = %self.name, backend = %b.address, "ejected after {} failures in a row", self.health.max_failures);
            crate::metrics::metrics().health_transitions.with_label_values(&[self.name.as_str(), b.address.as_str(), "down"]).inc();
            self.bump_version();
        }
    }
}

/// Every upstream of the running config.
pub type Upstreams = Arc<Vec<Arc<Upstream>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::lb::MockLb;
    use std::collections::VecDeque;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn upstream(n: usize, answers: Vec<Result<usize, LbError>>) -> Upstream {
        with_health(n, HealthSection::default(), answers)
    }

    /// `n` backends with these health settings (for the health loop's tests).
    pub(super) fn upstream_with(n: usize, health: HealthSection) -> Upstream {
        with_health(n, health, vec![])
    }

    fn with_health(n: usize, health: HealthSection, answers: Vec<Result<usize, LbError>>) -> Upstream {
        let spec = UpstreamSpec {
            name: "u".into(),
            backends: (0..n).map(|i| (format!("127.0.0.1:{}", 9000 + i).parse().unwrap(), 1)).collect(),
            lb: None,
            health,
            retries: 2,
            connect_timeout_ms: 100,
            io: Default::default(),
            tls: None,
            protocol: Default::default(),
            max_streams: 100,
        };
        Upstream::new(&spec, Arc::new(MockLb(parking_lot::Mutex::new(VecDeque::from(answers)))))
    }

    #[test]
    fn pick_respects_policy_when_eligible() {
        let u = upstream(3, vec![Ok(2)]);
        assert_eq!(block(u.pick(&Arc::new(RequestView::default()), &[])).unwrap(), 2);
    }

    #[test]
    fn pick_skips_tried_and_unhealthy() {
        let u = upstream(3, vec![Ok(0), Ok(7)]);
        u.backends[1].stats.set_active_up(false);
        assert_eq!(block(u.pick(&Arc::new(RequestView::default()), &[0])).unwrap(), 2);
        // Out of range answers are mapped into range, still eligible only.
        let got = block(u.pick(&Arc::new(RequestView::default()), &[2])).unwrap();
        assert_eq!(got, 0);
    }

    #[test]
    fn pick_fails_when_nothing_is_left() {
        let u = upstream(2, vec![Ok(0)]);
        assert!(matches!(block(u.pick(&Arc::new(RequestView::default()), &[0, 1])), Err(LbError::NoBackend(_))));
    }

    #[test]
    fn passive_ejection_after_consecutive_failures() {
        let u = upstream(1, vec![]);
        let v = u.version();
        for _ in 0..u.health.max_failures {
            assert!(u.backends[0].is_healthy());
            u.observe(0, std::time::Duration::from_millis(1), true);
        }
        assert!(!u.backends[0].is_healthy());
        assert!(u.version() > v);
    }
}
