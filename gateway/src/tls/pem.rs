//! PEM files to rustls types, with errors that name the file and what is
//! wrong with it (a config check and a reload both report these).

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Every certificate in a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no CERTIFICATE block", path.display()));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = X509Certificate::from_der(c) {
            return Err(format!("{}: certificate {} is not valid X.509: {e}", path.display(), i + 1));
        }
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {}", path.display(), pem_error(e)))
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "holds no PEM block of the expected kind (a PRIVATE KEY for a key file)".into(),
        other => format!("is not valid PEM: {other}"),
    }
}

/// The crypto of every TLS hop: *ring*, the provider Pingora's `rustls`
/// feature uses (rustls 0.23.48 marks it deprecated because it has no
/// post-quantum key exchange; aws-lc-rs has, at the cost of a C build:
/// docs/decisions.md), with TLS 1.3's three suites and, for TLS 1.2, one
/// suite per key type: ECDHE with AES-128-GCM, the suite every TLS 1.2
/// AEAD peer implements (RFC 7525). Pingora builds its rustls configs
/// without a way to prefer the server's cipher order, so a single TLS 1.2
/// suite is how the server's choice holds (testssl.sh: no cipher order).
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::{CipherSuite as C, SupportedCipherSuite as S};
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| match s {
        S::Tls13(_) => true,
        S::Tls12(_) => matches!(s.suite(), C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    });
    p
}

/// Make [`provider`] the process's default before Pingora installs its
/// own (it only installs one when none is): every listener and every
/// connection to a backend then use it.
pub fn install_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default(provider());
}

/// A chain and its key, checked to belong together.
pub fn certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_chain(cert)?;
    let der = read_key(key)?;
    let ck = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!("{} is not the key of the certificate in {}", key.display(), cert.display()),
        other => format!("{}: {other}", key.display()),
    })?;
    Ok(Arc::new(ck))
}

/// The DNS names a leaf certificate is valid for (its subjectAltName, or
/// its common name when it has none), lower case.
pub fn dns_names(cert: &CertificateDer) -> Vec<String> {
    let Ok((_, x)) = X509Certificate::from_der(cert) else { return Vec::new() };
    let mut names: Vec<String> = match x.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().filter_map(|n| if let GeneralName::DNSName(d) = n { Some(d.to_ascii_lowercase()) } else { None }).collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(x.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    names
}

/// When the leaf stops being valid, as Unix seconds.
pub fn not_after(cert: &CertificateDer) -> Option<i64> {
    X509Certificate::from_der(cert).ok().map(|(_, x)| x.validity().not_after.timestamp())
}

/// A verified client certificate, as access policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name (RFC 4514 text).
    pub subject: String,
    /// The subject's common name, if any.
    pub cn: Option<String>,
}

impl ClientCert {
    /// The subject of a DER leaf certificate.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, x) = X509Certificate::from_der(der).ok()?;
        let cn = x.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
        Some(Self { subject: x.subject().to_string(), cn })
    }
}
