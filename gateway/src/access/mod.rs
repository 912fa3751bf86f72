//! The access seam's host side (UCON enforcement): gather a usage's
//! attributes (a verified token, the static attribute file, mutable
//! counters; the route's object table and path captures; method -> right;
//! time, method and client address), ask the route's policy, apply the
//! updates it names atomically, re-check while the response lasts, and fail
//! closed.

mod token;

use crate::config::{AccessSpec, RouteAccessSpec};
use crate::metrics::metrics;
use crate::seams::{AccessCheck, AccessDecision, AttrUpdate, RequestView, Usage, UsageOutcome};
use crate::session::{StoreError, Stores};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Subject attributes and mutable counters, shared by every route.
pub struct AccessHost {
    tokens: token::Verifier,
    token_cookie: String,
    statics: std::collections::BTreeMap<String, Map<String, Value>>,
    mutable: Vec<String>,
    central: bool,
    stores: Arc<Stores>,
}

/// Why a request may not proceed: its status and the reason it is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }
}

impl AccessHost {
    pub fn new(spec: &AccessSpec, stores: Arc<Stores>) -> Self {
        let keys = spec.keys.iter().map(|k| token::TokenKey { kid: k.kid.clone(), alg: k.alg, key: k.key.clone() }).collect();
        Self {
            tokens: token::Verifier::new(keys, spec.audience.clone(), spec.issuer.clone()),
            token_cookie: spec.token_cookie.clone(),
            statics: spec.statics.clone(),
            mutable: spec.mutable.clone(),
            central: spec.mutable_central,
            stores,
        }
    }

    /// The token's claims: `Ok(None)` without a token (an anonymous
    /// subject), `Err` with why a presented token is refused.
    fn claims(&self, req: &RequestView) -> Result<Option<Map<String, Value>>, String> {
        let token = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .or_else(|| req.cookie(&self.token_cookie));
        let Some(token) = token else { return Ok(None) };
        self.tokens.verify(token, now_ms() / 1000).map(Some)
    }

    fn counter_key(sub: &str, name: &str) -> String {
        format!("ucon:{sub}:{name}")
    }

    async fn counter(&self, key: &str) -> Result<i64, StoreError> {
        if self.central {
            self.stores.central.as_ref().ok_or(StoreError::NotConfigured)?.counter(key).await
        } else {
            Ok(self.stores.local.counter(key))
        }
    }

    async fn update(&self, key: &str, u: &AttrUpdate, bounded: bool) -> Result<Result<i64, i64>, StoreError> {
        let (min, max) = if bounded { (u.min, u.max) } else { (None, None) };
        if self.central {
            self.stores.central.as_ref().ok_or(StoreError::NotConfigured)?.update_counter(key, u.delta, min, max).await
        } else {
            Ok(self.stores.local.update_counter(key, u.delta, min, max))
        }
    }

