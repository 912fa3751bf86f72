//! The fleet (`[fleet]`): every node watches one etcd cluster for the
//! versions its plugins should run. A push, canary, promote or rollback
//! made on any node is proved there first, then written to etcd; the other
//! nodes fetch the bytes by sha256, prove them the same way and swap, and
//! each node reports what it runs under a lease. A node that loses the
//! store keeps serving its last good versions and converges when it is back.

mod desired;
mod store;

pub use desired::{CanaryWant, Desired, Running, Step};

use crate::config::FleetSpec;
use crate::metrics::metrics;
use crate::wasm::{PluginSlot, Plugins};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Store;
use tokio::sync::Notify;

/// A node's report lives this long after its last keep-alive.
const REPORT_TTL_S: i64 = 10;
/// Keep-alive period, which is also how often the store is checked.
const TICK: Duration = Duration::from_secs(2);
/// Wait before reconnecting to an unreachable store.
const RETRY: Duration = Duration::from_millis(500);

/// This node's member of the fleet.
pub struct Fleet {
    pub spec: FleetSpec,
    plugins: Arc<Plugins>,
    /// A connected client, shared with the admin API; `None` while the
    /// store is unreachable.
    store: Mutex<Option<Store>>,
    state: Mutex<State>,
    /// A change made here: report it now.
    changed: Notify,
    /// The running session reached the store.
    reached: std::sync::atomic::AtomicBool,
    /// One change at a time on this node: an admin change (applied, then
    /// written) or a record from the store (applied).
    one: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    up: bool,
    /// Since when `up` has held its value.
    since: Option<SystemTime>,
    error: String,
    /// The store revision last seen.
    revision: i64,
    /// The fleet's record of each plugin, with its revision.
    records: BTreeMap<String, (i64, Desired)>,
    /// What applying each plugin's record did here, and the record's revision.
    applied: BTreeMap<String, (i64, Result<(), String>)>,
    /// Every live node's last report.
    nodes: BTreeMap<String, Value>,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl State {
    /// `connecting` before the first attempt ended, then `connected` or
    /// `unreachable`.
    fn store_state(&self) -> &'static str {
        match (self.up, self.since) {
            (true, _) => "connected",
            (false, None) => "connecting",
            (false, Some(_)) => "unreachable",
        }
    }
}

impl Fleet {
    pub fn new(spec: FleetSpec, plugins: Arc<Plugins>) -> Arc<Self> {
        metrics().fleet_store_up.with_label_values(&[spec.node.as_str()]).set(0);
        Arc::new(Self { spec, plugins, store: Mutex::new(None), state: Mutex::default(), changed: Notify::new(), reached: Default::default(), one: Arc::default() })
    }

    /// The connected store, or why there is none.
    fn store(&self) -> Result<Store, String> {
        let state = self.state.lock();
        self.store.lock().clone().ok_or_else(|| format!("the fleet store ({}) is unreachable: {}", self.spec.endpoints.join(", "), state.error))
    }

    /// Before a change here: no record is being applied (the guard keeps
    /// it so until the change is written), the store answers, and holds
    /// `bytes` (an upload) by their sha256. An error means nothing was
    /// changed.
    pub async fn ready(&self, bytes: Option<&[u8]>) -> Result<tokio::sync::OwnedMutexGuard<()>, String> {
        let held = self.one.clone().lock_owned().await;
        let mut store = self.store()?;
        match bytes {
            Some(b) => store.put_blob(&crate::wasm::sha256_hex(b), b).await?,
            None => store.ping().await?,
        }
        Ok(held)
    }

    /// After a change here: write what `name` now serves as the fleet's
    /// record. Returns the store revision.
    pub async fn publish(&self, name: &str, action: &str, evidence: &str) -> Result<i64, String> {
        let result = match self.plugins.get(name) {
            None => Err(format!("no plugin named {name:?}")),
            Some(slot) => self.write(&slot, Desired::of(&slot, &self.spec.node, action, evidence), None).await.map(|r| r.unwrap_or(0)),
        };
        metrics().fleet_publishes.with_label_values(&[if result.is_ok() { "ok" } else { "failed" }]).inc();
        if let Err(e) = &result {
            tracing::warn!(plugin = name, "fleet: the change made here was not written to the store: {e}");
        }
        self.changed.notify_one();
        result
    }

