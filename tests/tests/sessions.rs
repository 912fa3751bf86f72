//! Session strategies end to end: the real gateway with the sticky,
//! centralized and o-session plugins, real memcached (and MariaDB for the
//! durable tier), and demo backends running the cart and exam app.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const KEY: &str = "test-session-signing-key-0123456789abcdef";
const OTHER_KEY: &str = "another-gateways-signing-key-0123456789ab";

/// A gateway config: one upstream over `backends`, a catch-all route
/// whose session plugin is `file` with `plugin_config` (TOML lines).
fn config(mc: Option<&Memcached>, key: &str, file: &str, plugin_config: &str, backends: &[SocketAddr], extra: &str) -> String {
    let central = mc.map(|m| format!("[session.central]\nservers = [\"{}\"]\nlock_timeout_ms = 10000\n", m.addr)).unwrap_or_default();
    let list: Vec<String> = backends.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    format!(
        "{SERVER}\n[session]\nkeys = [\"{key}\"]\n{central}\n{extra}\n[plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 500 }}\n[plugins.sess.config]\n{plugin_config}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[[routes]]\nupstream = \"app\"\nsession = \"sess\"\n",
        plugin(file).to_string_lossy(),
        list.join(", ")
    )
}

fn backends(n: usize, mode: &str) -> Vec<Proc> {
    (0..n).map(|i| backend(&format!("b{i}"), &["--sessions", mode])).collect()
}

fn addrs(b: &[Proc]) -> Vec<SocketAddr> {
    b.iter().map(|p| p.addr).collect()
}

/// Log in and add 5 items; returns the backends that served the adds.
fn fill_cart(b: &mut Browser, user: &str) -> Vec<String> {
    let (s, v) = b.json("POST", &format!("/cart/login?user={user}"));
    assert_eq!(s, 200, "{v}");
    (0..5)
        .map(|i| {
            let (s, v) = b.json("POST", &format!("/cart/add?item={user}-{i}"));
            assert_eq!(s, 200, "{v}");
            v["backend"].as_str().unwrap().to_string()
        })
        .collect()
}

fn cart(b: &mut Browser) -> (u16, serde_json::Value) {
    b.json("GET", "/cart")
}

fn items(user: &str, n: usize) -> serde_json::Value {
    serde_json::json!((0..n).map(|i| format!("{user}-{i}")).collect::<Vec<_>>())
}

#[test]
fn centralized_cart_spreads_over_backends_and_survives_a_backend_and_a_gateway_restart() {
    let mc = Memcached::start();
    let mut bs = backends(3, "header");
    let cfg = config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), "");
    let gw = gateway(&cfg);
    let mut alice = Browser::new(gw.addr);
    let served = fill_cart(&mut alice, "alice");
    let distinct: std::collections::BTreeSet<_> = served.iter().collect();
    assert_eq!(distinct.len(), 3, "the adds were spread over every backend: {served:?}");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "{v}");
    // Kill the backend that served the last request: nothing is lost.
    let last = v["backend"].as_str().unwrap().to_string();
    let idx: usize = last[1..].parse().unwrap();
    bs[idx].kill();
    let (s, v) = b_add(&mut alice, "alice-5");
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["backend"], serde_json::json!(last));
    // Restart the gateway: the session lives in memcached.
    drop(gw);
    let gw = gateway(&cfg);
    alice.addr = gw.addr;
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"]), (200, &items("alice", 6)), "{v}");
}

fn b_add(b: &mut Browser, item: &str) -> (u16, serde_json::Value) {
    b.json("POST", &format!("/cart/add?item={item}"))
}

#[test]
fn sticky_keeps_a_user_on_one_backend_and_reports_the_loss_when_it_dies() {
    let mut bs = backends(3, "memory");
    let (gw, admin) = gateway_with_admin(&config(None, KEY, "session_sticky", "", &addrs(&bs), ""), "");
    let mut alice = Browser::new(gw.addr);
    let served = fill_cart(&mut alice, "alice");
    assert!(served.iter().all(|b| *b == served[0]), "every request stuck to one backend: {served:?}");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"], &v["backend"]), (200, &items("alice", 5), &serde_json::json!(served[0])), "{v}");
    assert!(alice.cookies.contains_key("sy_backend") && alice.cookies.contains_key("demo_sid"));
    // The pinned backend dies: the request moves, the in-memory cart is lost,
    // the move is counted, and the cookie now names the new backend.
    let idx: usize = served[0][1..].parse().unwrap();
    bs[idx].kill();
    let before = alice.cookies["sy_backend"].clone();
    let (s, v) = cart(&mut alice);
    assert_eq!(s, 401, "the backend's in-memory session is gone: {v}");
    let moved_to = v["backend"].as_str().unwrap().to_string();
    assert_ne!(moved_to, served[0]);
    assert_ne!(alice.cookies["sy_backend"], before, "the cookie was rewritten");
    assert!(metric(admin, "switchyard_session_pin_lost_total", &[]) >= 1.0);
    assert!(metric(admin, "switchyard_plugin_counter", &[("name", "sessions_moved")]) >= 1.0);
    // And it sticks to the new one.
    fill_cart(&mut alice, "alice");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["backend"]), (200, &serde_json::json!(moved_to)), "{v}");
}

/// The sticky cookie a response set, if any.
fn sticky_set(r: &Response) -> Option<&str> {
    r.headers.iter().find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("sy_backend=")).map(|(_, v)| v.as_str())
}

