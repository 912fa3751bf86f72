//! TLS toward clients: certificates chosen by SNI, client certificates
//! (mTLS), reload without a restart. The resolver and the client verifier
//! read the loaded files through one `ArcSwap`, so a reload changes the
//! next handshakes and leaves connections already made alone; a file that
//! does not load is refused and the old certificates keep serving.

mod pem;

pub use pem::{certified, dns_names, install_provider, not_after, provider as default_provider, read_chain, read_key, ClientCert};

use crate::config::TlsSpec;
use arc_swap::ArcSwap;
use pingora::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// One certificate as loaded, for `GET /tls` and the reload answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub cert: String,
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: Option<i64>,
    pub sha256: String,
}

/// The files of one load: certificates by name, and the client verifier.
struct Loaded {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for a `*.example.com` name.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    certs: Vec<CertInfo>,
    stamps: Vec<Option<Stamp>>,
    loaded_at: SystemTime,
}

/// What a file looked like when it was read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len() })
}

fn files(spec: &TlsSpec) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = spec.certs.iter().flat_map(|c| [c.cert.clone(), c.key.clone()]).collect();
    f.extend(spec.client_ca.clone());
    f
}

impl Loaded {
    /// Every certificate, key and CA of `spec`, or every reason one failed.
    fn load(spec: &TlsSpec) -> Result<Self, Vec<String>> {
        let stamps = files(spec).iter().map(|p| stamp(p)).collect();
        let mut errors = Vec::new();
        let (mut exact, mut wildcard, mut certs, mut first) = (HashMap::new(), HashMap::new(), Vec::new(), None);
        for c in &spec.certs {
            let ck = match certified(&c.cert, &c.key) {
                Ok(ck) => ck,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let leaf = &ck.cert[0];
            let names = if c.names.is_empty() { dns_names(leaf) } else { c.names.clone() };
            for n in &names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert_with(|| ck.clone()),
                    None => exact.entry(n.clone()).or_insert_with(|| ck.clone()),
                };
            }
            certs.push(CertInfo { cert: c.cert.display().to_string(), names, not_after: not_after(leaf), sha256: hex(&Sha256::digest(leaf)) });
            first.get_or_insert(ck);
        }
        let verifier = spec.client_ca.as_ref().and_then(|ca| match client_verifier(ca, spec.client_required) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        });
        match first {
            Some(default) if errors.is_empty() => Ok(Self { default, exact, wildcard, verifier, certs, stamps, loaded_at: SystemTime::now() }),
            _ => Err(errors),
        }
    }

    /// The certificate for a client's server name: an exact name, then a
    /// wildcard one label up, then the first certificate.
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(ck) = self.exact.get(&name) {
            return ck.clone();
        }
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.default).clone()
    }
}

