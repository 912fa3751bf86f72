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

/// SIGHUPs caught from start-up on. The default action of SIGHUP ends the
/// process, and the reload service listens only once Pingora runs it: a
/// SIGHUP sent right after start (a service manager's reload) killed the
/// gateway. The handler is set first thing in `run` and writes a
/// byte to a socket (signal-hook's self-pipe); the reload service reads
/// them, so an early SIGHUP is a reload once it runs.
pub struct Hangups(std::sync::Mutex<Option<std::os::unix::net::UnixStream>>);

/// The process's one handler.
static CAUGHT: std::sync::OnceLock<Option<Arc<Hangups>>> = std::sync::OnceLock::new();

impl Hangups {
    /// Catch SIGHUP from now on: `run` calls this first, before the config
    /// loads and plugins compile; later calls get the same. `None` (logged)
    /// if the handler cannot be set.
    pub fn catch() -> Option<Arc<Self>> {
        CAUGHT.get_or_init(|| Self::register().inspect_err(|e| tracing::warn!("cannot catch SIGHUP ({e}); reload on signal is off")).ok()).clone()
    }

    fn register() -> std::io::Result<Arc<Self>> {
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, tx)?;
        Ok(Arc::new(Self(std::sync::Mutex::new(Some(rx)))))
    }

    /// The reading end, once.
    fn take(&self) -> Option<std::os::unix::net::UnixStream> {
        self.0.lock().ok()?.take()
    }
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
    use tokio::io::AsyncReadExt;
    let Some(mut hup) = Hangups::catch().and_then(|h| h.take()).and_then(|rx| tokio::net::UnixStream::from_std(rx).ok()) else {
        tracing::warn!("cannot listen for SIGHUP; reload on signal is off (the admin API's POST /reload still works)");
        return;
    };
    // Signals that came together (or before this ran) are one reload.
    let mut caught = [0u8; 64];
    while hup.read(&mut caught).await.is_ok_and(|n| n > 0) {
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
