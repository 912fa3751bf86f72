//! `[server.tls]` and the TLS and protocol keys of `[[upstreams]]`: every
//! file is read here, so `switchyard check` names a bad certificate, key
//! or CA before the gateway starts.

use super::model::{SqlSection, TlsSection, UpstreamSection};
use super::validate::Checker;
use super::ConfigError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The HTTPS listener, validated.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub listen: SocketAddr,
    pub certs: Vec<CertSpec>,
    pub h2: bool,
    pub client_ca: Option<PathBuf>,
    /// A client without a certificate is refused (else only an invalid one is).
    pub client_required: bool,
    pub hsts_max_age_s: u64,
    pub hsts_include_subdomains: bool,
    pub watch_ms: u64,
}

/// One certificate chain and key.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lower case; empty: the certificate's own DNS names.
    pub names: Vec<String>,
}

/// How the gateway speaks to an upstream's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2 over TLS, by ALPN.
    H2,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

/// TLS toward an upstream's backends.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Name sent and verified; `None`: each backend's IP.
    pub sni: Option<String>,
    /// DER certificates to trust instead of the system roots.
    pub ca: Option<Vec<Vec<u8>>>,
    pub verify: bool,
    /// Client certificate chain (DER, leaf first) and key (DER).
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("sni", &self.sni).field("ca", &self.ca.as_ref().map(Vec::len)).field("verify", &self.verify).field("client", &self.client.is_some()).finish()
    }
}

pub(super) fn check_server_tls(c: &mut Checker, t: &TlsSection, base: &Path) -> Option<TlsSpec> {
    let listen = c.addr("server.tls.listen".into(), &t.listen);
    if t.certs.get_ref().is_empty() {
        c.err("server.tls.certs", &t.certs, "list at least one [[server.tls.certs]] (cert and key); the first is the default");
    }
    let mut certs = Vec::new();
    for (i, cs) in t.certs.get_ref().iter().enumerate() {
        let at = format!("server.tls.certs[{i}]");
        let (cert, key) = (base.join(cs.cert.get_ref()), base.join(cs.key.get_ref()));
        let names = cs.names.as_ref().map_or_else(Vec::new, |n| n.get_ref().iter().map(|s| s.to_ascii_lowercase()).collect());
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            c.err(format!("{at}.names"), cs.names.as_ref().expect("names"), format!("{bad:?} is not a DNS name (a wildcard is only `*.` then a name)"));
        }
        match crate::tls::certified(&cert, &key) {
            Ok(ck) if names.is_empty() && crate::tls::dns_names(&ck.cert[0]).is_empty() => {
                c.err(format!("{at}.names"), &cs.cert, format!("{} has no DNS name (subjectAltName or CN): list its names", cert.display()));
            }
            Ok(_) => {}
            Err(e) if e.starts_with(&key.display().to_string()) => c.err(format!("{at}.key"), &cs.key, e),
            Err(e) => c.err(format!("{at}.cert"), &cs.cert, e),
        }
        certs.push(CertSpec { cert, key, names });
    }
    let client_ca = t.client_ca.as_ref().map(|ca| {
        let path = base.join(ca.get_ref());
        if let Err(e) = crate::tls::read_chain(&path) {
            c.err("server.tls.client_ca", ca, e);
        }
        path
    });
    let client_required = match (&t.client_auth, &client_ca) {
        (None, _) => true,
        (Some(a), None) => {
            c.err("server.tls.client_auth", a, "needs client_ca: the CA file client certificates are verified against");
            true
        }
        (Some(a), Some(_)) => match a.get_ref().as_str() {
            "required" => true,
            "optional" => false,
            other => {
                c.err("server.tls.client_auth", a, format!("{other:?} is not required or optional"));
                true
            }
        },
    };
    if t.watch_ms > 0 && t.watch_ms < 100 {
        c.errors.push(ConfigError { path: "server.tls.watch_ms".into(), line: None, message: format!("{} ms polls too often: use 0 (off) or at least 100", t.watch_ms) });
    }
    Some(TlsSpec {
        listen: listen?,
        certs,
        h2: t.h2,
        client_ca,
        client_required,
        hsts_max_age_s: t.hsts_max_age_s,
        hsts_include_subdomains: t.hsts_include_subdomains,
        watch_ms: t.watch_ms,
    })
}

/// TLS from the gateway to the SQL backends.
#[derive(Clone)]
pub struct SqlBackendTls {
    /// DER CA certificates; `None`: the system roots.
    pub ca: Option<Vec<Vec<u8>>>,
    pub verify: bool,
    pub server_name: Option<String>,
    /// Roles (`primary`, `replica-N`) that speak TLS; `None`: all.
    pub backends: Option<Vec<String>>,
}

impl std::fmt::Debug for SqlBackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBackendTls").field("ca", &self.ca.as_ref().map(Vec::len)).field("verify", &self.verify).field("server_name", &self.server_name).field("backends", &self.backends).finish()
    }
}

impl SqlBackendTls {
    /// Does the backend in `role` speak TLS?
    pub fn covers(&self, role: &str) -> bool {
        self.backends.as_ref().is_none_or(|b| b.iter().any(|r| r == role))
    }
}

