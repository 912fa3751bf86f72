//! Issue 10's SQL target, measured: sysbench `oltp_point_select`, 8
//! threads, direct to the primary vs through the gateway's read/write split
//! over 2 replicas (no CPU caps), with server-side prepared statements and
//! with the text protocol. Next to QPS it reports CPU per statement: the
//! gateway process's utime + stime, and MariaDB's (every server's) for the
//! same statements, so the ratio the issue sets (gateway ≤ 0.5x MariaDB's)
//! is read off one run. Then `oltp_read_write` with `--skip_trx=on` (each
//! statement in autocommit, so reads can spread over the replicas), direct
//! vs through the gateway.
//!
//! The last column accounts for the whole machine: sysbench, MariaDB and
//! the gateway share its 2 cores, so once they saturate it, QPS through the
//! gateway can be at most (direct CPU per statement, all processes) /
//! (proxied CPU per statement, all processes): the `CPU ceiling`.
//!
//! `cargo build --release -p switchyard && cargo bench -p switchyard-benches --bench sql_cpu`

use std::net::SocketAddr;
use std::process::Command;
use switchyard_benches::{children_cpu_secs, cpu_secs};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const THREADS: &str = "8";

fn secs() -> String {
    std::env::var("SQL_BENCH_SECS").unwrap_or_else(|_| "10".into())
}

/// Total queries sysbench ran.
fn sysbench(addr: SocketAddr, ps_mode: &str, action: &str) -> f64 {
    sysbench_test("oltp_point_select", &[], addr, ps_mode, action)
}

fn sysbench_test(test: &str, extra: &[&str], addr: SocketAddr, ps_mode: &str, action: &str) -> f64 {
    let out = Command::new("sysbench")
        .arg(test)
        .args(extra)
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
    println!("| protocol | path | QPS | QPS vs direct | gateway CPU µs/stmt | MariaDB CPU µs/stmt | gateway / MariaDB | all CPU µs/stmt | CPU ceiling |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (server, runtime) in [("", "work stealing"), ("work_stealing = false\n", "no stealing")] {
        let gw = SqlGateway::start_tuned(&cluster, server, "");
        rows(&cluster, &gw, runtime, &maria_cpu);
    }
    let gw = SqlGateway::start_tuned(&cluster, "", "");
    read_write(&cluster, &gw, &maria_cpu);
}

/// CPU seconds spent per run: (sysbench, MariaDB, gateway).
struct Spent {
    queries: f64,
    sysbench: f64,
    maria: f64,
    gateway: f64,
}

impl Spent {
    fn measure(gw: &SqlGateway, maria_cpu: &dyn Fn() -> f64, run: impl FnOnce() -> f64) -> Self {
        let (c0, m0, g0) = (children_cpu_secs(), maria_cpu(), cpu_secs(gw.proc.pid()));
        let queries = run();
        Self { queries, sysbench: children_cpu_secs() - c0, maria: maria_cpu() - m0, gateway: cpu_secs(gw.proc.pid()) - g0 }
    }

    fn us(&self, secs: f64) -> f64 {
        secs / self.queries * 1e6
    }

    fn total_us(&self) -> f64 {
        self.us(self.sysbench + self.maria + self.gateway)
    }
}

/// `oltp_read_write`, statements in autocommit: reads spread, writes on the primary.
fn read_write(cluster: &Cluster, gw: &SqlGateway, maria_cpu: &dyn Fn() -> f64) {
    let run = |addr| sysbench_test("oltp_read_write", &["--skip_trx=on"], addr, "disable", "run");
    println!();
    println!("sysbench oltp_read_write --skip_trx=on, {THREADS} threads, {} s per run", secs());
    println!("| path | QPS | QPS vs direct | gateway CPU µs/stmt | MariaDB CPU µs/stmt | all CPU µs/stmt | CPU ceiling |");
    println!("|---|---|---|---|---|---|---|");
    run(cluster.primary.addr()); // warm-up
    let direct = Spent::measure(gw, maria_cpu, || run(cluster.primary.addr()));
    let proxied = Spent::measure(gw, maria_cpu, || run(gw.sql));
    let per_s = |n: f64| n / secs().parse::<f64>().unwrap();
    println!("| direct | {:.0} | 1.00 | – | {:.1} | {:.1} | – |", per_s(direct.queries), direct.us(direct.maria), direct.total_us());
    println!(
        "| gateway | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} |",
        per_s(proxied.queries),
        proxied.queries / direct.queries,
        proxied.us(proxied.gateway),
        proxied.us(proxied.maria),
        proxied.total_us(),
        direct.total_us() / proxied.total_us()
    );
}

fn rows(cluster: &Cluster, gw: &SqlGateway, runtime: &str, maria_cpu: &dyn Fn() -> f64) {
    for (mode, protocol) in [("auto", "prepared"), ("disable", "text")] {
        let label = format!("{protocol}, {runtime}");
        sysbench(cluster.primary.addr(), mode, "run"); // warm-up
        sysbench(gw.sql, mode, "run");
        let direct = Spent::measure(gw, maria_cpu, || sysbench(cluster.primary.addr(), mode, "run"));
        let proxied = Spent::measure(gw, maria_cpu, || sysbench(gw.sql, mode, "run"));
        let per_s = |n: f64| n / secs().parse::<f64>().unwrap();
        let (gw_us, maria_us) = (proxied.us(proxied.gateway), proxied.us(proxied.maria));
        println!("| {label} | direct | {:.0} | 1.00 | – | {:.1} | – | {:.1} | – |", per_s(direct.queries), direct.us(direct.maria), direct.total_us());
        println!(
            "| {label} | gateway | {:.0} | {:.2} | {gw_us:.1} | {maria_us:.1} | {:.2} | {:.1} | {:.2} |",
            per_s(proxied.queries),
            proxied.queries / direct.queries,
            gw_us / maria_us,
            proxied.total_us(),
            direct.total_us() / proxied.total_us()
        );
    }
    let hits = gw.metric("switchyard_sql_classify_total", &[("result", "hit")]);
    let parsed = gw.metric("switchyard_sql_classify_total", &[]) - hits;
    println!("classification ({runtime}): {hits:.0} digest-cache hits, {parsed:.0} parsed");
}
