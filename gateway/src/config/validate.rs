//! Semantic checks on a parsed config: addresses, references, paths, limits.

use super::model::*;
use super::{line_of, ConfigError};
use jsonwebtoken as jwt;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub plugin_threads: usize,
    pub request_id_header: String,
    pub grace_ms: u64,
    pub drain_delay_ms: u64,
    pub work_stealing: bool,
    pub max_connections: usize,
    /// Cleartext HTTP/2 (prior knowledge) on `listen`.
    pub h2c: bool,
    /// `listen` redirects to the HTTPS listener.
    pub redirect_https: bool,
    pub tls: Option<super::TlsSpec>,
    /// The binary upgrade's Unix socket.
    pub upgrade_sock: PathBuf,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    pub demo: Vec<(SocketAddr, String)>,
    pub admin: Option<AdminSpec>,
    pub sql: Option<SqlSpec>,
    pub session: SessionSpec,
    pub cluster: Option<ClusterSpec>,
    pub access: Option<AccessSpec>,
    /// The access log (`[log]`); absent = off.
    pub log: Option<super::LogSpec>,
    /// `[fleet]`: plugin versions shared through etcd; absent = off.
    pub fleet: Option<super::FleetSpec>,
}

/// `[cluster]`, validated.
#[derive(Clone)]
pub struct ClusterSpec {
    pub id: u32,
    pub listen: SocketAddr,
    pub key: Vec<u8>,
    pub peers: Vec<(u32, SocketAddr)>,
    pub backlog: usize,
    pub ttl_s: u32,
}

impl std::fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpec").field("id", &self.id).field("listen", &self.listen).field("peers", &self.peers).finish()
    }
}

/// The session store tiers and token keys (`[session]`); all off when absent.
#[derive(Clone, Default)]
pub struct SessionSpec {
    pub keys: Vec<Vec<u8>>,
    pub local: LocalTierSection,
    pub central: Option<CentralSpec>,
    pub durable: Option<DurableSpec>,
}

/// memcached, validated.
#[derive(Clone, Debug)]
pub struct CentralSpec {
    pub servers: Vec<SocketAddr>,
    /// Copies of each value past its primary (the next servers in its order).
    pub backups: usize,
    pub ttl_s: u32,
    pub timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub lock_ttl_s: u32,
    pub pool: u32,
}

/// MariaDB, validated.
#[derive(Clone)]
pub struct DurableSpec {
    pub url: String,
    pub table: String,
    pub ttl_s: u32,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for SessionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSpec").field("keys", &self.keys.len()).field("central", &self.central).field("durable", &self.durable.is_some()).finish()
    }
}

/// The SQL listener, when `[sql]` is present.
#[derive(Clone)]
pub struct SqlSpec {
    pub listen: SocketAddr,
    /// Clients may switch to TLS (the `[server.tls]` certificates).
    pub tls: bool,
    /// Clients must.
    pub require_tls: bool,
    /// TLS to the backends.
    pub backend_tls: Option<super::SqlBackendTls>,
    pub router: Option<String>,
    pub replica_lb: Option<String>,
    pub primary: SocketAddr,
    pub replicas: Vec<SqlReplicaSpec>,
    /// User name -> password.
    pub users: BTreeMap<String, String>,
    pub monitor: (String, String),
    pub causal: CausalMode,
    pub causal_timeout_ms: u64,
    pub pin_window_ms: u64,
    pub max_lag_s: u64,
    pub health_interval_ms: u64,
    pub connect_timeout_ms: u64,
    pub pool_idle: usize,
    /// Stored functions declared free of side effects (lower case): reads
    /// that call them may run on replicas.
    pub pure_functions: Vec<String>,
    pub login_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub max_connections: usize,
    pub max_prepared: usize,
    pub max_session_log: usize,
    /// Statements slower than this are logged; 0 = off.
    pub slow_ms: u64,
}

impl std::fmt::Debug for SqlSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSpec")
            .field("listen", &self.listen)
            .field("router", &self.router)
            .field("primary", &self.primary)
            .field("replicas", &self.replicas)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("causal", &self.causal)
            .finish_non_exhaustive()
    }
}

/// One replica of `[sql]`.
#[derive(Debug, Clone)]
pub struct SqlReplicaSpec {
    pub addr: SocketAddr,
    pub weight: u32,
    pub group: Option<String>,
}

/// The admin API, when `[admin]` is present.
#[derive(Clone)]
pub struct AdminSpec {
    pub listen: SocketAddr,
    pub token: String,
    /// Largest accepted body in bytes.
    pub max_body: usize,
}

impl std::fmt::Debug for AdminSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSpec").field("listen", &self.listen).field("token", &"<redacted>").field("max_body", &self.max_body).finish()
    }
}

/// Shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A plugin to load.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub on_error: OnError,
    /// `on_error` as written, if it was.
    pub on_error_set: Option<OnError>,
    pub limits: PluginLimits,
    /// The `config` table as JSON text, as `configure` receives it.
    pub config_json: String,
    /// The line of the plugin's `config` in the file, for its errors.
    pub config_line: Option<usize>,
    /// File poll interval for hot reload; 0 = off.
    pub watch_ms: u64,
    /// The header an lb canary splits by (else the client address).
    pub canary_header: Option<http::HeaderName>,
}

/// A backend pool.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub backends: Vec<(SocketAddr, u32)>,
    pub lb: Option<String>,
    pub health: HealthSection,
    pub retries: usize,
    pub connect_timeout_ms: u64,
    pub io: IoTimeouts,
    pub tls: Option<super::UpstreamTls>,
    pub protocol: super::Protocol,
    /// Concurrent streams per HTTP/2 connection.
    pub max_streams: usize,
}

