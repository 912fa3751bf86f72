//! No write ever reaches a replica, and no read is stale, whatever form
//! the statement takes. The client's user may write past `read_only` (as
//! production users often can), so only the gateway stands between a
//! misrouted write and a broken replica. Real MariaDB primary + 2 GTID
//! replicas; placement is checked by each replica's own GTID history.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const REPLICA_IDS: [u32; 2] = [2, 3];

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A cluster whose app user can write past `read_only`, with a stored
/// function and a procedure that write, and a sequence.
fn start(extra: &str) -> (Cluster, SqlGateway) {
    let cluster = Cluster::start(2);
    cluster.primary.sql(&format!(
        "GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%';
         CREATE SEQUENCE {DB}.seq;
         DELIMITER //
         CREATE FUNCTION {DB}.bump() RETURNS INT DETERMINISTIC MODIFIES SQL DATA BEGIN INSERT INTO {DB}.items (v, note) VALUES (1, 'bump'); RETURN 1; END//
         CREATE PROCEDURE {DB}.p() BEGIN INSERT INTO {DB}.items (v, note) VALUES (2, 'proc'); SET @cnt = 5; END//
         DELIMITER ;"
    ));
    cluster.wait_replicated();
    let gw = SqlGateway::start(&cluster, None, extra);
    (cluster, gw)
}

async fn connect(gw: &SqlGateway) -> Conn {
    Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap_or_else(|e| panic!("login through the gateway failed: {e}"))
}

/// GTIDs a replica wrote itself (its own server id in `gtid_binlog_state`).
fn own_gtids(cluster: &Cluster, i: usize) -> Vec<String> {
    let state = cluster.replicas[i].sql("SELECT @@gtid_binlog_state");
    state.split(',').map(str::trim).filter(|g| g.split('-').nth(1) == Some(&REPLICA_IDS[i].to_string())).map(String::from).collect()
}

