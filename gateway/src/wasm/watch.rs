//! Reload plugins from disk: when a plugin file changes (polled every
//! `watch_ms`) and on SIGHUP, with the same checks as an admin swap.

use super::registry::{sha256_hex, PluginSlot, Plugins};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a file looked like when last seen.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(slot: &PluginSlot) -> Option<Stamp> {
    let meta = std::fs::metadata(&slot.spec.path).ok()?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

/// Watches plugin files and SIGHUP.
pub struct PluginWatcher {
    pub plugins: Arc<Plugins>,
}

#[async_trait]
impl BackgroundService for PluginWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks: Vec<_> = self
            .plugins
            .iter()
            .filter(|s| s.spec.watch_ms > 0)
            .cloned()
            .map(|slot| tokio::spawn(watch_file(slot)))
            .collect();
        tasks.push(tokio::spawn(on_sighup(self.plugins.clone())));
        let _ = shutdown.changed().await;
        tasks.iter().for_each(|t| t.abort());
    }
}

async fn watch_file(slot: Arc<PluginSlot>) {
    let mut seen = stamp(&slot);
    let mut tick = tokio::time::interval(Duration::from_millis(slot.spec.watch_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&slot);
        if now.is_some() && now != seen {
            seen = now;
            // A writer may still be copying: wait one more tick for the size to settle.
            tokio::time::sleep(Duration::from_millis(slot.spec.watch_ms.min(200))).await;
            seen = stamp(&slot).or(seen);
            reload(&slot, "file").await;
        }
    }
}

async fn on_sighup(plugins: Arc<Plugins>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; plugin reload on signal is off");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading plugins whose files changed");
        for slot in plugins.iter() {
            reload(slot, "sighup").await;
        }
    }
}

/// Swap in the file's bytes unless they are what already runs.
async fn reload(slot: &PluginSlot, source: &'static str) {
    let bytes = match tokio::fs::read(&slot.spec.path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(plugin = %slot.spec.name, "cannot read {}: {e}; old version kept", slot.spec.path.display());
            return;
        }
    };
    if sha256_hex(&bytes) != slot.current().sha256 {
        // The outcome is logged and counted by the swap itself.
        let _ = slot.swap(&bytes, source).await;
    }
}
