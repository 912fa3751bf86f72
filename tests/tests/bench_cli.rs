//! `switchyard bench` end to end: a short lb-capacity run comparing a
//! shipped plugin with a `.wasm` given by path, and the errors for an
//! unknown scenario, an unknown plugin and a plugin of the wrong world.

use std::process::Command;
use switchyard_tests::*;

/// `switchyard bench ARGS`: (exit ok, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let bin = switchyard_bin();
    let tool = bin.with_file_name("switchyard-bench");
    assert!(
        tool.is_file(),
        "{} is missing: run `cargo build -p switchyard -p switchyard-benches` (scripts/test.sh does it)",
        tool.display()
    );
    let out = Command::new(bin).arg("bench").args(args).env("SWITCHYARD_PLUGIN_DIR", plugin_dir()).output().expect("run switchyard bench");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn compares_a_shipped_plugin_with_a_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let own = plugin("least_connections");
    let plugins = format!("round-robin,{}", own.display());
    let out = dir.path().to_string_lossy().to_string();
    let (ok, stdout, stderr) = bench(&["lb-capacity", "--plugins", &plugins, "--reps", "1", "--quick", "--out", &out]);
    assert!(ok, "switchyard bench failed:\n{stdout}\n{stderr}");

    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("report.html");
    assert!(html.contains("<svg") && html.contains("Claim"), "report.html has no plot or no claim");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).expect("results.json")).unwrap();
    let rows = json["rows"].as_array().expect("rows");
    for label in ["round-robin", "least_connections"] {
        assert!(rows.iter().any(|r| r["plugin"] == label), "no row for {label} in results.json");
        assert!(stdout.contains(&format!("| {label} |")), "the markdown names no {label}:\n{stdout}");
    }
    assert!(json["machine"]["command"].as_str().unwrap_or("").contains("lb-capacity"), "{}", json["machine"]);
    assert!(stdout.contains("**Claim**") && stdout.contains("not enough repetitions"), "{stdout}");
}

#[test]
fn unknown_scenario_and_plugin_are_named() {
    let (ok, _, stderr) = bench(&["lb-nonsense"]);
    assert!(!ok && stderr.contains("lb-nonsense") && stderr.contains("lb-capacity"), "{stderr}");
    let (ok, _, stderr) = bench(&["lb-capacity", "--plugins", "round-robin,no-such-policy"]);
    assert!(!ok && stderr.contains("no-such-policy") && stderr.contains("least-connections"), "{stderr}");
}

#[test]
fn a_plugin_of_the_wrong_world_gets_the_gateways_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_string_lossy().to_string();
    let (ok, _, stderr) = bench(&["lb-capacity", "--plugins", "session-sticky", "--reps", "1", "--quick", "--out", &out]);
    assert!(!ok && stderr.contains("rejected") && stderr.contains("lb"), "{stderr}");
}

/// `switchyard bench live`: a running gateway's lb canary, read from its
/// admin API, written as a report: both versions over time, their call
/// latency distributions as bars, what they decided, and the verdict.
#[test]
fn live_reports_a_running_canary_from_the_gateways_figures() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let cfg = format!("{SERVER}{}{}", plugin_table("lb", "pin_last", ""), upstream("web", Some("lb"), &[(&a, 1), (&b, 1)], "health = { check = \"none\" }"));
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let (k, v) = bearer();
    let r = request(admin, "PUT", "/plugins/lb?canary=50&window=1000000", &[(k, v.as_str())], &std::fs::read(plugin("pin_first")).unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..30 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_string_lossy().to_string();
    let url = format!("http://{admin}");
    let run = |extra: &[&str]| {
        let bin = switchyard_bin();
        let mut args = vec!["bench", "live", "--admin", &url, "lb", "--duration", "1.5", "--every", "0.5", "--out", &out];
        args.extend_from_slice(extra);
        Command::new(bin).args(&args).env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN).output().expect("run switchyard bench live")
    };
    let o = run(&[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "live");
    assert_eq!(json["plugins"], serde_json::json!(["baseline v1", "canary v2"]), "{}", json["plugins"]);
    let timeline = json["rows"].as_array().unwrap().iter().filter(|r| r["group"] == "timeline").count();
    assert!(timeline >= 4, "two versions, at least two readings each: {timeline}");
    let bars = json["plots"].as_array().unwrap().iter().find(|p| p["group"] == "call latency").expect("a call latency chart");
    assert!(bars["categories"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("≤ ")), "{bars}");
    assert!(json["claim"]["text"].as_str().unwrap().contains("judged after 1000000 canary calls"), "{}", json["claim"]);
    assert!(json["claim"]["holds"].is_null() && stdout.contains("still running"), "{stdout}");
    // One client address: one version routed all 30 requests.
    let last = |label: &str| json["rows"].as_array().unwrap().iter().rev().find(|r| r["group"] == "final" && r["plugin"] == label).map(|r| r["metrics"]["routed"].as_f64().unwrap()).unwrap();
    assert_eq!(last("baseline v1") + last("canary v2"), 30.0, "{}", json["rows"]);
    // A plugin with no canary, and a wrong token, are named.
    let o = Command::new(switchyard_bin()).args(["bench", "live", "--admin", &url, "nosuch", "--duration", "1"]).env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nosuch"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--token", "wrong-token-0123456789"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("401"), "{}", String::from_utf8_lossy(&o.stderr));
}
