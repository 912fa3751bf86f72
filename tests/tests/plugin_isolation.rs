//! A plugin that loops costs only the requests that use it: while its
//! calls spin to their deadline, another route keeps answering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_tests::*;

/// More looping requests than proxy workers (threads = 2), each spinning
/// for 4 s. Every request to the other route must complete while all of
/// them are still running. Before the fix each spin held a worker, so the
/// other route answered only after the spins had ended.
#[test]
fn a_looping_plugin_never_stalls_another_route() {
    let b1 = backend("b1", &[]);
    let b2 = backend("b2", &[]);
    let cfg = format!(
        "{SERVER}{}\
         [[upstreams]]\nname = \"looping\"\nlb = \"spin\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[upstreams]]\nname = \"plain\"\nbackends = [{{ address = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/loop\"\nupstream = \"looping\"\n\
         [[routes]]\nupstream = \"plain\"\n",
        plugin_table("spin", "misbehave", "limits = { deadline_ms = 4000, instances = 8 }\nconfig = { mode = \"spin\" }"),
        b1.addr,
        b2.addr,
    );
    let gw = gateway(&cfg);
    assert_eq!(get(gw.addr, "/", &[]).backend(), "b2");

    let looping = 4;
    let done = Arc::new(AtomicUsize::new(0));
    let spinners: Vec<_> = (0..looping)
        .map(|_| {
            let (addr, done) = (gw.addr, done.clone());
            std::thread::spawn(move || {
                // The deadline falls back to round robin: b1 answers.
                let r = get(addr, "/loop", &[]);
                done.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    // Let the spins start (they last 4 s; this is no timing assertion).
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        let r = get(gw.addr, "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "b2"), "request {i} to the plain route");
    }
    let finished_first = done.load(Ordering::SeqCst);
    for s in spinners {
        let r = s.join().unwrap();
        assert_eq!((r.status, r.backend()), (200, "b1"), "a deadline hit falls back: {r:?}");
    }
    assert_eq!(
        finished_first, 0,
        "the plain route answered only after {finished_first} of the {looping} looping calls had ended: a spinning plugin held the proxy workers"
    );
    let log = gw.log_text();
    assert!(log.contains("deadline"), "the deadline hits are logged:\n{log}");
}

/// A call that sleeps is away in a host await (a WASI clock wait), where
/// the epoch never interrupts it: it ends at four times its deadline as a
/// deadline hit, and its request falls back, instead of waiting out the
/// 30 s the plugin asked for.
#[test]
fn a_sleeping_plugin_call_ends_at_its_bound() {
    let b1 = backend("b1", &[]);
    let cfg = format!(
        "{SERVER}{}[[upstreams]]\nname = \"sleepy\"\nlb = \"sleep\"\nbackends = [{{ address = \"{}\" }}]\n[[routes]]\nupstream = \"sleepy\"\n",
        plugin_table("sleep", "misbehave", "limits = { deadline_ms = 250 }\nconfig = { mode = \"sleep\" }"),
        b1.addr,
    );
    let gw = gateway(&cfg);
    for i in 0..2 {
        let started = std::time::Instant::now();
        let r = get(gw.addr, "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "b1"), "request {i}: the deadline hit falls back: {r:?}");
        // Not a timing assertion: the bound is 1 s, and anything well
        // under the plugin's 30 s shows the call was cut.
        assert!(started.elapsed() < Duration::from_secs(20), "request {i} waited out the plugin's sleep: {:?}", started.elapsed());
    }
    let log = gw.log_text();
    assert!(log.contains("ran past its 250 ms deadline"), "the cut calls are logged as deadline hits:\n{log}");
}
