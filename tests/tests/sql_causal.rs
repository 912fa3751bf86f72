//! Read-your-writes through the gateway: a write then a read on the same
//! connection always sees the write, while a replica's SQL thread is
//! stopped and started under the load (replication delay injected), and,
//! with the replicas holding every event back, after each kind of statement
//! the host cannot prove read-only and in 8-bit connection character sets.

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

// ---------------------------------------------------------------------
// Statements the host cannot prove read-only count as writes.
// ---------------------------------------------------------------------

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A cluster whose replicas receive every event but hold it 600 s before
/// applying it (they stay up: lag is measured from the event, and
/// `max_lag_s` allows it), and a gateway in gtid mode in front. Whatever a
/// connection writes is on the primary only for the whole test, so a
/// read that sees it ran on the primary.
fn delayed_cluster(setup: &str) -> (Cluster, SqlGateway) {
    let cluster = Cluster::start(2);
    // Stored functions that write are created on the primary and applied
    // by the replicas' SQL threads.
    for m in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
        m.sql("SET GLOBAL log_bin_trust_function_creators = 1");
    }
    if !setup.is_empty() {
        cluster.primary.sql(setup);
    }
    cluster.wait_replicated();
    for r in &cluster.replicas {
        r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 600; START SLAVE;");
    }
    let gw = SqlGateway::start(&cluster, Some("rw_split"), "max_lag_s = 1200\ncausal_timeout_ms = 50\n");
    (cluster, gw)
}

/// A fresh connection whose reads go to the replicas: it has written
/// nothing yet, so a plain read lands on a replica (server id 2 or 3).
async fn reader_on_replicas(gw: &SqlGateway) -> Conn {
    let mut c = Conn::new(Opts::from_url(&gw.url(APP_USER, APP_PASSWORD, Some(DB))).unwrap()).await.unwrap();
    let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert!(id == 2 || id == 3, "a read before any write ran on server {id}, not a replica");
    c
}

/// `read` right after the statements of one case: `Ok` when it saw `want`.
async fn read_back(c: &mut Conn, read: &str, want: i64) -> Result<(), String> {
    match c.query_first::<Option<i64>, _>(read).await {
        Ok(Some(Some(got))) if got == want => Ok(()),
        Ok(got) => Err(format!("`{read}` gave {got:?}, not {want}: a stale replica answered")),
        Err(e) => Err(format!("`{read}` failed: {e}")),
    }
}

const ROUTINES: &str = "DELIMITER //
    CREATE PROCEDURE shop.p_ins(x BIGINT) INSERT INTO shop.items (v) VALUES (x)//
    CREATE PROCEDURE shop.p_ins_then_fail(x BIGINT) BEGIN INSERT INTO shop.items (v) VALUES (x); SELECT * FROM shop.no_such_table; END//
    CREATE FUNCTION shop.f_ins(x BIGINT) RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO shop.items (v) VALUES (x); RETURN 1; END//
    CREATE SEQUENCE shop.s1 NOCACHE//
    CREATE SEQUENCE shop.s2 NOCACHE//
    DELIMITER ;";

