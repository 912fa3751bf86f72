//! The SQL listener against a real MariaDB primary and 2 GTID replicas:
//! where each kind of statement lands (by `@@server_id`), real clients
//! (mysql_async and the `mariadb` CLI), bad logins and bad packets.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;
use switchyard_tests::mariadb::{cli, Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

const PRIMARY: u32 = 1;
const REPLICAS: [u32; 2] = [2, 3];

struct Setup {
    cluster: Cluster,
    gw: SqlGateway,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let cluster = Cluster::start(2);
        let gw = SqlGateway::start(&cluster, Some("rw_split"), "");
        Setup { cluster, gw }
    })
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn connect(db: Option<&str>) -> Conn {
    let url = setup().gw.url(APP_USER, APP_PASSWORD, db);
    Conn::new(Opts::from_url(&url).unwrap()).await.unwrap_or_else(|e| panic!("login through the gateway failed: {e}"))
}

async fn server_id(c: &mut Conn) -> u32 {
    c.query_first("SELECT @@server_id").await.unwrap().unwrap()
}

#[test]
fn reads_go_to_replicas_and_writes_to_the_primary() {
    run(async {
        let mut c = connect(Some(DB)).await;
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(server_id(&mut c).await);
        }
        assert_eq!(seen, REPLICAS.into_iter().collect(), "reads spread over both replicas");
        c.query_drop("INSERT INTO items (v, note) VALUES (7, 'placement')").await.unwrap();
        let id = c.last_insert_id().unwrap();
        let on_primary = setup().cluster.primary.sql(&format!("SELECT v FROM {DB}.items WHERE id = {id}"));
        assert_eq!(on_primary, "7");
    });
}

#[test]
fn a_transaction_stays_on_one_backend() {
    run(async {
        let mut c = connect(Some(DB)).await;
        c.query_drop("BEGIN").await.unwrap();
        assert_eq!(server_id(&mut c).await, PRIMARY, "a read inside a transaction stays on the transaction's backend");
        c.query_drop("INSERT INTO items (v) VALUES (1)").await.unwrap();
        assert_eq!(server_id(&mut c).await, PRIMARY);
        c.query_drop("COMMIT").await.unwrap();
        assert!(REPLICAS.contains(&server_id(&mut c).await), "after COMMIT reads go back to replicas");

        // A transaction opened by a read-only START TRANSACTION and one
        // opened implicitly with autocommit off behave the same.
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        let id: u32 = tx.query_first("SELECT @@server_id").await.unwrap().unwrap();
        assert_eq!(id, PRIMARY);
        tx.rollback().await.unwrap();
        c.query_drop("SET autocommit = 0").await.unwrap();
        assert_eq!(server_id(&mut c).await, PRIMARY, "autocommit off: every statement is in a transaction");
        c.query_drop("ROLLBACK").await.unwrap();
    });
}

#[test]
fn locking_reads_go_to_the_primary() {
    run(async {
        let mut c = connect(Some(DB)).await;
        c.query_drop("INSERT INTO items (v) VALUES (3)").await.unwrap();
        for sql in ["SELECT @@server_id FROM items LIMIT 1 FOR UPDATE", "SELECT @@server_id FROM items LIMIT 1 LOCK IN SHARE MODE"] {
            let id: u32 = c.query_first(sql).await.unwrap().unwrap();
            assert_eq!(id, PRIMARY, "{sql}");
        }
    });
}

