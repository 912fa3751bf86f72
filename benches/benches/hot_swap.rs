//! p99 latency while the lb plugin is hot-swapped 50 times (alternating two
//! versions, with rollbacks), against the same load with no swaps. Real
//! release binary, real backends, 32 keep-alive connections.
//!
//! `cargo bench -p switchyard-benches --bench hot_swap`

use std::time::{Duration, Instant};
use switchyard_tests::*;

const CONNS: usize = 32;

fn p99(samples: &[Sample]) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.end - s.start).collect();
    l.sort();
    l[(l.len() * 99 / 100).min(l.len() - 1)]
}

fn main() {
    let first = backend("first", &["--threads", "1"]);
    let last = backend("last", &["--threads", "1"]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("lb", "pin_first", "watch_ms = 0"),
        upstream("web", Some("lb"), &[(&first, 1), (&last, 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let versions = [std::fs::read(plugin("pin_first")).unwrap(), std::fs::read(plugin("pin_last")).unwrap()];

    // Warm up, then the steady run.
    let run = |secs: u64| {
        let load = Load::start(gw.addr, "/", CONNS, 1_000_000, Duration::from_secs(secs + 5));
        std::thread::sleep(Duration::from_secs(secs));
        load.finish()
    };
    run(2);
    let steady_for = Duration::from_secs(8);
    let (steady, errors) = run(steady_for.as_secs());
    assert!(errors.is_empty(), "steady run failed requests: {:?}", errors.first());

    let (warm, warm_swaps, warm_for) = swap_run(&gw, admin, &versions, false);
    let (cold, cold_swaps, cold_for) = swap_run(&gw, admin, &versions, true);
    let p_steady = p99(&steady);
    println!("hot swap under load: {CONNS} keep-alive connections, 50 swaps each (PUT x40, rollback x10), 0 failed requests");
    println!("{:<34} {:>8} req in {:>5.1} s   p99 {:>8.2?}", "steady (no swaps)", steady.len(), steady_for.as_secs_f64(), p_steady);
    for (label, samples, swaps, took) in [
        ("swapping, two known versions", &warm, &warm_swaps, warm_for),
        ("swapping, new bytes every PUT", &cold, &cold_swaps, cold_for),
    ] {
        println!(
            "{:<34} {:>8} req in {:>5.1} s   p99 {:>8.2?}   p99/steady {:.2}   swap median {:.1?} max {:.1?}",
            label,
            samples.len(),
            took.as_secs_f64(),
            p99(samples),
            p99(samples).as_secs_f64() / p_steady.as_secs_f64(),
            swaps[swaps.len() / 2],
            swaps[swaps.len() - 1]
        );
    }
    println!("target: p99 during swaps / steady <= 1.5");
}

/// `bytes` plus a custom section, so its sha256 (and compile) is new.
fn fresh(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"switchyard-bench";
    let payload = n.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// 50 swaps under load; `cold` makes every PUT compile.
fn swap_run(gw: &Proc, admin: std::net::SocketAddr, versions: &[Vec<u8>; 2], cold: bool) -> (Vec<Sample>, Vec<Duration>, Duration) {
    let (k, v) = bearer();
    let load = Load::start(gw.addr, "/", CONNS, 1_000_000, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    let (mut cur, mut swap_times) = (0usize, Vec::new());
    for i in 0..50u32 {
        let t = Instant::now();
        let r = if i % 5 == 4 {
            cur = 1 - cur;
            request(admin, "POST", "/plugins/lb/rollback", &[(k, &v)], &[])
        } else {
            cur = 1 - cur;
            let bytes = if cold { fresh(&versions[cur], i) } else { versions[cur].clone() };
            request(admin, "PUT", "/plugins/lb", &[(k, &v)], &bytes)
        };
        assert_eq!(r.status, 200, "swap {i}: {r:?}");
        swap_times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(40));
    }
    let took = began.elapsed();
    let (during, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed requests during swaps: {:?}", errors.len(), errors.first());
    assert!(during.iter().all(|s| s.status == 200), "non-200 during swaps");
    let during = during.into_iter().filter(|s| s.start >= began && s.start - began <= took).collect();
    swap_times.sort();
    (during, swap_times, took)
}
