//! Plugins that trap, loop, hog memory or return nonsense: the gateway logs
//! a clear line, applies `on_error`, and keeps serving.

use switchyard_tests::*;

fn with_mode(mode: &str, on_error: &str) -> (Proc, Proc, Proc) {
    let b1 = backend("b1", &[]);
    let b2 = backend("b2", &[]);
    let extra = format!(
        "on_error = \"{on_error}\"\nlimits = {{ deadline_ms = 20, memory_mb = 8, instances = 2 }}\nconfig = {{ mode = \"{mode}\" }}"
    );
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("bad", "misbehave", &extra),
        upstream("web", Some("bad"), &[(&b1, 1), (&b2, 1)], "")
    );
    let gw = gateway(&cfg);
    (gw, b1, b2)
}

fn falls_back(mode: &str, fault: &str) {
    let (gw, _b1, _b2) = with_mode(mode, "fallback");
    let t = tally(gw.addr, "/", 10, &[]);
    assert_eq!(t.len(), 2, "fallback round robin uses both backends: {t:?}");
    let log = gw.log_text();
    assert!(log.contains(&format!("fault=\"{fault}\"")) || log.contains(&format!("fault={fault}")), "no {fault} line in:\n{log}");
    assert!(log.contains("on_error=\"fallback\"") || log.contains("on_error=fallback"), "{log}");
    // Still serving after repeated faults (trapped instances were replaced).
    assert_eq!(get(gw.addr, "/", &[]).status, 200);
}

#[test]
fn trap_falls_back() {
    falls_back("trap", "trap");
}

/// A Rust plugin's panic reaches the log with its message and where in
/// the plugin it trapped, not as a bare "error while executing".
#[test]
fn a_panic_is_logged_with_its_message_and_backtrace() {
    let (gw, _b1, _b2) = with_mode("trap", "fallback");
    assert_eq!(get(gw.addr, "/", &[]).status, 200);
    let log = gw.log_text();
    let line = log.lines().find(|l| l.contains("fault=\"trap\"") || l.contains("fault=trap")).unwrap_or_else(|| panic!("no fault line:\n{log}"));
    assert!(line.contains("misbehave: trapping on purpose"), "the panic message: {line}");
    assert!(line.contains("src/lib.rs"), "where it panicked: {line}");
    let frames = line.split("wasm backtrace:").nth(1).unwrap_or_else(|| panic!("no wasm frames: {line}"));
    assert!(frames.contains("misbehave"), "frames are named after the plugin's functions: {line}");
}

#[test]
fn infinite_loop_hits_the_deadline() {
    falls_back("spin", "deadline");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    falls_back("hog", "memory-cap");
}

#[test]
fn out_of_range_index_is_a_bad_return() {
    falls_back("out-of-range", "bad-return");
}

#[test]
fn fail_closed_answers_503() {
    let (gw, _b1, _b2) = with_mode("trap", "fail-closed");
    for _ in 0..5 {
        let r = get(gw.addr, "/", &[]);
        assert_eq!(r.status, 503);
        // The answer names the cause and the request id; no Pingora banner.
        let id = r.header("x-request-id").expect("request id header").to_string();
        assert!(r.body.contains("plugin \"bad\"") && r.body.contains("trap"), "{r:?}");
        assert!(r.body.contains(&id), "{r:?}");
        assert!(r.header("server").is_none(), "{r:?}");
    }
    let r = get(gw.addr, "/", &[("x-request-id", "client-chosen-1")]);
    assert!(r.body.contains("request id: client-chosen-1"), "{r:?}");
    assert!(gw.log_text().contains("fail-closed"), "{}", gw.log_text());
}

#[test]
fn wrong_world_and_rejected_config_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text = format!(
        "{}{}[[upstreams]]\nname = \"a\"\nlb = \"wrong\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
         [[upstreams]]\nname = \"b\"\nlb = \"picky\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n",
        plugin_table("wrong", "wrong_world", ""),
        plugin_table("picky", "misbehave", "config = { mode = \"reject-config\" }"),
    ) + &format!(
        "{}[[upstreams]]\nname = \"c\"\nlb = \"typos\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n",
        plugin_table("typos", "weighted_round_robin", "config = { stiky = true, bogus = 2 }")
    );
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("plugin \"wrong\"") && out.contains("lb-policy world"), "{out}");
    // One prefix: the key path, at the line of the plugin's config.
    let picky = out.lines().find(|l| l.contains("misbehave: this config is rejected on purpose")).unwrap_or_else(|| panic!("{out}"));
    assert!(picky.ends_with(": line 6: plugins.picky.config: misbehave: this config is rejected on purpose"), "{picky}");
    // Every problem of a plugin's config in one run, each at its key.
    for key in ["stiky", "bogus"] {
        let line = out.lines().find(|l| l.contains(&format!("plugins.typos.config.{key}: unknown field"))).unwrap_or_else(|| panic!("{key}: {out}"));
        assert!(line.contains(": line 17: "), "{line}");
        assert!(!line.contains("invalid plugin config") && !line.contains("plugin \"typos\""), "one prefix: {line}");
    }
}

