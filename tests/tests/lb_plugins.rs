//! Each lb plugin's distribution over live backends, through the real gateway.

use switchyard_tests::*;

/// A deadline a debug gateway on a loaded 2-core machine always meets:
/// these tests check distributions, and a deadline hit would fall back to
/// the builtin round robin and skew them.
const LIMITS: &str = "limits = { deadline_ms = 200 }";

fn three(extra: &[&str]) -> Vec<Proc> {
    (1..=3).map(|i| backend(&format!("b{i}"), extra)).collect()
}

#[test]
fn round_robin_spreads_evenly() {
    let b = three(&[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("rr", "round_robin", LIMITS),
        upstream("web", Some("rr"), &[(&b[0], 1), (&b[1], 1), (&b[2], 1)], "")
    );
    let gw = gateway(&cfg);
    let t = tally(gw.addr, "/", 300, &[]);
    assert_eq!(t.len(), 3, "{t:?}");
    // Each pooled instance cycles on its own; sequential requests reuse one.
    assert!(t.values().all(|&c| (90..=110).contains(&c)), "{t:?}");
}

/// Sequential calls reuse the pooled instance: nothing is instantiated
/// beyond what the load made, and nothing is dropped; the counters an
/// operator sizes `limits.instances` by stay flat.
#[test]
fn sequential_calls_reuse_one_instance_and_the_pool_counters_say_so() {
    let b = three(&[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("rr", "round_robin", "limits = { deadline_ms = 200, instances = 1 }"),
        upstream("web", Some("rr"), &[(&b[0], 1), (&b[1], 1), (&b[2], 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    let made = || metric(admin, "switchyard_plugin_instantiations_total", &[("plugin", "rr")]);
    assert_eq!(get(gw.addr, "/", &[]).status, 200);
    let after_first = made();
    for _ in 0..50 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    assert_eq!(made(), after_first, "50 sequential calls made no new instance");
    assert!(after_first <= 1.0, "at most the first call found the pool empty: {after_first}");
    assert_eq!(metric(admin, "switchyard_plugin_instances_over_pool_total", &[("plugin", "rr")]), 0.0);
}

/// An instance whose call trapped is dropped, never reused: the next call
/// makes a new one, and the counter shows it.
#[test]
fn a_trapped_instance_is_replaced_and_counted() {
    let b = backend("b1", &[]);
    let cfg = format!(
        "{SERVER}{}on_error = \"fallback\"\n{}",
        plugin_table("bad", "misbehave", "config = { mode = \"trap-half\" }\nlimits = { deadline_ms = 200, instances = 4 }"),
        upstream("web", Some("bad"), &[(&b, 1)], "")
    );
    let (gw, admin) = gateway_with_admin(&cfg, "");
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200, "the fallback answers a trapped call");
    }
    let traps = metric(admin, "switchyard_plugin_traps_total", &[("plugin", "bad")]);
    let made = metric(admin, "switchyard_plugin_instantiations_total", &[("plugin", "bad")]);
    assert!(traps >= 4.0, "trap-half trapped: {traps}");
    assert!(made >= traps - 1.0, "each trapped instance was replaced: {made} made for {traps} traps");
}

#[test]
fn weighted_round_robin_follows_weights() {
    let b = three(&[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("wrr", "weighted_round_robin", LIMITS),
        upstream("web", Some("wrr"), &[(&b[0], 3), (&b[1], 2), (&b[2], 1)], "")
    );
    let gw = gateway(&cfg);
    let t = tally(gw.addr, "/", 600, &[]);
    let (c1, c2, c3) = (t["b1"], t["b2"], t["b3"]);
    assert!((285..=315).contains(&c1) && (185..=215).contains(&c2) && (85..=115).contains(&c3), "{t:?}");
}

/// Requests held on the slow backend while sequential requests run: how
/// many holders sit on "slow", and where the sequential requests went.
fn hold_then_probe(plugin: &str) -> (usize, std::collections::BTreeMap<String, usize>) {
    // Far longer than 30 sequential requests take through a debug gateway.
    let slow = backend("slow", &["--delay-ms", "3000"]);
    let f1 = backend("fast1", &[]);
    let f2 = backend("fast2", &[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("p", plugin, LIMITS),
        upstream("web", Some("p"), &[(&slow, 1), (&f1, 1), (&f2, 1)], "")
    );
    let gw = gateway(&cfg);
    let addr = gw.addr;
    for _attempt in 0..5 {
        // Six at once: the ones that land on "slow" stay in flight for 3 s.
        let holders: Vec<_> = (0..6).map(|_| std::thread::spawn(move || get(addr, "/", &[]).backend().to_string())).collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let counts = tally(addr, "/", 30, &[]);
        let on_slow = holders.into_iter().map(|h| h.join().unwrap()).filter(|b| b == "slow").count();
        if on_slow > 0 {
            return (on_slow, counts);
        }
    }
    panic!("{plugin}: no request of five rounds of six landed on the slow backend");
}

#[test]
fn least_connections_sends_nothing_to_a_backend_with_requests_in_flight() {
    // Control: round robin keeps sending a third to the busy backend, so the
    // assertion below tells least-connections from round robin.
    let (_, rr) = hold_then_probe("round_robin");
    assert!(rr.get("slow").copied().unwrap_or(0) >= 8, "round robin: {rr:?}");
    let (held, lc) = hold_then_probe("least_connections");
    assert!(held >= 1);
    assert_eq!(lc.get("slow"), None, "least-connections sent requests to the backend holding {held} in flight: {lc:?}");
    assert!(lc.get("fast1").is_some() && lc.get("fast2").is_some(), "{lc:?}");
}

#[test]
fn fastest_response_prefers_the_fast_backends() {
    // Far slower than any scheduling hiccup of a loaded 2-core machine, so
    // the fast backends' peak-EWMA never climbs near it.
    let slow = backend("slow", &["--delay-ms", "150"]);
    let f1 = backend("fast1", &[]);
    let f2 = backend("fast2", &[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("fr", "fastest_response", &format!("{LIMITS}\nconfig = {{ default_latency_us = 1000.0 }}")),
        upstream("web", Some("fr"), &[(&slow, 1), (&f1, 1), (&f2, 1)], "")
    );
    let gw = gateway(&cfg);
    let _warm = tally(gw.addr, "/", 30, &[]);
    let t = tally(gw.addr, "/", 150, &[]);
    let slow_n = *t.get("slow").unwrap_or(&0);
    // Uniform would give the slow backend 50. Measured, it loses every p2c
    // draw; it only comes back when its stale measurement decays.
    assert!(slow_n <= 20, "slow backend got {slow_n} of 150: {t:?}");
}

#[test]
fn fastest_response_does_not_reward_fast_errors() {
    let failing = backend("failing", &["--status", "503"]);
    let ok1 = backend("ok1", &["--delay-ms", "5"]);
    let ok2 = backend("ok2", &["--delay-ms", "5"]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("fr", "fastest_response", LIMITS),
        upstream("web", Some("fr"), &[(&failing, 1), (&ok1, 1), (&ok2, 1)], "health = { check = \"none\", max_failures = 1000 }")
    );
    let gw = gateway(&cfg);
    let mut failed = 0;
    for _ in 0..30 {
        get(gw.addr, "/", &[]);
    }
    for _ in 0..150 {
        if get(gw.addr, "/", &[]).status == 503 {
            failed += 1;
        }
    }
    assert!(failed <= 15, "the fast-failing backend still got {failed} of 150");
}

#[test]
fn consistent_hash_keeps_a_key_on_one_backend() {
    let b = three(&[]);
    let cfg = format!(
        "{SERVER}{}{}",
        plugin_table("ch", "consistent_hash", &format!("{LIMITS}\nconfig = {{ key = \"header:x-user\" }}")),
        upstream("web", Some("ch"), &[(&b[0], 1), (&b[1], 1), (&b[2], 1)], "")
    );
    let gw = gateway(&cfg);
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let t = tally(gw.addr, "/", 5, &[("x-user", &u)]);
        assert_eq!(t.len(), 1, "{u} was spread: {t:?}");
        owners.extend(t.into_keys());
    }
    assert_eq!(owners.len(), 3, "30 users should cover all 3 backends: {owners:?}");
}
