//! The admin dashboard in a real browser (headless Chromium, driven over
//! the DevTools protocol): it signs in with a token from the URL fragment,
//! shows a backend go down and come back, and rolls a plugin back.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::*;
use tungstenite::{Message, WebSocket};

struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Self {
        let bin = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
            .unwrap_or_else(|| panic!("no Chromium found: install it with `apt-get install -y chromium` (scripts/test.sh does it)"));
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Chromium");
        let port = wait_for_port(profile.path());
        let pages: Value = serde_json::from_str(&get(format!("127.0.0.1:{port}").parse().unwrap(), "/json/list", &[]).body).expect("DevTools target list");
        let url = pages.as_array().unwrap().iter().find(|p| p["type"] == "page").and_then(|p| p["webSocketDebuggerUrl"].as_str()).expect("a page target").to_string();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools websocket");
        Self { child, ws, next_id: 1, _profile: profile }
    }

    /// Send one DevTools command and wait for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws.send(Message::text(json!({ "id": id, "method": method, "params": params }).to_string())).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().expect("DevTools answer") else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluate JavaScript in the page; its value as a string.
    fn eval(&mut self, js: &str) -> String {
        let r = self.call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true }));
        match &r["result"]["value"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    fn wait_for(&mut self, what: &str, js: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.eval(js);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the dashboard never showed {what}: `{js}` is {last:?}, wanted {want:?}");
    }
}

/// Chromium writes the port it chose to DevToolsActivePort.
fn wait_for_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(port) = std::fs::read_to_string(&file).ok().and_then(|t| t.lines().next()?.trim().parse().ok()) {
            return port;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Chromium did not open its DevTools port");
}

