//! `sql-split` (paper 001 Fig. 11/12): read latency against connections
//! through each SQL router over 1, 2 and 3 replicas against a single server,
//! and write latency with and without replicas, on real MariaDB with GTID
//! replication (the harness's [`Cluster`]).
//!
//! Every MariaDB is capped at the same share of a core with a cgroup (as
//! `benches/sql_split.rs` does, root needed): on one 2-core machine the
//! servers would otherwise share the same cores and replicas could add no
//! capacity, unlike the paper's separate machines. Load: closed loop,
//! `connections` clients each running prepared point selects (or inserts)
//! back to back, because Fig. 11 plots latency against connections. The
//! split is judged against `primary-only` over the same replicas (the same
//! proxy, no split), and against the client talking to the primary directly.

use super::{find, pct};
use crate::bench::report::{num, Claim, Results};
use crate::bench::{check_config, Ctx, Family, Scenario};
use crate::cpu_secs;
use mysql_async::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const ROWS: u32 = 20_000;
const DIRECT: &str = "direct (single server)";

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "sql-split",
        summary: "paper 001 Fig. 11/12: read latency against connections over 1-3 replicas vs a single server; write latency with and without replicas",
        family: Family::Sql,
        defaults: &["rw-split", "primary-only"],
        run: split,
    }]
}

/// Cap a process at `percent` of one core with a cgroup (v1 `cpu` or v2),
/// on a 10 ms period so throttling stays smooth under many threads.
pub fn cap_cpu(pid: u32, name: &str, percent: u32) -> Result<(), String> {
    let quota = percent * 100;
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu");
    let (dir, writes): (std::path::PathBuf, Vec<(&str, String)>) = if v1.join("cgroup.procs").exists() {
        (v1.join(format!("switchyard-bench-{name}")), vec![("cpu.cfs_quota_us", "-1".into()), ("cpu.cfs_period_us", "10000".into()), ("cpu.cfs_quota_us", quota.to_string())])
    } else {
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        (v2.join(format!("switchyard-bench-{name}")), vec![("cpu.max", format!("{quota} 10000"))])
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (file, value) in writes {
        std::fs::write(dir.join(file), value).map_err(|e| format!("{file}: {e}"))?;
    }
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| format!("cgroup.procs: {e}"))
}

#[derive(Clone, Copy, PartialEq)]
enum Statement {
    RangeSelect,
    Insert,
}

/// The read: a 100-row range sum, heavy enough that a capped server, not
/// the client or the gateway, is what runs out (point selects cost MariaDB
/// about 13 µs: the cap would never bind).
const READ: &str = "SELECT SUM(v) FROM items WHERE id BETWEEN ? AND ? + 99";

impl Statement {
    /// The results group it is measured in.
    fn group(self) -> &'static str {
        match self {
            Self::RangeSelect => "reads",
            Self::Insert => "writes",
        }
    }
}

/// `conns` clients running `stmt` back to back for `run`: (latencies µs, errors, seconds).
fn load(rt: &tokio::runtime::Runtime, addr: SocketAddr, stmt: Statement, conns: usize, run: Duration, seed: u64) -> (Vec<u64>, usize, f64) {
    let url = format!("mysql://{APP_USER}:{APP_PASSWORD}@{addr}/{DB}?prefer_socket=false");
    let start = Instant::now();
    let until = start + run;
    let (lat, errors) = rt.block_on(async {
        let tasks: Vec<_> = (0..conns).map(|c| tokio::spawn(client(url.clone(), stmt, until, seed.wrapping_add(c as u64)))).collect();
        let (mut lat, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.expect("sql client");
            lat.extend(l);
            errors += e;
        }
        (lat, errors)
    });
    (lat, errors, start.elapsed().as_secs_f64())
}

async fn client(url: String, stmt: Statement, until: Instant, seed: u64) -> (Vec<u64>, usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bound = Duration::from_secs(5);
    let Ok(Ok(mut conn)) = tokio::time::timeout(bound, mysql_async::Conn::from_url(url)).await else { return (Vec::new(), 1) };
    let (mut lat, mut errors) = (Vec::new(), 0);
    while Instant::now() < until {
        let t = Instant::now();
        let id: u32 = rng.random_range(1..=ROWS);
        let r = match stmt {
            Statement::RangeSelect => tokio::time::timeout(bound, conn.exec_drop(READ, (id, id))).await,
            Statement::Insert => tokio::time::timeout(bound, conn.exec_drop("INSERT INTO items (v, note) VALUES (?, 'bench')", (id,))).await,
        };
        match r {
            Ok(Ok(())) => lat.push(t.elapsed().as_micros() as u64),
            _ => errors += 1,
        }
    }
    let _ = conn.disconnect().await;
    (lat, errors)
}