#[test]
fn sticky_calls_after_response_only_when_its_cookie_needs_writing_and_renews_it_at_half_life() {
    let bs = backends(3, "memory");
    let (gw, admin) = gateway_with_admin(&config(None, KEY, "session_sticky", "ttl_s = 6", &addrs(&bs), ""), "");
    let afters = || metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("hook", "after-response")]);
    let mut alice = Browser::new(gw.addr);
    let first = alice.send("GET", "/", &[], b"");
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(sticky_set(&first).is_some(), "a new visitor gets the cookie: {:?}", first.headers);
    let befores = || metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("hook", "before-request")]);
    let hits = || metric(admin, "switchyard_session_memo_total", &[("outcome", "hit")]);
    let (calls, cookie, called) = (afters(), alice.cookies["sy_backend"].clone(), befores());
    assert_eq!(calls, 1.0, "one after-response so far");
    // Served by the backend its fresh cookie names (more than 3 of its 6 s
    // left, at least 2 s from now): no call, no cookie. The first such
    // request calls before-request, which lets the gateway repeat its
    // forward (a memo with nothing read): the other four call nothing.
    for _ in 0..5 {
        let r = alice.send("GET", "/", &[], b"");
        assert_eq!((r.status, r.backend()), (200, first.backend()), "{}", r.body);
        assert_eq!(sticky_set(&r), None, "nothing to write while the cookie is fresh");
    }
    assert_eq!(afters(), calls, "after-response was skipped");
    assert_eq!((befores(), hits()), (called + 1.0, 4.0), "one before-request call, then repeated from the memo");
    // Past half its lifetime the cookie is signed again, naming the same
    // backend, so an active user never loses the pin.
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    let r = alice.send("GET", "/", &[], b"");
    assert_eq!((r.status, r.backend()), (200, first.backend()), "{}", r.body);
    assert!(sticky_set(&r).is_some(), "renewed at half life: {:?}", r.headers);
    assert_ne!(alice.cookies["sy_backend"], cookie);
    assert_eq!(afters(), calls + 1.0);
    let r = alice.send("GET", "/", &[], b"");
    assert_eq!((sticky_set(&r), afters()), (None, calls + 1.0), "fresh again");
    // The renewed cookie is remembered anew; the old one's memo never
    // served it (another cookie) and the due request called the plugin.
    let r = alice.send("GET", "/", &[], b"");
    assert_eq!((r.status, r.backend(), sticky_set(&r)), (200, first.backend(), None), "{}", r.body);
    assert_eq!((befores(), hits()), (called + 3.0, 5.0), "the due request and the renewed cookie's first call the plugin");
    // The first cookie, past its lifetime, is refused as expired and replaced.
    let expired = || metric(admin, "switchyard_session_tokens_rejected_total", &[("reason", "expired")]);
    let before = expired();
    let mut late = Browser::new(gw.addr);
    late.cookies.insert("sy_backend".into(), cookie);
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    let r = late.send("GET", "/", &[], b"");
    assert!(sticky_set(&r).is_some(), "an expired cookie is replaced: {:?}", r.headers);
    assert_eq!(expired(), before + 1.0, "refused as expired");
    // A lifetime too short to renew in is refused at load, by name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.toml");
    std::fs::write(&path, config(None, KEY, "session_sticky", "ttl_s = 1", &addrs(&bs), "").replace("{listen}", "127.0.0.1:1")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok && out.contains("ttl_s: 1 is too short"), "{out}");
}

#[test]
fn a_stored_session_request_that_changes_nothing_makes_no_after_response_call() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""), "");
    let afters = || metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("hook", "after-response")]);
    // A visitor who changes nothing: no call, no cookie.
    let r = request(gw.addr, "GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
    assert_eq!(afters(), 0.0, "nothing to store");
    // The login is stored by the plugin (a new principal, a new id); the
    // adds by the gateway (`store.write-back`), with no call ...
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    let calls = afters();
    assert_eq!(calls, 1.0, "the login; the 5 adds were written back");
    // ... and reads make none, and see every write.
    for _ in 0..4 {
        let (s, v) = cart(&mut alice);
        assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "{v}");
    }
    assert_eq!(afters(), calls, "reads skip after-response");
    // A write after the reads still lands, and a logout still ends it.
    let (s, v) = b_add(&mut alice, "alice-5");
    assert_eq!((s, &v["cart"]), (200, &items("alice", 6)), "{v}");
    assert_eq!(cart(&mut alice).1["cart"], items("alice", 6));
    let (s, _) = alice.json("POST", "/cart/logout");
    assert_eq!(s, 200);
    assert!(!alice.cookies.contains_key("sy_session"), "the logout cleared the cookie");
    assert_eq!(afters(), calls + 1.0, "the logout; the add was written back");
}

/// Every value the session store holds under `prefix` (retired keys left
/// out), from memcached's own listing.
fn stored_under(mc: &Memcached, prefix: &str) -> Vec<Vec<u8>> {
    let dump = memcached_say(mc, b"lru_crawler metadump all\r\n", &["END\r\n"]);
    let keys = dump.lines().filter_map(|l| l.strip_prefix("key=")?.split(' ').next()).map(|k| k.replace("%3A", ":")).filter(|k| k.starts_with(prefix));
    let values = keys.filter_map(|k| {
        let out = memcached_say(mc, format!("get {k}\r\n").as_bytes(), &["END\r\n"]);
        let value = out.split_once("\r\n")?.1.rsplit_once("\r\nEND\r\n")?.0;
        Some(value.as_bytes().to_vec())
    });
    values.filter(|v| !v.starts_with(b"\0")).collect()
}

/// `store.write-back`: the gateway stores a plain update itself, byte for
/// byte what the plugin stores with `write_back = false`, and every write
/// the plugin alone can judge (a login, a renewal, a logout) still reaches
/// its `after-response`.
#[test]
fn a_plain_update_is_written_back_by_the_gateway_exactly_as_the_plugin_writes_it() {
    plain_updates_written_back("session_centralized", "", 3.0);
}

/// The same for a session split over two tiers (centralized-dynamic, a
/// one-node cluster for its replicated static part): the gateway writes
/// the dynamic part in memcached; a change of the static `user` stays the
/// plugin's, the same user set again is left out (`write-back-split`).
#[test]
fn a_split_sessions_plain_update_is_written_back_exactly_as_the_plugin_writes_it() {
    let cluster = format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:{}\"\nkey = \"{}\"\n", free_port(), switchyard_tests::nodes::CLUSTER_KEY);
    plain_updates_written_back("session_centralized_dynamic", &cluster, 3.0);
}

