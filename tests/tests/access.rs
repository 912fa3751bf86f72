//! UCON access checks end to end: the real gateway with the s-ucon and
//! rbac plugins, HS256 subject tokens, a static attribute file, mutable
//! attributes in real memcached. A table of decisions, a 3-attempt limit
//! raced from 3 gateway nodes, a revoke during a stream, and bad input.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const JWT_KEY: &str = "test-access-jwt-signing-key-0123456789abc";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(sub: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({ "sub": sub, "exp": now_s() + 600 });
    claims.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap()
}

const ATTRIBUTES: &str = r#"
[subjects.alice]
class = "students"
city = "Nanjing"
course = "c1"
[subjects.bob]
class = "students"
city = "Beijing"
course = "c2"
[subjects.tom]
class = "teachers"
course = "c1"
"#;

/// The exam policy of paper 002 as an s-ucon config table.
fn policy() -> String {
    let hour = (now_s() / 3600) % 24;
    let (open, closed) = (format!("[{hour}, {}]", (hour + 1) % 24 + if hour == 23 { 24 } else { 0 }), format!("[{}, {}]", (hour + 2) % 24, (hour + 3) % 24));
    let open = if hour == 23 { "[23, 24]".to_string() } else { open };
    format!(
        r#"
[plugins.ucon.config.roles]
student = {{ grants = ["read:paper", "submit:exam", "accept:rules", "read:lab", "read:lab2", "read:open", "read:late", "read:stream"] }}
teacher = {{ inherits = ["student"], grants = ["read:submission"] }}
nanjing = {{ grants = ["read:local-news"] }}
[plugins.ucon.config.classes]
students = ["student"]
teachers = ["teacher"]
[[plugins.ucon.config.subsets]]
class = "students"
when = {{ city = "Nanjing" }}
roles = ["nanjing"]
[plugins.ucon.config.conditions]
campus = {{ networks = ["127.0.0.0/8"], reason = "only from the campus network" }}
elsewhere = {{ networks = ["10.0.0.0/8"], reason = "only from the campus network" }}
open_hours = {{ hours = {open}, reason = "outside exam hours" }}
closed_hours = {{ hours = {closed}, reason = "outside exam hours" }}
not_suspended = {{ unless_attribute = "suspended", reason = "suspended by a teacher" }}
[[plugins.ucon.config.rules]]
permission = "read:paper"
same = ["course"]
[[plugins.ucon.config.rules]]
permission = "submit:exam"
same = ["course"]
obligations = [{{ attribute = "rules_accepted", at_least = 1, reason = "accept the exam rules first", fulfil_at = "POST /exam/rules" }}]
limit = {{ attribute = "attempts", max = 3, reason = "no submission attempts left" }}
[[plugins.ucon.config.rules]]
permission = "accept:rules"
records = {{ attribute = "rules_accepted", max = 1, reason = "rules already accepted" }}
[[plugins.ucon.config.rules]]
permission = "read:lab"
conditions = ["campus"]
[[plugins.ucon.config.rules]]
permission = "read:lab2"
conditions = ["elsewhere"]
[[plugins.ucon.config.rules]]
permission = "read:open"
conditions = ["open_hours"]
[[plugins.ucon.config.rules]]
permission = "read:late"
conditions = ["closed_hours"]
[[plugins.ucon.config.rules]]
permission = "read:stream"
conditions = ["not_suspended"]
ongoing_ms = 100
"#
    )
}

