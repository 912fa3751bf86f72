//! The SDK README's examples, end to end: the rotating session strategy
//! (plugins/session-rotating: a new id every N requests, the old one reads
//! nothing) and the office-hours access policy (plugins/access-office-hours:
//! a window of hours, a per-user daily limit counted with store.add/cas),
//! plus store.add, store.get-versioned and store.cas through the real host
//! imports (plugins/testing/store-probe) on real memcached and MariaDB.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::nodes::Nodes;
use switchyard_tests::*;

const KEY: &str = "test-session-signing-key-0123456789abcdef";
const JWT_KEY: &str = "test-access-jwt-signing-key-0123456789abc";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `[session]` with memcached servers (and more, `extra`).
fn session(servers: &[&Memcached], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|m| format!("\"{}\"", m.addr)).collect();
    format!("[session]\nkeys = [\"{KEY}\"]\n[session.central]\nservers = [{}]\n{extra}\n", list.join(", "))
}

fn durable(db: &mariadb::Cluster) -> String {
    format!("[session.durable]\nurl = \"mysql://{}:{}@{}/{}\"\n", mariadb::APP_USER, mariadb::APP_PASSWORD, db.primary.addr(), mariadb::DB)
}

// ---- the rotating session strategy ----

fn rotating(stores: &str, plugin_config: &str, backends: &[Proc]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    format!(
        "{SERVER}\n{stores}\n[plugins.rot]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 500 }}\n[plugins.rot.config]\n{plugin_config}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[[routes]]\nupstream = \"app\"\nsession = \"rot\"\n",
        plugin("session_rotating").to_string_lossy(),
        list.join(", ")
    )
}

fn cart_backends() -> Vec<Proc> {
    (0..2).map(|i| backend(&format!("b{i}"), &["--sessions", "header"])).collect()
}

/// Log in, then every third request of the session answers with a new id;
/// each old id reads nothing from then on, the session itself goes on.
fn rotates_every_third_request(gws: &[SocketAddr]) {
    let mut user = Browser::new(gws[0]);
    let (s, v) = user.json("POST", "/cart/login?user=alice");
    assert_eq!(s, 200, "{v}");
    let mut seen = vec![user.cookies.clone()];
    for round in 0..3 {
        for i in 1..=3 {
            user.addr = gws[i % gws.len()];
            let before = user.cookies.clone();
            let (s, v) = if i == 1 { user.json("POST", &format!("/cart/add?item=r{round}")) } else { user.json("GET", "/cart") };
            assert_eq!((s, &v["user"]), (200, &serde_json::json!("alice")), "round {round}, request {i}: {v}");
            if i < 3 {
                assert_eq!(user.cookies, before, "round {round}, request {i}: the id stays until the third request");
            } else {
                assert_ne!(user.cookies, before, "round {round}: the third request moves the session to a new id");
                assert!(!seen.contains(&user.cookies), "round {round}: a fresh id");
                seen.push(user.cookies.clone());
            }
        }
        let (s, v) = Browser { cookies: seen[round].clone(), ..user.clone() }.json("GET", "/cart");
        assert_eq!(s, 401, "round {round}: the id before the rotation reads nothing: {v}");
    }
    let (s, v) = user.json("GET", "/cart");
    assert_eq!((s, &v["cart"]), (200, &serde_json::json!(["r0", "r1", "r2"])), "the session kept everything: {v}");
}

#[test]
fn a_rotating_session_moves_to_a_new_id_every_third_request_on_two_nodes() {
    let mc = Memcached::start();
    let bs = cart_backends();
    let cfg = rotating(&session(&[&mc], ""), "every = 3", &bs);
    let (a, b) = (gateway(&cfg), gateway(&cfg));
    rotates_every_third_request(&[a.addr, b.addr]);
}

#[test]
fn a_rotating_session_in_mariadb_moves_to_a_new_id_every_third_request() {
    let db = mariadb::Cluster::start(0);
    let mc = Memcached::start();
    let bs = cart_backends();
    let gw = gateway(&rotating(&(session(&[&mc], "") + &durable(&db)), "every = 3\ntier = \"durable\"", &bs));
    rotates_every_third_request(&[gw.addr]);
}

#[test]
fn the_rotating_strategy_refuses_a_bad_every() {
    let mc = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    for (bad, says) in [("every = 0", "every: must be at least 1"), ("every = 3\nevry = 2", "evry")] {
        let cfg = rotating(&session(&[&mc], ""), bad, &[]).replace("backends = []", "backends = [{ address = \"127.0.0.1:9\" }]");
        let path = dir.path().join("rot.toml");
        std::fs::write(&path, cfg.replace("{listen}", "127.0.0.1:0")).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok && out.contains(says), "{bad}: {out}");
    }
}

