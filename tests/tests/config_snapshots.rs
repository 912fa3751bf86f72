//! Invalid configs: `switchyard check` names each error's key path and line.
//! Snapshots live next to the configs as `NAME.expected`; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change.

use std::path::Path;
use switchyard_tests::check;

fn snapshot(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/invalid");
    let (ok, out) = check(&dir.join(format!("{name}.toml")));
    assert!(!ok, "{name}.toml was accepted:\n{out}");
    let expected = dir.join(format!("{name}.expected"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&expected, &out).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&expected).unwrap_or_else(|_| panic!("{} missing; run with UPDATE_SNAPSHOTS=1", expected.display()));
    assert_eq!(out, want, "{name}: output differs from {}", expected.display());
}

#[test]
fn unknown_key() {
    snapshot("unknown-key");
}

#[test]
fn unknown_backend_key() {
    snapshot("unknown-backend-key");
}

#[test]
fn missing_upstream() {
    snapshot("missing-upstream");
}

#[test]
fn bad_address() {
    snapshot("bad-address");
}

#[test]
fn plugin_path_missing() {
    snapshot("plugin-path-missing");
}

#[test]
fn several_errors_all_reported() {
    snapshot("several-errors");
}

#[test]
fn wrong_type() {
    snapshot("wrong-type");
}

#[test]
fn bad_on_error() {
    snapshot("bad-on-error");
}

#[test]
fn sql_section_errors_all_reported() {
    snapshot("sql-errors");
}

#[test]
fn sql_bad_causal_mode() {
    snapshot("sql-bad-causal");
}

/// Unknown keys, bad values and semantic mistakes, all in one run.
#[test]
fn seven_mistakes_in_one_run() {
    snapshot("seven-mistakes");
}