/// Backend I/O limits after connecting (`[[upstreams]]`): each ends the
/// request with 502/504 instead of a wait without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoTimeouts {
    pub read_ms: u64,
    pub write_ms: u64,
    pub idle_ms: u64,
}

impl Default for IoTimeouts {
    fn default() -> Self {
        Self { read_ms: 60_000, write_ms: 60_000, idle_ms: 60_000 }
    }
}

/// A route to an upstream (by index into `upstreams`).
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: usize,
    /// The session plugin's name.
    pub session: Option<String>,
    /// The access plugin's name, and what it sees of the route.
    pub access: Option<RouteAccessSpec>,
}

/// A route's access check.
#[derive(Debug, Clone)]
pub struct RouteAccessSpec {
    pub plugin: String,
    /// Segments of `path_pattern`; `{name}` captures.
    pub pattern: Option<Vec<String>>,
    pub object: serde_json::Map<String, serde_json::Value>,
    /// Upper-case method -> right.
    pub rights: BTreeMap<String, String>,
}

/// `[access]`, validated.
#[derive(Clone, Default)]
pub struct AccessSpec {
    /// `jwt_keys` (HS256, no kid) then `[[access.keys]]`, in file order.
    pub keys: Vec<TokenKey>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub token_cookie: String,
    /// Subject id -> static attributes.
    pub statics: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pub mutable: Vec<String>,
    pub mutable_central: bool,
}

/// One key subject tokens are verified with, parsed.
#[derive(Clone)]
pub struct TokenKey {
    /// `None` for `jwt_keys`: such a key is tried for any token of its alg.
    pub kid: Option<String>,
    /// The one algorithm this key verifies (no algorithm confusion).
    pub alg: jwt::Algorithm,
    pub key: jwt::DecodingKey,
}

impl std::fmt::Debug for AccessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("{:?} {}", k.alg, k.kid.as_deref().unwrap_or("-"))).collect();
        f.debug_struct("AccessSpec").field("keys", &keys).field("audience", &self.audience).field("issuer", &self.issuer).field("subjects", &self.statics.len()).field("mutable", &self.mutable).finish()
    }
}

pub(super) struct Checker<'a> {
    text: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn err<T>(&mut self, path: impl Into<String>, at: &Spanned<T>, message: impl Into<String>) {
        let span = at.span();
        let line = (span.end > 0).then(|| line_of(self.text, span.start));
        self.errors.push(ConfigError { path: path.into(), line, message: message.into() });
    }

    pub(super) fn addr(&mut self, path: String, v: &Spanned<String>) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(path, v, format!("{:?} is not an IP:port address", v.get_ref()));
                None
            }
        }
    }
}

/// The valid config, or every error with the plugins whose own sections
/// passed (`check` still loads and configures those).
pub(super) fn validate(raw: RawConfig, text: &str, base: &Path) -> Result<ValidConfig, (Vec<ConfigError>, BTreeMap<String, PluginSpec>)> {
    let mut c = Checker { text, errors: Vec::new() };
    let listen = c.addr("server.listen".into(), &raw.server.listen);
    if raw.server.threads == 0 || raw.server.threads > 256 {
        c.errors.push(ConfigError { path: "server.threads".into(), line: None, message: "must be 1..=256".into() });
    }
    let id_header = raw.server.request_id_header.to_ascii_lowercase();
    if http::HeaderName::from_bytes(id_header.as_bytes()).is_err() || id_header.contains('_') || crate::proxy::is_internal(&id_header) {
        let why = format!("{:?} must be a header name without `_` (backends that map `_` to `-` could not tell a client's spelling from the gateway's) outside x-switchyard-*", raw.server.request_id_header);
        c.errors.push(ConfigError { path: "server.request_id_header".into(), line: None, message: why });
    }
    if raw.server.drain_delay_ms > 600_000 {
        c.errors.push(ConfigError { path: "server.drain_delay_ms".into(), line: None, message: "must be 0..=600000".into() });
    }
    if raw.server.grace_ms > 3_600_000 {
        c.errors.push(ConfigError { path: "server.grace_ms".into(), line: None, message: "must be 0..=3600000".into() });
    }
    if raw.server.max_connections == 0 || raw.server.max_connections > 10_000_000 {
        c.errors.push(ConfigError { path: "server.max_connections".into(), line: None, message: "must be 1..=10000000".into() });
    }
    if raw.server.plugin_threads.is_some_and(|n| n == 0 || n > 256) {
        c.errors.push(ConfigError { path: "server.plugin_threads".into(), line: None, message: "must be 1..=256".into() });
    }
    let tls = raw.server.tls.as_ref().and_then(|t| super::tls::check_server_tls(&mut c, t, base));
    if raw.server.redirect_https && raw.server.tls.is_none() {
        c.err("server.redirect_https", &raw.server.listen, "redirects to the HTTPS listener: configure [server.tls]");
    }
    if let (Some(t), Some(l)) = (&tls, listen) {
        if t.listen == l {
            c.err("server.tls.listen", &raw.server.tls.as_ref().expect("tls").listen, format!("{l} is also server.listen"));
        }
    }
    let plugins = check_plugins(&mut c, &raw.plugins, &raw.routes, base);
    let upstreams = check_upstreams(&mut c, &raw.upstreams, &plugins, base);
    let session = check_session(&mut c, raw.session.as_ref());
    let cluster = raw.cluster.as_ref().and_then(|cl| check_cluster(&mut c, cl));
    let access = raw.access.as_ref().and_then(|a| check_access(&mut c, a, base, &session));
    let routes = check_routes(&mut c, &raw.routes, &upstreams, &plugins, &session, access.is_some());
    let admin = raw.admin.as_ref().and_then(|a| check_admin(&mut c, a));
    let log = raw.log.as_ref().and_then(|l| super::log::check_log(&mut c, l, base));
    let fleet = raw.fleet.as_ref().and_then(|f| super::fleet::check_fleet(&mut c, f, base));
    let sql = raw.sql.as_ref().and_then(|s| check_sql(&mut c, s, &plugins, base));
    if let Some(s) = &raw.sql {
        super::tls::check_sql_tls(&mut c, s, tls.is_some());
    }
    let demo = raw.demo.as_ref().map_or_else(Vec::new, |d| {
        d.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((c.addr(format!("demo.backends[{i}].listen"), &b.listen)?, b.name.clone())))
            .collect()
    });
    if !c.errors.is_empty() {
        c.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        return Err((c.errors, plugins));
    }
    Ok(ValidConfig {
        listen: listen.expect("checked"),
        threads: raw.server.threads,
        plugin_threads: raw.server.plugin_threads.unwrap_or((raw.server.threads / 2).max(1)),
        request_id_header: raw.server.request_id_header.to_ascii_lowercase(),
        grace_ms: raw.server.grace_ms,
        drain_delay_ms: raw.server.drain_delay_ms,
        work_stealing: raw.server.work_stealing,
        max_connections: raw.server.max_connections,
        h2c: raw.server.h2c,
        redirect_https: raw.server.redirect_https,
        upgrade_sock: raw.server.upgrade_sock.as_ref().map_or_else(
            || std::env::temp_dir().join(format!("switchyard-{}.upgrade.sock", listen.map_or(0, |l| l.port()))),
            |p| base.join(p.get_ref()),
        ),
        tls,
        plugins,
        upstreams,
        routes,
        demo,
        admin,
        sql,
        session,
        cluster,
        access,
        log,
        fleet,
    })
}