/// A gateway with every exam route behind the `ucon` plugin.
fn config(mc: &Memcached, dir: &std::path::Path, backends: &[SocketAddr], policy: &str) -> String {
    std::fs::write(dir.join("attributes.toml"), ATTRIBUTES).unwrap();
    let list: Vec<String> = backends.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    let routes = [
        ("/paper", "/paper/{course}", "kind = \"paper\"", ""),
        ("/exam/rules", "", "kind = \"rules\"", "POST = \"accept\""),
        ("/exam", "/exam/{course}/submit", "kind = \"exam\"", "POST = \"submit\""),
        ("/submissions", "/submissions/{course}", "kind = \"submission\"", ""),
        ("/news", "", "kind = \"local-news\"", ""),
        ("/campus", "", "kind = \"lab\"", ""),
        ("/offcampus", "", "kind = \"lab2\"", ""),
        ("/open", "", "kind = \"open\"", ""),
        ("/late", "", "kind = \"late\"", ""),
    ];
    let mut text = format!(
        "{SERVER}\n[session]\n[session.central]\nservers = [\"{}\"]\n[access]\njwt_keys = [\"{JWT_KEY}\"]\nattributes_file = {:?}\nmutable = [\"attempts\", \"rules_accepted\", \"suspended\"]\n\
         [plugins.ucon]\npath = {:?}\nlimits = {{ deadline_ms = 500 }}\n{policy}\n\
         [plugins.rbac]\npath = {:?}\nlimits = {{ deadline_ms = 500 }}\nconfig = {{ grants = {{ editor = [\"write:doc\", \"read:doc\"], viewer = [\"read:doc\"] }} }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n",
        mc.addr,
        dir.join("attributes.toml").to_string_lossy(),
        plugin("access_s_ucon").to_string_lossy(),
        plugin("access_rbac").to_string_lossy(),
        list.join(", ")
    );
    for (prefix, pattern, object, rights) in routes {
        let pattern = if pattern.is_empty() { String::new() } else { format!("path_pattern = \"{pattern}\"\n") };
        text.push_str(&format!("[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"app\"\naccess = \"ucon\"\n{pattern}object = {{ {object} }}\nrights = {{ {rights} }}\n"));
    }
    text.push_str("[[routes]]\npath_prefix = \"/doc\"\nupstream = \"app\"\naccess = \"rbac\"\nobject = { kind = \"doc\" }\n");
    text
}

fn call(gw: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(gw, method, path, &headers, b"")
}