#[test]
fn last_insert_id_follows_the_write_and_found_rows_the_previous_statement() {
    run(async {
        let mut c = connect(Some(DB)).await;
        c.query_drop("INSERT INTO items (v) VALUES (11)").await.unwrap();
        let want = c.last_insert_id().unwrap();
        let (got, sid): (u64, u32) = c.query_first("SELECT LAST_INSERT_ID(), @@server_id").await.unwrap().unwrap();
        assert_eq!((got, sid), (want, PRIMARY));
        // A read on a replica in between does not move LAST_INSERT_ID():
        // the id belongs to the connection that ran the INSERT.
        assert!(REPLICAS.contains(&server_id(&mut c).await));
        let (got, sid): (u64, u32) = c.query_first("SELECT LAST_INSERT_ID(), @@server_id").await.unwrap().unwrap();
        assert_eq!((got, sid), (want, PRIMARY), "LAST_INSERT_ID() after an INSERT and a replica read");
        for _ in 0..4 {
            let first = server_id(&mut c).await;
            let (_, sid): (u64, u32) = c.query_first("SELECT FOUND_ROWS(), @@server_id").await.unwrap().unwrap();
            assert_eq!(sid, first, "FOUND_ROWS() runs where the previous statement ran");
        }
    });
}

#[test]
fn temporary_tables_and_named_locks_pin_to_the_primary() {
    run(async {
        let mut c = connect(Some(DB)).await;
        c.query_drop("CREATE TEMPORARY TABLE scratch (a INT)").await.unwrap();
        c.query_drop("INSERT INTO scratch VALUES (1), (2)").await.unwrap();
        let (n, sid): (u64, u32) = c.query_first("SELECT COUNT(*), @@server_id FROM scratch").await.unwrap().unwrap();
        assert_eq!((n, sid), (2, PRIMARY));
        assert_eq!(server_id(&mut c).await, PRIMARY, "the session stays pinned");

        let mut l = connect(Some(DB)).await;
        let (got, sid): (i64, u32) = l.query_first("SELECT GET_LOCK('switchyard-test', 1), @@server_id").await.unwrap().unwrap();
        assert_eq!((got, sid), (1, PRIMARY));
        assert_eq!(server_id(&mut l).await, PRIMARY);
        let released: i64 = l.query_first("SELECT RELEASE_LOCK('switchyard-test')").await.unwrap().unwrap();
        assert_eq!(released, 1, "RELEASE_LOCK runs where GET_LOCK ran");
    });
}

#[test]
fn set_and_use_are_replayed_on_every_backend() {
    run(async {
        let mut c = connect(Some(DB)).await;
        c.query_drop("SET @marker = 42").await.unwrap();
        c.query_drop("USE other").await.unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..8 {
            let (marker, db, sid): (i64, String, u32) = c.query_first("SELECT @marker, DATABASE(), @@server_id").await.unwrap().unwrap();
            assert_eq!((marker, db.as_str()), (42, "other"), "on server {sid}");
            seen.insert(sid);
        }
        assert_eq!(seen, REPLICAS.into_iter().collect());
        // COM_INIT_DB (what drivers send to change schema) too.
        let mut raw = raw_login(setup().gw.sql);
        write_packet(&mut raw, 0, b"\x02other");
        assert_eq!(read_packet(&mut raw)[0], 0, "COM_INIT_DB answered OK");
        for _ in 0..4 {
            assert_eq!(raw_query_row(&mut raw, "SELECT DATABASE()"), b"\x05other");
        }
    });
}

/// A one-column, one-row query over a raw connection: the row payload.
fn raw_query_row(s: &mut TcpStream, sql: &str) -> Vec<u8> {
    write_packet(s, 0, &[&[0x03u8][..], sql.as_bytes()].concat());
    assert_eq!(read_packet(s), vec![1], "one column");
    read_packet(s); // column definition (CLIENT_DEPRECATE_EOF: no EOF)
    let row = read_packet(s);
    assert_eq!(read_packet(s)[0], 0xFE, "terminator");
    row
}

