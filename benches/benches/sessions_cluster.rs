//! Session strategies on a gateway cluster (issue: session seam, part 2).
//!
//! 1. All five strategies with 3 gateway nodes and 3 backends, 100 / 500 /
//!    2,000 concurrent users of the cart scenario (each user on one node,
//!    users spread over the nodes): throughput, p50 / p99, gateway CPU per
//!    request (all nodes).
//! 2. Paper 003's claim: bytes sent between gateway nodes per session write
//!    at 2, 4 and 8 nodes, replicated against centralized-dynamic (target:
//!    the hybrid at 8 nodes sends at most 20% of what replication sends).
//!
//! `cargo bench -p switchyard-benches --bench sessions_cluster` (about 4 minutes).

use std::net::SocketAddr;
use std::time::Duration;
use switchyard_benches::{cart_load, cpu_secs};
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const KEY: &str = "bench-session-signing-key-0123456789abcdef";
const CLUSTER_KEY: &str = "bench-cluster-shared-key-0123456789abcdef";
const USERS: [usize; 3] = [100, 500, 2000];
const RUN: Duration = Duration::from_secs(6);
/// Users of the traffic measurement, each: log in, add 5 items.
const TRAFFIC_USERS: usize = 200;

fn node_config(mc: &Memcached, file: &str, plugin_config: &str, backends: &[&Proc], id: usize, ports: &[u16]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    let peers: String = ports
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != id)
        .map(|(j, p)| format!("[[cluster.peers]]\nid = {}\naddress = \"127.0.0.1:{p}\"\n", j + 1))
        .collect();
    format!(
        "{SERVER}\n[session]\nkeys = [\"{KEY}\"]\n[session.central]\nservers = [\"{}\"]\npool = 32\n\
         [plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 50, instances = 64 }}\n[plugins.sess.config]\n{plugin_config}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[[routes]]\nupstream = \"app\"\nsession = \"sess\"\n\
         [cluster]\nid = {}\nlisten = \"127.0.0.1:{}\"\nkey = \"{CLUSTER_KEY}\"\n{peers}",
        mc.addr,
        plugin(file).to_string_lossy(),
        list.join(", "),
        id + 1,
        ports[id]
    )
}

fn cluster(n: usize, mc: &Memcached, file: &str, plugin_config: &str, backends: &[&Proc]) -> Vec<(Proc, SocketAddr)> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    (0..n).map(|i| gateway_with_admin(&node_config(mc, file, plugin_config, backends, i, &ports), "")).collect()
}

/// Bytes all nodes sent to peers.
fn peer_bytes(nodes: &[(Proc, SocketAddr)]) -> f64 {
    nodes.iter().map(|(_, admin)| metric(*admin, "switchyard_cluster_bytes_sent_total", &[])).sum()
}

fn traffic_per_write(n: usize, mc: &Memcached, file: &str, backends: &[&Proc]) -> f64 {
    let nodes = cluster(n, mc, file, "", backends);
    std::thread::sleep(Duration::from_secs(2)); // catch-up done
    let before = peer_bytes(&nodes);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(p, _)| p.addr).collect();
    let handles: Vec<_> = (0..20)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                // Session writes that succeeded (a 503 from an overloaded
                // store is left out of the count, not of the traffic).
                let mut writes = 0usize;
                for u in 0..TRAFFIC_USERS / 20 {
                    let mut b = Browser::new(addrs[(t + u) % addrs.len()]);
                    writes += usize::from(b.send("POST", &format!("/cart/login?user=t{t}-{u}"), &[], b"").status == 200);
                    for i in 0..5 {
                        writes += usize::from(b.send("POST", &format!("/cart/add?item=item-{i}"), &[], b"").status == 200);
                    }
                }
                writes
            })
        })
        .collect();
    let writes: usize = handles.into_iter().map(|h| h.join().expect("traffic thread")).sum();
    std::thread::sleep(Duration::from_millis(500)); // the last deltas leave
    assert!(writes > TRAFFIC_USERS, "too few session writes succeeded to measure ({writes})");
    (peer_bytes(&nodes) - before) / writes as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mc = Memcached::start();
    let header: Vec<Proc> = (0..3).map(|i| backend(&format!("h{i}"), &["--sessions", "header", "--threads", "1"])).collect();
    let memory: Vec<Proc> = (0..3).map(|i| backend(&format!("m{i}"), &["--sessions", "memory", "--threads", "1"])).collect();
    let hb: Vec<&Proc> = header.iter().collect();
    let mb: Vec<&Proc> = memory.iter().collect();

    println!("cart scenario on 3 gateway nodes (2 threads each), 3 backends, memcached; closed loop, {} s per run", RUN.as_secs());
    println!("{:<22} {:>6} {:>9} {:>7} {:>8} {:>8} {:>12}", "strategy", "users", "req/s", "errors", "p50 ms", "p99 ms", "CPU us/req");
    for (label, file, backs) in [
        ("sticky", "session_sticky", &mb),
        ("centralized", "session_centralized", &hb),
        ("o-session", "session_o_session", &hb),
        ("replicated", "session_replicated", &hb),
        ("centralized-dynamic", "session_centralized_dynamic", &hb),
    ] {
        let nodes = cluster(3, &mc, file, "", backs);
        std::thread::sleep(Duration::from_secs(2));
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(p, _)| p.addr).collect();
        for users in USERS {
            let cpu0: f64 = nodes.iter().map(|(p, _)| cpu_secs(p.pid())).sum();
            let (lat, errors, secs) = cart_load(&rt, &addrs, users, RUN);
            let cpu1: f64 = nodes.iter().map(|(p, _)| cpu_secs(p.pid())).sum();
            let n = lat.len().max(1);
            println!(
                "{:<22} {:>6} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>12.1}",
                label,
                users,
                lat.len() as f64 / secs,
                errors,
                f64::from(lat[n / 2]) / 1000.0,
                f64::from(lat[(n * 99 / 100).min(n - 1)]) / 1000.0,
                (cpu1 - cpu0) * 1e6 / n as f64
            );
        }
    }

    println!("\nbytes between gateway nodes per session write ({TRAFFIC_USERS} users x (login + 5 adds))");
    println!("{:>6} {:>14} {:>22} {:>8}", "nodes", "replicated", "centralized-dynamic", "ratio");
    for n in [2, 4, 8] {
        let full = traffic_per_write(n, &mc, "session_replicated", &hb);
        let hybrid = traffic_per_write(n, &mc, "session_centralized_dynamic", &hb);
        println!("{n:>6} {full:>14.0} {hybrid:>22.0} {:>8.3}", hybrid / full.max(1.0));
    }
    println!("target: ratio at 8 nodes <= 0.20");
}
