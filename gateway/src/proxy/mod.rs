//! The Pingora `ProxyHttp` implementation. Each phase method is short and
//! calls one seam; per-request state lives in [`Ctx`].
//!
//! | phase                    | seam / work                                   |
//! |--------------------------|-----------------------------------------------|
//! | `request_filter`         | route match, request id, `RequestView`        |
//! | `upstream_peer`          | lb: `Upstream::pick` -> `LbPolicy::select`    |
//! | `fail_to_connect`        | passive stats, retry on another backend       |
//! | `upstream_request_filter`| X-Forwarded-For, request id, strip internals  |
//! | `response_filter`        | strip internal headers, echo request id       |
//! | `logging`                | stats fed back to lb, request metrics         |

mod ctx;
mod routes;

pub use ctx::Ctx;
pub use routes::Router;

use crate::seams::LbError;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use std::time::Duration;

/// Headers the gateway owns: stripped from client requests and from
/// responses, so clients can neither inject nor read them.
pub const INTERNAL_PREFIX: &str = "x-switchyard-";

/// The gateway's HTTP proxy.
pub struct Gateway {
    pub router: Router,
    pub request_id_header: http::HeaderName,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some((upstream, route)) = self.router.route(session.req_header()) else {
            session.respond_error(404).await?;
            return Ok(true);
        };
        ctx.start(upstream, route, session, &self.request_id_header);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (upstream, req) = ctx.target();
        let i = upstream.pick(&req, &ctx.tried).await.map_err(|e| {
            let msg = match e {
                LbError::NoBackend(m) => m,
                LbError::Plugin(e) => e.message,
            };
            Error::explain(HTTPStatus(503), msg)
        })?;
        let backend = &upstream.backends()[i];
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_millis(upstream.connect_timeout_ms));
        ctx.begin(i);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        if ctx.fail_current() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(&self, session: &mut Session, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        strip_internal(req.headers.keys().cloned().collect(), |h| {
            req.remove_header(&h);
        });
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string()) {
            let xff = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip,
            };
            req.insert_header("x-forwarded-for", xff)?;
        }
        req.insert_header(self.request_id_header.clone(), ctx.request_id.as_str())?;
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        strip_internal(resp.headers.keys().cloned().collect(), |h| {
            resp.remove_header(&h);
        });
        resp.insert_header(self.request_id_header.clone(), ctx.request_id.as_str())?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // A client that hangs up is not the backend's failure.
        let upstream_failed = e.is_some_and(|e| matches!(e.esource, pingora::ErrorSource::Upstream));
        ctx.finish(status, upstream_failed);
    }
}

fn strip_internal(names: Vec<http::HeaderName>, mut remove: impl FnMut(http::HeaderName)) {
    names.into_iter().filter(|h| h.as_str().starts_with(INTERNAL_PREFIX)).for_each(&mut remove);
}
