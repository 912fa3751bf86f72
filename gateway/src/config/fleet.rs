//! `[fleet]`, the etcd cluster every node watches for plugin versions:
//! endpoints, node name, key prefix, credentials and timeout, each checked
//! with its key path and line.

use super::model::FleetSection;
use super::validate::Checker;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// `[fleet]`, validated.
#[derive(Clone)]
pub struct FleetSpec {
    /// `http://host:port` or `https://host:port` each (all alike).
    pub endpoints: Vec<String>,
    /// With `https://` endpoints.
    pub tls: Option<FleetTls>,
    pub node: String,
    /// Starts with `/`, no trailing `/`.
    pub prefix: String,
    /// User and password, when etcd has auth on.
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
    /// How long an admin change waits for the other nodes' reports.
    pub confirm: Duration,
}

/// TLS to etcd: the CA (PEM) that verifies the members, and an optional
/// client certificate and key (PEM).
#[derive(Clone)]
pub struct FleetTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for FleetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.credentials.as_ref().map(|(u, _)| u.as_str());
        f.debug_struct("FleetSpec").field("endpoints", &self.endpoints).field("node", &self.node).field("prefix", &self.prefix).field("user", &user).finish()
    }
}

/// A node name or key segment: letters, digits, `.`, `_`, `-`.
fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The host name, for a node that does not name itself.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// A PEM file's bytes, if it holds a block with `label` in its header.
fn pem(c: &mut Checker, key: &str, at: &Spanned<String>, base: &Path, label: &str) -> Option<Vec<u8>> {
    let path = base.join(at.get_ref());
    match std::fs::read(&path) {
        Ok(b) if String::from_utf8_lossy(&b).lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label)) => Some(b),
        Ok(_) => {
            c.err(key, at, format!("{} holds no PEM {label}", path.display()));
            None
        }
        Err(e) => {
            c.err(key, at, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `ca_file`, `cert_file` and `key_file`, for `https://` endpoints only.
fn check_tls(c: &mut Checker, s: &FleetSection, base: &Path, https: bool) -> Result<Option<FleetTls>, ()> {
    if !https {
        for (key, v) in [("fleet.ca_file", &s.ca_file), ("fleet.cert_file", &s.cert_file), ("fleet.key_file", &s.key_file)] {
            if let Some(v) = v {
                c.err(key, v, "is for https:// endpoints; these are plain http://");
                return Err(());
            }
        }
        return Ok(None);
    }
    let ca_pem = match &s.ca_file {
        Some(ca) => pem(c, "fleet.ca_file", ca, base, "CERTIFICATE"),
        None => {
            c.err("fleet.endpoints", &s.endpoints, "https:// endpoints need fleet.ca_file, the CA that signed the etcd members' certificates");
            None
        }
    };
    let identity = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => Some((pem(c, "fleet.cert_file", cert, base, "CERTIFICATE"), pem(c, "fleet.key_file", key, base, "PRIVATE KEY"))),
        (Some(v), None) => {
            c.err("fleet.cert_file", v, "needs key_file too (the client certificate's key)");
            return Err(());
        }
        (None, Some(v)) => {
            c.err("fleet.key_file", v, "needs cert_file too (the client certificate)");
            return Err(());
        }
        (None, None) => None,
    };
    match (ca_pem, identity) {
        (Some(ca_pem), None) => Ok(Some(FleetTls { ca_pem, identity: None })),
        (Some(ca_pem), Some((Some(cert), Some(key)))) => Ok(Some(FleetTls { ca_pem, identity: Some((cert, key)) })),
        _ => Err(()),
    }
}

pub(super) fn check_fleet(c: &mut Checker, s: &FleetSection, base: &Path) -> Option<FleetSpec> {
    let mut ok = true;
    let mut endpoints = Vec::new();
    if s.endpoints.get_ref().is_empty() {
        c.err("fleet.endpoints", &s.endpoints, "is empty: list the etcd members' client addresses");
        ok = false;
    }
    let https = s.endpoints.get_ref().first().is_some_and(|e| e.starts_with("https://"));
    for (i, e) in s.endpoints.get_ref().iter().enumerate() {
        let hostport = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://")).unwrap_or(e);
        if e.starts_with("https://") != https {
            c.err(format!("fleet.endpoints[{i}]"), &s.endpoints, format!("{e:?}: use https:// for every endpoint or for none"));
            ok = false;
        } else if hostport.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
            c.err(format!("fleet.endpoints[{i}]"), &s.endpoints, format!("{e:?} is not host:port"));
            ok = false;
        } else {
            endpoints.push(format!("{}://{hostport}", if https { "https" } else { "http" }));
        }
    }
    let tls = check_tls(c, s, base, https);
    ok &= tls.is_ok();
    let node = match &s.node {
        Some(n) if !is_name(n.get_ref()) => {
            c.err("fleet.node", n, format!("{:?}: 1 to 64 letters, digits, '.', '_' or '-'", n.get_ref()));
            None
        }
        Some(n) => Some(n.get_ref().clone()),
        None => Some(host_name()).filter(|h| is_name(h)),
    };
    if node.is_none() && s.node.is_none() {
        c.err("fleet", &s.endpoints, "the host name cannot name this node: set fleet.node");
    }
    let prefix = s.prefix.as_ref().map_or_else(|| "/switchyard".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &s.prefix {
        if !p.get_ref().starts_with('/') || p.get_ref().ends_with('/') || p.get_ref().len() < 2 || !p.get_ref()[1..].split('/').all(is_name) {
            c.err("fleet.prefix", p, format!("{:?}: a key path such as /switchyard (starts with '/', no trailing '/')", p.get_ref()));
            ok = false;
        }
    }
    let password = match (&s.password, &s.password_env) {
        (Some(p), None) => Some(p.get_ref().clone()),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(p) => Some(p),
            Err(_) => {
                c.err("fleet.password_env", var, format!("environment variable {} is not set", var.get_ref()));
                ok = false;
                None
            }
        },
        (Some(p), Some(_)) => {
            c.err("fleet.password", p, "set password or password_env, not both");
            ok = false;
            None
        }
        (None, None) => None,
    };
    let credentials = match (&s.user, password) {
        (Some(u), Some(p)) => Some((u.get_ref().clone(), p)),
        (Some(u), None) if s.password_env.is_none() => {
            c.err("fleet.user", u, "needs password or password_env");
            ok = false;
            None
        }
        (Some(_), None) => None,
        (None, Some(_)) => {
            c.err("fleet", &s.endpoints, "password without user: set fleet.user");
            ok = false;
            None
        }
        (None, None) => None,
    };
    let timeout_ms = s.timeout_ms.as_ref().map_or(2000, |t| *t.get_ref());
    if let Some(t) = s.timeout_ms.as_ref().filter(|t| !(50..=60_000).contains(t.get_ref())) {
        c.err("fleet.timeout_ms", t, "must be 50..=60000");
        ok = false;
    }
    let confirm_ms = s.confirm_ms.as_ref().map_or(3000, |t| *t.get_ref());
    if let Some(t) = s.confirm_ms.as_ref().filter(|t| *t.get_ref() > 60_000) {
        c.err("fleet.confirm_ms", t, "must be 0..=60000");
        ok = false;
    }
    let node = node?;
    ok.then(|| FleetSpec { endpoints, tls: tls.ok().flatten(), node, prefix, credentials, timeout: Duration::from_millis(timeout_ms), confirm: Duration::from_millis(confirm_ms) })
}