fn check_access(c: &mut Checker, a: &AccessSection, base: &Path, session: &SessionSpec) -> Option<AccessSpec> {
    let keys: Vec<String> = match (&a.jwt_keys, &a.jwt_keys_env) {
        (Some(k), None) => k.get_ref().clone(),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(v) => v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect(),
            Err(_) => {
                c.err("access.jwt_keys_env", var, format!("environment variable {} is not set", var.get_ref()));
                return None;
            }
        },
        (Some(k), Some(_)) => {
            c.err("access.jwt_keys", k, "set jwt_keys or jwt_keys_env, not both");
            return None;
        }
        (None, None) => Vec::new(),
    };
    if keys.is_empty() && a.keys.is_empty() {
        c.errors.push(ConfigError { path: "access.jwt_keys".into(), line: None, message: "list at least one HS256 key (or jwt_keys_env, or [[access.keys]]): subjects are identified by signed tokens".into() });
    }
    for (i, k) in keys.iter().enumerate() {
        if k.len() < MIN_KEY_BYTES {
            let at = a.jwt_keys.as_ref().map(|k| k.span()).unwrap_or(0..0);
            c.err(format!("access.jwt_keys[{i}]"), &Spanned::new(at, ()), format!("is {} bytes; an HS256 key needs at least {MIN_KEY_BYTES}", k.len()));
        }
    }
    let mut token_keys: Vec<TokenKey> = keys.iter().map(|k| TokenKey { kid: None, alg: jwt::Algorithm::HS256, key: jwt::DecodingKey::from_secret(k.as_bytes()) }).collect();
    token_keys.extend(check_token_keys(c, &a.keys, base));
    let audience = a.audience.as_ref().and_then(|v| non_empty(c, "access.audience", v));
    let issuer = a.issuer.as_ref().and_then(|v| non_empty(c, "access.issuer", v));
    let mutable_central = match a.mutable_tier.get_ref().as_str() {
        "central" => {
            if !a.mutable.is_empty() && session.central.is_none() {
                c.err("access.mutable_tier", &a.mutable_tier, "\"central\" needs [session.central] (memcached)");
            }
            true
        }
        "local" => false,
        other => {
            c.err("access.mutable_tier", &a.mutable_tier, format!("{other:?} is not central or local"));
            true
        }
    };
    if let Some(bad) = a.mutable.iter().find(|m| m.is_empty() || m.len() > 64 || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        c.errors.push(ConfigError { path: "access.mutable".into(), line: None, message: format!("{bad:?} must be 1-64 characters of [A-Za-z0-9_]") });
    }
    let mut statics = BTreeMap::new();
    if let Some(file) = &a.attributes_file {
        let path = base.join(file.get_ref());
        match std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| toml::from_str::<toml::Table>(&t).map_err(|e| e.to_string())) {
            Ok(table) => {
                for (id, attrs) in table.get("subjects").and_then(|s| s.as_table()).into_iter().flatten() {
                    match serde_json::to_value(attrs) {
                        Ok(serde_json::Value::Object(m)) => {
                            statics.insert(id.clone(), m);
                        }
                        _ => c.err("access.attributes_file", file, format!("{}: subjects.{id} must be a table", path.display())),
                    }
                }
            }
            Err(e) => c.err("access.attributes_file", file, format!("{}: {e}", path.display())),
        }
    }
    Some(AccessSpec { keys: token_keys, audience, issuer, token_cookie: a.token_cookie.clone(), statics, mutable: a.mutable.clone(), mutable_central })
}

fn non_empty(c: &mut Checker, path: &str, v: &Spanned<String>) -> Option<String> {
    if v.get_ref().is_empty() {
        c.err(path, v, "is empty; leave it out to accept any value");
        return None;
    }
    Some(v.get_ref().clone())
}

