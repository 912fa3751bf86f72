//! Read-your-writes through the gateway: a write then a read on the same
//! connection always sees the write, while a replica's SQL thread is
//! stopped and started under the load (replication delay injected).

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const ROUNDS: usize = 10_000;

/// Toggle replication on replica 0 until `stop` is set: stopped for
/// 300 ms, running for 300 ms.
fn inject_delay(cluster: &Cluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let replica = cluster.replicas[0].handle();
    std::thread::spawn(move || {
        let mut toggles = 0;
        while !stop.load(Ordering::Relaxed) {
            replica.sql("STOP SLAVE SQL_THREAD");
            std::thread::sleep(Duration::from_millis(300));
            replica.sql("START SLAVE SQL_THREAD");
            std::thread::sleep(Duration::from_millis(300));
            toggles += 1;
        }
        toggles
    })
}

fn rounds(extra: &str, rounds: usize) -> (usize, SqlGateway, usize) {
    let cluster = Cluster::start(2);
    let gw = SqlGateway::start(&cluster, Some("rw_split"), extra);
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = inject_delay(&cluster, stop.clone());
    let stale = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut c = Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap();
        let mut stale = 0;
        for i in 0..rounds as i64 {
            c.query_drop(format!("INSERT INTO items (v) VALUES ({i})")).await.unwrap();
            let id = c.last_insert_id().unwrap();
            let got: Option<i64> = c.query_first(format!("SELECT v FROM items WHERE id = {id}")).await.unwrap();
            if got != Some(i) {
                stale += 1;
            }
            // And an update of the same row, read back.
            if i % 10 == 0 {
                c.query_drop(format!("UPDATE items SET v = {} WHERE id = {id}", -i)).await.unwrap();
                let got: Option<i64> = c.query_first(format!("SELECT v FROM items WHERE id = {id}")).await.unwrap();
                if got != Some(-i) {
                    stale += 1;
                }
            }
        }
        stale
    });
    stop.store(true, Ordering::Relaxed);
    let toggles = toggler.join().unwrap();
    (stale, gw, toggles)
}

#[test]
fn gtid_mode_never_reads_stale_over_10000_rounds() {
    let (stale, gw, toggles) = rounds("causal = \"gtid\"\ncausal_timeout_ms = 50\n", ROUNDS);
    assert!(toggles >= 2, "replication was stopped and started {toggles} times");
    assert_eq!(stale, 0, "stale reads after a write");
    // Reads really went to replicas, after a GTID wait or with the
    // replica known to be caught up; some fell back to the primary.
    let m = |r: &str| gw.metric("switchyard_sql_causal_total", &[("result", r)]);
    let on_replicas: f64 = ["replica-0", "replica-1"].iter().map(|r| gw.metric("switchyard_sql_statements_total", &[("destination", r), ("class", "read")])).sum();
    eprintln!("causal: waited {} covered {} fallback {}; reads on replicas {on_replicas}; toggles {toggles}", m("waited"), m("covered"), m("fallback"));
    assert!(m("waited") + m("covered") > 0.0, "{}", gw.metrics());
    assert!(on_replicas > 0.0);
}

#[test]
fn pin_mode_never_reads_stale() {
    let (stale, gw, _) = rounds("causal = \"pin\"\npin_window_ms = 2000\n", 1000);
    assert_eq!(stale, 0);
    assert!(gw.metric("switchyard_sql_causal_total", &[("result", "pinned")]) > 0.0);
}
