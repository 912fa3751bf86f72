//! `access` (paper 002): UCON decision latency against the user count, up
//! to 1M users, for S-UCONabc and plain RBAC, with no access plugin as the
//! baseline. Users are in 2 classes and 3,479 attribute subsets (paper
//! 002's partition count): roles are per class and subset, so a decision
//! must not cost more with more users.
//!
//! Load: closed loop, 16 keep-alive clients, each request with the bearer
//! token of a user drawn (seeded) from the population: the decision cost is
//! per request, so what matters is many requests from many subjects, not an
//! arrival rate. The setup helpers here are shared with `benches/access.rs`.

use super::{find, labels, pct};
use crate::bench::load::{self, Arrivals, Gen, Plan, Target};
use crate::bench::report::{num, Claim, Results};
use crate::bench::{check_config, Ctx, Family, Plugin, Scenario};
use crate::cpu_secs;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchyard_tests::{backend, gateway_with_admin, metric, SERVER};

/// The HS256 key subjects' tokens are signed with.
pub const JWT_KEY: &str = "bench-access-jwt-signing-key-0123456789abc";
/// Attribute subsets (paper 002's 3,479 partitions).
pub const SUBSETS: usize = 3_479;
const CLIENTS: usize = 16;

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "access",
        summary: "paper 002: access decision latency against user count up to 1M, S-UCONabc vs RBAC vs no access plugin",
        family: Family::Access,
        defaults: &["access-s-ucon", "access-rbac"],
        run: access,
    }]
}

