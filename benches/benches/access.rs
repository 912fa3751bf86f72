//! UCON access checks (issue: access seam): decisions per second and the
//! p50 / p99 a request gains with `s-ucon`, against no access plugin and
//! against `rbac`, with users in 2 classes and 3,479 attribute subsets
//! (paper 002's partition count), at 10,000 and 1,000,000 users: roles are
//! per class and subset, so the cost must not grow with the user count.
//!
//! `cargo bench -p switchyard-benches --bench access` (about 3 minutes).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_benches::cpu_secs;
use switchyard_tests::*;

const JWT_KEY: &str = "bench-access-jwt-signing-key-0123456789abc";
const SUBSETS: usize = 3_479;
const RUN: Duration = Duration::from_secs(6);
const CONNS: usize = 16;

/// An HS256 token for `sub` (hand-rolled: the bench crate needs no JWT crate).
fn token(sub: &str) -> String {
    let b = base64_url;
    let head = b(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b(format!(r#"{{"sub":"{sub}","exp":4102444800}}"#).as_bytes());
    let mac = hmac_sha256(JWT_KEY.as_bytes(), format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b(&mac))
}

fn base64_url(d: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in d.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
    let ih = Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(ih.iter().copied()).collect();
    Sha256::digest(&outer).to_vec()
}

/// `users` subjects in 2 classes, each in one of `SUBSETS` cities.
fn attributes(users: usize) -> String {
    let mut s = String::with_capacity(users * 64);
    for u in 0..users {
        let class = if u % 50 == 0 { "teachers" } else { "students" };
        let _ = writeln!(s, "[subjects.u{u}]\nclass = \"{class}\"\ncity = \"city{}\"", u % SUBSETS);
    }
    s
}

fn policy() -> String {
    let mut s = String::from(
        "[plugins.ucon.config.roles]\nstudent = { grants = [\"read:paper\"] }\nteacher = { inherits = [\"student\"], grants = [\"read:submission\"] }\nlocal = { grants = [\"read:local\"] }\n\
         [plugins.ucon.config.classes]\nstudents = [\"student\"]\nteachers = [\"teacher\"]\n",
    );
    for i in 0..SUBSETS {
        let _ = writeln!(s, "[[plugins.ucon.config.subsets]]\nclass = \"students\"\nwhen = {{ city = \"city{i}\" }}\nroles = [\"local\"]");
    }
    s
}

fn config(dir: &std::path::Path, backend: SocketAddr, access: Option<&str>, users: usize) -> String {
    std::fs::write(dir.join("attributes.toml"), attributes(users)).unwrap();
    let route = access.map(|a| format!("access = \"{a}\"\nobject = {{ kind = \"paper\" }}\n")).unwrap_or_default();
    format!(
        "{SERVER}\n[access]\njwt_keys = [\"{JWT_KEY}\"]\nattributes_file = {:?}\n\
         [plugins.ucon]\npath = {:?}\nlimits = {{ deadline_ms = 50, instances = 16, memory_mb = 64 }}\n{}\n\
         [plugins.rbac]\npath = {:?}\nconfig = {{ role_attribute = \"class\", grants = {{ students = [\"read:paper\"], teachers = [\"read:*\"] }} }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n[[routes]]\nupstream = \"app\"\n{route}",
        dir.join("attributes.toml").to_string_lossy(),
        plugin("access_s_ucon").to_string_lossy(),
        policy(),
        plugin("access_rbac").to_string_lossy()
    )
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