/// `gateway_calls`: the `after-response` calls with `write_back` on. A
/// login of the user the session already holds changes no guarded name,
/// so the gateway writes it (3), a split session's too (its static part
/// passed as the write-back's other part).
fn plain_updates_written_back(file: &str, extra: &str, gateway_calls: f64) {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let run = |plugin_config: &str| {
        let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, file, plugin_config, &addrs(&bs), extra), "");
        let mut alice = Browser::new(gw.addr);
        fill_cart(&mut alice, "alice");
        for item in ["x", "y", "x", "z"] {
            let (s, v) = b_add(&mut alice, item);
            assert_eq!(s, 200, "{v}");
        }
        for _ in 0..2 {
            assert_eq!(alice.json("POST", "/cart/incr").0, 200);
        }
        let id = alice.cookies["sy_session"].clone();
        assert_eq!(alice.json("POST", "/cart/elevate?role=admin").0, 200);
        assert_ne!(alice.cookies["sy_session"], id, "a renewal is the plugin's: a new id");
        // A switch of user is the plugin's too: a new id, the old one reads nothing.
        let mut old = Browser::new(gw.addr);
        old.cookies = alice.cookies.clone();
        let (s, v) = alice.json("POST", "/cart/login?user=bob");
        assert_eq!(s, 200, "{v}");
        assert_eq!(cart(&mut old).0, 401, "alice's id after bob logged in on it");
        let id = alice.cookies["sy_session"].clone();
        assert_eq!(b_add(&mut alice, "gone").0, 200);
        // The same user again: no privilege changes, so the id stays, and
        // the login's other changes (an empty cart) are stored.
        let (s, v) = alice.json("POST", "/cart/login?user=bob");
        assert_eq!(s, 200, "{v}");
        assert_eq!(alice.cookies["sy_session"], id, "bob's second login keeps bob's id");
        assert_eq!(shown(cart(&mut alice)), (200, serde_json::json!([])), "the second login's empty cart was stored");
        // The last write, so the value stored is the write-back's.
        let (s, v) = b_add(&mut alice, "last");
        assert_eq!(s, 200, "{v}");
        let (s, seen) = cart(&mut alice);
        assert_eq!(s, 200, "{seen}");
        let calls = metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("hook", "after-response")]);
        let writes = metric(admin, "switchyard_plugin_counter", &[("name", "writes")]);
        (seen, calls, writes)
    };
    let (gateway_wrote, calls, writes) = run("prefix = \"wb:\"");
    let (plugin_wrote, plugin_calls, plugin_writes) = run("prefix = \"pl:\"\nwrite_back = false");
    assert_eq!(gateway_wrote, plugin_wrote, "the same cart either way");
    assert_eq!((&gateway_wrote["user"], &gateway_wrote["cart"], &gateway_wrote["count"]), (&serde_json::json!("bob"), &serde_json::json!(["last"]), &serde_json::json!(2)), "{gateway_wrote}");
    assert_eq!((calls, plugin_calls), (gateway_calls, 17.0), "login, elevate, bob's login; the plugin alone also his second login, 5 + 4 + 2 adds and 2 increments");
    assert_eq!(writes, plugin_writes, "the gateway counts its writes as the plugin's");
    let (wb, pl) = (stored_under(&mc, "wb:"), stored_under(&mc, "pl:"));
    assert_eq!(wb.len(), 1, "the session renewed twice, its old ids retired: {wb:?}");
    assert_eq!(wb.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect::<std::collections::BTreeSet<_>>(), pl.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect(), "byte for byte");
}

/// An answer's status and cart (which backend served it aside).
fn shown((status, v): (u16, serde_json::Value)) -> (u16, serde_json::Value) {
    (status, v["cart"].clone())
}

/// `store.remember`: the gateway repeats a known session's forward from
/// its memo, with no `before-request` call, and everything it cannot repeat
/// (another cookie, a renewal, a revoke, a token due to be signed again)
/// still reaches the plugin: the same carts and the same stored bytes as
/// with `memo = false`.
#[test]
fn a_known_sessions_forward_is_repeated_from_the_memo_exactly_as_the_plugin_makes_it() {
    repeated_from_the_memo("session_centralized", "");
}

/// The same for a split session (centralized-dynamic): its static part
/// (`user`, replicated) is read each time and must read as remembered.
#[test]
fn a_split_sessions_forward_is_repeated_from_the_memo_exactly_as_the_plugin_makes_it() {
    let cluster = format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:{}\"\nkey = \"{}\"\n", free_port(), switchyard_tests::nodes::CLUSTER_KEY);
    repeated_from_the_memo("session_centralized_dynamic", &cluster);
}

