//! Loaded plugins by name, their versions, and hot swap with rollback.
//!
//! A swap runs the same checks whatever asked for it (admin `PUT`, the file
//! watcher, SIGHUP, rollback): the bytes must be a component exporting the
//! plugin's world; each upstream using the plugin instantiates it,
//! configures it, restores the old version's state and makes one smoke
//! call. Only when every upstream succeeded is the new version stored; a
//! failure leaves the running version untouched.

use super::engine::{Engine, LoadedPlugin};
use super::host::PluginShared;
use super::canary::{judge, Auto, Figures, Verdict};
use super::seam::{CanaryOp, SwapTarget};
use crate::config::PluginSpec;
use crate::error::{Error, PluginFault};
use crate::metrics::metrics;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Compiled versions kept per plugin for fast re-pushes.
const COMPILED_CACHE: usize = 4;

/// Versions kept for rollback per plugin (older ones are forgotten).
pub const HISTORY: usize = 8;

/// One loaded version of a plugin.
pub struct Version {
    /// 1 for the version loaded at start, then one more per swap.
    pub number: u64,
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// What installed it: `config`, `admin`, `file` or `sighup`.
    pub source: &'static str,
    /// Where its bytes came from: a file path, or an admin upload.
    pub origin: String,
    pub plugin: Arc<LoadedPlugin>,
}

/// A named plugin: its current version, the versions before it, and its users.
pub struct PluginSlot {
    pub spec: PluginSpec,
    engine: Engine,
    /// Counters, kv and metric names: kept across versions.
    shared: Arc<PluginShared>,
    current: ArcSwap<Version>,
    /// Versions that served before the current one, the latest last;
    /// rollback steps back through them.
    history: Mutex<Vec<Arc<Version>>>,
    numbers: AtomicU64,
    /// What runs this plugin: upstreams, the SQL listener, routes.
    users: Mutex<Vec<Arc<dyn SwapTarget>>>,
    /// Recently compiled versions by sha256: pushing known bytes again
    /// (a revert, an A/B flip) skips the compile.
    compiled: Mutex<Vec<(String, Arc<LoadedPlugin>)>>,
    /// One swap at a time per plugin; a config reload holds every one.
    swapping: Arc<tokio::sync::Mutex<()>>,
    /// The `config` table the config file last gave it (an admin `PUT`
    /// may run another): a reload applies the file's only when it moved.
    file_config: Mutex<String>,
    /// A canary version running beside the current one.
    canary: Mutex<Option<Arc<CanaryRun>>>,
    /// How the last canary ended.
    last_canary: Mutex<Option<serde_json::Value>>,
}

/// A canary version taking `percent` % of the keys, and its baseline.
pub struct CanaryRun {
    pub version: Arc<Version>,
    pub percent: u32,
    pub started: SystemTime,
    /// The version it is compared with, and its score at the start.
    baseline: Arc<Version>,
    baseline_start: Figures,
    baseline_outcomes: std::collections::BTreeMap<String, u64>,
    /// Judged on its own when set.
    pub auto: Option<Auto>,
}

impl CanaryRun {
    /// Both versions' figures since the canary started.
    pub fn scores(&self) -> (Figures, Figures) {
        let (b, c) = (&self.baseline.plugin, &self.version.plugin);
        let baseline = Figures { calls: b.score.read().since(&self.baseline_start.calls), routed: b.routed.read().since(&self.baseline_start.routed) };
        (baseline, Figures { calls: c.score.read(), routed: c.routed.read() })
    }

    pub fn json(&self) -> serde_json::Value {
        let (baseline, canary) = self.scores();
        serde_json::json!({
            "state": "running",
            "version": self.version.number,
            "sha256": self.version.sha256,
            "percent": self.percent,
            "started_unix": self.started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "baseline_version": self.baseline.number,
            "auto": self.auto,
            "baseline": version_json(&baseline, self.baseline.plugin.outcomes.since(&self.baseline_outcomes)),
            "canary": version_json(&canary, self.version.plugin.outcomes.read()),
        })
    }
}

/// A version's call figures, under `routed` the requests it routed (lb
/// plugins; zero for the other seams), and under `outcomes` what it decided.
fn version_json(f: &Figures, outcomes: std::collections::BTreeMap<String, u64>) -> serde_json::Value {
    let mut v = f.calls.json();
    v["routed"] = f.routed.routed_json();
    v["outcomes"] = serde_json::json!(outcomes);
    v
}

