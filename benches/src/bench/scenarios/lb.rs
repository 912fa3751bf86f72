//! Load-balancing scenarios (papers 001 and 002): shares per server of
//! unequal capacity, response time against load, a backend that turns slow
//! or fails, and key affinity. All use open-loop Poisson load: the offered
//! rate is the experiment's variable, and a policy that makes requests slow
//! must not get fewer of them.

use super::{find, labels, pct, runs};
use crate::bench::backend::{Farm, Model, Service, Stats};
use crate::bench::load::{self, Arrivals, Gen, Outcome, Plan, Sample, Summary, Target};
use crate::bench::report::{num, Claim, Results};
use crate::bench::{start_gateway, Ctx, Family, Plugin, Scenario};
use crate::cpu_secs;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_tests::{Proc, SERVER};

pub fn scenarios() -> Vec<Scenario> {
    const THREE: &[&str] = &["round-robin", "weighted-round-robin", "least-connections"];
    vec![
        Scenario {
            name: "lb-capacity",
            summary: "paper 001 Fig. 7/8: share of requests and busy time per server, servers 3:2:1 in capacity",
            family: Family::Lb,
            defaults: THREE,
            run: capacity,
        },
        Scenario {
            name: "lb-response-time",
            summary: "paper 001 Fig. 9/10: response time against request rate, read- and write-heavy servers, one direct vs three balanced",
            family: Family::Lb,
            defaults: THREE,
            run: response_time,
        },
        Scenario {
            name: "lb-degraded",
            summary: "paper 002: one backend turns slow mid-run, one fails 5%: p50/p99, errors, time to route around",
            family: Family::Lb,
            defaults: &["round-robin", "least-connections", "fastest-response"],
            run: degraded,
        },
        Scenario {
            name: "lb-affinity",
            summary: "consistent hash with bounded load vs round robin: repeat keys on the same backend, max load share",
            family: Family::Lb,
            defaults: &["consistent-hash", "round-robin"],
            run: affinity,
        },
    ]
}

/// `[plugins.lb]` for `p`. The deadline is one a debug gateway on a loaded
/// 2-core machine meets: a deadline hit falls back to the builtin round
/// robin and would hide the policy under test.
fn plugin_table(p: &Plugin) -> String {
    let config = if p.kind == "consistent-hash" { "config = { key = \"header:x-user\" }\n" } else { "" };
    format!("[plugins.lb]\npath = {:?}\nwatch_ms = 0\nlimits = {{ deadline_ms = 50 }}\n{config}", p.path.to_string_lossy())
}

/// An upstream over `farm` with `weights`, and its route.
fn upstream(name: &str, farm: &Farm, weights: &[u32], prefix: Option<&str>) -> String {
    let list: Vec<String> = farm.addrs().iter().zip(weights).map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}")).collect();
    let route = prefix.map(|p| format!("path_prefix = \"{p}\"\n")).unwrap_or_default();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nlb = \"lb\"\nbackends = [{}]\nhealth = {{ check = \"http\", path = \"/healthz\", interval_ms = 250 }}\n\
         [[routes]]\nupstream = \"{name}\"\n{route}",
        list.join(", ")
    )
}

fn gateway(p: &Plugin, upstreams: &str) -> Result<Proc, String> {
    start_gateway(&format!("{SERVER}{}{upstreams}", plugin_table(p)))
}

fn farm(models: &[Model], ctx: &Ctx) -> Result<Farm, String> {
    Farm::start(models, ctx.seed).map_err(|e| format!("cannot start the backends: {e}"))
}

fn describe(r: &mut Results, models: &[Model]) {
    for m in models {
        r.param(&format!("backend {}", m.name), m.describe());
    }
}

fn open_plan(ctx: &Ctx, rate: f64, duration: Duration) -> Plan {
    Plan { arrivals: Arrivals::Open { rate }, duration, conns: 256, timeout: Duration::from_secs_f64(ctx.pick(2.0, 5.0)), seed: ctx.seed }
}

