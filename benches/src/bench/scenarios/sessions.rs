//! Session scenarios. `sessions` (paper 003 Fig. 3): response time against
//! users per strategy on a 3-node gateway cluster, and bytes sent between
//! gateway nodes per session write against the node count.
//! `session-memory` (paper 002): gateway memory against users, sessions
//! kept in the gateway against O-Session passports.
//!
//! Load: closed-loop cart users ([`cart_steady`]: log in, add 5 items, read
//! the cart, again), each on its own keep-alive connection, because the
//! papers count concurrent users (JMeter threads), not a request rate. The
//! cart app is `switchyard demo-backend --sessions header` (`memory` for
//! sticky, which keeps sessions in the backend). The setup helpers here
//! are shared with `benches/sessions.rs` and `benches/sessions_cluster.rs`.

use super::{find, labels, pct, runs};
use crate::bench::report::{num, Claim, Results};
use crate::bench::{check_config, shipped_path, Ctx, Family, Scenario};
use crate::{cart_steady, cpu_secs, rss_kib, CartUser};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::{backend, free_port, gateway_with_admin, metric, Proc};

/// Session token signing key of the bench gateways.
pub const KEY: &str = "bench-session-signing-key-0123456789abcdef";
const CLUSTER_KEY: &str = "bench-cluster-shared-key-0123456789abcdef";
/// Users of the traffic measurement, each: log in, add 5 items.
pub const TRAFFIC_USERS: usize = 200;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "sessions",
            summary: "paper 003 Fig. 3: response time against users per session strategy, bytes between gateway nodes against node count",
            family: Family::Session,
            defaults: &["session-replicated", "session-centralized", "session-centralized-dynamic", "session-sticky", "session-o-session"],
            run: sessions,
        },
        Scenario {
            name: "session-memory",
            summary: "paper 002: gateway memory against concurrent users, sessions in the gateway vs O-Session",
            family: Family::Session,
            defaults: &["session-o-session"],
            run: memory,
        },
    ]
}

/// A gateway of `threads` worker threads with the session plugin at
/// `path` (`[plugins.sess]`), over `backends`, memcached as the central
/// tier, and, with `cluster = (id, ports)`, node `id` of a cluster whose
/// nodes listen on `ports`.
pub fn node_config(threads: usize, mc: &Memcached, path: &Path, plugin_config: &str, backends: &[&Proc], cluster: Option<(usize, &[u16])>) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    let mut s = format!(
        "[server]\nlisten = \"{{listen}}\"\nthreads = {threads}\n[session]\nkeys = [\"{KEY}\"]\nlocal = {{ max_mb = 1024 }}\n[session.central]\nservers = [\"{}\"]\npool = 32\ntimeout_ms = 1000\n\
         [plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 50, instances = 1024 }}\n[plugins.sess.config]\n{plugin_config}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[[routes]]\nupstream = \"app\"\nsession = \"sess\"\n",
        mc.addr,
        path.to_string_lossy(),
        list.join(", ")
    );
    if let Some((id, ports)) = cluster {
        s += &format!("[cluster]\nid = {}\nlisten = \"127.0.0.1:{}\"\nkey = \"{CLUSTER_KEY}\"\n", id + 1, ports[id]);
        for (j, p) in ports.iter().enumerate().filter(|(j, _)| *j != id) {
            s += &format!("[[cluster.peers]]\nid = {}\naddress = \"127.0.0.1:{p}\"\n", j + 1);
        }
    }
    s
}

/// `n` gateway nodes of one cluster, each with its admin address.
pub fn cluster(n: usize, threads: usize, mc: &Memcached, path: &Path, plugin_config: &str, backends: &[&Proc]) -> Vec<(Proc, SocketAddr)> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    (0..n).map(|i| gateway_with_admin(&node_config(threads, mc, path, plugin_config, backends, Some((i, &ports))), "")).collect()
}

/// Bytes all nodes sent to peers.
pub fn peer_bytes(nodes: &[(Proc, SocketAddr)]) -> f64 {
    nodes.iter().map(|(_, admin)| metric(*admin, "switchyard_cluster_bytes_sent_total", &[])).sum()
}

