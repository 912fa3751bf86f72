//! Per-request state: the route's upstream, the request view, the backend
//! in use and the ones already tried.

use crate::metrics::metrics;
use crate::seams::session::Headers;
use crate::seams::{Forward, Outcome, RequestView, SessionRun};
use crate::upstream::Upstream;
use pingora::proxy::Session;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Counts a downstream request in flight while it lives.
struct ActiveRequest;

impl ActiveRequest {
    fn new() -> Self {
        metrics().active_requests.inc();
        Self
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        metrics().active_requests.dec();
    }
}

/// Per-request context.
pub struct Ctx {
    _active: ActiveRequest,
    received: Instant,
    /// The matched route's metrics (and label).
    route: Option<Arc<super::routes::RouteMetrics>>,
    /// The last backend tried, for the request metrics.
    backend: Option<usize>,
    upstream: Option<Arc<Upstream>>,
    /// Built at the first policy that reads the request (`view`).
    req: Option<Arc<RequestView>>,
    /// Backends this request failed to connect to.
    pub tried: Vec<usize>,
    current: Option<Inflight>,
    pub request_id: String,
    /// The route's session, between its two hooks.
    pub session: Option<SessionCtx>,
    /// The admitted usage and its route's access check, until it ends.
    pub access: Option<(Arc<crate::access::RouteGate>, crate::access::Admitted)>,
    /// The request headers went to a backend (it may act on the request
    /// whatever happens next): a usage limit keeps its reservation.
    pub sent: bool,
    /// The backend's own response status.
    pub upstream_status: Option<u16>,
    /// What the route's access check decided, for the access log.
    pub decision: Decision,
    /// The session outcome of a request the session plugin answered itself.
    pub replied_session: Option<crate::seams::SessionOutcome>,
    /// Count plugin faults (the access log is on).
    pub count_faults: bool,
    /// Plugin faults during this request, made by the first phase that
    /// runs plugin code while they are counted.
    faults: Option<Arc<AtomicU32>>,
    /// The last backend attempt's time, once the request is over.
    upstream_time: Option<Duration>,
}

/// The access decision on a request.
#[derive(Debug, Default)]
pub enum Decision {
    /// The route has no access check (or it never ran).
    #[default]
    None,
    Permit,
    Deny(String),
    /// An ongoing decision revoked the usage mid-response.
    Revoked,
}

/// One request's session: what `before-request` asked for, and the run
/// that stores the changes after the response.
pub struct SessionCtx {
    run: Box<dyn SessionRun>,
    forward: Forward,
    pin_lost: bool,
    done: bool,
}

impl Ctx {
    /// A request was received.
    pub fn new() -> Self {
        Self {
            _active: ActiveRequest::new(),
            received: Instant::now(),
            route: None,
            backend: None,
            upstream: None,
            req: None,
            tried: Vec::new(),
            current: None,
            request_id: String::new(),
            session: None,
            access: None,
            sent: false,
            upstream_status: None,
            decision: Decision::None,
            replied_session: None,
            count_faults: false,
            faults: None,
            upstream_time: None,
        }
    }

    /// The request id: the client's if valid, else a new one.
    pub fn identify(&mut self, session: &Session, id_header: &http::HeaderName) {
        self.request_id = session
            .req_header()
            .headers
            .get(id_header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_request_id(v))
            .map_or_else(new_request_id, str::to_string);
    }

    /// The request matched a route: remember its upstream and metrics.
    pub fn start(&mut self, matched: &super::routes::Matched) {
        self.route = Some(matched.metrics.clone());
        self.upstream = Some(matched.upstream.clone());
    }

    /// The request as policies see it, built at the first call: a request
    /// whose policies never read it (round robin, say) pays nothing for it.
    /// Policies never see the client's `x-switchyard-*` headers.
    pub fn view(&mut self, session: &Session) -> Arc<RequestView> {
        self.req
            .get_or_insert_with(|| {
                let h = session.req_header();
                Arc::new(RequestView {
                    method: h.method.as_str().to_string(),
                    path: h.uri.path().to_string(),
                    host: super::routes::host_of(h).map(str::to_string),
                    headers: without_internal(&h.headers),
                    client_ip: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
                    client_cert: crate::tls::client_cert(session),
                    routed_by: Default::default(),
                })
            })
            .clone()
    }