#[test]
fn a_table_of_decisions() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let b = backend("app", &[]);
    let (gw, admin) = gateway_with_admin(&config(&mc, dir.path(), &[b.addr], &policy()), "");
    let alice = token("alice", serde_json::json!({}));
    let bob = token("bob", serde_json::json!({}));
    let tom = token("tom", serde_json::json!({}));
    let eve = token("eve", serde_json::json!({}));
    let editor = token("ed", serde_json::json!({ "roles": ["editor"] }));
    let viewer = token("vi", serde_json::json!({ "roles": "viewer" }));
    let forged = encode(&Header::default(), &serde_json::json!({ "sub": "alice", "exp": now_s() + 600 }), &EncodingKey::from_secret(b"another-key-entirely-0123456789abcdef")).unwrap();
    let expired = encode(&Header::default(), &serde_json::json!({ "sub": "alice", "exp": now_s() - 10 }), &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap();
    let hs512 = encode(&Header::new(jsonwebtoken::Algorithm::HS512), &serde_json::json!({ "sub": "alice", "exp": now_s() + 600 }), &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap();
    // alg: none, unsigned: header {"alg":"none","typ":"JWT"}.
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", base64_url(&format!(r#"{{"sub":"alice","exp":{}}}"#, now_s() + 600)));
    let cases: Vec<(&str, &str, &str, Option<&str>, u16, &str)> = vec![
        ("own course paper", "GET", "/paper/c1", Some(&alice), 200, ""),
        ("other course paper", "GET", "/paper/c2", Some(&alice), 403, "not your course"),
        ("bob's own course", "GET", "/paper/c2", Some(&bob), 200, ""),
        ("bob, other course", "GET", "/paper/c1", Some(&bob), 403, "not your course"),
        ("teacher inherits student", "GET", "/paper/c1", Some(&tom), 200, ""),
        ("teacher reads submissions", "GET", "/submissions/c1", Some(&tom), 200, ""),
        ("student may not", "GET", "/submissions/c1", Some(&alice), 403, "grants read:submission"),
        ("Nanjing subset", "GET", "/news", Some(&alice), 200, ""),
        ("not in the subset", "GET", "/news", Some(&bob), 403, "grants read:local-news"),
        ("teacher not in the subset", "GET", "/news", Some(&tom), 403, "grants read:local-news"),
        ("no class", "GET", "/paper/c1", Some(&eve), 403, "no role"),
        ("anonymous", "GET", "/paper/c1", None, 403, "no role"),
        ("forged token", "GET", "/paper/c1", Some(&forged), 401, "invalid token"),
        ("expired token", "GET", "/paper/c1", Some(&expired), 401, "invalid token"),
        ("alg none", "GET", "/paper/c1", Some(&none), 401, "invalid token"),
        ("wrong algorithm", "GET", "/paper/c1", Some(&hs512), 401, "invalid token"),
        ("garbage token", "GET", "/paper/c1", Some("x.y.z"), 401, "invalid token"),
        ("write right not granted", "DELETE", "/paper/c1", Some(&alice), 403, "grants write:paper"),
        ("obligation first", "POST", "/exam/c1/submit", Some(&alice), 403, "accept the exam rules first: POST /exam/rules"),
        ("fulfil the obligation", "POST", "/exam/rules", Some(&alice), 200, ""),
        ("attempt 1", "POST", "/exam/c1/submit", Some(&alice), 200, ""),
        ("attempt 2", "POST", "/exam/c1/submit", Some(&alice), 200, ""),
        ("attempt 3", "POST", "/exam/c1/submit", Some(&alice), 200, ""),
        ("attempts exhausted", "POST", "/exam/c1/submit", Some(&alice), 403, "no submission attempts left"),
        ("other course exam", "POST", "/exam/c2/submit", Some(&alice), 403, "not your course"),
        ("bob must accept too", "POST", "/exam/c2/submit", Some(&bob), 403, "accept the exam rules first"),
        ("campus network", "GET", "/campus", Some(&alice), 200, ""),
        ("off campus", "GET", "/offcampus", Some(&alice), 403, "only from the campus network"),
        ("inside the hours", "GET", "/open", Some(&alice), 200, ""),
        ("outside the hours", "GET", "/late", Some(&alice), 403, "outside exam hours"),
        ("rbac editor writes", "POST", "/doc", Some(&editor), 200, ""),
        ("rbac viewer reads", "GET", "/doc", Some(&viewer), 200, ""),
        ("rbac viewer may not write", "POST", "/doc", Some(&viewer), 403, "no role grants write:doc"),
        ("rbac without roles", "GET", "/doc", Some(&alice), 403, "no role grants read:doc"),
    ];
    assert!(cases.len() >= 30);
    for (what, method, path, tok, status, reason) in cases {
        let r = call(gw.addr, method, path, tok);
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert!(r.body.contains(reason), "{what}: the reason {reason:?} is not in {:?}", r.body);
    }
    assert!(metric(admin, "switchyard_access_decisions_total", &[("result", "permit")]) >= 10.0);
    assert!(metric(admin, "switchyard_access_decisions_total", &[("result", "obligation")]) >= 2.0);
    assert!(metric(admin, "switchyard_access_decisions_total", &[("result", "deny"), ("reason", "invalid token")]) >= 5.0);
}

/// An access canary's figures say what each version decided: a canary
/// table that takes `read:doc` from viewers denies its share of subjects
/// (stable per subject), the baseline permits the rest, and `GET
/// /plugins/rbac/canary` counts both by outcome.
#[test]
fn an_access_canary_counts_permits_and_denies_per_version() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let b = backend("app", &[]);
    let (gw, admin) = gateway_with_admin(&config(&mc, dir.path(), &[b.addr], &policy()), "");
    let (k, v) = bearer();
    let table = "%7B%22grants%22%3A%7B%22editor%22%3A%5B%22write%3Adoc%22%2C%22read%3Adoc%22%5D%7D%7D"; // {"grants":{"editor":["write:doc","read:doc"]}}
    let r = request(admin, "PUT", &format!("/plugins/rbac?canary=50&config={table}"), &[(k, v.as_str())], &std::fs::read(plugin("access_rbac")).unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    let viewers: Vec<String> = (0..40).map(|i| token(&format!("viewer-{i}"), serde_json::json!({ "roles": "viewer" }))).collect();
    let first: Vec<u16> = viewers.iter().map(|t| call(gw.addr, "GET", "/doc/a", Some(t)).status).collect();
    let again: Vec<u16> = viewers.iter().map(|t| call(gw.addr, "GET", "/doc/a", Some(t)).status).collect();
    assert_eq!(first, again, "each subject stays on its version");
    let (permits, denies) = (first.iter().filter(|&&s| s == 200).count(), first.iter().filter(|&&s| s == 403).count());
    assert!(permits > 0 && denies > 0 && permits + denies == 40, "both versions decided: {first:?}");
    let state: serde_json::Value = serde_json::from_str(&get(admin, "/plugins/rbac/canary", &[(k, v.as_str())]).body).unwrap();
    assert_eq!(state["baseline"]["outcomes"]["permit"].as_u64(), Some(2 * permits as u64), "{state}");
    let canary = state["canary"]["outcomes"].as_object().unwrap();
    let denied: u64 = canary.iter().filter(|(k, _)| k.starts_with("deny: ")).map(|(_, n)| n.as_u64().unwrap()).sum();
    assert_eq!((denied, canary.get("permit")), (2 * denies as u64, None), "{state}");
}

fn base64_url(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn three_nodes_racing_a_three_attempt_limit_grant_exactly_three_and_failures_do_not_count() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let ok = backend("ok", &[]);
    let failing = backend("failing", &["--status", "500"]);
    // Round robin over both: every second submission fails upstream.
    let cfg = config(&mc, dir.path(), &[ok.addr, failing.addr], &policy());
    let nodes: Vec<Proc> = (0..3).map(|_| gateway(&cfg)).collect();
    let alice = token("alice", serde_json::json!({}));
    assert_eq!(call(nodes[0].addr, "POST", "/exam/rules", Some(&alice)).status, 200);
    let mut granted = 0;
    let mut waves = 0;
    loop {
        waves += 1;
        assert!(waves <= 20, "the race did not settle");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..50)
                .map(|i| {
                    let (addr, t) = (nodes[i % 3].addr, alice.clone());
                    s.spawn(move || call(addr, "POST", "/exam/c1/submit", Some(&t)).status)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        granted += statuses.iter().filter(|&&s| s == 200).count();
        assert!(statuses.iter().all(|s| [200, 403, 500].contains(s)), "{statuses:?}");
        if !statuses.contains(&500) && !statuses.contains(&200) {
            break;
        }
    }
    assert_eq!(granted, 3, "exactly 3 submissions reached the backend and succeeded");
    let (k, v) = bearer();
    let _ = (k, v);
    // The counter in memcached says 3 too: failed ones were given back.
    let mut s = TcpStream::connect(mc.addr).unwrap();
    s.write_all(b"get ucon:alice:attempts\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains("\r\n3\r\n"), "{text}");
}

/// A backend that streams `chunks` chunks, one every `every`.
fn streaming_backend(chunks: usize, every: Duration) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n");
                for i in 0..chunks {
                    let line = format!("chunk {i}\n");
                    if c.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(every);
                }
                let _ = c.write_all(b"0\r\n\r\n");
            });
        }
    });
    (addr, h)
}