fn describe_plan(r: &mut Results, plan: &Plan) {
    r.param("load", format!("open loop, Poisson arrivals, at most {} keep-alive connections, latency from the scheduled time", plan.conns));
    r.param("step", format!("{:.1} s of arrivals, {:.0} s timeout", plan.duration.as_secs_f64(), plan.timeout.as_secs_f64()));
}

/// One load run against `addr`, with the backends' and the gateway's figures.
struct Measured {
    out: Outcome,
    sum: Summary,
    stats: Vec<Stats>,
    /// Gateway CPU per answered request (None: no gateway).
    cpu_us: Option<f64>,
}

impl Measured {
    fn run(rt: &tokio::runtime::Runtime, farm: &Farm, gw: Option<&Proc>, addr: SocketAddr, plan: &Plan, gen: Gen) -> Self {
        farm.wait_idle(Duration::from_secs(30));
        farm.reset();
        let cpu0 = gw.map(|g| cpu_secs(g.pid()));
        let out = load::run(rt, addr, plan, gen);
        let sum = load::summary(&out.samples);
        let answered = out.samples.iter().filter(|s| s.status != 0).count().max(1) as f64;
        let cpu_us = gw.zip(cpu0).map(|(g, c0)| (cpu_secs(g.pid()) - c0) * 1e6 / answered);
        Self { stats: farm.stats(), sum, cpu_us, out }
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        let ok = (self.sum.requests - self.sum.errors) as f64;
        let mut m = vec![
            ("req_s", ok / self.out.secs),
            ("p50_ms", self.sum.p50_ms),
            ("p99_ms", self.sum.p99_ms),
            ("errors_pct", pct(self.sum.errors as f64, self.sum.requests as f64)),
        ];
        m.extend(self.cpu_us.map(|c| ("cpu_us_req", c)));
        m
    }

    fn served(&self) -> f64 {
        self.stats.iter().map(|s| s.served as f64).sum()
    }
}

