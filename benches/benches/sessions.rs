//! Session strategies side by side (issue: session seam, part 1). Per
//! strategy: one release gateway, three cart backends, real memcached, and
//! 100 / 500 / 2,000 concurrent users running the cart scenario (log in,
//! add 5 items, read the cart; again) closed-loop, each on its own
//! keep-alive connection. Printed per run: throughput, p50 / p99, gateway
//! CPU per request, gateway resident memory per 1,000 active sessions.
//! Then paper 002's claim: O-Session's gateway memory per user against the
//! same sessions kept in the gateway (`tier = "local"`).
//! Baseline: the users talking to one backend directly (sessions in its
//! memory), so a run shows which part of the cost is the gateway's.
//!
//! `cargo bench -p switchyard-benches --bench sessions` (about 3 minutes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_benches::bench::scenarios::sessions::{memory_curve, node_config};
use switchyard_benches::{cart_load, cpu_secs, rss_kib};
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const USERS: [usize; 3] = [100, 500, 2000];
const RUN: Duration = Duration::from_secs(6);
/// Sessions created for the memory-per-user comparison.
const MEMORY_USERS: usize = 20_000;

struct Row {
    label: String,
    users: usize,
    reqs: usize,
    errors: usize,
    secs: f64,
    p50: u32,
    p99: u32,
    cpu_us: f64,
    rss_per_1k_kib: f64,
}

fn measure(rt: &tokio::runtime::Runtime, label: &str, addr: SocketAddr, pid: Option<u32>) -> Vec<Row> {
    let mut rows = Vec::new();
    // Resident memory of the idle gateway: each run's growth over it is
    // what its active users (sessions and their connections) cost.
    let rss0 = pid.map_or(0, rss_kib);
    for users in USERS {
        let cpu0 = pid.map_or(0.0, cpu_secs);
        let (lat, errors, secs) = cart_load(rt, &[addr], users, RUN);
        let (rss1, cpu1) = pid.map_or((0, 0.0), |p| (rss_kib(p), cpu_secs(p)));
        let n = lat.len().max(1);
        rows.push(Row {
            label: label.to_string(),
            users,
            reqs: lat.len(),
            errors,
            secs,
            p50: lat.get(n / 2).copied().unwrap_or(0),
            p99: lat.get(n * 99 / 100).copied().unwrap_or(0),
            cpu_us: (cpu1 - cpu0) * 1e6 / n as f64,
            rss_per_1k_kib: rss1.saturating_sub(rss0) as f64 / (users as f64 / 1000.0),
        });
    }
    rows
}

/// Gateway memory per session after `n` logins: (RSS growth, bytes the
/// local tier holds) per session.
fn memory_per_user(rt: &tokio::runtime::Runtime, gw: &Proc, admin: SocketAddr, n: usize) -> (f64, f64) {
    let (_, held, rss, failed) = memory_curve(rt, gw, admin, &[n])[0];
    assert_eq!(failed, 0, "logins failed");
    (rss / n as f64, held / n as f64)
}

fn config(mc: &Memcached, file: &str, plugin_config: &str, backends: &[&Proc]) -> String {
    node_config(mc, &plugin(file), plugin_config, backends, None)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mc = Memcached::start();
    let header: Vec<Proc> = (0..3).map(|i| backend(&format!("h{i}"), &["--sessions", "header", "--threads", "1"])).collect();
    let memory: Vec<Proc> = (0..3).map(|i| backend(&format!("m{i}"), &["--sessions", "memory", "--threads", "1"])).collect();
    let hb: Vec<&Proc> = header.iter().collect();
    let mb: Vec<&Proc> = memory.iter().collect();

    let mut rows = measure(&rt, "direct (1 backend, memory sessions)", memory[0].addr, None);
    for (label, file, cfg, backs) in [
        ("sticky", "session_sticky", "", &mb),
        ("centralized", "session_centralized", "", &hb),
        ("o-session", "session_o_session", "", &hb),
        ("local tier (in-gateway sessions)", "session_o_session", "tier = \"local\"", &hb),
    ] {
        let gw = gateway(&config(&mc, file, cfg, backs));
        rows.extend(measure(&rt, label, gw.addr, Some(gw.pid())));
    }

    println!("cart scenario, closed loop, {} s per run, 3 backends, 1 gateway (2 threads), memcached", RUN.as_secs());
    println!("{:<36} {:>6} {:>9} {:>7} {:>8} {:>8} {:>10} {:>14} {:>7}", "strategy", "users", "req/s", "errors", "p50 ms", "p99 ms", "CPU us/req", "RSS KiB/1k ses", "vs direct");
    let direct: BTreeMap<usize, f64> = rows.iter().filter(|r| r.label.starts_with("direct")).map(|r| (r.users, r.reqs as f64 / r.secs)).collect();
    for r in &rows {
        let rps = r.reqs as f64 / r.secs;
        println!(
            "{:<36} {:>6} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>10.1} {:>14.0} {:>7.2}",
            r.label,
            r.users,
            rps,
            r.errors,
            f64::from(r.p50) / 1000.0,
            f64::from(r.p99) / 1000.0,
            r.cpu_us,
            r.rss_per_1k_kib,
            rps / direct[&r.users]
        );
    }

    // Paper 002: O-Session keeps nothing per user in the gateway.
    let (osession, o_admin) = gateway_with_admin(&config(&mc, "session_o_session", "", &hb), "");
    let (local, l_admin) = gateway_with_admin(&config(&mc, "session_o_session", "tier = \"local\"", &hb), "");
    let (rss_o, held_o) = memory_per_user(&rt, &osession, o_admin, MEMORY_USERS);
    let (rss_l, held_l) = memory_per_user(&rt, &local, l_admin, MEMORY_USERS);
    println!("gateway memory per user after {MEMORY_USERS} new sessions (session state the gateway holds; RSS growth):");
    println!("  o-session (passport message in memcached): {held_o:.0} B held, {rss_o:.0} B RSS");
    println!("  same sessions in the gateway (local tier): {held_l:.0} B held, {rss_l:.0} B RSS");
    println!("  o-session / local: {:.3} (held), {:.3} (RSS)", held_o / held_l.max(1.0), rss_o / rss_l.max(1.0));
}
