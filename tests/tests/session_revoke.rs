//! "Sign this user out everywhere": a user's sessions on three gateway
//! nodes and two strategies (centralized in memcached, replicated) are
//! listed and revoked with one admin call; every cookie of theirs then
//! reads nothing on every node, their long download on another node is
//! cut, and another user is untouched; concurrent logins of one user on
//! every node are all indexed. Real gateways, real memcached, the
//! demo cart as the backend.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::nodes::Nodes;
use switchyard_tests::*;

const KEY: &str = "test-session-signing-key-0123456789abcdef";
/// Chunks of the long download, one every [`EVERY`]: far longer than the test.
const CHUNKS: usize = 3000;
const EVERY: Duration = Duration::from_millis(50);

/// Two strategies on one upstream of demo carts, by host; `/download` on
/// either host streams from the slow backend under the same strategy.
fn base(mc: &Memcached, carts: &[Proc], stream: SocketAddr) -> String {
    let list: Vec<String> = carts.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    let mut cfg = format!(
        "{SERVER}\n[session]\nkeys = [\"{KEY}\"]\n[session.central]\nservers = [\"{}\"]\n\
         {}{}\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n\
         [[upstreams]]\nname = \"stream\"\nbackends = [{{ address = \"{stream}\" }}]\nread_timeout_ms = 60000\nhealth = {{ check = \"none\" }}\n",
        mc.addr,
        plugin_table("central", "session_centralized", "on_error = \"fail-closed\"\nlimits = { deadline_ms = 500 }"),
        plugin_table("repl", "session_replicated", "on_error = \"fail-closed\"\nlimits = { deadline_ms = 500 }"),
        list.join(", "),
    );
    for (host, plugin) in [("central.test", "central"), ("repl.test", "repl")] {
        cfg.push_str(&format!("[[routes]]\nhost = \"{host}\"\nupstream = \"app\"\nsession = \"{plugin}\"\n"));
        cfg.push_str(&format!("[[routes]]\nhost = \"{host}\"\npath_prefix = \"/download\"\nupstream = \"stream\"\nsession = \"{plugin}\"\n"));
    }
    cfg
}

/// A backend that answers every request with a chunked body that takes
/// minutes: one line every [`EVERY`], then `done`.
fn streaming_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n");
                for i in 0..CHUNKS {
                    let line = format!("chunk {i}\n");
                    if c.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(EVERY);
                }
                let _ = c.write_all(b"5\r\ndone\n\r\n0\r\n\r\n");
            });
        }
    });
    addr
}

/// One user agent on one site (`Host`), with its cookie jar.
struct User {
    host: &'static str,
    cookies: BTreeMap<String, String>,
}

impl User {
    fn new(host: &'static str) -> Self {
        Self { host, cookies: BTreeMap::new() }
    }

    fn cookie(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// One request on `node`: (status, body).
    fn send(&mut self, node: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(node).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.host, self.cookie());
        s.write_all(req.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response to {method} {path}: {text:?}"));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        for line in head.lines().filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:")) {
            let pair = line[11..].split(';').next().unwrap_or("").trim();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        (status, body.to_string())
    }

    /// Start a download on `node`: the connection, once its first chunk came.
    fn download(&self, node: SocketAddr) -> BufReader<TcpStream> {
        let mut s = TcpStream::connect(node).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(format!("GET /download HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\r\n", self.host, self.cookie()).as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while !line.starts_with("chunk 0") {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "the download ended before its first chunk");
        }
        r
    }
}

fn admin(node: SocketAddr, method: &str, query: &str) -> (u16, serde_json::Value) {
    let (k, v) = bearer();
    let r = request(node, method, &format!("/sessions{query}"), &[(k, v.as_str())], b"");
    (r.status, serde_json::from_str(&r.body).unwrap_or_else(|_| serde_json::json!({ "raw": r.body })))
}