const SUMMARY_COLUMNS: &[(&str, &str)] =
    &[("req/s", "req_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("errors %", "errors_pct"), ("gateway CPU µs/req", "cpu_us_req")];

fn capacity(ctx: &Ctx) -> Result<Results, String> {
    let service = Service::Exp { mean_ms: 10.0 };
    let models = [Model::new("s1", 3, service), Model::new("s2", 2, service), Model::new("s3", 1, service)];
    let farm = farm(&models, ctx)?;
    let total: f64 = models.iter().map(Model::capacity).sum();
    let plan = open_plan(ctx, (0.7 * total).round(), ctx.step(2.0, 10.0));
    let mut r = Results::new("lb-capacity", "share of requests and busy time per server, servers 3:2:1 in capacity", &labels(ctx), ctx.reps);
    describe(&mut r, &models);
    describe_plan(&mut r, &plan);
    r.param("offered rate", format!("{:.0} req/s = 70% of the three servers' {total:.0}", 0.7 * total));
    r.param("upstream", "weights 3, 2, 1 (the same config for every policy; round robin ignores them); http health checks every 250 ms");
    let rt = Ctx::runtime();
    ctx.progress(ctx.reps * ctx.plugins.len());
    for (rep, p) in runs(ctx) {
        ctx.tick(&format!("rep {} {}", rep + 1, p.label));
        let gw = gateway(p, &upstream("web", &farm, &[3, 2, 1], None))?;
        let m = Measured::run(&rt, &farm, Some(&gw), gw.addr, &plan.rep(rep), load::plain("/"));
        r.row(&p.label, "summary", 0.7 * total, rep, &m.metrics());
        let busy: f64 = m.stats.iter().map(|s| s.busy_us as f64).sum();
        for (i, (s, model)) in m.stats.iter().zip(&models).enumerate() {
            let util = pct(s.busy_us as f64, model.workers as f64 * m.out.secs * 1e6);
            let metrics = [("req_share", pct(s.served as f64, m.served())), ("busy_share", pct(s.busy_us as f64, busy)), ("util", util), ("max_queue", s.max_queue as f64)];
            r.row(&p.label, "per server", (i + 1) as f64, rep, &metrics);
        }
    }
    r.table("Per server (Fig. 7: requests; Fig. 8: busy time)", "per server", "server", &[("share of requests %", "req_share"), ("share of busy time %", "busy_share"), ("utilization %", "util"), ("longest queue", "max_queue")]);
    r.table("Overall", "summary", "offered req/s", SUMMARY_COLUMNS);
    let servers = ["s1 (50 %)", "s2 (33 %)", "s3 (17 %)"];
    r.bars("Share of requests per server (capacity 50 / 33 / 17 %)", "per server", "server", ("% of requests", "req_share"), &servers);
    r.bars("Utilization per server (busy time / worker time)", "per server", "server", ("utilization %", "util"), &servers);
    r.notes.push(format!("longest queue: requests waiting at the server, at most {} (the load's connections); past that they wait at the client, still timed from their scheduled send", plan.conns));
    r.aggregate();
    r.claim = capacity_claim(&r, ctx, &models);
    Ok(r)
}

fn capacity_claim(r: &Results, ctx: &Ctx, models: &[Model]) -> Claim {
    let total: f64 = models.iter().map(Model::capacity).sum();
    let cap: Vec<f64> = models.iter().map(|m| pct(m.capacity(), total)).collect();
    let shares = |l: &str| -> Vec<f64> { (1..=3).map(|i| r.median(l, "per server", i as f64, "req_share").unwrap_or(f64::NAN)).collect() };
    let deviation = |l: &str| shares(l).iter().zip(&cap).map(|(s, c)| (s - c).abs()).fold(0.0, f64::max);
    let small = |l: &str| r.median(l, "per server", 3.0, "util").unwrap_or(f64::NAN);
    let evidence = ctx
        .plugins
        .iter()
        .map(|p| {
            let s = shares(&p.label).iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join("/");
            format!("{}: shares {s} %, {:.1} points off capacity, s3 utilization {:.0} %", p.label, deviation(&p.label), small(&p.label))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let proportional: Vec<&str> = ["weighted-round-robin", "least-connections"].iter().filter_map(|k| find(ctx, k)).collect();
    let holds = find(ctx, "round-robin")
        .filter(|_| !proportional.is_empty())
        .map(|rr| small(rr) >= 90.0 && proportional.iter().all(|l| deviation(l) <= 5.0 && small(l) < small(rr)));
    Claim {
        text: "paper 001 Fig. 7/8: weighted round robin and least connections load servers in proportion to capacity (request shares within 5 points of 50/33/17 %); round robin overloads the small server (utilization >= 90 %)".into(),
        holds,
        evidence,
    }
}

/// A backend profile of Fig. 9 (read-heavy) and Fig. 10 (write-heavy).
struct Profile {
    name: &'static str,
    prefix: &'static str,
    model: Model,
}

fn profiles() -> [Profile; 2] {
    [
        Profile { name: "read-heavy", prefix: "/read", model: Model::new("r", 4, Service::Exp { mean_ms: 10.0 }) },
        Profile { name: "write-heavy", prefix: "/write", model: Model::new("w", 2, Service::LogNormal { mean_ms: 25.0, sigma: 0.8 }) },
    ]
}

fn response_time(ctx: &Ctx) -> Result<Results, String> {
    let profiles = profiles();
    let farms = profiles
        .iter()
        .map(|pr| farm(&(1..=3).map(|i| Model { name: format!("{}{i}", pr.model.name), ..pr.model.clone() }).collect::<Vec<_>>(), ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let mults: &[f64] = ctx.pick(&[0.5, 1.5, 2.5], &[0.5, 1.0, 1.5, 2.0, 2.5]);
    let step = ctx.step(1.0, 5.0);
    let mut r = Results::new("lb-response-time", "response time against request rate, one server direct vs three behind each policy", &labels(ctx), ctx.reps);
    for pr in &profiles {
        r.param(&format!("{} servers (x3)", pr.name), pr.model.describe());
    }
    describe_plan(&mut r, &open_plan(ctx, 1.0, step));
    r.param("rates", format!("{mults:?} x one server's capacity; the three servers hold 3x"));
    r.param("direct", "the load straight to the first server, no gateway (the papers' 'without a balancer')");
    let rt = Ctx::runtime();
    let series: Vec<Option<&Plugin>> = std::iter::once(None).chain(ctx.plugins.iter().map(Some)).collect();
    ctx.progress(ctx.reps * series.len() * profiles.len() * mults.len());
    for rep in 0..ctx.reps {
        for p in &series {
            let ups: String = profiles.iter().zip(&farms).map(|(pr, f)| upstream(pr.name, f, &[1, 1, 1], Some(pr.prefix))).collect();
            let gw = p.map(|p| gateway(p, &ups)).transpose()?;
            let label = p.map_or("direct", |p| p.label.as_str());
            for ((pr, farm), &mult) in profiles.iter().zip(&farms).flat_map(|pf| mults.iter().map(move |m| (pf, m))) {
                let rate = (mult * pr.model.capacity()).round();
                ctx.tick(&format!("rep {} {label} {} {rate}/s", rep + 1, pr.name));
                let addr = gw.as_ref().map_or(farm.addrs()[0], |g| g.addr);
                let m = Measured::run(&rt, farm, gw.as_ref(), addr, &open_plan(ctx, rate, step).rep(rep), load::plain(pr.prefix));
                r.row(label, pr.name, rate, rep, &m.metrics());
            }
        }
    }
    for pr in &profiles {
        let fig = if pr.name == "read-heavy" { "Fig. 9" } else { "Fig. 10" };
        r.plot(&format!("{fig}, {}: p99 against offered rate", pr.name), pr.name, "offered req/s", ("p99 ms (log)", "p99_ms"), true);
        r.table(&format!("{fig}, {}", pr.name), pr.name, "offered req/s", SUMMARY_COLUMNS);
    }
    r.aggregate();
    r.claim = response_time_claim(&r, ctx, &profiles, mults);
    Ok(r)
}

fn response_time_claim(r: &Results, ctx: &Ctx, profiles: &[Profile], mults: &[f64]) -> Claim {
    let (lo, hi) = (mults[0], mults[mults.len() - 1]);
    let mut holds = Some(!ctx.plugins.is_empty());
    let mut evidence = Vec::new();
    for pr in profiles {
        let p99 = |l: &str, m: f64| r.median(l, pr.name, (m * pr.model.capacity()).round(), "p99_ms").unwrap_or(f64::NAN);
        let climb = p99("direct", hi) / p99("direct", lo);
        let mut parts = vec![format!("{}: direct p99 {} -> {} ms ({climb:.1}x)", pr.name, num(p99("direct", lo)), num(p99("direct", hi)))];
        for p in &ctx.plugins {
            let rise = p99(&p.label, hi) / p99(&p.label, lo);
            parts.push(format!("{} {} -> {} ms ({rise:.1}x)", p.label, num(p99(&p.label, lo)), num(p99(&p.label, hi))));
            holds = holds.map(|h| h && rise <= 3.0);
        }
        holds = holds.map(|h| h && climb >= 5.0);
        evidence.push(parts.join(", "));
    }
    Claim {
        text: format!("paper 001 Fig. 9/10: from {lo}x to {hi}x one server's capacity, one server without a balancer climbs steeply (p99 >= 5x) while three behind a balancer stay low and flat (p99 <= 3x)"),
        holds,
        evidence: evidence.join("; "),
    }
}

/// Window of the route-around timeline.
const WINDOW: f64 = 0.25;
/// The slow backend counts as routed around once its share of a window is below this.
const ROUTED_PCT: f64 = 15.0;

fn degraded(ctx: &Ctx) -> Result<Results, String> {
    let duration = ctx.step(3.0, 12.0);
    let slow_at = duration.mul_f64(0.4);
    let service = Service::Exp { mean_ms: 10.0 };
    let models = [
        Model::new("s1", 4, service),
        Model { slow_at: Some(slow_at), slow_factor: 5.0, ..Model::new("s2-slow", 4, service) },
        Model { fail: 0.05, ..Model::new("s3-failing", 4, service) },
    ];
    let farm = farm(&models, ctx)?;
    let plan = open_plan(ctx, 480.0, duration);
    let mut r = Results::new("lb-degraded", "one backend turns slow mid-run, one fails 5% of requests", &labels(ctx), ctx.reps);
    describe(&mut r, &models);
    describe_plan(&mut r, &plan);
    r.param("offered rate", "480 req/s (40% of 1200 before the slowdown, 55% of 880 after)");
    r.param("route around", format!("time from the slowdown to the first {WINDOW} s window in which s2-slow gets < {ROUTED_PCT} % of the requests arriving at the backends"));
    let rt = Ctx::runtime();
    ctx.progress(ctx.reps * ctx.plugins.len());
    for (rep, p) in runs(ctx) {
        ctx.tick(&format!("rep {} {}", rep + 1, p.label));
        let gw = gateway(p, &upstream("web", &farm, &[1, 1, 1], None))?;
        let m = Measured::run(&rt, &farm, Some(&gw), gw.addr, &plan.rep(rep), load::plain("/"));
        let t = slow_at.as_secs_f64();
        let shares = slow_shares(&farm.arrivals(), 1, duration.as_secs_f64());
        for &(at, share) in &shares {
            r.row(&p.label, "timeline", at, rep, &[("slow_share", share)]);
        }
        let after: Vec<Sample> = m.out.samples.iter().filter(|s| s.at >= t).cloned().collect();
        let mut metrics = m.metrics();
        metrics.push(("p99_after_ms", load::summary(&after).p99_ms));
        if let Some(&(at, _)) = shares.iter().find(|(at, share)| *at >= t && *share < ROUTED_PCT) {
            metrics.push(("route_around_s", at + WINDOW - t));
        }
        r.row(&p.label, "summary", 480.0, rep, &metrics);
    }
    let mut columns = SUMMARY_COLUMNS.to_vec();
    columns.extend([("p99 after slowdown ms", "p99_after_ms"), ("route around s", "route_around_s")]);
    r.table("Per policy", "summary", "offered req/s", &columns);
    r.plot(&format!("Share of requests sent to s2-slow per {WINDOW} s window (slow from {:.1} s)", slow_at.as_secs_f64()), "timeline", "seconds", ("% of requests", "slow_share"), false);
    r.aggregate();
    r.claim = degraded_claim(&r, ctx);
    r.notes.push("route around '–': the slow backend's share never fell below the threshold in that run".into());
    Ok(r)
}

/// (window start, % of arrivals at backend `slow`) per window with
/// arrivals. Counted where requests arrived, not from answers: a request
/// stuck in the slow queue past its timeout was still sent there.
fn slow_shares(arrivals: &[Vec<f64>], slow: usize, duration: f64) -> Vec<(f64, f64)> {
    let count = |v: &[f64], at: f64| v.iter().filter(|&&t| t >= at && t < at + WINDOW).count();
    (0..(duration / WINDOW) as usize)
        .filter_map(|w| {
            let at = w as f64 * WINDOW;
            let all: usize = arrivals.iter().map(|v| count(v, at)).sum();
            (all >= 5).then(|| (at, pct(count(&arrivals[slow], at) as f64, all as f64)))
        })
        .collect()
}

fn degraded_claim(r: &Results, ctx: &Ctx) -> Claim {
    let get = |l: &str, m: &str| r.median(l, "summary", 480.0, m);
    let evidence = ctx
        .plugins
        .iter()
        .map(|p| {
            let around = get(&p.label, "route_around_s").map_or("never".into(), |s| format!("{s:.2} s"));
            let f = |m| num(get(&p.label, m).unwrap_or(f64::NAN));
            format!("{}: p50 {} ms, p99 {} ms, errors {} %, routed around {around}", p.label, f("p50_ms"), f("p99_ms"), f("errors_pct"))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let adaptive: Vec<&str> = ["least-connections", "fastest-response"].iter().filter_map(|k| find(ctx, k)).collect();
    let holds = find(ctx, "round-robin").filter(|_| !adaptive.is_empty()).map(|rr| {
        let rr_p99 = get(rr, "p99_ms").unwrap_or(f64::NAN);
        adaptive.iter().all(|l| get(l, "route_around_s").is_some() && get(l, "p99_ms").unwrap_or(f64::NAN) < rr_p99)
    });
    Claim {
        text: "paper 002 (least connections, fastest response): an adaptive policy routes around a backend that turns slow (its share falls below 15 %) and keeps p99 below round robin's".into(),
        holds,
        evidence,
    }
}

fn affinity(ctx: &Ctx) -> Result<Results, String> {
    let models: Vec<Model> = (1..=3).map(|i| Model::new(&format!("s{i}"), 4, Service::Exp { mean_ms: 5.0 })).collect();
    let farm = farm(&models, ctx)?;
    let plan = open_plan(ctx, 600.0, ctx.step(2.0, 10.0));
    let keys = zipf_keys(1000, 1.0, (600.0 * plan.duration.as_secs_f64() * 2.0) as usize + 100, ctx.seed);
    let gen: Gen = Arc::new(move |_, n| Target { path: "/".into(), headers: format!("x-user: u{}\r\n", keys[n % keys.len()]) });
    let mut r = Results::new("lb-affinity", "repeat keys on the same backend, and the max load share", &labels(ctx), ctx.reps);
    describe(&mut r, &models);
    describe_plan(&mut r, &plan);
    r.param("keys", "x-user header, 1000 users, Zipf s = 1.0 (a few hot users); consistent-hash keys on it (load_factor 1.25, the default)");
    r.param("offered rate", "600 req/s");
    let rt = Ctx::runtime();
    ctx.progress(ctx.reps * ctx.plugins.len());
    for (rep, p) in runs(ctx) {
        ctx.tick(&format!("rep {} {}", rep + 1, p.label));
        let gw = gateway(p, &upstream("web", &farm, &[1, 1, 1], None))?;
        let m = Measured::run(&rt, &farm, Some(&gw), gw.addr, &plan.rep(rep), gen.clone());
        let max_share = m.stats.iter().map(|s| pct(s.served as f64, m.served())).fold(0.0, f64::max);
        let mut metrics = m.metrics();
        metrics.extend([("same_backend_pct", same_backend(&m.out.samples)), ("max_share_pct", max_share)]);
        r.row(&p.label, "summary", 600.0, rep, &metrics);
    }
    let mut columns = vec![("repeat keys on the same backend %", "same_backend_pct"), ("max load share %", "max_share_pct")];
    columns.extend_from_slice(SUMMARY_COLUMNS);
    r.table("Per policy", "summary", "offered req/s", &columns);
    r.aggregate();
    r.claim = affinity_claim(&r, ctx);
    Ok(r)
}

/// `n` keys from a Zipf distribution over `1..=users`.
fn zipf_keys(users: u64, s: f64, n: usize, seed: u64) -> Vec<u64> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let zipf = rand_distr::Zipf::new(users as f64, s).expect("valid zipf");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    (0..n).map(|_| zipf.sample(&mut rng) as u64).collect()
}

/// % of answered repeat requests served by the backend that served the key last.
fn same_backend(samples: &[Sample]) -> f64 {
    let mut last: HashMap<&str, &str> = HashMap::new();
    let (mut repeats, mut same) = (0usize, 0usize);
    for s in samples.iter().filter(|s| s.status == 200) {
        if let Some(prev) = last.insert(&s.key, &s.backend) {
            repeats += 1;
            same += usize::from(prev == s.backend);
        }
    }
    pct(same as f64, repeats as f64)
}

fn affinity_claim(r: &Results, ctx: &Ctx) -> Claim {
    let get = |l: &str, m: &str| r.median(l, "summary", 600.0, m).unwrap_or(f64::NAN);
    let evidence = ctx
        .plugins
        .iter()
        .map(|p| format!("{}: {:.1} % of repeat keys on the same backend, max share {:.1} %", p.label, get(&p.label, "same_backend_pct"), get(&p.label, "max_share_pct")))
        .collect::<Vec<_>>()
        .join("; ");
    let cap = 100.0 * 1.25 / 3.0;
    let holds = find(ctx, "consistent-hash").map(|ch| get(ch, "same_backend_pct") >= 90.0 && get(ch, "max_share_pct") <= cap);
    Claim {
        text: format!("consistent hashing with bounded load keeps >= 90 % of repeat keys on the same backend while no backend takes more than 1.25x its fair share ({cap:.1} %)"),
        holds,
        evidence,
    }
}