/// A `configure` that sleeps is away in a host await, which the epoch
/// never interrupts: the load fails at the setup bound (4x the 1 s setup
/// deadline) as a deadline hit, instead of hanging for the 30 s asked.
#[test]
fn a_sleeping_configure_fails_the_load_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sleepy.toml");
    let text = format!(
        "{}[[upstreams]]\nname = \"a\"\nlb = \"sleepy\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n",
        plugin_table("sleepy", "misbehave", "config = { mode = \"sleep-configure\" }")
    );
    std::fs::write(&cfg, text).unwrap();
    let started = std::time::Instant::now();
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("plugin \"sleepy\"") && out.contains("configure ran past its"), "{out}");
    // Not a timing assertion: anything well under the 30 s asked shows
    // the call was cut.
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the load waited out the sleep: {:?}", started.elapsed());
}

/// A session plugin without `on_error` fails closed: its fault answers
/// 503, never a request served without its session (it used to fall back
/// to no session at all).
#[test]
fn a_failing_session_plugin_without_on_error_answers_503() {
    let b = backend("b1", &[]);
    let cfg = format!(
        "{SERVER}[session]\nkeys = [\"{}\"]\n{}{}session = \"sess\"\n",
        "k".repeat(32),
        plugin_table("sess", "misbehave_session", "config = { mode = \"trap\" }"),
        upstream("web", None, &[(&b, 1)], "")
    );
    let gw = gateway(&cfg);
    for _ in 0..3 {
        let r = get(gw.addr, "/", &[]);
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.contains("plugin \"sess\""), "{r:?}");
    }
    let log = gw.log_text();
    assert!(log.contains("on_error=\"fail-closed\"") || log.contains("on_error=fail-closed"), "{log}");
}

#[test]
fn not_wasm_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[plugins.junk]\npath = \"junk.wasm\"\n").unwrap();
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("plugin \"junk\": load: not a WebAssembly file"), "{out}");
}

/// A plugin that fails every request logs one line per second with a
/// count, not one per request.
#[test]
fn repeated_faults_are_rate_limited_in_the_log() {
    let (gw, _b1, _b2) = with_mode("trap", "fallback");
    let t = tally(gw.addr, "/", 200, &[]);
    assert_eq!(t.values().sum::<usize>(), 200, "{t:?}");
    let log = gw.log_text();
    let lines = log.lines().filter(|l| l.contains("fault=\"trap\"") || l.contains("fault=trap")).count();
    assert!((1..=50).contains(&lines), "{lines} fault lines for 200 faults:\n{log}");
}

/// A session strategy gets the backend response headers it names in
/// `needs.response-headers` (case-insensitive, every value of a repeated
/// one), all of them when it names none, and a name that is not a header
/// name fails the load with that name.
#[test]
fn a_session_plugin_gets_only_the_response_headers_it_names() {
    let b = backend("b1", &[]);
    let cfg = |config: &str| {
        format!(
            "{SERVER}[session]\nkeys = [\"{}\"]\n{}{}session = \"sess\"\n",
            "k".repeat(32),
            plugin_table("sess", "misbehave_session", &format!("config = {{ mode = \"echo\"{config} }}")),
            upstream("web", None, &[(&b, 1)], "")
        )
    };
    let saw = |config: &str| {
        let gw = gateway(&cfg(config));
        let r = get(gw.addr, "/", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r.header("x-saw").expect("the plugin's header").to_string()
    };
    let all = saw("");
    let names: Vec<&str> = all.split(',').collect();
    assert!(names.contains(&"content-length") && names.contains(&"content-type"), "with no names it gets every header: {all}");
    assert_eq!(saw(", response_headers = [\"Content-Type\", \"x-not-sent\"]"), "content-type");
    assert_eq!(saw(", response_headers = []"), "");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let bad = cfg(", response_headers = [\"bad name\"]");
    std::fs::write(&path, bad.replace("{listen}", &format!("127.0.0.1:{}", free_port()))).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("response header \"bad name\""), "{out}");
}