/// A version proved on every user it will serve, not yet serving:
/// [`Staged::commit`] switches them all at once and cannot fail.
pub struct Staged {
    slot: Arc<PluginSlot>,
    version: Arc<Version>,
    prepared: Vec<(Arc<dyn SwapTarget>, Box<dyn std::any::Any + Send>)>,
    /// The config file's table this version runs, when a reload staged it.
    file_config: Option<String>,
}

/// The hex SHA-256 of a plugin's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl PluginSlot {
    /// Load version 1 from the spec's path.
    pub fn load(engine: &Engine, spec: &PluginSpec) -> Result<Arc<Self>, Error> {
        let bytes = std::fs::read(&spec.path)
            .map_err(|e| Error::plugin(PluginFault::Load, &spec.name, format!("cannot read {}: {e}", spec.path.display())))?;
        let shared = Arc::new(PluginShared::new(&spec.name));
        let plugin = engine.load_bytes(spec, &bytes, shared.clone())?;
        let sha256 = sha256_hex(&bytes);
        let compiled = Mutex::new(vec![(sha256.clone(), plugin.clone())]);
        let origin = spec.path.display().to_string();
        let version = Version { number: 1, sha256, loaded_at: SystemTime::now(), source: "config", origin, plugin };
        Ok(Arc::new(Self {
            spec: spec.clone(),
            engine: engine.clone(),
            shared,
            current: ArcSwap::from_pointee(version),
            history: Mutex::new(Vec::new()),
            numbers: AtomicU64::new(1),
            users: Mutex::new(Vec::new()),
            compiled,
            swapping: Arc::default(),
            file_config: Mutex::new(spec.config_json.clone()),
            canary: Mutex::new(None),
            last_canary: Mutex::new(None),
        }))
    }

    /// Load `spec` and configure one instance of it, outside any server:
    /// `check` proves the plugins this way when the rest of the config has
    /// errors, so their own errors show in the same run.
    pub async fn prove(engine: &Engine, spec: &PluginSpec) -> Result<(), Error> {
        let slot = Self::load(engine, spec)?;
        super::prove(slot.current().plugin.clone()).await
    }

    /// The plugin's own words when `e` is its `configure` rejecting its
    /// config: the text after the host's `plugin "NAME": config: `.
    pub fn config_rejection<'e>(e: &'e Error, plugin: &str) -> Option<&'e str> {
        if e.fault != Some(PluginFault::Config) {
            return None;
        }
        let marker = format!("plugin {plugin:?}: {}: ", PluginFault::Config.as_str());
        let said = &e.message[e.message.find(&marker)? + marker.len()..];
        // A swap's restore is not about the config file.
        (!said.starts_with("restore rejected")).then_some(said)
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    /// The version a rollback would restore.
    pub fn previous(&self) -> Option<Arc<Version>> {
        self.history.lock().last().cloned()
    }

    /// The versions a rollback can step back to, the latest last.
    pub fn history(&self) -> Vec<Arc<Version>> {
        self.history.lock().clone()
    }

    /// Record a user a swap must move to the new version.
    pub fn add_user(&self, user: Arc<dyn SwapTarget>) {
        self.users.lock().push(user);
    }

    /// Forget users a retired config generation registered.
    pub fn remove_users(&self, gone: &[Arc<dyn SwapTarget>]) {
        self.users.lock().retain(|u| !gone.iter().any(|g| same_user(u, g)));
    }

    /// The users that stay when `gone` retire.
    pub fn users_except(&self, gone: &[Arc<dyn SwapTarget>]) -> Vec<Arc<dyn SwapTarget>> {
        self.users.lock().iter().filter(|u| !gone.iter().any(|g| same_user(u, g))).cloned().collect()
    }

    /// Hold this plugin's swaps (admin, file, rollback) until dropped.
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.swapping.clone().lock_owned().await
    }

    /// The `config` table (JSON) the config file last gave this plugin.
    pub fn file_config(&self) -> String {
        self.file_config.lock().clone()
    }

    /// The running bytes with the file's new `config` table, proved on
    /// `users` (those that stay and those a reload adds). The caller holds
    /// [`Self::hold`]; nothing changes until the commit.
    pub async fn stage_config(self: &Arc<Self>, config_json: String, users: Vec<Arc<dyn SwapTarget>>) -> Result<Staged, Error> {
        let current = self.current();
        let version = Version {
            number: self.numbers.fetch_add(1, Ordering::AcqRel) + 1,
            sha256: current.sha256.clone(),
            loaded_at: SystemTime::now(),
            source: "config",
            origin: format!("{} with the config file's new table", current.origin),
            plugin: Arc::new(current.plugin.with_config(config_json.clone())),
        };
        let staged = self.stage(Arc::new(version), users).await;
        match staged {
            Ok(staged) => Ok(Staged { file_config: Some(config_json), ..staged }),
            Err(e) => {
                self.record("config", &Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Load `bytes` beside the running version, with the same checks as a
    /// swap (world, `configure`, restore of the baseline's state, a smoke
    /// call per user), and send it `percent` % of the keys. With `auto`,
    /// it is promoted or rolled back on its own figures.
    pub async fn start_canary(self: &Arc<Self>, bytes: &[u8], config_json: Option<String>, percent: u32, auto: Option<Auto>) -> Result<Arc<CanaryRun>, Error> {
        let _one = self.swapping.lock().await;
        let sha256 = sha256_hex(bytes);
        let plugin = self.compile(bytes, &sha256).await?;
        self.check_world(&plugin)?;
        let baseline = self.current();
        // Its own scorecard, even for the running bytes and table.
        let config = config_json.unwrap_or_else(|| baseline.plugin.spec.config_json.clone());
        let plugin = Arc::new(plugin.with_config(config));
        let number = self.numbers.fetch_add(1, Ordering::AcqRel) + 1;
        let version = Arc::new(Version { number, sha256, loaded_at: SystemTime::now(), source: "canary", origin: "admin upload (canary)".into(), plugin });
        let users = self.users.lock().clone();
        let staged = self.stage(version.clone(), users).await;
        self.record("canary", &staged.as_ref().map(|s| s.version.clone()).map_err(Clone::clone));
        let staged = staged?;
        self.end_canary_held("canary", "replaced by a new canary");
        for (user, next) in staged.prepared {
            user.canary(CanaryOp::Start(next, percent));
        }
        let run = Arc::new(CanaryRun { version, percent, started: SystemTime::now(), baseline_start: Figures { calls: baseline.plugin.score.read(), routed: baseline.plugin.routed.read() }, baseline_outcomes: baseline.plugin.outcomes.read(), baseline, auto });
        *self.canary.lock() = Some(run.clone());
        if let Some(auto) = auto {
            tokio::spawn(judge_loop(self.clone(), run.clone(), auto));
        }
        tracing::info!(plugin = %self.spec.name, version = number, percent, "canary started");
        Ok(run)
    }

    /// The canary running now.
    pub fn canary(&self) -> Option<Arc<CanaryRun>> {
        self.canary.lock().clone()
    }

    /// The running canary, or how the last one ended.
    pub fn canary_json(&self) -> serde_json::Value {
        match self.canary() {
            Some(run) => run.json(),
            None => self.last_canary.lock().clone().unwrap_or(serde_json::json!({ "state": "none" })),
        }
    }

    /// Make the canary the running version (into the history, so a
    /// rollback steps back to the baseline). `by`: `admin` or `auto`.
    pub async fn promote_canary(self: &Arc<Self>, by: &str, evidence: &str) -> Result<Arc<Version>, Error> {
        let _one = self.swapping.lock().await;
        let Some(run) = self.canary.lock().take() else {
            return Err(Error::plugin(PluginFault::Load, &self.spec.name, "has no canary to promote"));
        };
        for user in self.users.lock().iter() {
            user.canary(CanaryOp::Promote);
        }
        let old = self.current.swap(run.version.clone());
        let mut history = self.history.lock();
        history.push(old);
        if history.len() > HISTORY {
            history.remove(0);
        }
        drop(history);
        self.finish(&run, "promoted", by, evidence);
        self.record("canary-promote", &Ok(run.version.clone()));
        Ok(run.version.clone())
    }

    /// Stop the canary: every call runs the current version again.
    pub async fn end_canary(&self, by: &str, evidence: &str) -> bool {
        let _one = self.swapping.lock().await;
        self.end_canary_held(by, evidence)
    }

    /// As [`Self::end_canary`], for a caller that holds the swap lock
    /// (a swap, a config reload).
    pub fn end_canary_held(&self, by: &str, evidence: &str) -> bool {
        let Some(run) = self.canary.lock().take() else { return false };
        for user in self.users.lock().iter() {
            user.canary(CanaryOp::End);
        }
        self.finish(&run, "rolled-back", by, evidence);
        true
    }

    /// Keep and log how a canary ended, with its figures.
    fn finish(&self, run: &CanaryRun, state: &str, by: &str, evidence: &str) {
        let mut outcome = run.json();
        outcome["state"] = serde_json::json!(state);
        outcome["by"] = serde_json::json!(by);
        outcome["evidence"] = serde_json::json!(evidence);
        metrics().plugin_canary_decisions.with_label_values(&[self.spec.name.as_str(), state, by]).inc();
        tracing::warn!(plugin = %self.spec.name, version = run.version.number, state, by, evidence, "canary ended");
        *self.last_canary.lock() = Some(outcome);
    }

    /// Who uses this plugin: upstream names, `sql`, `route /prefix`.
    pub fn user_names(&self) -> Vec<String> {
        self.users.lock().iter().map(|u| u.user()).collect()
    }

    /// Check, prove and install new bytes. `source` labels logs and metrics.
    pub async fn swap(self: &Arc<Self>, bytes: &[u8], source: &'static str) -> Result<Arc<Version>, Error> {
        self.swap_with(bytes, None, source).await
    }

    /// As [`Self::swap`], with a new `config` table (JSON text) for the
    /// new bytes; `None` keeps the table running now.
    pub async fn swap_with(self: &Arc<Self>, bytes: &[u8], config_json: Option<String>, source: &'static str) -> Result<Arc<Version>, Error> {
        let _one = self.swapping.lock().await;
        let sha256 = sha256_hex(bytes);
        let result = async {
            let mut plugin = self.compile(bytes, &sha256).await?;
            self.check_world(&plugin)?;
            // New bytes run with the config table running now (an admin
            // `PUT /plugins/NAME/config` may have changed the file's).
            let config = config_json.unwrap_or_else(|| self.current().plugin.spec.config_json.clone());
            if plugin.spec.config_json != config {
                plugin = Arc::new(plugin.with_config(config));
            }
            let number = self.numbers.fetch_add(1, Ordering::AcqRel) + 1;
            let origin = if source == "admin" { "admin upload".to_string() } else { self.spec.path.display().to_string() };
            let version = Version { number, sha256, loaded_at: SystemTime::now(), source, origin, plugin };
            self.install(Arc::new(version), false).await
        }
        .await;
        self.record(source, &result);
        result
    }

    /// The running bytes with a new `config` table (JSON text), proved the
    /// way a swap is (instantiate, `configure`, smoke calls) before it
    /// serves; a table the plugin rejects changes nothing.
    pub async fn reconfigure(self: &Arc<Self>, config_json: String, source: &'static str) -> Result<Arc<Version>, Error> {
        let _one = self.swapping.lock().await;
        let current = self.current();
        let number = self.numbers.fetch_add(1, Ordering::AcqRel) + 1;
        let version = Version {
            number,
            sha256: current.sha256.clone(),
            loaded_at: SystemTime::now(),
            source,
            origin: format!("{} with a new config", current.origin),
            plugin: Arc::new(current.plugin.with_config(config_json)),
        };
        let result = self.install(Arc::new(version), false).await;
        self.record(source, &result);
        result
    }

    /// Step back to the version before the current one; the current one
    /// is dropped from the history, so a second rollback goes further back.
    pub async fn rollback(self: &Arc<Self>) -> Result<Arc<Version>, Error> {
        let _one = self.swapping.lock().await;
        let result = match self.previous() {
            None => Err(Error::plugin(PluginFault::Load, &self.spec.name, "has no previous version to roll back to")),
            Some(prev) => self.install(prev, true).await,
        };
        self.record("rollback", &result);
        result
    }

    /// The compiled plugin for these bytes: from the cache, or compiled on
    /// a blocking thread so no proxy worker waits on Cranelift.
    async fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Arc<LoadedPlugin>, Error> {
        if let Some((_, p)) = self.compiled.lock().iter().find(|(s, _)| s == sha256) {
            return Ok(p.clone());
        }
        let (engine, spec, shared, bytes) = (self.engine.clone(), self.spec.clone(), self.shared.clone(), bytes.to_vec());
        let plugin = tokio::task::spawn_blocking(move || engine.load_bytes(&spec, &bytes, shared))
            .await
            .map_err(|e| Error::internal(format!("compile task: {e}")))??;
        let mut cache = self.compiled.lock();
        if cache.len() >= COMPILED_CACHE {
            cache.remove(0);
        }
        cache.push((sha256.to_string(), plugin.clone()));
        Ok(plugin)
    }

    fn check_world(&self, plugin: &LoadedPlugin) -> Result<(), Error> {
        let want = self.current().plugin.world;
        if plugin.world.seam() != want.seam() {
            return Err(Error::plugin(
                PluginFault::Load,
                &self.spec.name,
                format!("exports the {} world, but this plugin is a {} plugin", plugin.world.name(), want.name()),
            ));
        }
        Ok(())
    }

    /// Prepare every user first; store only if all succeeded. A running
    /// canary ends first: it was compared with the version replaced here.
    async fn install(self: &Arc<Self>, version: Arc<Version>, rollback: bool) -> Result<Arc<Version>, Error> {
        self.end_canary_held("swap", "the running version it was compared with was replaced");
        let users = self.users.lock().clone();
        Ok(self.stage(version, users).await?.commit(rollback))
    }

    /// Prove `version` on each of `users` (or alone, when there are none).
    async fn stage(self: &Arc<Self>, version: Arc<Version>, users: Vec<Arc<dyn SwapTarget>>) -> Result<Staged, Error> {
        let mut prepared = Vec::with_capacity(users.len());
        for user in users {
            let next = user.prepare(version.plugin.clone()).await?;
            prepared.push((user, next));
        }
        if prepared.is_empty() {
            // Nobody calls it yet: still prove it instantiates and configures.
            super::prove(version.plugin.clone()).await?;
        }
        Ok(Staged { slot: self.clone(), version, prepared, file_config: None })
    }

    fn record(&self, source: &str, result: &Result<Arc<Version>, Error>) {
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        metrics().plugin_swaps.with_label_values(&[self.spec.name.as_str(), source, outcome]).inc();
        match result {
            Ok(v) => tracing::info!(plugin = %self.spec.name, source, version = v.number, sha256 = %v.sha256, "plugin swapped"),
            Err(e) => tracing::warn!(plugin = %self.spec.name, source, "swap refused, old version kept: {e}"),
        }
    }
}

impl Staged {
    /// Serve the staged version on every prepared user; the old one goes
    /// to the history (a rollback pops it instead).
    pub fn commit(self, rollback: bool) -> Arc<Version> {
        let slot = self.slot;
        for (user, next) in self.prepared {
            user.commit(next);
        }
        let old = slot.current.swap(self.version.clone());
        if let Some(table) = self.file_config {
            *slot.file_config.lock() = table;
            slot.record("config", &Ok(self.version.clone()));
        }
        let mut history = slot.history.lock();
        if rollback {
            history.pop();
        } else {
            history.push(old);
            if history.len() > HISTORY {
                history.remove(0);
            }
        }
        self.version
    }
}

/// A verdict the automatic judge reached and carried out on this node.
#[derive(Clone, Debug)]
pub struct Decided {
    pub plugin: String,
    pub promoted: bool,
    pub evidence: String,
}

/// Every automatic verdict, for whoever shares them (the fleet).
pub fn decisions() -> &'static tokio::sync::broadcast::Sender<Decided> {
    static SENDER: std::sync::OnceLock<tokio::sync::broadcast::Sender<Decided>> = std::sync::OnceLock::new();
    SENDER.get_or_init(|| tokio::sync::broadcast::channel(64).0)
}

/// Judge a canary every 100 ms until it is decided or ended otherwise.
async fn judge_loop(slot: Arc<PluginSlot>, run: Arc<CanaryRun>, auto: Auto) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        if !slot.canary().is_some_and(|now| Arc::ptr_eq(&now, &run)) {
            return;
        }
        let (baseline, canary) = run.scores();
        match judge(&baseline, &canary, &auto) {
            Verdict::Wait => continue,
            Verdict::Promote(evidence) => {
                if slot.promote_canary("auto", &evidence).await.is_ok() {
                    let _ = decisions().send(Decided { plugin: slot.spec.name.clone(), promoted: true, evidence });
                }
            }
            Verdict::RollBack(evidence) => {
                if slot.end_canary("auto", &evidence).await {
                    let _ = decisions().send(Decided { plugin: slot.spec.name.clone(), promoted: false, evidence });
                }
            }
        }
        return;
    }
}

/// The same user, whatever vtable the `Arc` carries.
fn same_user(a: &Arc<dyn SwapTarget>, b: &Arc<dyn SwapTarget>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The plugins of one config, by name.
pub type Slots = BTreeMap<String, Arc<PluginSlot>>;

/// Every plugin of the running config, by name; a config reload replaces
/// the set in one step.
#[derive(Default)]
pub struct Plugins {
    slots: ArcSwap<Slots>,
}

impl Plugins {
    pub fn new(slots: Slots) -> Self {
        Self { slots: ArcSwap::from_pointee(slots) }
    }

    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.load().get(name).cloned()
    }

    /// The plugins now, by name.
    pub fn all(&self) -> Arc<Slots> {
        self.slots.load_full()
    }

    /// Serve this set from now on.
    pub fn replace(&self, slots: Slots) {
        self.slots.store(Arc::new(slots));
    }

    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.load().is_empty()
    }
}