/// `[[access.keys]]`: each a kid unique in the list, an algorithm among
/// those offered, and the key material that algorithm takes.
fn check_token_keys(c: &mut Checker, keys: &[AccessKeySection], base: &Path) -> Vec<TokenKey> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let at = format!("access.keys[{i}]");
        let kid = k.kid.get_ref();
        if kid.is_empty() {
            c.err(format!("{at}.kid"), &k.kid, "is empty");
        } else if let Some(first) = seen.insert(kid, i) {
            c.err(format!("{at}.kid"), &k.kid, format!("{kid:?} is also access.keys[{first}].kid; each kid names one key"));
        }
        if let Some(key) = token_key(c, &at, k, base) {
            out.push(TokenKey { kid: Some(kid.clone()), alg: key.0, key: key.1 });
        }
    }
    out
}

fn token_key(c: &mut Checker, at: &str, k: &AccessKeySection, base: &Path) -> Option<(jwt::Algorithm, jwt::DecodingKey)> {
    let alg = match k.alg.get_ref().as_str() {
        "HS256" => jwt::Algorithm::HS256,
        "RS256" => jwt::Algorithm::RS256,
        "ES256" => jwt::Algorithm::ES256,
        other => {
            c.err(format!("{at}.alg"), &k.alg, format!("{other:?} is not HS256, RS256 or ES256"));
            return None;
        }
    };
    if alg == jwt::Algorithm::HS256 {
        if let Some(f) = &k.public_key_file {
            c.err(format!("{at}.public_key_file"), f, "an HS256 key is a shared secret: set secret or secret_env");
            return None;
        }
        let secret = match (&k.secret, &k.secret_env) {
            (Some(s), None) => s.get_ref().clone(),
            (None, Some(var)) => match std::env::var(var.get_ref()) {
                Ok(v) => v,
                Err(_) => {
                    c.err(format!("{at}.secret_env"), var, format!("environment variable {} is not set", var.get_ref()));
                    return None;
                }
            },
            (Some(s), Some(_)) => {
                c.err(format!("{at}.secret"), s, "set secret or secret_env, not both");
                return None;
            }
            (None, None) => {
                c.err(format!("{at}.alg"), &k.alg, "an HS256 key needs secret or secret_env");
                return None;
            }
        };
        if secret.len() < MIN_KEY_BYTES {
            let span = k.secret.as_ref().or(k.secret_env.as_ref()).map_or(0..0, |s| s.span());
            c.err(format!("{at}.secret"), &Spanned::new(span, ()), format!("is {} bytes; an HS256 key needs at least {MIN_KEY_BYTES}", secret.len()));
            return None;
        }
        return Some((alg, jwt::DecodingKey::from_secret(secret.as_bytes())));
    }
    if let Some(s) = k.secret.as_ref().or(k.secret_env.as_ref()) {
        c.err(format!("{at}.secret"), s, format!("an {} key is a public key: set public_key_file, not a secret", k.alg.get_ref()));
        return None;
    }
    let Some(file) = &k.public_key_file else {
        c.err(format!("{at}.alg"), &k.alg, format!("an {} key needs public_key_file (a PEM public key)", k.alg.get_ref()));
        return None;
    };
    let path = base.join(file.get_ref());
    match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|pem| public_key(alg, &pem)) {
        Ok(key) => Some((alg, key)),
        Err(e) => {
            c.err(format!("{at}.public_key_file"), file, format!("{}: {e}", path.display()));
            None
        }
    }
}

/// A PEM public key for `alg` (RS256 or ES256), or why the file is not one.
fn public_key(alg: jwt::Algorithm, pem: &[u8]) -> Result<jwt::DecodingKey, String> {
    let text = String::from_utf8_lossy(pem);
    if !text.contains("-----BEGIN ") {
        return Err("not PEM (no -----BEGIN line)".into());
    }
    if text.contains("PRIVATE KEY-----") {
        return Err("holds a private key; give the public key (openssl pkey -in KEY -pubout)".into());
    }
    if alg == jwt::Algorithm::RS256 {
        return jwt::DecodingKey::from_rsa_pem(pem).map_err(|_| "not an RSA public key (expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)".into());
    }
    let key = jwt::DecodingKey::from_ec_pem(pem).map_err(|_| "not an EC public key (expected BEGIN PUBLIC KEY)".to_string())?;
    if !pem_body(&text).is_some_and(|der| der.windows(P256_OID.len()).any(|w| w == P256_OID)) {
        return Err("not a P-256 key (ES256 verifies with the prime256v1 curve only)".into());
    }
    Ok(key)
}

/// DER of the named curve prime256v1 (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// The bytes of a PEM file's first block.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64: String = text.lines().skip_while(|l| !l.starts_with("-----BEGIN ")).skip(1).take_while(|l| !l.starts_with("-----END ")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()
}

fn check_cluster(c: &mut Checker, s: &ClusterSection) -> Option<ClusterSpec> {
    let listen = c.addr("cluster.listen".into(), &s.listen);
    let key = match (&s.key, &s.key_env) {
        (Some(k), None) => Some((k.get_ref().clone(), k.span())),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(k) => Some((k, var.span())),
            Err(_) => {
                c.err("cluster.key_env", var, format!("environment variable {} is not set", var.get_ref()));
                None
            }
        },
        _ => {
            c.err("cluster", &s.listen, "set key or key_env (exactly one): the shared key signs every peer message");
            None
        }
    };
    if let Some((k, span)) = &key {
        if k.len() < MIN_KEY_BYTES {
            c.err("cluster.key", &Spanned::new(span.clone(), ()), format!("is {} bytes; the shared key needs at least {MIN_KEY_BYTES}", k.len()));
        }
    }
    let mut ids = HashSet::new();
    ids.insert(*s.id.get_ref());
    let peers: Vec<(u32, SocketAddr)> = s
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if !ids.insert(p.id) {
                c.err(format!("cluster.peers[{i}].id"), &p.address, format!("node id {} is used twice (this node is {})", p.id, s.id.get_ref()));
            }
            Some((p.id, c.addr(format!("cluster.peers[{i}].address"), &p.address)?))
        })
        .collect();
    if s.backlog == 0 || s.backlog > 10_000_000 {
        c.errors.push(ConfigError { path: "cluster.backlog".into(), line: None, message: "must be 1..=10000000".into() });
    }
    Some(ClusterSpec { id: *s.id.get_ref(), listen: listen?, key: key?.0.into_bytes(), peers, backlog: s.backlog, ttl_s: s.ttl_s.max(1) })
}