#[test]
fn the_dashboard_shows_health_live_and_rolls_back() {
    let port = free_port();
    let mut b1 = backend_on(port, "b1", &[]);
    let b2 = backend("b2", &[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", "pin_first", "watch_ms = 0\nlimits = { deadline_ms = 500 }"),
        upstream("web", Some("lb"), &[(&b1, 1), (&b2, 1)], "health = { check = \"tcp\", interval_ms = 200, timeout_ms = 200, rise = 1, fall = 1 }")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let (k, v) = bearer();
    for file in ["pin_last", "pin_first"] {
        let r = request(admin, "PUT", "/plugins/lb", &[(k, &v)], &std::fs::read(plugin(file)).unwrap());
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(get(gw.addr, "/", &[]).backend(), "b1");

    let mut browser = Browser::start();
    browser.call("Page.navigate", json!({ "url": format!("http://{admin}/dashboard#token={ADMIN_TOKEN}") }));
    let b1_health = format!("document.querySelector('[data-backend=\"{}\"]')?.dataset.health ?? ''", b1.addr);
    browser.wait_for("b1 up", &b1_health, "up");
    assert!(!browser.eval("location.href").contains(ADMIN_TOKEN), "the token left the address bar");

    b1.kill();
    browser.wait_for("b1 down", &b1_health, "down");
    let _b1_again = backend_on(port, "b1", &[]);
    browser.wait_for("b1 back up", &b1_health, "up");

    browser.wait_for("version 3", "document.querySelector('[data-plugin=\"lb\"]')?.dataset.version ?? ''", "3");
    browser.eval("document.querySelector('button[data-rollback=\"lb\"]').click(); 'clicked'");
    browser.wait_for("version 2 after the rollback", "document.querySelector('[data-plugin=\"lb\"]')?.dataset.version ?? ''", "2");
    let plugins: Value = serde_json::from_str(&get(admin, "/plugins", &[(k, &v)]).body).unwrap();
    assert_eq!(plugins[0]["version"], 2, "the API agrees: {plugins}");
    assert_eq!(get(gw.addr, "/", &[]).backend(), "b2", "version 2 (pin-last) serves");
    assert!(browser.eval("document.getElementById('status').textContent").contains("rolled back to version 2"));
}

/// The Sessions table counts sessions per strategy, and its form signs a
/// user out everywhere (admin `DELETE /sessions`).
#[test]
fn the_dashboard_counts_sessions_and_signs_a_user_out() {
    let mc = switchyard_tests::memcached::Memcached::start();
    let cart = backend("b1", &["--sessions", "header"]);
    let cfg = format!(
        "{SERVER}[session]\nkeys = [\"test-session-signing-key-0123456789abcdef\"]\n[session.central]\nservers = [\"{}\"]\n{}{}session = \"cart\"\n",
        mc.addr,
        // A wide deadline: Chromium shares the two cores with a debug build.
        plugin_table("cart", "session_centralized", "limits = { deadline_ms = 200 }"),
        upstream("web", None, &[(&cart, 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let mut users: Vec<_> = ["alice", "alice", "bob"].iter().map(|_| switchyard_tests::browser::Browser::new(gw.addr)).collect();
    for (u, name) in users.iter_mut().zip(["alice", "alice", "bob"]) {
        assert_eq!(u.json("POST", &format!("/cart/login?user={name}")).0, 200);
    }

    let mut browser = Browser::start();
    browser.call("Page.navigate", json!({ "url": format!("http://{admin}/dashboard#token={ADMIN_TOKEN}") }));
    browser.wait_for("3 cart sessions", "document.querySelector('[data-strategy=\"cart\"] td:last-child')?.textContent ?? ''", "3");
    browser.eval("window.confirm = () => true; document.getElementById('principal').value = 'alice'; document.querySelector('#revoke button').click(); 'sent'");
    browser.wait_for("the revoke's answer", "document.getElementById('status').textContent", "alice: 2 sessions ended, 0 responses cut here");
    browser.wait_for("bob's session left", "document.querySelector('[data-strategy=\"cart\"] td:last-child')?.textContent ?? ''", "1");
    let after: Vec<u16> = users.iter_mut().map(|u| u.json("GET", "/cart").0).collect();
    assert_eq!(after, [401, 401, 200], "alice is signed out, bob is not");
}

/// A running canary shows beside its baseline with both scorecards, and
/// its Promote button makes it the running version.
#[test]
fn the_dashboard_shows_a_canary_and_promotes_it() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let cfg = format!("{SERVER}{}{}", plugin_table("lb", "pin_last", "limits = { deadline_ms = 500 }"), upstream("web", Some("lb"), &[(&a, 1), (&b, 1)], ""));
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let (k, v) = bearer();
    let r = request(admin, "PUT", "/plugins/lb?canary=30", &[(k, &v)], &std::fs::read(plugin("pin_first")).unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..20 {
        get(gw.addr, "/", &[]);
    }
    let mut browser = Browser::start();
    browser.call("Page.navigate", json!({ "url": format!("http://{admin}/dashboard#token={ADMIN_TOKEN}") }));
    browser.wait_for("the canary panel", "document.querySelector('[data-plugin=\"lb\"] .canary')?.dataset.canary ?? ''", "running");
    let text = browser.eval("document.querySelector('[data-plugin=\"lb\"] .canary').textContent");
    assert!(text.contains("Canary v2 on 30 % of keys") && text.contains("baseline v1") && text.contains("canary v2"), "{text}");
    // One client address: one version routed all 20 requests, the other none.
    assert!(text.contains("requests routed") && text.contains("upstream p99"), "{text}");
    let routed_none = browser.eval("String(document.querySelectorAll('[data-plugin=\"lb\"] .canary td.muted').length)");
    assert_eq!(routed_none, "1", "{text}");
    browser.eval("document.querySelector('button[data-promote=\"lb\"]').click(); 'clicked'");
    browser.wait_for("version 2 after the promotion", "document.querySelector('[data-plugin=\"lb\"]')?.dataset.version ?? ''", "2");
    browser.wait_for("the last canary's outcome", "document.querySelector('[data-plugin=\"lb\"] .canary')?.dataset.canary ?? ''", "promoted");
    assert_eq!(get(gw.addr, "/", &[]).backend(), "a", "the canary (pin-first) serves everyone");
}

/// With `[fleet]`, each plugin shows what every node runs: a push made on
/// node 2 shows on node 1's dashboard for both nodes.
#[test]
fn the_dashboard_shows_what_each_fleet_node_runs() {
    use switchyard_tests::etcd::{Etcd, PASSWORD, USER};
    let etcd = Etcd::start(1);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let node = |name: &str| {
        let cfg = format!(
            "{SERVER}{}{}\n[fleet]\nendpoints = {}\nnode = \"{name}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            plugin_table("lb", "pin_last", "limits = { deadline_ms = 500 }"),
            upstream("web", Some("lb"), &[(&a, 1), (&b, 1)], ""),
            etcd.endpoints_toml()
        );
        gateway_with_admin(&cfg, "")
    };
    let ((_gw1, admin1), (gw2, admin2)) = (node("n1"), node("n2"));
    eventually(20, "node 2 reaches the store", || get(admin2, "/healthz", &[]).body.contains("store connected"));
    let (k, v) = bearer();
    let pushed = std::fs::read(plugin("pin_first")).unwrap();
    let r = request(admin2, "PUT", "/plugins/lb", &[(k, &v)], &pushed);
    assert_eq!(r.status, 200, "{r:?}");
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&pushed).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(get(gw2.addr, "/", &[]).backend(), "a");

    let mut browser = Browser::start();
    browser.call("Page.navigate", json!({ "url": format!("http://{admin1}/dashboard#token={ADMIN_TOKEN}") }));
    for n in ["n1", "n2"] {
        let js = format!("document.querySelector('[data-plugin=\"lb\"] .fleet tr[data-node=\"{n}\"]')?.dataset.sha ?? ''");
        browser.wait_for(&format!("{n} on the pushed version"), &js, &sha);
    }
    let text = browser.eval("document.querySelector('[data-plugin=\"lb\"] .fleet').textContent");
    assert!(text.contains("fleet record: push on n2") && text.contains("same as here") && !text.contains("differs"), "{text}");
}