    /// After a change written here at `revision`: wait up to `confirm_ms`
    /// for every other live node to report the record of `name` at that
    /// revision or later, applied or refused. Each node's answer:
    /// `applied`, `refused: WHY`, or `pending` when it did not report in time.
    pub async fn confirmations(&self, name: &str, revision: i64) -> serde_json::Map<String, Value> {
        let deadline = tokio::time::Instant::now() + self.spec.confirm;
        loop {
            let answers: serde_json::Map<String, Value> = {
                let s = self.state.lock();
                s.nodes
                    .iter()
                    .filter(|(node, _)| **node != self.spec.node)
                    .map(|(node, report)| {
                        let p = &report["plugins"][name];
                        let answer = match (p["revision"].as_i64(), p["error"].as_str()) {
                            (Some(rev), Some(e)) if rev >= revision => format!("refused: {e}"),
                            (Some(rev), None) if rev >= revision => "applied".into(),
                            _ if p.is_null() => format!("refused: this node has no plugin named {name:?}"),
                            _ => "pending".into(),
                        };
                        (node.clone(), json!(answer))
                    })
                    .collect()
            };
            if answers.values().all(|a| a != "pending") || tokio::time::Instant::now() >= deadline {
                return answers;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Write `want` as `slot`'s record (uploading bytes the store lacks);
    /// with `if_revision`, only over that revision.
    async fn write(&self, slot: &PluginSlot, want: Desired, if_revision: Option<i64>) -> Result<Option<i64>, String> {
        let name = slot.spec.name.as_str();
        let mut store = self.store()?;
        for sha in want.shas() {
            if !store.has_blob(sha).await? {
                let bytes = local_bytes(slot, sha).ok_or_else(|| format!("the bytes of version {sha} are neither in the store nor on this node"))?;
                store.write_blob(sha, &bytes).await?;
            }
        }
        let written = store.put_record(name, &want, if_revision).await?;
        if let Some(rev) = written {
            tracing::info!(plugin = name, action = %want.action, revision = rev, "fleet: record written");
            self.state.lock().records.insert(name.to_string(), (rev, want));
        }
        Ok(written)
    }

    /// An automatic verdict reached here, written as the record it judged
    /// with its canary promoted or dropped, and only over that record: two
    /// nodes deciding at once cannot flip the fleet twice.
    async fn share_verdict(&self, plugin: &str, promoted: bool, evidence: &str) {
        let (Some((rev, record)), Some(slot)) = (self.state.lock().records.get(plugin).cloned(), self.plugins.get(plugin)) else { return };
        let Some(canary) = record.canary.clone() else { return };
        let (sha256, config) = if promoted { (canary.sha256, canary.config) } else { (record.sha256.clone(), record.config.clone()) };
        let action = if promoted { "auto-promote" } else { "auto-rollback" };
        let at_unix = unix(SystemTime::now());
        let want = Desired { sha256, config, canary: None, by: self.spec.node.clone(), action: action.into(), evidence: evidence.into(), at_unix };
        match self.write(&slot, want, Some(rev)).await {
            Ok(Some(_)) => metrics().fleet_publishes.with_label_values(&["ok"]).inc(),
            Ok(None) => tracing::info!(plugin, "fleet: another node decided this canary first"),
            Err(e) => {
                metrics().fleet_publishes.with_label_values(&["failed"]).inc();
                tracing::warn!(plugin, "fleet: verdict not shared: {e}");
            }
        }
    }

    /// `/healthz` detail.
    pub fn health(&self) -> String {
        let s = self.state.lock();
        let for_s = s.since.and_then(|t| t.elapsed().ok()).map_or(0, |d| d.as_secs());
        match s.store_state() {
            "connected" => format!("fleet node {}: store connected (revision {})\n", self.spec.node, s.revision),
            "connecting" => format!("fleet node {}: connecting to the store\n", self.spec.node),
            _ => format!("fleet node {}: store unreachable for {for_s} s, serving the last good versions: {}\n", self.spec.node, s.error),
        }
    }

    /// `GET /fleet`: the store, the records and every node's report.
    pub fn view(&self) -> Value {
        let s = self.state.lock();
        json!({
            "node": self.spec.node,
            "store": {
                "endpoints": self.spec.endpoints,
                "state": s.store_state(),
                "since_unix": s.since.map(unix),
                "error": (!s.up).then_some(&s.error),
                "revision": s.revision,
            },
            "plugins": s.records.iter().map(|(k, (rev, d))| (k.clone(), json!({ "revision": rev, "record": d }))).collect::<serde_json::Map<_, _>>(),
            "nodes": s.nodes,
        })
    }

    /// The fleet part of `GET /plugins/NAME`: the record and what each
    /// node runs.
    pub fn plugin_view(&self, name: &str) -> Value {
        let s = self.state.lock();
        let nodes: serde_json::Map<String, Value> = s.nodes.iter().map(|(n, r)| (n.clone(), r["plugins"][name].clone())).collect();
        json!({ "record": s.records.get(name).map(|(_, d)| d), "nodes": nodes })
    }

    /// What this node runs, for its report.
    fn report(&self) -> Value {
        let applied = self.state.lock().applied.clone();
        let plugins: serde_json::Map<String, Value> = self
            .plugins
            .all()
            .iter()
            .map(|(name, slot)| {
                let current = slot.current();
                let canary = slot.canary().map(|run| json!({ "sha256": run.version.sha256, "percent": run.percent, "version": run.version.number }));
                let (revision, error) = applied.get(name).map_or((0, None), |(rev, r)| (*rev, r.as_ref().err()));
                (name.clone(), json!({ "version": current.number, "sha256": current.sha256, "canary": canary, "error": error, "revision": revision }))
            })
            .collect();
        json!({ "node": self.spec.node, "at_unix": unix(SystemTime::now()), "plugins": plugins })
    }

    fn set_up(&self, up: bool, error: String) {
        let mut s = self.state.lock();
        if s.up != up || s.since.is_none() {
            s.since = Some(SystemTime::now());
            if up {
                tracing::info!(node = %self.spec.node, "fleet: store connected");
            } else {
                tracing::warn!(node = %self.spec.node, "fleet: store unreachable, serving the last good versions: {error}");
            }
        }
        s.up = up;
        s.error = error;
        metrics().fleet_store_up.with_label_values(&[self.spec.node.as_str()]).set(i64::from(up));
    }

    /// Bring `name` to the fleet's record `value` (read at `revision`).
    async fn apply(&self, store: &mut Store, name: &str, revision: i64, value: &[u8]) {
        let _one = self.one.lock().await;
        let result = match Desired::parse(value) {
            Err(e) => Err(e),
            Ok(want) => {
                self.state.lock().records.insert(name.to_string(), (revision, want.clone()));
                self.bring(store, name, &want).await
            }
        };
        self.applied(name, revision, result);
    }

    async fn bring(&self, store: &mut Store, name: &str, want: &Desired) -> Result<(), String> {
        match self.plugins.get(name) {
            None => Err(format!("this node has no plugin named {name:?}")),
            Some(slot) => converge(store, &slot, want).await,
        }
    }

    /// Bring back a plugin that drifted from a record it had reached (a
    /// plugin file changed, SIGHUP, a config reload that loaded it anew):
    /// the store is the fleet's source of truth. Skipped while a change
    /// is under way here.
    async fn reconverge(&self, store: &mut Store) {
        let Ok(_one) = self.one.try_lock() else { return };
        let due: Vec<(String, i64, Desired)> = {
            let s = self.state.lock();
            s.records
                .iter()
                .filter(|(name, _)| s.applied.get(*name).is_some_and(|(_, r)| r.is_ok()))
                .filter(|(name, (_, want))| self.plugins.get(name).is_some_and(|slot| Running::of(&slot).next(want) != Step::Done))
                .map(|(name, (rev, want))| (name.clone(), *rev, want.clone()))
                .collect()
        };
        for (name, revision, want) in due {
            tracing::warn!(plugin = %name, revision, "fleet: this node drifted from the fleet's record; applying it again");
            let result = self.bring(store, &name, &want).await;
            self.applied(&name, revision, result);
        }
    }

    fn applied(&self, name: &str, revision: i64, result: Result<(), String>) {
        match &result {
            Ok(()) => metrics().fleet_applies.with_label_values(&[name, "ok"]).inc(),
            Err(e) => {
                metrics().fleet_applies.with_label_values(&[name, "rejected"]).inc();
                tracing::warn!(plugin = name, revision, "fleet: record not applied, this node keeps its version: {e}");
            }
        }
        self.state.lock().applied.insert(name.to_string(), (revision, result));
    }

    /// One connection's life: read every record, apply it, then follow
    /// the store until it fails.
    async fn session(&self) -> Result<(), String> {
        let mut store = Store::connect(&self.spec).await?;
        let (revision, records) = store.records().await?;
        *self.store.lock() = Some(store.clone());
        self.reached.store(true, std::sync::atomic::Ordering::Relaxed);
        self.set_up(true, String::new());
        self.state.lock().revision = revision;
        for r in &records {
            self.apply(&mut store, &r.name, r.revision, &r.value).await;
        }
        let lease = store.lease(REPORT_TTL_S).await?;
        store.report(&self.spec.node, lease, &self.report()).await?;
        let (nodes_rev, reports) = store.reports().await?;
        self.state.lock().nodes = reports.into_iter().filter_map(|(n, v)| Some((n, serde_json::from_slice(&v).ok()?))).collect();
        let mut records_watch = store.watch("plugins/", revision + 1).await?;
        let mut nodes_watch = store.watch("nodes/", nodes_rev + 1).await?;
        let mut verdicts = crate::wasm::decisions().subscribe();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                m = records_watch.message() => {
                    let resp = m.map_err(|e| format!("etcd watch: {e}"))?.ok_or("etcd ended the watch")?;
                    if resp.canceled() {
                        return Err(format!("etcd canceled the watch: {}", resp.cancel_reason()));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(name) = kv.key_str().ok().and_then(|k| k.strip_prefix(&store.key("plugins/"))).map(str::to_string) else { continue };
                        self.state.lock().revision = kv.mod_revision();
                        if ev.event_type() == etcd_client::EventType::Put {
                            self.apply(&mut store, &name, kv.mod_revision(), kv.value()).await;
                        } else {
                            self.state.lock().records.remove(&name);
                        }
                    }
                    store.report(&self.spec.node, lease, &self.report()).await?;
                }
                m = nodes_watch.message() => {
                    let resp = m.map_err(|e| format!("etcd watch: {e}"))?.ok_or("etcd ended the watch")?;
                    let prefix = store.key("nodes/");
                    let mut s = self.state.lock();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(node) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)).map(str::to_string) else { continue };
                        match (ev.event_type(), serde_json::from_slice::<Value>(kv.value())) {
                            (etcd_client::EventType::Put, Ok(v)) => { s.nodes.insert(node, v); }
                            _ => { s.nodes.remove(&node); }
                        }
                    }
                }
                v = verdicts.recv() => {
                    if let Ok(v) = v {
                        self.share_verdict(&v.plugin, v.promoted, &v.evidence).await;
                    }
                    store.report(&self.spec.node, lease, &self.report()).await?;
                }
                () = self.changed.notified() => store.report(&self.spec.node, lease, &self.report()).await?,
                _ = tick.tick() => {
                    store.keep_alive(lease).await?;
                    self.reconverge(&mut store).await;
                }
            }
        }
    }
}

