//! SIGTERM with `drain_delay_ms`: `/healthz` turns to 503 at once while
//! the gateway still serves (keepalived's check or a load balancer moves
//! traffic away), then it stops accepting, drains and exits.

use std::process::Command;
use std::time::{Duration, Instant};
use switchyard_tests::*;

#[test]
fn sigterm_turns_healthz_to_503_before_the_listener_stops() {
    let app = backend("app", &[]);
    let cfg = format!("[server]\nlisten = \"{{listen}}\"\ndrain_delay_ms = 2000\n{}", upstream("web", None, &[(&app, 1)], "health = { check = \"none\" }"));
    let (mut gw, admin) = gateway_with_admin(&cfg, "");
    assert_eq!(get(admin, "/healthz", &[]).status, 200);
    let signalled = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status();
    eventually(5, "/healthz says draining", || {
        let r = get(admin, "/healthz", &[]);
        r.status == 503 && r.body.contains("draining")
    });
    // Still serving, on new connections too, until the delay is over.
    let mut served = 0;
    while signalled.elapsed() < Duration::from_millis(1500) {
        assert_eq!(get(gw.addr, "/", &[]).status, 200, "served during drain_delay_ms");
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served > 10);
    let status = gw.wait_exit(15).expect("the gateway exits after the delay and the drain");
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() >= Duration::from_millis(2000), "it did not stop before drain_delay_ms");
}
