//! TLS and HTTP/2 at every hop, checked with clients and servers nobody
//! here wrote: curl, openssl s_client, h2load and nghttp toward the
//! gateway, nghttpd as an h2c backend with trailers. Certificates come
//! from a test CA made per test (rcgen).

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use std::net::SocketAddr;
use std::path::Path;
use switchyard_tests::pki::Pki;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_tests::*;

/// Fails with how to install a missing tool: a skipped check is a failed one.
fn need(tool: &str, package: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(found, "{tool} is not installed: apt-get install -y {package} (bash scripts/test.sh installs it)");
}

/// Run a tool for at most 60 s; (exit ok, stdout, stderr).
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    run_for(60, program, args, stdin)
}

fn run_for(secs: u32, program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg(secs.to_string()).arg(program).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn curl(args: &[&str]) -> (bool, String, String) {
    need("curl", "curl");
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    run("curl", &all, None)
}

/// The subject openssl s_client sees, and whether the handshake completed.
fn s_client(addr: SocketAddr, extra: &[&str]) -> (bool, String) {
    need("openssl", "openssl");
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", &connect];
    args.extend_from_slice(extra);
    let (_, out, err) = run("openssl", &args, Some("Q\n"));
    let text = out + &err;
    let ok = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

fn tls_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn resolve(name: &str, addr: SocketAddr) -> String {
    format!("{name}:{}:127.0.0.1", addr.port())
}

#[test]
fn https_speaks_h2_and_http1_picks_certificates_by_name_and_plain_speaks_h2c() {
    let pki = Pki::new("ca-sni");
    let (a_cert, a_key) = pki.leaf("a", "a.test", &["a.test"], false);
    let (b_cert, b_key) = pki.leaf("b", "b.test", &["b.test", "*.b.test"], false);
    let app = backend("app", &[]);
    let tls = tls_addr();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\nthreads = 2\nh2c = true\n[server.tls]\nlisten = \"{tls}\"\nhsts_max_age_s = 31536000\n\
         [[server.tls.certs]]\ncert = {a_cert:?}\nkey = {a_key:?}\n[[server.tls.certs]]\ncert = {b_cert:?}\nkey = {b_key:?}\n{}",
        upstream("web", None, &[(&app, 1)], "")
    );
    let gw = gateway(&cfg);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let url = format!("https://a.test:{}/echo", tls.port());

    let (ok, body, err) = curl(&["-i", "--http2", "--cacert", ca, "--resolve", &resolve("a.test", tls), &url]);
    assert!(ok, "{err}");
    assert!(body.starts_with("HTTP/2 200"), "{body}");
    assert!(body.contains("strict-transport-security: max-age=31536000"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "the backend learns the client used TLS: {body}");

    let (ok, body, err) = curl(&["-i", "--http1.1", "--cacert", ca, "--resolve", &resolve("a.test", tls), &url]);
    assert!(ok && body.starts_with("HTTP/1.1 200"), "{body}{err}");

    // The certificate by SNI: exact, wildcard, unknown and absent (the first).
    for (sni, cn) in [(Some("b.test"), "b.test"), (Some("x.b.test"), "b.test"), (Some("nobody.test"), "a.test"), (None, "a.test")] {
        let mut args = vec!["-CAfile", ca];
        if let Some(s) = sni {
            args.extend(["-servername", s]);
        } else {
            args.push("-noservername");
        }
        let (ok, text) = s_client(tls, &args);
        assert!(ok && text.contains(&format!("subject=CN = {cn}")), "SNI {sni:?} should get {cn}:\n{text}");
    }
    // TLS 1.2 and 1.3 only; ALPN offers h2.
    let (ok, text) = s_client(tls, &["-CAfile", ca, "-servername", "a.test", "-tls1_2"]);
    assert!(ok && text.contains("Protocol  : TLSv1.2"), "{text}");
    let (ok, text) = s_client(tls, &["-CAfile", ca, "-servername", "a.test", "-tls1_3", "-alpn", "h2"]);
    assert!(ok && text.contains("TLSv1.3") && text.contains("ALPN protocol: h2"), "{text}");
    let (ok, text) = s_client(tls, &["-servername", "a.test", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 must be refused:\n{text}");

    // h2load over TLS, 4 connections of 10 streams each.
    need("h2load", "nghttp2-client");
    let (_, out, err) = run("h2load", &["-n", "400", "-c", "4", "-m", "10", &format!("https://127.0.0.1:{}/", tls.port())], None);
    assert!(out.contains("400 succeeded, 0 failed, 0 errored"), "{out}{err}");
    assert!(out.contains("Application protocol: h2"), "{out}");

    // Cleartext HTTP/2 with prior knowledge on the plain listener, HTTP/1.1 too.
    let plain = format!("http://{}/echo", gw.addr);
    let (ok, body, err) = curl(&["-i", "--http2-prior-knowledge", &plain]);
    assert!(ok && body.starts_with("HTTP/2 200") && body.contains("x-forwarded-proto: http\n"), "{body}{err}");
    assert!(!body.contains("strict-transport-security"), "no HSTS over cleartext: {body}");
    assert_eq!(get(gw.addr, "/", &[]).status, 200);
    // Cookies an h2 client splits over several fields reach the HTTP/1.1
    // backend as one header (RFC 9113 §8.2.3).
    need("nghttp", "nghttp2-client");
    let (_, out, err) = run("nghttp", &["-H", "cookie: a=1", "-H", "cookie: b=2", &plain], None);
    assert!(out.contains("cookie: a=1; b=2\n") && out.matches("cookie:").count() == 1, "{out}{err}");
}

#[test]
fn the_plain_listener_redirects_to_https() {
    let pki = Pki::new("ca-redirect");
    let (cert, key) = pki.leaf("shop", "shop.test", &["shop.test"], false);
    let app = backend("app", &[]);
    let tls = tls_addr();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\nredirect_https = true\n[server.tls]\nlisten = \"{tls}\"\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n{}",
        upstream("web", None, &[(&app, 1)], "")
    );
    let gw = gateway(&cfg);
    let (ok, head, err) = curl(&["-sI", "-H", "Host: shop.test:8080", &format!("http://{}/cart/items?page=2", gw.addr)]);
    assert!(ok && head.starts_with("HTTP/1.1 308"), "{head}{err}");
    assert!(head.contains(&format!("location: https://shop.test:{}/cart/items?page=2\r\n", tls.port())), "{head}");
    let ca = pki.ca_file();
    let (ok, body, err) = curl(&["-L", "--cacert", ca.to_str().unwrap(), "--resolve", &resolve("shop.test", tls), "--resolve", &resolve("shop.test", gw.addr), &format!("http://shop.test:{}/x", gw.addr.port())]);
    // curl follows to https://shop.test:TLS (resolved to loopback) and the backend answers.
    assert!(ok && body.trim() == "app", "{body}{err}");
}

#[test]
fn mtls_refuses_a_client_without_a_certificate_and_gives_the_subject_to_access() {
    let pki = Pki::new("ca-mtls");
    let (cert, key) = pki.leaf("srv", "localhost", &["localhost"], false);
    let (alice, alice_key) = pki.leaf("alice", "alice", &[], true);
    let (mallory, mallory_key) = pki.leaf("mallory", "mallory", &[], true);
    let stranger = Pki::new("ca-stranger");
    let (eve, eve_key) = stranger.leaf("eve", "alice", &[], true);
    let app = backend("app", &[]);
    let tls = tls_addr();
    let ca = pki.ca_file();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n[server.tls]\nlisten = \"{tls}\"\nclient_ca = {ca:?}\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n\
         [access]\njwt_keys = [\"tls-test-jwt-signing-key-0123456789abcdef\"]\n\
         [plugins.rbac]\npath = {:?}\nconfig = {{ role_attribute = \"tls_cn\", grants = {{ alice = [\"read:doc\"] }} }}\nlimits = {{ deadline_ms = 500 }}\n{}\
         [[routes]]\npath_prefix = \"/doc\"\nupstream = \"web\"\naccess = \"rbac\"\nobject = {{ kind = \"doc\" }}\n",
        plugin("access_rbac"),
        upstream("web", None, &[(&app, 1)], "")
    );
    let gw = gateway(&cfg);
    let ca = ca.to_str().unwrap();
    let url = format!("https://localhost:{}/doc", tls.port());
    let at = resolve("localhost", tls);
    let (ok, body, err) = curl(&["--cacert", ca, "--resolve", &at, &url]);
    assert!(!ok, "no certificate, no connection: {body}{err}");
    let (ok, body, err) = curl(&["--cacert", ca, "--resolve", &at, "--cert", eve.to_str().unwrap(), "--key", eve_key.to_str().unwrap(), &url]);
    assert!(!ok, "a certificate from another CA is refused even with the right name: {body}{err}");
    let (ok, body, err) = curl(&["-i", "--cacert", ca, "--resolve", &at, "--cert", alice.to_str().unwrap(), "--key", alice_key.to_str().unwrap(), &url]);
    assert!(ok && body.starts_with("HTTP/2 200"), "alice's CN is a role the policy grants: {body}{err}");
    let (ok, body, err) = curl(&["-i", "--cacert", ca, "--resolve", &at, "--cert", mallory.to_str().unwrap(), "--key", mallory_key.to_str().unwrap(), &url]);
    assert!(ok && body.starts_with("HTTP/2 403") && body.contains("no role grants read:doc"), "{body}{err}");
    drop(gw);
}

/// Serve `pki`'s leaf `name` from the files the gateway watches.
fn install(pki: &Pki, cert: &Path, key: &Path, cn: &str) {
    let (c, k) = pki.leaf(&format!("next-{cn}"), cn, &["localhost"], false);
    // Write the key first and the chain last, as a renewal tool does; the
    // watcher waits for both to settle.
    std::fs::copy(k, key).unwrap();
    std::fs::copy(c, cert).unwrap();
}

fn served_cn(tls: SocketAddr, ca: &str) -> String {
    let (ok, text) = s_client(tls, &["-CAfile", ca, "-servername", "localhost"]);
    assert!(ok, "{text}");
    text.lines().find_map(|l| l.strip_prefix("subject=CN = ")).unwrap_or("").to_string()
}

#[test]
fn certificates_reload_under_load_without_a_failed_request() {
    need("h2load", "nghttp2-client");
    let pki = Pki::new("ca-reload");
    let (cert, key) = pki.leaf("live", "v0", &["localhost"], false);
    let app = backend("app", &[]);
    let tls = tls_addr();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n[server.tls]\nlisten = \"{tls}\"\nwatch_ms = 200\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n{}",
        upstream("web", None, &[(&app, 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap().to_string();
    assert_eq!(served_cn(tls, &ca), "v0");

    // Load: h2load on kept connections, and a new handshake per request.
    let h2 = std::thread::spawn({
        let url = format!("https://127.0.0.1:{}/", tls.port());
        move || run("h2load", &["-D", "8", "-c", "4", "-m", "4", &url], None)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (fresh_ok, fresh_bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fresh = std::thread::spawn({
        let (stop, good, bad, ca) = (stop.clone(), fresh_ok.clone(), fresh_bad.clone(), ca.clone());
        let url = format!("https://localhost:{}/", tls.port());
        let at = resolve("localhost", tls);
        move || {
            let end = Instant::now() + Duration::from_secs(30);
            let mut last_error = String::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let (ok, body, err) = curl(&["--cacert", &ca, "--resolve", &at, &url]);
                if ok && body.trim() == "app" {
                    good.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                    last_error = err;
                }
            }
            last_error
        }
    });
    let token = bearer();
    for i in 1..=20 {
        match i {
            // A key that is not the certificate's: refused, the old one serves.
            7 => {
                let (_, other_key) = pki.leaf("stray", "stray", &["localhost"], false);
                let good_key = std::fs::read(&key).unwrap();
                std::fs::copy(&other_key, &key).unwrap();
                let r = request(admin, "POST", "/tls/reload", &[(token.0, &token.1)], b"");
                assert_eq!(r.status, 422, "{r:?}");
                assert!(r.body.contains("is not the key of the certificate"), "{}", r.body);
                std::fs::write(&key, good_key).unwrap();
            }
            // SIGHUP reloads through the same path.
            10 => {
                install(&pki, &cert, &key, &format!("v{i}"));
                let _ = Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status();
                eventually(10, "SIGHUP reloaded the certificate", || served_cn(tls, &ca) == format!("v{i}"));
            }
            _ => {
                install(&pki, &cert, &key, &format!("v{i}"));
                let r = request(admin, "POST", "/tls/reload", &[(token.0, &token.1)], b"");
                assert_eq!(r.status, 200, "{r:?}");
                assert_eq!(served_cn(tls, &ca), format!("v{i}"), "new handshakes get the new certificate");
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    // A change on disk alone is picked up by the watcher.
    install(&pki, &cert, &key, "v21");
    eventually(10, "the file watcher reloaded the certificate", || served_cn(tls, &ca) == "v21");
    stop.store(true, Ordering::Relaxed);
    let last_error = fresh.join().unwrap();
    let (_, out, err) = h2.join().unwrap();
    assert_eq!(fresh_bad.load(Ordering::Relaxed), 0, "new connections failed during reloads: {last_error}");
    assert!(fresh_ok.load(Ordering::Relaxed) > 20, "the new-connection load ran");
    let done = out.lines().find(|l| l.starts_with("requests:")).unwrap_or("");
    assert!(done.contains(" 0 failed, 0 errored"), "kept connections failed during reloads: {out}{err}");
    assert!(metric(admin, "switchyard_tls_reloads_total", &[("result", "refused")]) >= 1.0);
    assert!(metric(admin, "switchyard_tls_reloads_total", &[("source", "sighup"), ("result", "ok")]) >= 1.0);
    assert!(metric(admin, "switchyard_tls_reloads_total", &[("source", "file"), ("result", "ok")]) >= 1.0);
}

#[test]
fn backends_over_tls_h2_and_h2c_with_client_certificates_and_name_checks() {
    need("nghttpd", "nghttp2-server");
    need("nghttp", "nghttp2-client");
    let pki = Pki::new("ca-upstream");
    let (srv, srv_key) = pki.leaf("srv", "backend", &["localhost", "127.0.0.1"], false);
    let (client, client_key) = pki.leaf("gw", "gateway-1", &[], true);
    let ca = pki.ca_file();
    let srv_args = ["--tls-cert", srv.to_str().unwrap(), "--tls-key", srv_key.to_str().unwrap()];
    let mut mtls_args = srv_args.to_vec();
    mtls_args.extend(["--client-ca", ca.to_str().unwrap()]);
    let secure = backend("secure", &mtls_args);
    let open = backend("open", &srv_args);
    let h2c = backend("cleartext", &["--h2c"]);
    // A gRPC-style backend nobody here wrote: h2c with trailers.
    let grpc_port = free_port();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("svc"), "payload\n").unwrap();
    let mut nghttpd = Command::new("nghttpd")
        .args(["--no-tls", "-d", docs.path().to_str().unwrap(), "--trailer=grpc-status: 0", "--trailer=grpc-message: fine", "--trailer=x-switchyard-session-set: e30=", "--trailer=x_switchyard_leak: 1", &grpc_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stranger = Pki::new("ca-other");
    let (gw_cert, gw_key) = stranger.leaf("front", "localhost", &["localhost"], false);
    let tls = tls_addr();
    let http_health = "health = { check = \"http\", path = \"/healthz\", interval_ms = 200, fall = 1 }";
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n[server.tls]\nlisten = \"{tls}\"\n[[server.tls.certs]]\ncert = {gw_cert:?}\nkey = {gw_key:?}\n\
         [[upstreams]]\nname = \"secure\"\nbackends = [{{ address = \"{}\" }}]\ntls = true\nprotocol = \"h2\"\nca_file = {ca:?}\nclient_cert = {client:?}\nclient_key = {client_key:?}\n{http_health}\n\
         [[upstreams]]\nname = \"h2c\"\nbackends = [{{ address = \"{}\" }}]\nprotocol = \"h2c\"\n{http_health}\n\
         [[upstreams]]\nname = \"wrong-name\"\nbackends = [{{ address = \"{}\" }}]\ntls = true\nsni = \"elsewhere.test\"\nca_file = {ca:?}\nhealth = {{ check = \"none\" }}\n\
         [[upstreams]]\nname = \"system-roots\"\nbackends = [{{ address = \"{}\" }}]\ntls = true\nhealth = {{ check = \"none\" }}\n\
         [[upstreams]]\nname = \"unverified\"\nbackends = [{{ address = \"{}\" }}]\ntls = true\nverify = false\nhealth = {{ check = \"none\" }}\n\
         [[upstreams]]\nname = \"grpc\"\nbackends = [{{ address = \"127.0.0.1:{grpc_port}\" }}]\nprotocol = \"h2c\"\n\
         [[routes]]\npath_prefix = \"/echo/secure\"\nupstream = \"secure\"\n[[routes]]\npath_prefix = \"/echo/h2c\"\nupstream = \"h2c\"\n\
         [[routes]]\npath_prefix = \"/echo/wrong\"\nupstream = \"wrong-name\"\n[[routes]]\npath_prefix = \"/echo/roots\"\nupstream = \"system-roots\"\n\
         [[routes]]\npath_prefix = \"/echo/unverified\"\nupstream = \"unverified\"\n[[routes]]\npath_prefix = \"/svc\"\nupstream = \"grpc\"\n",
        secure.addr, h2c.addr, open.addr, open.addr, open.addr
    );
    let gw = gateway(&cfg);
    // Health checks speak each upstream's protocol: both stay up.
    std::thread::sleep(Duration::from_millis(800));

    let r = get(gw.addr, "/echo/secure", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("version: HTTP/2.0") && r.body.contains("tls: TLSv1_3"), "h2 by ALPN over TLS: {}", r.body);
    assert!(r.body.contains("client-cert: CN=gateway-1"), "the gateway presented its client certificate: {}", r.body);
    let r = get(gw.addr, "/echo/h2c", &[]);
    assert!(r.status == 200 && r.body.contains("version: HTTP/2.0") && !r.body.contains("tls:"), "{r:?}");

    let r = get(gw.addr, "/echo/wrong", &[]);
    assert_eq!(r.status, 502, "a certificate for another name is refused: {r:?}");
    assert!(r.body.contains("not valid for name") && r.body.contains("elsewhere.test"), "{}", r.body);
    let r = get(gw.addr, "/echo/roots", &[]);
    assert_eq!(r.status, 502, "a private CA is not among the system roots: {r:?}");
    let r = get(gw.addr, "/echo/unverified", &[]);
    assert!(r.status == 200 && r.body.contains("tls: TLSv1_3"), "verify = false connects: {r:?}");
    assert!(gw.log_text().contains("verify = false"), "turning verification off is logged");

    // gRPC-style: h2 from the client (over TLS) and to the backend (h2c), trailers kept.
    let url = format!("https://127.0.0.1:{}/svc", tls.port());
    let (_, out, err) = run("nghttp", &["-v", &url], None);
    assert!(out.contains(":status: 200") && out.contains("payload"), "{out}{err}");
    assert!(out.contains("grpc-status: 0") && out.contains("grpc-message: fine"), "trailers pass through: {out}");
    assert!(!out.contains("x-switchyard-") && !out.contains("x_switchyard_"), "internal trailers are stripped: {out}");
    let _ = nghttpd.kill();
    let _ = nghttpd.wait();
}

#[test]
fn testssl_finds_nothing_rated_high_or_critical() {
    need("testssl", "testssl.sh");
    let pki = Pki::new("ca-testssl");
    // A certificate as a public CA would issue it: a year of validity and
    // a CRL location (testssl rates certificates without one HIGH).
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec!["http://127.0.0.1:9/ca.crl".into()] }];
    let cert = p.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    let (c, k) = (pki.dir.path().join("site.pem"), pki.dir.path().join("site.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let app = backend("app", &[]);
    let tls = tls_addr();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n[server.tls]\nlisten = \"{tls}\"\nhsts_max_age_s = 31536000\n[[server.tls.certs]]\ncert = {c:?}\nkey = {k:?}\n{}",
        upstream("web", None, &[(&app, 1)], "")
    );
    let _gw = gateway(&cfg);
    let json = pki.dir.path().join("testssl.json");
    let ca = pki.ca_file();
    let (_, out, err) = run_for(
        400,
        "testssl",
        &["--quiet", "--color", "0", "--warnings", "off", "--add-ca", ca.to_str().unwrap(), "--jsonfile", json.to_str().unwrap(), &format!("https://127.0.0.1:{}", tls.port())],
        None,
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("testssl wrote no report ({e}):\n{out}{err}"));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(findings.len() > 50, "testssl ran its checks: {text}");
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl.sh findings rated HIGH or CRITICAL:\n{}", bad.join("\n"));
}
