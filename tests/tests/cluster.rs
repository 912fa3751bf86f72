//! The replicated session tier across real gateway processes: three nodes
//! as peers, the replicated and centralized-dynamic strategies, a node lost
//! and restarted (state transfer), memcached stopped, forged peer messages
//! and a hot swap from centralized to centralized-dynamic under load.

use hmac::{Hmac, Mac};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::nodes::{session_config, Nodes, CLUSTER_KEY};
use switchyard_tests::*;

/// Between two requests of one user: replication is asynchronous (see
/// docs/sessions.md), a user's think time is far longer than it takes.
const THINK: Duration = Duration::from_millis(100);

fn backends() -> Vec<Proc> {
    (0..3).map(|i| backend(&format!("b{i}"), &["--sessions", "header"])).collect()
}

/// One request of `b` on node `node`, after the user's think time.
fn on(nodes: &Nodes, node: usize, b: &mut Browser, method: &str, path: &str) -> (u16, serde_json::Value) {
    std::thread::sleep(THINK);
    b.addr = nodes.addr(node);
    b.json(method, path)
}

/// Log in and add 5 items, each request on the next live node; the node
/// that served the last request.
fn cart_across_nodes(nodes: &Nodes, b: &mut Browser, user: &str) -> usize {
    let live = nodes.live();
    let (s, v) = on(nodes, live[0], b, "POST", &format!("/cart/login?user={user}"));
    assert_eq!(s, 200, "{v}");
    let mut last = live[0];
    let mut backends = std::collections::BTreeSet::new();
    for i in 0..5 {
        last = live[(i + 1) % live.len()];
        replicated_to(nodes, last, b, user, i);
        let (s, v) = on(nodes, last, b, "POST", &format!("/cart/add?item={user}-{i}"));
        assert_eq!(s, 200, "add {i} on node {}: {v}", last + 1);
        backends.insert(v["backend"].as_str().unwrap().to_string());
    }
    assert!(backends.len() >= 2, "the adds spread over backends: {backends:?}");
    last
}

/// Wait until `node` holds the session as the last write left it (`n`
/// items): replication between nodes is asynchronous, and a write on a
/// node that has not caught up would build on an older cart. A copy of the
/// browser looks, so its cookies stay as they are.
fn replicated_to(nodes: &Nodes, node: usize, b: &Browser, user: &str, n: usize) {
    eventually(10, &format!("node {} holds {user}'s cart with {n} items", node + 1), || {
        let mut probe = b.clone();
        probe.addr = nodes.addr(node);
        let (s, v) = probe.json("GET", "/cart");
        s == 200 && v["user"] == user && v["cart"].as_array().is_some_and(|c| c.len() == n)
    });
}

fn items(user: &str, n: usize) -> serde_json::Value {
    serde_json::json!((0..n).map(|i| format!("{user}-{i}")).collect::<Vec<_>>())
}

fn healthz(admin: SocketAddr) -> String {
    get(admin, "/healthz", &[]).body
}

fn node_loss_and_restart(file: &str) {
    let mc = Memcached::start();
    let bs = backends();
    let mut nodes = Nodes::start(3, session_config(&mc, file, "", &bs));
    let mut alice = Browser::new(nodes.addr(0));
    let last = cart_across_nodes(&nodes, &mut alice, "alice");
    for i in nodes.live() {
        let (s, v) = on(&nodes, i, &mut alice, "GET", "/cart");
        assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "node {}: {v}", i + 1);
    }
    // The node that served the last request dies; the others go on.
    nodes.down(last);
    for i in nodes.live() {
        let (s, v) = on(&nodes, i, &mut alice, "GET", "/cart");
        assert_eq!((s, &v["cart"]), (200, &items("alice", 5)), "node {} after node {} died: {v}", i + 1, last + 1);
    }
    // It comes back, catches up from a live peer and serves the session.
    nodes.up(last);
    let admin = nodes.admin(last);
    eventually(30, "the restarted node reports it caught up", || healthz(admin).contains("caught up"));
    assert_eq!(metric(admin, "switchyard_cluster_caught_up", &[]), 1.0);
    assert!(metric(admin, "switchyard_cluster_state_transfer_seconds_count", &[]) >= 1.0, "it caught up by a state transfer");
    let (s, v) = on(&nodes, last, &mut alice, "GET", "/cart");
    assert_eq!((s, &v["cart"], &v["user"]), (200, &items("alice", 5), &serde_json::json!("alice")), "{v}");
    // Its new writes reach the others.
    let (s, _) = on(&nodes, last, &mut alice, "POST", "/cart/add?item=alice-5");
    assert_eq!(s, 200);
    for i in nodes.live() {
        let (s, v) = on(&nodes, i, &mut alice, "GET", "/cart");
        assert_eq!((s, &v["cart"]), (200, &items("alice", 6)), "node {}: {v}", i + 1);
    }
}

#[test]
fn replicated_keeps_the_cart_across_nodes_a_node_loss_and_its_restart() {
    node_loss_and_restart("session_replicated");
}

#[test]
fn centralized_dynamic_keeps_the_cart_across_nodes_a_node_loss_and_its_restart() {
    node_loss_and_restart("session_centralized_dynamic");
}