struct Bench<'a> {
    ctx: &'a Ctx,
    rt: tokio::runtime::Runtime,
    r: Results,
    step: Duration,
}

impl Bench<'_> {
    /// One series (a label) of `stmt` at each connection count.
    fn series(&mut self, label: &str, addr: SocketAddr, gw: Option<&SqlGateway>, stmt: Statement, conns: &[usize], rep: usize) {
        let group = stmt.group();
        for &c in conns {
            self.ctx.tick(&format!("rep {} {group}: {label}, {c} connections", rep + 1));
            let cpu0 = gw.map(|g| cpu_secs(g.proc.pid()));
            let (lat, errors, secs) = load(&self.rt, addr, stmt, c, self.step, self.ctx.seed);
            let (p50, p99, _) = crate::bench::load::percentiles(lat.iter().copied());
            let n = lat.len() as f64;
            let mut metrics = vec![("qps", n / secs), ("p50_ms", p50), ("p99_ms", p99), ("errors_pct", pct(errors as f64, n + errors as f64))];
            metrics.extend(gw.zip(cpu0).map(|(g, c0)| ("cpu_us_q", (cpu_secs(g.proc.pid()) - c0) * 1e6 / n.max(1.0))));
            self.r.row(label, group, c as f64, rep, &metrics);
        }
    }
}

fn gateway(cluster: &Cluster, replicas: usize, path: &std::path::Path) -> Result<SqlGateway, String> {
    check_config(&SqlGateway::config(cluster, replicas, Some(path), "").0)?;
    let gw = SqlGateway::start_over(cluster, replicas, Some(path), "");
    std::thread::sleep(Duration::from_millis(500)); // the first replica polls
    Ok(gw)
}

