//! Whole-config reload without a restart (SIGHUP, `POST /config/reload`,
//! `switchyard reload --config-only`): routes, upstreams, backends, weights and
//! plugin config tables change under load with no failed request; a file
//! with an error changes nothing and says why; health and stats carry over
//! for backends that stay.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_tests::*;

/// Where [`gateway`] wrote the config the process runs.
fn config_file(gw: &Proc) -> std::path::PathBuf {
    gw.log.with_file_name("switchyard.toml")
}

/// Admin `[admin]` section as `gateway_with_admin` writes it, so a
/// rewritten file keeps the restart-only part the same.
fn admin_section(admin: SocketAddr) -> String {
    format!("\n[admin]\nlisten = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n\n")
}

fn post_reload(admin: SocketAddr) -> Response {
    let (k, v) = bearer();
    request(admin, "POST", "/config/reload", &[(k, v.as_str())], b"")
}

fn upstreams(admin: SocketAddr) -> serde_json::Value {
    let (k, v) = bearer();
    serde_json::from_str(&get(admin, "/upstreams", &[(k, v.as_str())]).body).unwrap()
}

/// `web` over `members`, always on `/app`; `extra` (one backend) on
/// `/extra` when `extra` is given.
fn routes(members: &[(&Proc, u32)], extra: Option<&Proc>) -> String {
    let list: Vec<String> = members.iter().map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr)).collect();
    let mut text = format!(
        "{}[[upstreams]]\nname = \"web\"\nlb = \"wrr\"\nbackends = [{}]\nhealth = {{ check = \"none\", max_failures = 1000 }}\n[[routes]]\npath_prefix = \"/app\"\nupstream = \"web\"\n",
        plugin_table("wrr", "weighted_round_robin", ""),
        list.join(", ")
    );
    if let Some(x) = extra {
        text += &format!("[[upstreams]]\nname = \"extra\"\nbackends = [{{ address = \"{}\" }}]\n[[routes]]\npath_prefix = \"/extra\"\nupstream = \"extra\"\n", x.addr);
    }
    text
}

/// One config's `web` members and its `/extra` backend, if any.
type Shape<'a> = (&'a [(&'a Proc, u32)], Option<&'a Proc>);

#[test]
fn a_sighup_while_the_gateway_starts_is_a_reload_not_a_kill() {
    // SIGHUP's default action ends a process, and the reload service
    // listens only once Pingora runs it: a signal sent while the gateway
    // loaded its config and compiled its plugins, or just after it began
    // to listen, killed it (CI caught the second in the test below).
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let text = |members: &[(&Proc, u32)]| format!("{SERVER}{}{}", routes(members, None), admin_section(admin)).replace("{listen}", &format!("127.0.0.1:{port}"));
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, text(&[(&a, 1)])).unwrap();
    let mut gw = std::process::Command::new(switchyard_bin()).args(["run", "--config"]).arg(&file).env("RUST_LOG", "warn").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // While it starts (the Wasm lb plugin compiles): the new file, then the signal.
    std::thread::sleep(Duration::from_millis(30));
    std::fs::write(&file, text(&[(&a, 1), (&b, 1)])).unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &gw.id().to_string()]).status().unwrap();
    assert!(status.success());
    eventually(30, "the gateway serves", || std::net::TcpStream::connect(admin).is_ok() || gw.try_wait().unwrap().is_some());
    assert_eq!(gw.try_wait().unwrap(), None, "the gateway outlived a SIGHUP during its start");
    eventually(20, "the early SIGHUP reloaded", || upstreams(admin)[0]["backends"].as_array().unwrap().len() == 2);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/app", &[]).status, 200, "still serving");
    let _ = gw.kill();
    let _ = gw.wait();
}