fn repeated_from_the_memo(file: &str, extra: &str) {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let run = |plugin_config: &str| {
        let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, file, plugin_config, &addrs(&bs), extra), "");
        let befores = || metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("hook", "before-request")]);
        let mut alice = Browser::new(gw.addr);
        fill_cart(&mut alice, "alice");
        let mut seen = Vec::new();
        for item in ["x", "y"] {
            seen.push(shown(b_add(&mut alice, item)));
            seen.push(shown(cart(&mut alice)));
        }
        let known = befores();
        for _ in 0..5 {
            seen.push(shown(cart(&mut alice)));
        }
        let repeated = befores() - known;
        // Another cookie beside the session's: not what the memo was made for.
        let mut extra = Browser::new(gw.addr);
        extra.cookies = alice.cookies.clone();
        extra.cookies.insert("theme".into(), "dark".into());
        seen.push(shown(cart(&mut extra)));
        // A planted token: refused by the plugin, never another's session.
        let mut planted = Browser::new(gw.addr);
        planted.cookies.insert("sy_session".into(), format!("{}x", alice.cookies["sy_session"]));
        assert_eq!(cart(&mut planted).0, 401, "a tampered token");
        // A renewal: the old cookie's memo now reads a retired key.
        let mut old = Browser::new(gw.addr);
        old.cookies = alice.cookies.clone();
        assert_eq!(alice.json("POST", "/cart/elevate?role=admin").0, 200);
        assert_ne!(alice.cookies["sy_session"], old.cookies["sy_session"], "a new id");
        assert_eq!(cart(&mut old).0, 401, "the id before the renewal reads nothing");
        seen.push(shown(cart(&mut alice)));
        seen.push(shown(cart(&mut alice)));
        // A revoke: the memo's key is retired on every tier.
        let mut stolen = Browser::new(gw.addr);
        stolen.cookies = alice.cookies.clone();
        let (k, v) = bearer();
        let r = request(admin, "DELETE", "/sessions?principal=alice", &[(k, v.as_str())], b"");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(cart(&mut stolen).0, 401, "a revoked session reads nothing");
        let hits = metric(admin, "switchyard_session_memo_total", &[("outcome", "hit")]);
        let stale = metric(admin, "switchyard_session_memo_total", &[("outcome", "stale")]);
        (seen, repeated, hits, stale)
    };
    let (memo, repeated, hits, stale) = run("prefix = \"memo:\"");
    let (plugin, called, plugin_hits, _) = run("prefix = \"plugin:\"\nmemo = false");
    assert_eq!(memo, plugin, "the same answers either way");
    assert_eq!((repeated, called), (0.0, 5.0), "5 reads of a known session: no call with the memo, one each without");
    assert_eq!(plugin_hits, 0.0, "memo = false remembers nothing");
    assert!(hits >= 9.0, "2 adds, 7 reads and the reads after the renewal were repeated: {hits}");
    assert!(stale >= 2.0, "the renewed and the revoked id read nothing: {stale}");
    let (m, p) = (stored_under(&mc, "memo:"), stored_under(&mc, "plugin:"));
    assert_eq!(m.len(), 0, "revoked: {m:?}");
    assert_eq!(p.len(), 0, "revoked: {p:?}");
}

/// A memo holds until the token is due to be signed again (past half its
/// `ttl_s`): the next request reaches the plugin, which signs it again.
#[test]
fn a_memo_ends_when_the_token_is_due_to_be_signed_again() {
    let mc = Memcached::start();
    let bs = backends(1, "header");
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", "ttl_s = 10", &addrs(&bs), ""), "");
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    let token = alice.cookies["sy_session"].clone();
    assert_eq!(cart(&mut alice).1["cart"], items("alice", 5));
    assert_eq!(alice.cookies["sy_session"], token, "not due yet");
    assert!(metric(admin, "switchyard_session_memo_total", &[("outcome", "hit")]) >= 1.0);
    // Due once more than half of 10 s has passed in whole seconds (6 s on),
    // and the token holds until 10 s after the second it was signed in
    // (more than 9 s from now): 6.5 s is inside both, whatever the clock's
    // fraction of a second.
    std::thread::sleep(std::time::Duration::from_millis(6500));
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "{v}");
    assert_ne!(alice.cookies["sy_session"], token, "signed again once due, memo or not");
    assert_eq!(cart(&mut alice).1["cart"], items("alice", 5));
}

#[test]
fn o_session_survives_a_restart_of_the_gateway_and_every_backend() {
    let mc = Memcached::start();
    let bs = backends(3, "header");
    let cfg = config(Some(&mc), KEY, "session_o_session", "", &addrs(&bs), "");
    let gw = gateway(&cfg);
    let mut alice = Browser::new(gw.addr);
    let served = fill_cart(&mut alice, "alice");
    assert_eq!(served.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "{served:?}");
    drop(gw);
    drop(bs);
    let bs = backends(3, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "", &addrs(&bs), ""));
    alice.addr = gw.addr;
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "{v}");
}

#[test]
fn memcached_down_answers_503_never_another_users_cart_and_recovers_without_a_restart() {
    let mut mc = Memcached::start();
    let bs = backends(3, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""));
    let mut alice = Browser::new(gw.addr);
    let mut bob = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    fill_cart(&mut bob, "bob");
    mc.stop();
    for b in [&mut alice, &mut bob] {
        let r = b.send("GET", "/cart", &[], b"");
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.contains("session store"), "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    let r = Browser::new(gw.addr).send("POST", "/cart/login?user=carol", &[], b"");
    assert!(r.status == 200 || r.status == 503, "{r:?}");
    assert!(!r.body.contains("alice") && !r.body.contains("bob"), "{}", r.body);
    // memcached is back (empty): no restart of the gateway is needed.
    mc.restart();
    eventually(30, "a login works again", || Browser::new(gw.addr).send("POST", "/cart/login?user=dave", &[], b"").status == 200);
    let (s, v) = cart(&mut alice);
    assert_eq!(s, 401, "alice's session was in the stopped memcached; she sees no one else's: {v}");
    fill_cart(&mut alice, "alice");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"], &v["user"]), (200, &items("alice", 5), &serde_json::json!("alice")), "{v}");
}

#[test]
fn two_hundred_parallel_increments_with_the_lock_lose_no_update() {
    let mc = Memcached::start();
    let bs = backends(3, "header");
    // 200 requests in one line behind one lock: on a loaded 2-core machine
    // with a debug gateway the last may wait well past 10 s.
    let cfg = config(Some(&mc), KEY, "session_centralized", "lock = true", &addrs(&bs), "").replace("lock_timeout_ms = 10000", "lock_timeout_ms = 120000");
    let gw = gateway(&cfg);
    let mut alice = Browser::new(gw.addr);
    assert_eq!(alice.json("POST", "/cart/login?user=alice").0, 200);
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (mut b, statuses) = (alice.clone(), statuses.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let r = b.send("POST", "/cart/incr", &[], b"");
                    statuses.lock().unwrap().push((r.status, if r.status == 200 { String::new() } else { r.body }));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let statuses = statuses.lock().unwrap();
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "every increment was served; {} were not: {failed:?}", failed.len());
    let (s, v) = cart(&mut alice);
    assert_eq!((s, v["count"].as_u64()), (200, Some(200)), "no lost update: {v}");
}

