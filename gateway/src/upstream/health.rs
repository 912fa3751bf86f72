//! Active health checks (TCP connect or HTTP GET) run as a Pingora
//! background service; they also end passive ejections when they expire.
//! An HTTP check goes through Pingora's connector with the backend's own
//! peer, so it speaks what requests speak (TLS, h2, h2c).

use super::Upstream;
use crate::config::CheckKind;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use tokio::net::TcpStream;

/// Probes every backend of every upstream on its upstream's interval; a
/// config reload restarts it on the new upstreams (verdicts carry over
/// with the backends' stats).
pub struct HealthChecker {
    pub live: Arc<crate::live::Live>,
}

#[derive(Default, Clone, Copy)]
struct Streak {
    ok: u32,
    fail: u32,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, shutdown: ShutdownWatch) {
        let probes = |r: &crate::live::Routing| r.upstreams.iter().cloned().map(|u| tokio::spawn(check_loop(u))).collect();
        self.live.per_generation(shutdown, probes).await;
    }
}

async fn check_loop(u: Arc<Upstream>) {
    let mut streaks = vec![Streak::default(); u.backends().len()];
    let connector = Connector::new(None);
    let mut tick = tokio::time::interval(Duration::from_millis(u.health.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Backends are few and each probe is bounded by the timeout, so
        // probing them in turn is enough.
        let mut changed = false;
        for (i, streak) in streaks.iter_mut().enumerate() {
            let ok = probe(&u, &connector, &u.backends()[i]).await;
            changed |= apply(&u, i, ok, streak);
        }
        if changed {
            u.bump_version();
        }
    }
}

/// Fold one probe result into the backend's verdict; true if health changed.
/// A passively ejected backend returns after `eject_ms` and then `rise`
/// good probes in a row (with no active check, after `eject_ms`).
fn apply(u: &Upstream, i: usize, ok: Option<bool>, s: &mut Streak) -> bool {
    let b = &u.backends()[i];
    let was = b.is_healthy();
    if let Some(ok) = ok {
        if ok {
            s.ok += 1;
            s.fail = 0;
        } else {
            s.fail += 1;
            s.ok = 0;
        }
        if ok && s.ok >= u.health.rise {
            b.stats.set_active_up(true);
        } else if !ok && s.fail >= u.health.fall {
            b.stats.set_active_up(false);
        }
    }
    b.stats.count_probe(ok, u.health.rise);
    b.stats.refresh();
    let now = b.is_healthy();
    if now != was {
        tracing::warn!(upstream = %u.name(), backend = %b.address, healthy = now, was, "health changed");
        let to = if now { "up" } else { "down" };
        crate::metrics::metrics().health_transitions.with_label_values(&[u.name(), b.address.as_str(), to]).inc();
    }
    now != was
}

/// `None` when the upstream has no active check.
async fn probe(u: &Upstream, connector: &Connector, b: &super::Backend) -> Option<bool> {
    let timeout = Duration::from_millis(u.health.timeout_ms);
    let check = async {
        match u.health.check {
            CheckKind::None => None,
            CheckKind::Tcp => Some(TcpStream::connect(b.addr).await.is_ok()),
            CheckKind::Http => Some(http_ok(connector, &b.peer, &b.address, &u.health.path).await.unwrap_or(false)),
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(r) => r,
        Err(_) => Some(false),
    }
}

/// Any 2xx or 3xx answer to `GET path` is up. The connection is not kept.
async fn http_ok(connector: &Connector, peer: &HttpPeer, authority: &str, path: &str) -> pingora::Result<bool> {
    let (mut session, _) = connector.get_http_session(peer).await?;
    let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
    req.insert_header(http::header::HOST, authority)?;
    req.insert_header(http::header::USER_AGENT, "switchyard-health")?;
    session.write_request_header(Box::new(req)).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let up = session.response_header().is_some_and(|r| (200..400).contains(&r.status.as_u16()));
    session.shutdown().await;
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthSection;

    /// The README's promise: after `eject_ms`, `rise` good probes in a row.
    #[test]
    fn a_passively_ejected_backend_needs_rise_good_probes_after_eject_ms() {
        let health = HealthSection { max_failures: 1, eject_ms: 0, rise: 3, check: CheckKind::Tcp, ..HealthSection::default() };
        let u = super::super::tests::upstream_with(1, health);
        let mut streak = Streak::default();
        // Probes were good all along: the streak is long before the ejection.
        for _ in 0..5 {
            apply(&u, 0, Some(true), &mut streak);
        }
        u.observe(0, Duration::from_millis(1), true);
        assert!(!u.backends()[0].is_healthy());
        assert!(!apply(&u, 0, Some(true), &mut streak), "one good probe after eject_ms is not rise = 3");
        assert!(!apply(&u, 0, Some(true), &mut streak));
        assert!(!u.backends()[0].is_healthy());
        assert!(apply(&u, 0, Some(true), &mut streak), "the third good probe brings it back");
        assert!(u.backends()[0].is_healthy());
        // A bad probe in the run starts the count again.
        u.observe(0, Duration::from_millis(1), true);
        apply(&u, 0, Some(true), &mut streak);
        apply(&u, 0, Some(false), &mut streak);
        apply(&u, 0, Some(true), &mut streak);
        apply(&u, 0, Some(true), &mut streak);
        assert!(!u.backends()[0].is_healthy());
        assert!(apply(&u, 0, Some(true), &mut streak));
    }

    /// With no active check nothing else can bring it back: `eject_ms` does.
    #[test]
    fn without_active_checks_eject_ms_alone_ends_an_ejection() {
        let health = HealthSection { max_failures: 1, eject_ms: 0, check: CheckKind::None, ..HealthSection::default() };
        let u = super::super::tests::upstream_with(1, health);
        u.observe(0, Duration::from_millis(1), true);
        assert!(!u.backends()[0].is_healthy());
        assert!(apply(&u, 0, None, &mut Streak::default()));
        assert!(u.backends()[0].is_healthy());
    }
}
