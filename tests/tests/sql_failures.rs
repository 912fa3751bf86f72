//! Backend failures through the SQL listener, each with its own cluster:
//! the primary killed, a replica killed or frozen (SIGSTOP), a replica that stops replicating.
//! Every case ends in a clear error or a correct answer, never a hang, and
//! a backend that comes back rejoins.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn connect(gw: &SqlGateway) -> Conn {
    Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap()
}

/// A login that may be refused (while the gateway still sees the primary
/// down), but must not hang.
async fn try_connect(gw: &SqlGateway) -> Option<Conn> {
    bounded("a login", Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap())).await.ok()
}

/// Every statement must answer within this (no hang).
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("{what} hung"))
}

async fn server_ids(c: &mut Conn, n: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let id: u32 = bounded("a read", c.query_first("SELECT @@server_id")).await.unwrap().unwrap();
        seen.insert(id);
    }
    seen
}

/// Four reads on a connection while a replica is out: each is answered by
/// the live replica `live` (its server id) or fails; the failures.
async fn reads_on_the_live_replica_or_errors(c: &mut Conn, live: u32) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..4 {
        match bounded("a read", c.query_first::<u32, _>("SELECT @@server_id")).await {
            Ok(id) => assert_eq!(id, Some(live)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn primary_killed_writes_fail_fast_reads_continue_then_it_rejoins() {
    let mut cluster = Cluster::start(2);
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "");
    run(async {
        let mut c = connect(&gw).await;
        c.query_drop("INSERT INTO items (v) VALUES (1)").await.unwrap();
        // Replicated before the crash: otherwise this client's causal reads
        // rightly fail ("read-your-writes: … and the primary is down").
        cluster.wait_replicated();
        cluster.primary.kill();
        // The held primary connection breaks: a clear error, at once.
        let started = Instant::now();
        let err = bounded("a write", c.query_drop("INSERT INTO items (v) VALUES (2)")).await.expect_err("the primary is down");
        assert!(err.to_string().contains("primary"), "{err}");
        // New writes fail at once with the gateway's message; reads go on.
        let err = bounded("a write", c.query_drop("INSERT INTO items (v) VALUES (3)")).await.expect_err("the primary is down");
        assert!(err.to_string().contains("the primary") && err.to_string().contains("down"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "writes failed in {:?}", started.elapsed());
        assert_eq!(server_ids(&mut c, 6).await, BTreeSet::from([2, 3]));
        // A new client can still log in and read.
        let mut fresh = connect(&gw).await;
        assert!(!server_ids(&mut fresh, 2).await.contains(&1));
        let m = gw.metric("switchyard_sql_backend_up", &[("backend", "primary")]);
        assert_eq!(m, 0.0, "{}", gw.metrics());
        // Once the polls see both replicas' IO threads reconnecting (lag
        // unknown), they still serve reads: nothing can be missing.
        eventually_async("the polls see the replicas reconnecting", || async {
            ["replica-0", "replica-1"].iter().all(|r| gw.metric("switchyard_sql_replica_lag_seconds", &[("replica", r)]) == -1.0)
        })
        .await;
        for r in ["replica-0", "replica-1"] {
            assert_eq!(gw.metric("switchyard_sql_backend_up", &[("backend", r)]), 1.0, "{}", gw.metrics());
        }
        assert_eq!(server_ids(&mut fresh, 6).await, BTreeSet::from([2, 3]));

        cluster.primary.start();
        // Until the health poll sees the primary back, logins may fail
        // with the "primary is down" error; that is a retry, not a hang.
        eventually_async("writes work again", || async {
            let Some(mut c) = try_connect(&gw).await else { return false };
            bounded("a write", c.query_drop("INSERT INTO items (v) VALUES (4)")).await.is_ok()
        })
        .await;
        // The replicas reconnect and take reads again.
        eventually_async("both replicas serve reads again", || async {
            let Some(mut c) = try_connect(&gw).await else { return false };
            server_ids(&mut c, 6).await == BTreeSet::from([2, 3])
        })
        .await;
    });
}

#[test]
fn replica_killed_reads_move_to_the_other_then_it_rejoins() {
    let mut cluster = Cluster::start(2);
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "");
    run(async {
        let mut c = connect(&gw).await;
        assert_eq!(server_ids(&mut c, 4).await, BTreeSet::from([2, 3]));
        cluster.replicas[0].kill();
        // A read on the held connection to the dead replica gets a clear
        // error, not a hang; the others succeed.
        let errors = reads_on_the_live_replica_or_errors(&mut c, 3).await;
        assert!(errors.iter().all(|e| e.contains("replica-0") || e.contains("lost connection")), "{errors:?}");
        let mut c = connect(&gw).await;
        eventually_async("reads avoid the dead replica", || async { gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]) == 0.0 }).await;
        assert_eq!(server_ids(&mut c, 6).await, BTreeSet::from([3]));

        cluster.replicas[0].start();
        eventually_async("the replica rejoins", || async {
            let Some(mut c) = try_connect(&gw).await else { return false };
            server_ids(&mut c, 6).await == BTreeSet::from([2, 3])
        })
        .await;
    });
}

