//! `[fleet]`, the etcd cluster every node watches for plugin versions:
//! endpoints, node name, key prefix, credentials and timeout, each checked
//! with its key path and line.

use super::model::FleetSection;
use super::validate::Checker;
use std::time::Duration;

/// `[fleet]`, validated.
#[derive(Clone)]
pub struct FleetSpec {
    /// `http://host:port` each.
    pub endpoints: Vec<String>,
    pub node: String,
    /// Starts with `/`, no trailing `/`.
    pub prefix: String,
    /// User and password, when etcd has auth on.
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
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

pub(super) fn check_fleet(c: &mut Checker, s: &FleetSection) -> Option<FleetSpec> {
    let mut ok = true;
    let mut endpoints = Vec::new();
    if s.endpoints.get_ref().is_empty() {
        c.err("fleet.endpoints", &s.endpoints, "is empty: list the etcd members' client addresses");
        ok = false;
    }
    for (i, e) in s.endpoints.get_ref().iter().enumerate() {
        let hostport = e.strip_prefix("http://").unwrap_or(e);
        if e.starts_with("https://") {
            c.err(format!("fleet.endpoints[{i}]"), &s.endpoints, format!("{e:?}: TLS to etcd is not supported; reach it on a private network or loopback"));
            ok = false;
        } else if hostport.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
            c.err(format!("fleet.endpoints[{i}]"), &s.endpoints, format!("{e:?} is not host:port"));
            ok = false;
        } else {
            endpoints.push(format!("http://{hostport}"));
        }
    }
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
    let node = node?;
    ok.then(|| FleetSpec { endpoints, node, prefix, credentials, timeout: Duration::from_millis(timeout_ms) })
}