fn check_admin(c: &mut Checker, a: &AdminSection) -> Option<AdminSpec> {
    let listen = match &a.listen {
        Some(l) => c.addr("admin.listen".into(), l),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let token = match (&a.token, &a.token_env) {
        (Some(t), None) => Some((t.get_ref().clone(), "admin.token", t.span())),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(t) => Some((t, "admin.token_env", var.span())),
            Err(_) => {
                c.err("admin.token_env", var, format!("environment variable {} is not set", var.get_ref()));
                None
            }
        },
        (Some(t), Some(_)) => {
            c.err("admin.token", t, "set token or token_env, not both");
            None
        }
        (None, None) => {
            c.errors.push(ConfigError { path: "admin".into(), line: None, message: "the admin API needs a token: set token_env (or token)".into() });
            None
        }
    };
    let token = token.and_then(|(t, key, span)| {
        let t = t.trim().to_string();
        if t.len() < MIN_TOKEN_LEN {
            c.err(key, &Spanned::new(span, ()), format!("the token must be at least {MIN_TOKEN_LEN} characters"));
            return None;
        }
        Some(t)
    });
    let mb = *a.max_body_mb.get_ref();
    if mb == 0 || mb > 1024 {
        c.err("admin.max_body_mb", &a.max_body_mb, "must be 1..=1024");
    }
    Some(AdminSpec { listen: listen?, token: token?, max_body: (mb as usize) << 20 })
}

/// A secret given inline or through an environment variable.
fn secret(c: &mut Checker, key: &str, inline: &Option<Spanned<String>>, env: &Option<Spanned<String>>, at: &Spanned<String>) -> Option<String> {
    match (inline, env) {
        (Some(v), None) => Some(v.get_ref().clone()),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(v) => Some(v),
            Err(_) => {
                c.err(format!("{key}_env"), var, format!("environment variable {} is not set", var.get_ref()));
                None
            }
        },
        (Some(v), Some(_)) => {
            c.err(key, v, "set password or password_env, not both");
            None
        }
        (None, None) => {
            c.err(key, at, format!("login {:?} needs a password: set password or password_env", at.get_ref()));
            None
        }
    }
}

fn check_sql(c: &mut Checker, s: &SqlSection, plugins: &BTreeMap<String, PluginSpec>, base: &Path) -> Option<SqlSpec> {
    let backend_tls = s.backend_tls.as_ref().and_then(|t| super::tls::check_sql_backend_tls(c, t, s.replicas.len(), base));
    let listen = match &s.listen {
        Some(l) => c.addr("sql.listen".into(), l),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 6033))),
    };
    let primary = c.addr("sql.primary".into(), &s.primary);
    for (key, name) in [("sql.router", &s.router), ("sql.replica_lb", &s.replica_lb)] {
        if let Some(n) = name {
            if !plugins.contains_key(n.get_ref()) {
                c.err(key, n, format!("no [plugins.{}] is defined", n.get_ref()));
            }
        }
    }
    let mut replicas = Vec::new();
    for (i, r) in s.replicas.iter().enumerate() {
        let addr = c.addr(format!("sql.replicas[{i}].address"), &r.address);
        if *r.weight.get_ref() == 0 || *r.weight.get_ref() > 10_000 {
            c.err(format!("sql.replicas[{i}].weight"), &r.weight, "must be 1..=10000");
        }
        if let Some(g) = &r.group {
            if g.get_ref().is_empty() {
                c.err(format!("sql.replicas[{i}].group"), g, "must not be empty");
            }
        }
        if addr.is_some() && addr == primary {
            c.err(format!("sql.replicas[{i}].address"), &r.address, "is the primary's address");
        }
        replicas.extend(addr.map(|addr| SqlReplicaSpec { addr, weight: *r.weight.get_ref(), group: r.group.as_ref().map(|g| g.get_ref().clone()) }));
    }
    if s.users.get_ref().is_empty() {
        c.err("sql.users", &s.users, "needs at least one user");
    }
    let mut users = BTreeMap::new();
    for (i, u) in s.users.get_ref().iter().enumerate() {
        let key = format!("sql.users[{i}].password");
        if let Some(p) = secret(c, &key, &u.password, &u.password_env, &u.name) {
            if users.insert(u.name.get_ref().clone(), p).is_some() {
                c.err(format!("sql.users[{i}].name"), &u.name, format!("duplicate user {:?}", u.name.get_ref()));
            }
        }
    }
    let m = &s.monitor;
    let monitor = secret(c, "sql.monitor.password", &m.password, &m.password_env, &m.name).map(|p| (m.name.get_ref().clone(), p));
    for (key, v, lo, hi) in [
        ("sql.causal_timeout_ms", &s.causal_timeout_ms, 1, 60_000),
        ("sql.pin_window_ms", &s.pin_window_ms, 1, 3_600_000),
        ("sql.max_lag_s", &s.max_lag_s, 0, 86_400),
        ("sql.health_interval_ms", &s.health_interval_ms, 10, 60_000),
        ("sql.connect_timeout_ms", &s.connect_timeout_ms, 1, 60_000),
        ("sql.login_timeout_ms", &s.login_timeout_ms, 100, 600_000),
        ("sql.idle_timeout_ms", &s.idle_timeout_ms, 1_000, 31_536_000_000),
        ("sql.read_timeout_ms", &s.read_timeout_ms, 100, 604_800_000),
        ("sql.slow_ms", &s.slow_ms, 0, 86_400_000),
    ] {
        if !(lo..=hi).contains(v.get_ref()) {
            c.err(key, v, format!("must be {lo}..={hi}"));
        }
    }
    for f in s.pure_functions.get_ref() {
        let ok = !f.is_empty() && f.split('.').count() <= 2 && f.split('.').all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_alphanumeric() || ch == '_' || ch == '$'));
        if !ok {
            c.err("sql.pure_functions", &s.pure_functions, format!("{f:?} is not a function name (`name` or `schema.name`)"));
        }
    }
    for (key, v, lo, hi) in [
        ("sql.pool_idle", &s.pool_idle, 0, 10_000),
        ("sql.max_connections", &s.max_connections, 1, 1_000_000),
        ("sql.max_prepared", &s.max_prepared, 1, 1_048_576),
        ("sql.max_session_log", &s.max_session_log, 1, 65_536),
    ] {
        if !(lo..=hi).contains(v.get_ref()) {
            c.err(key, v, format!("must be {lo}..={hi}"));
        }
    }
    Some(SqlSpec {
        tls: s.tls.as_ref().is_some_and(|t| *t.get_ref()),
        require_tls: s.require_tls.as_ref().is_some_and(|t| *t.get_ref()),
        backend_tls,
        listen: listen?,
        router: s.router.as_ref().map(|r| r.get_ref().clone()),
        replica_lb: s.replica_lb.as_ref().map(|r| r.get_ref().clone()),
        primary: primary?,
        replicas,
        users,
        monitor: monitor?,
        causal: s.causal,
        causal_timeout_ms: *s.causal_timeout_ms.get_ref(),
        pin_window_ms: *s.pin_window_ms.get_ref(),
        max_lag_s: *s.max_lag_s.get_ref(),
        health_interval_ms: *s.health_interval_ms.get_ref(),
        connect_timeout_ms: *s.connect_timeout_ms.get_ref(),
        pool_idle: *s.pool_idle.get_ref(),
        pure_functions: s.pure_functions.get_ref().iter().map(|f| f.to_ascii_lowercase()).collect(),
        login_timeout_ms: *s.login_timeout_ms.get_ref(),
        idle_timeout_ms: *s.idle_timeout_ms.get_ref(),
        read_timeout_ms: *s.read_timeout_ms.get_ref(),
        max_connections: *s.max_connections.get_ref(),
        max_prepared: *s.max_prepared.get_ref(),
        max_session_log: *s.max_session_log.get_ref(),
        slow_ms: *s.slow_ms.get_ref(),
    })
}

