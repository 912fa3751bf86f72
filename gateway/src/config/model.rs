//! The config file as written: serde structs that reject unknown keys.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub admin: Option<AdminSection>,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSection>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub demo: Option<DemoSection>,
    #[serde(default)]
    pub sql: Option<SqlSection>,
    #[serde(default)]
    pub session: Option<SessionSection>,
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    #[serde(default)]
    pub access: Option<AccessSection>,
    /// `[log]`: the access log; absent = off.
    #[serde(default)]
    pub log: Option<LogSection>,
    /// `[fleet]`: plugin versions shared by every node through etcd.
    #[serde(default)]
    pub fleet: Option<FleetSection>,
}

/// `[fleet]`: the etcd cluster that holds the fleet's plugin versions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// etcd client addresses, `host:port` or `http://host:port`.
    pub endpoints: Spanned<Vec<String>>,
    /// This node's name in the fleet (default: the host name).
    pub node: Option<Spanned<String>>,
    /// Where the fleet's keys live (default `/switchyard`).
    pub prefix: Option<Spanned<String>>,
    /// etcd user; with auth on, its password in `password` or `password_env`.
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    /// Budget of one store call (default 2000).
    pub timeout_ms: Option<Spanned<u64>>,
    /// How long an admin change waits for the other nodes to report it
    /// (default 3000; 0: do not wait).
    pub confirm_ms: Option<Spanned<u64>>,
    /// With `https://` endpoints: the CA that signed the members' certificates.
    pub ca_file: Option<Spanned<String>>,
    /// A client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

/// `[log]`: one line per HTTP request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `json` (default) or `combined`.
    pub format: Option<Spanned<String>>,
    /// A file (relative to the config), or `-` for stdout (default).
    pub path: Option<Spanned<String>>,
    /// Fields of a JSON line, in order; default all but `query`.
    pub fields: Option<Spanned<Vec<String>>>,
    /// Share of requests logged, 0..=1 (default 1).
    pub sample: Option<Spanned<f64>>,
    /// Lines waiting for the writer; past it lines are dropped.
    pub queue: Option<Spanned<i64>>,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Spanned<String>,
    pub threads: usize,
    /// Threads where plugin calls that run long finish (default: half of `threads`, at least 1).
    pub plugin_threads: Option<usize>,
    /// Header carrying the request id; kept if the client sent a valid one.
    pub request_id_header: String,
    /// On SIGTERM: how long in-flight requests get to finish before the
    /// runtimes stop (Pingora's default is 300 s, longer than any service
    /// manager waits). Whole seconds: Pingora's granularity.
    pub grace_ms: u64,
    /// On SIGTERM or SIGINT: how long `/healthz` answers 503 (so keepalived
    /// or a load balancer moves traffic away) while the gateway still
    /// serves, before it stops accepting and drains.
    pub drain_delay_ms: u64,
    /// One tokio runtime per thread, each serving the connections it
    /// accepted (Pingora's no-steal runtimes): fewer cross-thread wake-ups.
    pub work_stealing: bool,
    /// Client connections the HTTP listener serves at once; one more gets
    /// a 503 and is closed.
    pub max_connections: usize,
    /// Accept cleartext HTTP/2 with prior knowledge (h2c) on `listen`.
    pub h2c: bool,
    /// `listen` answers every request with a 308 to the HTTPS listener.
    pub redirect_https: bool,
    /// The HTTPS listener (`[server.tls]`).
    pub tls: Option<TlsSection>,
    /// Where a new process (`run --upgrade`) receives the listening sockets.
    pub upgrade_sock: Option<Spanned<String>>,
}

/// `[server.tls]`: an HTTPS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Spanned<String>,
    /// The first is the default (no SNI, or a name no certificate has).
    pub certs: Spanned<Vec<CertSection>>,
    /// Offer HTTP/2 in ALPN (with http/1.1).
    #[serde(default = "yes")]
    pub h2: bool,
    /// Ask clients for a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<Spanned<String>>,
    /// `required` (default with `client_ca`) or `optional`.
    pub client_auth: Option<Spanned<String>>,
    /// `Strict-Transport-Security: max-age=N` on HTTPS answers; 0 = off.
    #[serde(default)]
    pub hsts_max_age_s: u64,
    #[serde(default)]
    pub hsts_include_subdomains: bool,
    /// Poll the certificate, key and CA files; reload when one changes. 0 = off.
    #[serde(default = "default_tls_watch_ms")]
    pub watch_ms: u64,
}