    /// The subject: id and attributes (claims, static, mutable).
    async fn subject(&self, req: &RequestView) -> Result<(String, Map<String, Value>), Refusal> {
        let claims = self.claims(req).map_err(|e| {
            count("deny", "invalid token");
            Refusal::new(401, format!("invalid token: {e}"))
        })?;
        let mut attrs = claims.unwrap_or_default();
        // A verified client certificate (mTLS) adds its subject; without a
        // token its common name is the subject id. The gateway owns these
        // names: a token's own `tls_*` claims never stand in for a certificate.
        attrs.remove("tls_subject");
        attrs.remove("tls_cn");
        if let Some(cert) = &req.client_cert {
            attrs.insert("tls_subject".into(), json!(cert.subject));
            if let Some(cn) = &cert.cn {
                attrs.insert("tls_cn".into(), json!(cn));
                attrs.entry("sub").or_insert_with(|| json!(cn));
            }
        }
        let sub = attrs.get("sub").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(s) = self.statics.get(&sub) {
            for (k, v) in s {
                attrs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !sub.is_empty() {
            self.mutable_into(&sub, &mut attrs).await?;
        }
        Ok((sub, attrs))
    }

    async fn mutable_into(&self, sub: &str, attrs: &mut Map<String, Value>) -> Result<(), Refusal> {
        for name in &self.mutable {
            let v = self.counter(&Self::counter_key(sub, name)).await.map_err(store_refusal)?;
            attrs.insert(name.clone(), json!(v));
        }
        Ok(())
    }

    /// Apply `updates` in order; if one is refused or fails, undo the
    /// ones applied and say why.
    async fn reserve(&self, sub: &str, updates: &[AttrUpdate]) -> Result<(), Refusal> {
        for (i, u) in updates.iter().enumerate() {
            let outcome = self.update(&Self::counter_key(sub, &u.name), u, true).await;
            let refusal = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => Refusal::new(403, u.reason.clone()),
                Err(e) => store_refusal(e),
            };
            for done in updates[..i].iter().rev() {
                let undo = AttrUpdate { delta: -done.delta, ..done.clone() };
                if let Err(e) = self.update(&Self::counter_key(sub, &done.name), &undo, false).await {
                    tracing::error!(subject = sub, attribute = %done.name, "could not undo a reservation: {e:?}");
                }
            }
            return Err(refusal);
        }
        Ok(())
    }

    /// Post-updates: best effort, bounds respected, refusals logged.
    async fn settle(&self, sub: &str, updates: &[AttrUpdate]) {
        for u in updates {
            match self.update(&Self::counter_key(sub, &u.name), u, true).await {
                Ok(Ok(_)) => {}
                Ok(Err(current)) => tracing::debug!(subject = sub, attribute = %u.name, current, "post-update left out: {}", u.reason),
                Err(e) => {
                    metrics().access_store_errors.inc();
                    tracing::error!(subject = sub, attribute = %u.name, "post-update failed: {e:?}");
                }
            }
        }
    }
}

fn store_refusal(e: StoreError) -> Refusal {
    metrics().access_store_errors.inc();
    count("deny", "attribute store unavailable");
    Refusal::new(503, format!("access check unavailable: the attribute store failed ({e:?}); try again"))
}

fn count(result: &str, reason: &str) {
    let reason: String = reason.chars().take(64).collect();
    metrics().access_decisions.with_label_values(&[result, reason.as_str()]).inc();
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Context attributes now.
fn context(req: &RequestView) -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let days = secs / 86_400;
    json!({
        "now_ms": ms,
        "hour": (secs / 3600) % 24,
        "minute": (secs / 60) % 60,
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        "weekday": (days + 3) % 7,
        "method": req.method,
        "client_ip": req.client_ip.map(|ip| ip.to_string()),
    })
    .to_string()
}

/// One route's access check.
pub struct RouteGate {
    pub host: Arc<AccessHost>,
    pub policy: Arc<dyn AccessCheck>,
    pub spec: RouteAccessSpec,
}

/// A usage that was admitted, until it ends.
pub struct Admitted {
    usage: Usage,
    sub: String,
    req: Arc<RequestView>,
    started: Instant,
    /// Set when an ongoing decision revokes the usage.
    pub revoked: Arc<AtomicBool>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

impl RouteGate {
    /// The object: the route's table and the path's captures.
    fn object(&self, path: &str) -> Map<String, Value> {
        let mut obj = self.spec.object.clone();
        if let Some(pattern) = &self.spec.pattern {
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            if segs.len() == pattern.len() && pattern.iter().zip(&segs).all(|(p, s)| (p.starts_with('{') && p.ends_with('}')) || p == s) {
                for (p, s) in pattern.iter().zip(segs) {
                    if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                        obj.insert(name.to_string(), json!(s));
                    }
                }
            }
        }
        obj
    }

    fn right(&self, method: &str) -> String {
        self.spec.rights.get(method).cloned().unwrap_or_else(|| if matches!(method, "GET" | "HEAD" | "OPTIONS") { "read".into() } else { "write".into() })
    }