#[test]
fn an_ongoing_decision_revokes_a_stream() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let (stream, _h) = streaming_backend(50, Duration::from_millis(100));
    let mut cfg = config(&mc, dir.path(), &[stream], &policy());
    cfg.push_str("[[routes]]\npath_prefix = \"/stream\"\nupstream = \"app\"\naccess = \"ucon\"\nobject = { kind = \"stream\" }\n");
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let alice = token("alice", serde_json::json!({}));
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(format!("GET /stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // A teacher suspends alice: the mutable attribute changes in memcached.
    let mut m = TcpStream::connect(mc.addr).unwrap();
    m.write_all(b"set ucon:alice:suspended 0 0 1\r\n1\r\n").unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    let _ = c.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("chunk 1"), "the stream started: {text}");
    let tail: String = text.chars().rev().take(120).collect::<Vec<_>>().into_iter().rev().collect();
    assert!(!text.contains("chunk 49") && !text.ends_with("0\r\n\r\n"), "the stream was cut, not completed: ...{tail}\n{}", gw.log_text());
    assert!(started.elapsed() < Duration::from_secs(4), "cut within the ongoing interval, not at the end");
    eventually(10, "the revoke is counted", || metric(admin, "switchyard_access_revocations_total", &[]) >= 1.0);
    assert!(gw.log_text().contains("suspended by a teacher"), "the revoke is logged with its reason");
    // A new usage is denied while suspended.
    let r = call(gw.addr, "GET", "/stream", Some(&alice));
    assert_eq!((r.status, r.body.contains("suspended by a teacher")), (403, true), "{r:?}");
}

