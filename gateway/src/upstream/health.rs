//! Active health checks (TCP connect or HTTP GET) run as a Pingora
//! background service; they also end passive ejections when they expire.

use super::Upstream;
use crate::config::CheckKind;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probes every backend of every upstream on its upstream's interval.
pub struct HealthChecker {
    pub upstreams: Vec<Arc<Upstream>>,
}

#[derive(Default, Clone, Copy)]
struct Streak {
    ok: u32,
    fail: u32,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self.upstreams.iter().cloned().map(|u| tokio::spawn(check_loop(u))).collect();
        let _ = shutdown.changed().await;
        tasks.iter().for_each(|t| t.abort());
    }
}

async fn check_loop(u: Arc<Upstream>) {
    let mut streaks = vec![Streak::default(); u.backends().len()];
    let mut tick = tokio::time::interval(Duration::from_millis(u.health.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Backends are few and each probe is bounded by the timeout, so
        // probing them in turn is enough.
        let mut changed = false;
        for (i, streak) in streaks.iter_mut().enumerate() {
            let ok = probe(&u, u.backends()[i].addr).await;
            changed |= apply(&u, i, ok, streak);
        }
        if changed {
            u.bump_version();
        }
    }
}

/// Fold one probe result into the backend's verdict; true if health changed.
fn apply(u: &Upstream, i: usize, ok: Option<bool>, s: &mut Streak) -> bool {
    let b = &u.backends()[i];
    let Some(ok) = ok else { return b.stats.refresh() };
    if ok {
        s.ok += 1;
        s.fail = 0;
    } else {
        s.fail += 1;
        s.ok = 0;
    }
    let was = b.is_healthy();
    let changed = if ok && s.ok >= u.health.rise {
        b.stats.set_active_up(true)
    } else if !ok && s.fail >= u.health.fall {
        b.stats.set_active_up(false)
    } else {
        b.stats.refresh()
    };
    if changed {
        let now = b.is_healthy();
        tracing::warn!(upstream = %u.name(), backend = %b.address, healthy = now, was, "health changed");
        let to = if now { "up" } else { "down" };
        crate::metrics::metrics().health_transitions.with_label_values(&[u.name(), b.address.as_str(), to]).inc();
    }
    changed
}

/// `None` when the upstream has no active check.
async fn probe(u: &Upstream, addr: SocketAddr) -> Option<bool> {
    let timeout = Duration::from_millis(u.health.timeout_ms);
    let check = async {
        match u.health.check {
            CheckKind::None => None,
            CheckKind::Tcp => Some(TcpStream::connect(addr).await.is_ok()),
            CheckKind::Http => Some(http_ok(addr, &u.health.path).await.unwrap_or(false)),
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(r) => r,
        Err(_) => Some(false),
    }
}

async fn http_ok(addr: SocketAddr, path: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: switchyard-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    // "HTTP/1.1 200" — any 2xx or 3xx status is up.
    Ok(n >= 12 && buf.starts_with(b"HTTP/1.") && matches!(buf[9], b'2' | b'3'))
}
