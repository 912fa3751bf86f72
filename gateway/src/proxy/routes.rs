//! Route matching: host (exact, port ignored) and longest path prefix.

use crate::config::RouteSpec;
use crate::upstream::Upstream;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// Routes, longest prefix first, each with its metrics label.
pub struct Router {
    routes: Vec<(RouteSpec, Arc<Upstream>, Arc<str>)>,
}

impl Router {
    pub fn new(specs: &[RouteSpec], upstreams: &[Arc<Upstream>]) -> Self {
        let mut routes: Vec<_> = specs
            .iter()
            .map(|r| {
                let label: Arc<str> = format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path_prefix).into();
                (r.clone(), upstreams[r.upstream].clone(), label)
            })
            .collect();
        // Host-specific routes before any-host ones, then longer prefixes first.
        routes.sort_by_key(|(r, _, _)| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Self { routes }
    }

    /// The upstream and route label for a request, if any route matches.
    pub fn route(&self, req: &RequestHeader) -> Option<(Arc<Upstream>, Arc<str>)> {
        let host = host_of(req).map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
        let path = req.uri.path();
        self.routes
            .iter()
            .find(|(r, _, _)| r.host.as_ref().is_none_or(|h| Some(h) == host.as_ref()) && prefix_matches(&r.path_prefix, path))
            .map(|(_, u, label)| (u.clone(), label.clone()))
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
}