#[test]
fn bad_policies_and_fallback_are_refused_at_check() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let b = backend("app", &[]);
    let with = |policy: &str, extra: &str| {
        let text = config(&mc, dir.path(), &[b.addr], policy).replace("[plugins.ucon]\n", &format!("[plugins.ucon]\n{extra}")).replace("{listen}", "127.0.0.1:1");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        check(&path)
    };
    let (ok, out) = with(&policy().replace("teacher = { inherits = [\"student\"]", "teacher = { inherits = [\"head\"]").replace("nanjing = {", "head = { inherits = [\"teacher\"] }\nnanjing = {"), "");
    assert!(!ok && out.contains("inheritance cycle"), "{out}");
    let (ok, out) = with(&policy().replace("conditions = [\"campus\"]", "conditions = [\"nowhere\"]"), "");
    assert!(!ok && out.contains("rules[3].conditions: unknown condition \"nowhere\""), "{out}");
    let (ok, out) = with(&policy(), "on_error = \"fallback\"\n");
    assert!(!ok && out.contains("is refused for an access plugin"), "{out}");
    let (ok, out) = with(&policy(), "");
    assert!(ok, "the good policy passes: {out}");
}

#[test]
fn a_down_attribute_store_or_a_trapping_plugin_denies() {
    let mut mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let b = backend("app", &[]);
    let mut cfg = config(&mc, dir.path(), &[b.addr], &policy());
    cfg.push_str(&format!(
        "[plugins.trap]\npath = {:?}\nconfig = {{ mode = \"trap\" }}\n[[routes]]\npath_prefix = \"/trap\"\nupstream = \"app\"\naccess = \"trap\"\n",
        plugin("misbehave_access").to_string_lossy()
    ));
    let gw = gateway(&cfg);
    let alice = token("alice", serde_json::json!({}));
    assert_eq!(call(gw.addr, "GET", "/paper/c1", Some(&alice)).status, 200);
    mc.stop();
    let r = call(gw.addr, "GET", "/paper/c1", Some(&alice));
    assert_eq!(r.status, 503, "fail-closed: {r:?}");
    assert!(r.body.contains("attribute store"), "{}", r.body);
    mc.restart();
    eventually(20, "served again once memcached is back", || call(gw.addr, "GET", "/paper/c1", Some(&alice)).status == 200);
    let r = call(gw.addr, "GET", "/trap", Some(&alice));
    assert_eq!(r.status, 503, "a trapping plugin denies: {r:?}");
    assert!(r.body.contains("access check unavailable"), "{}", r.body);
}

/// Keys made for one test with the `openssl` CLI: PEM public keys for the
/// gateway, DER private keys for signing (what `jsonwebtoken` takes
/// without its `use_pem` feature).
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!("openssl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
                Err(e) => panic!("the openssl CLI is needed to make test keys ({e}); install it: apt-get install openssl"),
            }
        };
        for rsa in ["rsa", "rsa2"] {
            openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &format!("{rsa}.pem")]);
            openssl(&["pkey", "-in", &format!("{rsa}.pem"), "-pubout", "-out", &format!("{rsa}.pub.pem")]);
            openssl(&["rsa", "-in", &format!("{rsa}.pem"), "-traditional", "-outform", "DER", "-out", &format!("{rsa}.der")]);
        }
        for (ec, curve) in [("ec", "P-256"), ("p384", "P-384")] {
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", &format!("ec_paramgen_curve:{curve}"), "-out", &format!("{ec}.pem")]);
            openssl(&["pkey", "-in", &format!("{ec}.pem"), "-pubout", "-out", &format!("{ec}.pub.pem")]);
            openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &format!("{ec}.pem"), "-outform", "DER", "-out", &format!("{ec}.der")]);
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

const KEY_A: &str = "rotation-key-a-0123456789abcdefghijkl";
const KEY_B: &str = "rotation-key-b-0123456789abcdefghijkl";

/// Claims valid now for the issuer and audience of `keyed_config`, with `extra` merged over.
fn claims_now(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({ "sub": "vi", "roles": ["viewer"], "exp": now_s() + 600, "iss": "https://idp.test", "aud": "exam-api" });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(&k);
        } else {
            c[k] = v;
        }
    }
    c
}

fn signed(alg: jsonwebtoken::Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, &claims, key).unwrap()
}