/// Bytes between `n` nodes per successful session write, over
/// [`TRAFFIC_USERS`] users who each log in and add 5 items.
pub fn traffic_per_write(n: usize, threads: usize, mc: &Memcached, path: &Path, backends: &[&Proc]) -> Result<f64, String> {
    let nodes = cluster(n, threads, mc, path, "", backends);
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
    if writes <= TRAFFIC_USERS {
        return Err(format!("too few session writes succeeded to measure ({writes})"));
    }
    Ok((peer_bytes(&nodes) - before) / writes as f64)
}

/// Memory as users log in (each a new session, over 200 keep-alive
/// connections so connection buffers do not count): at each cumulative
/// count of `points`, (users, session bytes the local tier holds, RSS
/// growth in bytes, failed logins), both over the warmed-up gateway.
pub fn memory_curve(rt: &tokio::runtime::Runtime, gw: &Proc, admin: SocketAddr, points: &[usize]) -> Vec<(usize, f64, f64, usize)> {
    let addr = gw.addr;
    let logins = |count: usize, tag: String| -> usize {
        rt.block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|t| {
                    let tag = tag.clone();
                    tokio::spawn(async move {
                        let mut u = CartUser::new(addr);
                        let mut failed = 0;
                        for i in 0..count / 200 {
                            u.cookies.clear();
                            let path = format!("/cart/login?user={tag}{t}-{i}");
                            let login = u.send("POST", &path);
                            let ok = matches!(tokio::time::timeout(Duration::from_secs(10), login).await, Ok(Ok(200)));
                            if !ok {
                                failed += 1;
                                u.reset();
                            }
                        }
                        failed
                    })
                })
                .collect();
            let mut failed = 0;
            for t in tasks {
                failed += t.await.expect("login task");
            }
            failed
        })
    };
    // Warm the connections, pools and allocator first.
    logins(2_000, "warm".into());
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, held0) = (rss_kib(gw.pid()), metric(admin, "switchyard_session_local_bytes", &[]));
    let (mut done, mut failed) = (0, 0);
    points
        .iter()
        .map(|&n| {
            failed += logins(n.saturating_sub(done), format!("m{n}-"));
            done = n;
            std::thread::sleep(Duration::from_millis(500));
            let held = metric(admin, "switchyard_session_local_bytes", &[]) - held0;
            (n, held, (rss_kib(gw.pid()).saturating_sub(rss0) * 1024) as f64, failed)
        })
        .collect()
}

struct Setup {
    mc: Memcached,
    header: Vec<Proc>,
    memory: Vec<Proc>,
}

impl Setup {
    fn start(with_memory: bool) -> Self {
        let start = |kind: &str| -> Vec<Proc> { (0..3).map(|i| backend(&format!("{}{i}", &kind[..1]), &["--sessions", kind, "--threads", "1"])).collect() };
        Self { mc: Memcached::start(), header: start("header"), memory: if with_memory { start("memory") } else { Vec::new() } }
    }

    /// Sticky keeps sessions in the backend; the others in the gateway's headers.
    fn backends(&self, kind: &str) -> Vec<&Proc> {
        if kind == "session-sticky" { self.memory.iter().collect() } else { self.header.iter().collect() }
    }
}

/// Baseline: the same nodes and route with no session plugin; the cart
/// keeps its sessions in one `--sessions memory` backend (3 threads), so
/// every request is answered as with sticky.
const NO_SESSION: &str = "no session (same route, no plugin)";
/// Baseline: memcached alone, the bench's own client doing one read with
/// touch and one write per request (what centralized asks of it).
const MEMCACHED_ONLY: &str = "memcached only (bench client: mg + ms per request)";

/// The no-session baseline's rows: 3 nodes, the route without its plugin.
fn no_session_rows(r: &mut Results, ctx: &Ctx, setup: &Setup, users: &[usize], step: Duration, rep: usize) -> Result<(), String> {
    let one = backend("m-one", &["--sessions", "memory", "--threads", "3"]);
    let sticky = shipped_path("session-sticky")?;
    let ports = [free_port(), free_port(), free_port()];
    let nodes: Vec<(Proc, SocketAddr)> = (0..3)
        .map(|i| gateway_with_admin(&node_config(ctx.node_threads, &setup.mc, &sticky, "", &[&one], Some((i, &ports))).replace("session = \"sess\"\n", ""), ""))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let rt = Ctx::runtime();
    for &u in users {
        ctx.tick(&format!("rep {} {NO_SESSION}, {u} users", rep + 1));
        r.row(NO_SESSION, "users", u as f64, rep, &measured_cart_load(&rt, &nodes, u, None, step));
    }
    ctx.tick(&format!("rep {} {NO_SESSION}, paced", rep + 1));
    paced_row(r, NO_SESSION, &rt, &nodes, paced_rate(ctx), step, rep);
    Ok(())
}

