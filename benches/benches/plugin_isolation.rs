//! A looping plugin costs only the requests that use it. One route's lb
//! plugin spins to its deadline on 16 keep-alive connections while 4
//! connections load another route (builtin lb); that route's p50/p99 are
//! compared with the same load on a quiet gateway, in one run. Two
//! deadlines: 3 s (few, long spins) and the default 5 ms (many short ones).
//!
//! `cargo build --release -p switchyard && cargo bench -p switchyard-benches --bench plugin_isolation`

use std::time::Duration;
use switchyard_benches::cpu_secs;
use switchyard_tests::*;

const PLAIN_CONNS: usize = 4;
const LOOP_CONNS: usize = 16;

/// The p-th percentile latency; an empty run (every request stalled)
/// counts as the longest wait a request can have, the 10 s read timeout.
fn pct(samples: &[Sample], p: usize) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.end - s.start).collect();
    l.sort();
    l.get((l.len() * p / 100).min(l.len().saturating_sub(1))).copied().unwrap_or(Duration::from_secs(10))
}

/// Load the plain route for `secs`, optionally with looping traffic on
/// `loop_path`; (plain samples, plain failures, looping requests finished,
/// gateway CPU s). A failure is a plain request that got no answer within
/// the load's 10 s read timeout.
fn measure(gw: &Proc, secs: u64, loop_path: Option<&str>) -> (Vec<Sample>, usize, usize, f64) {
    let spin = loop_path.map(|p| Load::start(gw.addr, p, LOOP_CONNS, 100_000, Duration::from_secs(secs + 10)));
    if spin.is_some() {
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu0 = cpu_secs(gw.pid());
    let plain = Load::start(gw.addr, "/", PLAIN_CONNS, 1_000_000, Duration::from_secs(secs + 5));
    std::thread::sleep(Duration::from_secs(secs));
    let (samples, errors) = plain.finish();
    let cpu = cpu_secs(gw.pid()) - cpu0;
    let looped = spin.map_or(0, |s| s.finish().0.len());
    (samples, errors.len(), looped, cpu)
}

fn main() {
    let b1 = backend("b1", &["--threads", "1"]);
    let b2 = backend("b2", &["--threads", "1"]);
    let cfg = format!(
        "{SERVER}{}{}\
         [[upstreams]]\nname = \"long\"\nlb = \"spin3s\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[upstreams]]\nname = \"short\"\nlb = \"spin5ms\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[upstreams]]\nname = \"plain\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/loop3s\"\nupstream = \"long\"\n\
         [[routes]]\npath_prefix = \"/loop5ms\"\nupstream = \"short\"\n\
         [[routes]]\nupstream = \"plain\"\n",
        plugin_table("spin3s", "misbehave", "limits = { deadline_ms = 3000, instances = 16 }\nconfig = { mode = \"spin\" }"),
        plugin_table("spin5ms", "misbehave", "limits = { instances = 16 }\nconfig = { mode = \"spin\" }"),
        b1.addr,
        b1.addr,
        b2.addr,
    );
    let gw = gateway(&cfg);
    measure(&gw, 2, None);
    let secs = 8;
    let (quiet, quiet_err, _, quiet_cpu) = measure(&gw, secs, None);
    let (long, long_err, long_n, long_cpu) = measure(&gw, secs, Some("/loop3s"));
    let (short, short_err, short_n, short_cpu) = measure(&gw, secs, Some("/loop5ms"));
    println!("plugin isolation: threads = 2, plain route {PLAIN_CONNS} keep-alive connections, looping route {LOOP_CONNS}, {secs} s each");
    println!(
        "{:<36} {:>8} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "scenario", "plain req", "failed", "p50", "p99", "p99/quiet", "looped", "gw CPU s"
    );
    let q99 = pct(&quiet, 99);
    for (label, s, failed, n, cpu) in [
        ("quiet", &quiet, quiet_err, 0, quiet_cpu),
        ("spinning to a 3 s deadline", &long, long_err, long_n, long_cpu),
        ("spinning to the 5 ms default", &short, short_err, short_n, short_cpu),
    ] {
        println!(
            "{:<36} {:>8} {:>7} {:>10.2?} {:>10.2?} {:>9.2} {:>9} {:>9.2}",
            label,
            s.len(),
            failed,
            pct(s, 50),
            pct(s, 99),
            pct(s, 99).as_secs_f64() / q99.as_secs_f64(),
            n,
            cpu
        );
    }
    println!("quiet CPU per plain request: {:.1} us", quiet_cpu * 1e6 / quiet.len().max(1) as f64);
    println!("target: p99 with a plugin spinning to a 3 s deadline / quiet p99 <= 2.0");
}