#[test]
fn a_read_that_picks_a_replica_dead_since_the_last_poll_is_rerouted() {
    let mut cluster = Cluster::start(2);
    // Polls too rare to notice the kill: the session finds out itself.
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "health_interval_ms = 60000\n");
    cluster.replicas[0].kill();
    run(async {
        // Nothing was sent to the dead replica, so no read fails: each one
        // that picks it is routed again, and it is marked down.
        let mut c = connect(&gw).await;
        assert_eq!(server_ids(&mut c, 6).await, BTreeSet::from([3]));
        assert_eq!(gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]), 0.0);
        let mut other = connect(&gw).await;
        assert_eq!(server_ids(&mut other, 4).await, BTreeSet::from([3]));
        c.query_drop("INSERT INTO items (v) VALUES (7)").await.unwrap();
    });
}

#[test]
fn a_write_the_replicas_never_applied_is_not_read_stale_after_the_primary_dies() {
    let mut cluster = Cluster::start(2);
    // Both replicas receive events but hold them 60 s before applying.
    for r in &cluster.replicas {
        r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 60; START SLAVE;");
    }
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "max_lag_s = 120\ncausal_timeout_ms = 300\n");
    run(async {
        let mut writer = connect(&gw).await;
        writer.query_drop("INSERT INTO items (v) VALUES (99)").await.unwrap();
        let id = writer.last_insert_id().unwrap();
        cluster.primary.kill();
        // The writer's read cannot be causal anywhere: a clear error, not
        // the replicas' stale answer.
        let read = format!("SELECT COUNT(*) FROM items WHERE id = {id}");
        let err = bounded("a causal read", writer.query_first::<i64, _>(&read)).await.expect_err("a stale read");
        assert!(err.to_string().contains("read-your-writes") && err.to_string().contains("primary is down"), "{err}");
        // Another client, with no write of its own, reads from the replicas.
        let mut reader = connect(&gw).await;
        assert_eq!(server_ids(&mut reader, 4).await, BTreeSet::from([2, 3]));
        assert_eq!(bounded("a read", reader.query_first::<i64, _>(&read)).await.unwrap(), Some(0));
    });
}

#[test]
fn a_replica_that_stops_replicating_is_skipped_until_it_catches_up() {
    let cluster = Cluster::start(2);
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "max_lag_s = 5\n");
    cluster.replicas[0].sql("STOP SLAVE SQL_THREAD");
    run(async {
        // One poll marks it down, then records its lag as unknown.
        eventually_async("the stopped replica is out, its lag unknown", || async {
            gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]) == 0.0 && gw.metric("switchyard_sql_replica_lag_seconds", &[("replica", "replica-0")]) == -1.0
        })
        .await;
        let mut c = connect(&gw).await;
        assert_eq!(server_ids(&mut c, 6).await, BTreeSet::from([3]));
        // Writes it missed are not read from it.
        c.query_drop("INSERT INTO items (v) VALUES (42)").await.unwrap();
        let id = c.last_insert_id().unwrap();
        let got: Option<i64> = c.query_first(format!("SELECT v FROM items WHERE id = {id}")).await.unwrap();
        assert_eq!(got, Some(42));

        cluster.replicas[0].sql("START SLAVE SQL_THREAD");
        eventually_async("the replica rejoins", || async {
            let Some(mut c) = try_connect(&gw).await else { return false };
            server_ids(&mut c, 6).await == BTreeSet::from([2, 3])
        })
        .await;
    });
}

