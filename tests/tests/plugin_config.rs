//! `PUT /plugins/NAME/config`: a live plugin's config table changes without
//! a restart and without new bytes; a table the plugin rejects changes
//! nothing; a rollback brings the old table back; new bytes keep the
//! running table.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_tests::*;

const KEY: &str = "plugin-config-jwt-signing-key-0123456789ab";

fn token(roles: &[&str]) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    encode(&Header::default(), &serde_json::json!({ "sub": "ann", "roles": roles, "exp": exp }), &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

/// rbac on `/doc`, granting `read:doc` to viewers, in front of `app`. Its
/// call deadline is 500 ms: the default 5 ms of wall time ran out once on
/// the first call after start on a busy CI machine.
fn config(app: &Proc) -> String {
    format!(
        "{SERVER}[access]\njwt_keys = [\"{KEY}\"]\n[plugins.rbac]\npath = {:?}\nlimits = {{ deadline_ms = 500 }}\nconfig = {{ grants = {{ viewer = [\"read:doc\"] }} }}\n{}\
         [[routes]]\npath_prefix = \"/doc\"\nupstream = \"web\"\naccess = \"rbac\"\nobject = {{ kind = \"doc\" }}\n",
        plugin("access_rbac"),
        upstream("web", None, &[(app, 1)], "")
    )
}

#[test]
fn a_plugin_config_table_changes_live_and_a_bad_one_changes_nothing() {
    let app = backend("app", &[]);
    let (gw, admin) = gateway_with_admin(&config(&app), "");
    let auth = format!("Bearer {}", token(&["viewer"]));
    let doc = || get(gw.addr, "/doc", &[("Authorization", auth.as_str())]);
    assert_eq!(doc().status, 200);

    let (k, v) = bearer();
    let put = |body: &str| request(admin, "PUT", "/plugins/rbac/config", &[(k, v.as_str()), ("Content-Type", "application/json")], body.as_bytes());
    let r = put(r#"{"grants": {"editor": ["read:doc"]}}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"editor\""), "the answer shows the config now running: {}", r.body);
    let denied = doc();
    assert_eq!(denied.status, 403, "viewers no longer read: {denied:?}");
    assert!(denied.body.contains("no role grants read:doc"), "{}", denied.body);

    // The plugin rejects this table: 400 with its reason, nothing changes.
    let r = put(r#"{"grants": {"editor": ["read-doc"]}}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("grants.editor") && r.body.contains("is not right:kind"), "{}", r.body);
    assert_eq!(doc().status, 403, "the accepted table still runs");
    let r = put("[1, 2]");
    assert!(r.status == 400 && r.body.contains("JSON object"), "{r:?}");

    // Rollback: the table from the file again.
    let r = request(admin, "POST", "/plugins/rbac/rollback", &[(k, v.as_str())], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(doc().status, 200);

    // New bytes keep the running table.
    put(r#"{"grants": {"editor": ["read:doc"]}}"#);
    let bytes = std::fs::read(plugin("access_rbac")).unwrap();
    let r = request(admin, "PUT", "/plugins/rbac", &[(k, v.as_str())], &bytes);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"editor\""), "{}", r.body);
    assert_eq!(doc().status, 403, "still the admin's table");

    // New bytes with their own table, in one PUT (the query's `config`).
    let query = "/plugins/rbac?config=%7B%22grants%22%3A%7B%22viewer%22%3A%5B%22read%3Adoc%22%5D%7D%7D";
    let r = request(admin, "PUT", query, &[(k, v.as_str())], &bytes);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(doc().status, 200, "the table that came with the bytes runs");
    let r = request(admin, "PUT", "/plugins/rbac?config=%5B1%5D", &[(k, v.as_str())], &bytes);
    assert!(r.status == 400 && r.body.contains("config query parameter must be a JSON object"), "{r:?}");
}

/// The same through the CLI: `switchyard plugin config` and `switchyard reload`.
#[test]
fn the_cli_sets_a_config_table_and_reloads() {
    let app = backend("app", &[]);
    let (gw, admin) = gateway_with_admin(&config(&app), "");
    let auth = format!("Bearer {}", token(&["viewer"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rbac.json");
    std::fs::write(&file, r#"{"grants": {"editor": ["read:doc"]}}"#).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(switchyard_bin())
            .args(args)
            .args(["--admin", &format!("http://{admin}"), "--token", ADMIN_TOKEN])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = cli(&["plugin", "config", "rbac", file.to_str().unwrap()]);
    assert!(ok && out.contains("\"editor\""), "{out}");
    assert_eq!(get(gw.addr, "/doc", &[("Authorization", auth.as_str())]).status, 403);
    std::fs::write(&file, "[1]").unwrap();
    let (ok, out) = cli(&["plugin", "config", "rbac", file.to_str().unwrap()]);
    assert!(!ok && out.contains("not a JSON object"), "{out}");
    let (ok, out) = cli(&["reload"]);
    assert!(ok && out.contains("\"plugins\"") && out.contains("\"errors\": []"), "{out}");
    assert!(out.contains("\"unchanged\": true"), "the file did not change: {out}");
    // `plugin push --config-table`: new bytes with the table in the file.
    std::fs::write(&file, r#"{"grants": {"viewer": ["read:doc"]}}"#).unwrap();
    let wasm = plugin("access_rbac");
    let (ok, out) = cli(&["plugin", "push", "rbac", wasm.to_str().unwrap(), "--config-table", file.to_str().unwrap()]);
    assert!(ok && out.contains("\"viewer\""), "{out}");
    assert_eq!(get(gw.addr, "/doc", &[("Authorization", auth.as_str())]).status, 200);
}