fn client_verifier(ca: &Path, required: bool) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for c in read_chain(ca)? {
        roots.add(c).map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()));
    let b = if required { b } else { b.allow_unauthenticated() };
    b.build().map_err(|e| format!("{}: {e}", ca.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HTTPS listener's certificates and client verifier, reloadable.
pub struct TlsHub {
    spec: TlsSpec,
    current: Arc<ArcSwap<Loaded>>,
    /// One reload at a time (SIGHUP, the watcher and the admin API).
    reloading: parking_lot::Mutex<()>,
    hsts: Option<String>,
}

impl TlsHub {
    /// Load every file of `spec`; every reason one failed otherwise.
    pub fn new(spec: &TlsSpec) -> Result<Arc<Self>, Vec<String>> {
        install_provider();
        let loaded = Loaded::load(spec)?;
        let hsts = (spec.hsts_max_age_s > 0).then(|| {
            let sub = if spec.hsts_include_subdomains { "; includeSubDomains" } else { "" };
            format!("max-age={}{sub}", spec.hsts_max_age_s)
        });
        Ok(Arc::new(Self { spec: spec.clone(), current: Arc::new(ArcSwap::from_pointee(loaded)), reloading: parking_lot::Mutex::new(()), hsts }))
    }

    pub fn spec(&self) -> &TlsSpec {
        &self.spec
    }

    /// The `Strict-Transport-Security` value, when configured.
    pub fn hsts(&self) -> Option<&str> {
        self.hsts.as_deref()
    }

    /// Pingora settings for the HTTPS listener: TLS 1.2 and 1.3, rustls's
    /// (modern only) cipher suites, ALPN, the SNI resolver, the verifier.
    pub fn settings(&self) -> Result<pingora::listeners::tls::TlsSettings, String> {
        let callbacks: TlsAcceptCallbacks = Box::new(Subjects);
        let mut s = pingora::listeners::tls::TlsSettings::with_callbacks(callbacks).map_err(|e| e.to_string())?;
        s.set_cert_resolver(Arc::new(Resolver(self.current.clone())));
        if self.spec.client_ca.is_some() {
            s.set_client_cert_verifier(Arc::new(Verifier { current: self.current.clone(), required: self.spec.client_required }));
        }
        s.set_alpn(if self.spec.h2 { pingora::protocols::ALPN::H2H1 } else { pingora::protocols::ALPN::H1 });
        Ok(s)
    }

    /// A rustls server config on the same certificates and verifier, for
    /// listeners Pingora does not run (no ALPN).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let b = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .expect("ring offers TLS 1.2 and 1.3");
        let b = if self.spec.client_ca.is_some() {
            b.with_client_cert_verifier(Arc::new(Verifier { current: self.current.clone(), required: self.spec.client_required }))
        } else {
            b.with_no_client_auth()
        };
        Arc::new(b.with_cert_resolver(Arc::new(Resolver(self.current.clone()))))
    }

    /// True when a certificate, key or CA file changed since the last load.
    pub fn files_changed(&self) -> bool {
        let now: Vec<_> = files(&self.spec).iter().map(|p| stamp(p)).collect();
        now != self.current.load().stamps
    }

    /// Read every file again; on success new handshakes use them, on
    /// failure the old ones keep serving and the reasons are returned.
    pub fn reload(&self, source: &str) -> Result<Vec<CertInfo>, Vec<String>> {
        let _one = self.reloading.lock();
        let m = crate::metrics::metrics();
        match Loaded::load(&self.spec) {
            Ok(loaded) => {
                let certs = loaded.certs.clone();
                self.current.store(Arc::new(loaded));
                m.tls_reloads.with_label_values(&[source, "ok"]).inc();
                tracing::info!(source, certs = certs.len(), "TLS certificates reloaded");
                Ok(certs)
            }
            Err(errors) => {
                // What failed is not retried until a file changes again.
                let stamps = files(&self.spec).iter().map(|p| stamp(p)).collect();
                let old = self.current.load_full();
                self.current.store(Arc::new(Loaded { stamps, ..old.shallow() }));
                m.tls_reloads.with_label_values(&[source, "refused"]).inc();
                tracing::error!(source, "TLS reload refused, the old certificates keep serving: {}", errors.join("; "));
                Err(errors)
            }
        }
    }

    /// `GET /tls`: the certificates serving now.
    pub fn status(&self) -> serde_json::Value {
        let l = self.current.load();
        let loaded_at = l.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        serde_json::json!({
            "listen": self.spec.listen.to_string(),
            "alpn": if self.spec.h2 { vec!["h2", "http/1.1"] } else { vec!["http/1.1"] },
            "client_auth": match (&self.spec.client_ca, self.spec.client_required) {
                (None, _) => "off",
                (Some(_), true) => "required",
                (Some(_), false) => "optional",
            },
            "loaded_at": loaded_at,
            "certs": l.certs,
        })
    }
}

impl Loaded {
    /// The same certificates under new stamps.
    fn shallow(&self) -> Self {
        Self {
            default: self.default.clone(),
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
            verifier: self.verifier.clone(),
            certs: self.certs.clone(),
            stamps: self.stamps.clone(),
            loaded_at: self.loaded_at,
        }
    }
}

struct Resolver(Arc<ArcSwap<Loaded>>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("switchyard SNI resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()))
    }
}

/// The client verifier of the current load. It sends no CA names in the
/// certificate request (they can change on reload); clients send the
/// certificate they were given either way.
struct Verifier {
    current: Arc<ArcSwap<Loaded>>,
    required: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("switchyard client verifier")
    }
}

impl Verifier {
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.current.load().verifier.clone().ok_or_else(|| rustls::Error::General("no client CA is loaded".into()))
    }
}

impl ClientCertVerifier for Verifier {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// After a handshake, the verified client certificate's subject is kept
/// on the connection for the access seam.
struct Subjects;

#[async_trait::async_trait]
impl TlsAccept for Subjects {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        ClientCert::from_der(der).map(|c| Arc::new(c) as Arc<dyn Any + Send + Sync>)
    }
}

/// The client certificate of the connection a request came on, if any.
pub fn client_cert(session: &pingora::proxy::Session) -> Option<Arc<ClientCert>> {
    let digest = session.digest()?.ssl_digest.clone()?;
    digest.extension.get::<ClientCert>().map(|c| Arc::new(c.clone()))
}

/// True when the request came over TLS.
pub fn is_tls(session: &pingora::proxy::Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[cfg(test)]
mod tests;
