//! The MySQL-protocol listener: read/write split with a Wasm router.
//!
//! Clients log in to the gateway; each statement is classified
//! (`classify`), routed by the `SqlRouter` seam, then held to the host's
//! guarantees (`session`) and forwarded frame by frame to a pooled,
//! authenticated backend connection (`backend`). `health` polls
//! replication status and GTID positions.

pub mod backend;
mod health;
mod session;
pub mod tls;

pub use switchyard_mysql::{auth, classify, wire, SqlError};

pub use health::SqlHealth;

use crate::config::{SqlSpec, UpstreamSpec, HealthSection, CheckKind};
use crate::seams::{LbPolicy, SqlRouter};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use backend::Node;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

/// Statement shapes whose class is kept (a few hundred bytes each).
const CLASS_CACHE_ENTRIES: usize = 8192;

/// Index of the primary in `SqlProxy::nodes`.
pub const PRIMARY: usize = 0;

/// Replicas an lb policy chooses among: an upstream whose backend `i` is
/// node `nodes[i]`.
pub struct ReplicaSet {
    pub upstream: Arc<Upstream>,
    pub nodes: Vec<usize>,
}

/// Everything a client session shares.
pub struct SqlProxy {
    pub spec: SqlSpec,
    /// The primary first, then the replicas in config order.
    pub nodes: Vec<Arc<Node>>,
    /// Every replica.
    pub replicas: ReplicaSet,
    /// Replicas by `group`.
    pub groups: BTreeMap<String, ReplicaSet>,
    pub router: Arc<dyn SqlRouter>,
    conn_ids: AtomicU32,
    /// Server version announced to clients: the primary's once seen.
    pub version: ArcSwap<String>,
    /// Live client sessions by the connection id they were given, so a
    /// `KILL` can reach the backend connections a session holds.
    pub sessions: parking_lot::Mutex<std::collections::HashMap<u32, Arc<SessionHandle>>>,
    /// The primary's `@@global.autocommit`, announced to new clients;
    /// re-read after every `SET GLOBAL` that passes through.
    pub global_autocommit: std::sync::atomic::AtomicBool,
    /// Statement classes by digest: the parser runs once per statement shape.
    pub classes: switchyard_mysql::digest::ClassCache,
    /// `switchyard_sql_classify_total` by result, resolved once.
    pub classify_counters: [prometheus::IntCounter; 3],
    /// `switchyard_sql_causal_total` by outcome, resolved once.
    pub causal_counters: CausalCounters,
    /// `switchyard_sql_statements_total{backend="rejected"}` by class.
    pub rejected: [prometheus::IntCounter; 6],
    /// Client connections being served, against `spec.max_connections`.
    clients: Arc<std::sync::atomic::AtomicUsize>,
    /// TLS for clients that ask (`[sql] tls`).
    pub tls: Option<tls::SqlTls>,
}

/// Read-your-writes outcomes, each a `switchyard_sql_causal_total` label.
pub struct CausalCounters {
    pub pinned: prometheus::IntCounter,
    pub fallback: prometheus::IntCounter,
    pub covered: prometheus::IntCounter,
    pub waited: prometheus::IntCounter,
}

impl CausalCounters {
    fn new() -> Self {
        let c = |l: &str| crate::metrics::metrics().sql_causal.with_label_values(&[l]);
        Self { pinned: c("pinned"), fallback: c("fallback"), covered: c("covered"), waited: c("waited") }
    }
}

/// One client's place under `max_connections`, given back on drop.
pub struct ClientSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What another session's `KILL` needs of a session.
#[derive(Debug)]
pub struct SessionHandle {
    pub user: String,
    /// (node, backend thread id) of every backend connection it holds.
    pub backends: parking_lot::Mutex<Vec<(usize, u32)>>,
    pub killed: std::sync::atomic::AtomicBool,
    pub wake: tokio::sync::Notify,
}

impl SqlProxy {
    /// Answer clients' SSL requests with `hub`'s certificates.
    pub fn with_tls(mut self, hub: Option<&crate::tls::TlsHub>) -> Self {
        self.tls = hub.map(|h| tls::SqlTls(tokio_rustls::TlsAcceptor::from(h.server_config())));
        self
    }