/// The line of `[plugins.NAME.config…]`, or of `config =` in `[plugins.NAME]`.
fn config_line(text: &str, name: &str) -> Option<usize> {
    let header = format!("[plugins.{name}.config");
    let section = format!("[plugins.{name}]");
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with(&header) {
            return Some(i + 1);
        }
        if l.starts_with('[') {
            in_section = l.starts_with(&section);
        } else if in_section && l.starts_with("config") && l["config".len()..].trim_start().starts_with('=') {
            return Some(i + 1);
        }
    }
    None
}

fn check_plugins(c: &mut Checker, raw: &BTreeMap<String, PluginSection>, routes: &[RouteSection], base: &Path) -> BTreeMap<String, PluginSpec> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let key = format!("plugins.{name}");
        let path = base.join(p.path.get_ref());
        if !path.is_file() {
            c.err(format!("{key}.path"), &p.path, format!("no plugin file at {:?}", p.path.get_ref()));
        }
        let l = &p.limits;
        if l.deadline_ms == 0 || l.deadline_ms > 60_000 {
            c.err(format!("{key}.limits.deadline_ms"), &p.path, "must be 1..=60000");
        }
        if l.memory_mb == 0 || l.memory_mb > 4096 {
            c.err(format!("{key}.limits.memory_mb"), &p.path, "must be 1..=4096");
        }
        if l.instances == 0 || l.instances > 1024 {
            c.err(format!("{key}.limits.instances"), &p.path, "must be 1..=1024");
        }
        let canary_header = p.canary_header.as_ref().and_then(|h| match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(n) if crate::proxy::is_internal(n.as_str()) => {
                let why = format!("{n} is internal: the gateway strips it from client requests, so every request would be split at random");
                c.err(format!("{key}.canary_header"), h, why);
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                c.err(format!("{key}.canary_header"), h, format!("{:?} is not a header name", h.get_ref()));
                None
            }
        });
        let config_json = serde_json::to_string(&p.config).expect("a TOML table is valid JSON");
        let config_line = config_line(c.text, name);
        out.insert(
            name.clone(),
            PluginSpec {
                name: name.clone(),
                path,
                on_error: p.on_error.as_ref().map_or_else(|| default_on_error(name, routes), |o| *o.get_ref()),
                on_error_set: p.on_error.as_ref().map(|o| *o.get_ref()),
                limits: p.limits.clone(),
                config_json,
                config_line,
                watch_ms: p.watch_ms,
                canary_header,
            },
        );
    }
    out
}

/// `on_error` when it is not set: a session or access plugin that fails
/// must not let the request through without its session or its check.
fn default_on_error(plugin: &str, routes: &[RouteSection]) -> OnError {
    let named = |r: &Option<Spanned<String>>| r.as_ref().is_some_and(|n| n.get_ref() == plugin);
    if routes.iter().any(|r| named(&r.session) || named(&r.access)) {
        OnError::FailClosed
    } else {
        OnError::Fallback
    }
}

