//! The SQL listener over TLS, with the `mariadb` CLI nobody here wrote:
//! `--ssl-verify-server-cert` against a test CA, `[sql] require_tls`
//! refusing a client that stays in cleartext, and reads and writes still
//! split across a real primary and replica under TLS. And TLS from the
//! gateway to a MariaDB primary that refuses insecure transport.

use std::net::SocketAddr;
use switchyard_tests::mariadb::{cli, Cluster, SqlGateway, APP_PASSWORD, APP_USER, DB};
use switchyard_tests::pki::Pki;
use switchyard_tests::free_port;

/// `[sql]` keys and the `[server.tls]` they use.
fn tls_extra(pki: &Pki, require: bool) -> String {
    let (cert, key) = pki.leaf("sql", "localhost", &["localhost", "127.0.0.1"], false);
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    format!("tls = true\nrequire_tls = {require}\n\n[server.tls]\nlisten = \"{https}\"\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n")
}

#[test]
fn mariadb_clients_switch_to_tls_and_require_tls_refuses_cleartext() {
    let cluster = Cluster::start(1);
    let pki = Pki::new("ca-sql");
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let gw = SqlGateway::start(&cluster, None, &tls_extra(&pki, true));
    let ssl = ["--ssl", &format!("--ssl-ca={ca}"), "--ssl-verify-server-cert"];

    // The CLI's own status line says the connection is encrypted.
    let mut args = ssl.to_vec();
    args.extend(["-e", "status"]);
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &args);
    assert!(ok, "{out}");
    let cipher = out.lines().find(|l| l.starts_with("SSL:")).unwrap_or("");
    assert!(cipher.contains("Cipher in use is TLS_"), "the client reports a TLS cipher: {out}");

    // Statements still split: a write on the primary, a read on the replica.
    let mut args = ssl.to_vec();
    let sql = format!("CREATE TABLE IF NOT EXISTS {DB}.tls_t (id INT PRIMARY KEY); REPLACE INTO {DB}.tls_t VALUES (7); SELECT @@server_id;");
    args.extend(["-e", &sql]);
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &args);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "2", "a plain SELECT after autocommit writes reads on the replica: {out}");

    // A client that does not switch is refused with the server's error.
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(!ok, "{out}");
    assert!(out.contains("3159") && out.contains("insecure transport"), "{out}");
    // A client that verifies the certificate against another CA stops.
    let other = Pki::new("ca-other-sql");
    let wrong = format!("--ssl-ca={}", other.ca_file().to_str().unwrap());
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--ssl", &wrong, "--ssl-verify-server-cert", "-e", "SELECT 1"]);
    assert!(!ok && out.to_lowercase().contains("ssl"), "{out}");
    let counted = gw.metrics().lines().filter(|l| l.starts_with("switchyard_sql_clients_total")).collect::<Vec<_>>().join("\n");
    assert_eq!(gw.metric("switchyard_sql_clients_total", &[("outcome", "tls_required")]) as u32, 1, "the cleartext client, counted: {counted}");
    assert_eq!(gw.metric("switchyard_sql_clients_total", &[("outcome", "tls_failed")]) as u32, 1, "the client that distrusted the certificate, counted");
}

/// PyMySQL, a driver nobody here wrote, over TLS with the CA verified.
#[test]
fn a_python_driver_connects_over_tls() {
    let ok = std::process::Command::new("python3").args(["-c", "import pymysql"]).status().is_ok_and(|s| s.success());
    assert!(ok, "PyMySQL is not installed: python3 -m pip install pymysql (bash scripts/test.sh installs it)");
    let cluster = Cluster::start(0);
    let pki = Pki::new("ca-sql-python");
    let gw = SqlGateway::start(&cluster, None, &tls_extra(&pki, true));
    let script = format!(
        "import pymysql\nc = pymysql.connect(host='127.0.0.1', port={}, user='{APP_USER}', password='{APP_PASSWORD}', ssl_ca='{}', ssl_verify_cert=True, ssl_verify_identity=True)\n\
         cur = c.cursor()\ncur.execute('SELECT 6 * 7')\nprint(cur.fetchone()[0], c._sock.version())\n",
        gw.sql.port(),
        pki.ca_file().display()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["42", "TLSv1.3"], "{text}");
}

#[test]
fn tls_is_optional_unless_required() {
    let cluster = Cluster::start(0);
    let pki = Pki::new("ca-sql-optional");
    let ca = pki.ca_file();
    let gw = SqlGateway::start(&cluster, None, &tls_extra(&pki, false));
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--skip-ssl", "-e", "status"]);
    assert!(ok && out.lines().any(|l| l.starts_with("SSL:") && l.contains("Not in use")), "{out}");
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["--ssl", &format!("--ssl-ca={}", ca.to_str().unwrap()), "--ssl-verify-server-cert", "-e", "SELECT 40 + 2"]);
    assert!(ok && out.trim() == "42", "{out}");
}

#[test]
fn the_gateway_speaks_tls_to_a_backend_that_requires_it() {
    let mut cluster = Cluster::start(0);
    let pki = Pki::new("ca-sql-backend");
    let (cert, key) = pki.leaf("primary", "primary", &["127.0.0.1"], false);
    cluster.primary.restart_with_tls(&cert, &key);
    cluster.primary.sql("SET GLOBAL require_secure_transport = ON");
    let ca = pki.ca_file();

    let gw = SqlGateway::start(&cluster, None, &format!("\n[sql.backend_tls]\nca_file = {ca:?}\n"));
    let (ok, out) = cli(gw.sql, APP_USER, APP_PASSWORD, &["-e", "SHOW SESSION STATUS LIKE 'Ssl_version'"]);
    assert!(ok, "{out}");
    assert!(out.contains("TLSv1.3"), "the backend session is encrypted: {out}");

    // Without [sql.backend_tls] the primary refuses the gateway's logins
    // (it answers "access denied" to a cleartext one). The client is told
    // the primary is unreachable (1429) once a health check has failed on
    // it, or gets the primary's own refusal (1045) when its login is the
    // first to reach the primary.
    let plain = SqlGateway::start(&cluster, None, "");
    let (ok, out) = cli(plain.sql, APP_USER, APP_PASSWORD, &["-e", "SELECT 1"]);
    let unreachable = out.contains("ERROR 1429") && out.contains("primary");
    let refused = out.contains("ERROR 1045") && out.contains("backend refused the login");
    assert!(!ok && (unreachable || refused), "{out}\n{}", plain.proc.log_text());

    // A certificate from a CA the gateway does not trust is refused.
    let other = Pki::new("ca-sql-untrusted");
    let wrong = SqlGateway::start(&cluster, None, &format!("\n[sql.backend_tls]\nca_file = {:?}\n", other.ca_file()));
    let (ok, out) = cli(wrong.sql, APP_USER, APP_PASSWORD, &["-e", "SELECT 1"]);
    // Refused either way: "the primary is unreachable" (1429) once a health
    // check has failed on the certificate, or that failure itself (1105)
    // when the client's login is the first to reach the primary.
    let said_why = out.contains("ERROR 1105") && out.contains("TLS to the backend failed") && out.contains("certificate");
    assert!(!ok && (out.contains("ERROR 1429") || said_why), "{out}");
    // The health check marks the primary down before it logs why, so a
    // client can see 1429 a moment before the line is in the log.
    let says_why = || {
        let log = wrong.proc.log_text();
        log.contains("TLS to the backend failed") && log.contains("certificate")
    };
    switchyard_tests::eventually(10, "the log says why the primary is down", says_why);
}