    /// What `upstream_peer`'s policy is shown: the request if the policy
    /// reads it, else one shared empty view.
    pub fn view_for_lb(&mut self, session: &Session) -> Arc<RequestView> {
        static EMPTY: std::sync::OnceLock<Arc<RequestView>> = std::sync::OnceLock::new();
        match self.upstream.as_ref().is_some_and(|u| u.reads_request()) {
            true => self.view(session),
            // Its `routed_by` is filled, so an lb canary that starts after
            // the view was chosen cannot mark the shared view as its own.
            false => EMPTY
                .get_or_init(|| {
                    let v = RequestView::default();
                    let _ = v.routed_by.set(Default::default());
                    Arc::new(v)
                })
                .clone(),
        }
    }

    /// An ongoing decision revoked this usage.
    pub fn revoked(&self) -> bool {
        self.access.as_ref().is_some_and(|(_, a)| a.revoked.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// An operator ended this request's user's sessions while it ran.
    pub fn session_revoked(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.run.revoked())
    }

    /// The usage ended: its access post-updates, told whether the request
    /// reached a backend and what the backend answered.
    pub async fn finish_access(&mut self, status: u16, failed: bool) {
        if let Some((gate, admitted)) = self.access.take() {
            self.decision = if admitted.revoked.load(std::sync::atomic::Ordering::Relaxed) { Decision::Revoked } else { Decision::Permit };
            gate.finish(&admitted, status, failed, self.sent, self.upstream_status).await;
        }
    }

    /// Where a phase counts its plugin faults: `None` when they are not
    /// counted or the phase runs no plugin code (`plugin`), so a request
    /// with builtin policies pays nothing for the count.
    pub fn faults_if(&mut self, plugin: bool) -> Option<Arc<AtomicU32>> {
        (self.count_faults && plugin).then(|| self.faults.get_or_insert_with(Arc::default).clone())
    }

    /// The route's session policy forwards this request.
    pub fn with_session(&mut self, run: Box<dyn SessionRun>, forward: Forward) {
        self.session = Some(SessionCtx { run, forward, pin_lost: false, done: false });
    }

    /// The backend the session pins, if it may be used now; a pin that
    /// cannot be honoured is remembered for `after-response` and counted.
    pub fn pinned(&mut self) -> Option<usize> {
        let s = self.session.as_mut()?;
        let pin = s.forward.pin.as_deref()?;
        let upstream = self.upstream.as_ref()?;
        let found = upstream.backends().iter().position(|b| b.address == pin);
        let reason = match found {
            Some(i) if upstream.backends()[i].is_healthy() && !self.tried.contains(&i) => return Some(i),
            Some(i) if self.tried.contains(&i) => "failed",
            Some(_) => "down",
            None => "unknown",
        };
        if !s.pin_lost {
            s.pin_lost = true;
            let route = self.route.as_ref().map_or("", |r| &r.label);
            metrics().session_pin_lost.with_label_values(&[route, reason]).inc();
        }
        None
    }

    /// Headers the session adds to the upstream request.
    pub fn session_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        self.session.as_ref().map_or(&[], |s| &s.forward.headers)
    }

    /// Run the session's `after-response` once: with the backend's answer,
    /// or (`headers` none) with the gateway's error status.
    pub async fn finish_session(&mut self, status: u16, headers: Option<&http::HeaderMap>) -> Headers {
        let backend = match (&self.upstream, self.backend) {
            (Some(u), Some(i)) => Some(u.backends()[i].address.clone()),
            _ => None,
        };
        let Some(s) = self.session.as_mut().filter(|s| !s.done) else { return Vec::new() };
        s.done = true;
        let outcome = Outcome { status, headers, backend, pin_lost: s.pin_lost };
        s.run.after(std::mem::take(&mut s.forward.context), outcome).await
    }

    /// The route's upstream (set by `start`).
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream.clone().expect("routed")
    }

    /// A request to backend `i` begins.
    pub fn begin(&mut self, i: usize) {
        let upstream = self.upstream.clone().expect("routed");
        upstream.backends()[i].stats.begin();
        self.backend = Some(i);
        self.current = Some(Inflight { upstream, backend: i, started: Instant::now() });
    }

    /// The connect to the current backend failed: record it and say
    /// whether another backend may be tried.
    pub fn fail_current(&mut self) -> bool {
        let Some(cur) = self.current.take() else { return false };
        tracing::warn!(upstream = %cur.upstream.name(), backend = %cur.upstream.backends()[cur.backend].address, "connect failed; trying another backend");
        cur.upstream.observe(cur.backend, cur.started.elapsed(), true);
        self.tried.push(cur.backend);
        self.tried.len() <= cur.upstream.retries && self.tried.len() < cur.upstream.backends().len()
    }

    /// The request is over: feed latency and outcome back to the stats,
    /// and count it.
    pub fn finish(&mut self, status: u16, upstream_failed: bool) {
        if let Some(cur) = self.current.take() {
            let failed = upstream_failed || status >= 500;
            let took = cur.started.elapsed();
            self.upstream_time = Some(took);
            cur.upstream.observe(cur.backend, took, failed);
            if let Some(card) = self.req.as_ref().and_then(|r| r.routed_by.get()) {
                card.record(took, failed);
            }
        }
        match (&self.route, &self.upstream) {
            (Some(route), Some(upstream)) => route.observe(upstream, self.backend, status, self.received.elapsed()),
            // No route matched (a rare 404): labelled empty, looked up here.
            _ => super::routes::observe_unrouted(status, self.received.elapsed()),
        }
    }
}

