//! High availability the way paper 001 runs it: real keepalived, real VRRP,
//! in network namespaces this test creates ([`switchyard_tests::ha`]). Two
//! gateway namespaces (gw1 MASTER at priority 150, gw2 BACKUP at 100) and a
//! client namespace sit on a bridge that lives in a namespace of its own;
//! the VIP 198.18.0.100 moves when gw1's `vrrp_script` (a curl of the local
//! admin `/healthz`) fails or when gw2 stops hearing gw1's adverts. A
//! bounded curl loop in the client namespace records every request; the
//! figures are printed (`--nocapture`); `switchyard bench ha-failover`
//! reports them over repeated failovers.
//!
//! Active-active: two VIPs (198.18.0.100 and .101), two vrrp_instances per
//! node, gw1 MASTER for one and gw2 for the other; the survivor holds both.
//! Sessions: centralized (memcached) and replicated (`[cluster]` over the
//! bridge addresses) carts survive a killed MASTER.
//!
//! Only loopback and 198.18.0.0/24 addresses inside the test's own
//! namespaces are used. Every namespace and process is removed on drop,
//! also when a test fails. Needs root, iproute2 (`ip netns`), keepalived,
//! curl and (for the session scenario) memcached.

use std::sync::Mutex;
use std::time::Duration;
use switchyard_tests::ha::*;

/// The scenarios time failovers: one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn master_gateway_killed_vip_moves_and_requests_resume() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("k");
    let gw1 = t.node("g1", false);
    t.node("g2", false);
    t.start_ha();
    let f = failover("SIGKILL", &mut t, |t| t.signal(gw1, "KILL"));
    assert!(f.failed >= 1, "a killed gateway refuses what reaches it before the VIP moves");
    assert!(f.failed <= 100, "failed requests are bounded: {f:?}");
    assert!(f.takeover_from_event < 5.0, "{f:?}");
}

#[test]
fn master_gateway_drained_with_sigterm_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("d");
    let gw1 = t.node("g1", false);
    t.node("g2", false);
    t.start_ha();
    let f = failover("SIGTERM (drain_delay_ms)", &mut t, |t| t.signal(gw1, "TERM"));
    // gw1 never refuses: it serves until the VIP has left. What can fail is
    // the one connection open at the instant the VIP moves (its next packets
    // reach gw2, which knows nothing of it): at most one with a client that
    // sends one request at a time. Nothing fails because gw1 stopped.
    assert!(f.failed <= 1, "drain_delay_ms ({DRAIN_DELAY_MS}) > interval x fall: the VIP moves while gw1 still serves: {f:?}");
    assert!(f.takeover_from_event * 1000.0 < DRAIN_DELAY_MS as f64, "gw2 answered before gw1 stopped listening: {f:?}");
}

#[test]
fn master_gateway_hung_with_sigstop_health_check_times_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("s");
    let gw1 = t.node("g1", false);
    t.node("g2", false);
    t.start_ha();
    let f = failover("SIGSTOP", &mut t, |t| t.signal(gw1, "STOP"));
    assert!(f.failed <= 20, "failed requests are bounded: {f:?}");
    assert!(f.takeover_from_event < 5.0, "{f:?}");
    // gw1 comes back: healthy again, but nopreempt keeps the VIP on gw2.
    t.signal(gw1, "CONT");
    t.wait(10.0, "gw1 healthy again", |t| t.curl("g1", &format!("http://127.0.0.1:{ADMIN_PORT}/healthz")).is_some());
    std::thread::sleep(Duration::from_millis(2000));
    assert!(t.has_vip("g2") && !t.has_vip("g1"), "nopreempt: the VIP stays on gw2 when gw1 recovers");
}

#[test]
fn master_link_cut_vip_moves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("l");
    t.node("g1", false);
    t.node("g2", false);
    t.start_ha();
    let g1 = t.ns("g1");
    let f = failover("link cut", &mut t, |_| {
        run("ip", &["-n", &g1, "link", "set", "eth0", "down"]);
    });
    assert!(f.failed <= 20, "failed requests are bounded: {f:?}");
    assert!(f.takeover_from_event < 5.0, "{f:?}");
}

#[test]
fn centralized_sessions_survive_a_killed_master() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("m");
    // ONE memcached, in the backend namespace, reached by both gateways.
    t.memcached();
    let gw1 = t.node("g1", true);
    t.node("g2", true);
    t.start_ha();
    let jar = t.file("cookies.txt");
    let items = fill_cart(&t, &jar, "alice", 5, "g1").unwrap_or_else(|e| panic!("added on gw1: {e}"));
    let f = fail_over(&mut t, std::slice::from_ref(&jar), |t| t.signal(gw1, "KILL"));
    let lost = usize::from(!cart_intact(&f.carts[0], &items));
    let (s, v) = &f.carts[0];
    println!("sessions (centralized, memcached): carts 1, sessions lost {lost}, served after failover by {}", v["backend"]);
    assert_eq!((*s, v["backend"].as_str()), (200, Some("g2")), "the cart is read on gw2: {v}");
    assert_eq!(v["cart"], serde_json::json!(items), "the complete cart survives the failover: {v}");
    figures("SIGKILL with centralized sessions", &f.samples, f.event);
}

