//! Slow and hostile clients (issue 10): while they hold the gateway, 8
//! well-behaved keep-alive clients must see p99 within 2x of the quiet run,
//! and the gateway's memory must stay bounded. Phases, each 5 s, HTTP:
//! quiet; 10,000 idle connections; 500 slowloris clients (one header line a
//! second, never finishing); 200 requests with 64 KiB headers. SQL: quiet;
//! 2,000 connections that never log in; 50 clients that never read a
//! 20 MB result. Prints p50/p99 per phase, the ratio to quiet and RSS.
//!
//! `cargo build --release -p switchyard && cargo bench -p switchyard-benches --bench hostile`

use mysql_async::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_benches::{rss_kib, CartUser};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};
use switchyard_tests::{backend, gateway, upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PHASE: Duration = Duration::from_secs(5);

/// p50 and p99 in ms of sorted µs samples.
fn pcts(mut lat: Vec<u32>) -> (f64, f64, usize) {
    lat.sort_unstable();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0;
    (at(0.5), at(0.99), lat.len())
}

/// 8 closed-loop clients for one phase: sorted latencies (µs) and errors.
async fn good_http(addr: SocketAddr) -> (Vec<u32>, usize) {
    let until = Instant::now() + PHASE;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut u = CartUser::new(addr);
                let (mut lat, mut errors) = (Vec::new(), 0);
                while Instant::now() < until {
                    let t = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), u.send("GET", "/")).await {
                        Ok(Ok(200)) => lat.push(t.elapsed().as_micros() as u32),
                        _ => {
                            errors += 1;
                            u.reset();
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    gather(tasks).await
}

/// All clients' latencies and errors, together.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<u32>, usize)>>) -> (Vec<u32>, usize) {
    let mut all = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.0.extend(l);
        all.1 += e;
    }
    all
}

fn row(family: &str, phase: &str, (lat, errors): (Vec<u32>, usize), quiet_p99: &mut Option<f64>, pid: u32) {
    let (p50, p99, n) = pcts(lat);
    let base = *quiet_p99.get_or_insert(p99);
    let verdict = if p99 <= 2.0 * base { "within 2x" } else { "OVER 2x" };
    println!("| {family} | {phase} | {n} | {errors} | {p50:.2} | {p99:.2} | {:.2} ({verdict}) | {:.1} |", p99 / base, rss_kib(pid) as f64 / 1024.0);
}

async fn http() {
    let b = backend("b", &["--threads", "1"]);
    let gw = gateway(&format!("[server]\nlisten = \"{{listen}}\"\nthreads = 2\n{}", upstream("web", None, &[(&b, 1)], "health = { check = \"none\" }")));
    let (addr, pid) = (gw.addr, gw.pid());
    let mut quiet = None;
    row("HTTP", "quiet", good_http(addr).await, &mut quiet, pid);

    let mut idle = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(e) => {
                println!("(idle connections stopped at {}: {e})", idle.len());
                break;
            }
        }
    }
    row("HTTP", &format!("+ {} idle connections", idle.len()), good_http(addr).await, &mut quiet, pid);

    let slow: Vec<_> = (0..500)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else { return };
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").await;
                let until = Instant::now() + PHASE + Duration::from_secs(1);
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if s.write_all(format!("X-Slow-{i}: x\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    row("HTTP", "+ 500 slowloris", good_http(addr).await, &mut quiet, pid);
    slow.into_iter().for_each(|t| t.abort());

    let big = format!("GET / HTTP/1.1\r\nHost: big\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10));
    let oversized: Vec<_> = (0..200)
        .map(|_| {
            let big = big.clone();
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else { return };
                let _ = s.write_all(big.as_bytes()).await;
                tokio::time::sleep(PHASE).await;
            })
        })
        .collect();
    row("HTTP", "+ 200 × 64 KiB headers", good_http(addr).await, &mut quiet, pid);
    oversized.into_iter().for_each(|t| t.abort());
    drop(idle);
}

async fn good_sql(url: String) -> (Vec<u32>, usize) {
    let until = Instant::now() + PHASE;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0);
                let Ok(mut c) = mysql_async::Conn::from_url(url).await else { return (lat, 1) };
                while Instant::now() < until {
                    let t = Instant::now();
                    match c.query_first::<i64, _>("SELECT v FROM items WHERE id = 1").await {
                        Ok(_) => lat.push(t.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    gather(tasks).await
}

async fn sql() {
    let cluster = Cluster::start(1);
    cluster.primary.sql(&format!("INSERT INTO {DB}.items (v, note) VALUES (1, 'x')"));
    cluster.wait_replicated();
    let gw = SqlGateway::start(&cluster, None, "");
    let url = gw.url(APP_USER, APP_PASSWORD, Some(DB));
    let pid = gw.proc.pid();
    let mut quiet = None;
    row("SQL", "quiet", good_sql(url.clone()).await, &mut quiet, pid);

    let mut never = Vec::new();
    for _ in 0..2_000 {
        if let Ok(s) = TcpStream::connect(gw.sql).await {
            never.push(s);
        }
    }
    row("SQL", &format!("+ {} never log in", never.len()), good_sql(url.clone()).await, &mut quiet, pid);
    drop(never);

    let stuck: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let Ok(mut c) = mysql_async::Conn::from_url(url).await else { return };
                // 20 MB of rows, then never read past the first: the gateway
                // must stop reading from the backend, not buffer it all.
                let Ok(mut result) = c.query_iter("SELECT REPEAT('x', 1000) FROM seq_1_to_20000").await else { return };
                let _ = result.next().await;
                tokio::time::sleep(PHASE + Duration::from_secs(1)).await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    row("SQL", "+ 50 never read a 20 MB result", good_sql(url.clone()).await, &mut quiet, pid);
    stuck.into_iter().for_each(|t| t.abort());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("8 keep-alive clients per phase, {} s each; gateway: 2 threads (HTTP), builtin split over 1 replica (SQL)", PHASE.as_secs());
    println!("| family | phase | requests | errors | p50 ms | p99 ms | p99 / quiet | gateway RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    rt.block_on(http());
    rt.block_on(sql());
}
