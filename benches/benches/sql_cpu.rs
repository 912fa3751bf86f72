//! Issue 10's SQL target, measured: sysbench `oltp_point_select`, 8
//! threads, direct to the primary vs through the gateway's read/write split
//! over 2 replicas (no CPU caps), with server-side prepared statements and
//! with the text protocol. Next to QPS it reports CPU per statement: the
//! gateway process's utime + stime, and MariaDB's (every server's) for the
//! same statements, so the ratio the issue sets (gateway ≤ 0.5x MariaDB's)
//! is read off one run.
//!
//! `cargo build --release -p switchyard && cargo bench -p switchyard-benches --bench sql_cpu`

use std::net::SocketAddr;
use std::process::Command;
use switchyard_benches::cpu_secs;
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const THREADS: &str = "8";

fn secs() -> String {
    std::env::var("SQL_BENCH_SECS").unwrap_or_else(|_| "10".into())
}

/// Total queries sysbench ran.
fn sysbench(addr: SocketAddr, ps_mode: &str, action: &str) -> f64 {
    let out = Command::new("sysbench")
        .arg("oltp_point_select")
        .arg(format!("--mysql-host={}", addr.ip()))
        .arg(format!("--mysql-port={}", addr.port()))
        .arg(format!("--mysql-user={APP_USER}"))
        .arg(format!("--mysql-password={APP_PASSWORD}"))
        .arg(format!("--mysql-db={DB}"))
        .args(["--tables=2", "--table-size=20000", "--rand-type=uniform", "--report-interval=0"])
        .arg(format!("--threads={THREADS}"))
        .arg(format!("--time={}", secs()))
        .arg(format!("--db-ps-mode={ps_mode}"))
        .arg(action)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sysbench: {e}; install it with `apt-get install -y sysbench`"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sysbench {action} against {addr} failed:\n{text}");
    if action != "run" {
        return 0.0;
    }
    let line = text.lines().find(|l| l.trim_start().starts_with("queries:")).unwrap_or_else(|| panic!("no queries: line in\n{text}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a query count")
}

fn main() {
    let cluster = Cluster::start(2);
    sysbench(cluster.primary.addr(), "auto", "prepare");
    cluster.wait_replicated();
    let servers: Vec<u32> = std::iter::once(&cluster.primary).chain(&cluster.replicas).filter_map(|m| m.pid()).collect();
    let maria_cpu = || servers.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    println!("sysbench oltp_point_select, {THREADS} threads, {} s per run; gateway: builtin split over 2 replicas", secs());
    println!("| protocol | path | QPS | QPS vs direct | gateway CPU µs/stmt | MariaDB CPU µs/stmt | gateway / MariaDB |");
    println!("|---|---|---|---|---|---|---|");
    for (server, runtime) in [("", "work stealing"), ("work_stealing = false\n", "no stealing")] {
        let gw = SqlGateway::start_tuned(&cluster, server, "");
        rows(&cluster, &gw, runtime, &maria_cpu);
    }
}

fn rows(cluster: &Cluster, gw: &SqlGateway, runtime: &str, maria_cpu: &dyn Fn() -> f64) {
    for (mode, protocol) in [("auto", "prepared"), ("disable", "text")] {
        let label = format!("{protocol}, {runtime}");
        sysbench(cluster.primary.addr(), mode, "run"); // warm-up
        sysbench(gw.sql, mode, "run");
        let m0 = maria_cpu();
        let direct = sysbench(cluster.primary.addr(), mode, "run");
        let direct_maria = (maria_cpu() - m0) / direct * 1e6;
        let (g0, m0) = (cpu_secs(gw.proc.pid()), maria_cpu());
        let proxied = sysbench(gw.sql, mode, "run");
        let gw_us = (cpu_secs(gw.proc.pid()) - g0) / proxied * 1e6;
        let maria_us = (maria_cpu() - m0) / proxied * 1e6;
        let per_s = |n: f64| n / secs().parse::<f64>().unwrap();
        println!("| {label} | direct | {:.0} | 1.00 | – | {direct_maria:.1} | – |", per_s(direct));
        println!("| {label} | gateway | {:.0} | {:.2} | {gw_us:.1} | {maria_us:.1} | {:.2} |", per_s(proxied), proxied / direct, gw_us / maria_us);
    }
    let hits = gw.metric("switchyard_sql_classify_total", &[("result", "hit")]);
    let parsed = gw.metric("switchyard_sql_classify_total", &[]) - hits;
    println!("classification ({runtime}): {hits:.0} digest-cache hits, {parsed:.0} parsed");
}
