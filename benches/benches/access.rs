//! UCON access checks (issue: access seam): decisions per second and the
//! p50 / p99 a request gains with `s-ucon`, against no access plugin and
//! against `rbac`, with users in 2 classes and 3,479 attribute subsets
//! (paper 002's partition count), at 10,000 and 1,000,000 users: roles are
//! per class and subset, so the cost must not grow with the user count.
//!
//! `cargo bench -p switchyard-benches --bench access` (about 3 minutes).

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_benches::bench::scenarios::access::{self, token, SUBSETS};
use switchyard_benches::cpu_secs;
use switchyard_tests::*;

const RUN: Duration = Duration::from_secs(6);
const CONNS: usize = 16;

fn config(dir: &std::path::Path, backend: SocketAddr, access: Option<&str>, users: usize) -> String {
    let plugin = access.map(|a| match a {
        "rbac" => (plugin("access_rbac"), "access-rbac"),
        _ => (plugin("access_s_ucon"), "access-s-ucon"),
    });
    access::config(dir, backend, plugin.as_ref().map(|(p, k)| (p.as_path(), *k)), users)
}

/// Keep-alive GETs with rotating subjects for `RUN`; (latencies, errors).
fn load(addr: SocketAddr, users: usize) -> (Vec<Duration>, usize) {
    let until = Instant::now() + RUN;
    let hs: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let tokens: Vec<String> = (0..64).map(|i| token(&format!("u{}", (c * 7919 + i * 104_729) % users))).collect();
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut i = 0;
                while Instant::now() < until {
                    let auth = format!("Bearer {}", tokens[i % tokens.len()]);
                    let t = Instant::now();
                    let r = request(addr, "GET", "/paper", &[("Authorization", &auth)], b"");
                    if r.status == 200 {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in hs {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    (lat, errors)
}

fn main() {
    let b = backend("app", &["--threads", "2"]);
    println!("GET through the gateway (2 threads), {CONNS} clients, a new connection per request, {} s per run; {SUBSETS} attribute subsets", RUN.as_secs());
    println!("{:<10} {:>9} {:>10} {:>9} {:>8} {:>8} {:>12} {:>11}", "plugin", "users", "req/s", "errors", "p50 ms", "p99 ms", "CPU us/req", "decision mean");
    for users in [10_000usize, 1_000_000] {
        let mut base_p50 = None;
        for access in [None, Some("rbac"), Some("ucon")] {
            let dir = tempfile::tempdir().unwrap();
            let (gw, admin) = gateway_with_admin(&config(dir.path(), b.addr, access, users), "");
            let cpu0 = cpu_secs(gw.pid());
            let started = Instant::now();
            let (lat, errors) = load(gw.addr, users);
            let secs = started.elapsed().as_secs_f64();
            let cpu = cpu_secs(gw.pid()) - cpu0;
            let n = lat.len().max(1);
            let (p50, p99) = (lat[n / 2], lat[(n * 99 / 100).min(n - 1)]);
            let decisions = metric(admin, "switchyard_access_decision_duration_seconds_count", &[]);
            let decision_mean_us = if decisions > 0.0 { metric(admin, "switchyard_access_decision_duration_seconds_sum", &[]) * 1e6 / decisions } else { 0.0 };
            let added = base_p50.map_or(String::new(), |b: Duration| format!(" (+{:.3} ms p50)", (p50.as_secs_f64() - b.as_secs_f64()) * 1000.0));
            base_p50.get_or_insert(p50);
            println!(
                "{:<10} {:>9} {:>10.0} {:>9} {:>8.3} {:>8.3} {:>12.1} {:>9.1}us{added}",
                access.unwrap_or("none"),
                users,
                lat.len() as f64 / secs,
                errors,
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0,
                cpu * 1e6 / n as f64,
                decision_mean_us
            );
        }
    }
}