/// A session's later requests take one `before-request` call, not two:
/// the keys its first call asked the gateway to read are remembered by the
/// request's cookies, and read before the next request's call. Other
/// cookies are another session (Bob reads his own cart); a strategy that
/// locks reads after its lock, so it always takes two calls.
#[test]
fn a_sessions_read_ahead_is_remembered_so_its_later_requests_take_one_call() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let calls = |admin| metric(admin, "switchyard_plugin_call_duration_seconds_count", &[("plugin", "sess"), ("hook", "before-request")]);
    // With the memo off, one call each; with a lock, two (the lock, then the
    // read); with the memo (the default), none once a session is known.
    for (lock, per_request) in [("memo = false", 1.0), ("lock = true", 2.0), ("", 0.0)] {
        let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", lock, &addrs(&bs), ""), "");
        let (mut alice, mut bob) = (Browser::new(gw.addr), Browser::new(gw.addr));
        fill_cart(&mut alice, "alice");
        fill_cart(&mut bob, "bob");
        let before = calls(admin);
        for _ in 0..10 {
            for (b, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
                let (s, v) = cart(b);
                assert_eq!((s, &v["cart"]), (200, &items(user, 5)), "{v}");
            }
        }
        let took = calls(admin) - before;
        assert_eq!(took, 20.0 * per_request, "{lock:?}: 20 requests of two known sessions took {took} before-request calls");
        // A login's next request carries a cookie the gateway has not seen
        // with these cookies, but the login's after-response wrote the key
        // and set that cookie: the key is read ahead, and the request takes
        // one call (two with the lock: it locks first), not a call to ask
        // for the read and a second with it.
        let mut carol = Browser::new(gw.addr);
        carol.cookies.insert("other".into(), "x".into());
        let (s, v) = carol.json("POST", "/cart/login?user=carol");
        assert_eq!(s, 200, "{v}");
        let before = calls(admin);
        let (s, v) = b_add(&mut carol, "carol-0");
        assert_eq!((s, &v["cart"]), (200, &items("carol", 1)), "{v}");
        let first = if lock.is_empty() { 1.0 } else { per_request };
        assert_eq!(calls(admin) - before, first, "{lock:?}: the first request after the login");
        // A privilege change: the session moves to a new id (written at
        // once, not deferred) under a new cookie; its next request is one
        // call too.
        let token = carol.cookies["sy_session"].clone();
        let (s, v) = carol.json("POST", "/cart/elevate?role=admin");
        assert_eq!(s, 200, "{v}");
        assert_ne!(carol.cookies["sy_session"], token, "{lock:?}: renewed");
        let before = calls(admin);
        let (s, v) = b_add(&mut carol, "carol-1");
        assert_eq!((s, &v["cart"]), (200, &items("carol", 2)), "{v}");
        assert_eq!(calls(admin) - before, first, "{lock:?}: the first request after the renewal");
    }
}

/// Each browser sends `n` `POST /cart/incr` on its own thread, all at
/// once: every answer's status and `Warning` header.
fn increments(browsers: &[Browser], n: usize) -> Vec<(u16, Option<String>)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = browsers
            .iter()
            .map(|b| {
                let mut b = b.clone();
                s.spawn(move || (0..n).map(|_| b.send("POST", "/cart/incr", &[], b"")).map(|r| (r.status, r.header("warning").map(str::to_string))).collect::<Vec<_>>())
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// A pool of two instances for twenty concurrent requests of one locked
/// session: the requests waiting for the lock hold instances, and the
/// holder's `after-response` (which writes and unlocks) must still get one
/// (a bound on the instances running once deadlocked here).
#[test]
fn a_tiny_instance_pool_under_one_lock_loses_no_update() {
    let mc = Memcached::start();
    let bs = backends(1, "header");
    let cfg = config(Some(&mc), KEY, "session_centralized", "lock = true", &addrs(&bs), "")
        .replace("lock_timeout_ms = 10000", "lock_timeout_ms = 120000")
        .replace("limits = { deadline_ms = 500 }", "limits = { deadline_ms = 500, instances = 2 }");
    assert!(cfg.contains("instances = 2"), "{cfg}");
    let gw = gateway(&cfg);
    let mut alice = Browser::new(gw.addr);
    assert_eq!(alice.json("POST", "/cart/login?user=alice").0, 200);
    let served = increments(&vec![alice.clone(); 20], 3).iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(served, 60, "every increment was served");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, v["count"].as_u64()), (200, Some(60)), "no lost update: {v}");
}

/// No instance waits on memcached: the centralized plugin asks for its
/// session first (`read-ahead`) and leaves its write-back to the gateway
/// (`set-deferred`), so 24 users' 360 concurrent increments make no
/// memcached call from inside a hook, and every update is kept. (The
/// previous plugin build made two per request, and 247 instances here.)
#[test]
fn concurrent_sessions_on_memcached_never_wait_holding_an_instance_and_keep_every_update() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""), "");
    let waits = || metric(admin, "switchyard_plugin_store_waits_total", &[("plugin", "sess"), ("tier", "central")]);
    let users: Vec<Browser> = (0..24)
        .map(|i| {
            let mut b = Browser::new(gw.addr);
            assert_eq!(b.json("POST", &format!("/cart/login?user=u{i}")).0, 200);
            assert_eq!(b.json("POST", "/cart/incr").0, 200);
            b
        })
        .collect();
    let before = waits();
    let answers = increments(&users, 15);
    assert!(answers.iter().all(|a| *a == (200, None)), "every increment kept: {answers:?}");
    for u in &users {
        let (s, v) = cart(&mut u.clone());
        assert_eq!((s, v["count"].as_u64()), (200, Some(16)), "{v}");
    }
    let waited = waits() - before;
    assert_eq!(waited, 0.0, "360 concurrent increments made {waited} memcached calls holding an instance");
    // An end is still made inside the hook, and the metric sees it.
    assert_eq!(users[0].clone().json("POST", "/cart/logout").0, 200);
    assert!(waits() > before, "a logout deletes its session from inside the hook");
}

