//! The admin API on its own listener: plugins, hot swap, rollback,
//! upstreams, SQL backends, a user's sessions (listed and revoked),
//! Prometheus metrics, liveness and a live dashboard. Bearer token on
//! everything but `GET /healthz` and the dashboard page itself (static; its
//! data calls carry the token).

mod canary;
mod client;
mod sessions;
mod views;

pub use client::AdminTarget;

use crate::config::AdminSpec;
use crate::metrics::metrics;
use crate::wasm::Plugins;
use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin API service.
pub struct AdminApi {
    pub spec: AdminSpec,
    pub plugins: Arc<Plugins>,
    /// Routes and upstreams as the last config reload left them.
    pub live: Arc<crate::live::Live>,
    /// The SQL listener, when `[sql]` is on.
    pub sql: Option<Arc<crate::sql::SqlProxy>>,
    /// This node of `[cluster]`, for the `/healthz` detail.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The session store tiers: `/sessions` lists and ends a user's sessions.
    pub stores: Arc<crate::session::Stores>,
    /// `POST /reload` and `/tls`: the same reload SIGHUP runs.
    pub reloader: crate::reload::Reloader,
    /// `[fleet]`: changes made here are written to the fleet store.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// The dashboard: one static page; it asks for the token (login form or
/// `#token=` in the URL fragment, never the query string) and polls the API.
const DASHBOARD: &str = include_str!("dashboard.html");

/// An admin answer before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, value: serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(&value).expect("a JSON value serializes");
        body.push(b'\n');
        Self { status, content_type: "application/json", body }
    }

    fn error(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self::json(status, serde_json::json!({ "error": message.to_string() }))
    }

    fn text(status: StatusCode, content_type: &'static str, body: String) -> Self {
        Self { status, content_type, body: body.into_bytes() }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let reply = self.handle(session).await;
        if reply.status.is_client_error() {
            // The body may be unread: read what is left, then close.
            Box::pin(drain(session, self.spec.max_body)).await;
            session.set_keepalive(None);
        }
        http::Response::builder()
            .status(reply.status)
            .header(http::header::CONTENT_TYPE, reply.content_type)
            .header(http::header::CONTENT_LENGTH, reply.body.len())
            .body(reply.body)
            .expect("static response parts are valid")
    }
}