#[test]
fn twenty_reloads_that_add_and_remove_backends_and_routes_fail_no_request() {
    let (a, b, c) = (backend("a", &[]), backend("b", &[]), backend("c", &[]));
    let shapes: [Shape; 4] =
        [(&[(&a, 1), (&b, 1)], None), (&[(&a, 1), (&b, 2), (&c, 1)], Some(&c)), (&[(&b, 1), (&c, 3)], None), (&[(&a, 2), (&c, 1)], Some(&a))];
    let (gw, admin) = gateway_with_admin(&format!("{SERVER}{}", routes(shapes[0].0, shapes[0].1)), "");
    let file = config_file(&gw);
    let write = |i: usize| {
        let (members, extra) = shapes[i % shapes.len()];
        let text = format!("{SERVER}{}{}", routes(members, extra), admin_section(admin)).replace("{listen}", &gw.addr.to_string());
        std::fs::write(&file, text).unwrap();
    };
    let load = Load::start(gw.addr, "/app", 4, 200_000, Duration::from_secs(120));
    for i in 1..=20 {
        write(i);
        let (members, extra) = shapes[i % shapes.len()];
        match i % 3 {
            0 => {
                let r = post_reload(admin);
                assert_eq!(r.status, 200, "reload {i}: {r:?}");
                let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(report["generation"], i + 1, "each applied reload is a generation: {report}");
                assert_eq!(report["needs_restart"], serde_json::json!([]), "only routes and upstreams changed: {report}");
            }
            1 => {
                let status = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
                assert!(status.success());
            }
            _ => {
                let out = std::process::Command::new(switchyard_bin())
                    .args(["reload", "--config-only", "--admin", &format!("http://{admin}"), "--token", ADMIN_TOKEN])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        // The new shape serves: the same backends, the route there or not.
        let want: std::collections::BTreeSet<String> = members.iter().map(|(p, _)| p.addr.to_string()).collect();
        eventually(20, &format!("reload {i} applied"), || {
            let ups = upstreams(admin);
            let web = ups.as_array().unwrap().iter().find(|u| u["name"] == "web").unwrap().clone();
            let have: std::collections::BTreeSet<String> = web["backends"].as_array().unwrap().iter().map(|b| b["address"].as_str().unwrap().to_string()).collect();
            have == want && ups.as_array().unwrap().len() == 1 + usize::from(extra.is_some())
        });
        let extra_status = get(gw.addr, "/extra", &[]).status;
        match extra {
            Some(x) => {
                let r = get(gw.addr, "/extra", &[]);
                assert_eq!((r.status, r.backend()), (200, if std::ptr::eq(x, &a) { "a" } else { "c" }), "reload {i}: {r:?}");
            }
            None => assert_eq!(extra_status, 404, "reload {i}: /extra is gone"),
        }
        let seen = tally(gw.addr, "/app", 12, &[]);
        let names: std::collections::BTreeSet<&str> = members.iter().map(|(p, _)| if std::ptr::eq(*p, &a) { "a" } else if std::ptr::eq(*p, &b) { "b" } else { "c" }).collect();
        assert!(seen.keys().all(|k| names.contains(k.as_str())), "reload {i}: only {names:?} serve, saw {seen:?}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let (samples, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed requests across 20 reloads: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    let bad: Vec<_> = samples.iter().filter(|s| s.status != 200).map(|s| s.status).collect();
    assert!(bad.is_empty(), "{} of {} answers were not 200: {:?}", bad.len(), samples.len(), &bad[..bad.len().min(10)]);
    assert!(samples.len() > 200, "the load ran through the reloads: {} requests", samples.len());
    eprintln!("20 reloads under 4 keep-alive clients: {} requests, 0 failed", samples.len());
}

#[test]
fn a_file_with_an_error_changes_nothing_and_says_where() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let (gw, admin) = gateway_with_admin(&format!("{SERVER}{}", routes(&[(&a, 1)], Some(&b))), "");
    let file = config_file(&gw);
    let good = std::fs::read_to_string(&file).unwrap();
    // A route to an upstream that does not exist, on a line we know.
    let broken = good.replace("upstream = \"extra\"\n", "upstream = \"nowhere\"\n");
    assert_ne!(broken, good);
    std::fs::write(&file, &broken).unwrap();
    let r = post_reload(admin);
    assert_eq!(r.status, 422, "{r:?}");
    let line = broken.lines().position(|l| l == "upstream = \"nowhere\"").unwrap() + 1;
    assert!(r.body.contains(&format!("line {line}")) && r.body.contains("nowhere"), "the error names the line and the value: {}", r.body);
    assert_eq!(get(gw.addr, "/extra", &[]).backend(), "b", "the running config still serves");
    eventually(10, "the refusal is in the log too", || gw.log_text().contains("config reload refused, the running config keeps serving"));

    // SIGHUP with the same file: logged, nothing changes.
    std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    eventually(10, "the refused reload is logged", || gw.log_text().contains("nowhere"));
    assert_eq!(get(gw.addr, "/extra", &[]).backend(), "b");

    // A restart-only change is reported, not applied; the rest applies.
    let threads = good.replace("threads = 2", "threads = 1").replace("path_prefix = \"/extra\"", "path_prefix = \"/more\"");
    std::fs::write(&file, threads).unwrap();
    let r = post_reload(admin);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"[server]\""), "needs_restart names [server]: {}", r.body);
    assert_eq!(get(gw.addr, "/more", &[]).backend(), "b");
    assert_eq!(get(gw.addr, "/extra", &[]).status, 404);
}

#[test]
fn health_verdicts_carry_over_and_dead_backends_stay_out() {
    let a = backend("a", &[]);
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let shape = |interval: u64, extra: &str| {
        format!(
            "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}, {{ address = \"{dead}\" }}{extra}]\n\
             health = {{ check = \"tcp\", interval_ms = {interval}, fall = 3, rise = 2, max_failures = 1000 }}\n[[routes]]\nupstream = \"web\"\n",
            a.addr
        )
    };
    let (gw, admin) = gateway_with_admin(&shape(100, ""), "");
    let healthy = |addr: &str| upstreams(admin)[0]["backends"].as_array().unwrap().iter().find(|b| b["address"] == addr).unwrap()["healthy"].as_bool().unwrap();
    eventually(20, "the dead backend is marked down", || !healthy(&dead.to_string()));
    // Probes now come a minute apart, and three failures are needed: a
    // fresh backend would count as healthy until then. Carried over, the
    // dead one stays down at once, and no request goes to it.
    let b = backend("b", &[]);
    let text = format!("{}{}", shape(60_000, &format!(", {{ address = \"{}\" }}", b.addr)), admin_section(admin)).replace("{listen}", &gw.addr.to_string());
    std::fs::write(config_file(&gw), text).unwrap();
    let r = post_reload(admin);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!healthy(&dead.to_string()), "the verdict carried over: {:?}", upstreams(admin));
    assert!(healthy(&b.addr.to_string()));
    let seen = tally(gw.addr, "/", 30, &[]);
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");
}