#[test]
fn a_lock_held_past_the_lock_timeout_answers_503_with_retry_after() {
    let mc = Memcached::start();
    let slow = backend("slow", &["--sessions", "header", "--delay-ms", "1500"]);
    let cfg = config(Some(&mc), KEY, "session_centralized", "lock = true", &[slow.addr], "")
        .replace("lock_timeout_ms = 10000", "lock_timeout_ms = 200");
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let mut alice = Browser::new(gw.addr);
    assert_eq!(alice.json("POST", "/cart/login?user=alice").0, 200);
    let mut holder = alice.clone();
    let first = std::thread::spawn(move || holder.send("POST", "/cart/incr", &[], b"").status);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let r = alice.send("POST", "/cart/incr", &[], b"");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("holds its lock"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(first.join().unwrap(), 200);
    assert!(metric(admin, "switchyard_plugin_counter", &[("name", "lock_timeouts")]) >= 1.0);
    // The lock was released when the first request ended.
    let (s, v) = alice.json("POST", "/cart/incr");
    assert_eq!((s, v["count"].as_u64()), (200, Some(2)), "{v}");
}

#[test]
fn forged_expired_and_tampered_tokens_are_refused_and_counted() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", "ttl_s = 2", &addrs(&bs), ""), "");
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    let good = alice.cookies["sy_session"].clone();
    // Tampered: one character of the payload changed.
    let mut t = good.clone().into_bytes();
    let i = good.find('.').unwrap() + 14;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    let mut mallory = Browser::new(gw.addr);
    mallory.cookies.insert("sy_session".into(), String::from_utf8(t).unwrap());
    assert_eq!(cart(&mut mallory).0, 401, "a tampered cookie is no session");
    // Forged: signed by another gateway's key, for alice's very session id.
    let other = gateway(&config(Some(&mc), OTHER_KEY, "session_centralized", "", &addrs(&bs), ""));
    let mut eve = Browser::new(other.addr);
    eve.json("POST", "/cart/login?user=eve");
    eve.addr = gw.addr;
    assert_eq!(cart(&mut eve).0, 401, "a cookie signed with another key is no session");
    assert!(metric(admin, "switchyard_session_tokens_rejected_total", &[("reason", "bad_signature")]) >= 2.0);
    // Garbage.
    let mut junk = Browser::new(gw.addr);
    junk.cookies.insert("sy_session".into(), "not-a-token".into());
    assert_eq!(cart(&mut junk).0, 401);
    assert!(metric(admin, "switchyard_session_tokens_rejected_total", &[("reason", "malformed")]) >= 1.0);
    // Expired: the token lives 2 s (a fresh login: starting the other
    // gateway above may itself take longer than that on a busy machine).
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    assert_eq!(cart(&mut alice).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert_eq!(cart(&mut alice).0, 401, "an expired cookie is no session");
    assert!(metric(admin, "switchyard_session_tokens_rejected_total", &[("reason", "expired")]) >= 1.0);
}

#[test]
fn a_forged_passport_header_is_refused() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "", &addrs(&bs), ""));
    let mut student = Browser::carrying(gw.addr, "switchyard-passport");
    let (s, v) = student.json("GET", "/exam/paper?student=s1");
    assert_eq!(s, 200, "{v}");
    let passport = student.carry.clone().unwrap().1.expect("the passport came back in a header");
    let forged = passport.replacen("v1.", "v1.9", 1);
    let r = switchyard_tests::request(gw.addr, "POST", "/exam/submit", &[("switchyard-passport", &forged)], b"42");
    assert_eq!(r.status, 409, "a tampered passport carries no paper: {r:?}");
    let (s, v) = student.json("POST", "/exam/submit");
    assert_eq!((s, &v["receipt"]["student"]), (200, &serde_json::json!("s1")), "{v}");
}

#[test]
fn sticky_cookies_cannot_steer_a_client_to_a_backend() {
    let bs = backends(3, "memory");
    let cfg = config(None, KEY, "session_sticky", "", &addrs(&bs), "");
    let gw = gateway(&cfg);
    // A cookie naming b2 signed by another gateway's key, and one in clear text.
    let other = gateway(&config(None, OTHER_KEY, "session_sticky", "", &addrs(&bs), ""));
    let mut probe = Browser::new(other.addr);
    let mut forged = None;
    for _ in 0..6 {
        probe.cookies.clear();
        let (_, v) = probe.json("POST", "/cart/login?user=x");
        if v["backend"] == "b2" {
            forged = Some(probe.cookies["sy_backend"].clone());
        }
    }
    let forged = forged.expect("round robin reached b2");
    for cookie in [forged, bs[2].addr.to_string()] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let r = switchyard_tests::request(gw.addr, "GET", "/", &[("Cookie", &format!("sy_backend={cookie}"))], b"");
            seen.insert(r.backend().to_string());
        }
        assert!(seen.len() > 1, "a forged pin steers nothing: {seen:?}");
    }
}

#[test]
fn clients_can_neither_inject_nor_read_session_headers() {
    let mc = Memcached::start();
    let bs = backends(2, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""));
    // An injected session (user "mallory") does not reach the backend.
    // Also spelled with `_`, which CGI, PHP, WSGI and Rack backends read as
    // the same header (`HTTP_X_SWITCHYARD_SESSION`), and a forwarding
    // header spelled so.
    let fake = "eyJ1c2VyIjoibWFsbG9yeSIsImNhcnQiOlsieCJdfQ==";
    let injected = [("X-Switchyard-Session", fake), ("x-switchyard-session-id", "evil"), ("X_Switchyard_Session", fake), ("x_switchyard_session-id", "evil"), ("X_Forwarded_For", "6.6.6.6")];
    let r = switchyard_tests::request(gw.addr, "GET", "/cart", &injected, b"");
    assert_eq!(r.status, 401, "{r:?}");
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    let r = alice.send("GET", "/echo", &injected, b"");
    assert!(!r.body.contains(fake) && !r.body.contains("evil") && !r.body.contains("6.6.6.6"), "the backend saw only the gateway's session headers:\n{}", r.body);
    assert!(!r.body.to_ascii_lowercase().contains("x_switchyard"), "{}", r.body);
    assert!(r.body.contains("x-switchyard-session-id: "), "{}", r.body);
    // The backend's session updates never reach the client.
    let r = alice.send("POST", "/cart/add?item=z", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("x-switchyard-")), "{:?}", r.headers);
}