fn yes() -> bool {
    true
}

fn default_tls_watch_ms() -> u64 {
    2000
}

/// `[sql.backend_tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBackendTlsSection {
    /// Trust these CAs instead of the system roots.
    pub ca_file: Option<Spanned<String>>,
    /// Check the backend's certificate and name (false is logged).
    #[serde(default = "yes_spanned")]
    pub verify: Spanned<bool>,
    /// The name verified; default: each backend's IP.
    pub server_name: Option<Spanned<String>>,
    /// `primary`, `replica-N`: the backends that speak TLS; default all.
    pub backends: Option<Spanned<Vec<String>>>,
}

/// `[[server.tls.certs]]`: one certificate chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    /// Server names it answers; absent: the DNS names in the certificate.
    pub names: Option<Spanned<Vec<String>>>,
}

/// Default of `server.work_stealing` (see the HTTP bench).
pub const WORK_STEALING: bool = true;

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, "127.0.0.1:8080".into()),
            threads: 2,
            plugin_threads: None,
            request_id_header: "x-request-id".into(),
            grace_ms: 5000,
            drain_delay_ms: 0,
            work_stealing: WORK_STEALING,
            max_connections: 65_536,
            h2c: false,
            redirect_https: false,
            tls: None,
            upgrade_sock: None,
        }
    }
}

/// `[admin]`: the admin API listener and its bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Default `127.0.0.1:9901`.
    pub listen: Option<Spanned<String>>,
    /// The bearer token itself (prefer `token_env` outside tests).
    pub token: Option<Spanned<String>>,
    /// Name of the environment variable holding the token.
    pub token_env: Option<Spanned<String>>,
    /// Largest accepted request body (a plugin upload), in MiB.
    #[serde(default = "default_max_body_mb")]
    pub max_body_mb: Spanned<u64>,
}

fn default_max_body_mb() -> Spanned<u64> {
    // Python components are around 40 MiB.
    Spanned::new(0..0, 64)
}

/// What a failing plugin call turns into.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Use the seam's builtin policy for this call.
    #[default]
    Fallback,
    /// Answer 503.
    FailClosed,
}

/// `[plugins.NAME.limits]`
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock budget of one call.
    pub deadline_ms: u64,
    /// Cap on the instance's linear memory.
    pub memory_mb: u64,
    /// Most idle instances kept in the pool.
    pub instances: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { deadline_ms: 5, memory_mb: 32, instances: 8 }
    }
}

/// `[plugins.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    pub path: Spanned<String>,
    /// Absent: `fail-closed` for a route's session or access plugin (access
    /// plugins always fail closed), `fallback` for lb and SQL router plugins.
    #[serde(default)]
    pub on_error: Option<Spanned<OnError>>,
    #[serde(default)]
    pub limits: PluginLimits,
    /// Plain, not `Spanned`: a `Spanned` table fails on sub-table headers
    /// (`[plugins.NAME.config.roles]`); its line is found in the text.
    #[serde(default)]
    pub config: toml::Table,
    /// Poll the file every `watch_ms` and hot-swap it when it changes; 0 = off.
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    /// An lb plugin's canary splits requests by this header's value (a
    /// request without it is split at random) instead of the client address.
    #[serde(default)]
    pub canary_header: Option<Spanned<String>>,
}

fn default_watch_ms() -> u64 {
    1000
}

/// One backend of an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub address: Spanned<String>,
    #[serde(default = "one")]
    pub weight: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// Active health check kind.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    Tcp,
    None,
}

/// `health = { ... }` of an upstream.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub check: CheckKind,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Successes in a row to mark a backend healthy again.
    pub rise: u32,
    /// Failures in a row (active checks) to mark it down.
    pub fall: u32,
    /// Passive ejection: failed requests in a row that eject a backend.
    pub max_failures: u32,
    /// How long a passively ejected backend stays out before traffic probes it.
    pub eject_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            check: CheckKind::Tcp,
            path: "/".into(),
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
            max_failures: 3,
            eject_ms: 10_000,
        }
    }
}

