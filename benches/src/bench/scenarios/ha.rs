//! `ha-failover` (paper 001, keepalived hot standby): the MASTER gateway is
//! SIGKILLed under load, N times per session strategy, and the report shows
//! the take-over time (p50 and max), the failed requests and the sessions
//! lost. Each failover runs on a topology of its own (namespaces, two
//! gateways, keepalived; [`switchyard_tests::ha`], the harness of
//! `tests/ha_keepalived.rs`), so no failover inherits another's state.
//! Needs root, iproute2, keepalived, curl and memcached.

use super::labels;
use crate::bench::report::{num, spread, Claim, Results};
use crate::bench::{Ctx, Family, Plugin, Scenario};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchyard_tests::ha::{self, Sessions, Topo};

/// Carts filled on gw1 before each failover, and items in each.
const CARTS: usize = 5;
const ITEMS: usize = 5;
/// Take-over bound of the claim: the one `tests/ha_keepalived.rs` holds a SIGKILL to.
const BOUND_S: f64 = 5.0;

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "ha-failover",
        summary: "paper 001 keepalived hot standby: take-over time, failed requests and sessions lost when the MASTER gateway is killed, per session strategy",
        family: Family::Ha,
        defaults: &["session-centralized", "session-replicated"],
        run: failover,
    }]
}

/// The stores a plugin's nodes get: its own tier, or both for a `.wasm` of your own.
fn strategy(p: &Plugin) -> Sessions {
    match p.kind.as_str() {
        "session-centralized" => Sessions::Central,
        "session-replicated" => Sessions::Replicated,
        _ => Sessions::Both,
    }
}

fn failover(ctx: &Ctx) -> Result<Results, String> {
    ha::require_tools()?;
    if ctx.plugins.iter().any(|p| strategy(p).central()) {
        ha::require_memcached()?;
    }
    let prefix = format!("sybench-{}-", std::process::id());
    sweep_on_signal(prefix.clone());
    let n = ctx.pick(1, ctx.reps);
    let mut r = Results::new("ha-failover", "take-over time, failed requests and sessions lost when the MASTER gateway is SIGKILLed", &labels(ctx), n);
    params(&mut r);
    ctx.progress(n * ctx.plugins.len());
    let phases = phases(ctx.seed, n);
    for (rep, phase) in phases.into_iter().enumerate() {
        for (i, p) in ctx.plugins.iter().enumerate() {
            ctx.tick(&format!("failover {} of {n}, {}", rep + 1, p.label));
            let tag = format!("{prefix}{}-", rep * ctx.plugins.len() + i);
            let mut metrics = guarded(|| one(&tag, p, phase))?;
            metrics.push(("phase_s", phase.as_secs_f64()));
            r.row(&p.label, "failover", (rep + 1) as f64, rep, &metrics);
        }
    }
    for p in &ctx.plugins {
        summary(&mut r, &p.label, n);
    }
    r.plot("Take-over time per failover", "failover", "failover", ("s", "takeover_s"), false);
    r.table(&format!("Over {n} failover{}", if n == 1 { "" } else { "s" }), "summary", "failovers", SUMMARY);
    r.table("Each failover", "failover", "failover", EACH);
    r.aggregate();
    r.claim = claim(&r, ctx, n);
    Ok(r)
}

const SUMMARY: &[(&str, &str)] = &[
    ("take-over p50 s", "takeover_p50_s"),
    ("take-over max s", "takeover_max_s"),
    ("VIP moved p50 s", "vip_p50_s"),
    ("load's first gw2 answer p50 s", "load_p50_s"),
    ("failed requests", "failed_total"),
    ("failed per failover", "failed_per"),
    ("requests", "requests_total"),
    ("sessions lost", "lost_total"),
    ("carts", "carts_total"),
];

const EACH: &[(&str, &str)] = &[
    ("take-over s", "takeover_s"),
    ("VIP moved s", "vip_s"),
    ("load's first gw2 answer s", "load_s"),
    ("last gw1 -> first gw2 answer s", "gap_s"),
    ("longest request s", "longest_s"),
    ("requests", "requests"),
    ("failed", "failed"),
    ("carts", "carts"),
    ("sessions lost", "lost"),
    ("carts complete on gw2 within ms", "standby_ms"),
];