/// Step `slot` toward `want` until it serves it (at most a few steps).
async fn converge(store: &mut Store, slot: &Arc<PluginSlot>, want: &Desired) -> Result<(), String> {
    let why = format!("fleet: {} on node {}{}", want.action, want.by, if want.evidence.is_empty() { String::new() } else { format!(": {}", want.evidence) });
    for _ in 0..4 {
        match Running::of(slot).next(want) {
            Step::Done => return Ok(()),
            Step::Promote => slot.promote_canary("fleet", &why).await.map(drop).map_err(|e| e.to_string())?,
            Step::EndCanary => drop(slot.end_canary("fleet", &why).await),
            Step::Swap => {
                let bytes = store.blob(&want.sha256).await?;
                slot.swap_with(&bytes, Some(want.config.to_string()), "fleet").await.map_err(|e| e.to_string())?;
            }
            Step::StartCanary => {
                let c = want.canary.as_ref().expect("a canary to start");
                let bytes = store.blob(&c.sha256).await?;
                slot.start_canary(&bytes, Some(c.config.to_string()), c.percent, c.auto).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Err("the plugin did not reach the fleet's record in 4 steps".into())
}

/// The bytes of version `sha256` this node can read: its config file's.
fn local_bytes(slot: &PluginSlot, sha256: &str) -> Option<Vec<u8>> {
    std::fs::read(&slot.spec.path).ok().filter(|b| crate::wasm::sha256_hex(b) == sha256)
}

/// The background service: connect, follow, and reconnect after a failure.
pub struct FleetService(pub Arc<Fleet>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FleetService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let fleet = self.0.clone();
        loop {
            fleet.reached.store(false, std::sync::atomic::Ordering::Relaxed);
            let err = tokio::select! {
                r = fleet.session() => r.err().unwrap_or_default(),
                _ = shutdown.changed() => return,
            };
            if fleet.reached.load(std::sync::atomic::Ordering::Relaxed) {
                // The store answered a moment ago: a member or the
                // connection went, not the store. Reconnect at once; the
                // node counts as cut off only if that fails.
                tracing::info!(node = %fleet.spec.node, "fleet: reconnecting: {err}");
                metrics().fleet_reconnects.with_label_values(&[fleet.spec.node.as_str()]).inc();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            *fleet.store.lock() = None;
            fleet.set_up(false, err);
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
