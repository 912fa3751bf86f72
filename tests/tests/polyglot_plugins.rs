//! The round-robin policy written in Python (componentize-py) and in
//! JavaScript (componentize-js), loaded into the real gateway: same WIT,
//! same distribution as the Rust one, same config errors.

use switchyard_tests::*;

fn spreads_evenly(file: &str) {
    let b: Vec<Proc> = (1..=3).map(|i| backend(&format!("b{i}"), &[])).collect();
    // Interpreters need more than the 32 MiB default.
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("rr", file, "limits = { instances = 2 }"),
        upstream("web", Some("rr"), &[(&b[0], 1), (&b[1], 1), (&b[2], 1)], "")
    );
    let gw = gateway(&cfg);
    let t = tally(gw.addr, "/", 150, &[]);
    assert_eq!(t.len(), 3, "{t:?}");
    // Sequential requests reuse one instance, which cycles exactly.
    assert!(t.values().all(|&c| (45..=55).contains(&c)), "{file}: {t:?}");
}

fn rejects_unknown_settings(file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n{}[[upstreams]]\nname = \"web\"\nlb = \"rr\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n[[routes]]\nupstream = \"web\"\n",
        plugin_table("rr", file, "config = { sticky = true }")
    );
    std::fs::write(&path, cfg).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("round-robin takes no settings, got: sticky"), "{file}: {out}");
}

#[test]
fn python_round_robin_spreads_evenly() {
    spreads_evenly("round_robin_py");
}

#[test]
fn javascript_round_robin_spreads_evenly() {
    spreads_evenly("round_robin_js");
}

#[test]
fn python_round_robin_rejects_unknown_settings() {
    rejects_unknown_settings("round_robin_py");
}

#[test]
fn javascript_round_robin_rejects_unknown_settings() {
    rejects_unknown_settings("round_robin_js");
}