#[test]
fn prepared_statements_are_mapped_per_backend() {
    run(async {
        let mut c = connect(Some(DB)).await;
        let mut seen = BTreeSet::new();
        for i in 0..10u32 {
            let got: u32 = c.exec_first("SELECT @@server_id + ?", (i,)).await.unwrap().unwrap();
            seen.insert(got - i);
        }
        assert_eq!(seen, REPLICAS.into_iter().collect(), "one prepared read runs on both replicas");
        c.exec_drop("INSERT INTO items (v, note) VALUES (?, ?)", (99, "prepared")).await.unwrap();
        let id = c.last_insert_id().unwrap();
        assert_eq!(setup().cluster.primary.sql(&format!("SELECT note FROM {DB}.items WHERE id = {id}")), "prepared");
        // Inside a transaction the same prepared read runs on the primary.
        c.query_drop("BEGIN").await.unwrap();
        let got: u32 = c.exec_first("SELECT @@server_id + ?", (0u32,)).await.unwrap().unwrap();
        assert_eq!(got, PRIMARY);
        c.query_drop("COMMIT").await.unwrap();
        // Read your write through a prepared statement.
        let v: Option<i64> = c.exec_first("SELECT v FROM items WHERE id = ?", (id,)).await.unwrap();
        assert_eq!(v, Some(99));
    });
}

#[test]
fn multi_statements_go_to_the_primary() {
    run(async {
        let mut c = connect(Some(DB)).await;
        let mut result = c.query_iter("SELECT @@server_id; SELECT @@server_id + 100").await.unwrap();
        let first: Vec<u32> = result.collect().await.unwrap();
        let second: Vec<u32> = result.collect().await.unwrap();
        drop(result);
        assert_eq!((first, second), (vec![PRIMARY], vec![PRIMARY + 100]));
    });
}

#[test]
fn the_mariadb_cli_works_through_the_gateway() {
    let gw = &setup().gw;
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &[DB, "-e", "SELECT @@server_id"]);
    assert!(ok, "{out}");
    assert!(REPLICAS.iter().any(|r| out.trim() == r.to_string()), "CLI read landed on {out}");
    // The CLI splits statements itself: LAST_INSERT_ID() follows the INSERT.
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &[DB, "-e", "INSERT INTO items (v) VALUES (1); SELECT LAST_INSERT_ID() > 0, @@server_id"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("1\t{PRIMARY}"));
}

#[test]
fn wrong_password_and_unknown_user_are_refused() {
    let gw = &setup().gw;
    run(async {
        for (user, password) in [(APP_USER, "wrong"), ("nobody", APP_PASSWORD)] {
            let err = Conn::new(Opts::from_url(&gw.url(user, password, None)).unwrap()).await.err().expect("login must fail");
            match err {
                mysql_async::Error::Server(e) => {
                    assert_eq!(e.code, 1045, "{e:?}");
                    assert!(e.message.contains(&format!("Access denied for user '{user}'")), "{}", e.message);
                }
                other => panic!("expected a server error, got {other:?}"),
            }
        }
    });
    let (ok, out) = cli(gw.sql, APP_USER, "wrong", &["-e", "SELECT 1"]);
    assert!(!ok && out.contains("Access denied"), "{out}");
}

/// Log in with raw packets (mysql_common for the scramble).
fn raw_login(addr: std::net::SocketAddr) -> TcpStream {
    use mysql_common::constants::CapabilityFlags as C;
    use mysql_common::io::ParseBuf;
    use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
    use mysql_common::proto::MySerialize;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let greeting = read_packet(&mut s);
    let hs: HandshakePacket = ParseBuf(&greeting).parse(()).unwrap();
    let scramble = mysql_common::scramble::scramble_native(&hs.nonce(), APP_PASSWORD.as_bytes()).unwrap();
    let caps = C::CLIENT_PROTOCOL_41 | C::CLIENT_SECURE_CONNECTION | C::CLIENT_PLUGIN_AUTH | C::CLIENT_DEPRECATE_EOF | C::CLIENT_TRANSACTIONS;
    let resp = HandshakeResponse::new(Some(&scramble[..]), (10, 11, 0), Some(APP_USER.as_bytes()), Some(DB.as_bytes()), Some(AuthPlugin::MysqlNativePassword), caps, None, 1 << 24);
    let mut buf = Vec::new();
    resp.serialize(&mut buf);
    write_packet(&mut s, 1, &buf);
    let ok = read_packet(&mut s);
    assert_eq!(ok[0], 0, "raw login failed: {:?}", String::from_utf8_lossy(&ok));
    s
}

fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let n = payload.len();
    s.write_all(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]).unwrap();
    s.write_all(payload).unwrap();
}

fn read_packet(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut p = vec![0u8; h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16];
    s.read_exact(&mut p).unwrap();
    p
}

fn still_serves() {
    run(async {
        let mut c = connect(Some(DB)).await;
        assert!(REPLICAS.contains(&server_id(&mut c).await));
    });
}

#[test]
fn malformed_and_truncated_packets_get_clear_errors() {
    let gw = &setup().gw;
    // A handshake response too short to be one.
    let mut s = TcpStream::connect(gw.sql).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    read_packet(&mut s);
    write_packet(&mut s, 1, b"garbage");
    let err = read_packet(&mut s);
    assert_eq!(err[0], 0xFF);
    assert!(String::from_utf8_lossy(&err).contains("Bad handshake"), "{:?}", String::from_utf8_lossy(&err));

    // A truncated packet: the header promises more than arrives.
    let mut s = TcpStream::connect(gw.sql).unwrap();
    read_packet(&mut s);
    s.write_all(&[100, 0, 0, 1, 1, 2, 3]).unwrap();
    drop(s);

    // After login: an unknown command, an empty packet, a short execute,
    // an unknown statement id.
    let mut s = raw_login(gw.sql);
    for (payload, want) in [
        (&[0x7Fu8][..], "Unknown command 0x7f"),
        (&[][..], "empty command packet"),
        (&[0x17, 1][..], "without a statement id"),
        (&[0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0][..], "Unknown prepared statement handler (9)"),
    ] {
        write_packet(&mut s, 0, payload);
        let err = read_packet(&mut s);
        assert_eq!(err[0], 0xFF, "{payload:?}");
        let text = String::from_utf8_lossy(&err);
        assert!(text.contains(want), "{payload:?}: {text}");
    }
    // The connection still works after those errors.
    write_packet(&mut s, 0, b"\x03SELECT 1");
    let first = read_packet(&mut s);
    assert_eq!(first, vec![1], "a one-column result set");
    drop(s);
    still_serves();
}

#[test]
fn a_client_that_disconnects_mid_result_does_not_hurt_others() {
    let gw = &setup().gw;
    let mut s = raw_login(gw.sql);
    // A result far larger than the socket buffers.
    write_packet(&mut s, 0, b"\x03SELECT seq, REPEAT('x', 200) FROM seq_1_to_2000000");
    let mut buf = [0u8; 4096];
    s.read_exact(&mut buf).unwrap();
    drop(s);
    still_serves();
    // The gateway dropped its backend connection, which ends the query.
    switchyard_tests::eventually(30, "the abandoned query ends on the replicas", || {
        setup().cluster.replicas.iter().all(|r| !r.sql("SHOW FULL PROCESSLIST").contains("seq_1_to_2000000"))
    });
}

#[test]
fn metrics_count_statements_by_destination_and_class() {
    let gw = &setup().gw;
    run(async {
        let mut c = connect(Some(DB)).await;
        for _ in 0..4 {
            server_id(&mut c).await;
        }
        c.query_drop("INSERT INTO items (v) VALUES (1)").await.unwrap();
    });
    let reads: f64 = ["replica-0", "replica-1"].iter().map(|r| gw.metric("switchyard_sql_statements_total", &[("destination", r), ("class", "read")])).sum();
    assert!(reads >= 4.0, "{}", gw.metrics());
    assert!(gw.metric("switchyard_sql_statements_total", &[("destination", "primary"), ("class", "write")]) >= 1.0);
    assert!(gw.metric("switchyard_sql_backend_up", &[("backend", "replica-1")]) == 1.0, "{}", gw.metrics());
    assert!(gw.metrics().contains("switchyard_sql_replica_lag_seconds{replica=\"replica-0\"}"));
    assert!(gw.metrics().contains("switchyard_sql_pool_idle_connections"));
}

