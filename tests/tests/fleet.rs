//! The fleet (`[fleet]`) over a real 3-member etcd cluster with auth on:
//! a push, canary, promote or rollback made on one gateway node runs on
//! every node; a node that was down catches up; losing an etcd member
//! changes nothing and losing the store leaves every node serving; a
//! record no node can prove is refused and reported; an unauthenticated
//! write to the store is refused.

use std::net::SocketAddr;
use std::time::Instant;
use switchyard_tests::etcd::{Etcd, PASSWORD, USER};
use switchyard_tests::*;

/// A select deadline a debug build under CI load keeps: past the default
/// 5 ms a call faults and the fallback policy picks another backend.
const SLOW_OK: &str = "limits = { deadline_ms = 500 }";

/// `[fleet]` lines for the `switchyard` etcd user.
fn auth() -> String {
    format!("user = \"{USER}\"\npassword = \"{PASSWORD}\"\n")
}

/// A gateway node named `node`: the plugin tables `plugins` (one named
/// `lb`), `lb` over backends a and b, and `[fleet]` over `etcd` with the
/// extra lines `fleet`.
fn node_with(etcd: &Etcd, node: &str, plugins: &str, a: &Proc, b: &Proc, fleet: &str) -> (Proc, SocketAddr) {
    let cfg = format!(
        "{SERVER}{plugins}{}\n[fleet]\nendpoints = {}\nnode = \"{node}\"\n{fleet}\n",
        upstream("web", Some("lb"), &[(a, 1), (b, 1)], "health = { check = \"none\", max_failures = 1000000 }"),
        etcd.endpoints_toml(),
    );
    gateway_with_admin(&cfg, "")
}

/// `lb` = `pin_last`, etcd auth, a 1 s store timeout.
fn node(etcd: &Etcd, node: &str, a: &Proc, b: &Proc) -> (Proc, SocketAddr) {
    node_with(etcd, node, &plugin_table("lb", "pin_last", &format!("on_error = \"fallback\"\n{SLOW_OK}")), a, b, &format!("{}timeout_ms = 1000\n", auth()))
}

fn admin(admin: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let (k, v) = bearer();
    request(admin, method, path, &[(k, v.as_str())], body)
}

fn json(admin_addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = admin(admin_addr, "GET", path, b"");
    assert_eq!(r.status, 200, "{path}: {r:?}");
    serde_json::from_str(&r.body).unwrap()
}

fn push(admin_addr: SocketAddr, query: &str, wasm: &str) -> Response {
    admin(admin_addr, "PUT", &format!("/plugins/lb{query}"), &std::fs::read(plugin(wasm)).unwrap())
}

