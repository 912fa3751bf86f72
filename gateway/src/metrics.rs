//! Prometheus metrics: one registry for the process, rendered by `GET /metrics`.

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Most distinct plugin-defined metric names per plugin; more are refused
/// so a plugin cannot blow up the scrape.
pub const MAX_PLUGIN_METRICS: usize = 64;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, upstream, backend and status.
    pub requests: IntCounterVec,
    /// End-to-end request latency by route and upstream.
    pub request_seconds: HistogramVec,
    /// Downstream requests in flight.
    pub active_requests: IntGauge,
    /// Downstream HTTP connections open, and the ones refused past the cap.
    pub http_connections: IntGauge,
    pub http_refused: prometheus::IntCounter,
    /// Access log lines dropped because the writer's queue was full.
    pub access_log_dropped: prometheus::IntCounter,
    /// Certificate reloads by source (sighup, file, admin) and result (ok, refused).
    pub tls_reloads: IntCounterVec,
    /// Requests in flight per backend (set at scrape time).
    pub backend_active: IntGaugeVec,
    /// Peak-EWMA latency per backend in seconds (set at scrape time).
    pub backend_ewma_seconds: GaugeVec,
    /// 1 while a backend is routable (set at scrape time).
    pub backend_up: IntGaugeVec,
    /// Health changes by upstream, backend and direction (`up` / `down`).
    pub health_transitions: IntCounterVec,
    /// Plugin call latency by plugin and hook.
    pub plugin_call_seconds: HistogramVec,
    /// Plugin traps (including memory-cap traps) by plugin and hook.
    pub plugin_traps: IntCounterVec,
    /// Plugin calls stopped by their epoch deadline.
    pub plugin_deadline_hits: IntCounterVec,
    /// Plugin answers the host could not use (e.g. an index out of range).
    pub plugin_bad_returns: IntCounterVec,
    /// Calls answered by the builtin because the plugin failed.
    pub plugin_fallbacks: IntCounterVec,
    /// Plugin calls that ran long enough to finish on the plugin pool.
    pub plugin_offloads: IntCounterVec,
    /// Instances made because no idle one was there (a call beyond
    /// `limits.instances` concurrent ones pays an instantiate + configure).
    pub plugin_instantiations: IntCounterVec,
    /// Instances dropped after their call because `limits.instances` idle
    /// ones were already kept.
    pub plugin_instances_over_pool: IntCounterVec,
    /// Hot swaps by plugin, source (`admin`, `file`, `sighup`, `rollback`) and result.
    pub plugin_swaps: IntCounterVec,
    pub plugin_canary_decisions: IntCounterVec,
    /// 1 while this node reaches the fleet store (`[fleet]`), by node.
    pub fleet_store_up: IntGaugeVec,
    /// Fleet records applied here, by plugin and outcome (`ok`, `rejected`).
    pub fleet_applies: IntCounterVec,
    /// Changes made here and written to the fleet store, by outcome.
    pub fleet_publishes: IntCounterVec,
    /// Connections to the fleet store that ended and were made again.
    pub fleet_reconnects: IntCounterVec,
    /// Counters a plugin defines through the `metrics` import.
    pub plugin_counter: CounterVec,
    /// Gauges a plugin defines through the `metrics` import.
    pub plugin_gauge: GaugeVec,
    /// SQL statements by destination (`primary`, `replica-N`, `rejected`, `error`) and class.
    pub sql_statements: IntCounterVec,
    /// Read-your-writes decisions: `covered`, `waited`, `fallback`, `pinned`.
    pub sql_causal: IntCounterVec,
    /// Statements refused because they may write and were bound for a replica.
    pub sql_replica_refusals: IntCounterVec,
    /// Replication lag per replica in seconds; -1 when not replicating.
    pub sql_replica_lag: GaugeVec,
    /// 1 while a SQL backend is routable.
    pub sql_backend_up: IntGaugeVec,
    /// Idle pooled connections per backend.
    pub sql_pool_idle: GaugeVec,
    /// Backend connections held by client sessions.
    pub sql_pool_in_use: IntGaugeVec,
    /// New backend logins.
    pub sql_backend_connects: IntCounterVec,
    /// Client connections by outcome (`accepted`, `auth_failed`, `closed_before_login`, `login_timeout`, `too_many`, `idle_timeout`, `closed_mid_command`).
    pub sql_clients: IntCounterVec,
    /// SQL client commands being executed (a drain on SIGTERM waits for 0).
    pub sql_active_commands: IntGauge,
    /// Statement classifications by how they were found (`hit`, `miss`, `uncached`).
    pub sql_classify: IntCounterVec,
    /// Session store calls by tier, operation and result.
    pub session_store_calls: IntCounterVec,
    /// Session store call latency by tier and operation.
    pub session_store_seconds: HistogramVec,
    /// Central or durable store calls a plugin hook awaited holding its
    /// instance (reads ahead and deferred writes are made without one).
    pub plugin_store_waits: IntCounterVec,
    /// Values evicted from a tier past its memory cap.
    pub session_evictions: IntCounterVec,
    /// Bytes and values held by the local tier.
    pub session_local_bytes: IntGauge,
    pub session_local_entries: IntGauge,
    /// Each memcached server of the central tier: 1 up, 0 marked down.
    pub session_central_up: IntGaugeVec,
    /// Values read from a backup and put back on a server that missed them.
    pub session_central_rehomed: IntCounterVec,
    /// Backup copies that could not be written.
    pub session_central_backup_failures: IntCounter,
    /// Tokens (cookies, passports) refused by reason.
    pub session_tokens_rejected: IntCounterVec,
    /// Requests whose session pin could not be honoured, by route and reason.
    pub session_pin_lost: IntCounterVec,
    /// Requests a session plugin answered itself, by route and status.
    pub session_replies: IntCounterVec,
    /// Session memos (`store.remember`) by plugin and outcome: `hit` (the
    /// forward repeated, no plugin call), `stale` (the read no longer fits
    /// it: the plugin was called).
    pub session_memo: IntCounterVec,
    /// Cluster peer traffic, by peer node id.
    pub cluster_bytes_sent: IntCounterVec,
    pub cluster_bytes_received: IntCounterVec,
    pub cluster_messages_sent: IntCounterVec,
    pub cluster_messages_received: IntCounterVec,
    /// Replicated deltas by result: `applied`, `stale` (not newer than held).
    pub cluster_deltas: IntCounterVec,
    /// Peer frames dropped by reason: `bad_mac`, `unknown_node`, `malformed`.
    pub cluster_rejected: IntCounterVec,
    /// Deltas dropped past a peer's backlog bound (replaced by a state transfer).
    pub cluster_backlog_dropped: IntCounterVec,
    /// 1 while a peer takes this node's deltas.
    pub cluster_peer_up: IntGaugeVec,
    /// 1 once this node has a live peer's state.
    pub cluster_caught_up: IntGauge,
    pub cluster_keys: IntGauge,
    /// How long the catch-up state transfer took.
    pub cluster_state_transfer_seconds: prometheus::Histogram,
    /// Access decisions by result (`permit`, `deny`, `obligation`) and reason.
    pub access_decisions: IntCounterVec,
    /// Usages cut by an ongoing decision.
    pub access_revocations: prometheus::IntCounter,
    /// Attribute store failures (each denied the request).
    pub access_store_errors: prometheus::IntCounter,
    pub access_decision_seconds: prometheus::Histogram,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("static metric definition");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let hook = &["plugin", "hook"];
        let active_requests = IntGauge::new("switchyard_active_requests", "Downstream requests in flight").expect("static");
        r.register(Box::new(active_requests.clone())).expect("unique metric name");
        let http_connections = IntGauge::new("switchyard_http_connections", "Downstream HTTP connections open").expect("static");
        r.register(Box::new(http_connections.clone())).expect("unique metric name");
        let http_refused = prometheus::IntCounter::new("switchyard_http_connections_refused_total", "HTTP connections refused past server.max_connections").expect("static");
        r.register(Box::new(http_refused.clone())).expect("unique metric name");
        let access_log_dropped = prometheus::IntCounter::new("switchyard_access_log_dropped_total", "Access log lines dropped: the writer's queue ([log] queue) was full").expect("static");
        r.register(Box::new(access_log_dropped.clone())).expect("unique metric name");
        Self {
            requests: counter(&r, "switchyard_requests_total", "Requests by route, upstream, backend and status", &["route", "upstream", "backend", "status"]),
            request_seconds: histogram(&r, "switchyard_request_duration_seconds", "Request latency", &["route", "upstream"], exponential_buckets(0.0005, 2.0, 16).expect("static")),
            active_requests,
            http_connections,
            http_refused,
            access_log_dropped,
            tls_reloads: counter(&r, "switchyard_tls_reloads_total", "TLS certificate reloads by source and result", &["source", "result"]),
            backend_active: int_gauge(&r, "switchyard_backend_active_requests", "Requests in flight per backend", &["upstream", "backend"]),
            backend_ewma_seconds: gauge(&r, "switchyard_backend_ewma_seconds", "Peak-EWMA latency per backend", &["upstream", "backend"]),
            backend_up: int_gauge(&r, "switchyard_backend_up", "1 while the backend is routable", &["upstream", "backend"]),
            health_transitions: counter(&r, "switchyard_health_transitions_total", "Backend health changes", &["upstream", "backend", "to"]),
            plugin_call_seconds: histogram(&r, "switchyard_plugin_call_duration_seconds", "Plugin call latency by hook", hook, exponential_buckets(0.000_001, 2.0, 20).expect("static")),
            plugin_traps: counter(&r, "switchyard_plugin_traps_total", "Plugin traps by hook", hook),
            plugin_deadline_hits: counter(&r, "switchyard_plugin_deadline_hits_total", "Plugin calls stopped by their deadline", hook),
            plugin_bad_returns: counter(&r, "switchyard_plugin_bad_returns_total", "Plugin answers the host could not use", hook),
            plugin_fallbacks: counter(&r, "switchyard_plugin_fallbacks_total", "Calls answered by the builtin after a plugin failure", hook),
            plugin_offloads: counter(&r, "switchyard_plugin_offloaded_calls_total", "Plugin calls that ran long and finished on the plugin pool", &["plugin"]),
            plugin_instantiations: counter(&r, "switchyard_plugin_instantiations_total", "Plugin instances made (instantiated and configured) because no idle one was there", &["plugin"]),
            plugin_instances_over_pool: counter(&r, "switchyard_plugin_instances_over_pool_total", "Plugin instances dropped after a call because limits.instances idle ones were kept", &["plugin"]),
            plugin_swaps: counter(&r, "switchyard_plugin_swaps_total", "Plugin hot swaps", &["plugin", "source", "result"]),
            plugin_canary_decisions: counter(&r, "switchyard_plugin_canary_decisions_total", "Canary versions ended, by outcome and by whom", &["plugin", "decision", "by"]),
            fleet_store_up: int_gauge(&r, "switchyard_fleet_store_up", "1 while this node reaches the fleet store", &["node"]),
            fleet_applies: counter(&r, "switchyard_fleet_applies_total", "Fleet plugin records applied on this node, by outcome", &["plugin", "outcome"]),
            fleet_publishes: counter(&r, "switchyard_fleet_publishes_total", "Changes made on this node written to the fleet store, by outcome", &["outcome"]),
            fleet_reconnects: counter(&r, "switchyard_fleet_reconnects_total", "Connections to the fleet store that ended and were made again", &["node"]),
            plugin_counter: {
                let c = CounterVec::new(Opts::new("switchyard_plugin_counter", "Counters defined by plugins"), &["plugin", "name"]).expect("static");
                r.register(Box::new(c.clone())).expect("unique metric name");
                c
            },
            plugin_gauge: gauge(&r, "switchyard_plugin_gauge", "Gauges defined by plugins", &["plugin", "name"]),
            sql_statements: counter(&r, "switchyard_sql_statements_total", "SQL statements by destination and class", &["destination", "class"]),
            sql_causal: counter(&r, "switchyard_sql_causal_total", "Read-your-writes decisions for reads after a write", &["result"]),
            sql_replica_refusals: counter(&r, "switchyard_sql_replica_refusals_total", "Statements that may write, refused on their way to a replica", &["replica", "class"]),
            sql_replica_lag: gauge(&r, "switchyard_sql_replica_lag_seconds", "Replication lag per replica (-1: not replicating)", &["replica"]),
            sql_backend_up: int_gauge(&r, "switchyard_sql_backend_up", "1 while the SQL backend is routable", &["backend"]),
            sql_pool_idle: gauge(&r, "switchyard_sql_pool_idle_connections", "Idle pooled backend connections", &["backend"]),
            sql_pool_in_use: int_gauge(&r, "switchyard_sql_pool_in_use_connections", "Backend connections held by client sessions", &["backend"]),
            sql_backend_connects: counter(&r, "switchyard_sql_backend_connects_total", "New backend logins", &["backend"]),
            sql_clients: counter(&r, "switchyard_sql_clients_total", "SQL client connections by outcome", &["outcome"]),
            sql_active_commands: {
                let g = IntGauge::new("switchyard_sql_active_commands", "SQL client commands in flight").expect("static");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            sql_classify: counter(&r, "switchyard_sql_classify_total", "Statement classifications by digest-cache outcome", &["result"]),
            session_store_calls: counter(&r, "switchyard_session_store_calls_total", "Session store calls by tier, operation and result", &["tier", "op", "result"]),
            session_store_seconds: histogram(&r, "switchyard_session_store_duration_seconds", "Session store call latency", &["tier", "op"], exponential_buckets(0.00005, 2.0, 16).expect("static")),
            plugin_store_waits: counter(&r, "switchyard_plugin_store_waits_total", "Central or durable store calls a plugin hook awaited holding its instance", &["plugin", "tier"]),
            session_evictions: counter(&r, "switchyard_session_evictions_total", "Session values evicted past a tier's memory cap", &["tier"]),
            session_local_bytes: {
                let g = IntGauge::new("switchyard_session_local_bytes", "Bytes held by the local session tier").expect("static");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            session_local_entries: {
                let g = IntGauge::new("switchyard_session_local_entries", "Values held by the local session tier").expect("static");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            session_central_up: int_gauge(&r, "switchyard_session_central_up", "memcached servers of the central tier: 1 up, 0 marked down", &["server"]),
            session_central_rehomed: counter(&r, "switchyard_session_central_rehomed_total", "Values read from a backup and put back where they were missing", &["result"]),
            session_central_backup_failures: {
                let c = IntCounter::new("switchyard_session_central_backup_failures_total", "Backup copies of central-tier values not written").expect("static");
                r.register(Box::new(c.clone())).expect("unique metric name");
                c
            },
            session_tokens_rejected: counter(&r, "switchyard_session_tokens_rejected_total", "Signed tokens refused (forged, tampered, expired, malformed)", &["reason"]),
            session_pin_lost: counter(&r, "switchyard_session_pin_lost_total", "Session pins the lb could not honour", &["route", "reason"]),
            session_replies: counter(&r, "switchyard_session_replies_total", "Requests a session plugin answered itself", &["route", "status"]),
            session_memo: counter(&r, "switchyard_session_memo_total", "Session forwards the gateway repeated for a plugin (store.remember), by outcome", &["plugin", "outcome"]),
            cluster_bytes_sent: counter(&r, "switchyard_cluster_bytes_sent_total", "Bytes sent to each peer node", &["peer"]),
            cluster_bytes_received: counter(&r, "switchyard_cluster_bytes_received_total", "Bytes received from each peer node", &["peer"]),
            cluster_messages_sent: counter(&r, "switchyard_cluster_messages_sent_total", "Messages sent to each peer node", &["peer"]),
            cluster_messages_received: counter(&r, "switchyard_cluster_messages_received_total", "Messages received from each peer node", &["peer"]),
            cluster_deltas: counter(&r, "switchyard_cluster_deltas_total", "Replicated deltas received, applied or stale", &["result"]),
            cluster_rejected: counter(&r, "switchyard_cluster_rejected_total", "Peer messages dropped (bad MAC, unknown node, malformed)", &["reason"]),
            cluster_backlog_dropped: counter(&r, "switchyard_cluster_backlog_dropped_total", "Deltas dropped past a peer's backlog bound", &["peer"]),
            cluster_peer_up: int_gauge(&r, "switchyard_cluster_peer_up", "1 while a peer takes this node's deltas", &["peer"]),
            cluster_caught_up: {
                let g = IntGauge::new("switchyard_cluster_caught_up", "1 once this node holds a live peer's state").expect("static");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            cluster_keys: {
                let g = IntGauge::new("switchyard_cluster_keys", "Keys in the replicated tier").expect("static");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            cluster_state_transfer_seconds: {
                let h = prometheus::Histogram::with_opts(HistogramOpts::new("switchyard_cluster_state_transfer_seconds", "Catch-up state transfer duration").buckets(exponential_buckets(0.001, 2.0, 16).expect("static"))).expect("static");
                r.register(Box::new(h.clone())).expect("unique metric name");
                h
            },
            access_decisions: counter(&r, "switchyard_access_decisions_total", "Access decisions by result and reason", &["result", "reason"]),
            access_revocations: {
                let c = prometheus::IntCounter::new("switchyard_access_revocations_total", "Usages revoked by an ongoing decision").expect("static");
                r.register(Box::new(c.clone())).expect("unique metric name");
                c
            },
            access_store_errors: {
                let c = prometheus::IntCounter::new("switchyard_access_store_errors_total", "Attribute store failures in access checks").expect("static");
                r.register(Box::new(c.clone())).expect("unique metric name");
                c
            },
            access_decision_seconds: {
                let h = prometheus::Histogram::with_opts(HistogramOpts::new("switchyard_access_decision_duration_seconds", "Pre-decision latency, attribute reads included").buckets(exponential_buckets(0.00001, 2.0, 18).expect("static"))).expect("static");
                r.register(Box::new(h.clone())).expect("unique metric name");
                h
            },
            registry: r,
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

/// Count a plugin fault under its metric.
pub fn plugin_fault(plugin: &str, hook: &str, fault: crate::error::PluginFault) {
    use crate::error::PluginFault::*;
    let m = metrics();
    let vec = match fault {
        Trap | MemoryCap => &m.plugin_traps,
        Deadline => &m.plugin_deadline_hits,
        BadReturn => {
            // Raised in the request's own task: the access log counts it.
            crate::accesslog::fault();
            &m.plugin_bad_returns
        }
        Load | Config => return,
    };
    vec.with_label_values(&[plugin, hook]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = metrics();
        m.plugin_call_seconds.with_label_values(&["p", "select"]).observe(0.000_002);
        plugin_fault("p", "select", crate::error::PluginFault::Trap);
        let text = m.render();
        assert!(text.contains("switchyard_plugin_call_duration_seconds_count{hook=\"select\",plugin=\"p\"} 1"), "{text}");
        assert!(text.contains("switchyard_plugin_traps_total{hook=\"select\",plugin=\"p\"} 1"), "{text}");
    }
}