#[test]
fn centralized_dynamic_answers_503_while_memcached_is_down_and_recovers() {
    let mut mc = Memcached::start();
    let bs = backends();
    let nodes = Nodes::start(3, session_config(&mc, "session_centralized_dynamic", "", &bs));
    let mut alice = Browser::new(nodes.addr(0));
    let mut bob = Browser::new(nodes.addr(0));
    cart_across_nodes(&nodes, &mut alice, "alice");
    cart_across_nodes(&nodes, &mut bob, "bob");
    mc.stop();
    for i in 0..3 {
        let r = {
            std::thread::sleep(THINK);
            alice.addr = nodes.addr(i);
            alice.send("GET", "/cart", &[], b"")
        };
        assert_eq!(r.status, 503, "node {}: {r:?}", i + 1);
        assert!(r.body.contains("session store") && !r.body.contains("bob"), "{}", r.body);
    }
    mc.restart();
    eventually(30, "logins work again on every node", || {
        (0..3).all(|i| Browser::new(nodes.addr(i)).send("POST", "/cart/login?user=carol", &[], b"").status == 200)
    });
    // The static part (the user) survived on the nodes; the dynamic part
    // was in the memcached that stopped.
    let (s, v) = on(&nodes, 1, &mut alice, "GET", "/cart");
    assert_eq!((s, &v["user"], &v["cart"]), (200, &serde_json::json!("alice"), &serde_json::json!([])), "{v}");
    cart_across_nodes(&nodes, &mut alice, "alice");
}

/// A peer frame: `[len][from][postcard body][mac]`.
fn frame(key: &[u8], from: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(&from.to_be_bytes());
    m.update(body);
    let tag = m.finalize().into_bytes();
    let mut out = ((4 + body.len() + 32) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&tag);
    out
}

#[test]
fn peer_messages_with_a_bad_mac_or_from_an_unknown_node_are_dropped_and_counted() {
    let mc = Memcached::start();
    let bs = backends();
    let nodes = Nodes::start(2, session_config(&mc, "session_replicated", "", &bs));
    let admin = nodes.admin(0);
    eventually(30, "node 1 caught up", || healthz(admin).contains("caught up"));
    // postcard of Message::Deltas(vec![one entry]) forging a session.
    let mut body = vec![0u8, 1];
    let key = b"session:forged";
    body.push(key.len() as u8);
    body.extend_from_slice(key);
    body.extend_from_slice(&[200, 1, 2]); // version (200, 2)
    body.push(1); // Some(value)
    let value = br#"{"user":"mallory"}"#;
    body.push(value.len() as u8);
    body.extend_from_slice(value);
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]); // expires far ahead
    let port = nodes.cluster_ports[0];
    let send = |bytes: Vec<u8>| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&bytes).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    };
    send(frame(b"not-the-cluster-key-0123456789abcdef", 2, &body));
    send(frame(CLUSTER_KEY.as_bytes(), 99, &body));
    eventually(10, "both forged frames counted", || {
        metric(admin, "switchyard_cluster_rejected_total", &[("reason", "bad_mac")]) >= 1.0
            && metric(admin, "switchyard_cluster_rejected_total", &[("reason", "unknown_node")]) >= 1.0
    });
    assert_eq!(metric(admin, "switchyard_cluster_deltas_total", &[("result", "applied")]), 0.0, "nothing forged was applied");
    // The real peer's deltas are applied.
    let mut alice = Browser::new(nodes.addr(1));
    let (s, _) = on(&nodes, 1, &mut alice, "POST", "/cart/login?user=alice");
    assert_eq!(s, 200);
    eventually(10, "node 1 applied node 2's delta", || metric(admin, "switchyard_cluster_deltas_total", &[("result", "applied")]) >= 1.0);
    assert!(metric(admin, "switchyard_cluster_bytes_received_total", &[("peer", "2")]) > 0.0);
}

#[test]
fn a_hot_swap_from_centralized_to_centralized_dynamic_under_load_loses_no_session() {
    let mc = Memcached::start();
    let bs = backends();
    let nodes = Nodes::start(3, session_config(&mc, "session_centralized", "static_keys = [\"user\"]", &bs));
    let users: Vec<Browser> = (0..6)
        .map(|u| {
            let mut b = Browser::new(nodes.addr(u % 3));
            assert_eq!(b.json("POST", &format!("/cart/login?user=u{u}")).0, 200);
            b
        })
        .collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|i| nodes.addr(i)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(u, mut b)| {
            let (stop, addrs) = (stop.clone(), addrs.clone());
            std::thread::spawn(move || {
                let (mut added, mut failures) = (Vec::new(), Vec::new());
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && added.len() < 200 {
                    std::thread::sleep(Duration::from_millis(20));
                    b.addr = addrs[n % 3];
                    n += 1;
                    let item = format!("u{u}-{}", added.len());
                    let (s, v) = b.json("POST", &format!("/cart/add?item={item}"));
                    if s == 200 {
                        added.push(item);
                    } else {
                        failures.push(format!("{s} {v}"));
                    }
                }
                (b, added, failures)
            })
        })
        .collect();
    let bytes = std::fs::read(plugin("session_centralized_dynamic")).unwrap();
    let (k, v) = bearer();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let r = request(nodes.admin(i), "PUT", "/plugins/sess", &[(k, v.as_str())], &bytes);
        assert_eq!(r.status, 200, "swap on node {}: {r:?}", i + 1);
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let (mut b, added, failures) = t.join().unwrap();
        assert!(failures.is_empty(), "requests failed across the swaps: {failures:?}");
        assert!(added.len() > 5, "the load ran: {added:?}");
        for i in 0..3 {
            std::thread::sleep(THINK);
            b.addr = addrs[i];
            let (s, v) = b.json("GET", "/cart");
            assert_eq!((s, &v["cart"]), (200, &serde_json::json!(added)), "node {}", i + 1);
        }
    }
}
