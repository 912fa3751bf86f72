//! Invalid configs: `switchyard check` names each error's key path and line.
//! Snapshots live next to the configs as `NAME.expected`; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change.

use std::path::Path;
use switchyard_tests::{check, plugin, plugin_dir};

fn snapshot(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/invalid");
    let source = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&source).unwrap();
    // A config naming a built plugin (`{plugin_dir}`) is checked from a
    // copy with the directory filled in; the output names the file only.
    let tmp = tempfile::tempdir().unwrap();
    let file = if text.contains("{plugin_dir}") {
        let copy = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&copy, text.replace("{plugin_dir}", &plugin_dir().to_string_lossy())).unwrap();
        copy
    } else {
        source
    };
    let (ok, out) = check(&file);
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
fn central_backups_need_servers() {
    snapshot("central-backups");
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
fn bad_canary_header() {
    snapshot("bad-canary-header");
}

#[test]
fn fleet_errors() {
    snapshot("fleet-errors");
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

/// The file of issue 21: an unknown key in an array element used to end
/// the run, hiding `retires` after it. All three, each at its line.
#[test]
fn three_typos_in_one_run() {
    snapshot("three-typos-in-one-run");
}

/// A plugin's own config errors come in the same run as the gateway's,
/// at the line of the bad key, with one prefix (its key path).
#[test]
fn plugin_config_errors_with_gateway_errors() {
    snapshot("plugin-config-with-gateway-errors");
}

/// `check` says which `on_error` a plugin without one got: fail-closed for
/// a session plugin, fallback for an lb plugin. Notes, not errors.
#[test]
fn on_error_defaults_are_noted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.toml");
    let text = format!(
        "[session]\nkeys = [\"{}\"]\n\n[plugins.cart]\npath = {:?}\n\n[plugins.wrr]\npath = {:?}\n\n[plugins.rr]\npath = {:?}\non_error = \"fail-closed\"\n\n\
         [[upstreams]]\nname = \"web\"\nlb = \"wrr\"\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n\n\
         [[upstreams]]\nname = \"api\"\nlb = \"rr\"\nbackends = [{{ address = \"127.0.0.1:9002\" }}]\n\n\
         [[routes]]\nupstream = \"web\"\nsession = \"cart\"\n",
        "k".repeat(32),
        plugin("session_sticky"),
        plugin("weighted_round_robin"),
        plugin("round_robin"),
    );
    std::fs::write(&path, text).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "notes.toml: ok (3 plugins, 2 upstreams, 1 routes)\n\
         notes.toml: note: plugins.cart: on_error not set: fail-closed (the default for session plugins: a failed call answers 503, never a request without its session)\n\
         notes.toml: note: plugins.wrr: on_error not set: fallback (the default for lb plugins: a failed call is served by the builtin round robin)\n"
    );
}