/// `[[upstreams]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub name: Spanned<String>,
    pub backends: Spanned<Vec<BackendSection>>,
    /// A `[plugins.NAME]`, or absent for the builtin round robin.
    pub lb: Option<Spanned<String>>,
    #[serde(default)]
    pub health: HealthSection,
    /// Other backends to try after a connect failure.
    #[serde(default = "default_retries")]
    pub retries: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the backend's next bytes (headers or body).
    #[serde(default = "default_io_timeout")]
    pub read_timeout_ms: Spanned<u64>,
    /// Longest wait for the backend to take the request's next bytes.
    #[serde(default = "default_io_timeout")]
    pub write_timeout_ms: Spanned<u64>,
    /// A pooled keep-alive connection unused this long is closed.
    #[serde(default = "default_io_timeout")]
    pub idle_timeout_ms: Spanned<u64>,
    /// Speak TLS to the backends.
    #[serde(default)]
    pub tls: bool,
    /// Server name sent and verified; default: each backend's IP.
    pub sni: Option<Spanned<String>>,
    /// Verify backend certificates against this PEM bundle instead of the system roots.
    pub ca_file: Option<Spanned<String>>,
    /// Verify the backend's certificate and name. Turning it off is logged.
    #[serde(default = "yes_spanned")]
    pub verify: Spanned<bool>,
    /// A client certificate chain and key presented to the backends.
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    /// `http1` (default), `h2` (over TLS, by ALPN) or `h2c` (cleartext, prior knowledge).
    pub protocol: Option<Spanned<String>>,
    /// Concurrent streams per HTTP/2 connection to a backend.
    #[serde(default = "default_max_streams")]
    pub max_streams: Spanned<usize>,
}

fn yes_spanned() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

fn default_max_streams() -> Spanned<usize> {
    Spanned::new(0..0, 100)
}

fn default_io_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 60_000)
}

fn default_retries() -> usize {
    2
}

fn default_connect_timeout() -> u64 {
    1000
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Host to match (without port); absent matches any host.
    pub host: Option<String>,
    #[serde(default = "slash")]
    pub path_prefix: Spanned<String>,
    pub upstream: Spanned<String>,
    /// The session plugin for requests on this route.
    pub session: Option<Spanned<String>>,
    /// The access-control plugin for requests on this route.
    pub access: Option<Spanned<String>>,
    /// Path segments captured as object attributes: `/exam/{course}/submit`.
    pub path_pattern: Option<Spanned<String>>,
    /// Object attributes of everything on this route (`kind = "exam"`).
    #[serde(default)]
    pub object: toml::Table,
    /// Method -> right (`POST = "submit"`); default `read` for GET, HEAD and
    /// OPTIONS, `write` otherwise.
    #[serde(default)]
    pub rights: BTreeMap<String, String>,
}

fn slash() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

/// `[demo]`: HTTP backends the gateway starts itself, so a config runs with
/// nothing else on the machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    pub backends: Vec<DemoBackendSection>,
}

/// One embedded demo backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoBackendSection {
    pub listen: Spanned<String>,
    pub name: String,
}

/// How reads after a client's write are kept causal.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CausalMode {
    /// Wait on the replica for the write's GTID (`MASTER_GTID_WAIT`), then
    /// fall back to the primary after `causal_timeout_ms`.
    #[default]
    Gtid,
    /// Send the client's reads to the primary for `pin_window_ms` after a write.
    Pin,
    /// No read-your-writes guarantee.
    Off,
}

