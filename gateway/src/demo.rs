//! Demo HTTP backends: the quickstart runs them inside the gateway, tests
//! and benches run them as separate processes (`switchyard demo-backend`).

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
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let health = session.req_header().uri.path() == "/healthz";
        if !self.delay.is_zero() && !health {
            tokio::time::sleep(self.delay).await;
        }
        let status = if health { 200 } else { self.status };
        let req = session.req_header();
        let mut body = format!("{}\n", self.name);
        if req.uri.path().starts_with("/echo") {
            // Tests read what the gateway forwarded.
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

/// A Pingora service running one demo backend.
pub fn service(listen: &str, backend: DemoBackend) -> impl pingora::services::ServiceWithDependents {
    let mut svc = pingora::services::listening::Service::new(
        format!("demo {}", backend.name),
        pingora::apps::http_app::HttpServer::new_app(backend),
    );
    svc.add_tcp(listen);
    svc
}
