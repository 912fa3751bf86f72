//! The admin API: auth, bad input, hot swap under load with rollbacks,
//! reload from disk and SIGHUP, metrics, and the `switchyard plugin` CLI.

use std::time::{Duration, Instant};
use switchyard_tests::*;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).unwrap()
}

/// Two backends and plugin `lb` (pin-first unless `file` says otherwise).
fn setup(file: &str, plugin_extra: &str, admin_extra: &str) -> (Proc, std::net::SocketAddr, Proc, Proc) {
    let first = backend("first", &[]);
    let last = backend("last", &[]);
    // A deadline a loaded debug gateway meets: a deadline hit would fall
    // back to round robin and serve "last" without any swap.
    let extra = if plugin_extra.contains("limits") { plugin_extra.to_string() } else { format!("{plugin_extra}\nlimits = {{ deadline_ms = 200 }}") };
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", file, &extra),
        upstream("web", Some("lb"), &[(&first, 1), (&last, 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, admin_extra);
    (gw, admin, first, last)
}

fn put(admin: std::net::SocketAddr, name: &str, body: &[u8]) -> Response {
    let (k, v) = bearer();
    request(admin, "PUT", &format!("/plugins/{name}"), &[(k, &v)], body)
}

fn post(admin: std::net::SocketAddr, path: &str) -> Response {
    let (k, v) = bearer();
    request(admin, "POST", path, &[(k, &v)], &[])
}

fn admin_get(admin: std::net::SocketAddr, path: &str) -> Response {
    let (k, v) = bearer();
    get(admin, path, &[(k, &v)])
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn every_endpoint_but_healthz_needs_the_token() {
    let (_gw, admin, _a, _b) = setup("pin_first", "", "");
    assert_eq!(get(admin, "/healthz", &[]).status, 200);
    for path in ["/plugins", "/upstreams", "/metrics"] {
        assert_eq!(get(admin, path, &[]).status, 401, "{path} without a token");
        assert_eq!(get(admin, path, &[("Authorization", "Bearer wrong-token-wrong-token")]).status, 401, "{path}");
        assert_eq!(admin_get(admin, path).status, 200, "{path} with the token");
    }
    let r = request(admin, "PUT", "/plugins/lb", &[], &read("pin_last"));
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains("bearer token"), "{r:?}");
}

#[test]
fn bad_swaps_are_refused_and_the_old_plugin_keeps_serving() {
    // pin-first ignores its config; round-robin rejects the unknown key.
    let (gw, admin, _a, _b) = setup("pin_first", "config = { sticky = true }", "max_body_mb = 1");
    let served = |gw: &Proc| tally(gw.addr, "/", 6, &[]);
    assert_eq!(served(&gw).get("first"), Some(&6));

    let r = put(admin, "ghost", &read("pin_last"));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("ghost"), "{r:?}");

    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("not wasm", b"hello, not a component".to_vec(), "not a WebAssembly file"),
        ("wrong world", read("wrong_world"), "lb-policy world"),
        ("rejected config", read("round_robin"), "sticky"),
    ];
    for (what, bytes, reason) in cases {
        let r = put(admin, "lb", &bytes);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(json(&r)["error"].as_str().unwrap().contains(reason), "{what}: {r:?}");
        assert_eq!(served(&gw).get("first"), Some(&6), "{what}: old plugin still serves");
    }

    let r = put(admin, "lb", &vec![0u8; 2 << 20]);
    assert_eq!(r.status, 413, "{r:?}");

    let r = post(admin, "/plugins/lb/rollback");
    assert_eq!(r.status, 409, "nothing to roll back to yet: {r:?}");
    assert_eq!(admin_get(admin, "/nope").status, 404);
    let (k, v) = bearer();
    assert_eq!(request(admin, "DELETE", "/plugins/lb", &[(k, &v)], &[]).status, 405);

    let plugins = json(&admin_get(admin, "/plugins"));
    assert_eq!(plugins[0]["version"], 1, "{plugins}");
    assert_eq!(plugins[0]["sha256"].as_str().unwrap().len(), 64, "{plugins}");
    assert!(plugins[0]["hooks"]["select"]["calls"].as_u64().unwrap() >= 24, "{plugins}");
}

/// One admin operation of the swap run and what it should leave serving.
struct Swap {
    started: Instant,
    done: Instant,
    serves: &'static str,
}