fn params(r: &mut Results) {
    r.param("topology", "network namespaces on one bridge: gw1 (198.18.0.1) and gw2 (.2), each a debug or release `switchyard` (threads 2) over its own `demo-backend --sessions header`; client (.10); memcached (.50); a fresh topology per failover");
    r.param("keepalived", format!("VRRPv3, both `state BACKUP` + nopreempt, gw1 priority 150, gw2 100, advert_int {}, vrrp_script curl of the admin /healthz every {} s (timeout {} s, fall {}, rise {}); VIP {}", ha::ADVERT_INT, ha::CHECK_INTERVAL, ha::CHECK_TIMEOUT, ha::CHECK_FALL, ha::CHECK_RISE, ha::VIP));
    r.param("sessions", "session-centralized: [session.central] on the memcached; session-replicated: [cluster] between gw1 and gw2 over the bridge (no memcached); a .wasm of your own: both");
    r.param("load", format!("from the client namespace, one curl after another to the VIP (new connection each, 1 s timeout, 10 ms apart) for {} s; gw1's gateway is SIGKILLed {:.0} s in; before the load, a wait of 0 to {} s (seeded from --seed, the same for every plugin in a repetition; `phase_s` in results.json) spreads the kills over the phases of the health check", ha::LOAD_SECS, ha::EVENT_AFTER.as_secs_f64(), ha::CHECK_INTERVAL));
    r.param("carts", format!("{CARTS} users log in and add {ITEMS} items each through the VIP (answered by gw1) before the load; after the kill each cart is read through the VIP (retried up to 5 s); lost = not 200 or not exactly its items"));
    r.param("take-over", "SIGKILL to gw2's first answer through the VIP to a probe from the client namespace, started once the VIP shows on gw2 (a curl every 20 ms, 0.2 s timeout); VIP moved: SIGKILL to the VIP showing on gw2 (`ip addr`, polled every 20 ms); load's first gw2 answer: SIGKILL to the first of the load's requests answered by gw2, which includes the wait of a request sent while the VIP moved (longest request)");
    r.param("carts on the standby", "last add to every cart read complete on gw2's own address, polled (5 reads a round): an upper bound");
}

/// A wait of 0 to 1 health-check interval per repetition (seeded, the
/// same for every plugin), so the kills land at spread phases of the check.
fn phases(seed: u64, n: usize) -> Vec<Duration> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let interval: f64 = ha::CHECK_INTERVAL.parse().expect("check interval");
    (0..n).map(|_| Duration::from_secs_f64(rng.random_range(0.0..interval))).collect()
}

/// One failover on a fresh topology whose namespaces start with `prefix`,
/// the load (and so the kill) `phase` later than the carts.
fn one(prefix: &str, p: &Plugin, phase: Duration) -> Result<Vec<(&'static str, f64)>, String> {
    let s = strategy(p);
    let mut t = Topo::named(prefix);
    if s.central() {
        t.memcached();
    }
    let gw1 = t.node_using("g1", s, Some(&p.path));
    t.node_using("g2", s, Some(&p.path));
    if s.replicated() {
        t.caught_up();
    }
    t.start_ha();
    let carts = fill_carts(&t)?;
    let standby = on_standby(&t, &carts);
    let jars: Vec<PathBuf> = carts.iter().map(|(jar, _)| jar.clone()).collect();
    std::thread::sleep(phase);
    let f = ha::fail_over(&mut t, &jars, |t| t.signal(gw1, "KILL"));
    let fig = ha::Figures::of(&f.samples, f.event)?;
    let lost = f.carts.iter().zip(&carts).filter(|(answer, (_, items))| !ha::cart_intact(answer, items)).count();
    let longest = f.samples.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
    Ok(vec![
        ("takeover_s", f.answered),
        ("vip_s", f.vip_moved),
        ("load_s", fig.takeover_from_event),
        ("gap_s", fig.gap),
        ("longest_s", longest),
        ("requests", fig.requests as f64),
        ("failed", fig.failed as f64),
        ("carts", CARTS as f64),
        ("lost", lost as f64),
        ("standby_ms", standby),
    ])
}

