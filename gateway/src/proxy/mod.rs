//! The Pingora `ProxyHttp` implementation. Each phase method is short and
//! calls one seam; per-request state lives in [`Ctx`].
//!
//! | phase                    | seam / work                                   |
//! |--------------------------|-----------------------------------------------|
//! | `request_filter`         | request id, route match, `RequestView` (at    |
//! |                          | the first policy that reads it),              |
//! |                          | session: `before-request` (pin, headers, reply)|
//! |                          | access: pre-decision and reservations first   |
//! | `upstream_peer`          | session pin, else lb: `LbPolicy::select`      |
//! | `fail_to_connect`        | passive stats, retry on another backend       |
//! | `upstream_request_filter`| X-Forwarded-For, request id, strip internals, |
//! |                          | add the session's headers                     |
//! | `response_filter`        | session: `after-response` (cookies); strip    |
//! |                          | internal headers, echo request id             |
//! | `response_body_filter`   | a usage revoked by an ongoing decision, or a  |
//! |                          | user whose sessions were revoked, stops       |
//! | `logging`                | session `after-response` if the upstream      |
//! |                          | failed; access post-update; stats, metrics;   |
//! |                          | the access log line                           |
//! | `fail_to_proxy`          | the gateway's own error answer (cause, id)    |

mod capped;
mod ctx;
mod routes;

pub use capped::Capped;
pub use ctx::Ctx;
pub use routes::{label as route_label, Matched, Router};

use crate::accesslog::counting;
use crate::seams::{LbError, SessionAction};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::FailToProxy;
use pingora::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// Headers the gateway owns: stripped from client requests and from
/// responses, so clients can neither inject nor read them.
pub const INTERNAL_PREFIX: &str = "x-switchyard-";

/// Whether `name` (lowercase, as `HeaderName` keeps it) is `owned` or
/// would be taken for it by a backend that maps `_` to `-`, as CGI, PHP,
/// WSGI and Rack do (`X_Switchyard_Session` arrives there as
/// `HTTP_X_SWITCHYARD_SESSION`). `prefix`: whether `owned` is a prefix.
fn reads_as(name: &str, owned: &str, prefix: bool) -> bool {
    let (n, o) = (name.as_bytes(), owned.as_bytes());
    (n.len() == o.len() || (prefix && n.len() > o.len())) && n.iter().zip(o).all(|(&c, &e)| c == e || (e == b'-' && c == b'_'))
}

/// An internal header name: `x-switchyard-*`, or one a backend would read
/// as one (`x_switchyard_*`, see [`reads_as`]).
pub fn is_internal(name: &str) -> bool {
    reads_as(name, INTERNAL_PREFIX, true)
}

/// Inserted by its `&'static str` (Pingora shares those bytes; a
/// `HeaderName` it would copy), looked up by its `HeaderName`.
const XFF: &str = "x-forwarded-for";
const XFF_NAME: http::HeaderName = http::HeaderName::from_static(XFF);
const XFP: &str = "x-forwarded-proto";

/// The request-id header (`[server] request_id_header`): its name for
/// lookups, and its bytes for inserts, shared rather than copied (Pingora
/// turns a `HeaderName` into a fresh copy of its bytes at every insert).
pub struct IdHeader {
    pub name: http::HeaderName,
    case: Bytes,
}

impl IdHeader {
    pub fn new(name: http::HeaderName) -> Self {
        let case = Bytes::copy_from_slice(name.as_str().as_bytes());
        Self { name, case }
    }

    fn case(&self) -> Bytes {
        self.case.clone()
    }
}

/// The gateway's HTTP proxy.
pub struct Gateway {
    /// Routes and upstreams; a config reload swaps them.
    pub live: Arc<crate::live::Live>,
    pub request_id_header: IdHeader,
    /// `Strict-Transport-Security` on answers that went out over TLS.
    pub hsts: Option<http::HeaderValue>,
    /// Cleartext requests get a 308 to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// `[log]`; `None` costs a request one branch.
    pub access_log: Option<Arc<crate::accesslog::AccessLog>>,
}