pub(super) fn check_sql_backend_tls(c: &mut Checker, t: &super::model::SqlBackendTlsSection, replicas: usize, base: &Path) -> Option<SqlBackendTls> {
    let ca = t.ca_file.as_ref().and_then(|f| match crate::tls::read_chain(&base.join(f.get_ref())) {
        Ok(chain) => Some(chain.into_iter().map(|c| c.to_vec()).collect()),
        Err(e) => {
            c.err("sql.backend_tls.ca_file", f, e);
            None
        }
    });
    if let Some(n) = &t.server_name {
        if !valid_name(n.get_ref()) && n.get_ref().parse::<std::net::IpAddr>().is_err() {
            c.err("sql.backend_tls.server_name", n, format!("{:?} is not a DNS name or IP address", n.get_ref()));
        }
    }
    if let Some(b) = &t.backends {
        let known: Vec<String> = std::iter::once("primary".to_string()).chain((0..replicas).map(|i| format!("replica-{i}"))).collect();
        if let Some(bad) = b.get_ref().iter().find(|r| !known.contains(r)) {
            c.err("sql.backend_tls.backends", b, format!("{bad:?} is not a backend; they are {}", known.join(", ")));
        }
    }
    Some(SqlBackendTls {
        ca,
        verify: *t.verify.get_ref(),
        server_name: t.server_name.as_ref().map(|n| n.get_ref().clone()),
        backends: t.backends.as_ref().map(|b| b.get_ref().clone()),
    })
}

/// `[sql] tls` takes its certificates from `[server.tls]`.
pub(super) fn check_sql_tls(c: &mut Checker, s: &SqlSection, server_tls: bool) {
    let tls = s.tls.as_ref().is_some_and(|t| *t.get_ref());
    if let Some(t) = s.tls.as_ref().filter(|_| tls && !server_tls) {
        c.err("sql.tls", t, "uses the certificates of [server.tls]: configure it");
    }
    if let Some(r) = s.require_tls.as_ref().filter(|r| *r.get_ref() && !tls) {
        c.err("sql.require_tls", r, "needs tls = true");
    }
}

fn valid_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty() && n.len() <= 253 && n.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The protocol and TLS keys of `upstreams[i]`.
pub(super) fn check_upstream_tls(c: &mut Checker, key: &str, u: &UpstreamSection, base: &Path) -> (Option<UpstreamTls>, Protocol, usize) {
    let protocol = match u.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "http1")) => Protocol::Http1,
        Some((p, "h2")) => {
            if !u.tls {
                c.err(format!("{key}.protocol"), p, "h2 is chosen by ALPN over TLS: set tls = true, or use h2c for cleartext HTTP/2");
            }
            Protocol::H2
        }
        Some((p, "h2c")) => {
            if u.tls {
                c.err(format!("{key}.protocol"), p, "h2c is cleartext HTTP/2: with tls = true use h2");
            }
            Protocol::H2c
        }
        Some((p, other)) => {
            c.err(format!("{key}.protocol"), p, format!("{other:?} is not http1, h2 or h2c"));
            Protocol::Http1
        }
    };
    let streams = *u.max_streams.get_ref();
    if !(1..=1000).contains(&streams) {
        c.err(format!("{key}.max_streams"), &u.max_streams, format!("must be 1..=1000, got {streams}"));
    }
    if !u.tls {
        let set: [(&str, Option<Span>); 4] = [
            ("sni", u.sni.as_ref().map(span)),
            ("ca_file", u.ca_file.as_ref().map(span)),
            ("client_cert", u.client_cert.as_ref().map(span)),
            ("client_key", u.client_key.as_ref().map(span)),
        ];
        for (name, at) in set.into_iter().filter_map(|(n, s)| s.map(|s| (n, s))) {
            c.err(format!("{key}.{name}"), &Spanned::new(at, ()), "only applies with tls = true");
        }
        if !*u.verify.get_ref() {
            c.err(format!("{key}.verify"), &u.verify, "only applies with tls = true");
        }
        return (None, protocol, streams);
    }
    let sni = u.sni.as_ref().map(|s| s.get_ref().clone());
    if let Some(s) = &u.sni {
        if !valid_name(s.get_ref()) && s.get_ref().parse::<std::net::IpAddr>().is_err() {
            c.err(format!("{key}.sni"), s, format!("{:?} is not a DNS name or IP address", s.get_ref()));
        }
    }
    let ca = u.ca_file.as_ref().and_then(|f| match crate::tls::read_chain(&base.join(f.get_ref())) {
        Ok(chain) => Some(chain.into_iter().map(|c| c.to_vec()).collect()),
        Err(e) => {
            c.err(format!("{key}.ca_file"), f, e);
            None
        }
    });
    let client = match (&u.client_cert, &u.client_key) {
        (None, None) => None,
        (Some(cert), None) => {
            c.err(format!("{key}.client_cert"), cert, "needs client_key");
            None
        }
        (None, Some(k)) => {
            c.err(format!("{key}.client_key"), k, "needs client_cert");
            None
        }
        (Some(cert), Some(k)) => {
            let (cp, kp) = (base.join(cert.get_ref()), base.join(k.get_ref()));
            match crate::tls::certified(&cp, &kp) {
                Ok(_) => {
                    let chain = crate::tls::read_chain(&cp).unwrap_or_default().into_iter().map(|c| c.to_vec()).collect();
                    let key = crate::tls::read_key(&kp).map(|k| k.secret_der().to_vec()).unwrap_or_default();
                    Some((chain, key))
                }
                Err(e) if e.starts_with(&kp.display().to_string()) => {
                    c.err(format!("{key}.client_key"), k, e);
                    None
                }
                Err(e) => {
                    c.err(format!("{key}.client_cert"), cert, e);
                    None
                }
            }
        }
    };
    (Some(UpstreamTls { sni, ca, verify: *u.verify.get_ref(), client }), protocol, streams)
}

type Span = std::ops::Range<usize>;

fn span<T>(s: &Spanned<T>) -> Span {
    s.span()
}
