//! Every input the SQL listener takes is bounded: the login packet's size,
//! the time to log in, the number of clients, idle time, prepared
//! statements and replayed session state. Each limit answers with a clear
//! error (or a closed connection, counted) and leaves other clients served.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn connect(gw: &SqlGateway) -> Result<Conn, mysql_async::Error> {
    let opts = Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap();
    tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await.expect("a login hung")
}

/// A raw client: connects and reads the first packet (greeting or ERR).
fn raw(gw: &SqlGateway) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(gw.sql).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let first = read_packet(&mut s).expect("the gateway's first packet");
    (s, first)
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let len = head[0] as usize | (head[1] as usize) << 8 | (head[2] as usize) << 16;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

/// (code, message) of an ERR packet.
fn err_of(p: &[u8]) -> (u16, String) {
    assert_eq!(p.first(), Some(&0xff), "expected an ERR packet, got {p:?}");
    let code = u16::from_le_bytes([p[1], p[2]]);
    let msg = if p.get(3) == Some(&b'#') { &p[9..] } else { &p[3..] };
    (code, String::from_utf8_lossy(msg).into_owned())
}

/// Wait (bounded) until the peer closes the connection.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn before_login_the_packet_size_the_time_and_the_client_count_are_bounded() {
    let cluster = Cluster::start(1);
    let gw = SqlGateway::start(&cluster, None, "login_timeout_ms = 500\nmax_connections = 3\n");

    // A login packet that claims 1 MiB is refused on its header.
    let (mut s, greeting) = raw(&gw);
    assert_eq!(greeting[0], 10, "protocol 10 greeting");
    s.write_all(&[0x00, 0x00, 0x10, 1]).unwrap();
    s.write_all(&[b'x'; 1024]).unwrap();
    let (code, msg) = err_of(&read_packet(&mut s).unwrap());
    assert_eq!(code, 1043, "{msg}");
    assert!(msg.contains("login packet is larger than 65536 bytes"), "{msg}");
    drop(s);

    // A client that never logs in is disconnected after login_timeout_ms.
    let (mut silent, _) = raw(&gw);
    assert!(closed_within(&mut silent, 10), "a client that never logged in was kept");
    assert!(gw.metric("switchyard_sql_clients_total", &[("outcome", "login_timeout")]) >= 1.0);

    // Three clients fill max_connections = 3; a fourth gets ERROR 1040
    // before any handshake; once one leaves, a new client is served.
    run(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect(&gw).await.expect("a client under the cap"));
        }
        let (_s, first) = raw(&gw);
        let (code, msg) = err_of(&first);
        assert_eq!(code, 1040, "{msg}");
        assert!(msg.contains("Too many connections") && msg.contains("at most 3"), "{msg}");
        let refused = connect(&gw).await.expect_err("a fourth client");
        assert!(refused.to_string().contains("Too many connections"), "{refused}");
        // The clients already in are still served.
        let one: u32 = held[0].query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
        held.pop().unwrap().disconnect().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut again = loop {
            match connect(&gw).await {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < deadline, "no room after a client left: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let n: u32 = again.query_first("SELECT COUNT(*) FROM items").await.unwrap().unwrap();
        assert_eq!(n, 0);
    });
    assert!(gw.metric("switchyard_sql_clients_total", &[("outcome", "too_many")]) >= 2.0);
}

