//! A test CA made per test (rcgen): server and client certificates for
//! the TLS tests of the HTTP and SQL listeners.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;

/// A test CA that signs server and client certificates into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca_path: PathBuf,
    pub ca: rcgen::Certificate,
    pub ca_key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = p.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Self { dir, ca_path, ca, ca_key }
    }

    /// The CA certificate (PEM) to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_path.clone()
    }

    /// A leaf for `names` (DNS names or IPs) with common name `cn`,
    /// written as FILE.pem and FILE.key.
    pub fn leaf(&self, file: &str, cn: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