fn split(ctx: &Ctx) -> Result<Results, String> {
    let conns: &[usize] = ctx.pick(&[1, 8], &[1, 4, 16, 32]);
    let replica_counts: &[usize] = ctx.pick(&[1, 3], &[1, 2, 3]);
    let write_conns: &[usize] = &[1, 4];
    let top = replica_counts[replica_counts.len() - 1];
    let cluster = Cluster::start(top);
    cluster.primary.sql(&format!("INSERT INTO {DB}.items (v, note) SELECT seq, 'row' FROM {DB}.seq_1_to_{ROWS}"));
    cluster.wait_replicated();
    let cap: u32 = std::env::var("SQL_BENCH_CAP").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let servers = std::iter::once(("primary".to_string(), &cluster.primary)).chain(cluster.replicas.iter().enumerate().map(|(i, m)| (format!("replica-{i}"), m)));
    let capped = servers.map(|(name, m)| cap_cpu(m.pid().unwrap_or(0), &name, cap)).collect::<Result<Vec<_>, _>>();
    let labels: Vec<String> = ctx.plugins.iter().map(|p| p.label.clone()).collect();
    let mut b = Bench { ctx, rt: Ctx::runtime(), r: Results::new("sql-split", "read latency against connections over replicas vs a single server; write latency with and without replicas", &labels, ctx.reps), step: ctx.step(2.0, 6.0) };
    b.r.param("MariaDB", format!("a primary and {top} GTID replicas (the harness's Cluster), shop.items with {ROWS} rows, innodb_flush_log_at_trx_commit = 2"));
    b.r.param("CPU caps", match &capped {
        Ok(_) => format!("every MariaDB capped at {cap}% of one core (cgroup; SQL_BENCH_CAP)"),
        Err(e) => format!("NOT capped ({e}): the servers share the machine's cores, so replicas add little capacity"),
    });
    b.r.param("reads", format!("closed loop, prepared `{READ}` (random id), {:?} connections, {:.1} s per point", conns, b.step.as_secs_f64()));
    b.r.param("writes", format!("closed loop, prepared INSERT, {write_conns:?} connections; through the gateway with 0 replicas and with {top} (GTID read-your-writes on)"));
    b.r.param("direct", "the client straight to the primary, no gateway (the paper's single server)");
    ctx.progress(ctx.reps * ((1 + ctx.plugins.len() * replica_counts.len()) * conns.len() + (1 + 2 * ctx.plugins.len()) * write_conns.len()));
    for rep in 0..ctx.reps {
        b.series(DIRECT, cluster.primary.addr(), None, Statement::RangeSelect, conns, rep);
        b.series(DIRECT, cluster.primary.addr(), None, Statement::Insert, write_conns, rep);
        for p in &ctx.plugins {
            for &n in replica_counts {
                let gw = gateway(&cluster, n, &p.path)?;
                b.series(&format!("{} over {n} replicas", p.label), gw.sql, Some(&gw), Statement::RangeSelect, conns, rep);
            }
            for n in [0, top] {
                let gw = gateway(&cluster, n, &p.path)?;
                b.series(&format!("{} over {n} replicas", p.label), gw.sql, Some(&gw), Statement::Insert, write_conns, rep);
            }
        }
    }
    let mut r = b.r;
    r.plot("Fig. 11: read p50 against connections", "reads", "connections", ("p50 ms (log)", "p50_ms"), true);
    r.plot("Read throughput against connections", "reads", "connections", ("queries/s", "qps"), false);
    r.plot("Fig. 12: write p50 against connections", "writes", "connections", ("p50 ms", "p50_ms"), false);
    let columns = [("queries/s", "qps"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("errors %", "errors_pct"), ("gateway CPU µs/query", "cpu_us_q")];
    r.table("Fig. 11: reads", "reads", "connections", &columns);
    r.table("Fig. 12: writes", "writes", "connections", &columns);
    r.aggregate();
    r.claim = claim(&r, ctx, conns[conns.len() - 1] as f64, top);
    Ok(r)
}

fn claim(r: &Results, ctx: &Ctx, conns: f64, top: usize) -> Claim {
    let get = |l: &str, g: &str, x: f64, m: &str| r.median(l, g, x, m).unwrap_or(f64::NAN);
    let mut evidence = vec![format!("{DIRECT}: reads {} q/s, p50 {} ms at {conns} connections; writes p50 {} ms", num(get(DIRECT, "reads", conns, "qps")), num(get(DIRECT, "reads", conns, "p50_ms")), num(get(DIRECT, "writes", 1.0, "p50_ms")))];
    for p in &ctx.plugins {
        let l = format!("{} over {top} replicas", p.label);
        let w0 = format!("{} over 0 replicas", p.label);
        evidence.push(format!(
            "{l}: reads {} q/s, p50 {} ms; writes p50 {} ms (0 replicas: {} ms)",
            num(get(&l, "reads", conns, "qps")),
            num(get(&l, "reads", conns, "p50_ms")),
            num(get(&l, "writes", 1.0, "p50_ms")),
            num(get(&w0, "writes", 1.0, "p50_ms"))
        ));
    }
    // The single server: primary-only through the same gateway if it ran
    // (the split's own effect), else the primary directly.
    let single = find(ctx, "primary-only").map_or(DIRECT.to_string(), |p| format!("{p} over {top} replicas"));
    let holds = find(ctx, "rw-split").map(|s| {
        let l = format!("{s} over {top} replicas");
        let faster = get(&l, "reads", conns, "qps") >= 1.5 * get(&single, "reads", conns, "qps") && get(&l, "reads", conns, "p50_ms") <= get(&single, "reads", conns, "p50_ms");
        evidence.push(format!("split / single server ({single}) read q/s = {:.2}x", get(&l, "reads", conns, "qps") / get(&single, "reads", conns, "qps")));
        faster && get(&l, "writes", 1.0, "p50_ms") <= 1.5 * get(&format!("{s} over 0 replicas"), "writes", 1.0, "p50_ms")
    });
    Claim {
        text: format!("paper 001 Fig. 11/12: with the read/write split over {top} replicas, reads at {conns} connections reach >= 1.5x a single server's throughput (primary-only through the same gateway) at no higher latency, while writes with replicas are only slightly slower than without (p50 <= 1.5x)"),
        holds,
        evidence: evidence.join("; "),
    }
}
