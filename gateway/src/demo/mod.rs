//! Demo HTTP backends: the quickstart runs them inside the gateway, tests
//! and benches run them as separate processes (`switchyard demo-backend`).
//! Under `/cart` and `/exam` they serve the session demo app (`cart.rs`).

pub mod cart;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::time::Duration;

/// Answers every request with its name (and, under `/echo`, the request
/// headers it received); `/healthz` is always 200.
pub struct DemoBackend {
    pub name: String,
    /// Delay before answering, to make a slow backend.
    pub delay: Duration,
    /// Status of non-health answers, to make a failing backend.
    pub status: u16,
    /// The cart and exam app.
    pub cart: cart::Cart,
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let health = session.req_header().uri.path() == "/healthz";
        if !self.delay.is_zero() && !health {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(resp) = self.cart(session).await {
            return resp;
        }
        let status = if health { 200 } else { self.status };
        let req = session.req_header();
        let mut body = format!("{}\n", self.name);
        if req.uri.path().starts_with("/echo") {
            // Tests read what the gateway forwarded, and how.
            body.push_str(&format!("version: {:?}\n", req.version));
            let tls = session.digest().and_then(|d| d.ssl_digest.clone());
            if let Some(tls) = tls {
                body.push_str(&format!("tls: {}\n", tls.version));
                if let Some(cert) = tls.extension.get::<crate::tls::ClientCert>() {
                    body.push_str(&format!("client-cert: {}\n", cert.subject));
                }
            }
            for (k, v) in req.headers.iter() {
                body.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
        }
        let body = body.into_bytes();
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header("x-backend", self.name.as_str())
            // An internal header the gateway must never pass to clients.
            .header("x-switchyard-served-by", self.name.as_str())
            .body(body)
            .expect("static response parts are valid")
    }
}

impl DemoBackend {
    /// A plain backend (no cart sessions of its own).
    pub fn new(name: &str, delay: Duration, status: u16) -> Self {
        Self { name: name.to_string(), delay, status, cart: cart::Cart::new(cart::Sessions::Header) }
    }

    /// The cart app's answer, if the path is its.
    async fn cart(&self, session: &mut ServerSession) -> Option<http::Response<Vec<u8>>> {
        let path = session.req_header().uri.path().to_string();
        if !cart::is_app_path(&path) {
            return None;
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body.extend_from_slice(&chunk);
            if body.len() > 1 << 20 {
                break;
            }
        }
        let req = session.req_header();
        let query = req.uri.query().unwrap_or("");
        let answer = self.cart.serve(req.method.as_str(), &path, query, &req.headers, &body)?;
        let mut json = answer.body;
        json["backend"] = serde_json::json!(self.name);
        let body = json.to_string().into_bytes();
        let mut resp = http::Response::builder()
            .status(answer.status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header("x-backend", self.name.as_str());
        for (k, v) in answer.headers {
            resp = resp.header(k, v);
        }
        Some(resp.body(body).expect("valid response parts"))
    }
}

/// A Pingora service running one demo backend.
pub fn service(listen: &str, backend: DemoBackend) -> impl pingora::services::ServiceWithDependents {
    service_over(listen, backend, None, false)
}

/// A demo backend over TLS (with h2 by ALPN) or with cleartext HTTP/2
/// (`h2c`): the backends of the upstream TLS and protocol tests.
pub fn service_over(listen: &str, backend: DemoBackend, tls: Option<pingora::listeners::tls::TlsSettings>, h2c: bool) -> impl pingora::services::ServiceWithDependents {
    let mut app = pingora::apps::http_app::HttpServer::new_app(backend);
    if h2c {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    let mut svc = pingora::services::listening::Service::new(format!("demo {listen}"), app);
    let l = pingora::listeners::ListenerConfig::tcp(listen);
    svc.add_listener(match tls {
        Some(settings) => l.tls(settings),
        None => l,
    });
    svc
}