fn sha(wasm: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(plugin(wasm)).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Which backend the node's proxy sends a request to.
fn serves(gw: &Proc) -> String {
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    r.backend().to_string()
}

fn healthz(admin_addr: SocketAddr) -> String {
    get(admin_addr, "/healthz", &[]).body
}

#[test]
fn a_change_on_one_node_runs_on_every_node_and_a_node_that_was_down_catches_up() {
    let etcd = Etcd::start(3);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let mut nodes: Vec<Option<(Proc, SocketAddr)>> = ["n1", "n2", "n3"].iter().map(|n| Some(node(&etcd, n, &a, &b))).collect();
    let at = |nodes: &Vec<Option<(Proc, SocketAddr)>>, i: usize| nodes[i].as_ref().map(|(_, ad)| *ad).expect("node up");
    for i in 0..3 {
        eventually(20, "the node reaches the store", || healthz(at(&nodes, i)).contains("store connected"));
        assert_eq!(serves(&nodes[i].as_ref().unwrap().0), "b", "pin_last before any push");
    }

    // A push on node 1 is written to the store and runs on nodes 2 and 3.
    let started = Instant::now();
    let r = push(at(&nodes, 0), "", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["fleet"]["written"], true, "{body}");
    // The answer waited for the other nodes' reports (`confirm_ms`).
    assert_eq!(body["fleet"]["nodes"], serde_json::json!({ "n2": "applied", "n3": "applied" }), "{body}");
    for i in 1..3 {
        eventually(20, "the push runs on the other nodes", || serves(&nodes[i].as_ref().unwrap().0) == "a");
    }
    eprintln!("a push on node 1 served on nodes 2 and 3 after {} ms", started.elapsed().as_millis());
    // Any node shows which node runs what.
    eventually(10, "every node's report names the pushed version", || {
        let p = json(at(&nodes, 2), "/plugins/lb");
        ["n1", "n2", "n3"].iter().all(|n| p["fleet"]["nodes"][n]["sha256"] == sha("pin_first"))
    });
    let fleet = json(at(&nodes, 1), "/fleet");
    assert_eq!((fleet["store"]["state"].as_str(), fleet["plugins"]["lb"]["record"]["by"].as_str(), fleet["plugins"]["lb"]["record"]["action"].as_str()), (Some("connected"), Some("n1"), Some("push")), "{fleet}");

    // Node 3 is down while node 2 starts a canary; node 1 runs it at once,
    // node 3 when it is back.
    nodes[2] = None;
    let r = push(at(&nodes, 1), "?canary=30", "pin_last");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "node 1 runs the canary", || {
        let c = json(at(&nodes, 0), "/plugins/lb/canary");
        c["state"] == "running" && c["percent"] == 30 && c["sha256"] == sha("pin_last")
    });
    nodes[2] = Some(node(&etcd, "n3", &a, &b));
    eventually(20, "node 3 catches up on the canary", || {
        let c = json(at(&nodes, 2), "/plugins/lb/canary");
        c["state"] == "running" && c["percent"] == 30
    });
    assert_eq!(json(at(&nodes, 2), "/plugins/lb")["sha256"], sha("pin_first"), "node 3 runs the fleet's baseline, not its config file's");

    // A promote on node 1 and a rollback on node 3 reach every node.
    let r = admin(at(&nodes, 0), "POST", "/plugins/lb/canary/promote", b"");
    assert_eq!(r.status, 200, "{r:?}");
    for i in 0..3 {
        eventually(20, "the promoted version runs everywhere", || serves(&nodes[i].as_ref().unwrap().0) == "b" && json(at(&nodes, i), "/plugins/lb/canary")["state"] == "promoted");
    }
    let r = admin(at(&nodes, 2), "POST", "/plugins/lb/rollback", b"");
    assert_eq!(r.status, 200, "{r:?}");
    for i in 0..3 {
        eventually(20, "the rollback runs everywhere", || serves(&nodes[i].as_ref().unwrap().0) == "a");
    }
    assert_eq!(json(at(&nodes, 0), "/fleet")["plugins"]["lb"]["record"]["action"], "rollback");
}

#[test]
fn losing_a_member_changes_nothing_and_losing_the_store_leaves_every_node_serving() {
    let mut etcd = Etcd::start(3);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let nodes: Vec<(Proc, SocketAddr)> = ["n1", "n2"].iter().map(|n| node(&etcd, n, &a, &b)).collect();
    for (_, ad) in &nodes {
        eventually(20, "the node reaches the store", || healthz(*ad).contains("store connected"));
    }

    // One member of three gone: pushes still reach every node.
    etcd.stop(0);
    let r = push(nodes[0].1, "", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "the push runs on node 2 with one etcd member down", || serves(&nodes[1].0) == "a");
    assert!(healthz(nodes[1].1).contains("store connected"), "{}", healthz(nodes[1].1));

    // No quorum: every node says so and keeps serving its last versions;
    // a push is refused and changes nothing.
    etcd.stop(1);
    etcd.stop(2);
    for (gw, ad) in &nodes {
        eventually(20, "the node reports the store unreachable", || healthz(*ad).contains("store unreachable"));
        assert_eq!(metric(*ad, "switchyard_fleet_store_up", &[]), 0.0);
        assert!((0..20).all(|_| serves(gw) == "a"), "the node serves its last version");
    }
    let r = push(nodes[0].1, "", "pin_last");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("unreachable") && r.body.contains("nothing was changed"), "{}", r.body);
    assert_eq!(serves(&nodes[0].0), "a", "a refused push changes nothing");

    // The store is back: the nodes reconnect and follow pushes again.
    for i in 0..3 {
        etcd.restart(i);
    }
    for (_, ad) in &nodes {
        eventually(30, "the node reconnects", || healthz(*ad).contains("store connected"));
        assert_eq!(metric(*ad, "switchyard_fleet_store_up", &[]), 1.0);
    }
    let r = push(nodes[1].1, "", "pin_last");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "the push after the outage runs on node 1", || serves(&nodes[0].0) == "b");
}