/// `[sql]`: the MySQL-protocol listener and its read/write split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// Default `127.0.0.1:6033`.
    pub listen: Option<Spanned<String>>,
    /// A `[plugins.NAME]` exporting `sql-router`; absent = builtin rw split.
    pub router: Option<Spanned<String>>,
    /// A `[plugins.NAME]` exporting `lb` that picks among replicas;
    /// absent = builtin round robin.
    pub replica_lb: Option<Spanned<String>>,
    /// The primary, `host:port`.
    pub primary: Spanned<String>,
    /// Answer clients' SSL requests with `[server.tls]`'s certificates.
    #[serde(default)]
    pub tls: Option<Spanned<bool>>,
    /// Refuse clients that do not switch to TLS.
    #[serde(default)]
    pub require_tls: Option<Spanned<bool>>,
    /// TLS from the gateway to the SQL backends (`[sql.backend_tls]`).
    #[serde(default)]
    pub backend_tls: Option<SqlBackendTlsSection>,
    #[serde(default)]
    pub replicas: Vec<SqlReplicaSection>,
    /// Client logins; the gateway logs in to the backends as the same user.
    pub users: Spanned<Vec<SqlUserSection>>,
    /// Login for replication-status polls (needs `REPLICATION CLIENT`).
    pub monitor: SqlUserSection,
    #[serde(default)]
    pub causal: CausalMode,
    #[serde(default = "default_causal_timeout_ms")]
    pub causal_timeout_ms: Spanned<u64>,
    #[serde(default = "default_pin_window_ms")]
    pub pin_window_ms: Spanned<u64>,
    /// Replicas further behind than this (`Seconds_Behind_Master`) are skipped.
    #[serde(default = "default_max_lag_s")]
    pub max_lag_s: Spanned<u64>,
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: Spanned<u64>,
    #[serde(default = "default_sql_connect_timeout_ms")]
    pub connect_timeout_ms: Spanned<u64>,
    /// Idle authenticated connections kept per backend and user.
    #[serde(default = "default_pool_idle")]
    pub pool_idle: Spanned<usize>,
    /// Stored functions without side effects (`name` or `schema.name`):
    /// reads that call them may run on replicas. Every other non-builtin
    /// function sends its statement to the primary.
    #[serde(default = "no_functions")]
    pub pure_functions: Spanned<Vec<String>>,
    /// A client that has not logged in this long is disconnected.
    #[serde(default = "default_login_timeout_ms")]
    pub login_timeout_ms: Spanned<u64>,
    /// A logged-in client silent this long is disconnected (MariaDB's
    /// `wait_timeout`, 8 h).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: Spanned<u64>,
    /// A backend silent this long during a client's statement: the
    /// statement fails (ERROR 2013) and that backend connection is dropped
    /// (ProxySQL's `default_query_timeout`, 10 h).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: Spanned<u64>,
    /// Client connections served at once; one more gets ERROR 1040.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// Prepared statements one client may hold (MariaDB's default
    /// `max_prepared_stmt_count` for a whole server).
    #[serde(default = "default_max_prepared")]
    pub max_prepared: Spanned<usize>,
    /// Session-state commands (`SET`, `USE`) one client may accumulate for
    /// replay on other backends.
    #[serde(default = "default_max_session_log")]
    pub max_session_log: Spanned<usize>,
    /// Statements slower than this are logged (warn); 0 = off.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: Spanned<u64>,
}

fn default_login_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 10_000)
}
fn default_idle_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 28_800_000)
}
fn default_read_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 36_000_000)
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}
fn default_max_prepared() -> Spanned<usize> {
    Spanned::new(0..0, 16_382)
}
fn default_slow_ms() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}
fn default_max_session_log() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}

fn default_causal_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 200)
}
fn default_pin_window_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}
fn default_max_lag_s() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}
fn default_health_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 500)
}
fn default_sql_connect_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}
fn no_functions() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}
fn default_pool_idle() -> Spanned<usize> {
    Spanned::new(0..0, 32)
}

/// `[[sql.replicas]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlReplicaSection {
    pub address: Spanned<String>,
    #[serde(default = "one")]
    pub weight: Spanned<u32>,
    /// Named group a router can send statements to (`group(name)`).
    pub group: Option<Spanned<String>>,
}

/// A MySQL login: `password` or `password_env`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlUserSection {
    pub name: Spanned<String>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
}

/// `[session]`: the store tiers session plugins reach through the `store`
/// import, and the keys of the `tokens` import.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// HMAC-SHA256 keys, at least 32 bytes each: the first signs, every
    /// one verifies (list the new key first during a rotation).
    pub keys: Option<Spanned<Vec<String>>>,
    /// Environment variable holding the keys, comma-separated.
    pub keys_env: Option<Spanned<String>>,
    #[serde(default)]
    pub local: LocalTierSection,
    pub central: Option<CentralTierSection>,
    pub durable: Option<DurableTierSection>,
}

/// `[session.local]`: in this process.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LocalTierSection {
    /// Memory cap of keys and values; the least recently used go first.
    pub max_mb: u64,
    /// Default TTL of a value.
    pub ttl_s: u32,
}

impl Default for LocalTierSection {
    fn default() -> Self {
        Self { max_mb: 64, ttl_s: 1800 }
    }
}