/// The memcached-only baseline: `users` tasks, each a loop of one
/// `mg KEY v T1800` and one `ms KEY` of a 200-byte session, for `step`.
fn memcached_rows(r: &mut Results, setup: &Setup, users: &[usize], step: Duration, rep: usize) -> Result<(), String> {
    use memcache::exp::AsyncMetaClient;
    let rt = Ctx::runtime();
    for &u in users {
        let (lat, errors, secs) = rt.block_on(async {
            let client = std::sync::Arc::new(AsyncMetaClient::builder().max_connections(Some(32)).max_idle(32).connect_async(setup.mc.addr).await.map_err(|e| e.to_string())?);
            let start = std::time::Instant::now();
            let until = start + step;
            let tasks: Vec<_> = (0..u)
                .map(|i| {
                    let c = client.clone();
                    tokio::spawn(async move {
                        let (key, value) = (format!("bench:{i:032x}"), vec![b'x'; 200]);
                        let (mut lat, mut errors) = (Vec::new(), 0usize);
                        while std::time::Instant::now() < until {
                            let t = std::time::Instant::now();
                            let ok = c.get(&key).touch_raw(1800).send().await.is_ok() && c.set(&key, &value).ttl_raw(1800).send().await.is_ok();
                            if ok { lat.push(t.elapsed().as_micros() as u32) } else { errors += 1 }
                        }
                        (lat, errors)
                    })
                })
                .collect();
            let (mut lat, mut errors) = (Vec::new(), 0);
            for t in tasks {
                let (l, e) = t.await.map_err(|e| e.to_string())?;
                lat.extend(l);
                errors += e;
            }
            lat.sort_unstable();
            Ok::<_, String>((lat, errors, start.elapsed().as_secs_f64()))
        })?;
        r.row(MEMCACHED_ONLY, "users", u as f64, rep, &load_metrics(&lat, errors, secs, f64::NAN));
    }
    Ok(())
}

/// Unmeasured load at the start of each point, so a point measures the
/// steady state: every user connects and logs in at once when a point
/// starts (a burst of new sessions that a running site does not see), and
/// a session plugin holds a Wasm instance while it waits for its store, so
/// more users first grow each node's instance pool (instantiating costs
/// about as much CPU as a hundred requests). The same users then go on
/// into the measured seconds.
const WARM_UP: Duration = Duration::from_secs(2);