/// Alice logged in four times (two sites on three nodes), Bob twice.
#[test]
fn one_admin_call_signs_a_user_out_on_every_node_and_strategy_and_cuts_their_download() {
    let mc = Memcached::start();
    let carts: Vec<Proc> = (0..3).map(|i| backend(&format!("b{i}"), &["--sessions", "header"])).collect();
    let nodes = Nodes::start(3, base(&mc, &carts, streaming_backend()));
    let at = |i: usize| nodes.addr(i);

    let mut alice: Vec<User> = vec![User::new("central.test"), User::new("repl.test"), User::new("central.test"), User::new("repl.test")];
    for (i, u) in alice.iter_mut().enumerate() {
        let (s, body) = u.send(at(i % 3), "POST", "/cart/login?user=alice");
        assert_eq!(s, 200, "alice's login {i}: {body}");
    }
    let mut bob = [User::new("central.test"), User::new("repl.test")];
    for (i, u) in bob.iter_mut().enumerate() {
        assert_eq!(u.send(at(i), "POST", "/cart/login?user=bob").0, 200);
    }
    // Every session is used on every node (the replicated ones once their
    // login has reached that node).
    for u in alice.iter_mut().chain(bob.iter_mut()) {
        for n in 0..3 {
            eventually(10, "a session reads on every node", || u.send(at(n), "GET", "/cart").0 == 200);
        }
    }

    // Listed from any node: every session once, by prefix, strategy and node.
    let listed = |n: usize, who: &str| admin(nodes.admin(n), "GET", &format!("?principal={who}")).1;
    eventually(10, "alice's 4 sessions listed", || listed(2, "alice")["sessions"].as_array().unwrap().len() == 4);
    let l = listed(2, "alice");
    assert_eq!(l["errors"], serde_json::json!([]), "{l}");
    let strategies: Vec<&str> = l["sessions"].as_array().unwrap().iter().map(|s| s["strategy"].as_str().unwrap()).collect();
    assert_eq!(strategies.iter().filter(|s| **s == "central").count(), 2, "{l}");
    assert_eq!(strategies.iter().filter(|s| **s == "repl").count(), 2, "{l}");
    for s in l["sessions"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        assert!(id.chars().count() == 9 && id.ends_with('…'), "only a prefix of the id is shown: {s}");
        assert!(s["node"].as_u64().is_some_and(|n| (1..=3).contains(&n)), "{s}");
        assert!(s["created"].as_u64().unwrap() <= s["last_seen"].as_u64().unwrap(), "{s}");
    }
    eventually(10, "bob's 2 sessions listed", || listed(0, "bob")["sessions"].as_array().unwrap().len() == 2);

    // Long downloads on node 3: alice's (replicated site) and bob's.
    let mut alice_dl = alice[1].download(at(2));
    let mut bob_dl = bob[1].download(at(2));

    // One call on node 1.
    let (s, r) = admin(nodes.admin(0), "DELETE", "?principal=alice");
    assert_eq!(s, 200, "{r}");
    assert_eq!((r["revoked"].as_u64(), &r["errors"]), (Some(4), &serde_json::json!([])), "{r}");

    // Alice's download on node 3 is cut: the stream ends before `done`.
    let mut rest = String::new();
    let ended = alice_dl.read_to_string(&mut rest);
    let timed_out = ended.as_ref().is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!timed_out, "alice's download still runs 30 s after the revoke");
    assert!(!rest.contains("done") && !rest.ends_with("0\r\n\r\n"), "alice's download was cut, not finished: ...{}", &rest[rest.len().saturating_sub(200)..]);
    // Bob's goes on.
    for _ in 0..5 {
        let mut line = String::new();
        assert!(bob_dl.read_line(&mut line).unwrap() > 0, "bob's download goes on");
    }

    // Every alice cookie reads nothing on every node, for good.
    for (i, u) in alice.iter_mut().enumerate() {
        for n in 0..3 {
            eventually(10, "a revoked session reads nothing", || u.send(at(n), "GET", "/cart").0 == 401);
            let (s, body) = u.send(at(n), "GET", "/cart");
            assert_eq!(s, 401, "alice's session {i} on node {}: {body}", n + 1);
        }
    }
    assert_eq!(listed(1, "alice")["sessions"], serde_json::json!([]));
    // Bob is untouched everywhere.
    for u in bob.iter_mut() {
        for n in 0..3 {
            let (s, body) = u.send(at(n), "GET", "/cart");
            assert!(s == 200 && body.contains("\"user\":\"bob\""), "bob on node {}: {s} {body}", n + 1);
        }
    }
    assert_eq!(listed(1, "bob")["sessions"].as_array().unwrap().len(), 2);
    // Alice can log in again: a new session, listed alone.
    let mut again = User::new("central.test");
    assert_eq!(again.send(at(1), "POST", "/cart/login?user=alice").0, 200);
    assert_eq!(again.send(at(2), "GET", "/cart").0, 200);
    assert_eq!(listed(0, "alice")["sessions"].as_array().unwrap().len(), 1);

    // The CLI does the same through the admin API.
    let out = std::process::Command::new(switchyard_bin())
        .args(["sessions", "list", "--admin", &format!("http://{}", nodes.admin(2)), "--token", ADMIN_TOKEN, "--principal", "bob"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "{text}");
    let out = std::process::Command::new(switchyard_bin())
        .args(["sessions", "revoke", "--admin", &format!("http://{}", nodes.admin(2)), "--token", ADMIN_TOKEN, "--principal", "bob"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for n in 0..3 {
        eventually(10, "bob is signed out by the CLI", || bob[0].send(at(n), "GET", "/cart").0 == 401 && bob[1].send(at(n), "GET", "/cart").0 == 401);
    }
    drop(carts);
}

#[test]
fn the_sessions_endpoint_names_bad_input_and_wants_the_token() {
    let mc = Memcached::start();
    let carts = vec![backend("b0", &["--sessions", "header"])];
    let (_gw, adm) = gateway_with_admin(&base(&mc, &carts, streaming_backend()), "");
    for (query, why) in [
        ("", "principal: missing"),
        ("?principal=", "principal: empty"),
        ("?principal=a%0Ab", "control characters"),
        ("?principal=%zz", "percent-encoding"),
        ("?user=alice", "unknown query parameter"),
    ] {
        for method in ["GET", "DELETE"] {
            let (s, v) = admin(adm, method, query);
            assert_eq!(s, 400, "{method} {query}: {v}");
            assert!(v["error"].as_str().unwrap().contains(why), "{method} {query}: {v}");
        }
    }
    let r = request(adm, "DELETE", "/sessions?principal=alice", &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(adm, "GET", "/sessions?principal=alice", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let (s, v) = admin(adm, "GET", "?principal=nobody");
    assert_eq!((s, &v["sessions"]), (200, &serde_json::json!([])), "{v}");
    let (s, v) = admin(adm, "POST", "?principal=nobody");
    assert_eq!(s, 405, "{v}");
}

/// Many logins of one user at once, on three nodes: none is lost from the
/// index (each node writes only its own list, one write at a time), so one
/// revoke ends them all.
#[test]
fn concurrent_logins_of_one_user_on_three_nodes_are_all_indexed_and_all_revoked() {
    const N: usize = 24;
    let mc = Memcached::start();
    let carts: Vec<Proc> = (0..2).map(|i| backend(&format!("b{i}"), &["--sessions", "header"])).collect();
    let nodes = Nodes::start(3, base(&mc, &carts, streaming_backend()));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| nodes.addr(i)).collect();
    let users: Vec<User> = std::thread::scope(|s| {
        let logins: Vec<_> = (0..N)
            .map(|i| {
                let node = addrs[i % 3];
                s.spawn(move || {
                    let mut u = User::new("central.test");
                    let (status, body) = u.send(node, "POST", "/cart/login?user=carol");
                    assert_eq!(status, 200, "{body}");
                    u
                })
            })
            .collect();
        logins.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (_, l) = admin(nodes.admin(1), "GET", "?principal=carol");
    assert_eq!(l["sessions"].as_array().unwrap().len(), N, "{l}");
    let (_, r) = admin(nodes.admin(2), "DELETE", "?principal=carol");
    assert_eq!(r["revoked"].as_u64(), Some(N as u64), "{r}");
    for mut u in users {
        for &a in &addrs {
            assert_eq!(u.send(a, "GET", "/cart").0, 401);
        }
    }
}