#[test]
fn a_record_no_node_can_prove_is_refused_and_reported_and_unauthenticated_writes_are_refused() {
    let etcd = Etcd::start(3);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let nodes: Vec<(Proc, SocketAddr)> = ["n1", "n2"].iter().map(|n| node(&etcd, n, &a, &b)).collect();
    for (_, ad) in &nodes {
        eventually(20, "the node reaches the store", || healthz(*ad).contains("store connected"));
    }

    // No user, or a user outside its prefix: etcd refuses the write.
    let out = etcd.ctl(None, &["put", "/switchyard/plugins/lb", "{}"]);
    assert!(!out.status.success(), "a write without credentials is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name is empty"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = etcd.ctl(Some((USER, PASSWORD)), &["put", "/elsewhere", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "the gateways' user writes only its prefix");

    // Bytes that are no component, under their true sha256.
    let junk = b"not a wasm component";
    let junk_sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(junk).iter().map(|b| format!("{b:02x}")).collect()
    };
    let put = |k: &str, v: &str| etcd.root(&["put", k, v]);
    put(&format!("/switchyard/blobs/{junk_sha}/00000"), std::str::from_utf8(junk).unwrap());
    put(&format!("/switchyard/blobs/{junk_sha}/meta"), &format!("{{\"len\":{},\"chunks\":1}}", junk.len()));
    let record = |sha: &str| format!("{{\"sha256\":\"{sha}\",\"config\":{{}},\"canary\":null,\"by\":\"operator\",\"action\":\"push\",\"at_unix\":0}}");
    put("/switchyard/plugins/lb", &record(&junk_sha));
    for (gw, ad) in &nodes {
        eventually(20, "the node reports the record it refused", || {
            let p = json(*ad, "/plugins/lb");
            p["fleet"]["nodes"].as_object().is_some_and(|n| n.len() == 2 && n.values().all(|r| r["error"].is_string()))
        });
        assert_eq!(serves(gw), "b", "a refused record leaves the running version");
        assert!(metric(*ad, "switchyard_fleet_applies_total", &[("outcome", "rejected")]) >= 1.0);
    }
    let p = json(nodes[0].1, "/plugins/lb");
    assert_eq!(p["sha256"], sha("pin_last"));
    eprintln!("refused: {}", p["fleet"]["nodes"]["n2"]["error"]);

    // Bytes that do not hash to the name they are stored under.
    let liar = "ab".repeat(32);
    put(&format!("/switchyard/blobs/{liar}/00000"), "other bytes");
    put(&format!("/switchyard/blobs/{liar}/meta"), "{\"len\":11,\"chunks\":1}");
    put("/switchyard/plugins/lb", &record(&liar));
    eventually(20, "a blob that does not hash to its name is refused", || {
        json(nodes[1].1, "/plugins/lb")["fleet"]["nodes"]["n2"]["error"].as_str().is_some_and(|e| e.contains("hash to"))
    });
    assert_eq!(serves(&nodes[1].0), "b");

    // A good push afterwards clears the errors.
    let r = push(nodes[1].1, "", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "a good push runs on node 1 and clears its error", || {
        serves(&nodes[0].0) == "a" && json(nodes[0].1, "/plugins/lb")["fleet"]["nodes"]["n1"]["error"].is_null()
    });
}

#[test]
fn an_automatic_verdict_on_one_node_is_carried_out_on_every_node() {
    use switchyard_tests::clients::{clients, from_each};
    let etcd = Etcd::start(3);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let nodes: Vec<(Proc, SocketAddr)> = ["n1", "n2"].iter().map(|n| node(&etcd, n, &a, &b)).collect();
    for (_, ad) in &nodes {
        eventually(20, "the node reaches the store", || healthz(*ad).contains("store connected"));
    }
    // A canary trapping on half its calls, judged after 100 calls, started on node 1.
    let r = push(nodes[0].1, "?canary=50&window=100&config=%7B%22mode%22%3A%22trap-half%22%7D", "misbehave");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "node 2 runs the canary", || json(nodes[1].1, "/plugins/lb/canary")["state"] == "running");

    // Only node 2 has traffic, so node 2 judges it.
    let ips = clients(200);
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.extend(from_each(nodes[1].0.addr, &ips));
        if json(nodes[1].1, "/plugins/lb/canary")["state"] != "running" {
            break;
        }
    }
    assert!(answers.iter().all(|(s, _)| *s == 200), "the lb fallback answers the canary's traps");
    let on_2 = json(nodes[1].1, "/plugins/lb/canary");
    assert_eq!((on_2["state"].as_str(), on_2["by"].as_str()), (Some("rolled-back"), Some("auto")), "{on_2}");

    // Node 1 saw no request, and follows node 2's verdict.
    eventually(20, "node 1 carries out node 2's verdict", || json(nodes[0].1, "/plugins/lb/canary")["state"] == "rolled-back");
    let on_1 = json(nodes[0].1, "/plugins/lb/canary");
    assert_eq!(on_1["by"], "fleet", "{on_1}");
    assert!(on_1["evidence"].as_str().unwrap().contains("auto-rollback on node n2"), "{on_1}");
    let record = &json(nodes[0].1, "/fleet")["plugins"]["lb"]["record"];
    assert_eq!((record["action"].as_str(), record["by"].as_str(), record["canary"].is_null()), (Some("auto-rollback"), Some("n2"), true), "{record}");
    assert_eq!(serves(&nodes[0].0), "b", "node 1 serves its baseline alone");
}