/// `users` cart users on `nodes` for `step` after [`WARM_UP`] of the same
/// load (closed loop, or paced to `rate` requests a second in all): the
/// row's metrics, with the CPU all nodes spent in those seconds.
fn measured_cart_load(rt: &tokio::runtime::Runtime, nodes: &[(Proc, SocketAddr)], users: usize, rate: Option<f64>, step: Duration) -> [(&'static str, f64); 5] {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(p, _)| p.addr).collect();
    let pids: Vec<u32> = nodes.iter().map(|(p, _)| p.pid()).collect();
    let (lat, errors, secs, cpu) = cart_steady(rt, &addrs, users, rate, (WARM_UP, step), move || pids.iter().map(|&p| cpu_secs(p)).sum());
    load_metrics(&lat, errors, secs, cpu)
}

/// The paced point: [`PACED_USERS`] users sending `rate` requests a second
/// in all, below every strategy's capacity here, so each strategy's CPU
/// per request is read at the same load. A closed loop runs each at its
/// own saturation, where a slower gateway also pays for waking peers that
/// had time to fall asleep (`docs/bench.md`, "sessions").
const PACED_USERS: usize = 300;

/// The paced point's rate: 3,000 requests a second in all (1,000 per
/// node); `--quick`, 1,000.
fn paced_rate(ctx: &Ctx) -> f64 {
    *ctx.pick(&1_000.0, &3_000.0)
}

/// Every series' paced point (x: the rate).
fn paced_row(r: &mut Results, label: &str, rt: &tokio::runtime::Runtime, nodes: &[(Proc, SocketAddr)], rate: f64, step: Duration, rep: usize) {
    r.row(label, "paced", rate, rep, &measured_cart_load(rt, nodes, PACED_USERS, Some(rate), step));
}

/// req/s, p50, p99, errors and gateway CPU per answered request.
fn load_metrics(lat: &[u32], errors: usize, secs: f64, cpu: f64) -> [(&'static str, f64); 5] {
    let (p50, p99, _) = crate::bench::load::percentiles(lat.iter().map(|&l| u64::from(l)));
    let n = lat.len().max(1) as f64;
    [("req_s", lat.len() as f64 / secs), ("p50_ms", p50), ("p99_ms", p99), ("errors_pct", pct(errors as f64, n + errors as f64)), ("cpu_us_req", cpu * 1e6 / n)]
}

fn sessions(ctx: &Ctx) -> Result<Results, String> {
    let users: &[usize] = ctx.pick(&[20, 100], &[100, 500, 2000]);
    let node_counts: &[usize] = ctx.pick(&[2, 3], &[2, 4, 8]);
    let step = ctx.step(2.0, 6.0);
    let setup = Setup::start(true);
    let mut series = vec![NO_SESSION.to_string(), MEMCACHED_ONLY.to_string()];
    series.extend(labels(ctx));
    let mut r = Results::new("sessions", "response time against users per session strategy; bytes between gateway nodes against node count", &series, ctx.reps);
    r.param("baselines", format!("{NO_SESSION}: sticky's nodes and route without the session plugin, the cart in one memory backend; {MEMCACHED_ONLY}: no gateway"));
    r.param("gateway", format!("3 nodes ({} worker thread(s) each, --node-threads) in one [cluster]; users spread over the nodes; memcached as the central store (pool 32, timeout_ms 1000: at 2,000 closed-loop users every queue is long)", ctx.node_threads));
    r.param("backends", "3 x `switchyard demo-backend --sessions header --threads 1` (sticky: `--sessions memory`)");
    r.param("load", format!("closed loop: cart users (log in, add 5 items, read the cart), one keep-alive connection each, {:.1} s measured per point, after {:.1} s of the same users unmeasured (the connects and first logins of every user at once)", step.as_secs_f64(), WARM_UP.as_secs_f64()));
    r.param("paced", format!("{PACED_USERS} cart users sending {} requests a second in all (each paced, the same warm-up and measured seconds): every strategy's CPU per request at the same load", paced_rate(ctx)));
    r.param("traffic", format!("{TRAFFIC_USERS} users x (log in + 5 adds) over 20 threads; switchyard_cluster_bytes_sent_total of all nodes / successful writes"));
    let rt = Ctx::runtime();
    ctx.progress(ctx.reps * (ctx.plugins.len() * (1 + node_counts.len()) + users.len() + 1));
    for rep in 0..ctx.reps {
        no_session_rows(&mut r, ctx, &setup, users, step, rep)?;
        memcached_rows(&mut r, &setup, users, step, rep)?;
    }
    for (rep, p) in runs(ctx) {
        let backs = setup.backends(&p.kind);
        ctx.tick(&format!("rep {} {} users", rep + 1, p.label));
        check_config(&node_config(ctx.node_threads, &setup.mc, &p.path, "", &backs, Some((0, &[free_port(), free_port(), free_port()]))))?;
        let nodes = cluster(3, ctx.node_threads, &setup.mc, &p.path, "", &backs);
        std::thread::sleep(Duration::from_secs(1));
        for &u in users {
            r.row(&p.label, "users", u as f64, rep, &measured_cart_load(&rt, &nodes, u, None, step));
        }
        paced_row(&mut r, &p.label, &rt, &nodes, paced_rate(ctx), step, rep);
        drop(nodes);
        for &n in node_counts {
            ctx.tick(&format!("rep {} {} traffic, {n} nodes", rep + 1, p.label));
            let bytes = traffic_per_write(n, ctx.node_threads, &setup.mc, &p.path, &backs)?;
            r.row(&p.label, "traffic", n as f64, rep, &[("bytes_per_write", bytes)]);
        }
    }
    r.plot("Fig. 3: p50 response time against users", "users", "concurrent users", ("p50 ms", "p50_ms"), false);
    r.plot("Bytes between gateway nodes per session write", "traffic", "gateway nodes", ("bytes / write", "bytes_per_write"), false);
    r.table("Response time against users (3 nodes)", "users", "users", &[("req/s", "req_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("errors %", "errors_pct"), ("gateway CPU µs/req (all nodes)", "cpu_us_req")]);
    r.table(&format!("At the same load: {PACED_USERS} users paced to a fixed rate (3 nodes)"), "paced", "req/s offered", &[("req/s", "req_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("errors %", "errors_pct"), ("gateway CPU µs/req (all nodes)", "cpu_us_req")]);
    r.table("Bytes between gateway nodes per session write", "traffic", "nodes", &[("bytes / write", "bytes_per_write")]);
    r.aggregate();
    r.claim = sessions_claim(&r, ctx, users, node_counts);
    Ok(r)
}

fn sessions_claim(r: &Results, ctx: &Ctx, users: &[usize], nodes: &[usize]) -> Claim {
    let (top_users, few, many) = (users[users.len() - 1] as f64, nodes[0] as f64, nodes[nodes.len() - 1] as f64);
    let bytes = |l: &str, n: f64| r.median(l, "traffic", n, "bytes_per_write").unwrap_or(f64::NAN);
    let p50 = |l: &str| r.median(l, "users", top_users, "p50_ms").unwrap_or(f64::NAN);
    let mut evidence: Vec<String> = ctx.plugins.iter().map(|p| format!("{}: p50 {} ms at {top_users} users, {} -> {} B/write at {few} -> {many} nodes", p.label, num(p50(&p.label)), num(bytes(&p.label, few)), num(bytes(&p.label, many)))).collect();
    evidence.extend(speed_evidence(r, ctx, users));
    let holds = find(ctx, "session-replicated").zip(find(ctx, "session-centralized-dynamic")).map(|(rep, hyb)| {
        let ratio = bytes(hyb, many) / bytes(rep, many);
        evidence.push(format!("centralized-dynamic / replicated traffic at {many} nodes = {ratio:.3}"));
        let central = find(ctx, "session-centralized").map_or(f64::INFINITY, p50);
        ratio <= 0.2 && bytes(rep, many) > bytes(rep, few) && p50(hyb) <= 1.1 * p50(rep).min(central)
    });
    Claim {
        text: "paper 003 Fig. 3: replication's traffic between nodes grows with the node count while the hybrid (centralized-dynamic) sends at most 20 % of it, and the hybrid's response time at the most users is no worse (within 10 %) than replicated's and centralized's".into(),
        holds,
        evidence: evidence.join("; "),
    }
}

/// The store-backed strategies against sticky and the baselines, as
/// ratios: req/s and gateway CPU per request at each user count, and what
/// sticky's two hooks cost over the same route without a session.
fn speed_evidence(r: &Results, ctx: &Ctx, users: &[usize]) -> Vec<String> {
    let m = |l: &str, u: usize, k: &str| r.median(l, "users", u as f64, k).unwrap_or(f64::NAN);
    let Some(sticky) = find(ctx, "session-sticky") else { return Vec::new() };
    let mut out = Vec::new();
    for &u in users {
        for kind in ["session-centralized", "session-o-session", "session-centralized-dynamic", "session-replicated"] {
            if let Some(l) = find(ctx, kind) {
                out.push(format!("{u} users: {l} / sticky = {:.2}x req/s, {:.2}x CPU/req", m(l, u, "req_s") / m(sticky, u, "req_s"), m(l, u, "cpu_us_req") / m(sticky, u, "cpu_us_req")));
            }
        }
        out.push(format!("{u} users: sticky's hooks cost {:.1} µs CPU/req over {NO_SESSION}; {MEMCACHED_ONLY}: {} req/s", m(sticky, u, "cpu_us_req") - m(NO_SESSION, u, "cpu_us_req"), num(m(MEMCACHED_ONLY, u, "req_s"))));
    }
    let rate = paced_rate(ctx);
    let paced = |l: &str| r.median(l, "paced", rate, "cpu_us_req").unwrap_or(f64::NAN);
    for kind in ["session-centralized", "session-o-session"] {
        if let Some(l) = find(ctx, kind) {
            out.push(format!("paced to {rate} req/s: {l} / sticky = {:.2}x CPU/req", paced(l) / paced(sticky)));
        }
    }
    out.push(format!("paced to {rate} req/s: sticky's hooks cost {:.1} µs CPU/req over {NO_SESSION}", paced(sticky) - paced(NO_SESSION)));
    out
}

const LOCAL: &str = "local sessions (in the gateway)";

fn memory(ctx: &Ctx) -> Result<Results, String> {
    let points: &[usize] = ctx.pick(&[2_000, 8_000], &[5_000, 20_000, 50_000]);
    let setup = Setup::start(false);
    let local = shipped_path("session-o-session")?;
    let mut r = Results::new("session-memory", "gateway memory against concurrent users: sessions in the gateway vs each plugin", &labels(ctx), ctx.reps);
    r.param("baseline", format!("{LOCAL}: session_o_session.wasm with tier = \"local\" (the same sessions held in the gateway's memory)"));
    r.param("load", "new sessions (cart logins) over 200 keep-alive connections after 2,000 warm-up logins; users = sessions alive");
    r.param("memory", "held = switchyard_session_local_bytes growth; RSS = VmRSS growth of the gateway");
    let rt = Ctx::runtime();
    let series: Vec<(String, &Path, &str)> =
        std::iter::once((LOCAL.to_string(), local.as_path(), "tier = \"local\"")).chain(ctx.plugins.iter().map(|p| (p.label.clone(), p.path.as_path(), ""))).collect();
    ctx.progress(ctx.reps * series.len());
    for rep in 0..ctx.reps {
        for (label, path, cfg) in &series {
            ctx.tick(&format!("rep {} {label}", rep + 1));
            let config = node_config(ctx.node_threads, &setup.mc, path, cfg, &setup.backends(""), None);
            check_config(&config)?;
            let (gw, admin) = gateway_with_admin(&config, "");
            for (n, held, rss, failed) in memory_curve(&rt, &gw, admin, points) {
                let metrics = [("held_kib", held / 1024.0), ("rss_mib", rss / 1048576.0), ("held_b_user", held / n as f64), ("rss_b_user", rss / n as f64), ("failed_logins", failed as f64)];
                r.row(label, "memory", n as f64, rep, &metrics);
            }
        }
    }
    r.plot("Gateway RSS growth against users", "memory", "users (sessions alive)", ("MiB", "rss_mib"), false);
    r.plot("Session bytes the gateway holds against users", "memory", "users (sessions alive)", ("KiB", "held_kib"), false);
    r.table("Gateway memory", "memory", "users", &[("held KiB", "held_kib"), ("RSS growth MiB", "rss_mib"), ("held B/user", "held_b_user"), ("RSS B/user", "rss_b_user"), ("failed logins", "failed_logins")]);
    r.aggregate();
    r.claim = memory_claim(&r, ctx, points[points.len() - 1] as f64);
    Ok(r)
}

fn memory_claim(r: &Results, ctx: &Ctx, top: f64) -> Claim {
    let get = |l: &str, m: &str| r.median(l, "memory", top, m).unwrap_or(f64::NAN);
    let mut evidence = vec![format!("{LOCAL}: {} B held and {} B RSS per user", num(get(LOCAL, "held_b_user")), num(get(LOCAL, "rss_b_user")))];
    evidence.extend(ctx.plugins.iter().map(|p| format!("{}: {} B held and {} B RSS per user", p.label, num(get(&p.label, "held_b_user")), num(get(&p.label, "rss_b_user")))));
    let holds = find(ctx, "session-o-session").map(|o| get(o, "held_kib") <= 0.05 * get(LOCAL, "held_kib") && get(o, "rss_mib") <= get(LOCAL, "rss_mib"));
    Claim {
        text: format!("paper 002 (O-Session, 'time for space'): with {top} users, the gateway holds at most 5 % of the session bytes that sessions kept in the gateway need, and grows no more in RSS"),
        holds,
        evidence: evidence.join("; "),
    }
}