/// A branch only some requests take (an answer of the gateway's own, a
/// session, an access check) is awaited boxed. An inline await makes the
/// hook's future as large as its largest branch, and `async_trait` copies
/// the whole future into its box on every request: `request_filter` and
/// `logging` were 9.6 and 9.5 KB each, two memcpys bare Pingora never makes.
#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let mut ctx = Ctx::new();
        ctx.count_faults = self.access_log.is_some();
        ctx
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.identify(session, &self.request_id_header.name);
        if let Some(port) = self.redirect_https.filter(|_| !crate::tls::is_tls(session)) {
            Box::pin(self.to_https(session, ctx, port)).await?;
            return Ok(true);
        }
        let Some(matched) = self.live.route(session.req_header()) else {
            let h = session.req_header();
            let why = format!("no route matches host {:?} and path {:?}", routes::host_of(h).unwrap_or(""), h.uri.path());
            Box::pin(self.answer(session, ctx, 404, &why)).await?;
            return Ok(true);
        };
        ctx.start(&matched);
        if let Some(gate) = &matched.access {
            let req = ctx.view(session);
            match Box::pin(counting(ctx.faults_if(true), gate.admit(&req))).await {
                Ok(admitted) => ctx.access = Some((gate.clone(), admitted)),
                Err(refusal) => {
                    ctx.decision = ctx::Decision::Deny(refusal.reason.clone());
                    Box::pin(self.answer(session, ctx, refusal.status, &refusal.reason)).await?;
                    return Ok(true);
                }
            }
        }
        match &matched.session {
            Some(policy) => Box::pin(counting(ctx.faults_if(true), self.session_before(session, ctx, policy.as_ref(), &matched.metrics.label))).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let upstream = ctx.upstream();
        let i = match ctx.pinned() {
            Some(i) => i,
            None => counting(ctx.faults_if(upstream.runs_plugin()), upstream.pick(&ctx.view_for_lb(session), &ctx.tried)).await.map_err(|e| {
                let msg = match e {
                    LbError::NoBackend(m) => m,
                    LbError::Plugin(e) => e.message,
                };
                Error::explain(HTTPStatus(503), msg)
            })?,
        };
        ctx.begin(i);
        Ok(Box::new(upstream.backends()[i].peer.clone()))
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        if ctx.fail_current() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(&self, session: &mut Session, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        for h in spoofed_names(&req.headers, self.request_id_header.name.as_str()) {
            req.remove_header(&h);
        }
        if let Some(one) = joined_cookies(&req.headers) {
            req.insert_header(http::header::COOKIE, one)?;
        }
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
            let mut xff = String::with_capacity(48);
            if let Some(prior) = req.headers.get(&XFF_NAME).and_then(|v| v.to_str().ok()) {
                xff.push_str(prior);
                xff.push_str(", ");
            }
            crate::accesslog::line::addr(&mut xff, ip);
            req.insert_header(XFF, xff)?;
        }
        req.insert_header(self.request_id_header.case(), ctx.request_id.as_str())?;
        req.insert_header(XFP, if crate::tls::is_tls(session) { "https" } else { "http" })?;
        for (name, value) in ctx.session_headers() {
            req.append_header(name.clone(), value.clone())?;
        }
        // From here the backend may receive the request and act on it.
        ctx.sent = true;
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            // An interim answer (`100 Continue`, `103 Early Hints`): the
            // final one follows, and it is the one the session and the log
            // are about. Internal headers go here too.
            for h in internal_names(&resp.headers) {
                resp.remove_header(&h);
            }
            return Ok(());
        }
        if let Some(hsts) = self.hsts.as_ref().filter(|_| crate::tls::is_tls(session)) {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        let add = if ctx.session.is_some() {
            Box::pin(counting(ctx.faults_if(true), ctx.finish_session(resp.status.as_u16(), Some(&resp.headers)))).await
        } else {
            Vec::new()
        };
        for h in internal_names(&resp.headers) {
            resp.remove_header(&h);
        }
        match resp.headers.get(http::header::TRAILER).and_then(public_trailers) {
            Some(kept) if kept.is_empty() => drop(resp.remove_header(&http::header::TRAILER)),
            Some(kept) => resp.insert_header(http::header::TRAILER, kept)?,
            None => {}
        }
        for (name, value) in add {
            resp.append_header(name, value)?;
        }
        resp.insert_header(self.request_id_header.case(), ctx.request_id.as_str())?;
        Ok(())
    }

    /// A backend's trailers (gRPC over h2 and h2c) reach an HTTP/2 client:
    /// internal ones are stripped as from the response's headers.
    fn upstream_response_trailer_filter(&self, _session: &mut Session, trailers: &mut http::HeaderMap, _ctx: &mut Ctx) -> Result<()> {
        for h in internal_names(trailers) {
            trailers.remove(&h);
        }
        Ok(())
    }

    /// A usage an ongoing decision revoked stops here: the client sees
    /// the stream closed.
    fn response_body_filter(&self, _session: &mut Session, _body: &mut Option<Bytes>, _end: bool, ctx: &mut Ctx) -> Result<Option<Duration>> {
        if ctx.revoked() {
            return Error::e_explain(HTTPStatus(403), "the usage was revoked by an ongoing access decision");
        }
        if ctx.session_revoked() {
            return Error::e_explain(HTTPStatus(403), "the user's sessions were revoked (DELETE /sessions)");
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (HTTPStatus(code), _) => *code,
            (ReadTimedout | WriteTimedout, pingora::ErrorSource::Upstream) => 504,
            (_, pingora::ErrorSource::Upstream) => 502,
            (ConnectionClosed | ReadError | WriteError, pingora::ErrorSource::Downstream) => 0,
            (_, pingora::ErrorSource::Downstream) => 400,
            _ => 500,
        };
        // Headers already went out (a revoked stream): no answer fits; the
        // connection closes and the client sees the stream end early.
        if code > 0 && session.response_written().is_none() {
            let why = explain(e);
            if let Err(err) = Box::pin(self.answer(session, ctx, code, &why)).await {
                tracing::debug!("could not send the {code} answer: {err}");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// A client that hangs up is routine: logged at debug, not as an error.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        if ctx.revoked() || ctx.session_revoked() {
            return true; // logged with its reason when it was revoked
        }
        let hang_up = matches!(e.esource(), pingora::ErrorSource::Downstream) && matches!(e.etype(), ConnectionClosed | ReadError | WriteError);
        if hang_up {
            tracing::debug!("client went away: {e}");
        }
        hang_up
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // A client that hangs up is not the backend's failure.
        let upstream_failed = e.is_some_and(|e| matches!(e.esource, pingora::ErrorSource::Upstream));
        // No response reached `response_filter`: the session still learns
        // the outcome (and frees its locks); its headers have nowhere to go.
        if ctx.session.is_some() {
            Box::pin(counting(ctx.faults_if(true), ctx.finish_session(if status == 0 { 502 } else { status }, None))).await;
        }
        if ctx.access.is_some() {
            Box::pin(counting(ctx.faults_if(true), ctx.finish_access(status, e.is_some()))).await;
        }
        ctx.finish(status, upstream_failed);
        if let Some(log) = &self.access_log {
            log.write(|agent| ctx.log_record(session, status, agent));
        }
    }
}