/// The rbac plugin on `/doc`, subjects from `[access]` = `access`.
fn keyed_config(b: SocketAddr, access: &str) -> String {
    format!(
        "{SERVER}[access]\n{access}\n[plugins.rbac]\npath = {:?}\nconfig = {{ grants = {{ viewer = [\"read:doc\"] }} }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{b}\" }}]\n\
         [[routes]]\npath_prefix = \"/doc\"\nupstream = \"app\"\naccess = \"rbac\"\nobject = {{ kind = \"doc\" }}\n",
        plugin("access_rbac").to_string_lossy()
    )
}

fn assert_answers(gw: SocketAddr, cases: &[(&str, &str, u16, &str)]) {
    for (what, token, status, reason) in cases {
        let r = call(gw, "GET", "/doc", Some(token));
        assert_eq!(r.status, *status, "{what}: {r:?}");
        assert!(r.body.contains(reason), "{what}: the reason {reason:?} is not in {:?}", r.body);
        for internal in ["JSON error", "InvalidAlgorithm", "variant", "ErrorKind"] {
            assert!(!r.body.contains(internal), "{what}: library internals in {:?}", r.body);
        }
    }
}

#[test]
fn tokens_are_checked_in_full_time_issuer_audience_and_the_key_their_kid_names() {
    let keys = Keys::generate();
    let b = backend("app", &[]);
    let access = format!(
        "audience = \"exam-api\"\nissuer = \"https://idp.test\"\n\
         [[access.keys]]\nkid = \"hs-a\"\nalg = \"HS256\"\nsecret = \"{KEY_A}\"\n\
         [[access.keys]]\nkid = \"hs-b\"\nalg = \"HS256\"\nsecret = \"{KEY_B}\"\n\
         [[access.keys]]\nkid = \"rsa1\"\nalg = \"RS256\"\npublic_key_file = {:?}\n\
         [[access.keys]]\nkid = \"ec1\"\nalg = \"ES256\"\npublic_key_file = {:?}\n",
        keys.path("rsa.pub.pem").to_string_lossy(),
        keys.path("ec.pub.pem").to_string_lossy()
    );
    let gw = gateway(&keyed_config(b.addr, &access));
    let (a, bk) = (EncodingKey::from_secret(KEY_A.as_bytes()), EncodingKey::from_secret(KEY_B.as_bytes()));
    let rsa = EncodingKey::from_rsa_der(&keys.read("rsa.der"));
    let rsa2 = EncodingKey::from_rsa_der(&keys.read("rsa2.der"));
    let ec = EncodingKey::from_ec_der(&keys.read("ec.der"));
    let hs = |kid: Option<&str>, key: &EncodingKey, extra: serde_json::Value| signed(jsonwebtoken::Algorithm::HS256, kid, key, claims_now(extra));
    let none = serde_json::Value::Null;
    let (now, hour) = (now_s(), serde_json::json!(now_s() + 3600));
    let alg_none = format!("{}.{}.", base64_url(r#"{"alg":"none","typ":"JWT"}"#), base64_url(&claims_now(none.clone()).to_string()));
    let hs384 = signed(jsonwebtoken::Algorithm::HS384, Some("hs-a"), &a, claims_now(none.clone()));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("kid hs-a, key A", hs(Some("hs-a"), &a, none.clone()), 200, ""),
        ("rotation: kid hs-b, key B", hs(Some("hs-b"), &bk, none.clone()), 200, ""),
        ("no kid: every key tried", hs(None, &bk, none.clone()), 200, ""),
        ("kid of A, signed with B", hs(Some("hs-a"), &bk, none.clone()), 401, "invalid token: signature does not verify"),
        ("unknown kid", hs(Some("hs-z"), &a, none.clone()), 401, "invalid token: no key with kid \"hs-z\""),
        ("RS256 from a PEM file", signed(jsonwebtoken::Algorithm::RS256, Some("rsa1"), &rsa, claims_now(none.clone())), 200, ""),
        ("RS256 without a kid", signed(jsonwebtoken::Algorithm::RS256, None, &rsa, claims_now(none.clone())), 200, ""),
        ("RS256, another RSA key", signed(jsonwebtoken::Algorithm::RS256, Some("rsa1"), &rsa2, claims_now(none.clone())), 401, "invalid token: signature does not verify"),
        ("ES256 from a PEM file", signed(jsonwebtoken::Algorithm::ES256, Some("ec1"), &ec, claims_now(none.clone())), 200, ""),
        ("nbf an hour ahead", hs(Some("hs-a"), &a, serde_json::json!({ "nbf": hour })), 401, "invalid token: not valid yet (nbf "),
        ("nbf now", hs(Some("hs-a"), &a, serde_json::json!({ "nbf": now, "iat": now })), 200, ""),
        ("iat an hour ahead", hs(Some("hs-a"), &a, serde_json::json!({ "iat": hour })), 401, "invalid token: issued in the future (iat "),
        ("expired", hs(Some("hs-a"), &a, serde_json::json!({ "exp": now - 10 })), 401, "invalid token: expired (exp "),
        ("no aud", hs(Some("hs-a"), &a, serde_json::json!({ "aud": null })), 401, "invalid token: missing claim \"aud\""),
        ("another aud", hs(Some("hs-a"), &a, serde_json::json!({ "aud": "billing" })), 401, "invalid token: claim \"aud\" does not include \"exam-api\""),
        ("aud in a list", hs(Some("hs-a"), &a, serde_json::json!({ "aud": ["billing", "exam-api"] })), 200, ""),
        ("no iss", hs(Some("hs-a"), &a, serde_json::json!({ "iss": null })), 401, "invalid token: missing claim \"iss\""),
        ("another iss", hs(Some("hs-a"), &a, serde_json::json!({ "iss": "https://evil.test" })), 401, "invalid token: claim \"iss\" is not \"https://idp.test\""),
        ("alg none", alg_none, 401, "invalid token: alg \"none\" is refused (unsigned token)"),
        ("HS384", hs384, 401, "invalid token: alg \"HS384\" is not accepted (keys here: HS256, RS256, ES256)"),
        ("not a JWT", "x.y.z".into(), 401, "invalid token: not a JWT ("),
        ("two parts", "abc.def".into(), 401, "invalid token: not a JWT (expected 3 dot-separated parts, found 2)"),
    ];
    let cases: Vec<(&str, &str, u16, &str)> = cases.iter().map(|(w, t, s, r)| (*w, t.as_str(), *s, *r)).collect();
    assert_answers(gw.addr, &cases);
}

#[test]
fn an_rs256_public_key_never_verifies_an_hs256_token_signed_with_it() {
    let keys = Keys::generate();
    let b = backend("app", &[]);
    // The classic confusion attack: the public key is public, so an attacker
    // signs HS256 with its PEM bytes as the secret and hopes the verifier
    // lets the token's alg pick how the key is used.
    let pem = keys.read("rsa.pub.pem");
    // No audience or issuer configured here: the tokens name none.
    let plain = || claims_now(serde_json::json!({ "aud": null, "iss": null }));
    let attack = |kid: Option<&str>| signed(jsonwebtoken::Algorithm::HS256, kid, &EncodingKey::from_secret(&pem), plain());
    let rs_only = format!("[[access.keys]]\nkid = \"rsa1\"\nalg = \"RS256\"\npublic_key_file = {:?}\n", keys.path("rsa.pub.pem").to_string_lossy());
    let gw = gateway(&keyed_config(b.addr, &rs_only));
    let genuine = signed(jsonwebtoken::Algorithm::RS256, Some("rsa1"), &EncodingKey::from_rsa_der(&keys.read("rsa.der")), plain());
    assert_answers(
        gw.addr,
        &[
            ("the genuine RS256 token", &genuine, 200, ""),
            ("HS256 signed with the PEM, kid of the RSA key", &attack(Some("rsa1")), 401, "invalid token: alg \"HS256\" is not accepted (keys here: RS256)"),
            ("HS256 signed with the PEM, no kid", &attack(None), 401, "invalid token: alg \"HS256\" is not accepted (keys here: RS256)"),
        ],
    );
    // With HS256 secrets configured too, the RSA key still only verifies RS256.
    let mixed = format!("jwt_keys = [\"{JWT_KEY}\"]\n{rs_only}");
    let gw = gateway(&keyed_config(b.addr, &mixed));
    assert_answers(
        gw.addr,
        &[
            ("a jwt_keys token", &token("vi", serde_json::json!({ "roles": ["viewer"] })), 200, ""),
            ("HS256 with the PEM, kid of the RSA key", &attack(Some("rsa1")), 401, "invalid token: key \"rsa1\" verifies RS256 tokens only, this one says \"HS256\""),
            ("HS256 with the PEM, no kid", &attack(None), 401, "invalid token: signature does not verify"),
            ("an unknown kid falls back to jwt_keys", &signed(jsonwebtoken::Algorithm::HS256, Some("old"), &EncodingKey::from_secret(JWT_KEY.as_bytes()), plain()), 200, ""),
            (
                "an aud with no [access] audience",
                &signed(jsonwebtoken::Algorithm::HS256, None, &EncodingKey::from_secret(JWT_KEY.as_bytes()), claims_now(serde_json::json!({ "iss": null }))),
                401,
                "invalid token: claim \"aud\" is set, and this gateway has no [access] audience to match it",
            ),
        ],
    );
}

#[test]
fn token_keys_are_checked_at_load_with_the_key_path_and_why() {
    let keys = Keys::generate();
    std::fs::write(keys.path("garbage.pem"), "not a key at all\n").unwrap();
    let write = |access: &str| {
        let path = keys.path("switchyard.toml");
        std::fs::write(&path, format!("{SERVER}[access]\n{access}").replace("{listen}", "127.0.0.1:1")).unwrap();
        check(&path)
    };
    // Paths relative to the config file.
    let (ok, out) = write(
        "audience = \"api\"\nissuer = \"https://idp.test\"\n\
         [[access.keys]]\nkid = \"r\"\nalg = \"RS256\"\npublic_key_file = \"rsa.pub.pem\"\n\
         [[access.keys]]\nkid = \"e\"\nalg = \"ES256\"\npublic_key_file = \"ec.pub.pem\"\n\
         [[access.keys]]\nkid = \"h\"\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    assert!(ok, "a good key list passes: {out}");
    let (ok, out) = write(
        "audience = \"\"\n\
         [[access.keys]]\nkid = \"short\"\nalg = \"HS256\"\nsecret = \"too-short\"\n\
         [[access.keys]]\nkid = \"short\"\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [[access.keys]]\nkid = \"384\"\nalg = \"HS384\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [[access.keys]]\nkid = \"gone\"\nalg = \"RS256\"\npublic_key_file = \"nope.pem\"\n\
         [[access.keys]]\nkid = \"junk\"\nalg = \"RS256\"\npublic_key_file = \"garbage.pem\"\n\
         [[access.keys]]\nkid = \"private\"\nalg = \"RS256\"\npublic_key_file = \"rsa.pem\"\n\
         [[access.keys]]\nkid = \"ec-as-rsa\"\nalg = \"RS256\"\npublic_key_file = \"ec.pub.pem\"\n\
         [[access.keys]]\nkid = \"p384\"\nalg = \"ES256\"\npublic_key_file = \"p384.pub.pem\"\n\
         [[access.keys]]\nkid = \"rs-secret\"\nalg = \"RS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [[access.keys]]\nkid = \"hs-file\"\nalg = \"HS256\"\npublic_key_file = \"rsa.pub.pem\"\n",
    );
    assert!(!ok, "{out}");
    // `check` runs in the config's directory: the paths print as written.
    for want in [
        "line 5: access.audience: is empty".to_string(),
        "access.keys[0].secret: is 9 bytes; an HS256 key needs at least 32".into(),
        "access.keys[1].kid: \"short\" is also access.keys[0].kid".into(),
        "access.keys[2].alg: \"HS384\" is not HS256, RS256 or ES256".into(),
        "access.keys[3].public_key_file: nope.pem: No such file".into(),
        "access.keys[4].public_key_file: garbage.pem: not PEM (no -----BEGIN line)".into(),
        "access.keys[5].public_key_file: rsa.pem: holds a private key".into(),
        "access.keys[6].public_key_file: ec.pub.pem: not an RSA public key".into(),
        "access.keys[7].public_key_file: p384.pub.pem: not a P-256 key".into(),
        "access.keys[8].secret: an RS256 key is a public key: set public_key_file".into(),
        "access.keys[9].public_key_file: an HS256 key is a shared secret".into(),
    ] {
        assert!(out.contains(&want), "{want:?} is not in:\n{out}");
    }
}