#[test]
fn after_login_idle_time_prepared_statements_and_session_state_are_bounded() {
    let cluster = Cluster::start(1);
    let gw = SqlGateway::start(&cluster, None, "idle_timeout_ms = 1500\nmax_prepared = 2\nmax_session_log = 4\n");
    run(async {
        let mut c = connect(&gw).await.unwrap();
        // Prepared statements: the third is refused as MariaDB refuses past
        // max_prepared_stmt_count; closing one makes room.
        let a = c.prep("SELECT ?").await.unwrap();
        let _b = c.prep("SELECT ? + 1").await.unwrap();
        let e = c.prep("SELECT ? + 2").await.expect_err("a third prepared statement");
        assert!(e.to_string().contains("max_prepared_stmt_count") && e.to_string().contains("sql.max_prepared"), "{e}");
        c.close(a).await.unwrap();
        let third = c.prep("SELECT ? + 2").await.expect("room after a close");
        let v: i64 = c.exec_first(&third, (40,)).await.unwrap().unwrap();
        assert_eq!(v, 42);

        // Session state: the same absolute SET repeated is logged once;
        // distinct changes past max_session_log (the login's schema, autocommit,
        // @a, @b) are refused before they run.
        for _ in 0..10 {
            c.query_drop("SET autocommit = 1").await.unwrap();
        }
        c.query_drop("SET @a = 1").await.unwrap();
        c.query_drop("SET @b = 2").await.unwrap();
        let e = c.query_drop("SET @c = 3").await.expect_err("a fourth session change");
        assert!(e.to_string().contains("sql.max_session_log = 4"), "{e}");
        let c_var: Option<i64> = c.query_first("SELECT @c").await.unwrap().unwrap();
        assert_eq!(c_var, None, "the refused SET must not have run");
        // Reads still spread with the logged state replayed.
        for _ in 0..4 {
            let (a, b): (i64, i64) = c.query_first("SELECT @a, @b FROM (SELECT COUNT(*) FROM items) t").await.unwrap().unwrap();
            assert_eq!((a, b), (1, 2));
        }
        // A reset empties the log.
        c.reset().await.unwrap();
        c.query_drop("SET @c = 3").await.expect("room after COM_RESET_CONNECTION");

        // A client idle past idle_timeout_ms is disconnected; others are not.
        let mut busy = connect(&gw).await.unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(3000) {
            let _: Option<u32> = busy.query_first("SELECT 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let gone = tokio::time::timeout(Duration::from_secs(10), c.query_drop("SELECT 1")).await.expect("a query on an idle-closed connection hung");
        assert!(gone.is_err(), "a client idle past idle_timeout_ms was kept");
        let _: Option<u32> = busy.query_first("SELECT 1").await.unwrap();
    });
    assert!(gw.metric("switchyard_sql_clients_total", &[("outcome", "idle_timeout")]) >= 1.0);
}

#[test]
fn a_backend_silent_past_read_timeout_ms_fails_the_statement_not_the_session() {
    let cluster = Cluster::start(1);
    let gw = SqlGateway::start(&cluster, None, "read_timeout_ms = 1000\n");
    run(async {
        let mut c = connect(&gw).await.unwrap();
        let mut other = connect(&gw).await.unwrap();
        // The backend answers after 5 s; the gateway stops waiting after 1 s.
        let e = c.query_drop("SELECT SLEEP(5)").await.expect_err("a statement whose backend is silent for 5 s");
        let text = e.to_string();
        assert!(text.contains("1158") && text.contains("no answer within read_timeout_ms (1000 ms)"), "{text}");
        // The client's session goes on, on a fresh backend connection.
        let v: Option<i64> = c.query_first("SELECT 41 + 1").await.unwrap();
        assert_eq!(v, Some(42));
        let v: Option<i64> = other.query_first("SELECT 1").await.unwrap();
        assert_eq!(v, Some(1));
    });
}

#[test]
fn statements_that_differ_in_literals_are_parsed_once() {
    let cluster = Cluster::start(1);
    let gw = SqlGateway::start(&cluster, None, "");
    let hits = || gw.metric("switchyard_sql_classify_total", &[("result", "hit")]);
    let before = hits();
    run(async {
        let mut c = connect(&gw).await.unwrap();
        for i in 0..20 {
            let n: Option<i64> = c.query_first(format!("SELECT v FROM items WHERE id = {i} AND note <> 'n{i}'")).await.unwrap();
            assert_eq!(n, None);
        }
        // A write of a shape seen as a read is still a write: shapes differ.
        c.query_drop("INSERT INTO items (v, note) VALUES (1, 'a')").await.unwrap();
        c.query_drop("INSERT INTO items (v, note) VALUES (2, 'b')").await.unwrap();
        let n: i64 = c.query_first("SELECT COUNT(*) FROM items").await.unwrap().unwrap();
        assert_eq!(n, 2);
    });
    assert!(hits() - before >= 20.0, "19 reads and 1 insert of seen shapes should hit: {}", hits() - before);
    assert_eq!(cluster.primary.sql(&format!("SELECT COUNT(*) FROM {DB}.items")), "2", "the inserts ran on the primary");
}