impl Gateway {
    /// The route's session policy: forward (with its pin and headers) or
    /// answer. A failed policy answers 503 unless it falls back.
    async fn session_before(&self, session: &mut Session, ctx: &mut Ctx, policy: &dyn crate::seams::SessionPolicy, route: &str) -> Result<bool> {
        let req = ctx.view(session);
        match policy.before(&req).await {
            Ok((SessionAction::Forward(f), run)) => {
                ctx.with_session(run, f);
                Ok(false)
            }
            Ok((SessionAction::Reply(r), run)) => {
                ctx.replied_session = run.outcome();
                crate::metrics::metrics().session_replies.with_label_values(&[route, &r.status.to_string()]).inc();
                let mut resp = ResponseHeader::build(r.status, Some(r.headers.len() + 3))?;
                for (name, value) in r.headers {
                    resp.append_header(name, value)?;
                }
                resp.insert_header(http::header::CONTENT_LENGTH, r.body.len().to_string())?;
                resp.insert_header(self.request_id_header.case(), ctx.request_id.as_str())?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(Bytes::from(r.body)), true).await?;
                Ok(true)
            }
            Err(e) => {
                self.answer(session, ctx, 503, &format!("session plugin {:?} failed: {}", policy.name(), e.message)).await?;
                Ok(true)
            }
        }
    }

    /// A cleartext request's 308 to the same host and path over HTTPS.
    async fn to_https(&self, session: &mut Session, ctx: &Ctx, port: u16) -> Result<()> {
        let h = session.req_header();
        let host = routes::host_of(h).map_or("localhost", strip_port);
        let authority = if port == 443 { host.to_string() } else { format!("{host}:{port}") };
        let location = format!("https://{authority}{}", h.uri.path_and_query().map_or("/", |p| p.as_str()));
        let Ok(location) = http::HeaderValue::from_str(&location) else {
            return self.answer(session, ctx, 400, "the Host header cannot form an https URL").await;
        };
        let mut resp = ResponseHeader::build(308, Some(3))?;
        resp.insert_header(http::header::LOCATION, location)?;
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
        resp.insert_header(self.request_id_header.case(), ctx.request_id.as_str())?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// An error the gateway answers itself: a short text body naming the
    /// cause and the request id, the id header, and no `Server` header.
    async fn answer(&self, session: &mut Session, ctx: &Ctx, code: u16, why: &str) -> Result<()> {
        let reason = http::StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
        let body = Bytes::from(format!("{code} {reason}: {why}\nrequest id: {}\n", ctx.request_id));
        let mut resp = ResponseHeader::build(code, Some(4))?;
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "private, no-store")?;
        resp.insert_header(self.request_id_header.case(), ctx.request_id.as_str())?;
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// Why the gateway answers with an error, for the client: the timeouts say
/// which limit ran out (with Pingora's detail), the rest their context.
fn explain(e: &Error) -> String {
    let detail = || e.to_string().trim().to_string();
    match (e.etype(), e.esource()) {
        (ReadTimedout, pingora::ErrorSource::Upstream) => format!("the backend did not answer within read_timeout_ms ({})", detail()),
        (WriteTimedout, pingora::ErrorSource::Upstream) => format!("the backend did not take the request within write_timeout_ms ({})", detail()),
        _ => e.context.as_ref().map_or_else(|| e.etype().as_str().to_string(), |c| c.as_str().to_string()),
    }
}

/// The internal header names of `headers` ([`is_internal`]), to remove;
/// nothing is allocated when there are none (the usual case).
pub(super) fn internal_names(headers: &http::HeaderMap) -> Vec<http::HeaderName> {
    names_where(headers, |k| is_internal(k))
}

/// What a client's request must not carry to the backend: internal
/// headers, and spellings with `_` of the headers the gateway sets for the
/// backend (`x-forwarded-for`, `x-forwarded-proto`, the request id), which
/// a backend that maps `_` to `-` could read in place of the gateway's.
fn spoofed_names(headers: &http::HeaderMap, request_id: &str) -> Vec<http::HeaderName> {
    names_where(headers, |k| is_internal(k) || (k.contains('_') && [XFF, XFP, request_id].iter().any(|o| reads_as(k, o, false))))
}

/// A `Trailer` header's names without internal ones (their trailers are
/// stripped); `None` when it names none, the usual case.
fn public_trailers(v: &http::HeaderValue) -> Option<String> {
    let names = v.to_str().ok()?;
    let internal = |n: &str| is_internal(&n.trim().to_ascii_lowercase());
    names.split(',').any(internal).then(|| names.split(',').filter(|n| !internal(n)).map(str::trim).collect::<Vec<_>>().join(", "))
}

/// An HTTP/2 client may split its cookies over several `cookie` fields;
/// RFC 9113 §8.2.3 has them joined with `; ` before an HTTP/1.1 hop, whose
/// servers read one `Cookie` header (RFC 6265 §5.4). `None` with at most
/// one, the usual case.
fn joined_cookies(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let mut all = headers.get_all(http::header::COOKIE).iter();
    let first = all.next()?;
    let mut rest = all.peekable();
    rest.peek()?;
    let mut one = first.as_bytes().to_vec();
    for v in rest {
        one.extend_from_slice(b"; ");
        one.extend_from_slice(v.as_bytes());
    }
    http::HeaderValue::from_bytes(&one).ok()
}

fn names_where(headers: &http::HeaderMap, pick: impl Fn(&str) -> bool) -> Vec<http::HeaderName> {
    match headers.keys().any(|k| pick(k.as_str())) {
        true => headers.keys().filter(|k| pick(k.as_str())).cloned().collect(),
        false => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_internal, spoofed_names, INTERNAL_PREFIX};

    #[test]
    fn internal_names_include_the_spellings_a_cgi_backend_reads_alike() {
        for name in ["x-switchyard-session", "x_switchyard_session", "x-switchyard_session-id", "x_switchyard-", INTERNAL_PREFIX] {
            assert!(is_internal(name), "{name}");
        }
        for name in ["x-switchyard", "x_switchyar", "xx-switchyard-session", "x-switchyard.session", "cookie", ""] {
            assert!(!is_internal(name), "{name}");
        }
    }

    #[test]
    fn a_client_cannot_spell_the_gateways_forwarding_headers_with_underscores() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [("x_forwarded_for", "6.6.6.6"), ("x-forwarded-for", "10.0.0.1"), ("x_forwarded-proto", "https"), ("x_request_id", "forged"), ("x_switchyard_session", "e30="), ("user_agent", "kept"), ("x_forwarded_forx", "kept")] {
            h.append(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
        }
        let mut gone: Vec<_> = spoofed_names(&h, "x-request-id").iter().map(|n| n.as_str().to_string()).collect();
        gone.sort();
        assert_eq!(gone, ["x_forwarded-proto", "x_forwarded_for", "x_request_id", "x_switchyard_session"]);
        assert!(spoofed_names(&http::HeaderMap::new(), "x-request-id").is_empty());
    }

    #[test]
    fn an_h2_clients_cookie_crumbs_are_joined_into_one_header() {
        let mut h = http::HeaderMap::new();
        assert!(super::joined_cookies(&h).is_none());
        h.append(http::header::COOKIE, http::HeaderValue::from_static("a=1"));
        assert!(super::joined_cookies(&h).is_none(), "one header stays as it is");
        h.append(http::header::COOKIE, http::HeaderValue::from_static("b=2; c=3"));
        assert_eq!(super::joined_cookies(&h).unwrap(), "a=1; b=2; c=3");
    }

    #[test]
    fn a_trailer_header_names_no_internal_trailer() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(super::public_trailers(&v("grpc-status, X-Switchyard-Session-Set,x_switchyard_a, grpc-message")).as_deref(), Some("grpc-status, grpc-message"));
        assert_eq!(super::public_trailers(&v("grpc-status, grpc-message")), None);
    }
}