// ---- the office-hours access policy ----

fn token(sub: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": now_s() + 600 });
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap()
}

/// `/open`: a 3-hour window around now with a daily limit; `/closed`: a
/// window that leaves out the hour before now to the hour after.
fn office(stores: &str, tier: &str, limit: u64, backend: &Proc) -> String {
    let h = (now_s() / 3600) % 24;
    let plugin_path = plugin("access_office_hours");
    format!(
        "{SERVER}\n{stores}\n[access]\njwt_keys = [\"{JWT_KEY}\"]\n\
         [plugins.open]\npath = {plugin_path:?}\nlimits = {{ deadline_ms = 500 }}\nconfig = {{ open_hour = {}, close_hour = {}, daily_limit = {limit}, tier = \"{tier}\" }}\n\
         [plugins.closed]\npath = {plugin_path:?}\nconfig = {{ open_hour = {}, close_hour = {} }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/open\"\nupstream = \"app\"\naccess = \"open\"\nobject = {{ kind = \"doc\" }}\n\
         [[routes]]\npath_prefix = \"/closed\"\nupstream = \"app\"\naccess = \"closed\"\nobject = {{ kind = \"doc\" }}\n",
        (h + 23) % 24,
        (h + 2) % 24,
        (h + 2) % 24,
        (h + 22) % 24,
        backend.addr
    )
}

fn call(gw: SocketAddr, path: &str, sub: &str) -> Response {
    let auth = format!("Bearer {}", token(sub));
    request(gw, "GET", path, &[("Authorization", &auth)], b"")
}

/// 16 requests of one user at once over `gws`, limit 5: exactly 5 pass,
/// whatever node they reach; another user still has all of theirs; the
/// closed window refuses everyone.
fn office_hours_and_a_daily_limit(gws: &[SocketAddr]) {
    let answers: Vec<Response> = (0..16)
        .map(|i| {
            let gw = gws[i % gws.len()];
            std::thread::spawn(move || call(gw, "/open/report", "alice"))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let permitted = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(permitted, 5, "exactly the daily limit is permitted: {:?}", answers.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 403, "{r:?}");
        assert!(r.body.contains("daily limit of 5 requests reached"), "{:?}", r.body);
    }
    assert_eq!(call(gws[0], "/open/report", "alice").status, 403, "still over the limit");
    for i in 0..5 {
        let r = call(gws[i % gws.len()], "/open/report", "bob has spaces");
        assert_eq!(r.status, 200, "bob's limit is his own: {r:?}");
    }
    let r = call(gws[0], "/closed/report", "carol");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("outside office hours"), "{:?}", r.body);
    let anonymous = request(gws[0], "GET", "/open/report", &[], b"");
    assert_ne!(anonymous.status, 200, "{anonymous:?}");
}

#[test]
fn office_hours_and_a_daily_limit_counted_in_memcached_across_two_nodes() {
    let mc = Memcached::start();
    let b = backend("app", &[]);
    let cfg = office(&session(&[&mc], ""), "central", 5, &b);
    let (g1, g2) = (gateway(&cfg), gateway(&cfg));
    office_hours_and_a_daily_limit(&[g1.addr, g2.addr]);
}

#[test]
fn office_hours_and_a_daily_limit_counted_in_mariadb() {
    let db = mariadb::Cluster::start(0);
    let mc = Memcached::start();
    let b = backend("app", &[]);
    let cfg = office(&(session(&[&mc], "") + &durable(&db)), "durable", 5, &b);
    let (g1, g2) = (gateway(&cfg), gateway(&cfg));
    office_hours_and_a_daily_limit(&[g1.addr, g2.addr]);
}

#[test]
fn office_hours_and_a_daily_limit_counted_on_one_node() {
    let b = backend("app", &[]);
    let gw = gateway(&office("", "local", 5, &b));
    office_hours_and_a_daily_limit(&[gw.addr]);
}

// ---- store.add / get-versioned / cas through the host imports ----

fn probe_gateway(stores: &str) -> Proc {
    gateway(&probe_config(stores))
}

fn probe_config(stores: &str) -> String {
    format!(
        "{SERVER}\n{stores}\n[plugins.probe]\npath = {:?}\nlimits = {{ deadline_ms = 500 }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n[[routes]]\nupstream = \"app\"\nsession = \"probe\"\n",
        plugin("store_probe").to_string_lossy()
    )
}

