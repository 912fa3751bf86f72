//! SNI choice, reload (good, broken, mismatched) and the config checks,
//! on certificates made per test.

use super::*;
use crate::config::{CertSpec, TlsSpec};
use rcgen::{CertificateParams, KeyPair};

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("switchyard-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// A self-signed certificate for `names`, written as NAME.pem / NAME.key.
    fn cert(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().self_signed(&key).unwrap();
        let (c, k) = (self.0.join(format!("{file}.pem")), self.0.join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(certs: Vec<(PathBuf, PathBuf)>) -> TlsSpec {
    TlsSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        certs: certs.into_iter().map(|(cert, key)| CertSpec { cert, key, names: Vec::new() }).collect(),
        h2: true,
        client_ca: None,
        client_required: true,
        hsts_max_age_s: 0,
        hsts_include_subdomains: false,
        watch_ms: 0,
    }
}

fn leaf(hub: &TlsHub, sni: Option<&str>) -> Vec<String> {
    dns_names(&hub.current.load().pick(sni).cert[0])
}

#[test]
fn the_certificate_is_chosen_by_server_name_with_the_first_as_default() {
    let d = Dir::new("sni");
    let hub = TlsHub::new(&spec(vec![d.cert("a", &["a.test"]), d.cert("b", &["*.b.test", "b.test"])])).unwrap();
    assert_eq!(leaf(&hub, Some("a.test")), ["a.test"]);
    assert_eq!(leaf(&hub, Some("A.TEST")), ["a.test"], "names compare without case");
    assert_eq!(leaf(&hub, Some("x.b.test")), ["*.b.test", "b.test"]);
    assert_eq!(leaf(&hub, Some("b.test")), ["*.b.test", "b.test"]);
    assert_eq!(leaf(&hub, Some("y.x.b.test")), ["a.test"], "a wildcard covers one label");
    assert_eq!(leaf(&hub, Some("other.test")), ["a.test"]);
    assert_eq!(leaf(&hub, None), ["a.test"]);
}

#[test]
fn a_reload_takes_new_files_and_a_broken_one_keeps_the_old_certificates() {
    let d = Dir::new("reload");
    let (c, k) = d.cert("a", &["a.test"]);
    let hub = TlsHub::new(&spec(vec![(c.clone(), k.clone())])).unwrap();
    let before = hub.status()["certs"][0]["sha256"].clone();
    assert!(!hub.files_changed());

    // A renewed certificate with new names.
    let (c2, k2) = d.cert("renewed", &["a.test", "www.a.test"]);
    std::fs::copy(&c2, &c).unwrap();
    std::fs::copy(&k2, &k).unwrap();
    let certs = hub.reload("test").unwrap();
    assert_eq!(certs[0].names, ["a.test", "www.a.test"]);
    let renewed = hub.status()["certs"][0]["sha256"].clone();
    assert_ne!(before, renewed);

    // A key that belongs to another certificate is refused, by name.
    let (_, other_key) = d.cert("other", &["other.test"]);
    std::fs::copy(&other_key, &k).unwrap();
    let errors = hub.reload("test").unwrap_err();
    assert!(errors[0].contains("is not the key of the certificate in") && errors[0].contains("a.key"), "{errors:?}");
    assert_eq!(hub.status()["certs"][0]["sha256"], renewed, "the old certificate keeps serving");
    assert_eq!(leaf(&hub, Some("www.a.test")), ["a.test", "www.a.test"]);
    assert!(!hub.files_changed(), "a refused reload is not retried until a file changes again");

    // Garbage in the certificate file.
    std::fs::copy(&k2, &k).unwrap();
    std::fs::write(&c, "not a certificate\n").unwrap();
    let errors = hub.reload("test").unwrap_err();
    assert!(errors[0].contains("a.pem") && errors[0].contains("no CERTIFICATE"), "{errors:?}");
    assert_eq!(hub.status()["certs"][0]["sha256"], renewed);
}

#[test]
fn the_client_subject_is_read_from_the_certificate() {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["client.test".into()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "alice");
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "Exams");
    let cert = p.self_signed(&key).unwrap();
    let c = ClientCert::from_der(cert.der()).unwrap();
    assert_eq!(c.cn.as_deref(), Some("alice"));
    assert!(c.subject.contains("CN=alice") && c.subject.contains("O=Exams"), "{}", c.subject);
}

#[test]
fn the_config_check_names_each_bad_tls_key() {
    let d = Dir::new("config");
    let (c, k) = d.cert("a", &["a.test"]);
    let (_, other) = d.cert("b", &["b.test"]);
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:8080"
redirect_https = true

[server.tls]
listen = "127.0.0.1:8443"
client_auth = "sometimes"

[[server.tls.certs]]
cert = "{c}"
key = "{other}"

[[server.tls.certs]]
cert = "missing.pem"
key = "{k}"
names = ["bad name"]

[[upstreams]]
name = "u"
backends = [{{ address = "127.0.0.1:9000" }}]
protocol = "h2"
sni = "api.test"

[[upstreams]]
name = "v"
backends = [{{ address = "127.0.0.1:9001" }}]
tls = true
protocol = "h3"
max_streams = 0
client_cert = "{c}"
"#,
        c = c.display(),
        k = k.display(),
        other = other.display()
    );
    let errors = crate::config::parse(&text, &d.0).unwrap_err();
    let said = |path: &str, what: &str| errors.iter().any(|e| e.path == path && e.message.contains(what) && e.line.is_some());
    let all = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(said("server.tls.certs[0].key", "is not the key of the certificate"), "{all}");
    assert!(said("server.tls.certs[1].cert", "missing.pem"), "{all}");
    assert!(said("server.tls.certs[1].names", "\"bad name\" is not a DNS name"), "{all}");
    assert!(said("server.tls.client_auth", "needs client_ca"), "{all}");
    assert!(said("upstreams[0].protocol", "set tls = true"), "{all}");
    assert!(said("upstreams[0].sni", "only applies with tls = true"), "{all}");
    assert!(said("upstreams[1].protocol", "\"h3\" is not http1, h2 or h2c"), "{all}");
    assert!(said("upstreams[1].max_streams", "must be 1..=1000"), "{all}");
    assert!(said("upstreams[1].client_cert", "needs client_key"), "{all}");
}

#[test]
fn a_valid_tls_config_parses() {
    let d = Dir::new("valid");
    let (c, k) = d.cert("a", &["a.test"]);
    let text = format!(
        "[server]\nredirect_https = true\nh2c = true\n[server.tls]\nlisten = \"127.0.0.1:8443\"\nhsts_max_age_s = 600\nclient_ca = \"{c}\"\nclient_auth = \"optional\"\n[[server.tls.certs]]\ncert = \"{c}\"\nkey = \"{k}\"\n[[upstreams]]\nname = \"u\"\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\ntls = true\nprotocol = \"h2\"\nca_file = \"{c}\"\nsni = \"a.test\"\n",
        c = c.display(),
        k = k.display()
    );
    let cfg = crate::config::parse(&text, &d.0).unwrap();
    let tls = cfg.tls.unwrap();
    assert!(!tls.client_required && tls.h2 && cfg.redirect_https && cfg.h2c);
    let u = &cfg.upstreams[0];
    assert_eq!(u.protocol, crate::config::Protocol::H2);
    assert_eq!(u.tls.as_ref().unwrap().sni.as_deref(), Some("a.test"));
    let hub = TlsHub::new(&tls).unwrap();
    assert_eq!(hub.hsts(), Some("max-age=600"));
    assert_eq!(hub.status()["client_auth"], "optional");
}
