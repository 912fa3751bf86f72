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
