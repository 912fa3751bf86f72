//! The access log (`[log]`): JSON lines with the request's fields, the
//! Apache combined format, sampling, reopening on SIGUSR1 after a rename
//! (logrotate), a full queue dropping lines but never requests, and bad
//! config refused with its key path.

use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_tests::*;

/// A gateway over one backend, logging with `log` (the `[log]` keys
/// besides `path`) to a file in a fresh directory.
fn logged(b: &Proc, log: &str) -> (Proc, SocketAddrAndLog) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let cfg = format!("{SERVER}{}[log]\npath = {:?}\n{log}\n", upstream("web", None, &[(b, 1)], ""), file.to_string_lossy());
    (gateway(&cfg), SocketAddrAndLog { file, _dir: dir })
}

struct SocketAddrAndLog {
    file: PathBuf,
    _dir: tempfile::TempDir,
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The writer drains its queue every 10 ms: wait for `n` lines.
fn wait_lines(file: &Path, n: usize) -> Vec<String> {
    eventually(10, &format!("{n} lines in {}", file.display()), || lines(file).len() >= n);
    lines(file)
}

#[test]
fn json_lines_parse_and_carry_the_fields() {
    let b = backend("b1", &[]);
    let (gw, log) = logged(&b, "");
    let r = get(gw.addr, "/some/path?q=1", &[("x-request-id", "req-42"), ("User-Agent", "t\"est")]);
    assert_eq!(r.status, 200);
    let line = wait_lines(&log.file, 1).remove(0);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["request_id"], "req-42", "{line}");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], gw.addr.to_string());
    assert_eq!(v["path"], "/some/path");
    assert!(v.get("query").is_none(), "query is not a default field: {line}");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["tls"], false);
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 0);
    assert_eq!(v["bytes_out"].as_u64(), Some(r.body.len() as u64), "{line}");
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(v["upstream_ms"].as_f64().unwrap() <= v["duration_ms"].as_f64().unwrap(), "{line}");
    assert_eq!(v["route"], "*/", "any host, prefix /");
    assert_eq!(v["upstream"], "web");
    assert_eq!(v["backend"], b.addr.to_string());
    assert_eq!(v["retries"], 0);
    assert_eq!(v["session"], serde_json::Value::Null, "no session strategy on the route");
    assert_eq!(v["access"], serde_json::Value::Null);
    assert_eq!(v["plugin_faults"], 0);
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{line}");

    // A chosen field list is kept in its order.
    drop(gw);
    let (gw, log) = logged(&b, "fields = [\"status\", \"path\", \"query\"]");
    get(gw.addr, "/x?a=%22b", &[]);
    let line = wait_lines(&log.file, 1).remove(0);
    assert_eq!(line, "{\"status\":200,\"path\":\"/x\",\"query\":\"a=%22b\"}");
}

