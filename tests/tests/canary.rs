//! Canary versions of a plugin on live traffic: `PUT /plugins/NAME?canary=P`
//! sends P % of the client addresses to the upload beside the running
//! version, stable per address; each version keeps a scorecard; a canary
//! is promoted or rolled back by hand or on its figures, and a trapping
//! canary costs no client request (the lb fallback answers).

use std::net::SocketAddr;
use switchyard_tests::clients::{clients, from_each, visit};
use switchyard_tests::*;

fn put(admin: SocketAddr, query: &str, wasm: &str) -> Response {
    let (k, v) = bearer();
    request(admin, "PUT", &format!("/plugins/lb{query}"), &[(k, v.as_str())], &std::fs::read(plugin(wasm)).unwrap())
}

fn canary_state(admin: SocketAddr) -> serde_json::Value {
    let (k, v) = bearer();
    serde_json::from_str(&get(admin, "/plugins/lb/canary", &[(k, v.as_str())]).body).unwrap()
}

/// One request from each of `ips`, again, until the running canary is
/// judged (10 rounds at most); its final state.
fn until_judged(gw: SocketAddr, admin: SocketAddr, ips: &[std::net::Ipv4Addr]) -> serde_json::Value {
    for _ in 0..10 {
        from_each(gw, ips);
        if canary_state(admin)["state"] != "running" {
            break;
        }
    }
    eventually(10, "the canary is judged", || canary_state(admin)["state"] != "running");
    canary_state(admin)
}

/// `lb` = `baseline` over backends a and b.
fn start(baseline: &str, a: &Proc, b: &Proc) -> (Proc, SocketAddr) {
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", baseline, "on_error = \"fallback\"\nlimits = { deadline_ms = 500 }"),
        upstream("web", Some("lb"), &[(a, 1), (b, 1)], "health = { check = \"none\", max_failures = 1000000 }")
    );
    gateway_with_admin(&cfg, "")
}

