//! JSON views of plugins and upstreams for the admin API.

use crate::metrics::metrics;
use crate::upstream::Upstream;
use crate::wasm::{Plugins, Version};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One version, as `PUT` and rollback answer it.
pub fn version(name: &str, v: &Version) -> Value {
    json!({
        "name": name,
        "version": v.number,
        "sha256": v.sha256,
        "world": v.plugin.world.name(),
        "source": v.source,
        "origin": v.origin,
        "loaded_at_ms": unix_ms(v.loaded_at),
        "config": serde_json::from_str::<Value>(&v.plugin.spec.config_json).unwrap_or(Value::Null),
    })
}

/// `GET /plugins/NAME/history`: the running version first, then the ones
/// a rollback steps back to, latest first.
pub fn history(name: &str, current: &Version, older: &[Arc<Version>]) -> Value {
    let mut list = vec![version(name, current)];
    list.extend(older.iter().rev().map(|v| version(name, v)));
    Value::Array(list)
}

/// `GET /plugins`.
pub fn plugins(plugins: &Plugins) -> Value {
    let m = metrics();
    let list: Vec<Value> = plugins
        .all()
        .values()
        .map(|slot| {
            let name = slot.spec.name.as_str();
            let hooks: serde_json::Map<String, Value> = slot
                .current()
                .plugin
                .world
                .hooks()
                .iter()
                .map(|&hook| {
                    let labels = [name, hook];
                    let timing = m.plugin_call_seconds.with_label_values(&labels);
                    let calls = timing.get_sample_count();
                    let mean_us = if calls == 0 { 0.0 } else { timing.get_sample_sum() * 1e6 / calls as f64 };
                    let stats = json!({
                        "calls": calls,
                        "mean_us": (mean_us * 10.0).round() / 10.0,
                        "traps": m.plugin_traps.with_label_values(&labels).get(),
                        "deadline_hits": m.plugin_deadline_hits.with_label_values(&labels).get(),
                        "bad_returns": m.plugin_bad_returns.with_label_values(&labels).get(),
                        "fallbacks": m.plugin_fallbacks.with_label_values(&labels).get(),
                    });
                    (hook.to_string(), stats)
                })
                .collect();
            let mut v = version(name, &slot.current());
            v["config_path"] = json!(slot.spec.path.display().to_string());
            v["previous_version"] = json!(slot.previous().map(|p| p.number));
            v["history"] = json!(slot.history().iter().rev().map(|h| version(name, h)).collect::<Vec<_>>());
            v["upstreams"] = json!(slot.user_names());
            v["canary"] = slot.canary_json();
            v["hooks"] = Value::Object(hooks);
            v
        })
        .collect();
    Value::Array(list)
}

/// `GET /upstreams`.
pub fn upstreams(upstreams: &[Arc<Upstream>]) -> Value {
    let list: Vec<Value> = upstreams
        .iter()
        .map(|u| {
            let backends: Vec<Value> = u
                .backends()
                .iter()
                .map(|b| {
                    let live = b.stats.live();
                    json!({
                        "address": b.address,
                        "weight": b.weight,
                        "healthy": b.is_healthy(),
                        "active": live.active,
                        "ewma_us": live.ewma_us,
                        "error_permille": live.error_permille,
                        "failures_in_a_row": b.stats.consecutive_failures(),
                    })
                })
                .collect();
            json!({ "name": u.name(), "lb": u.policy_name(), "version": u.version(), "backends": backends })
        })
        .collect();
    Value::Array(list)
}

/// `GET /sql`: each SQL backend's role, address, health, lag and pool use.
pub fn sql(proxy: &crate::sql::SqlProxy) -> Value {
    let m = metrics();
    let nodes: Vec<Value> = proxy
        .nodes
        .iter()
        .map(|n| {
            let role = [n.role.as_str()];
            json!({
                "role": n.role,
                "address": n.addr.to_string(),
                "up": n.is_up(),
                "lag_s": n.lag_s.load(std::sync::atomic::Ordering::Relaxed),
                "pool_idle": m.sql_pool_idle.with_label_values(&role).get(),
                "pool_in_use": m.sql_pool_in_use.with_label_values(&role).get(),
            })
        })
        .collect();
    // Client connections: the id the gateway gave each (what KILL takes
    // through the gateway) and the backend thread ids it holds (what
    // CONNECTION_ID() and SHOW PROCESSLIST show there).
    let mut sessions: Vec<(u32, Value)> = proxy
        .sessions
        .lock()
        .iter()
        .map(|(id, h)| {
            let held: Vec<Value> = h.backends.lock().iter().map(|&(node, tid)| json!({ "backend": proxy.nodes[node].role, "thread_id": tid })).collect();
            (*id, json!({ "id": id, "user": h.user, "backends": held }))
        })
        .collect();
    sessions.sort_by_key(|(id, _)| *id);
    json!({
        "listen": proxy.spec.listen.to_string(),
        "tls": if proxy.spec.require_tls { "required" } else if proxy.spec.tls { "optional" } else { "off" },
        "backends": nodes,
        "sessions": sessions.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    })
}

/// Copy per-backend live values into their gauges before a scrape.
pub fn refresh_backend_gauges(upstreams: &[Arc<Upstream>]) {
    let m = metrics();
    for u in upstreams {
        for b in u.backends() {
            let labels = [u.name(), b.address.as_str()];
            let live = b.stats.live();
            m.backend_active.with_label_values(&labels).set(i64::from(live.active));
            m.backend_ewma_seconds.with_label_values(&labels).set(f64::from(live.ewma_us) / 1e6);
            m.backend_up.with_label_values(&labels).set(i64::from(b.is_healthy()));
        }
    }
}

/// `GET /stores`: the session store tiers; each memcached server's state.
pub fn stores(stores: &crate::session::Stores) -> Value {
    let central = stores.central.as_ref().map(|c| c.states().into_iter().map(|(server, state)| json!({ "server": server, "state": state })).collect::<Vec<_>>());
    json!({
        "central": central,
        "replicated": stores.replicated.is_some(),
        "durable": stores.durable.is_some(),
        "local_entries": stores.local.len(),
    })
}