#[test]
fn the_exam_loses_no_submission_across_gateway_and_backend_restarts() {
    let mc = Memcached::start();
    let bs = backends(3, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "", &addrs(&bs), ""));
    // 200 students download their paper; each keeps only the passport.
    let students: Vec<(String, Browser, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|t| {
                let addr = gw.addr;
                s.spawn(move || {
                    (0..20)
                        .map(|i| {
                            let id = format!("s{:03}", t * 20 + i);
                            let mut b = Browser::carrying(addr, "switchyard-passport");
                            let (st, v) = b.json("GET", &format!("/exam/paper?student={id}"));
                            assert_eq!(st, 200, "{v}");
                            let paper = v["paper"].as_str().unwrap().to_string();
                            (id, b, paper)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(students.len(), 200);
    // Mid-exam, the gateway and every backend restart.
    drop(gw);
    drop(bs);
    let bs = backends(3, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "", &addrs(&bs), ""));
    let receipts: Vec<(String, String, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = students
            .chunks(20)
            .map(|chunk| {
                let addr = gw.addr;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(id, b, paper)| {
                            let mut b = b.clone();
                            b.addr = addr;
                            let r = b.send("POST", "/exam/submit", &[], format!("answers of {id}").as_bytes());
                            assert_eq!(r.status, 200, "{id}: {r:?}");
                            (id.clone(), paper.clone(), serde_json::from_str(&r.body).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let lost: Vec<_> = receipts.iter().filter(|(id, paper, v)| v["receipt"]["student"] != *id || v["receipt"]["paper"] != *paper).collect();
    assert!(lost.is_empty(), "{} of 200 submissions lost: {:?}", lost.len(), &lost[..lost.len().min(3)]);
    assert_eq!(receipts.len(), 200);
}

#[test]
fn o_session_on_mariadb_survives_a_memcached_restart() {
    let db = switchyard_tests::mariadb::Cluster::start(0);
    let mut mc = Memcached::start();
    let bs = backends(2, "header");
    let url = format!("mysql://{}:{}@{}/{}", mariadb::APP_USER, mariadb::APP_PASSWORD, db.primary.addr(), mariadb::DB);
    let durable = format!("[session.durable]\nurl = \"{url}\"\n");
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "tier = \"durable\"", &addrs(&bs), &durable));
    let mut student = Browser::carrying(gw.addr, "switchyard-passport");
    let (s, v) = student.json("GET", "/exam/paper?student=s42");
    assert_eq!(s, 200, "{v}");
    mc.restart();
    drop(gw);
    let gw = gateway(&config(Some(&mc), KEY, "session_o_session", "tier = \"durable\"", &addrs(&bs), &durable));
    student.addr = gw.addr;
    let (s, v) = student.json("POST", "/exam/submit");
    assert_eq!((s, &v["receipt"]["student"]), (200, &serde_json::json!("s42")), "{v}");
    assert_eq!(db.primary.sql(&format!("SELECT COUNT(*) FROM {}.switchyard_sessions WHERE k LIKE 'passport:%'", mariadb::DB)), "1");
}

#[test]
fn a_hot_swap_between_centralized_and_o_session_under_load_loses_no_session() {
    let mc = Memcached::start();
    let bs = backends(3, "header");
    // Both strategies read the same cookie and keys: a swap keeps sessions.
    let shared = "cookie = \"sy_session\"\nprefix = \"session:\"\ntier = \"central\"\nttl_s = 1800";
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", shared, &addrs(&bs), ""), "");
    let users: Vec<Browser> = (0..8)
        .map(|u| {
            let mut b = Browser::new(gw.addr);
            assert_eq!(b.json("POST", &format!("/cart/login?user=u{u}")).0, 200);
            b
        })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(u, mut b)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut added = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && added.len() < 400 {
                    let item = format!("u{u}-{}", added.len());
                    let (s, v) = b.json("POST", &format!("/cart/add?item={item}"));
                    if s == 200 {
                        added.push(item);
                    } else {
                        failures.push(format!("{s} {v}"));
                    }
                }
                (b, added, failures)
            })
        })
        .collect();
    let (k, v) = bearer();
    for file in ["session_o_session", "session_centralized", "session_o_session"] {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let bytes = std::fs::read(plugin(file)).unwrap();
        let r = switchyard_tests::request(admin, "PUT", "/plugins/sess", &[(k, v.as_str())], &bytes);
        assert_eq!(r.status, 200, "swap to {file}: {r:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let (mut b, added, failures) = t.join().unwrap();
        assert!(failures.is_empty(), "requests failed across the swaps: {failures:?}");
        assert!(added.len() > 3, "the load ran: {added:?}");
        let (s, v) = cart(&mut b);
        assert_eq!((s, &v["cart"]), (200, &serde_json::json!(added)), "every item added across the swaps is in the cart");
    }
    assert!(metric(admin, "switchyard_plugin_swaps_total", &[("plugin", "sess"), ("result", "ok")]) >= 3.0);
    // `GET /plugins` times the session seam's own hooks.
    let (k, v) = bearer();
    let plugins: serde_json::Value = serde_json::from_str(&get(admin, "/plugins", &[(k, v.as_str())]).body).unwrap();
    let hooks = &plugins[0]["hooks"];
    for hook in ["before-request", "after-response"] {
        assert!(hooks[hook]["calls"].as_u64().unwrap_or(0) > 0, "{hook} is timed: {plugins}");
    }
    assert_eq!(plugins[0]["world"], "session-policy");
    assert_eq!(plugins[0]["upstreams"], serde_json::json!(["route */"]), "{plugins}");
}

#[test]
fn a_gateway_starts_while_memcached_is_down_and_uses_it_once_it_is_up() {
    let mut mc = Memcached::start();
    mc.stop();
    let bs = backends(2, "header");
    let gw = gateway(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""));
    let mut alice = Browser::new(gw.addr);
    let r = alice.send("POST", "/cart/login?user=alice", &[], b"");
    // A new visitor has nothing to load; the write after the login fails.
    assert!(r.status == 200 || r.status == 503, "{r:?}");
    mc.restart();
    eventually(30, "memcached is used once it is up", || Browser::new(gw.addr).send("POST", "/cart/login?user=bob", &[], b"").status == 200);
    let mut carol = Browser::new(gw.addr);
    fill_cart(&mut carol, "carol");
    let (s, v) = cart(&mut carol);
    assert_eq!((s, &v["cart"]), (200, &items("carol", 5)), "{v}");
}

/// memcached's text protocol, for planting a value: sends `cmd`, reads
/// until a line in `ends`.
fn memcached_say(mc: &Memcached, cmd: &[u8], ends: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(mc.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    s.write_all(cmd).unwrap();
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !ends.iter().any(|e| out.ends_with(e)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "memcached closed after {out:?}");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

/// A stored session that is not one JSON object (cut, or written by
/// something else under the session's key) reads as no session: the user
/// is asked to log in, the plugin counts it, the gateway keeps serving,
/// another user keeps theirs, and a new login works.
#[test]
fn a_corrupt_stored_session_reads_as_none_is_counted_and_harms_no_one_else() {
    let mc = Memcached::start();
    let bs = backends(1, "header");
    let (gw, admin) = gateway_with_admin(&config(Some(&mc), KEY, "session_centralized", "", &addrs(&bs), ""), "");
    let mut alice = Browser::new(gw.addr);
    fill_cart(&mut alice, "alice");
    let dump = memcached_say(&mc, b"lru_crawler metadump all\r\n", &["END\r\n"]);
    let keys: Vec<&str> = dump.lines().filter_map(|l| l.strip_prefix("key=")?.split(' ').next()).filter(|k| k.starts_with("session%3A")).collect();
    assert_eq!(keys.len(), 1, "alice's one session key: {dump}");
    let key = keys[0].replace("%3A", ":");
    for garbage in [&b"[\"not an object\"]"[..], b"{\"user\":\"alice\",\"cart\":[", b"{\"user\":\"\xff\"}"] {
        let mut set = format!("set {key} 0 0 {}\r\n", garbage.len()).into_bytes();
        set.extend_from_slice(garbage);
        set.extend_from_slice(b"\r\n");
        assert_eq!(memcached_say(&mc, &set, &["STORED\r\n", "ERROR\r\n"]), "STORED\r\n");
        let (s, v) = cart(&mut alice);
        assert_eq!(s, 401, "a corrupt session is no session: {v}");
    }
    assert!(metric(admin, "switchyard_plugin_counter", &[("name", "corrupt_sessions")]) >= 3.0);
    let mut bob = Browser::new(gw.addr);
    fill_cart(&mut bob, "bob");
    let (s, v) = cart(&mut bob);
    assert_eq!((s, &v["cart"]), (200, &items("bob", 5)), "{v}");
    fill_cart(&mut alice, "alice");
    let (s, v) = cart(&mut alice);
    assert_eq!((s, &v["cart"], &v["user"]), (200, &items("alice", 5), &serde_json::json!("alice")), "{v}");
}

/// A backend that answers each request (one per connection) with an
/// interim `103 Early Hints` carrying a session header of its own, then the
/// final answer, which sets `k` and shows the session it was sent.
fn early_hints_backend() -> SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let (mut len, mut session) = (0usize, String::new());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "x-switchyard-session" => session = v.trim().to_string(),
                            _ => {}
                        }
                    }
                    line.clear();
                }
                let _ = r.read_exact(&mut vec![0; len]);
                // {"k":"v1"} and {"user":"mallory"}, base64.
                let (set, planted) = (K_V1, "eyJ1c2VyIjoibWFsbG9yeSJ9");
                let body = format!("session={session}\n");
                let out = format!(
                    "HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\nx-switchyard-session-set: {planted}\r\n\r\n\
                     HTTP/1.1 200 OK\r\nx-switchyard-session-set: {set}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut w = conn;
                let _ = w.write_all(out.as_bytes());
            });
        }
    });
    addr
}