/// One member of the class: what the client sends, then the read that must
/// see it. Steps are COM_QUERY texts unless marked.
enum Step {
    Query(&'static str),
    /// A COM_QUERY that is not UTF-8 (in the connection's character set).
    Bytes(&'static [u8]),
    /// A statement that fails after it wrote (the error is expected).
    Failing(&'static str),
    /// Through the binary protocol (COM_STMT_PREPARE, COM_STMT_EXECUTE).
    Exec(&'static str, i64),
    ChangeUser,
    Reset,
}

async fn run_step(c: &mut Conn, step: &Step) -> Result<(), String> {
    match step {
        Step::Query(q) => c.query_drop(*q).await.map_err(|e| format!("`{q}`: {e}")),
        Step::Bytes(q) => c.query_drop(*q).await.map_err(|e| format!("`{}`: {e}", String::from_utf8_lossy(q))),
        Step::Failing(q) => match c.query_drop(*q).await {
            Err(_) => Ok(()),
            Ok(()) => Err(format!("`{q}` was expected to fail")),
        },
        Step::Exec(q, x) => c.exec_drop(*q, (*x,)).await.map_err(|e| format!("prepared `{q}`: {e}")),
        Step::ChangeUser => c.change_user(mysql_async::ChangeUserOpts::default()).await.map_err(|e| format!("COM_CHANGE_USER: {e}")),
        Step::Reset => c.reset().await.map(drop).map_err(|e| format!("COM_RESET_CONNECTION: {e}")),
    }
}

#[test]
fn statements_not_proven_read_only_count_as_writes_for_causal_reads() {
    use Step::*;
    let count = |v: i64| (format!("SELECT COUNT(*) FROM items WHERE v = {v}"), 1);
    let cases: Vec<(&str, Vec<Step>, (String, i64))> = vec![
        ("EXECUTE IMMEDIATE of a CREATE VIEW", vec![Query("EXECUTE IMMEDIATE SFORMAT('CREATE VIEW v_dyn AS SELECT {} AS a', 7)")], ("SELECT a FROM v_dyn".into(), 7)),
        ("PREPARE/EXECUTE of a text", vec![Query("PREPARE s FROM 'INSERT INTO items (v) VALUES (201)'"), Query("EXECUTE s")], count(201)),
        ("PREPARE/EXECUTE of a variable", vec![Query("SET @q = 'INSERT INTO items (v) VALUES (202)'"), Query("PREPARE s FROM @q"), Query("EXECUTE s")], count(202)),
        ("CALL of a procedure that inserts", vec![Query("CALL p_ins(203)")], count(203)),
        ("CALL that inserts, then fails", vec![Failing("CALL p_ins_then_fail(204)")], count(204)),
        ("a stored function in a SELECT", vec![Query("SELECT f_ins(205)")], count(205)),
        ("a stored function in a prepared SELECT", vec![Exec("SELECT f_ins(?)", 206)], count(206)),
        ("an executable comment", vec![Query("/*!100000 INSERT INTO items (v) VALUES (207) */")], count(207)),
        ("a MariaDB executable comment", vec![Query("/*M!100000 INSERT INTO items (v) VALUES (208) */")], count(208)),
        ("a MariaDB executable comment that makes a SELECT a CREATE TABLE", vec![Query("/*M!100000 CREATE TABLE t_exec AS */ SELECT 216 AS v")], ("SELECT v FROM t_exec".into(), 216)),
        // In sjis 0x95 0x5C is one character; read as UTF-8 its second byte
        // is a backslash that hides the call behind an open quote.
        ("a stored function after an sjis character", vec![Query("SET NAMES sjis"), Bytes(b"SELECT '\x95\x5c', f_ins(217) -- '")], count(217)),
        ("a multi-statement that fails after its write", vec![Failing("INSERT INTO items (v) VALUES (209); SELECT * FROM no_such_table")], count(209)),
        ("DO of a stored function", vec![Query("DO f_ins(210)")], count(210)),
        ("text the parser does not know (RETURNING)", vec![Query("INSERT INTO items (v) VALUES (211) RETURNING id")], count(211)),
        ("a write, then COM_CHANGE_USER", vec![Query("INSERT INTO items (v) VALUES (212)"), ChangeUser], count(212)),
        ("a write with warnings, then COM_RESET_CONNECTION", vec![Query("INSERT IGNORE INTO items (id, v) VALUES (50213, 213), (50213, 213)"), Reset], count(213)),
        ("a prepared INSERT", vec![Exec("INSERT INTO items (v) VALUES (?)", 214)], count(214)),
        ("SET of a variable from a stored function", vec![Query("SET @r = f_ins(215)")], count(215)),
        ("NEXT VALUE FOR a sequence", vec![Query("SELECT NEXT VALUE FOR s1")], ("SELECT next_not_cached_value FROM s1".into(), 2)),
        ("PREVIOUS VALUE FOR after NEXT VALUE FOR", vec![Query("SELECT NEXT VALUE FOR s2")], ("SELECT PREVIOUS VALUE FOR s2".into(), 1)),
    ];
    let (cluster, gw) = delayed_cluster(ROUTINES);
    let mut failures: Vec<String> = block_on(async {
        let mut failures = Vec::new();
        for (name, steps, (read, want)) in &cases {
            let mut c = reader_on_replicas(&gw).await;
            let mut outcome = Ok(());
            for step in steps {
                outcome = outcome.and(run_step(&mut c, step).await);
            }
            if let Err(e) = outcome.and(read_back(&mut c, read, *want).await) {
                failures.push(format!("{name}: {e}"));
            }
        }
        failures
    });
    // The replicas apply nothing during the test: a sequence they have
    // advanced was advanced by a statement sent to them.
    for (i, r) in cluster.replicas.iter().enumerate() {
        for s in ["s1", "s2"] {
            let next = r.sql(&format!("SELECT next_not_cached_value FROM shop.{s}"));
            if next != "1" {
                failures.push(format!("replica {i} advanced sequence {s} itself (next value {next})"));
            }
        }
    }
    assert!(failures.is_empty(), "reads that missed the connection's own write:\n{}", failures.join("\n"));
}

/// `SET NAMES` (and the like) of an 8-bit character set, then DDL and DML
/// whose text has a byte of that set that is not valid UTF-8, then a read
/// of the new table: like MariaDB's ctype tests.
#[test]
fn eight_bit_connection_charsets_keep_reads_causal() {
    let cases: [(&str, &str, u8); 4] = [
        ("SET NAMES hebrew", "hebrew", 0xE0),
        ("SET NAMES latin1", "latin1", 0xE9),
        ("SET character_set_client = cp1251", "cp1251", 0xC0),
        ("SET NAMES latin1 COLLATE latin1_german2_ci", "latin1", 0xFC),
    ];
    let (_cluster, gw) = delayed_cluster("");
    let failures: Vec<String> = block_on(async {
        let mut failures = Vec::new();
        for (i, (set, charset, byte)) in cases.iter().enumerate() {
            let mut c = reader_on_replicas(&gw).await;
            let t = format!("t_cs{i}");
            let texts: Vec<Vec<u8>> = vec![
                // A warning (unknown table) defers the GTID read, as in mysql-test.
                format!("DROP TABLE IF EXISTS {t}").into_bytes(),
                set.as_bytes().to_vec(),
                [format!("CREATE TABLE {t} (a VARCHAR(10)) DEFAULT CHARSET={charset} COMMENT '").as_bytes(), &[*byte], b"'"].concat(),
                [format!("INSERT INTO {t} VALUES ('").as_bytes(), &[*byte, b'x'], b"') /* ", &[*byte], b" */"].concat(),
                format!("ALTER TABLE {t} ADD b INT").into_bytes(),
            ];
            let mut outcome = Ok(());
            for text in &texts {
                if let Err(e) = c.query_drop(text.as_slice()).await {
                    outcome = Err(format!("`{}`: {e}", String::from_utf8_lossy(text)));
                    break;
                }
            }
            let read = [format!("SELECT COUNT(*) FROM {t} WHERE a = '").as_bytes(), &[*byte, b'x'], b"'"].concat();
            let read = match outcome {
                Ok(()) => c.query_first::<i64, _>(read.as_slice()).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match read {
                Ok(Some(1)) => {}
                other => failures.push(format!("after `{set}`: the read of {t} gave {other:?}")),
            }
        }
        failures
    });
    assert!(failures.is_empty(), "reads that missed the connection's own DDL:\n{}", failures.join("\n"));
}

/// The same, with the character set chosen at login (the handshake's
/// collation) by the `mariadb` CLI, which sends each statement of `-e` on
/// its own.
#[test]
fn a_login_charset_that_is_not_utf8_keeps_reads_causal() {
    use std::os::unix::ffi::OsStringExt;
    let (_cluster, gw) = delayed_cluster("");
    for (charset, byte) in [("hebrew", 0xE0u8), ("latin1", 0xE9)] {
        let t = format!("t_login_{charset}");
        let script = [
            format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (a VARCHAR(10)) DEFAULT CHARSET={charset}; INSERT INTO {t} VALUES ('").as_bytes(),
            &[byte],
            format!("'); ALTER TABLE {t} ADD b INT; SELECT COUNT(*) FROM {t} WHERE a = '").as_bytes(),
            &[byte],
            b"';",
        ]
        .concat();
        let out = std::process::Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "-P", &gw.sql.port().to_string(), "-u", APP_USER, &format!("-p{APP_PASSWORD}"), "-D", DB])
            .arg(format!("--default-character-set={charset}"))
            .args(["--protocol=TCP", "-N", "-B", "-e"])
            .arg(std::ffi::OsString::from_vec(script))
            .output()
            .expect("the mariadb CLI (apt-get install -y mariadb-client)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim() == "1", "login charset {charset}: {text}");
    }
}

/// A statement prepared in an 8-bit character set is prepared on another
/// backend (the primary, when a write sends the next execute there) with
/// the bytes the client sent, not their UTF-8 reading.
#[test]
fn a_statement_prepared_in_an_8bit_charset_runs_as_sent_on_every_backend() {
    let (_cluster, gw) = delayed_cluster("CREATE TABLE shop.t_ps (a VARCHAR(10)) DEFAULT CHARSET=latin1; INSERT INTO shop.t_ps VALUES (X'636166E9');");
    block_on(async {
        let mut c = reader_on_replicas(&gw).await;
        c.query_drop("SET NAMES latin1").await.unwrap();
        let stmt = c.prep(&b"SELECT COUNT(*) FROM t_ps WHERE a = 'caf\xe9'"[..]).await.unwrap();
        assert_eq!(c.exec_first::<i64, _, _>(&stmt, ()).await.unwrap(), Some(1), "before any write, on the replicas");
        c.query_drop(&b"INSERT INTO t_ps VALUES ('caf\xe9')"[..]).await.unwrap();
        // The replicas hold the insert back: this execute runs on the primary.
        assert_eq!(c.exec_first::<i64, _, _>(&stmt, ()).await.unwrap(), Some(2), "after the write");
    });
}
