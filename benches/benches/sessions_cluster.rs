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
use switchyard_benches::bench::scenarios::sessions::{cluster, traffic_per_write, TRAFFIC_USERS};
use switchyard_benches::{cart_steady, cpu_secs};
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const USERS: [usize; 3] = [100, 500, 2000];
const RUN: Duration = Duration::from_secs(6);
/// The same users' first seconds (connects and logins all at once), not measured.
const WARM: Duration = Duration::from_secs(2);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mc = Memcached::start();
    let header: Vec<Proc> = (0..3).map(|i| backend(&format!("h{i}"), &["--sessions", "header", "--threads", "1"])).collect();
    let memory: Vec<Proc> = (0..3).map(|i| backend(&format!("m{i}"), &["--sessions", "memory", "--threads", "1"])).collect();
    let hb: Vec<&Proc> = header.iter().collect();
    let mb: Vec<&Proc> = memory.iter().collect();

    println!("cart scenario on 3 gateway nodes (2 threads each), 3 backends, memcached; closed loop, {} s per run after {} s of the same users", RUN.as_secs(), WARM.as_secs());
    println!("{:<22} {:>6} {:>9} {:>7} {:>8} {:>8} {:>12}", "strategy", "users", "req/s", "errors", "p50 ms", "p99 ms", "CPU us/req");
    for (label, file, backs) in [
        ("sticky", "session_sticky", &mb),
        ("centralized", "session_centralized", &hb),
        ("o-session", "session_o_session", &hb),
        ("replicated", "session_replicated", &hb),
        ("centralized-dynamic", "session_centralized_dynamic", &hb),
    ] {
        let nodes = cluster(3, &mc, &plugin(file), "", backs);
        std::thread::sleep(Duration::from_secs(2));
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(p, _)| p.addr).collect();
        for users in USERS {
            let pids: Vec<u32> = nodes.iter().map(|(p, _)| p.pid()).collect();
            let (lat, errors, secs, cpu) = cart_steady(&rt, &addrs, users, None, (WARM, RUN), move || pids.iter().map(|&p| cpu_secs(p)).sum());
            let n = lat.len().max(1);
            println!(
                "{:<22} {:>6} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>12.1}",
                label,
                users,
                lat.len() as f64 / secs,
                errors,
                f64::from(lat[n / 2]) / 1000.0,
                f64::from(lat[(n * 99 / 100).min(n - 1)]) / 1000.0,
                cpu * 1e6 / n as f64
            );
        }
    }

    println!("\nbytes between gateway nodes per session write ({TRAFFIC_USERS} users x (login + 5 adds))");
    println!("{:>6} {:>14} {:>22} {:>8}", "nodes", "replicated", "centralized-dynamic", "ratio");
    for n in [2, 4, 8] {
        let full = traffic_per_write(n, &mc, &plugin("session_replicated"), &hb).expect("replicated traffic");
        let hybrid = traffic_per_write(n, &mc, &plugin("session_centralized_dynamic"), &hb).expect("centralized-dynamic traffic");
        println!("{n:>6} {full:>14.0} {hybrid:>22.0} {:>8.3}", hybrid / full.max(1.0));
    }
    println!("target: ratio at 8 nodes <= 0.20");
}