/// [`CARTS`] users' carts through the VIP, on gw1: (cookie jar, items).
fn fill_carts(t: &Topo) -> Result<Vec<(PathBuf, Vec<String>)>, String> {
    (0..CARTS)
        .map(|u| {
            let jar = t.file(&format!("cart-{u}.txt"));
            ha::fill_cart(t, &jar, &format!("u{u}"), ITEMS, "g1").map(|items| (jar, items))
        })
        .collect()
}

/// Milliseconds from now until gw2's own address shows every cart complete
/// (at most 10 s; NaN if it never did).
fn on_standby(t: &Topo, carts: &[(PathBuf, Vec<String>)]) -> f64 {
    let start = Instant::now();
    let complete = |t: &Topo| carts.iter().all(|(jar, items)| ha::cart_intact(&ha::peek(t, jar, ha::bridge_ip("g2"), "/cart"), items));
    t.poll(10.0, complete).map_or(f64::NAN, |_| start.elapsed().as_secs_f64() * 1000.0)
}

/// The summary row of `label` over its `n` failovers.
fn summary(r: &mut Results, label: &str, n: usize) {
    let of = |m: &str| -> Vec<f64> { r.rows.iter().filter(|row| row.plugin == label && row.group == "failover").filter_map(|row| row.metrics.get(m).copied()).collect() };
    let total = |m: &str| of(m).iter().sum::<f64>();
    let p50 = |m: &str| spread(&of(m)).median;
    let takeover = spread(&of("takeover_s"));
    let metrics = [
        ("takeover_p50_s", takeover.median),
        ("takeover_max_s", takeover.max),
        ("vip_p50_s", p50("vip_s")),
        ("load_p50_s", p50("load_s")),
        ("failed_total", total("failed")),
        ("failed_per", total("failed") / n as f64),
        ("requests_total", total("requests")),
        ("lost_total", total("lost")),
        ("carts_total", total("carts")),
    ];
    r.row(label, "summary", n as f64, 0, &metrics);
}

fn claim(r: &Results, ctx: &Ctx, n: usize) -> Claim {
    let get = |l: &str, m: &str| r.median(l, "summary", n as f64, m).unwrap_or(f64::NAN);
    let evidence: Vec<String> = ctx
        .plugins
        .iter()
        .map(|p| {
            let l = p.label.as_str();
            format!(
                "{l}: take-over p50 {} s, max {} s over {n} failover(s) (VIP moved p50 {} s, load's first gw2 answer p50 {} s); failed requests {:.0} ({} per failover, of {:.0}); sessions lost {:.0} of {:.0}",
                num(get(l, "takeover_p50_s")),
                num(get(l, "takeover_max_s")),
                num(get(l, "vip_p50_s")),
                num(get(l, "load_p50_s")),
                get(l, "failed_total"),
                num(get(l, "failed_per")),
                get(l, "requests_total"),
                get(l, "lost_total"),
                get(l, "carts_total")
            )
        })
        .collect();
    let holds = (!ctx.plugins.is_empty()).then(|| ctx.plugins.iter().all(|p| get(&p.label, "takeover_max_s") <= BOUND_S && get(&p.label, "lost_total") == 0.0));
    Claim {
        text: format!("paper 001 (keepalived hot standby, sessions shared): when the MASTER fails the BACKUP takes the VIP and the connections, and no session is lost; here every take-over within {BOUND_S} s and 0 carts lost"),
        holds,
        evidence: evidence.join("; "),
    }
}

/// `f`, with a panic of the harness (a gateway that never got healthy, a
/// VIP that never moved) as an Err; the topology is gone either way.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|e| {
        let text = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(text.unwrap_or_else(|| "the failover panicked".into()))
    })
}

/// On SIGINT or SIGTERM, remove the namespaces whose names start with
/// `prefix` (and all that runs in them) before exiting: no `Drop` runs then.
fn sweep_on_signal(prefix: String) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
        let name = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (mut int, mut term) = (signal(SignalKind::interrupt()).ok()?, signal(SignalKind::terminate()).ok()?);
            tokio::select! {
                _ = int.recv() => Some("SIGINT"),
                _ = term.recv() => Some("SIGTERM"),
            }
        });
        if let Some(name) = name {
            eprintln!("\n{name}: removing the bench's namespaces ({prefix}*)");
            ha::sweep(&prefix);
            std::process::exit(130);
        }
    });
}