/// `{"k":"v1"}` in base64, as the session header carries it.
const K_V1: &str = "eyJrIjoidjEifQ==";

/// An interim answer (`103 Early Hints`, `100 Continue`) is not the
/// response: the session's write-back waits for the final one, whose
/// changes are stored and whose cookie reaches the client; the interim
/// answer's internal headers are stripped like any other's.
#[test]
fn an_interim_response_does_not_take_the_sessions_write_back() {
    let gw = gateway(&config(None, KEY, "session_centralized", "tier = \"local\"", &[early_hints_backend()], ""));
    let r = switchyard_tests::request(gw.addr, "POST", "/set", &[], b"x");
    assert_eq!(r.status, 103, "{r:?}");
    assert!(r.headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("x-switchyard-")), "the interim answer's internal headers are stripped: {r:?}");
    let (head, body) = r.body.split_once("\r\n\r\n").expect("the final answer follows the interim one");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-switchyard-"), "{head}");
    let cookie = head.lines().find_map(|l| l.to_ascii_lowercase().starts_with("set-cookie: sy_session=").then(|| l["set-cookie: ".len()..].split(';').next().unwrap().to_string()));
    let cookie = cookie.unwrap_or_else(|| panic!("the final answer sets the session cookie:\n{head}\n\n{body}"));
    let r = switchyard_tests::request(gw.addr, "POST", "/read", &[("Cookie", &cookie)], b"x");
    let stored = r.body.lines().find_map(|l| l.strip_prefix("session=")).unwrap_or_else(|| panic!("the backend's echo: {r:?}"));
    assert_eq!(stored, K_V1, "the final answer's change was stored, the interim one's not");
}