impl AdminApi {
    async fn handle(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if method == Method::GET && path == "/healthz" && crate::server::DRAINING.load(std::sync::atomic::Ordering::Relaxed) {
            return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into());
        }
        if method == Method::GET && path == "/healthz" {
            let detail = self.cluster.as_ref().map_or_else(String::new, |c| c.health());
            let fleet = self.fleet.as_ref().map_or_else(String::new, |f| f.health());
            return Reply::text(StatusCode::OK, "text/plain", format!("ok\n{detail}{fleet}"));
        }
        if method == Method::GET && (path == "/" || path == "/dashboard") {
            return Reply::text(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into());
        }
        if !self.authorized(session) {
            return Reply::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer TOKEN)");
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["plugins"]) => Reply::json(StatusCode::OK, self.plugins_view()),
            (&Method::GET, ["fleet"]) => match &self.fleet {
                Some(fleet) => Reply::json(StatusCode::OK, fleet.view()),
                None => Reply::error(StatusCode::NOT_FOUND, "no [fleet] is configured"),
            },
            (&Method::GET, ["upstreams"]) => Reply::json(StatusCode::OK, views::upstreams(&self.live.routing().upstreams)),
            (&Method::GET, ["sql"]) => match &self.sql {
                Some(sql) => Reply::json(StatusCode::OK, views::sql(sql)),
                None => Reply::error(StatusCode::NOT_FOUND, "no [sql] listener is configured"),
            },
            (&Method::GET, ["stores"]) => Reply::json(StatusCode::OK, views::stores(&self.stores)),
            (&Method::GET, ["metrics"]) => {
                views::refresh_backend_gauges(&self.live.routing().upstreams);
                Reply::text(StatusCode::OK, "text/plain; version=0.0.4", metrics().render())
            }
            (&Method::GET, ["sessions", "counts"]) => Reply::json(StatusCode::OK, sessions::counts(&self.stores)),
            (&Method::GET | &Method::DELETE, ["sessions"]) => match sessions::principal(session.req_header().uri.query()) {
                Err(why) => Reply::error(StatusCode::BAD_REQUEST, why),
                Ok(p) if method == Method::GET => Reply::json(StatusCode::OK, sessions::list(&self.stores, &p).await),
                Ok(p) => Reply::json(StatusCode::OK, sessions::revoke(&self.stores, &p).await),
            },
            (&Method::POST, ["reload"]) => {
                let report = self.reloader.all("admin").await;
                let status = if report.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
                Reply::json(status, serde_json::to_value(&report).unwrap_or_default())
            }
            (&Method::POST, ["config", "reload"]) => match self.reloader.config.reload().await {
                Ok(report) => Reply::json(StatusCode::OK, serde_json::to_value(&report).unwrap_or_default()),
                Err(errors) => Reply::json(StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "error": "reload refused; the running config keeps serving", "errors": errors })),
            },
            (&Method::GET, ["tls"]) => match &self.reloader.tls {
                Some(tls) => Reply::json(StatusCode::OK, tls.status()),
                None => Reply::error(StatusCode::NOT_FOUND, "no [server.tls] listener is configured"),
            },
            (&Method::POST, ["tls", "reload"]) => match &self.reloader.tls {
                Some(tls) => match self.reloader.tls(tls, "admin") {
                    Ok(status) => Reply::json(StatusCode::OK, status),
                    Err(errors) => Reply::json(StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "error": "reload refused; the old certificates keep serving", "errors": errors })),
                },
                None => Reply::error(StatusCode::NOT_FOUND, "no [server.tls] listener is configured"),
            },
            (&Method::PUT, ["plugins", name]) => self.put_plugin(session, name).await,
            (&Method::GET, ["plugins", name]) => match self.plugins.get(name) {
                Some(_) => {
                    let all = self.plugins_view();
                    let one = all.as_array().and_then(|l| l.iter().find(|p| p["name"] == *name)).cloned().unwrap_or_default();
                    Reply::json(StatusCode::OK, one)
                }
                None => Reply::error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")),
            },
            (&Method::GET, ["plugins", name, "canary"]) => match self.plugins.get(name) {
                Some(slot) => Reply::json(StatusCode::OK, slot.canary_json()),
                None => Reply::error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")),
            },
            (&Method::POST, ["plugins", name, "canary", "promote"]) => self.promote(name).await,
            (&Method::DELETE, ["plugins", name, "canary"]) => self.end_canary(name).await,
            (&Method::PUT, ["plugins", name, "config"]) => self.put_config(session, name).await,
            (&Method::POST, ["plugins", name, "rollback"]) => self.rollback(name).await,
            (&Method::GET, ["plugins", name, "history"]) => match self.plugins.get(name) {
                Some(slot) => Reply::json(StatusCode::OK, views::history(name, &slot.current(), &slot.history())),
                None => Reply::error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")),
            },
            (_, ["plugins"] | ["fleet"] | ["upstreams"] | ["metrics"] | ["healthz"] | ["plugins", _] | ["plugins", _, "rollback"] | ["plugins", _, "history"] | ["plugins", _, "config"] | ["plugins", _, "canary"] | ["plugins", _, "canary", "promote"] | ["sql"] | ["stores"] | ["sessions"] | ["sessions", "counts"] | ["reload"] | ["config", "reload"] | ["tls"] | ["tls", "reload"]) => {
                Reply::error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))
            }
            _ => Reply::error(StatusCode::NOT_FOUND, format!("no admin endpoint {path}")),
        }
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let given = session.get_header(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        given.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.spec.token.as_bytes()))
    }

    /// The plugin a `PUT /plugins/NAME…` names, and the request's body.
    async fn slot_and_body(&self, session: &mut ServerSession, name: &str) -> Result<(Arc<crate::wasm::PluginSlot>, Vec<u8>), Reply> {
        Ok((self.slot(name)?, read_body(session, self.spec.max_body).await?))
    }

    /// The plugin a path names, or 404.
    fn slot(&self, name: &str) -> Result<Arc<crate::wasm::PluginSlot>, Reply> {
        self.plugins.get(name).ok_or_else(|| Reply::error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")))
    }

    /// `PUT /plugins/NAME[?config=JSON][&canary=P…]`: new bytes, with a
    /// new config table when the query gives one (else the running table);
    /// with `canary`, beside the running version for P % of the keys.
    async fn put_plugin(&self, session: &mut ServerSession, name: &str) -> Reply {
        let query = session.req_header().uri.query().map(str::to_string);
        let (config, canary) = match (config_query(query.as_deref()), canary::query(query.as_deref())) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(why), _) | (_, Err(why)) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        let (slot, bytes) = match self.slot_and_body(session, name).await {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let held = match self.fleet_ready(Some(&bytes)).await {
            Ok(held) => held,
            Err(reply) => return reply,
        };
        if let Some((percent, auto)) = canary {
            return match slot.start_canary(&bytes, config, percent, auto).await {
                Ok(run) => self.published(name, "canary", run.json(), held).await,
                Err(e) => Reply::error(StatusCode::BAD_REQUEST, e),
            };
        }
        match slot.swap_with(&bytes, config, "admin").await {
            Ok(v) => self.published(name, "push", views::version(name, &v), held).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e),
        }
    }

    /// `PUT /plugins/NAME/config`: the body is the plugin's new `config`
    /// table as a JSON object; the running bytes are configured with it.
    async fn put_config(&self, session: &mut ServerSession, name: &str) -> Reply {
        let (slot, body) = match self.slot_and_body(session, name).await {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let table = match config_table(&body, "the body") {
            Ok(t) => t,
            Err(why) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        let held = match self.fleet_ready(None).await {
            Ok(held) => held,
            Err(reply) => return reply,
        };
        match slot.reconfigure(table, "admin").await {
            Ok(v) => self.published(name, "config", views::version(name, &v), held).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e),
        }
    }

    async fn promote(&self, name: &str) -> Reply {
        let slot = match self.slot(name) {
            Ok(slot) => slot,
            Err(reply) => return reply,
        };
        let held = match self.fleet_ready(None).await {
            Ok(held) => held,
            Err(reply) => return reply,
        };
        match slot.promote_canary("admin", "promoted through the admin API").await {
            Ok(v) => self.published(name, "promote", views::version(name, &v), held).await,
            Err(e) => Reply::error(StatusCode::CONFLICT, e),
        }
    }

    async fn end_canary(&self, name: &str) -> Reply {
        let slot = match self.slot(name) {
            Ok(slot) => slot,
            Err(reply) => return reply,
        };
        let held = match self.fleet_ready(None).await {
            Ok(held) => held,
            Err(reply) => return reply,
        };
        if !slot.end_canary("admin", "rolled back through the admin API").await {
            return Reply::error(StatusCode::CONFLICT, format!("plugin {name:?} has no canary running"));
        }
        self.published(name, "canary-rollback", slot.canary_json(), held).await
    }

    /// Every plugin, with what each fleet node runs when `[fleet]` is on.
    fn plugins_view(&self) -> serde_json::Value {
        let mut all = views::plugins(&self.plugins);
        if let (Some(fleet), Some(list)) = (&self.fleet, all.as_array_mut()) {
            for p in list {
                let name = p["name"].as_str().unwrap_or_default().to_string();
                p["fleet"] = fleet.plugin_view(&name);
            }
        }
        all
    }

    /// With `[fleet]`, before a change: the store answers (and holds the
    /// upload); else 503 and nothing changes. Hold the guard until the
    /// change is written, so no record from the store lands in between.
    async fn fleet_ready(&self, bytes: Option<&[u8]>) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, Reply> {
        let Some(fleet) = &self.fleet else { return Ok(None) };
        fleet.ready(bytes).await.map(Some).map_err(|e| Reply::error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; nothing was changed")))
    }

    /// A change made here, answered with `body`; with `[fleet]`, written to
    /// the store first, and the body says whether that worked.
    /// The other nodes' answers (`[fleet] confirm_ms`) are awaited after
    /// `held` is released, so this node goes on following the store.
    async fn published(&self, name: &str, action: &str, mut body: serde_json::Value, held: Option<tokio::sync::OwnedMutexGuard<()>>) -> Reply {
        if let Some(fleet) = &self.fleet {
            let written = fleet.publish(name, action, "").await;
            drop(held);
            body["fleet"] = match written {
                Ok(revision) => serde_json::json!({ "written": true, "revision": revision, "nodes": fleet.confirmations(name, revision).await }),
                Err(e) => serde_json::json!({ "written": false, "error": e }),
            };
        }
        Reply::json(StatusCode::OK, body)
    }

    async fn rollback(&self, name: &str) -> Reply {
        let slot = match self.slot(name) {
            Ok(slot) => slot,
            Err(reply) => return reply,
        };
        if slot.previous().is_none() {
            return Reply::error(StatusCode::CONFLICT, format!("plugin {name:?} has no previous version to roll back to"));
        }
        let held = match self.fleet_ready(None).await {
            Ok(held) => held,
            Err(reply) => return reply,
        };
        match slot.rollback().await {
            Ok(v) => self.published(name, "rollback", views::version(name, &v), held).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e),
        }
    }
}