#[test]
fn fifty_swaps_under_load_fail_no_request() {
    // The default 5 ms deadline is wall time; a debug build on 2 busy cores
    // can be preempted that long, and a fallback would blur the versions.
    let (gw, admin, _a, _b) = setup("pin_first", "limits = { deadline_ms = 500 }", "");
    let bytes = [(read("pin_first"), "first"), (read("pin_last"), "last")];
    let load = Load::start(gw.addr, "/", 32, 200_000, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(200));

    let (mut cur, mut prev): (usize, Option<usize>) = (0, None);
    let mut swaps = Vec::new();
    let mut last_version = 1;
    for i in 0..50 {
        let started = Instant::now();
        let r = if i % 5 == 4 && prev.is_some() {
            let r = post(admin, "/plugins/lb/rollback");
            std::mem::swap(&mut cur, prev.as_mut().unwrap());
            r
        } else {
            let next = 1 - cur;
            let r = put(admin, "lb", &bytes[next].0);
            prev = Some(cur);
            cur = next;
            let v = json(&r)["version"].as_u64().unwrap();
            assert!(v > last_version, "versions grow: {v} after {last_version}");
            last_version = v;
            r
        };
        assert_eq!(r.status, 200, "swap {i}: {r:?}");
        swaps.push(Swap { started, done: Instant::now(), serves: bytes[cur].1 });
        // Long enough for requests to start and end between two swaps even
        // when a debug build on 2 busy cores answers in tens of ms.
        std::thread::sleep(Duration::from_millis(100));
    }
    let (samples, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed requests, first: {:?}", errors.len(), errors.first());
    assert!(samples.iter().all(|s| s.status == 200), "non-200 during swaps");

    // A request that started after swap k finished and ended before swap
    // k+1 started was routed in between: version k's policy must serve it.
    let mut checked = 0;
    for (k, swap) in swaps.iter().enumerate() {
        let until = swaps.get(k + 1).map(|s| s.started);
        let window = samples.iter().filter(|s| s.start > swap.done && until.is_none_or(|u| s.end < u));
        for s in window {
            if s.backend != swap.serves {
                let log: Vec<String> = gw.log_text().lines().filter(|l| !l.contains("INFO")).map(str::to_string).collect();
                panic!(
                    "request after swap {k} served by {} instead of {} (it started {:?} after the swap and took {:?}); gateway log:\n{}",
                    s.backend,
                    swap.serves,
                    s.start - swap.done,
                    s.end - s.start,
                    log.join("\n")
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "too few requests landed between swaps to judge ({checked})");
}

#[test]
fn state_carries_across_a_swap() {
    // One instance, one client: round robin's rotation is observable.
    let backends: Vec<Proc> = (0..3).map(|i| backend(&format!("b{i}"), &[])).collect();
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", "round_robin", "limits = { instances = 1, deadline_ms = 200 }"),
        upstream("web", Some("lb"), &[(&backends[0], 1), (&backends[1], 1), (&backends[2], 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let before: Vec<String> = (0..2).map(|_| get(gw.addr, "/", &[]).backend().to_string()).collect();
    assert_eq!(put(admin, "lb", &read("round_robin")).status, 200);
    let after = get(gw.addr, "/", &[]).backend().to_string();
    let names = ["b0", "b1", "b2"];
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert_eq!(pos(&before[1]), (pos(&before[0]) + 1) % 3, "{before:?}");
    assert_eq!(pos(&after), (pos(&before[1]) + 1) % 3, "rotation continues after the swap: {before:?} then {after}");
}

/// Plugin `lb` loaded from a copy of pin-first in a temp dir, watched every
/// `watch_ms`, over backends "first" and "last".
fn plugin_file_setup(watch_ms: u64) -> (tempfile::TempDir, std::path::PathBuf, String, [Proc; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.wasm");
    std::fs::write(&path, read("pin_first")).unwrap();
    let backends = [backend("first", &[]), backend("last", &[])];
    let cfg = format!(
        "{SERVER}[plugins.lb]\npath = {:?}\nwatch_ms = {watch_ms}\nlimits = {{ deadline_ms = 200 }}\n{}",
        path.to_string_lossy(),
        upstream("web", Some("lb"), &[(&backends[0], 1), (&backends[1], 1)], "")
    );
    (dir, path, cfg, backends)
}

#[test]
fn changed_file_is_reloaded() {
    let (dir, path, cfg, _backends) = plugin_file_setup(100);
    let gw = gateway(&cfg);
    assert_eq!(get(gw.addr, "/", &[]).backend(), "first");
    // A broken file is refused; the running version stays.
    std::fs::write(dir.path().join("tmp"), b"garbage").unwrap();
    std::fs::rename(dir.path().join("tmp"), &path).unwrap();
    eventually(20, "the broken file is refused", || gw.log_text().contains("swap refused"));
    assert_eq!(get(gw.addr, "/", &[]).backend(), "first");
    std::fs::write(dir.path().join("tmp"), read("pin_last")).unwrap();
    std::fs::rename(dir.path().join("tmp"), &path).unwrap();
    eventually(20, "the new file serves", || get(gw.addr, "/", &[]).backend() == "last");
}

#[test]
fn sighup_reloads_plugins() {
    let (_dir, path, cfg, _backends) = plugin_file_setup(0);
    let (gw, admin) = gateway_with_admin(&cfg, "");
    std::fs::write(&path, read("pin_last")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(gw.addr, "/", &[]).backend(), "first", "watching is off: no reload without a signal");
    let ok = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    eventually(20, "SIGHUP swaps the plugin", || get(gw.addr, "/", &[]).backend() == "last");
    let plugins = json(&admin_get(admin, "/plugins"));
    assert_eq!(plugins[0]["source"], "sighup", "{plugins}");
}

#[test]
fn metrics_show_hooks_traps_fallbacks_and_plugin_counters() {
    let a = backend("a", &[]);
    let b = backend("b", &[]);
    let cfg = format!(
        "{SERVER}{}{}{}[[upstreams]]\nname = \"pinned\"\nlb = \"pin\"\nbackends = [{{ address = \"{}\" }}]\n[[routes]]\npath_prefix = \"/pinned\"\nupstream = \"pinned\"\n",
        // Wall-time deadline: a debug build on 2 busy cores can be preempted
        // past the 5 ms default, and a deadline hit is not the trap counted here.
        plugin_table("bad", "misbehave", "config = { mode = \"trap\" }\nlimits = { deadline_ms = 500 }"),
        plugin_table("pin", "pin_first", ""),
        upstream("web", Some("bad"), &[(&a, 1), (&b, 1)], ""),
        a.addr
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    tally(gw.addr, "/", 4, &[]);
    tally(gw.addr, "/pinned", 3, &[]);
    let text = admin_get(admin, "/metrics").body;
    let samples = parse_prometheus(&text);
    let value = |name: &str, labels: &[&str]| {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|x| l.contains(x)))
            .map(|(_, _, v)| *v)
            .sum::<f64>()
    };
    assert!(value("switchyard_plugin_call_duration_seconds_count", &["plugin=\"pin\"", "hook=\"select\""]) >= 3.0, "{text}");
    assert!(value("switchyard_plugin_call_duration_seconds_bucket", &["plugin=\"pin\"", "hook=\"select\"", "le=\"+Inf\""]) >= 3.0);
    assert!(value("switchyard_plugin_traps_total", &["plugin=\"bad\"", "hook=\"select\""]) >= 4.0, "{text}");
    assert!(value("switchyard_plugin_fallbacks_total", &["plugin=\"bad\"", "hook=\"select\""]) >= 4.0, "{text}");
    assert_eq!(value("switchyard_plugin_counter", &["plugin=\"pin\"", "name=\"picks\""]), 3.0, "{text}");
    assert!(value("switchyard_requests_total", &["upstream=\"web\"", "status=\"200\""]) >= 4.0, "{text}");
    assert!(value("switchyard_request_duration_seconds_count", &["upstream=\"pinned\""]) >= 3.0, "{text}");
    assert_eq!(value("switchyard_backend_up", &["upstream=\"web\""]), 2.0, "{text}");
}

/// Parse the Prometheus text format strictly enough to catch a broken
/// exposition: every sample line is `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let kind = rest.split_whitespace().next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "bad comment line {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "unclosed labels in {line:?}");
                (n, l.trim_end_matches('}'))
            }
            None => (series, ""),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name in {line:?}");
        out.push((name.to_string(), labels.to_string(), value));
    }
    assert!(!out.is_empty(), "no samples in:\n{text}");
    out
}

#[test]
fn plugin_cli_inspects_and_pushes() {
    let out = std::process::Command::new(switchyard_bin()).args(["plugin", "inspect"]).arg(plugin("round_robin")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("switchyard:policy/lb@0.1.0"), "{text}");
    assert!(text.contains("lb-policy-stateful"), "{text}");
    assert!(text.contains("switchyard:policy/clock@0.1.0"), "imports listed: {text}");

    assert!(text.contains("reads the request: no"), "round robin imports no request method: {text}");
    let out = std::process::Command::new(switchyard_bin()).args(["plugin", "inspect"]).arg(plugin("consistent_hash")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reads the request: yes"), "consistent hash reads a header or the path: {text}");

    let out = std::process::Command::new(switchyard_bin()).args(["plugin", "inspect", "Cargo.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly"), "{out:?}");

    let (gw, admin, _a, _b) = setup("pin_first", "", "");
    let push = |token: &str| {
        std::process::Command::new(switchyard_bin())
            .args(["plugin", "push", "--admin", &format!("http://{admin}"), "--token", token, "lb"])
            .arg(plugin("pin_last"))
            .output()
            .unwrap()
    };
    let out = push("wrong-token-wrong-token");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    let out = push(ADMIN_TOKEN);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"version\": 2"), "{out:?}");
    assert_eq!(get(gw.addr, "/", &[]).backend(), "last");

    // Every admin action, with the address and token read from a config.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, format!("[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n")).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(switchyard_bin()).args(args).arg("--config").arg(&cfg).env_remove("SWITCHYARD_ADMIN_TOKEN").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(cli(&["plugin", "list"]).contains("\"origin\": \"admin upload\""));
    let history = cli(&["plugin", "history", "lb"]);
    assert!(history.find("\"version\": 2").unwrap() < history.find("\"version\": 1").unwrap(), "{history}");
    assert!(cli(&["plugin", "rollback", "lb"]).contains("\"version\": 1"));
    assert_eq!(get(gw.addr, "/", &[]).backend(), "first");
    assert!(cli(&["upstreams"]).contains("\"name\": \"web\""));
    let out = std::process::Command::new(switchyard_bin()).args(["plugin", "list"]).env_remove("SWITCHYARD_ADMIN_TOKEN").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE or --admin URL"), "{out:?}");
}

/// Rollback steps back through the version history (it does not toggle
/// between the last two), `GET /plugins` says where the running bytes came
/// from, and `GET /plugins/NAME/history` lists what a rollback reaches.
#[test]
fn rollback_steps_back_through_the_history() {
    let (gw, admin, _a, _b) = setup("pin_first", "", "");
    let serves = |gw: &Proc| get(gw.addr, "/", &[]).backend().to_string();
    for (file, want) in [("pin_last", "last"), ("pin_first", "first"), ("pin_last", "last")] {
        assert_eq!(put(admin, "lb", &read(file)).status, 200);
        assert_eq!(serves(&gw), want);
    }
    let plugins = json(&admin_get(admin, "/plugins"));
    assert_eq!(plugins[0]["version"], 4, "{plugins}");
    assert_eq!(plugins[0]["origin"], "admin upload", "the running bytes came from a PUT: {plugins}");
    assert_eq!(plugins[0]["history"].as_array().unwrap().len(), 3, "{plugins}");
    let history = json(&admin_get(admin, "/plugins/lb/history"));
    let numbers: Vec<u64> = history.as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [4, 3, 2, 1], "running first, then what rollbacks reach: {history}");
    assert!(history[3]["origin"].as_str().unwrap().ends_with("pin_first.wasm"), "{history}");

    for (version, want) in [(3, "first"), (2, "last"), (1, "first")] {
        let r = post(admin, "/plugins/lb/rollback");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(json(&r)["version"], version, "{r:?}");
        assert_eq!(serves(&gw), want, "after rolling back to version {version}");
    }
    let r = post(admin, "/plugins/lb/rollback");
    assert_eq!(r.status, 409, "the history is used up: {r:?}");
    assert_eq!(serves(&gw), "first");
    assert_eq!(admin_get(admin, "/plugins/ghost/history").status, 404);
}