#[test]
fn active_active_survivor_holds_both_vips() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("a");
    let gw1 = t.node("g1", false);
    t.node("g2", false);
    // Each node MASTER (150) for its own VIP and BACKUP (100) for the
    // other's; with preemption each VIP settles on its home node whatever
    // keepalived starts first.
    t.keepalived_with("g1", &[("VI_A", 51, 150, VIP), ("VI_B", 52, 100, VIP_B)], false);
    t.keepalived_with("g2", &[("VI_A", 51, 100, VIP), ("VI_B", 52, 150, VIP_B)], false);
    let home = |t: &Topo| t.holds("g1", VIP) && !t.holds("g1", VIP_B) && t.holds("g2", VIP_B) && !t.holds("g2", VIP);
    t.wait(20.0, "VIP A on gw1 and VIP B on gw2", home);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(home(&t), "each VIP stays on its home node");
    assert!(t.curl("c", &format!("http://{VIP}:8080/")).is_some_and(|b| b.starts_with("g1")), "VIP A answers from gw1");
    assert!(t.curl("c", &format!("http://{VIP_B}:8080/")).is_some_and(|b| b.starts_with("g2")), "VIP B answers from gw2");

    let (la, lb) = (t.load_to(VIP, 8, "/"), t.load_to(VIP_B, 8, "/"));
    std::thread::sleep(Duration::from_millis(2000));
    let event = now();
    t.signal(gw1, "KILL");
    let took = t.wait(10.0, "gw2 holds both VIPs", |t| t.holds("g2", VIP) && t.holds("g2", VIP_B));
    assert!(!t.holds("g1", VIP) && !t.holds("g1", VIP_B), "gw1 holds no VIP");
    println!("active-active: gw2 holds both VIPs {:.3} s after gw1's gateway was killed", took.as_secs_f64());
    let a = figures("active-active, VIP A (gw1's)", &t.samples(la, 30), event);
    assert!(a.failed <= 100, "failed requests on VIP A are bounded: {a:?}");
    assert!(a.takeover_from_event < 5.0, "{a:?}");
    // VIP B never moved: gw2 answered it all along.
    let b = t.samples(lb, 30);
    let failed_b = b.iter().filter(|s| s.1 != 200).count();
    println!("active-active, VIP B (gw2's): requests {}, failed {failed_b}", b.len());
    assert!(b.len() >= 50, "load ran against VIP B ({} requests)", b.len());
    assert!(b.iter().filter(|s| s.1 == 200).all(|s| s.2.starts_with("g2")), "VIP B is answered by gw2 only");
    assert_eq!(failed_b, 0, "losing gw1 costs VIP B nothing");
    // Both VIPs answer from gw2 afterwards.
    for vip in [VIP, VIP_B] {
        assert!(t.curl("c", &format!("http://{vip}:8080/")).is_some_and(|b| b.starts_with("g2")), "{vip} answers from gw2");
    }
}

#[test]
fn replicated_sessions_survive_a_killed_master() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topo::new("r");
    // No memcached: the session lives only on the nodes, replicated over
    // the bridge (`[cluster]` on 198.18.0.1/.2:7946).
    let gw1 = t.node_with("g1", Sessions::Replicated);
    t.node_with("g2", Sessions::Replicated);
    t.caught_up();
    t.start_ha();
    let jar = t.file("cookies.txt");
    let items = fill_cart(&t, &jar, "alice", 5, "g1").unwrap_or_else(|e| panic!("added on gw1: {e}"));
    // Replication is asynchronous: wait (bounded) until gw2's own address
    // shows the whole cart.
    let replicated = t.wait(10.0, "gw2 holds the complete cart", |t| {
        let seen = peek(t, &jar, bridge_ip("g2"), "/cart");
        seen.1["backend"] == "g2" && cart_intact(&seen, &items)
    });
    println!("sessions (replicated): the cart was complete on gw2 {:.3} s after the last add (polled every 20 ms)", replicated.as_secs_f64());
    let f = fail_over(&mut t, std::slice::from_ref(&jar), |t| t.signal(gw1, "KILL"));
    let lost = usize::from(!cart_intact(&f.carts[0], &items));
    let (s, v) = &f.carts[0];
    println!("sessions (replicated, [cluster] over the bridge): carts 1, sessions lost {lost}, served after failover by {}", v["backend"]);
    assert_eq!((*s, v["backend"].as_str()), (200, Some("g2")), "the cart is read on gw2: {v}");
    assert_eq!(v["cart"], serde_json::json!(items), "the complete cart survives the failover: {v}");
    assert_eq!(v["user"], "alice", "{v}");
    figures("SIGKILL with replicated sessions", &f.samples, f.event);
}
