//! Per-request state: the route's upstream, the request view, the backend
//! in use and the ones already tried.

use crate::seams::RequestView;
use crate::upstream::Upstream;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Instant;

/// A request in flight to one backend; ending it (drop) lowers `active`.
pub struct Inflight {
    upstream: Arc<Upstream>,
    backend: usize,
    started: Instant,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.upstream.backends()[self.backend].stats.end();
    }
}

/// Per-request context.
#[derive(Default)]
pub struct Ctx {
    upstream: Option<Arc<Upstream>>,
    req: Option<Arc<RequestView>>,
    /// Backends this request failed to connect to.
    pub tried: Vec<usize>,
    current: Option<Inflight>,
    pub request_id: String,
}

impl Ctx {
    /// Fill in the route's upstream, the request view and the request id.
    pub fn start(&mut self, upstream: Arc<Upstream>, session: &Session, id_header: &http::HeaderName) {
        let h = session.req_header();
        self.request_id = h
            .headers
            .get(id_header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_request_id(v))
            .map_or_else(new_request_id, str::to_string);
        self.req = Some(Arc::new(RequestView {
            method: h.method.as_str().to_string(),
            path: h.uri.path().to_string(),
            host: super::routes::host_of(h).map(str::to_string),
            headers: h.headers.clone(),
            client_ip: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        }));
        self.upstream = Some(upstream);
    }

    /// The upstream and request (set by `start`).
    pub fn target(&self) -> (Arc<Upstream>, Arc<RequestView>) {
        (self.upstream.clone().expect("routed"), self.req.clone().expect("routed"))
    }

    /// A request to backend `i` begins.
    pub fn begin(&mut self, i: usize) {
        let upstream = self.upstream.clone().expect("routed");
        upstream.backends()[i].stats.begin();
        self.current = Some(Inflight { upstream, backend: i, started: Instant::now() });
    }

    /// The connect to the current backend failed: record it and say
    /// whether another backend may be tried.
    pub fn fail_current(&mut self) -> bool {
        let Some(cur) = self.current.take() else { return false };
        cur.upstream.observe(cur.backend, cur.started.elapsed(), true);
        self.tried.push(cur.backend);
        self.tried.len() <= cur.upstream.retries && self.tried.len() < cur.upstream.backends().len()
    }

    /// The request is over: feed latency and outcome back to the stats.
    pub fn finish(&mut self, status: u16, errored: bool) {
        if let Some(cur) = self.current.take() {
            let failed = errored || status >= 500 || status == 0;
            cur.upstream.observe(cur.backend, cur.started.elapsed(), failed);
        }
    }
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{boot:016x}-{:08x}", SEQ.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_validated() {
        assert!(super::valid_request_id("abc-123"));
        assert!(!super::valid_request_id("a b"));
        assert!(!super::valid_request_id(""));
        assert!(!super::valid_request_id(&"x".repeat(200)));
    }
}