const KEY: &str = "config-reload-jwt-signing-key-0123456789ab";

fn token(roles: &[&str]) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    encode(&Header::default(), &serde_json::json!({ "sub": "ann", "roles": roles, "exp": exp }), &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

/// rbac on `/doc` with `grants`; plus a new plugin on a new upstream when `more`.
fn access_config(app: &Proc, grants: &str, more: bool) -> String {
    let mut text = format!(
        "{SERVER}[access]\njwt_keys = [\"{KEY}\"]\n[plugins.rbac]\npath = {:?}\nconfig = {{ grants = {grants} }}\n{}\
         [[routes]]\npath_prefix = \"/doc\"\nupstream = \"web\"\naccess = \"rbac\"\nobject = {{ kind = \"doc\" }}\n",
        plugin("access_rbac"),
        upstream("web", None, &[(app, 1)], "")
    );
    if more {
        text += &format!(
            "{}[[upstreams]]\nname = \"fast\"\nlb = \"p2c\"\nbackends = [{{ address = \"{}\" }}]\n[[routes]]\npath_prefix = \"/fast\"\nupstream = \"fast\"\n",
            plugin_table("p2c", "least_connections", ""),
            app.addr
        );
    }
    text
}

#[test]
fn plugin_config_tables_and_new_plugins_reload_from_the_file() {
    let app = backend("app", &[]);
    let (gw, admin) = gateway_with_admin(&access_config(&app, "{ viewer = [\"read:doc\"] }", false), "");
    let auth = format!("Bearer {}", token(&["viewer"]));
    let doc = || get(gw.addr, "/doc", &[("Authorization", auth.as_str())]).status;
    assert_eq!(doc(), 200);
    let file = config_file(&gw);
    let write = |grants: &str, more: bool| {
        let text = format!("{}{}", access_config(&app, grants, more), admin_section(admin)).replace("{listen}", &gw.addr.to_string());
        std::fs::write(&file, text).unwrap();
    };

    // The plugin rejects the file's new table: 422 at its line, nothing changes.
    write("{ viewer = [\"read-doc\"] }", true);
    let r = post_reload(admin);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("plugins.rbac.config") && r.body.contains("is not right:kind"), "{}", r.body);
    assert_eq!(doc(), 200);
    let names = || upstreams(admin).as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(), ["web"], "the new upstream waits for a file without errors");

    // A new table, a new plugin and its upstream, in one step.
    write("{ editor = [\"read:doc\"] }", true);
    let r = post_reload(admin);
    assert_eq!(r.status, 200, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["plugins_reconfigured"], serde_json::json!(["rbac"]), "{report}");
    assert_eq!(report["plugins_added"], serde_json::json!(["p2c"]), "{report}");
    assert_eq!(doc(), 403, "viewers no longer read");
    assert_eq!(names(), ["web", "fast"]);
    assert_eq!(get(gw.addr, "/fast", &[]).backend(), "app");
    let (k, v) = bearer();
    let plugins: serde_json::Value = serde_json::from_str(&get(admin, "/plugins", &[(k, v.as_str())]).body).unwrap();
    let rbac = plugins.as_array().unwrap().iter().find(|p| p["name"] == "rbac").unwrap();
    assert_eq!(rbac["source"], "config", "{rbac}");
    assert_eq!(rbac["previous_version"], 1, "a rollback can go back to the old table: {rbac}");
    let p2c = plugins.as_array().unwrap().iter().find(|p| p["name"] == "p2c").unwrap();
    assert_eq!(p2c["upstreams"], serde_json::json!(["fast"]), "{p2c}");

    // The same file again changes no table (an admin PUT stays).
    let r = post_reload(admin);
    assert_eq!(r.status, 200, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["plugins_reconfigured"], serde_json::json!([]), "{report}");

    // Dropping the plugin and its route.
    write("{ editor = [\"read:doc\"] }", false);
    let r = post_reload(admin);
    assert_eq!(r.status, 200, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["plugins_removed"], serde_json::json!(["p2c"]), "{report}");
    assert_eq!(names(), ["web"]);
}
