//! Per-decision cost of each lb plugin with 16 backends: the Wasm component
//! against the native builtin round robin, through the same `Upstream::pick`
//! the proxy calls (policy call + health/retry enforcement).
//!
//! `cargo bench -p switchyard-benches --bench lb_decision`
//! (plugins built first: `cargo build --release --manifest-path plugins/Cargo.toml`).

use std::path::PathBuf;
use std::sync::Arc;
use switchyard::config::{HealthSection, OnError, PluginLimits, PluginSpec, UpstreamSpec};
use switchyard::seams::{LbPolicy, RequestView, RoundRobin};
use switchyard::upstream::Upstream;
use switchyard::wasm::{Engine, PluginSlot, WasmLb};

/// Median ns per `pick` over batches, run inside the runtime as the proxy
/// does (no `block_on` per call).
async fn median_pick_ns(up: &Upstream, req: &Arc<RequestView>, batches: usize, per: usize) -> f64 {
    let mut samples = Vec::with_capacity(batches);
    for _ in 0..batches {
        let t = std::time::Instant::now();
        for _ in 0..per {
            std::hint::black_box(up.pick(req, &[]).await.unwrap());
        }
        samples.push(t.elapsed().as_nanos() as f64 / per as f64);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

const BACKENDS: usize = 16;

fn spec() -> UpstreamSpec {
    UpstreamSpec {
        name: "bench".into(),
        backends: (0..BACKENDS).map(|i| (format!("127.0.0.1:{}", 10_000 + i).parse().unwrap(), 1 + (i % 3) as u32)).collect(),
        lb: None,
        health: HealthSection::default(),
        retries: 2,
        connect_timeout_ms: 100,
        io: Default::default(),
        tls: None,
        protocol: Default::default(),
        max_streams: 100,
    }
}

fn plugin_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release"))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut req = RequestView { method: "GET".into(), path: "/".into(), client_ip: Some("10.1.2.3".parse().unwrap()), ..Default::default() };
    req.headers.insert("x-user", "alice".parse().unwrap());
    let req = Arc::new(req);
    let engine = Engine::new().expect("engine");
    let (batches, per) = (200, 2_000);

    let native = Upstream::new(&spec(), Arc::new(RoundRobin::default()));
    let base = rt.block_on(median_pick_ns(&native, &req, batches, per));
    println!("lb decision, {BACKENDS} backends, median of {batches} batches x {per} calls");
    println!("{:<24} {:>10} {:>14}", "policy", "ns/call", "vs native rr");
    println!("{:<24} {:>10.0} {:>14}", "native round-robin", base, "1.00x");

    let plugins = [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("least_connections", ""),
        ("fastest_response", ""),
        ("consistent_hash", r#"{"key":"header:x-user"}"#),
        ("round_robin_py", ""),
        ("round_robin_js", ""),
    ];
    for (file, config) in plugins {
        let path = plugin_dir().join(format!("{file}.wasm"));
        assert!(path.is_file(), "{} missing: build the plugins first (scripts/test.sh builds all)", path.display());
        let interpreted = file.ends_with("_py") || file.ends_with("_js");
        let pspec = PluginSpec {
            name: file.into(),
            path,
            on_error: OnError::FailClosed,
            on_error_set: Some(OnError::FailClosed),
            limits: if interpreted { PluginLimits { memory_mb: 256, deadline_ms: 50, ..Default::default() } } else { PluginLimits::default() },
            config_json: if config.is_empty() { "{}".into() } else { config.into() },
            config_line: None,
            watch_ms: 0,
        };
        let slot = PluginSlot::load(&engine, &pspec).expect("load");
        let lb: Arc<dyn LbPolicy> = Arc::new(rt.block_on(WasmLb::new(slot.current().plugin.clone())).expect("instantiate"));
        let up = Upstream::new(&spec(), lb);
        let (b, p) = if interpreted { (20, 200) } else { (batches, per) };
        let ns = rt.block_on(median_pick_ns(&up, &req, b, p));
        println!("{:<24} {:>10.0} {:>13.2}x", format!("wasm {file}"), ns, ns / base);
    }
}
