//! Demo HTTP backends: the quickstart runs them inside the gateway, tests
//! and benches run them as separate processes (`switchyard demo-backend`).

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::time::Duration;

/// Answers every request with its name; `/healthz` is always 200.
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
        let body = format!("{}\n", self.name).into_bytes();
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header("x-backend", self.name.as_str())
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
