//! The SQL listener under sysbench (Debian's 1.0), side by side in one run:
//!
//! 1. proxy overhead with one backend: `oltp_point_select` and
//!    `oltp_read_only` direct to the primary vs through the gateway
//!    (primary-only router); target >= 0.85 of direct QPS;
//! 2. read scaling (paper 001, Fig. 11): each MariaDB capped at the same
//!    CPU share with a cgroup; `oltp_read_only` (no transactions) through
//!    `rw-split` over 2 replicas vs `primary-only`; target >= 1.8x;
//! 3. write latency (Fig. 12): `oltp_insert`, one thread, direct vs through
//!    the gateway (rw-split, GTID read-your-writes on).
//!
//! `cargo build --release -p switchyard && cargo bench -p switchyard-benches --bench sql_split`
//! Needs root for the cgroup (cgroup v1 `cpu` or v2), sysbench and MariaDB.

use std::net::SocketAddr;
use std::process::Command;
use switchyard_benches::bench::scenarios::sql::cap_cpu;
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const TABLES: &str = "4";
const TABLE_SIZE: &str = "20000";

fn secs() -> String {
    std::env::var("SQL_BENCH_SECS").unwrap_or_else(|_| "10".into())
}

/// One sysbench run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    qps: f64,
    avg_ms: f64,
    p95_ms: f64,
}

fn sysbench(test: &str, addr: SocketAddr, threads: usize, extra: &[&str], action: &str) -> Run {
    let mut cmd = Command::new("sysbench");
    cmd.arg(test)
        .arg(format!("--mysql-host={}", addr.ip()))
        .arg(format!("--mysql-port={}", addr.port()))
        .arg(format!("--mysql-user={APP_USER}"))
        .arg(format!("--mysql-password={APP_PASSWORD}"))
        .arg(format!("--mysql-db={DB}"))
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_SIZE}"))
        .arg(format!("--threads={threads}"))
        .arg(format!("--time={}", secs()))
        .args(["--report-interval=0", "--rand-type=uniform", "--db-ps-mode=auto", "--mysql-ignore-errors=none"])
        .args(extra)
        .arg(action);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run sysbench: {e}; install it with `apt-get install -y sysbench`"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sysbench {test} {action} against {addr} failed:\n{text}");
    let num = |key: &str, paren: bool| -> f64 {
        let line = text.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key:?} in sysbench output:\n{text}"));
        let field = if paren { line.split('(').nth(1).unwrap_or("").split_whitespace().next().unwrap_or("") } else { line.split_whitespace().last().unwrap_or("") };
        field.parse().unwrap_or(0.0)
    };
    if action != "run" {
        return Run { qps: 0.0, avg_ms: 0.0, p95_ms: 0.0 };
    }
    Run { qps: num("queries:", true), avg_ms: num("avg:", false), p95_ms: num("95th percentile:", false) }
}

fn line(label: &str, r: Run) {
    println!("  {label:<44} {:>9.0} q/s   avg {:>6.2} ms   p95 {:>6.2} ms", r.qps, r.avg_ms, r.p95_ms);
}

fn main() {
    let cluster = Cluster::start(2);
    let primary = cluster.primary.addr();
    sysbench("oltp_read_only", primary, 4, &[], "prepare");
    cluster.wait_replicated();
    let only = SqlGateway::start(&cluster, Some("primary_only"), "");
    let split = SqlGateway::start(&cluster, Some("rw_split"), "");
    let threads = 16;
    println!("sysbench 1.0: {TABLES} tables x {TABLE_SIZE} rows, {threads} threads, {} s per run", secs());

    println!("1. proxy overhead, one backend (primary-only router), no CPU caps:");
    for test in ["oltp_point_select", "oltp_read_only"] {
        sysbench(test, primary, threads, &[], "run"); // warm-up
        let direct = sysbench(test, primary, threads, &[], "run");
        let proxied = sysbench(test, only.sql, threads, &[], "run");
        line(&format!("{test} direct"), direct);
        line(&format!("{test} via switchyard"), proxied);
        println!("  {test}: switchyard / direct = {:.3}   (target >= 0.85)", proxied.qps / direct.qps);
    }

    let cap: u32 = std::env::var("SQL_BENCH_CAP").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let capped = [("primary", cluster.primary.pid()), ("replica-0", cluster.replicas[0].pid()), ("replica-1", cluster.replicas[1].pid())]
        .into_iter()
        .map(|(name, pid)| cap_cpu(pid.expect("running"), name, cap))
        .collect::<Result<Vec<_>, _>>();
    match &capped {
        Ok(_) => println!("2. read scaling, every MariaDB capped at {cap}% of one core (cgroup):"),
        Err(e) => println!("2. read scaling, NOT capped ({e}): figures below share the machine's cores"),
    }
    let ro = ["--skip_trx=on"];
    let direct = sysbench("oltp_read_only", primary, threads, &ro, "run");
    let base = sysbench("oltp_read_only", only.sql, threads, &ro, "run");
    let scaled = sysbench("oltp_read_only", split.sql, threads, &ro, "run");
    line("oltp_read_only direct to the primary", direct);
    line("oltp_read_only via primary-only", base);
    line("oltp_read_only via rw-split, 2 replicas", scaled);
    println!("  with caps, one backend: switchyard / direct = {:.3}   (target >= 0.85)", base.qps / direct.qps);
    println!("  rw-split / primary-only read QPS = {:.2}x   (target >= 1.8x)", scaled.qps / base.qps);

    println!("3. write latency, oltp_insert, 1 thread (CPU caps still on):");
    let direct = sysbench("oltp_insert", primary, 1, &[], "run");
    let proxied = sysbench("oltp_insert", split.sql, 1, &[], "run");
    line("oltp_insert direct", direct);
    line("oltp_insert via rw-split (gtid causal)", proxied);
    println!("  write latency switchyard / direct: avg {:.2}x, p95 {:.2}x", proxied.avg_ms / direct.avg_ms, proxied.p95_ms / direct.p95_ms);
}
