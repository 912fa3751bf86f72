//! Reload plugins from disk when a plugin file changes (polled every
//! `watch_ms`), with the same checks as an admin swap; SIGHUP reaches
//! [`reload_if_changed`] through `crate::reload`.

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

/// Watches plugin files (the set a config reload left).
pub struct PluginWatcher {
    pub plugins: Arc<Plugins>,
    pub live: Arc<crate::live::Live>,
}

#[async_trait]
impl BackgroundService for PluginWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let watched = |_: &crate::live::Routing| {
            let slots = self.plugins.all();
            slots.values().filter(|s| s.spec.watch_ms > 0).cloned().map(|slot| tokio::spawn(watch_file(slot))).collect()
        };
        self.live.per_generation(shutdown, watched).await;
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
            let _ = reload_if_changed(&slot, "file").await;
        }
    }
}

/// Swap in the file's bytes unless they are what already runs: `Ok(true)`
/// when they were swapped in, `Err` with why the old version is kept.
pub async fn reload_if_changed(slot: &Arc<PluginSlot>, source: &'static str) -> Result<bool, String> {
    let bytes = match tokio::fs::read(&slot.spec.path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(plugin = %slot.spec.name, "cannot read {}: {e}; old version kept", slot.spec.path.display());
            return Err(format!("cannot read {}: {e}", slot.spec.path.display()));
        }
    };
    if sha256_hex(&bytes) == slot.current().sha256 {
        return Ok(false);
    }
    // The outcome is also logged and counted by the swap itself.
    slot.swap(&bytes, source).await.map(|_| true).map_err(|e| e.to_string())
}