/// The store is the fleet's source of truth: a node whose plugin file
/// changes under it (the file watcher swaps the new bytes in) is brought
/// back to the fleet's record.
#[test]
fn a_node_that_drifts_from_the_fleets_record_is_brought_back() {
    let etcd = Etcd::start(1);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.wasm");
    std::fs::copy(plugin("pin_last"), &file).unwrap();
    let lb = format!("[plugins.lb]\npath = {:?}\nwatch_ms = 100\n", file.to_string_lossy());
    let (gw, ad) = node_with(&etcd, "n1", &lb, &a, &b, &auth());
    eventually(20, "the node reaches the store", || healthz(ad).contains("store connected"));
    let r = push(ad, "", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(serves(&gw), "a");

    // The file changes: the watcher swaps it in, then the fleet's record wins.
    std::fs::copy(plugin("round_robin"), &file).unwrap();
    eventually(20, "the file watcher swaps the file in", || metric(ad, "switchyard_plugin_swaps_total", &[("source", "file"), ("result", "ok")]) >= 1.0);
    eventually(20, "the fleet's record runs again", || {
        let p = json(ad, "/plugins/lb");
        p["sha256"] == sha("pin_first") && p["source"] == "fleet"
    });
    assert!((0..10).all(|_| serves(&gw) == "a"), "pin_first serves every request again");
    assert!(gw.log_text().contains("drifted from the fleet's record"), "the log says why");
}

/// etcd over TLS with client certificates (`--client-cert-auth`): a node
/// with the CA and its certificate follows pushes; a node without a
/// certificate, or trusting another CA, says why it cannot reach the store
/// and keeps serving.
#[test]
fn the_store_is_reached_over_tls_with_a_client_certificate() {
    use switchyard_tests::etcd::EtcdTls;
    use switchyard_tests::pki::Pki;
    let pki = Pki::new("etcd-ca");
    let server = pki.leaf("etcd", "etcd", &["127.0.0.1", "localhost"], false);
    let client = pki.leaf("gateway", "switchyard", &["switchyard"], true);
    let etcd = Etcd::start_tls(1, EtcdTls { ca: pki.ca_file(), server, client: client.clone() });
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let tls_node = |name: &str, tls: &str| node_with(&etcd, name, &plugin_table("lb", "pin_last", SLOW_OK), &a, &b, &format!("timeout_ms = 1000\n{tls}"));
    let with_cert = format!("ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}", pki.ca_file(), client.0, client.1);
    let (gw1, ad1) = tls_node("n1", &with_cert);
    let (gw2, ad2) = tls_node("n2", &with_cert);
    for ad in [ad1, ad2] {
        eventually(20, "the node reaches the store over TLS", || healthz(ad).contains("store connected"));
    }
    let r = push(ad1, "", "pin_first");
    assert_eq!(r.status, 200, "{r:?}");
    eventually(20, "the push runs on node 2", || serves(&gw2) == "a");
    assert_eq!(serves(&gw1), "a");

    // No client certificate: etcd refuses the handshake.
    let (gw3, ad3) = tls_node("n3", &format!("ca_file = {:?}", pki.ca_file()));
    // Another CA: this node refuses etcd's certificate.
    let other = Pki::new("other-ca");
    let (_gw4, ad4) = tls_node("n4", &format!("ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}", other.ca_file(), client.0, client.1));
    for (ad, why) in [(ad3, "etcd"), (ad4, "certificate")] {
        eventually(20, "the node says why it cannot reach the store", || healthz(ad).contains("store unreachable") && healthz(ad).contains(why));
        assert_eq!(metric(ad, "switchyard_fleet_store_up", &[]), 0.0);
    }
    assert_eq!(serves(&gw3), "b", "a node cut off from the store serves its own version");
    eprintln!("no client certificate: {}another CA: {}", healthz(ad3), healthz(ad4));
}

/// A push answers what every other node did with it: a node without the
/// plugin refuses it, and the pushing node says so.
#[test]
fn a_push_answers_which_nodes_applied_it_and_which_refused_it() {
    let etcd = Etcd::start(1);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let lb = plugin_table("lb", "pin_last", SLOW_OK);
    let spare = format!("{lb}{}", plugin_table("spare", "pin_last", SLOW_OK));
    let (_gw1, ad1) = node_with(&etcd, "n1", &spare, &a, &b, &auth());
    let (_gw2, ad2) = node_with(&etcd, "n2", &lb, &a, &b, &auth());
    let (_gw3, ad3) = node_with(&etcd, "n3", &spare, &a, &b, &auth());
    for ad in [ad1, ad2, ad3] {
        eventually(20, "the node reaches the store", || healthz(ad).contains("store connected"));
    }
    eventually(20, "node 1 sees every node's report", || json(ad1, "/fleet")["nodes"].as_object().is_some_and(|n| n.len() == 3));
    let r = admin(ad1, "PUT", "/plugins/spare", &std::fs::read(plugin("pin_first")).unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["fleet"]["nodes"]["n3"], "applied", "{body}");
    assert_eq!(body["fleet"]["nodes"]["n2"], "refused: this node has no plugin named \"spare\"", "{body}");
    assert_eq!(json(ad3, "/plugins/spare")["sha256"], sha("pin_first"));
}

/// A node stays connected while nothing happens: etcd closes a connection
/// whose HTTP/2 pings come faster than its 5 s minimum while it carries
/// no other traffic (here: the connections to the members the node's
/// calls do not go to), which once made every node reconnect every ~8 s.
#[test]
fn an_idle_node_keeps_its_connection_to_the_store() {
    let etcd = Etcd::start(3);
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    // The default timeout, as a user would run it.
    let nodes: Vec<(Proc, SocketAddr)> = ["n1", "n2", "n3"].iter().map(|n| node_with(&etcd, n, &plugin_table("lb", "pin_last", SLOW_OK), &a, &b, &auth())).collect();
    for (_, ad) in &nodes {
        eventually(20, "the node reaches the store", || healthz(*ad).contains("store connected"));
    }
    std::thread::sleep(std::time::Duration::from_secs(25));
    for (gw, ad) in &nodes {
        assert_eq!(metric(*ad, "switchyard_fleet_reconnects_total", &[]), 0.0, "{}", gw.log_text());
        assert!(healthz(*ad).contains("store connected"));
    }
}