#[test]
fn combined_lines_match_the_apache_format() {
    let b = backend("b1", &[]);
    let (gw, log) = logged(&b, "format = \"combined\"");
    get(gw.addr, "/a/b?c=d", &[("Referer", "http://r.example/"), ("User-Agent", "agent \"quoted\"")]);
    get(gw.addr, "/second", &[]);
    let got = wait_lines(&log.file, 2);
    // The regex log tools (GoAccess, AWStats, fail2ban) use for combined.
    let re = regex::Regex::new(r#"^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (\S+)\s*(\S+)?\s*" (\d{3}) (\S+) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#).unwrap();
    for line in &got {
        assert!(re.is_match(line), "not combined: {line}");
    }
    let c = re.captures(&got[0]).unwrap();
    assert_eq!((&c[1], &c[5], &c[6], &c[7], &c[8]), ("127.0.0.1", "GET", "/a/b?c=d", "HTTP/1.1", "200"), "{}", got[0]);
    assert_eq!(&c[10], "http://r.example/");
    assert_eq!(&c[11], "agent \\x22quoted\\x22", "quotes escaped as nginx does");
}

#[test]
fn sample_zero_writes_nothing() {
    let b = backend("b1", &[]);
    let (gw, log) = logged(&b, "sample = 0.0");
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(lines(&log.file).is_empty(), "{:?}", lines(&log.file));
}

/// logrotate's way: rename the file, send SIGUSR1 (`postrotate`), and the
/// gateway writes a new file under the old name.
#[test]
fn sigusr1_after_a_rename_writes_a_new_file() {
    let b = backend("b1", &[]);
    let (gw, log) = logged(&b, "");
    get(gw.addr, "/before", &[]);
    wait_lines(&log.file, 1);
    let rotated = log.file.with_extension("log.1");
    std::fs::rename(&log.file, &rotated).unwrap();
    let status = std::process::Command::new("kill").args(["-USR1", &gw.pid().to_string()]).status().unwrap();
    assert!(status.success());
    eventually(10, "the gateway reopens its log under the old name", || log.file.exists());
    get(gw.addr, "/after", &[]);
    let now = wait_lines(&log.file, 1);
    assert!(now[0].contains("\"/after\""), "{now:?}");
    let old = lines(&rotated);
    assert_eq!(old.len(), 1, "{old:?}");
    assert!(old[0].contains("\"/before\""), "{old:?}");
    assert_eq!(get(gw.addr, "/", &[]).status, 200, "the gateway is still up");
}

/// A queue of one line: a burst overflows it, lines are dropped and
/// counted, and every request is still answered.
#[test]
fn a_full_queue_drops_lines_never_requests() {
    let b = backend("b1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let cfg = format!("{SERVER}{}[log]\npath = {:?}\nqueue = 1\n", upstream("web", None, &[(&b, 1)], ""), file.to_string_lossy());
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let load = Load::start(gw.addr, "/", 16, 200, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let (samples, errors) = load.finish();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(samples.len() >= 200, "only {} requests", samples.len());
    assert!(samples.iter().all(|s| s.status == 200), "every request answered 200");
    eventually(10, "the writer caught up", || {
        let n = lines(&file).len() as f64;
        let dropped = metric(admin, "switchyard_access_log_dropped_total", &[]);
        // The admin's own /metrics requests are not on the proxy listener.
        n + dropped == samples.len() as f64
    });
    let dropped = metric(admin, "switchyard_access_log_dropped_total", &[]);
    assert!(dropped > 0.0, "a burst of {} over a queue of 1 dropped nothing", samples.len());
    for l in lines(&file) {
        serde_json::from_str::<serde_json::Value>(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn bad_log_config_is_refused_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[upstreams]]\nname = \"a\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n\
         [log]\nformat = \"xml\"\nsample = 2.0\nqueue = 0\nfields = [\"status\", \"colour\"]\npath = \"no/such/dir/a.log\"\n",
    )
    .unwrap();
    let (ok, out) = check(&file);
    assert!(!ok, "{out}");
    for want in [
        "line 7: log.format: \"xml\" is not json or combined",
        "line 8: log.sample: 2 is not a share of requests",
        "line 9: log.queue: must be 1..=1048576",
        "line 10: log.fields: unknown field \"colour\"",
        "line 11: log.path:",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    std::fs::write(&file, "[[upstreams]]\nname = \"a\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n[log]\nformat = \"combined\"\npath = \"-\"\n").unwrap();
    let (ok, out) = check(&file);
    assert!(ok, "{out}");
}

/// The session outcome comes from the store calls the route's session
/// plugin made: a login stores a new session, the next requests load it,
/// and with memcached down the line says store_error.
#[test]
fn session_outcomes_are_logged() {
    let mut mc = switchyard_tests::memcached::Memcached::start();
    let b = backend("b1", &["--sessions", "header"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let cfg = format!(
        "{SERVER}[session]\nkeys = [\"test-session-signing-key-0123456789abcdef\"]\n[session.central]\nservers = [\"{}\"]\ntimeout_ms = 200\n\
         [plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\n[[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[routes]]\nupstream = \"app\"\nsession = \"sess\"\n[log]\npath = {:?}\nfields = [\"path\", \"status\", \"session\", \"plugin_faults\"]\n",
        mc.addr,
        plugin("session_centralized").to_string_lossy(),
        b.addr,
        file.to_string_lossy()
    );
    let gw = gateway(&cfg);
    let mut alice = switchyard_tests::browser::Browser::new(gw.addr);
    assert_eq!(alice.json("POST", "/cart/login?user=alice").0, 200);
    assert_eq!(alice.json("POST", "/cart/add?item=x").0, 200);
    let got = wait_lines(&file, 2);
    let v: Vec<serde_json::Value> = got.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(["new", "renewed"].contains(&v[0]["session"].as_str().unwrap_or("")), "{got:?}");
    assert_eq!(v[1]["session"], "loaded", "{got:?}");
    mc.stop();
    alice.json("GET", "/cart");
    let got = wait_lines(&file, 3);
    let last: serde_json::Value = serde_json::from_str(&got[2]).unwrap();
    assert_eq!(last["session"], "store_error", "{got:?}");
}

/// A plugin that faults is counted on the line of the request it served:
/// `trap-half` traps on every other lb call, `on_error = "fallback"` serves
/// those requests by round robin, so every request answers and the faults
/// show only on the lines of the trapped calls.
#[test]
fn plugin_faults_are_counted_per_request() {
    let b = backend("b1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let cfg = format!(
        "{SERVER}{}on_error = \"fallback\"\n{}[log]\npath = {:?}\nfields = [\"path\", \"status\", \"plugin_faults\"]\n",
        plugin_table("bad", "misbehave", "config = { mode = \"trap-half\" }"),
        upstream("web", Some("bad"), &[(&b, 1)], ""),
        file.to_string_lossy()
    );
    let gw = gateway(&cfg);
    for i in 0..6 {
        assert_eq!(get(gw.addr, &format!("/r{i}"), &[]).status, 200, "the fallback serves request {i}");
    }
    let got = wait_lines(&file, 6);
    let faults: Vec<u64> = got.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["plugin_faults"].as_u64().unwrap()).collect();
    assert_eq!(faults.iter().sum::<u64>(), 3, "every other call trapped: {got:?}");
    assert!(faults.iter().all(|&f| f <= 1), "one pick per request: {got:?}");
}