#[test]
fn a_lagging_replica_is_skipped_while_it_lags() {
    let cluster = Cluster::start(2);
    // MASTER_DELAY holds every event 4 s on replica 0: real lag after each write.
    cluster.replicas[0].sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 4; START SLAVE;");
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "max_lag_s = 1\n");
    run(async {
        let mut c = connect(&gw).await;
        eventually_async("both replicas serve", || async { gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]) == 1.0 }).await;
        let mut w = connect(&gw).await;
        // Keep writing so replica 0 stays behind.
        let writer = async {
            for i in 0..40 {
                w.query_drop(format!("INSERT INTO items (v) VALUES ({i})")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let watcher = async {
            eventually_async("the lagging replica is out", || async { gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]) == 0.0 }).await;
            let lag = gw.metric("switchyard_sql_replica_lag_seconds", &[("replica", "replica-0")]);
            assert!(lag >= 2.0, "lag gauge shows {lag}");
            assert_eq!(server_ids(&mut c, 6).await, BTreeSet::from([3]), "no reads on the lagging replica");
        };
        tokio::join!(writer, watcher);
        cluster.replicas[0].sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE;");
        eventually_async("the replica rejoins once caught up", || async {
            let mut c = connect(&gw).await;
            server_ids(&mut c, 6).await == BTreeSet::from([2, 3])
        })
        .await;
    });
}

/// SIGSTOP or SIGCONT a server: it keeps its sockets but stops answering.
/// A stop is waited for: `kill` returns once the signal is sent, and on a
/// loaded machine a thread of the server may still answer a query sent
/// right after (CI saw a read answered by the replica it had just stopped).
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
    if sig == "-STOP" {
        switchyard_tests::eventually(10, "every thread of the server is stopped", || every_thread_stopped(pid));
    }
}

/// Each task of `pid` is in state T (stopped), per /proc/PID/task/*/stat.
fn every_thread_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

#[test]
fn a_replica_that_stops_answering_is_marked_down_by_a_bounded_poll_then_rejoins() {
    let cluster = Cluster::start(2);
    // A frozen server accepts TCP (the kernel does) but answers nothing:
    // only the polls' own timeouts can notice it.
    let gw = SqlGateway::start(&cluster, None, "read_timeout_ms = 2000\nconnect_timeout_ms = 300\n");
    let pid = cluster.replicas[0].pid().expect("replica-0 runs");
    run(async {
        let mut c = connect(&gw).await;
        assert_eq!(server_ids(&mut c, 4).await, BTreeSet::from([2, 3]));
        signal(pid, "-STOP");
        // Reads right away on the held connection: one routed to the frozen
        // replica ends within read_timeout_ms with a clear error; the others
        // are answered by the live one.
        let errors = reads_on_the_live_replica_or_errors(&mut c, 3).await;
        assert!(errors.iter().all(|e| e.contains("read_timeout_ms") || e.contains("replica-0")), "{errors:?}");
        eventually_async("the poll marks the frozen replica down", || async { gw.metric("switchyard_sql_backend_up", &[("backend", "replica-0")]) == 0.0 }).await;
        // Fresh sessions read from the live replica only.
        let mut fresh = connect(&gw).await;
        assert_eq!(bounded("reads while replica-0 is frozen", server_ids(&mut fresh, 6)).await, BTreeSet::from([3]));
        signal(pid, "-CONT");
        eventually_async("the replica rejoins", || async {
            let Some(mut c) = try_connect(&gw).await else { return false };
            server_ids(&mut c, 6).await == BTreeSet::from([2, 3])
        })
        .await;
    });
}
