//! Route matching: host (exact, port ignored) and longest path prefix.

use crate::config::RouteSpec;
use crate::seams::SessionPolicy;
use crate::upstream::Upstream;
use pingora::http::RequestHeader;
use prometheus::{Histogram, IntCounter};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What a request matched: the upstream, the route's metrics (and label),
/// the session strategy, the access check.
#[derive(Clone)]
pub struct Matched {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<RouteMetrics>,
    pub session: Option<Arc<dyn SessionPolicy>>,
    pub access: Option<Arc<crate::access::RouteGate>>,
}

/// Routes, longest prefix first.
pub struct Router {
    routes: Vec<(RouteSpec, Arc<Matched>)>,
}

impl Router {
    /// `sessions` and `gates` are parallel to `specs`.
    pub fn new(specs: &[RouteSpec], upstreams: &[Arc<Upstream>], sessions: &[Option<Arc<dyn SessionPolicy>>], gates: &[Option<Arc<crate::access::RouteGate>>]) -> Self {
        let mut routes: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let upstream = upstreams[r.upstream].clone();
                let m = Matched {
                    metrics: Arc::new(RouteMetrics::new(label(r).into(), &upstream)),
                    upstream,
                    session: sessions.get(i).cloned().flatten(),
                    access: gates.get(i).cloned().flatten(),
                };
                (r.clone(), Arc::new(m))
            })
            .collect();
        // Host-specific routes before any-host ones, then longer prefixes first.
        routes.sort_by_key(|(r, _)| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Self { routes }
    }

    /// What a request matches, if any route does.
    pub fn route(&self, req: &RequestHeader) -> Option<&Arc<Matched>> {
        // Route hosts are lower case; the request's is compared without a copy.
        let host = host_of(req).map(|h| h.split(':').next().unwrap_or(h));
        let path = req.uri.path();
        self.routes
            .iter()
            .find(|(r, _)| r.host.as_ref().is_none_or(|h| host.is_some_and(|got| got.eq_ignore_ascii_case(h))) && prefix_matches(&r.path_prefix, path))
            .map(|(_, m)| m)
    }
}

/// A route's name in metrics and logs: `host/prefix`, `*` for any host.
pub fn label(r: &RouteSpec) -> String {
    format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path_prefix)
}

/// A route's request metrics, resolved once per config rather than looked
/// up by label per request: its latency histogram, and one request counter
/// per backend and status label, resolved when that pair first occurs.
pub struct RouteMetrics {
    pub label: Arc<str>,
    seconds: Histogram,
    /// `[backend index + 1][status label index]`; row 0 is "no backend".
    counts: Box<[[OnceLock<IntCounter>; STATUS_LABELS.len()]]>,
}

impl RouteMetrics {
    fn new(label: Arc<str>, upstream: &Upstream) -> Self {
        let seconds = crate::metrics::metrics().request_seconds.with_label_values(&[&label, upstream.name()]);
        let counts = (0..=upstream.backends().len()).map(|_| std::array::from_fn(|_| OnceLock::new())).collect();
        Self { label, seconds, counts }
    }

    /// Count one finished request: its backend (if one was tried), its
    /// status (0: no response) and how long it took.
    pub fn observe(&self, upstream: &Upstream, backend: Option<usize>, status: u16, took: Duration) {
        self.seconds.observe(took.as_secs_f64());
        let s = status_index(status);
        let row = backend.map_or(0, |i| i + 1);
        let Some(cell) = self.counts.get(row) else { return };
        cell[s]
            .get_or_init(|| {
                let address = backend.map_or("", |i| upstream.backends()[i].address.as_str());
                crate::metrics::metrics().requests.with_label_values(&[&self.label, upstream.name(), address, STATUS_LABELS[s]])
            })
            .inc();
    }
}

/// Count a request no route matched, with empty route, upstream and backend.
pub fn observe_unrouted(status: u16, took: Duration) {
    let m = crate::metrics::metrics();
    m.requests.with_label_values(&["", "", "", STATUS_LABELS[status_index(status)]]).inc();
    m.request_seconds.with_label_values(&["", ""]).observe(took.as_secs_f64());
}

/// The `status` label values: the common codes exactly, the rest by class.
const STATUS_LABELS: [&str; 19] =
    ["200", "201", "204", "301", "302", "304", "400", "401", "403", "404", "500", "502", "503", "504", "0", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        204 => 2,
        301 => 3,
        302 => 4,
        304 => 5,
        400 => 6,
        401 => 7,
        403 => 8,
        404 => 9,
        500 => 10,
        502 => 11,
        503 => 12,
        504 => 13,
        0 => 14,
        s if s < 300 => 15,
        s if s < 400 => 16,
        s if s < 500 => 17,
        _ => 18,
    }
}

/// `/app` matches `/app`, `/app/x` but not `/apple`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// The Host header, or the URI authority.
pub fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri.host())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_respects_segments() {
        assert!(prefix_matches("/portal", "/portal"));
        assert!(prefix_matches("/portal", "/portal/x"));
        assert!(!prefix_matches("/portal", "/portals"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn status_labels_name_common_codes_and_classes() {
        let label = |s| STATUS_LABELS[status_index(s)];
        assert_eq!([label(200), label(404), label(0), label(504)], ["200", "404", "0", "504"]);
        assert_eq!([label(206), label(307), label(429), label(599)], ["2xx", "3xx", "4xx", "5xx"]);
        let every = [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503, 504, 0];
        assert!(every.iter().all(|&s| STATUS_LABELS[status_index(s)] == s.to_string()));
    }
}