/// A config table given as JSON text: a JSON object, normalized.
fn config_table(text: &[u8], what: &str) -> Result<String, String> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
        Ok(_) => Err(format!("{what} must be a JSON object: the plugin's config table")),
        Err(e) => Err(format!("{what} is not JSON: {e}")),
    }
}

/// The `config=` query parameter of a `PUT /plugins/NAME`, decoded.
fn config_query(query: Option<&str>) -> Result<Option<String>, String> {
    let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
    let Some((_, value)) = pairs.into_iter().find(|(k, _)| k == "config") else { return Ok(None) };
    config_table(value.as_bytes(), "the config query parameter").map(Some)
}

/// Read and drop what is left of a refused request's body (at most
/// `limit` bytes, for at most a second), so a client still sending it (a
/// `plugin push` with a wrong token) reads the answer instead of a reset
/// on its write, as nginx's lingering close does. A client that asked
/// `Expect: 100-continue` sends nothing more after a final answer.
async fn drain(session: &mut ServerSession, limit: usize) {
    if session.get_header(http::header::EXPECT).is_some() {
        return;
    }
    let mut left = limit;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while let Ok(Some(chunk)) = session.read_request_body().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Read a request body of at most `limit` bytes; 413 past it, 400 if the
/// client breaks off.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, Reply> {
    let too_big = || Reply::error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over the {limit}-byte limit (admin.max_body_mb)"));
    let declared = session.get_header(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    if session.get_header(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")) {
        let _ = session.write_continue_response().await;
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Reply::error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))),
        }
    }
}

/// Compare secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Pingora service running the admin API.
pub fn service(api: AdminApi) -> impl pingora::services::ServiceWithDependents {
    let listen = api.spec.listen.to_string();
    let mut svc = pingora::services::listening::Service::new("admin".into(), pingora::apps::http_app::HttpServer::new_app(api));
    svc.add_tcp(&listen);
    svc
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!super::constant_time_eq(b"secret-token", b"secret-tokem"));
        assert!(!super::constant_time_eq(b"secret", b"secret-token"));
    }
}