fn check_upstreams(
    c: &mut Checker,
    raw: &[UpstreamSection],
    plugins: &BTreeMap<String, PluginSpec>,
    base: &Path,
) -> Vec<UpstreamSpec> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        if !names.insert(u.name.get_ref().clone()) {
            c.err(format!("{key}.name"), &u.name, format!("duplicate upstream name {:?}", u.name.get_ref()));
        }
        if u.backends.get_ref().is_empty() {
            c.err(format!("{key}.backends"), &u.backends, "needs at least one backend");
        }
        let mut backends = Vec::new();
        for (j, b) in u.backends.get_ref().iter().enumerate() {
            let addr = c.addr(format!("{key}.backends[{j}].address"), &b.address);
            if *b.weight.get_ref() == 0 || *b.weight.get_ref() > 10_000 {
                c.err(format!("{key}.backends[{j}].weight"), &b.weight, "must be 1..=10000");
            }
            backends.extend(addr.map(|a| (a, *b.weight.get_ref())));
        }
        if let Some(lb) = &u.lb {
            if !plugins.contains_key(lb.get_ref()) {
                c.err(format!("{key}.lb"), lb, format!("no [plugins.{}] is defined", lb.get_ref()));
            }
        }
        let h = &u.health;
        if h.interval_ms == 0 || h.timeout_ms == 0 || h.rise == 0 || h.fall == 0 || h.max_failures == 0 {
            c.err(format!("{key}.health"), &u.name, "interval_ms, timeout_ms, rise, fall and max_failures must be > 0");
        }
        if h.check == CheckKind::Http && !h.path.starts_with('/') {
            c.err(format!("{key}.health.path"), &u.name, "must start with '/'");
        }
        for (field, ms) in [("read_timeout_ms", &u.read_timeout_ms), ("write_timeout_ms", &u.write_timeout_ms), ("idle_timeout_ms", &u.idle_timeout_ms)] {
            if !(1..=3_600_000).contains(ms.get_ref()) {
                c.err(format!("{key}.{field}"), ms, format!("must be 1..=3600000 (ms), got {}", ms.get_ref()));
            }
        }
        let (tls, protocol, max_streams) = super::tls::check_upstream_tls(c, &key, u, base);
        out.push(UpstreamSpec {
            tls,
            protocol,
            max_streams,
            name: u.name.get_ref().clone(),
            backends,
            lb: u.lb.as_ref().map(|l| l.get_ref().clone()),
            health: h.clone(),
            retries: u.retries,
            connect_timeout_ms: u.connect_timeout_ms.max(1),
            io: IoTimeouts { read_ms: *u.read_timeout_ms.get_ref(), write_ms: *u.write_timeout_ms.get_ref(), idle_ms: *u.idle_timeout_ms.get_ref() },
        });
    }
    out
}

fn check_routes(
    c: &mut Checker,
    raw: &[RouteSection],
    upstreams: &[UpstreamSpec],
    plugins: &BTreeMap<String, PluginSpec>,
    session: &SessionSpec,
    access_configured: bool,
) -> Vec<RouteSpec> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !r.path_prefix.get_ref().starts_with('/') {
            c.err(format!("{key}.path_prefix"), &r.path_prefix, "must start with '/'");
        }
        if let Some(s) = &r.session {
            if !plugins.contains_key(s.get_ref()) {
                c.err(format!("{key}.session"), s, format!("no plugin named {:?} in [plugins]", s.get_ref()));
            } else if session.keys.is_empty() {
                c.err(format!("{key}.session"), s, "a session plugin signs its cookies and passports: set [session] keys (or keys_env)");
            }
        }
        let access = r.access.as_ref().and_then(|a| check_route_access(c, &key, r, a, plugins, access_configured));
        match upstreams.iter().position(|u| &u.name == r.upstream.get_ref()) {
            Some(upstream) => out.push(RouteSpec {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                path_prefix: r.path_prefix.get_ref().clone(),
                upstream,
                session: r.session.as_ref().map(|s| s.get_ref().clone()),
                access,
            }),
            None => c.err(format!("{key}.upstream"), &r.upstream, format!("no upstream named {:?}", r.upstream.get_ref())),
        }
    }
    out
}

fn check_route_access(
    c: &mut Checker,
    key: &str,
    r: &RouteSection,
    a: &Spanned<String>,
    plugins: &BTreeMap<String, PluginSpec>,
    access_configured: bool,
) -> Option<RouteAccessSpec> {
    let Some(plugin) = plugins.get(a.get_ref()) else {
        c.err(format!("{key}.access"), a, format!("no plugin named {:?} in [plugins]", a.get_ref()));
        return None;
    };
    if plugin.on_error_set == Some(OnError::Fallback) {
        c.err(format!("{key}.access"), a, format!("plugins.{}.on_error = \"fallback\" is refused for an access plugin: a failed check must deny (leave on_error out or set \"fail-closed\")", plugin.name));
    }
    if !access_configured {
        c.err(format!("{key}.access"), a, "an access plugin needs [access] (the token keys subjects are verified with)");
    }
    let pattern = r.path_pattern.as_ref().map(|p| {
        if !p.get_ref().starts_with(r.path_prefix.get_ref().trim_end_matches('/')) {
            c.err(format!("{key}.path_pattern"), p, format!("must start with the route's path_prefix {:?}", r.path_prefix.get_ref()));
        }
        p.get_ref().trim_matches('/').split('/').map(str::to_string).collect()
    });
    let object = match serde_json::to_value(&r.object) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let rights = r.rights.iter().map(|(m, right)| (m.to_ascii_uppercase(), right.clone())).collect();
    Some(RouteAccessSpec { plugin: plugin.name.clone(), pattern, object, rights })
}

/// Least length of a token key: HMAC-SHA256's block of entropy.
const MIN_KEY_BYTES: usize = 32;