#[test]
fn no_write_form_reaches_a_replica() {
    let (cluster, gw) = start("");
    run(async {
        let mut c = connect(&gw).await;
        let forms = [
            "SET STATEMENT max_statement_time=10 FOR INSERT INTO items (v, note) VALUES (1, 'set-statement')",
            "SET STATEMENT max_statement_time=10 FOR ALTER TABLE items ADD COLUMN extra1 INT",
            "SET STATEMENT max_statement_time=10 FOR CREATE INDEX iv ON items (v)",
            "INSERT INTO items (v, note) SELECT ROW_COUNT(), 'row-count'",
            "INSERT INTO items (v, note) VALUES (LAST_INSERT_ID(), 'last-insert-id')",
            "SET GLOBAL max_connect_errors = 777",
            "SELECT bump()",
            "DO bump()",
            "CALL p()",
            "SELECT NEXTVAL(seq)",
            "SELECT v INTO @x FROM items LIMIT 1",
            "SELECT 1; INSERT INTO items (v, note) VALUES (3, 'multi')",
            "/*!40101 INSERT INTO items (v, note) VALUES (4, 'executable-comment') */",
            "SELECT @y := bump()",
        ];
        for sql in forms {
            // A read first, so "the previous statement" ran on a replica.
            let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
            c.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // LOAD DATA may fail (no such file); it must fail on the primary.
        let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        let err = c.query_drop("LOAD DATA INFILE '/nonexistent/switchyard.csv' INTO TABLE items").await.unwrap_err().to_string();
        assert!(!err.contains("refused"), "LOAD DATA went to the primary: {err}");
        // Prepared forms.
        let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        c.exec_drop("SELECT bump()", ()).await.unwrap();
        c.exec_drop("INSERT INTO items (v, note) VALUES (?, 'prepared')", (5,)).await.unwrap();

        // User variables set where they are not replayed are read there.
        c.query_drop("CALL p()").await.unwrap();
        let cnt: Option<i64> = c.query_first("SELECT @cnt").await.unwrap();
        assert_eq!(cnt, Some(5), "@cnt set by CALL is read where the CALL ran");
        c.query_drop("SELECT @z := 42").await.unwrap();
        let z: Option<i64> = c.query_first("SELECT @z").await.unwrap();
        assert_eq!(z, Some(42), "@z set by := is read where it was set");
        drop(c);
    });

    cluster.wait_replicated();
    for i in 0..2 {
        let own = own_gtids(&cluster, i);
        assert!(own.is_empty(), "replica {} executed writes itself (GTIDs {own:?})", REPLICA_IDS[i]);
        let status = cluster.replicas[i].sql("SELECT COUNT(*) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SLAVE_RUNNING' AND VARIABLE_VALUE = 'ON'");
        assert_eq!(status, "1", "replica {} still replicates", REPLICA_IDS[i]);
        let mce = cluster.replicas[i].sql("SELECT @@global.max_connect_errors");
        assert_ne!(mce, "777", "SET GLOBAL ran on replica {} too", REPLICA_IDS[i]);
    }
    assert_eq!(cluster.primary.sql("SELECT @@global.max_connect_errors"), "777", "SET GLOBAL ran on the primary");
    let bumps = cluster.primary.sql(&format!("SELECT COUNT(*) FROM {DB}.items WHERE note = 'bump'"));
    assert_eq!(bumps, "4", "each call of the writing function ran once, on the primary");
    let rows = cluster.primary.sql(&format!("CHECKSUM TABLE {DB}.items"));
    for r in &cluster.replicas {
        assert_eq!(r.sql(&format!("CHECKSUM TABLE {DB}.items")), rows, "every replica holds the primary's rows");
    }
    let refused = gw.metric("switchyard_sql_replica_refusals_total", &[]);
    assert_eq!(refused, 0.0, "routing never needed the last-line guard");
}

/// A cluster whose replicas apply everything 2 s late: a read routed to
/// one before it has the client's last change is stale or fails.
fn start_lagging() -> (Cluster, SqlGateway) {
    let (cluster, gw) = start("");
    for r in &cluster.replicas {
        r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 2; START SLAVE;");
    }
    (cluster, gw)
}

#[test]
fn a_statement_prepared_after_ddl_sees_its_table() {
    let (_cluster, gw) = start_lagging();
    run(async {
        let mut c = connect(&gw).await;
        for i in 0..5 {
            c.query_drop(format!("CREATE TABLE fresh{i} (a INT)")).await.unwrap();
            let rows: Vec<i64> = c.exec(format!("SELECT COUNT(*) FROM fresh{i}"), ()).await.unwrap_or_else(|e| panic!("prepare after CREATE TABLE fresh{i}: {e}"));
            assert_eq!(rows, vec![0]);
        }
    });
}

#[test]
fn read_your_writes_holds_in_any_result_charset() {
    let (_cluster, gw) = start_lagging();
    run(async {
        let mut c = connect(&gw).await;
        // In the `filename` charset `0-1-20` reads `0@002d1@002d20`: the
        // gateway must still know the write's GTID.
        c.query_drop("SET character_set_results = filename").await.unwrap();
        for i in 0..5 {
            c.query_drop(format!("INSERT INTO items (v, note) VALUES ({i}, 'cs-{i}')")).await.unwrap();
            let n: Option<i64> = c.query_first(format!("SELECT COUNT(*) FROM items WHERE note = 'cs-{i}'")).await.unwrap();
            assert_eq!(n, Some(1), "read-your-writes with character_set_results = filename (round {i})");
        }
    });
}

/// The previous statement's diagnostics are read where it ran, and a text
/// result flagged `SERVER_STATUS_CURSOR_EXISTS` (a FOR loop in a compound
/// statement) is read to its end instead of hanging the client.
#[test]
fn diagnostics_follow_their_statement_and_for_loops_finish() {
    let (_cluster, gw) = start("");
    run(async {
        let mut c = connect(&gw).await;
        c.query_drop("INSERT INTO items (id, v, note) VALUES (424242, 1, 'dup')").await.unwrap();
        for round in 0..6 {
            // Spread earlier reads over the replicas first.
            let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
            c.query_drop("INSERT IGNORE INTO items (id, v, note) VALUES (424242, 2, 'dup')").await.unwrap();
            let warnings: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
            assert_eq!(warnings.len(), 1, "round {round}: SHOW WARNINGS after INSERT IGNORE of a duplicate: {warnings:?}");
            assert_eq!(warnings[0].1, 1062, "round {round}: {warnings:?}");
            let count: Option<u32> = c.query_first("SELECT @@warning_count").await.unwrap();
            assert_eq!(count, Some(1), "round {round}: @@warning_count");
        }
    });
    // The mariadb CLI (a C client) reads every result of the loop, then
    // the next statement's; a gateway that stopped at the flag would hang
    // it (bounded here by `timeout`) or answer out of step.
    let sql = "BEGIN NOT ATOMIC FOR rec IN (SELECT 1 AS v UNION SELECT 2 UNION SELECT 3) DO SELECT rec.v; END FOR; END// SELECT 'after'//";
    let run_cli = std::process::Command::new("timeout")
        .args(["20", "mariadb", "--no-defaults", "--protocol=TCP", "-N", "-B", "--delimiter=//"])
        .args(["-h", &gw.sql.ip().to_string(), "-P", &gw.sql.port().to_string(), "-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .args(["-e", sql])
        .output()
        .expect("run the mariadb CLI");
    let out = String::from_utf8_lossy(&run_cli.stdout).into_owned() + &String::from_utf8_lossy(&run_cli.stderr);
    assert!(run_cli.status.success(), "the CLI failed or hung (exit {:?}): {out}", run_cli.status.code());
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "2", "3", "after"], "every loop row, then the next statement");
    run(async {
        let mut c = connect(&gw).await;
        let one: Option<u32> = c.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1), "the connection works after the loop");
    });
}