#[test]
fn a_canary_takes_its_share_of_clients_and_each_client_stays_on_its_side() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let (gw, admin) = start("pin_last", &a, &b);
    assert!(from_each(gw.addr, &clients(20)).iter().all(|(s, n)| *s == 200 && n == "b"));

    let r = put(admin, "?canary=20", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    let state: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((state["state"].as_str(), state["percent"].as_u64(), state["baseline_version"].as_u64()), (Some("running"), Some(20), Some(1)), "{state}");

    let ips = clients(1000);
    let first = from_each(gw.addr, &ips);
    assert!(first.iter().all(|(s, _)| *s == 200), "every request answered");
    let on_canary = first.iter().filter(|(_, n)| n == "a").count();
    assert!((170..=230).contains(&on_canary), "20 ± 3 % of 1000 clients on the canary: {on_canary}");
    // Each client stays where it was.
    let again = from_each(gw.addr, &ips[..200]);
    assert_eq!(again, first[..200].to_vec(), "a client never flips between versions");

    let state = canary_state(admin);
    let canary_calls = state["canary"]["calls"].as_u64().unwrap();
    let baseline_calls = state["baseline"]["calls"].as_u64().unwrap();
    assert!(canary_calls >= on_canary as u64 && baseline_calls >= (1000 - on_canary) as u64, "per-version scorecards: {state}");

    // Rolled back by hand: every client on the baseline again.
    let (k, v) = bearer();
    let r = request(admin, "DELETE", "/plugins/lb/canary", &[(k, v.as_str())], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let state = canary_state(admin);
    assert_eq!((state["state"].as_str(), state["by"].as_str()), (Some("rolled-back"), Some("admin")), "{state}");
    assert!(from_each(gw.addr, &ips[..100]).iter().all(|(s, n)| *s == 200 && n == "b"));
    let r = request(admin, "DELETE", "/plugins/lb/canary", &[(k, v.as_str())], b"");
    assert_eq!(r.status, 409, "nothing left to roll back: {r:?}");
}

#[test]
fn a_canary_that_traps_on_half_its_calls_is_rolled_back_with_no_failed_request() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let (gw, admin) = start("round_robin", &a, &b);
    let config = "%7B%22mode%22%3A%22trap-half%22%7D"; // {"mode":"trap-half"}
    let r = put(admin, &format!("?canary=50&window=100&config={config}"), "misbehave");
    assert_eq!(r.status, 200, "{r:?}");
    let ips = clients(200);
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.extend(from_each(gw.addr, &ips));
        if canary_state(admin)["state"] != "running" {
            break;
        }
    }
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
    eventually(10, "the canary is judged", || canary_state(admin)["state"] != "running");
    let state = canary_state(admin);
    assert_eq!((state["state"].as_str(), state["by"].as_str()), (Some("rolled-back"), Some("auto")), "{state}");
    assert!(state["evidence"].as_str().unwrap().contains("more faults than the baseline"), "{state}");
    assert!(state["canary"]["faults"].as_u64().unwrap() >= 10, "{state}");
    assert_eq!(metric(admin, "switchyard_plugin_canary_decisions_total", &[("plugin", "lb"), ("decision", "rolled-back"), ("by", "auto")]), 1.0);
    // The baseline alone serves again, still round robin.
    let seen: std::collections::BTreeSet<String> = from_each(gw.addr, &ips[..20]).into_iter().map(|(_, n)| n).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn a_good_canary_is_promoted_on_its_figures_and_a_rollback_returns_the_baseline() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let (gw, admin) = start("pin_last", &a, &b);
    let r = put(admin, "?canary=50&window=50&max_p99_ratio=1000", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    let ips = clients(100);
    let state = until_judged(gw.addr, admin, &ips);
    assert_eq!((state["state"].as_str(), state["by"].as_str()), (Some("promoted"), Some("auto")), "{state}");
    assert!(from_each(gw.addr, &ips[..30]).iter().all(|(s, n)| *s == 200 && n == "a"), "every client on the promoted version");
    let (k, v) = bearer();
    let lb: serde_json::Value = serde_json::from_str(&get(admin, "/plugins/lb", &[(k, v.as_str())]).body).unwrap();
    assert_eq!((lb["version"].as_u64(), lb["source"].as_str(), lb["previous_version"].as_u64()), (Some(2), Some("canary"), Some(1)), "{lb}");
    let r = request(admin, "POST", "/plugins/lb/rollback", &[(k, v.as_str())], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(from_each(gw.addr, &ips[..30]).iter().all(|(s, n)| *s == 200 && n == "b"), "the baseline again");
    // Bad canary requests name what is wrong.
    let r = put(admin, "?canary=150", "pin_first");
    assert!(r.status == 400 && r.body.contains("1 to 99"), "{r:?}");
    let r = put(admin, "?canary=10", "session_sticky");
    assert!(r.status == 400 && r.body.contains("world"), "a canary of another seam is refused: {r:?}");
}

/// The same through the CLI: `plugin canary`, `plugin promote`, `plugin abort`.
#[test]
fn the_cli_starts_promotes_and_aborts_canaries() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let (gw, admin) = start("pin_last", &a, &b);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(switchyard_bin()).args(args).args(["--admin", &format!("http://{admin}"), "--token", ADMIN_TOKEN]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let wasm = plugin("pin_first");
    let (ok, out) = cli(&["plugin", "canary", "lb", wasm.to_str().unwrap(), "--percent", "30"]);
    assert!(ok && out.contains("\"percent\": 30"), "{out}");
    let (ok, out) = cli(&["plugin", "abort", "lb"]);
    assert!(ok && out.contains("rolled-back"), "{out}");
    let (ok, out) = cli(&["plugin", "abort", "lb"]);
    assert!(!ok && out.contains("no canary running"), "{out}");
    let (ok, _) = cli(&["plugin", "canary", "lb", wasm.to_str().unwrap(), "--percent", "30"]);
    assert!(ok);
    let (ok, out) = cli(&["plugin", "promote", "lb"]);
    assert!(ok && out.contains("\"source\": \"canary\""), "{out}");
    assert!(from_each(gw.addr, &clients(10)).iter().all(|(s, n)| *s == 200 && n == "a"));
}

/// An lb canary whose plugin never faults but routes to a backend that
/// fails is judged on the requests it routed: rolled back, with both
/// versions' routed figures in the evidence and in `GET`.
#[test]
fn an_lb_canary_routing_to_a_failing_backend_is_rolled_back_on_its_requests() {
    let (a, b) = (backend("a", &["--status", "500"]), backend("b", &[]));
    let (gw, admin) = start("pin_last", &a, &b);
    let r = put(admin, "?canary=50&window=60", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    let ips = clients(100);
    let state = until_judged(gw.addr, admin, &ips);
    assert_eq!((state["state"].as_str(), state["by"].as_str()), (Some("rolled-back"), Some("auto")), "{state}");
    let evidence = state["evidence"].as_str().unwrap();
    assert!(evidence.contains("more failed requests than the baseline") && evidence.contains("routed: canary"), "{state}");
    assert_eq!(state["canary"]["faults"].as_u64(), Some(0), "the plugin itself never faulted: {state}");
    let routed = &state["canary"]["routed"];
    assert!(routed["requests"].as_u64().unwrap() > 0 && routed["failed"] == routed["requests"], "every request it routed failed: {state}");
    assert_eq!(state["baseline"]["routed"]["failed"].as_u64(), Some(0), "{state}");
    assert!(from_each(gw.addr, &ips[..20]).iter().all(|(s, n)| *s == 200 && n == "b"), "the baseline alone again");
}

/// `[plugins.lb] canary_header = "x-user"`: the canary's share is taken
/// by that header's value, not the client address (every request here
/// comes from 127.0.0.1), each user stays on one side, and requests
/// without the header are split at random.
#[test]
fn an_lb_canary_splits_by_the_header_named_in_config() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", "pin_last", "on_error = \"fallback\"\nlimits = { deadline_ms = 500 }\ncanary_header = \"x-user\""),
        upstream("web", Some("lb"), &[(&a, 1), (&b, 1)], "health = { check = \"none\", max_failures = 1000000 }")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let r = put(admin, "?canary=30", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    let served = |user: Option<&str>| {
        let headers: Vec<(&str, &str)> = user.map(|u| vec![("x-user", u)]).unwrap_or_default();
        let r = get(gw.addr, "/", &headers);
        assert_eq!(r.status, 200, "{r:?}");
        r.body.lines().next().unwrap_or("").to_string()
    };
    let users: Vec<String> = (0..600).map(|i| format!("user-{i}")).collect();
    let first: Vec<String> = users.iter().map(|u| served(Some(u))).collect();
    let on_canary = first.iter().filter(|n| *n == "a").count();
    assert!((140..=220).contains(&on_canary), "30 % of 600 users on the canary, from one address: {on_canary}");
    for (u, was) in users.iter().zip(&first).take(150) {
        assert_eq!(&served(Some(u)), was, "{u} flipped between versions");
    }
    let anonymous: Vec<String> = (0..100).map(|_| served(None)).collect();
    let anonymous_on_canary = anonymous.iter().filter(|n| *n == "a").count();
    assert!((5..=60).contains(&anonymous_on_canary), "requests without the header are split at random: {anonymous_on_canary} of 100 on the canary");
}

/// A session canary: every user stays on one version for the whole
/// session, even from another client address (the `sy_split` cookie).
/// The baseline pins with cookie `sy_backend`, the canary (the same
/// bytes, another table) with `sy_canary`: a user who flipped would be
/// handed the other version's cookie.
#[test]
fn a_session_canary_keeps_each_user_on_one_version() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let cfg = format!(
        "{SERVER}[session]\nkeys = [\"canary-test-session-key-0123456789abcdef\"]\n{}[[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n[[routes]]\nupstream = \"app\"\nsession = \"sess\"\n",
        plugin_table("sess", "session_sticky", "on_error = \"fail-closed\"\nlimits = { deadline_ms = 500 }"),
        a.addr,
        b.addr
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let (k, v) = bearer();
    let table = "%7B%22cookie%22%3A%22sy_canary%22%7D"; // {"cookie":"sy_canary"}
    let r = request(admin, "PUT", &format!("/plugins/sess?canary=30&config={table}"), &[(k, v.as_str())], &std::fs::read(plugin("session_sticky")).unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let users = clients(200);
    let mut on_canary = 0;
    rt.block_on(async {
        for (i, ip) in users.iter().enumerate() {
            let (status, first_backend, sets) = visit(gw.addr, *ip, "").await.unwrap();
            assert_eq!(status, 200);
            let (split, session): (Vec<&String>, Vec<&String>) = sets.iter().partition(|c| c.starts_with("sy_split="));
            assert_eq!((split.len(), session.len()), (1, 1), "{ip}: a session cookie and the split cookie: {sets:?}");
            let cookie = format!("{}; {}", session[0], split[0]);
            let canary = session[0].starts_with("sy_canary=");
            on_canary += usize::from(canary);
            for j in 1..=4 {
                // The user roams (another client address, the same
                // cookies): the split cookie keeps it on its version.
                let roamed = users[(i + 37 * j) % users.len()];
                let (status, backend, sets) = visit(gw.addr, roamed, &cookie).await.unwrap();
                assert_eq!(status, 200);
                assert!(sets.is_empty(), "{ip} ({}) was handed another cookie from {roamed}: {sets:?}", if canary { "canary" } else { "baseline" });
                assert_eq!(backend, first_backend, "{ip}: still pinned by the same version");
            }
        }
    });
    assert!((40..=80).contains(&on_canary), "about 30 % of 200 users on the canary: {on_canary}");
    // Each version counted the outcome of every request it served: its
    // users' first requests stored a new session, their next four loaded it.
    let (k, v) = bearer();
    let state: serde_json::Value = serde_json::from_str(&get(admin, "/plugins/sess/canary", &[(k, v.as_str())]).body).unwrap();
    let counts = |side: &str| (state[side]["outcomes"]["new"].as_u64(), state[side]["outcomes"]["loaded"].as_u64());
    let (canary, baseline) = (on_canary as u64, 200 - on_canary as u64);
    assert_eq!((counts("canary"), counts("baseline")), ((Some(canary), Some(4 * canary)), (Some(baseline), Some(4 * baseline))), "{state}");
}