/// `[session.central]`: memcached.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CentralTierSection {
    /// `host:port` of each memcached server; keys are spread over them.
    pub servers: Spanned<Vec<String>>,
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
    /// Budget of one store call.
    #[serde(default = "default_central_timeout")]
    pub timeout_ms: u64,
    /// How long `lock` waits for a lock held by another request.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_ms: u64,
    /// Expiry of a lock, so a crashed holder cannot keep it.
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl_s: u32,
    /// Connections per server.
    #[serde(default = "default_pool")]
    pub pool: u32,
    /// Copies of each value on the next server(s) of its order: 1 by
    /// default with two servers or more, 0 with one.
    #[serde(default)]
    pub backups: Option<Spanned<u32>>,
}

/// `[session.durable]`: a MariaDB/MySQL table.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DurableTierSection {
    /// `mysql://user:password@host:port/database`.
    pub url: Option<Spanned<String>>,
    /// Environment variable holding the URL.
    pub url_env: Option<Spanned<String>>,
    /// Created if missing.
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
    #[serde(default = "default_durable_timeout")]
    pub timeout_ms: u64,
}

fn default_ttl() -> u32 {
    1800
}
fn default_central_timeout() -> u64 {
    250
}
fn default_lock_timeout() -> u64 {
    2000
}
fn default_lock_ttl() -> u32 {
    10
}
fn default_pool() -> u32 {
    16
}
fn default_table() -> String {
    "switchyard_sessions".into()
}
fn default_durable_timeout() -> u64 {
    1000
}

/// `[cluster]`: this gateway node and its peers, for the `replicated` tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id, unique in the cluster.
    pub id: Spanned<u32>,
    /// Where peers reach this node.
    pub listen: Spanned<String>,
    /// The shared key that signs every peer message (at least 32 bytes).
    pub key: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// Deltas queued per unreachable peer before the queue is replaced by
    /// a full state transfer when it is back.
    #[serde(default = "default_backlog")]
    pub backlog: usize,
    /// Default TTL of replicated values.
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
}

/// One `[[cluster.peers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub id: u32,
    pub address: Spanned<String>,
}

fn default_backlog() -> usize {
    10_000
}

/// `[access]`: where subject attributes come from, for access plugins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// HS256 keys of the tokens subjects present (`Authorization: Bearer`
    /// or the `token_cookie`); at least 32 bytes each, any one verifies.
    pub jwt_keys: Option<Spanned<Vec<String>>>,
    pub jwt_keys_env: Option<Spanned<String>>,
    /// Keys with an id and an algorithm (`[[access.keys]]`): a token's
    /// `kid` selects one, so keys can rotate; RS256/ES256 verify tokens of
    /// an identity provider without holding its signing secret.
    #[serde(default)]
    pub keys: Vec<AccessKeySection>,
    /// When set, a token's `aud` must name it.
    pub audience: Option<Spanned<String>>,
    /// When set, a token's `iss` must be it.
    pub issuer: Option<Spanned<String>>,
    #[serde(default = "default_token_cookie")]
    pub token_cookie: String,
    /// TOML file of static subject attributes: `[subjects.ID] class = "students"`.
    pub attributes_file: Option<Spanned<String>>,
    /// Mutable integer attributes (`attempts`), kept in `mutable_tier`.
    #[serde(default)]
    pub mutable: Vec<String>,
    /// `central` (memcached: atomic across nodes) or `local` (one node).
    #[serde(default = "default_mutable_tier")]
    pub mutable_tier: Spanned<String>,
}

/// One `[[access.keys]]`: an HS256 secret or an RS256/ES256 public key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeySection {
    pub kid: Spanned<String>,
    /// `HS256`, `RS256` or `ES256`: the only algorithm this key verifies.
    pub alg: Spanned<String>,
    /// HS256: the secret (at least 32 bytes), or the variable holding it.
    pub secret: Option<Spanned<String>>,
    pub secret_env: Option<Spanned<String>>,
    /// RS256/ES256: a PEM public key (`BEGIN PUBLIC KEY`), relative to the config file.
    pub public_key_file: Option<Spanned<String>>,
}

fn default_token_cookie() -> String {
    "sy_token".into()
}

fn default_mutable_tier() -> Spanned<String> {
    Spanned::new(0..0, "central".into())
}
