//! Route matching: host (exact, port ignored) and longest path prefix.

use crate::config::RouteSpec;
use crate::seams::SessionPolicy;
use crate::upstream::Upstream;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What a request matched: the upstream, the metrics label, the session strategy.
#[derive(Clone)]
pub struct Matched {
    pub upstream: Arc<Upstream>,
    pub label: Arc<str>,
    pub session: Option<Arc<dyn SessionPolicy>>,
    pub access: Option<Arc<crate::access::RouteGate>>,
}

/// Routes, longest prefix first.
pub struct Router {
    routes: Vec<(RouteSpec, Matched)>,
}

impl Router {
    /// `sessions` and `gates` are parallel to `specs`.
    pub fn new(specs: &[RouteSpec], upstreams: &[Arc<Upstream>], sessions: &[Option<Arc<dyn SessionPolicy>>], gates: &[Option<Arc<crate::access::RouteGate>>]) -> Self {
        let mut routes: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = Matched {
                    upstream: upstreams[r.upstream].clone(),
                    label: label(r).into(),
                    session: sessions.get(i).cloned().flatten(),
                    access: gates.get(i).cloned().flatten(),
                };
                (r.clone(), m)
            })
            .collect();
        // Host-specific routes before any-host ones, then longer prefixes first.
        routes.sort_by_key(|(r, _)| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Self { routes }
    }

    /// What a request matches, if any route does.
    pub fn route(&self, req: &RequestHeader) -> Option<&Matched> {
        let host = host_of(req).map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
        let path = req.uri.path();
        self.routes
            .iter()
            .find(|(r, _)| r.host.as_ref().is_none_or(|h| Some(h) == host.as_ref()) && prefix_matches(&r.path_prefix, path))
            .map(|(_, m)| m)
    }
}

/// A route's name in metrics and logs: `host/prefix`, `*` for any host.
pub fn label(r: &RouteSpec) -> String {
    format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path_prefix)
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
}