/// An HS256 token for `sub` (hand-rolled: the bench crate needs no JWT crate).
pub fn token(sub: &str) -> String {
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

/// `users` subjects in 2 classes, each in one of [`SUBSETS`] cities.
pub fn attributes(users: usize) -> String {
    let mut s = String::with_capacity(users * 64);
    for u in 0..users {
        let class = if u % 50 == 0 { "teachers" } else { "students" };
        let _ = writeln!(s, "[subjects.u{u}]\nclass = \"{class}\"\ncity = \"city{}\"", u % SUBSETS);
    }
    s
}

/// The S-UCONabc policy: class roles, a hierarchy, a role per city subset.
pub fn s_ucon_policy(table: &str) -> String {
    let mut s = format!(
        "[{table}.roles]\nstudent = {{ grants = [\"read:paper\"] }}\nteacher = {{ inherits = [\"student\"], grants = [\"read:submission\"] }}\nlocal = {{ grants = [\"read:local\"] }}\n\
         [{table}.classes]\nstudents = [\"student\"]\nteachers = [\"teacher\"]\n"
    );
    for i in 0..SUBSETS {
        let _ = writeln!(s, "[[{table}.subsets]]\nclass = \"students\"\nwhen = {{ city = \"city{i}\" }}\nroles = [\"local\"]");
    }
    s
}

/// The plain role baseline's config.
pub const RBAC_CONFIG: &str = "config = { role_attribute = \"class\", grants = { students = [\"read:paper\"], teachers = [\"read:*\"] } }\n";

/// A gateway over `backend` whose route uses the access plugin at `plugin`
/// (`kind` picks its config: s-ucon's policy, rbac's grants, else none),
/// with `users` subjects written into `dir`.
pub fn config(dir: &Path, backend: SocketAddr, plugin: Option<(&Path, &str)>, users: usize) -> String {
    std::fs::write(dir.join("attributes.toml"), attributes(users)).expect("write attributes");
    let mut s = format!("{SERVER}\n[access]\njwt_keys = [\"{JWT_KEY}\"]\nattributes_file = {:?}\n", dir.join("attributes.toml").to_string_lossy());
    let route = if let Some((path, kind)) = plugin {
        let _ = writeln!(s, "[plugins.acc]\npath = {:?}\nlimits = {{ deadline_ms = 50, instances = 16, memory_mb = 64 }}", path.to_string_lossy());
        match kind {
            "access-s-ucon" => s += &s_ucon_policy("plugins.acc.config"),
            "access-rbac" => s += RBAC_CONFIG,
            _ => {}
        }
        "access = \"acc\"\nobject = { kind = \"paper\" }\n"
    } else {
        ""
    };
    s + &format!("[[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n[[routes]]\nupstream = \"app\"\n{route}")
}

/// Requests with the tokens of 512 users drawn (seeded) from `users`.
fn subjects(users: usize, seed: u64) -> Gen {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let auth: Vec<String> = (0..512).map(|_| format!("Authorization: Bearer {}\r\n", token(&format!("u{}", rng.random_range(0..users))))).collect();
    Arc::new(move |u, n| Target { path: "/paper".into(), headers: auth[(u * 7919 + n) % auth.len()].clone() })
}

const NONE: &str = "none (no access plugin)";

fn access(ctx: &Ctx) -> Result<Results, String> {
    let counts: &[usize] = ctx.pick(&[1_000, 10_000], &[10_000, 100_000, 1_000_000]);
    let plan = Plan { arrivals: Arrivals::Closed { users: CLIENTS }, duration: ctx.step(2.0, 6.0), timeout: Duration::from_secs(5), seed: ctx.seed, ..Plan::default() };
    let app = backend("app", &["--threads", "2"]);
    let mut r = Results::new("access", "decision latency against user count, S-UCONabc vs RBAC", &labels(ctx), ctx.reps);
    r.param("subjects", format!("users in 2 classes (every 50th a teacher) and {SUBSETS} city subsets, static attributes from a file; HS256 bearer tokens of 512 users drawn from them"));
    r.param("policies", "s-ucon: class roles, a teacher > student hierarchy, a role per city subset; rbac: a grant per class");
    r.param("load", format!("closed loop, {CLIENTS} keep-alive clients, {:.1} s per point; GET /paper through the gateway to one demo backend", plan.duration.as_secs_f64()));
    r.param("decision", "mean of switchyard_access_decision_duration_seconds over the measured run (the plugin call, from the gateway's metrics), after 0.5 s of unmeasured warm-up");
    let series: Vec<Option<&Plugin>> = std::iter::once(None).chain(ctx.plugins.iter().map(Some)).collect();
    let rt = Ctx::runtime();
    ctx.progress(ctx.reps * series.len() * counts.len());
    for rep in 0..ctx.reps {
        for p in &series {
            for &users in counts {
                let label = p.map_or(NONE, |p| p.label.as_str());
                ctx.tick(&format!("rep {} {label} {users} users", rep + 1));
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let cfg = config(dir.path(), app.addr, p.map(|p| (p.path.as_path(), p.kind.as_str())), users);
                if rep == 0 && users == counts[0] {
                    check_config(&cfg)?;
                }
                let (gw, admin) = gateway_with_admin(&cfg, "");
                let decisions = || (metric(admin, "switchyard_access_decision_duration_seconds_count", &[]), metric(admin, "switchyard_access_decision_duration_seconds_sum", &[]));
                // Warm-up: plugin instances, connections, caches; not measured.
                load::run(&rt, gw.addr, &Plan { duration: Duration::from_millis(500), ..plan.clone() }, subjects(users, ctx.seed));
                let ((n0, sum0), cpu0) = (decisions(), cpu_secs(gw.pid()));
                let out = load::run(&rt, gw.addr, &plan, subjects(users, ctx.seed));
                let cpu = cpu_secs(gw.pid()) - cpu0;
                let (n1, sum1) = decisions();
                let sum = load::summary(&out.samples);
                let ok = (sum.requests - sum.errors) as f64;
                let mut metrics = vec![("req_s", ok / out.secs), ("p50_ms", sum.p50_ms), ("p99_ms", sum.p99_ms), ("errors_pct", pct(sum.errors as f64, sum.requests as f64)), ("cpu_us_req", cpu * 1e6 / ok.max(1.0))];
                if n1 > n0 {
                    metrics.push(("decision_us", (sum1 - sum0) * 1e6 / (n1 - n0)));
                }
                r.row(label, "users", users as f64, rep, &metrics);
            }
        }
    }
    r.plot("Decision latency against users", "users", "users", ("decision µs (log)", "decision_us"), true);
    r.plot("Request p50 against users", "users", "users", ("p50 ms", "p50_ms"), false);
    r.table("Per policy and user count", "users", "users", &[("decision µs", "decision_us"), ("req/s", "req_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("errors %", "errors_pct"), ("gateway CPU µs/req", "cpu_us_req")]);
    r.aggregate();
    r.claim = claim(&r, ctx, counts);
    Ok(r)
}

fn claim(r: &Results, ctx: &Ctx, counts: &[usize]) -> Claim {
    let (lo, hi) = (counts[0] as f64, counts[counts.len() - 1] as f64);
    let d = |l: &str, x: f64| r.median(l, "users", x, "decision_us").unwrap_or(f64::NAN);
    let evidence = ctx.plugins.iter().map(|p| format!("{}: {} -> {} µs per decision ({:.2}x)", p.label, num(d(&p.label, lo)), num(d(&p.label, hi)), d(&p.label, hi) / d(&p.label, lo))).collect::<Vec<_>>().join("; ");
    let policies: Vec<&str> = ["access-s-ucon", "access-rbac"].iter().filter_map(|k| find(ctx, k)).collect();
    let holds = (!policies.is_empty()).then(|| policies.iter().all(|l| d(l, hi) <= 2.0 * d(l, lo)));
    Claim {
        text: format!("paper 002 (S-UCONabc: roles per user class and attribute subset, not per user): the decision cost does not grow with the user count (at {hi} users <= 2x the cost at {lo})"),
        holds,
        evidence,
    }
}