#[test]
fn the_router_hot_swaps_under_a_live_connection() {
    let cluster = &setup().cluster;
    let gw = SqlGateway::start(cluster, Some("rw_split"), "");
    let (k, v) = switchyard_tests::bearer();
    run(async {
        let mut c = Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap();
        assert!(REPLICAS.contains(&server_id(&mut c).await));
        let bytes = std::fs::read(switchyard_tests::plugin("primary_only")).unwrap();
        let r = switchyard_tests::request(gw.admin, "PUT", "/plugins/router", &[(k, v.as_str())], &bytes);
        assert_eq!(r.status, 200, "{}", r.body);
        for _ in 0..4 {
            assert_eq!(server_id(&mut c).await, PRIMARY, "the same connection now routes with primary-only");
        }
        let r = switchyard_tests::request(gw.admin, "POST", "/plugins/router/rollback", &[(k, v.as_str())], b"");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(REPLICAS.contains(&server_id(&mut c).await));
        // An lb plugin is refused as a router.
        let lb = std::fs::read(switchyard_tests::plugin("round_robin")).unwrap();
        let r = switchyard_tests::request(gw.admin, "PUT", "/plugins/router", &[(k, v.as_str())], &lb);
        assert_eq!(r.status, 400);
        assert!(r.body.contains("sql-router-policy"), "{}", r.body);
    });
}

/// A router canary splits by login user: this test's one user lands on
/// one side, and that side's outcome counts match where every statement
/// went (`primary_only` sends reads to the primary, `rw_split` to
/// replicas). At 1 % the user stays on the baseline, at 99 % it moves to
/// the canary (the split hashes the user name, the same on every node).
#[test]
fn a_router_canary_counts_each_versions_destinations() {
    let gw = SqlGateway::start(&setup().cluster, Some("rw_split"), "");
    let (k, v) = switchyard_tests::bearer();
    let bytes = std::fs::read(switchyard_tests::plugin("primary_only")).unwrap();
    let mut sides = Vec::new();
    for percent in [1, 99] {
        let r = switchyard_tests::request(gw.admin, "PUT", &format!("/plugins/router?canary={percent}"), &[(k, v.as_str())], &bytes);
        assert_eq!(r.status, 200, "{}", r.body);
        let ids: Vec<u32> = run(async {
            let mut c = Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap();
            let mut ids = Vec::new();
            for _ in 0..20 {
                ids.push(server_id(&mut c).await);
            }
            c.query_drop("INSERT INTO items (v, note) VALUES (8, 'router canary')").await.unwrap();
            ids
        });
        let state: serde_json::Value = serde_json::from_str(&switchyard_tests::get(gw.admin, "/plugins/router/canary", &[(k, v.as_str())]).body).unwrap();
        let count = |side: &str, kind: &str| state[side]["outcomes"][kind].as_u64().unwrap_or(0);
        let on_canary = ids.iter().all(|&id| id == PRIMARY);
        if on_canary {
            // Reads and the write on the primary.
            assert!(count("canary", "primary") >= 21, "{state}");
            assert_eq!((count("canary", "replica"), count("baseline", "primary"), count("baseline", "replica")), (0, 0, 0), "{state}");
        } else {
            assert!(ids.iter().all(|id| REPLICAS.contains(id)), "one login user never flips between versions: {ids:?}");
            assert!(count("baseline", "replica") >= 20 && count("baseline", "primary") >= 1, "{state}");
            assert_eq!((count("canary", "primary"), count("canary", "replica")), (0, 0), "{state}");
        }
        sides.push(on_canary);
        let r = switchyard_tests::request(gw.admin, "DELETE", "/plugins/router/canary", &[(k, v.as_str())], b"");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(sides, [false, true], "at 1 % the user is on the baseline, at 99 % on the canary");
}
