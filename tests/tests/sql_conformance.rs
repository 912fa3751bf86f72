//! MariaDB's own C API test suite (`mariadb-client-test`, Debian package
//! `mariadb-test`), test by test, directly against the primary and
//! through the gateway (primary + 2 GTID replicas). Prints the 4-way table
//! and every proxy-only failure with its first error line; fails on a
//! proxy-only failure that is not on the documented list below, and on
//! any hang. `scripts/conformance.sh` runs it alone.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER};

const CLIENT_TEST: &str = "mariadb-client-test";
/// A test that runs longer than this hangs.
const PER_TEST: Duration = Duration::from_secs(60);

/// Proxy-only failures the gateway accepts, each with its reason (also in
/// the README's SQL section).
const ACCEPTED: &[(&str, &str)] = &[
    ("test_change_user", "changes to users the test creates at run time; the gateway authenticates against [sql] users only, since it logs in to backends as them"),
    ("test_bug31669", "changes to users the test creates at run time; the gateway authenticates against [sql] users only, since it logs in to backends as them"),
    ("test_bug20023", "SET GLOBAL runs on the primary only, and the session value the test then reads is answered by a replica"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail(String),
    Hang,
}

fn run_one(addr: SocketAddr, test: &str) -> Outcome {
    let mut child = Command::new(CLIENT_TEST)
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string(), "-u", APP_USER])
        .arg(format!("--password={APP_PASSWORD}"))
        .args(["--silent", test])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CLIENT_TEST}: {e}; install it with `apt-get install -y mariadb-test` (scripts/test.sh does it)"));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        text + &e
    });
    let deadline = Instant::now() + PER_TEST;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = reader.join().unwrap_or_default();
    match status {
        None => Outcome::Hang,
        Some(s) if s.success() => Outcome::Pass,
        Some(s) => Outcome::Fail(first_error(&text).unwrap_or_else(|| format!("exit {s}"))),
    }
}

fn first_error(text: &str) -> Option<String> {
    let l = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut lines = l.clone();
    lines
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("fail") || lower.contains("assert")
        })
        .or_else(|| l.last())
        .map(|l| l.chars().take(200).collect())
}

fn tests() -> Vec<String> {
    let out = Command::new(CLIENT_TEST)
        .args(["--no-defaults", "-T"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {CLIENT_TEST}: {e}; install it with `apt-get install -y mariadb-test` (scripts/test.sh does it)"));
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| l.starts_with("test_")).map(String::from).collect();
    assert!(names.len() > 100, "{CLIENT_TEST} -T listed {} tests", names.len());
    names
}

#[test]
fn mariadb_client_test_passes_through_the_gateway() {
    let names = tests();
    let only: Option<Vec<String>> = std::env::var("CONFORMANCE_TESTS").ok().map(|s| s.split(',').map(String::from).collect());
    let cluster = Cluster::start(2);
    // The suite connects to `test`, creates databases and users and sets globals.
    cluster.primary.sql(&format!("GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;"));
    cluster.wait_replicated();
    let gw = SqlGateway::start(&cluster, None, "");
    let fresh = || {
        cluster.primary.sql("DROP DATABASE IF EXISTS client_test_db");
        cluster.wait_replicated();
    };
    let mut table: BTreeMap<(bool, bool), Vec<(String, Outcome, Outcome)>> = BTreeMap::new();
    for name in names.iter().filter(|n| only.as_ref().is_none_or(|o| o.contains(n))) {
        fresh();
        let direct = run_one(cluster.primary.addr(), name);
        fresh();
        let proxied = run_one(gw.sql, name);
        table.entry((direct == Outcome::Pass, proxied == Outcome::Pass)).or_default().push((name.clone(), direct, proxied));
    }
    let count = |d, p| table.get(&(d, p)).map_or(0, Vec::len);
    println!("mariadb-client-test, {} tests, direct to the primary vs through the gateway (primary + 2 replicas):", names.len());
    println!("  pass both:                        {}", count(true, true));
    println!("  pass direct, fail via the gateway: {}", count(true, false));
    println!("  fail direct, pass via the gateway: {}", count(false, true));
    println!("  fail both:                        {}", count(false, false));
    for (name, direct, proxied) in table.get(&(false, false)).into_iter().flatten() {
        println!("  fail both: {name}: direct {direct:?}; via the gateway {proxied:?}");
    }
    let mut unexpected = Vec::new();
    for (name, _, proxied) in table.get(&(true, false)).into_iter().flatten() {
        let why = ACCEPTED.iter().find(|(n, _)| n == name).map(|(_, w)| *w);
        println!("  proxy-only: {name}: {proxied:?}{}", why.map(|w| format!(" (accepted: {w})")).unwrap_or_default());
        if why.is_none() {
            unexpected.push(name.clone());
        }
    }
    for (name, direct, proxied) in table.values().flatten() {
        if *proxied == Outcome::Hang || *direct == Outcome::Hang {
            println!("  hang: {name}: direct {direct:?}, via the gateway {proxied:?}");
        }
    }
    let hangs: Vec<&String> = table.values().flatten().filter(|(_, _, p)| *p == Outcome::Hang).map(|(n, _, _)| n).collect();
    assert!(hangs.is_empty(), "tests hang through the gateway: {hangs:?}");
    assert!(unexpected.is_empty(), "proxy-only failures not on the accepted list: {unexpected:?}");
}
