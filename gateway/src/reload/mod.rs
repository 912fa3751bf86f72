//! One reload path for what changes without a restart: SIGHUP, a changed
//! file and the admin API (`POST /reload`, `POST /config/reload`,
//! `POST /tls/reload`) all reload the config file, plugins and TLS
//! certificates through [`Reloader`].

mod config;

pub use config::{ConfigReload, ConfigReport};

use crate::tls::TlsHub;
use crate::wasm::Plugins;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// What can be reloaded, and the watchers that trigger it.
#[derive(Clone)]
pub struct Reloader {
    pub plugins: Arc<Plugins>,
    pub tls: Option<Arc<TlsHub>>,
    /// The config file the gateway runs.
    pub config: Arc<ConfigReload>,
}

/// The outcome of one reload, as the admin API answers it.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// What the config file's reload applied (absent when it was refused:
    /// see `errors`).
    pub config: Option<ConfigReport>,
    /// Plugins whose file changed and were swapped (or refused: see their history).
    pub plugins: Vec<String>,
    /// The certificates serving now, when TLS is on.
    pub tls: Option<serde_json::Value>,
    /// Why a part was refused; the old version keeps serving.
    pub errors: Vec<String>,
    /// How many of `errors` (the config file's, first) are logged already.
    #[serde(skip)]
    logged: usize,
}

impl Reloader {
    /// The config file, then every plugin whose file changed, then the
    /// certificates. A refused part leaves its old version serving and
    /// does not hold the others back.
    pub async fn all(&self, source: &'static str) -> Report {
        let mut report = Report { config: None, plugins: Vec::new(), tls: None, errors: Vec::new(), logged: 0 };
        match self.config.reload().await {
            Ok(r) => report.config = Some(r),
            Err(e) => report.errors.extend(e),
        }
        report.logged = report.errors.len();
        for slot in self.plugins.all().values() {
            match crate::wasm::reload_if_changed(slot, source).await {
                Ok(true) => report.plugins.push(slot.spec.name.clone()),
                Ok(false) => {}
                Err(e) => report.errors.push(format!("plugin {}: {e}", slot.spec.name)),
            }
        }
        if let Some(tls) = &self.tls {
            match self.tls(tls, source) {
                Ok(v) => report.tls = Some(v),
                Err(e) => report.errors.extend(e),
            }
        }
        report
    }

    /// The certificates alone.
    pub fn tls(&self, tls: &TlsHub, source: &str) -> Result<serde_json::Value, Vec<String>> {
        tls.reload(source)?;
        Ok(tls.status())
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = vec![tokio::spawn(on_sighup(self.clone()))];
        if let Some(tls) = self.tls.clone().filter(|t| t.spec().watch_ms > 0) {
            tasks.push(tokio::spawn(watch_certs(tls)));
        }
        let _ = shutdown.changed().await;
        tasks.iter().for_each(|t| t.abort());
    }
}

async fn on_sighup(r: Reloader) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload on signal is off (the admin API's POST /reload still works)");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config, changed plugins and the TLS certificates");
        let report = r.all("sighup").await;
        for e in &report.errors[report.logged..] {
            tracing::error!("SIGHUP reload: {e}");
        }
    }
}

/// Reload the certificates when a certificate, key or CA file changes.
/// A renewal writes the chain and the key one after the other: the reload
/// waits one more interval for both to settle, and a failed one is tried
/// again at the next change.
async fn watch_certs(tls: Arc<TlsHub>) {
    let every = Duration::from_millis(tls.spec().watch_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tls.files_changed() {
            tokio::time::sleep(every.min(Duration::from_millis(500))).await;
            let _ = tls.reload("file");
        }
    }
}
