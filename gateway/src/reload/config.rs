//! Reload the whole config file without a restart: validate all of it as
//! `check` does, build the next routes, upstreams and plugins beside the
//! running ones, prove every plugin on what it will serve, then switch in
//! one step. A file with any error changes nothing. Sections that bind
//! sockets or open stores apply on restart only, and the answer says so.

use crate::config::{PluginSpec, ValidConfig};
use crate::live::{locate, Live, Routing};
use crate::session::Stores;
use crate::wasm::{Engine, PluginSlot, Plugins, Slots, Staged};
use std::path::PathBuf;
use std::sync::Arc;

/// Top-level sections a reload does not apply: the running values stay
/// until a restart (or a binary upgrade, `run --upgrade`).
const RESTART_ONLY: &[&str] = &["server", "admin", "sql", "cluster", "session", "log", "demo", "fleet"];

/// Re-reads one config file.
pub struct ConfigReload {
    path: PathBuf,
    live: Arc<Live>,
    plugins: Arc<Plugins>,
    engine: Engine,
    stores: Arc<Stores>,
    /// The restart-only sections as this process read them.
    fixed: toml::Table,
    /// The text last applied: the same file again rebuilds nothing.
    applied: parking_lot::Mutex<String>,
    /// One reload at a time.
    one: tokio::sync::Mutex<()>,
}

/// What a reload applied.
#[derive(Debug, serde::Serialize)]
pub struct ConfigReport {
    /// The routing generation now serving (1 = as started).
    pub generation: u64,
    /// The file is the one applied last: nothing was rebuilt.
    pub unchanged: bool,
    pub upstreams: Vec<String>,
    pub routes: usize,
    pub plugins_added: Vec<String>,
    pub plugins_removed: Vec<String>,
    /// Plugins now running the file's new `config` table.
    pub plugins_reconfigured: Vec<String>,
    /// Changed sections that wait for a restart; their running values stay.
    pub needs_restart: Vec<String>,
}

impl ConfigReport {
    /// `routing` serving `cfg`, with no plugin changes.
    fn of(routing: &Routing, cfg: &ValidConfig, needs_restart: Vec<String>) -> Self {
        Self {
            generation: routing.number,
            unchanged: false,
            upstreams: routing.upstreams.iter().map(|u| u.name().to_string()).collect(),
            routes: cfg.routes.len(),
            plugins_added: Vec::new(),
            plugins_removed: Vec::new(),
            plugins_reconfigured: Vec::new(),
            needs_restart,
        }
    }
}

/// The next plugin set: every slot, the new tables to stage, what was loaded.
struct NextSlots {
    slots: Slots,
    restage: Vec<(Arc<PluginSlot>, String)>,
    added: Vec<String>,
}

impl ConfigReload {
    /// `text` is the file as the running config was read from it (read
    /// again here, an edit made while the gateway started would count as
    /// applied and never be).
    pub fn new(path: PathBuf, text: String, live: Arc<Live>, plugins: Arc<Plugins>, engine: Engine, stores: Arc<Stores>) -> Self {
        Self { fixed: restart_only(&text), applied: parking_lot::Mutex::new(text), path, live, plugins, engine, stores, one: tokio::sync::Mutex::new(()) }
    }

    /// Apply the file as it is now, or change nothing and say why (in the
    /// answer and in the log).
    pub async fn reload(&self) -> Result<ConfigReport, Vec<String>> {
        let out = self.apply().await;
        if let Err(errors) = &out {
            for e in errors {
                tracing::error!("config reload refused, the running config keeps serving: {e}");
            }
        }
        out
    }

    async fn apply(&self) -> Result<ConfigReport, Vec<String>> {
        let _one = self.one.lock().await;
        let path = self.path.clone();
        let checked = tokio::task::spawn_blocking(move || crate::config::check(&path)).await.map_err(|e| vec![format!("reading the config: {e}")])?;
        let cfg = checked.config.map_err(|e| e.errors.iter().map(|err| format!("{}: {err}", e.file.display())).collect::<Vec<_>>())?;
        let needs_restart: Vec<String> =
            RESTART_ONLY.iter().filter(|k| self.fixed.get(**k) != restart_only(&checked.text).get(**k)).map(|k| format!("[{k}]")).collect();
        if *self.applied.lock() == checked.text {
            return Ok(ConfigReport { unchanged: true, ..ConfigReport::of(&self.live.routing(), &cfg, needs_restart) });
        }
        // No swap (admin, file watcher, rollback) interleaves with the build.
        let running = self.plugins.all();
        let mut held = Vec::with_capacity(running.len());
        for slot in running.values() {
            held.push(slot.hold().await);
        }
        let previous = self.live.routing();
        let next = self.next_slots(&cfg, &running, &previous).await?;
        let routing = Routing::build(&cfg, &next.slots, &self.stores, Some(&previous)).await.map_err(|es| self.located(es))?;
        let staged = stage(&next.restage, &previous, &routing).await.map_err(|es| self.located(es))?;
        // Nothing below can fail. A canary was compared with what changes here.
        for slot in running.values() {
            slot.end_canary_held("reload", "the config was reloaded");
        }
        let reconfigured = staged.into_iter().map(|s| s.commit(false).plugin.spec.name.clone()).collect();
        let mut slots = next.slots;
        let mut removed = Vec::new();
        let gone: Vec<_> = running.iter().filter(|(n, _)| !slots.contains_key(*n)).collect();
        for (name, slot) in gone {
            // Still used by `[sql]` (restart-only): it keeps its plugins.
            if slot.users_except(&previous.users_of(slot)).is_empty() {
                removed.push(name.clone());
            } else {
                slots.insert(name.clone(), slot.clone());
            }
        }
        let report = ConfigReport {
            plugins_added: next.added,
            plugins_removed: removed,
            plugins_reconfigured: reconfigured,
            ..ConfigReport::of(&routing, &cfg, needs_restart)
        };
        self.plugins.replace(slots);
        self.live.install(routing);
        *self.applied.lock() = checked.text;
        drop(held);
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }

    /// Keep the slot of a plugin whose section changed at most in its
    /// `config` table (history, counters, kv stay); load the rest anew.
    async fn next_slots(&self, cfg: &ValidConfig, running: &Slots, previous: &Routing) -> Result<NextSlots, Vec<String>> {
        let mut next = NextSlots { slots: Slots::new(), restage: Vec::new(), added: Vec::new() };
        let mut errors = Vec::new();
        for spec in cfg.plugins.values() {
            match running.get(&spec.name) {
                Some(slot) if same_but_config(&slot.spec, spec) => {
                    if spec.config_json != slot.file_config() {
                        next.restage.push((slot.clone(), spec.config_json.clone()));
                    }
                    next.slots.insert(spec.name.clone(), slot.clone());
                }
                Some(slot) if !slot.users_except(&previous.users_of(slot)).is_empty() => errors.push(format!(
                    "{}: plugins.{}: [sql] uses this plugin and reloads only on restart: a new path, limits, on_error or watch_ms apply then (its config table reloads now)",
                    self.path.display(),
                    spec.name
                )),
                _ => {
                    let (engine, owned) = (self.engine.clone(), spec.clone());
                    match tokio::task::spawn_blocking(move || PluginSlot::load(&engine, &owned)).await {
                        Ok(Ok(slot)) => {
                            next.added.push(spec.name.clone());
                            next.slots.insert(spec.name.clone(), slot);
                        }
                        Ok(Err(e)) => errors.push(format!("{}: {}", self.path.display(), locate(e, spec))),
                        Err(e) => errors.push(format!("loading plugin {}: {e}", spec.name)),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(next)
        } else {
            Err(errors)
        }
    }

    fn located(&self, errors: Vec<crate::error::Error>) -> Vec<String> {
        errors.into_iter().map(|e| format!("{}: {e}", self.path.display())).collect()
    }
}

/// Prove each new `config` table on every user it will serve: those that
/// stay (the SQL listener) and those of the next routing.
async fn stage(restage: &[(Arc<PluginSlot>, String)], previous: &Routing, next: &Routing) -> Result<Vec<Staged>, Vec<crate::error::Error>> {
    let mut staged = Vec::new();
    for (slot, table) in restage {
        let mut users = slot.users_except(&previous.users_of(slot));
        users.extend(next.users_of(slot));
        staged.push(slot.stage_config(table.clone(), users).await.map_err(|e| vec![locate(e, &slot.spec)])?);
    }
    Ok(staged)
}

/// The same plugin section apart from its `config` table.
fn same_but_config(running: &PluginSpec, new: &PluginSpec) -> bool {
    *new == PluginSpec { config_json: new.config_json.clone(), config_line: new.config_line, ..running.clone() }
}

/// The restart-only sections of a config text.
fn restart_only(text: &str) -> toml::Table {
    let mut table = text.parse::<toml::Table>().unwrap_or_default();
    table.retain(|k, _| RESTART_ONLY.contains(&k));
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_sections_are_told_apart_from_live_ones() {
        let a = restart_only("[server]\nlisten = \"127.0.0.1:1\"\n[[routes]]\nupstream = \"a\"\n[sql]\nlisten = \"127.0.0.1:2\"\n");
        let b = restart_only("[server]\nlisten = \"127.0.0.1:1\"\n[[routes]]\nupstream = \"b\"\n[sql]\nlisten = \"127.0.0.1:3\"\n");
        assert_eq!(a.get("server"), b.get("server"));
        assert_ne!(a.get("sql"), b.get("sql"));
        assert!(a.get("routes").is_none(), "routes reload live");
    }

    #[test]
    fn only_the_config_table_may_change_in_place() {
        let spec = PluginSpec {
            name: "p".into(),
            path: "/x.wasm".into(),
            on_error: Default::default(),
            on_error_set: None,
            limits: Default::default(),
            config_json: "{}".into(),
            config_line: None,
            watch_ms: 0,
            canary_header: None,
        };
        let table = PluginSpec { config_json: "{\"a\":1}".into(), config_line: Some(9), ..spec.clone() };
        assert!(same_but_config(&spec, &table));
        assert!(!same_but_config(&spec, &PluginSpec { path: "/y.wasm".into(), ..spec.clone() }));
        assert!(!same_but_config(&spec, &PluginSpec { watch_ms: 100, ..spec.clone() }));
        assert!(!same_but_config(&spec, &PluginSpec { canary_header: Some(http::HeaderName::from_static("x-user")), ..spec.clone() }));
    }
}