fn check_session(c: &mut Checker, s: Option<&SessionSection>) -> SessionSpec {
    let Some(s) = s else { return SessionSpec::default() };
    let keys: Vec<String> = match (&s.keys, &s.keys_env) {
        (Some(k), None) => k.get_ref().clone(),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(v) => v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect(),
            Err(_) => {
                c.err("session.keys_env", var, format!("environment variable {} is not set", var.get_ref()));
                Vec::new()
            }
        },
        (Some(k), Some(_)) => {
            c.err("session.keys", k, "set keys or keys_env, not both");
            Vec::new()
        }
        (None, None) => Vec::new(),
    };
    for (i, k) in keys.iter().enumerate() {
        if k.len() < MIN_KEY_BYTES {
            let at = s.keys.as_ref().map(|k| k.span()).or(s.keys_env.as_ref().map(|k| k.span())).unwrap_or(0..0);
            c.err(format!("session.keys[{i}]"), &Spanned::new(at, ()), format!("is {} bytes; a signing key needs at least {MIN_KEY_BYTES}", k.len()));
        }
    }
    if s.local.max_mb == 0 || s.local.max_mb > 65_536 {
        c.errors.push(ConfigError { path: "session.local.max_mb".into(), line: None, message: "must be 1..=65536".into() });
    }
    let central = s.central.as_ref().and_then(|m| {
        if m.servers.get_ref().is_empty() {
            c.err("session.central.servers", &m.servers, "list at least one memcached host:port");
        }
        let servers: Vec<SocketAddr> = m
            .servers
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.addr(format!("session.central.servers[{i}]"), &Spanned::new(m.servers.span(), a.clone())))
            .collect();
        for (key, v, max) in [("timeout_ms", m.timeout_ms, 60_000), ("lock_timeout_ms", m.lock_timeout_ms, 600_000)] {
            if v == 0 || v > max {
                c.errors.push(ConfigError { path: format!("session.central.{key}"), line: None, message: format!("must be 1..={max}") });
            }
        }
        if m.pool == 0 || m.pool > 1024 {
            c.errors.push(ConfigError { path: "session.central.pool".into(), line: None, message: "must be 1..=1024".into() });
        }
        let n = m.servers.get_ref().len();
        let backups = match &m.backups {
            Some(b) if (*b.get_ref() as usize) >= n.max(1) => {
                c.err("session.central.backups", b, format!("{} backups need {} servers; {n} are listed", b.get_ref(), b.get_ref() + 1));
                0
            }
            Some(b) => *b.get_ref() as usize,
            None => usize::from(n >= 2),
        };
        (servers.len() == m.servers.get_ref().len() && !servers.is_empty()).then(|| CentralSpec {
            servers,
            backups,
            ttl_s: m.ttl_s,
            timeout_ms: m.timeout_ms,
            lock_timeout_ms: m.lock_timeout_ms,
            lock_ttl_s: m.lock_ttl_s.max(1),
            pool: m.pool,
        })
    });
    let durable = s.durable.as_ref().and_then(|d| {
        let at = d.url.clone().or(d.url_env.clone()).unwrap_or_else(|| Spanned::new(0..0, String::new()));
        let url = match (&d.url, &d.url_env) {
            (Some(u), None) => Some(u.get_ref().clone()),
            (None, Some(var)) => std::env::var(var.get_ref()).ok().or_else(|| {
                c.err("session.durable.url_env", var, format!("environment variable {} is not set", var.get_ref()));
                None
            }),
            _ => {
                c.err("session.durable", &at, "set url or url_env (exactly one)");
                None
            }
        }?;
        if !url.starts_with("mysql://") {
            c.err("session.durable.url", &at, "must be a mysql://user:password@host:port/database URL");
            return None;
        }
        if d.table.is_empty() || d.table.len() > 64 || !d.table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            c.errors.push(ConfigError { path: "session.durable.table".into(), line: None, message: "must be 1-64 characters of [A-Za-z0-9_]".into() });
        }
        Some(DurableSpec { url, table: d.table.clone(), ttl_s: d.ttl_s, timeout_ms: d.timeout_ms.max(1) })
    });
    SessionSpec { keys: keys.into_iter().map(String::into_bytes).collect(), local: s.local.clone(), central, durable }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use std::path::Path;

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new(".")).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nthreds = 2\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("line 3: server"), "{e:?}");
        assert!(e[0].contains("threds"), "{e:?}");
    }

    #[test]
    fn every_semantic_error_is_reported() {
        let e = errors(
            "[[upstreams]]\nname = \"a\"\nbackends = [{ address = \"nope\" }]\nlb = \"ghost\"\n\
             [[routes]]\nupstream = \"b\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("line 3: upstreams[0].backends[0].address"), "{e:?}");
        assert!(e[1].contains("line 4: upstreams[0].lb: no [plugins.ghost]"), "{e:?}");
        assert!(e[2].contains("line 6: routes[0].upstream"), "{e:?}");
    }

    #[test]
    fn a_request_id_header_a_client_could_spell_otherwise_is_refused() {
        let with = |h: &str| format!("[server]\nrequest_id_header = {h:?}\n[[upstreams]]\nname = \"a\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n[[routes]]\nupstream = \"a\"\n");
        for bad in ["x_request_id", "X-Switchyard-Id", "x y"] {
            let e = errors(&with(bad));
            assert!(e.len() == 1 && e[0].contains("server.request_id_header") && e[0].contains(bad), "{bad}: {e:?}");
        }
        assert_eq!(parse(&with("X-Correlation-Id"), Path::new(".")).unwrap().request_id_header, "x-correlation-id");
    }

    #[test]
    fn minimal_config_is_valid() {
        let v = parse("[[upstreams]]\nname = \"a\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n", Path::new("."))
            .unwrap();
        assert_eq!(v.routes[0].path_prefix, "/");
        assert_eq!(v.upstreams[0].backends[0].1, 1);
    }
}
