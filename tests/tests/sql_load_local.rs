//! `LOAD DATA LOCAL INFILE` through the SQL listener, from the `mariadb`
//! CLI (over TLS) and from PyMySQL, two clients nobody here wrote: the
//! server's file request reaches the client, the file reaches the
//! primary, and a client that did not allow local files gets the
//! server's own refusal.

use std::process::Command;
use switchyard_tests::free_port;
use switchyard_tests::mariadb::{cli, Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};
use switchyard_tests::pki::Pki;

fn csv(rows: usize) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let text: String = (1..=rows).map(|i| format!("{i},item-{i:06},{}\n", "x".repeat(40))).collect();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn load_data_local_infile_relays_the_file_to_the_primary() {
    let cluster = Cluster::start(1);
    let pki = Pki::new("ca-load");
    let (cert, key) = pki.leaf("sql", "localhost", &["localhost", "127.0.0.1"], false);
    let extra = format!(
        "tls = true\n\n[server.tls]\nlisten = \"127.0.0.1:{}\"\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n",
        free_port()
    );
    let gw = SqlGateway::start(&cluster, None, &extra);
    cluster.primary.sql(&format!("CREATE TABLE {DB}.loaded (id INT PRIMARY KEY, name VARCHAR(32), pad VARCHAR(64))"));

    // The mariadb CLI, over TLS: 5,000 rows (about 300 KB, many packets).
    let file = csv(5000);
    let ca = format!("--ssl-ca={}", pki.ca_file().display());
    let load = format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE {DB}.loaded FIELDS TERMINATED BY ','; SELECT ROW_COUNT()", file.path().display());
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--ssl", &ca, "--ssl-verify-server-cert", "--local-infile=1", "-e", &load]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "5000", "{out}");
    assert_eq!(cluster.primary.sql(&format!("SELECT COUNT(*), MAX(name) FROM {DB}.loaded")), "5000\titem-005000");
    // Again, in cleartext: with LOCAL the server skips duplicate keys (as
    // IGNORE), and the session goes on after the file.
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--local-infile=1", "-e", &format!("{load}; SELECT COUNT(*) FROM {DB}.loaded FOR UPDATE")]);
    assert!(ok, "{out}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "5000"], "no row loaded twice: {out}");

    // ROW_COUNT() after a plain write is the write's too (the gateway asks
    // the write's GTID only when a read needs it, not with a statement of
    // its own that would reset it).
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["-e", &format!("DELETE FROM {DB}.loaded WHERE id <= 3; SELECT ROW_COUNT()")]);
    assert!(ok && out.trim() == "3", "{out}");

    // A client that did not allow local files gets the server's refusal.
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--local-infile=0", "-e", &load]);
    assert!(!ok && (out.contains("1148") || out.contains("4166") || out.to_lowercase().contains("not allowed")), "{out}");

    // PyMySQL with local_infile on, 20,000 rows into a second table.
    let py = Command::new("python3").args(["-c", "import pymysql"]).status();
    assert!(py.is_ok_and(|s| s.success()), "PyMySQL is not installed: python3 -m pip install pymysql (bash scripts/test.sh installs it)");
    cluster.primary.sql(&format!("CREATE TABLE {DB}.more (id INT PRIMARY KEY, name VARCHAR(32), pad VARCHAR(64))"));
    let big = csv(20_000);
    let script = format!(
        "import pymysql\nc = pymysql.connect(host='{}', port={}, user='{APP_USER}', password='{APP_PASSWORD}', database='{DB}', local_infile=True)\n\
         cur = c.cursor()\nn = cur.execute(\"LOAD DATA LOCAL INFILE '{}' INTO TABLE more FIELDS TERMINATED BY ','\")\nc.commit()\n\
         cur.execute('SELECT COUNT(*) FROM more')\nprint(n, cur.fetchone()[0])\n",
        gw.sql.ip(),
        gw.sql.port(),
        big.path().display()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let counts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(counts.first(), Some(&"20000"), "{text}");
    assert_eq!(cluster.primary.sql(&format!("SELECT COUNT(*) FROM {DB}.more")), "20000");
}