    /// Build from the spec, the router and a factory of replica lb policies
    /// (one per replica set).
    pub fn new(spec: &SqlSpec, router: Arc<dyn SqlRouter>, mut lb: impl FnMut() -> Arc<dyn LbPolicy>) -> Self {
        let timeout = Duration::from_millis(spec.connect_timeout_ms);
        // Gateway-issued commands include causal waits of up to causal_timeout_ms.
        let command = Duration::from_millis(spec.connect_timeout_ms + spec.causal_timeout_ms + 1000);
        let node = |addr, role: String| {
            let tls = spec.backend_tls.as_ref().and_then(|t| match tls::BackendTls::for_backend(t, &role, addr) {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::error!(backend = %role, "no TLS to this backend: {e}");
                    None
                }
            });
            Arc::new(Node::new(addr, role, spec.pool_idle, timeout, command).with_tls(tls))
        };
        let mut nodes = vec![node(spec.primary, "primary".into())];
        nodes.extend(spec.replicas.iter().enumerate().map(|(i, r)| node(r.addr, format!("replica-{i}"))));
        let mut set = |name: String, members: Vec<usize>| {
            let uspec = UpstreamSpec {
                name,
                backends: members.iter().map(|&n| (spec.replicas[n - 1].addr, spec.replicas[n - 1].weight)).collect(),
                lb: spec.replica_lb.clone(),
                health: HealthSection { check: CheckKind::None, ..HealthSection::default() },
                retries: 0,
                connect_timeout_ms: spec.connect_timeout_ms,
                io: Default::default(),
                tls: None,
                protocol: Default::default(),
                max_streams: 100,
            };
            ReplicaSet { upstream: Arc::new(Upstream::new(&uspec, lb())), nodes: members }
        };
        let replicas = set("sql:replicas".into(), (1..=spec.replicas.len()).collect());
        let mut names: Vec<&String> = spec.replicas.iter().filter_map(|r| r.group.as_ref()).collect();
        names.sort();
        names.dedup();
        let groups = names
            .into_iter()
            .map(|g| {
                let members = (1..=spec.replicas.len()).filter(|&n| spec.replicas[n - 1].group.as_ref() == Some(g)).collect();
                (g.clone(), set(format!("sql:group:{g}"), members))
            })
            .collect();
        Self {
            spec: spec.clone(),
            nodes,
            replicas,
            groups,
            router,
            conn_ids: AtomicU32::new(1),
            version: ArcSwap::from_pointee("5.5.5-10.11.0-MariaDB-switchyard".into()),
            sessions: parking_lot::Mutex::new(std::collections::HashMap::new()),
            global_autocommit: true.into(),
            classes: switchyard_mysql::digest::ClassCache::new(CLASS_CACHE_ENTRIES, spec.pure_functions.clone()),
            classify_counters: ["hit", "miss", "uncached"].map(|r| crate::metrics::metrics().sql_classify.with_label_values(&[r])),
            rejected: backend::statement_counters("rejected"),
            causal_counters: CausalCounters::new(),
            clients: Arc::default(),
            tls: None,
        }
    }

    /// Every replica set (all, then each group), for health updates.
    pub fn replica_sets(&self) -> impl Iterator<Item = &ReplicaSet> {
        std::iter::once(&self.replicas).chain(self.groups.values())
    }

    /// A place for one more client, unless `max_connections` are served.
    pub fn client_slot(&self) -> Option<ClientSlot> {
        use std::sync::atomic::Ordering;
        let max = self.spec.max_connections;
        self.clients.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(ClientSlot(self.clients.clone()))
    }

    fn next_conn_id(&self) -> u32 {
        self.conn_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The Pingora app serving one client connection per call.
pub struct SqlApp(pub Arc<SqlProxy>);

#[async_trait::async_trait]
impl pingora::apps::ServerApp for SqlApp {
    async fn process_new(self: &Arc<Self>, stream: pingora::protocols::Stream, _shutdown: &pingora::server::ShutdownWatch) -> Option<pingora::protocols::Stream> {
        session::serve(self.0.clone(), stream).await;
        None
    }
}

/// The listening service for `[sql]`.
pub fn service(proxy: Arc<SqlProxy>) -> impl pingora::services::ServiceWithDependents {
    let listen = proxy.spec.listen.to_string();
    let mut svc = pingora::services::listening::Service::new("sql".into(), SqlApp(proxy));
    svc.add_listener(crate::server::unbuffered_tcp(&listen));
    svc
}