/// One store call: `ok` or `error` as the plugin got it.
fn op(gw: SocketAddr, tier: &str, op: &str, key: &str, value: &str, version: &str) -> serde_json::Value {
    let h = [("x-op", op), ("x-tier", tier), ("x-key", key), ("x-value", value), ("x-version", version)];
    let r = request(gw, "GET", "/", &h, b"");
    assert_eq!(r.status, 200, "{op} {key}: {r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{op} {key}: {e}: {:?}", r.body))
}

fn ok(v: serde_json::Value) -> serde_json::Value {
    v.get("ok").cloned().unwrap_or_else(|| panic!("an error: {v}"))
}

fn version(gw: SocketAddr, tier: &str, key: &str) -> (String, String) {
    let v = ok(op(gw, tier, "get-versioned", key, "", ""));
    (v["value"].as_str().unwrap_or_else(|| panic!("{key} holds nothing: {v}")).to_string(), v["version"].as_str().unwrap().to_string())
}

/// What add and cas promise, on `tier`.
fn add_and_cas(gw: SocketAddr, tier: &str) {
    let t = tier;
    assert_eq!(ok(op(gw, t, "add", "k", "1", "")), true, "absent: stored");
    assert_eq!(ok(op(gw, t, "add", "k", "2", "")), false, "present: refused");
    assert_eq!(ok(op(gw, t, "get", "k", "", "")), "1");
    let (value, v1) = version(gw, t, "k");
    assert_eq!(value, "1");
    assert_eq!(version(gw, t, "k").1, v1, "a read is not a write");
    assert_eq!(ok(op(gw, t, "cas", "k", "2", &v1)), true, "the version read: written");
    assert_eq!(ok(op(gw, t, "cas", "k", "3", &v1)), false, "a stale version: refused");
    assert_eq!(ok(op(gw, t, "get", "k", "", "")), "2");
    let (_, v2) = version(gw, t, "k");
    assert_eq!(ok(op(gw, t, "set", "k", "x", "")), true);
    assert_eq!(ok(op(gw, t, "cas", "k", "4", &v2)), false, "a plain set in between: refused");
    assert_eq!(ok(op(gw, t, "get", "k", "", "")), "x");
    // Deleted since: refused; absent again: add works.
    let (_, v3) = version(gw, t, "k");
    assert_eq!(ok(op(gw, t, "delete", "k", "", "")), true);
    assert_eq!(ok(op(gw, t, "cas", "k", "5", &v3)), false, "deleted since: refused");
    assert_eq!(ok(op(gw, t, "add", "k", "6", "")), true, "absent again");
    // A retired key refuses both, and reads as absent.
    let (_, v4) = version(gw, t, "k");
    assert_eq!(ok(op(gw, t, "retire", "k", "", "")), true);
    assert_eq!(op(gw, t, "add", "k", "7", ""), serde_json::json!({ "error": "retired" }));
    assert_eq!(op(gw, t, "cas", "k", "7", &v4), serde_json::json!({ "error": "retired" }));
    assert_eq!(ok(op(gw, t, "get-versioned", "k", "", "")), serde_json::Value::Null);
    assert_eq!(ok(op(gw, t, "add", "other", "1", "")), true, "other keys are untouched");
    // The limits of set hold.
    let long = "k".repeat(251);
    assert!(op(gw, t, "add", &long, "1", "").get("error").is_some(), "a key over 250 bytes");
    // Concurrent increments through get-versioned + cas lose nothing.
    assert_eq!(ok(op(gw, t, "add", "n", "0", "")), true);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let tier = t.to_string();
            std::thread::spawn(move || {
                let mut lost = 0;
                for _ in 0..8 {
                    loop {
                        let (value, v) = version(gw, &tier, "n");
                        let next = (value.parse::<u64>().unwrap() + 1).to_string();
                        if ok(op(gw, &tier, "cas", "n", &next, &v)) == true {
                            break;
                        }
                        lost += 1;
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok(op(gw, t, "get", "n", "", "")), "48", "every increment once ({lost} lost races retried)");
}

#[test]
fn add_and_cas_in_memcached() {
    let mc = Memcached::start();
    let gw = probe_gateway(&session(&[&mc], ""));
    add_and_cas(gw.addr, "central");
}

#[test]
fn add_and_cas_in_mariadb() {
    let db = mariadb::Cluster::start(0);
    let gw = probe_gateway(&format!("[session]\nkeys = [\"{KEY}\"]\n{}", durable(&db)));
    add_and_cas(gw.addr, "durable");
}

#[test]
fn add_and_cas_on_the_local_tier() {
    let gw = probe_gateway(&format!("[session]\nkeys = [\"{KEY}\"]\n"));
    add_and_cas(gw.addr, "local");
}

/// On `replicated` add and cas decide on the node that runs them (the
/// same promises, node-local), and what they write reaches the other node.
#[test]
fn add_and_cas_on_the_replicated_tier_reach_every_node() {
    let nodes = Nodes::start(2, probe_config(&format!("[session]\nkeys = [\"{KEY}\"]\n")));
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    add_and_cas(a, "replicated");
    eventually(30, "node 2 has node 1's count", || op(b, "replicated", "get", "n", "", "")["ok"] == "48");
    let (_, v) = version(b, "replicated", "n");
    assert_eq!(ok(op(b, "replicated", "cas", "n", "49", &v)), true, "cas on node 2 with node 2's version");
    eventually(30, "node 1 has node 2's cas", || op(a, "replicated", "get", "n", "", "")["ok"] == "49");
    assert_eq!(ok(op(b, "replicated", "add", "n", "0", "")), false, "present on node 2 too");
    assert_eq!(op(b, "replicated", "add", "k", "0", ""), serde_json::json!({ "error": "retired" }), "node 1's retirement holds on node 2");
}

/// With two memcached servers each value has a backup copy: what add and
/// cas wrote survives the loss of either server, and cas goes on against
/// the server left.
#[test]
fn add_and_cas_in_memcached_write_the_backup_too() {
    let (mut a, b) = (Memcached::start(), Memcached::start());
    let gw = probe_gateway(&session(&[&a, &b], ""));
    let keys: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    for k in &keys {
        assert_eq!(ok(op(gw.addr, "central", "add", k, "1", "")), true);
        let (_, v) = version(gw.addr, "central", k);
        assert_eq!(ok(op(gw.addr, "central", "cas", k, "2", &v)), true);
    }
    a.stop();
    for k in &keys {
        assert_eq!(ok(op(gw.addr, "central", "get", k, "", "")), "2", "{k}: the cas reached the backup");
        assert_eq!(ok(op(gw.addr, "central", "add", k, "9", "")), false, "{k}: present on the server left");
        // A version names its server: one read while the dead server's
        // down mark lapsed may point cas at it (false); read again.
        let written = (0..5).any(|_| {
            let (value, v) = version(gw.addr, "central", k);
            assert_eq!(value, "2");
            ok(op(gw.addr, "central", "cas", k, "3", &v)) == true
        });
        assert!(written, "{k}: cas on the server left");
        assert_eq!(ok(op(gw.addr, "central", "get", k, "", "")), "3");
    }
    drop(b);
}

/// A retirement that expired frees its key: a set, an add and a cas
/// afterwards are kept, on every tier.
fn an_expired_retirement_frees_the_key(gw: SocketAddr, tier: &str) {
    let h = |op: &'static str, key: &'static str, value: &'static str, ttl: &'static str| {
        let r = request(gw, "GET", "/", &[("x-op", op), ("x-tier", tier), ("x-key", key), ("x-value", value), ("x-ttl", ttl)], b"");
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    for key in ["e-set", "e-add"] {
        assert_eq!(ok(h("set", key, "old", "")), true);
        assert_eq!(ok(h("retire", key, "", "1")), true);
    }
    // Past the 1 s retirement (memcached and MariaDB count whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(ok(h("set", "e-set", "new", "")), true);
    assert_eq!(ok(h("get", "e-set", "", "")), "new", "{tier}: the set was kept");
    assert_eq!(ok(h("add", "e-add", "new", "")), true, "{tier}: nothing live: added");
    let (value, v) = version(gw, tier, "e-add");
    assert_eq!(value, "new");
    assert_eq!(ok(op(gw, tier, "cas", "e-add", "newer", &v)), true);
    assert_eq!(ok(h("get", "e-add", "", "")), "newer");
}

#[test]
fn an_expired_retirement_frees_the_key_on_every_tier() {
    let db = mariadb::Cluster::start(0);
    let mc = Memcached::start();
    let gw = probe_gateway(&(session(&[&mc], "") + &durable(&db)));
    for tier in ["local", "central", "durable"] {
        an_expired_retirement_frees_the_key(gw.addr, tier);
    }
}
