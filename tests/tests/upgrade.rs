//! A binary upgrade under load: a second process started with
//! `run --upgrade` takes the listening sockets of the first (SIGQUIT),
//! which finishes what it has in flight and exits. No request fails and no
//! connection is refused; keep-alive clients of the old process are told
//! `Connection: close` and reconnect to the new one.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::*;

#[test]
fn a_binary_upgrade_under_load_fails_no_request_and_refuses_no_connection() {
    let app = backend("app", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\nthreads = 2\ngrace_ms = 3000\nupgrade_sock = {sock:?}\n{}",
        upstream("web", None, &[(&app, 1)], "health = { check = \"none\" }")
    );
    let mut old = gateway(&cfg);
    let load = Load::start(old.addr, "/", 8, 1_000_000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    // The new process loads everything, then waits for the sockets.
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, cfg.replace("{listen}", &old.addr.to_string())).unwrap();
    let log = dir.path().join("new.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut new = Command::new(switchyard_bin())
        .args(["run", "--upgrade", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(60, "the new process waits for the sockets", || text().contains("Bootstrap starting"));
    let _ = Command::new("kill").args(["-QUIT", &old.pid().to_string()]).status();
    eventually(30, "the new process has the sockets", || text().contains("Bootstrap done"));
    let status = old.wait_exit(30).unwrap_or_else(|| panic!("the old process did not exit:\n{}", old.log_text()));
    let exited = Instant::now();
    assert!(status.success(), "the old process exited with {status}");
    std::thread::sleep(Duration::from_secs(1));
    let (samples, errors) = load.finish();
    let _ = new.kill();
    let _ = new.wait();
    assert!(errors.is_empty(), "{} requests failed during the upgrade, first: {:?}\nnew process:\n{}", errors.len(), errors.first(), text());
    assert!(samples.iter().all(|s| s.status == 200), "every answer is 200");
    let after = samples.iter().filter(|s| s.start > exited).count();
    assert!(after > 50, "the new process serves once the old one is gone ({after} requests after it exited)");
    assert!(old.log_text().contains("listener sockets sent"), "{}", old.log_text());
}