    /// Decide a request: admitted (with reservations made), or refused.
    pub async fn admit(&self, req: &Arc<RequestView>) -> Result<Admitted, Refusal> {
        let started = Instant::now();
        let (sub, subject) = self.host.subject(req).await?;
        let usage = Usage {
            subject: Value::Object(subject).to_string(),
            object: Value::Object(self.object(&req.path)).to_string(),
            right: self.right(&req.method),
            context: context(req),
        };
        let decision = self.policy.pre(&usage).await;
        metrics().access_decision_seconds.observe(started.elapsed().as_secs_f64());
        let (pre_updates, ongoing) = match decision {
            Err(e) => {
                count("deny", "plugin fault");
                return Err(Refusal::new(503, format!("access check unavailable: plugin {:?} failed ({})", self.policy.name(), e.message)));
            }
            Ok(AccessDecision::Deny(reason)) => {
                count("deny", &reason);
                return Err(Refusal::new(403, reason));
            }
            Ok(AccessDecision::Obligation { reason, fulfil_at }) => {
                count("obligation", &reason);
                return Err(Refusal::new(403, format!("{reason}: {fulfil_at}")));
            }
            Ok(AccessDecision::Permit { pre_updates, ongoing_every_ms }) => (pre_updates, ongoing_every_ms),
        };
        if !pre_updates.is_empty() && sub.is_empty() {
            count("deny", "anonymous subject");
            return Err(Refusal::new(403, "this usage updates subject attributes: present a token"));
        }
        self.host.reserve(&sub, &pre_updates).await.inspect_err(|r| count("deny", &r.reason))?;
        count("permit", "");
        let mut admitted = Admitted { usage, sub, req: req.clone(), started: Instant::now(), revoked: Arc::new(AtomicBool::new(false)), ticker: None };
        if let Some(ms) = ongoing.filter(|ms| *ms > 0) {
            admitted.ticker = Some(tokio::spawn(self.watch(&admitted, ms)));
        }
        Ok(admitted)
    }

    /// Re-run the ongoing decision every `ms` with fresh context and
    /// mutable attributes; a revoke (or a fault: fail-closed) sets the flag.
    fn watch(&self, a: &Admitted, ms: u32) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (host, policy, revoked, req, sub, started) = (self.host.clone(), self.policy.clone(), a.revoked.clone(), a.req.clone(), a.sub.clone(), a.started);
        let mut usage = a.usage.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(u64::from(ms)));
            tick.tick().await;
            loop {
                tick.tick().await;
                usage.context = context(&req);
                let mut subject: Map<String, Value> = serde_json::from_str(&usage.subject).unwrap_or_default();
                let why = match host.mutable_into(&sub, &mut subject).await {
                    Err(r) => Some(r.reason),
                    Ok(()) => {
                        usage.subject = Value::Object(subject).to_string();
                        match policy.ongoing(&usage, started.elapsed().as_millis() as u64).await {
                            Ok(Ok(())) => None,
                            Ok(Err(reason)) => Some(reason),
                            Err(e) => Some(format!("ongoing check failed: {}", e.message)),
                        }
                    }
                };
                if let Some(reason) = why {
                    revoked.store(true, Ordering::Relaxed);
                    metrics().access_revocations.inc();
                    tracing::warn!(subject = %sub, right = %usage.right, "usage revoked: {reason}");
                    return;
                }
            }
        }
    }

    /// The usage ended: its post-updates. `sent`: the request reached a
    /// backend; `upstream_status`: what the backend answered, if it did.
    pub async fn finish(&self, a: &Admitted, status: u16, failed: bool, sent: bool, upstream_status: Option<u16>) {
        let completed = !failed && status > 0 && status < 500 && !a.revoked.load(Ordering::Relaxed);
        match self.policy.post(&a.usage, UsageOutcome { status, completed, sent, upstream_status }).await {
            Ok(updates) if !a.sub.is_empty() => self.host.settle(&a.sub, &updates).await,
            Ok(_) => {}
            Err(e) => tracing::error!(plugin = %self.policy.name(), "post-update failed, no attribute changed: {}", e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_names_the_method() {
        let req = RequestView { method: "POST".into(), client_ip: Some([127, 0, 0, 1].into()), ..Default::default() };
        let ctx: Value = serde_json::from_str(&context(&req)).unwrap();
        assert_eq!(ctx["method"], "POST");
        assert_eq!(ctx["client_ip"], "127.0.0.1");
        assert!(ctx["hour"].as_u64().is_some_and(|h| h < 24));
    }
}