impl Ctx {
    /// The finished request as the access log writes it; `agent`: with
    /// the referer and user agent.
    pub fn log_record<'a>(&'a self, session: &'a Session, status: u16, agent: bool) -> crate::accesslog::Record<'a> {
        let h = session.req_header();
        let header = |name| agent.then(|| h.headers.get(name).map(|v: &http::HeaderValue| v.as_bytes())).flatten();
        let (access, access_reason) = match &self.decision {
            Decision::None => (None, None),
            Decision::Permit => (Some("permit"), None),
            Decision::Deny(why) => (Some("deny"), Some(why.as_str())),
            Decision::Revoked => (Some("revoked"), Some("revoked by an ongoing access decision")),
        };
        crate::accesslog::Record {
            request_id: &self.request_id,
            client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
            method: h.method.as_str(),
            host: super::routes::host_of(h),
            path: h.uri.path(),
            query: h.uri.query(),
            protocol: match h.version {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_09 => "HTTP/0.9",
                _ => "HTTP/1.1",
            },
            tls: crate::tls::is_tls(session),
            status: if status == 0 { 499 } else { status },
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration: self.received.elapsed(),
            upstream_time: self.upstream_time,
            route: self.route.as_ref().map(|r| &*r.label),
            upstream: self.upstream.as_ref().map(|u| u.name()),
            backend: match (&self.upstream, self.backend) {
                (Some(u), Some(i)) => Some(u.backends()[i].address.as_str()),
                _ => None,
            },
            retries: self.tried.len(),
            session: self.session.as_ref().and_then(|s| s.run.outcome()).or(self.replied_session).map(|o| o.as_str()),
            access,
            access_reason,
            plugin_faults: self.faults.as_ref().map_or(0, |f| f.load(std::sync::atomic::Ordering::Relaxed)),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
        }
    }
}

/// The client's headers without any internal one (`x-switchyard-*`, or
/// `x_switchyard_*`: [`super::is_internal`]): what every policy sees of the
/// request.
fn without_internal(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = headers.clone();
    super::internal_names(headers).iter().for_each(|k| drop(out.remove(k)));
    out
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `BOOT-SEQ` in hex (16 and 8 digits): the boot time's part is formatted
/// once, the sequence by hand (`format!` was a tenth of the gateway's own
/// instructions on a plain request).
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        format!("{nanos:016x}-")
    });
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    if seq > u64::from(u32::MAX) {
        return format!("{boot}{seq:08x}");
    }
    let mut id = String::with_capacity(boot.len() + 8);
    id.push_str(boot);
    for shift in (0..8).rev() {
        id.push(char::from(b"0123456789abcdef"[(seq >> (shift * 4)) as usize & 0xf]));
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_fixed_width_hex_and_never_repeat() {
        let a = super::new_request_id();
        let b = super::new_request_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 25, "{id}");
            assert_eq!(&id[16..17], "-");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
            assert!(super::valid_request_id(id));
        }
        assert_eq!(a[..17], b[..17], "one boot prefix");
        let (sa, sb) = (u32::from_str_radix(&a[17..], 16).unwrap(), u32::from_str_radix(&b[17..], 16).unwrap());
        assert!(sb > sa, "{a} then {b}");
    }

    #[test]
    fn policies_never_see_internal_headers() {
        let mut h = http::HeaderMap::new();
        h.append("X-Switchyard-Session", "forged".parse().unwrap());
        h.append("x-switchyard-session-id", "evil".parse().unwrap());
        h.append("cookie", "sy_session=t".parse().unwrap());
        let seen = super::without_internal(&h);
        assert_eq!(seen.len(), 1);
        assert!(seen.contains_key("cookie"));
    }

    #[test]
    fn request_ids_are_validated() {
        assert!(super::valid_request_id("abc-123"));
        assert!(!super::valid_request_id("a b"));
        assert!(!super::valid_request_id(""));
        assert!(!super::valid_request_id(&"x".repeat(200)));
    }
}
