//! Real MariaDB for the SQL tests: a primary and replicas with GTID
//! replication, each with its own data dir under a temp folder and on a
//! spare loopback port, plus the gateway in front of them.

use crate::{bearer, free_port, gateway_with_admin, get, plugin, Proc};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client login the tests use through the gateway (and directly).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
pub const MONITOR_PASSWORD: &str = "monitor-secret";
/// The schema the tests work in.
pub const DB: &str = "shop";

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const HOW_TO_INSTALL: &str = "install MariaDB with `apt-get install -y mariadb-server mariadb-client` (scripts/test.sh does it)";

fn need(path: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: {HOW_TO_INSTALL}");
}

/// One mariadbd process.
pub struct Maria {
    pub port: u16,
    pub server_id: u32,
    dir: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
    /// Extra server options (TLS).
    extra: Vec<String>,
}

impl Maria {
    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn init(dir: PathBuf, server_id: u32) -> Self {
        need(MARIADBD);
        need(INSTALL_DB);
        let mut failure = String::new();
        for _ in 0..3 {
            let _ = std::fs::remove_dir_all(dir.join("data"));
            std::fs::create_dir_all(dir.join("data")).unwrap();
            let out = Command::new(INSTALL_DB)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", dir.join("data").display()))
                .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
                .args(user_arg())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {INSTALL_DB}: {e}; {HOW_TO_INSTALL}"));
            if out.status.success() {
                failure.clear();
                break;
            }
            failure = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            eprintln!("mariadb-install-db failed, retrying:\n{failure}");
        }
        assert!(failure.is_empty(), "mariadb-install-db failed 3 times:\n{failure}");
        let mut m = Self { port: free_port(), server_id, dir, child: None, watchdog: None, extra: Vec::new() };
        m.start();
        m
    }

    /// Start (or restart) the server on its port and wait until it answers.
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("mariadbd.log")).unwrap();
        let mut cmd = Command::new(MARIADBD);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!("--log-bin={}", self.dir.join("binlog").display()))
            .args(["--binlog-format=ROW", "--log-slave-updates=1", "--gtid-strict-mode=1", "--skip-name-resolve"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"])
            .args(["--max-connections=500", "--performance-schema=0", "--skip-log-error"])
            .args(user_arg())
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if self.server_id != 1 {
            cmd.arg("--read-only=1");
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {MARIADBD}: {e}; {HOW_TO_INSTALL}"));
        self.watchdog = Some(watchdog(child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() && self.try_sql("SELECT 1").is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mariadbd exited with {status}:\n{}", std::fs::read_to_string(self.dir.join("mariadbd.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mariadbd on port {} did not start within 60 s", self.port);
    }

    /// Restart with TLS on (this certificate chain and key), keeping its data.
    pub fn restart_with_tls(&mut self, cert: &Path, key: &Path) {
        self.extra = vec![format!("--ssl-cert={}", cert.display()), format!("--ssl-key={}", key.display())];
        self.kill();
        self.start();
    }

    /// The server's process id (for CPU limits in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Run SQL as root over the socket with the `mariadb` CLI; tab-separated rows.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.handle().try_sql(sql)
    }

    pub fn sql(&self, sql: &str) -> String {
        self.handle().sql(sql)
    }

    /// A handle that runs SQL on this server from another thread.
    pub fn handle(&self) -> MariaHandle {
        MariaHandle { socket: self.socket(), port: self.port }
    }
}

/// Runs SQL as root on one server (sendable to other threads).
#[derive(Clone)]
pub struct MariaHandle {
    socket: PathBuf,
    port: u16,
}

impl MariaHandle {
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .map_err(|e| format!("cannot run the mariadb CLI: {e}; {HOW_TO_INSTALL}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("`{sql}` on port {} failed: {e}", self.port))
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        self.kill();
    }
}

fn user_arg() -> Vec<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if uid == "0" { vec!["--user=root".into()] } else { Vec::new() }
}

/// Kill `pid` once this test process is gone, even if it never runs its
/// destructors (servers kept in statics, a panic that aborts).
fn watchdog(pid: u32) -> Child {
    let me = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(format!("while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

/// A primary and its replicas.
pub struct Cluster {
    pub primary: Maria,
    pub replicas: Vec<Maria>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Start a primary with `replicas` GTID replicas, the test users and
    /// the `shop` schema, and wait until every replica has it all.
    pub fn start(replicas: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let primary = Maria::init(dir.path().join("primary"), 1);
        primary.sql(&format!(
            "CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';
             GRANT ALL PRIVILEGES ON {DB}.* TO '{APP_USER}'@'%';
             GRANT ALL PRIVILEGES ON other.* TO '{APP_USER}'@'%';
             CREATE USER 'monitor'@'%' IDENTIFIED BY '{MONITOR_PASSWORD}';
             GRANT SLAVE MONITOR ON *.* TO 'monitor'@'%';
             CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
             GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
             CREATE DATABASE {DB}; CREATE DATABASE other;
             CREATE TABLE {DB}.items (id INT AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL, note VARCHAR(64)) ENGINE=InnoDB;
             CREATE TABLE other.t (id INT PRIMARY KEY) ENGINE=InnoDB;"
        ));
        let replicas: Vec<Maria> = (0..replicas)
            .map(|i| {
                let r = Maria::init(dir.path().join(format!("replica{i}")), 2 + i as u32);
                r.sql(&format!(
                    "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
                    primary.port
                ));
                r
            })
            .collect();
        let c = Self { primary, replicas, _dir: dir };
        c.wait_replicated();
        c
    }

    /// Wait until every running replica has applied the primary's binlog.
    pub fn wait_replicated(&self) {
        let pos = self.primary.sql("SELECT @@gtid_binlog_pos");
        for r in &self.replicas {
            if r.child.is_none() {
                continue;
            }
            let got = r.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"));
            assert_eq!(got, "0", "replica {} did not reach {pos}: {}", r.port, r.sql("SHOW SLAVE STATUS\\G"));
        }
    }
}

/// A gateway with an `[sql]` listener in front of a cluster.
pub struct SqlGateway {
    pub proc: Proc,
    pub sql: SocketAddr,
    pub admin: SocketAddr,
    _watchdog: Child,
}

impl SqlGateway {
    /// `router`: a plugin file stem (`rw_split`, `primary_only`) or None for
    /// the builtin split; `extra` goes into `[sql]` (polls run every 100 ms
    /// unless it sets `health_interval_ms`).
    pub fn start(cluster: &Cluster, router: Option<&str>, extra: &str) -> Self {
        Self::start_over(cluster, cluster.replicas.len(), router.map(plugin).as_deref(), extra)
    }

    /// The gateway's config (`{listen}` still to fill in) and its SQL address.
    pub fn config(cluster: &Cluster, replicas: usize, router: Option<&Path>, extra: &str) -> (String, SocketAddr) {
        let sql: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut config = String::from("[server]\nlisten = \"{listen}\"\n\n");
        if let Some(r) = router {
            config += &format!("[plugins.router]\npath = {r:?}\nwatch_ms = 0\n\n");
        }
        config += &format!(
            "[sql]\nlisten = \"{sql}\"\nprimary = \"{}\"\nreplicas = [{}]\nusers = [{{ name = \"{APP_USER}\", password = \"{APP_PASSWORD}\" }}]\nmonitor = {{ name = \"monitor\", password = \"{MONITOR_PASSWORD}\" }}\n{}{}{extra}\n",
            cluster.primary.addr(),
            cluster.replicas.iter().take(replicas).map(|r| format!("{{ address = \"{}\" }}", r.addr())).collect::<Vec<_>>().join(", "),
            if extra.contains("health_interval_ms") { "" } else { "health_interval_ms = 100\n" },
            if router.is_some() { "router = \"router\"\n" } else { "" },
        );
        (config, sql)
    }

    /// [`SqlGateway::start`] over the first `replicas` replicas, with the
    /// router plugin at a path (the bench runs users' own `.wasm` files).
    pub fn start_over(cluster: &Cluster, replicas: usize, router: Option<&Path>, extra: &str) -> Self {
        let (config, sql) = Self::config(cluster, replicas, router, extra);
        Self::launch(&config, sql)
    }

    /// Start the gateway on `config` and wait for its SQL listener.
    fn launch(config: &str, sql: SocketAddr) -> Self {
        let (proc, admin) = gateway_with_admin(config, "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&sql, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "the SQL listener did not open on {sql}:\n{}", proc.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let _watchdog = watchdog(proc.pid());
        Self { proc, sql, admin, _watchdog }
    }

    /// The Prometheus text from the admin API.
    pub fn metrics(&self) -> String {
        let (k, v) = bearer();
        get(self.admin, "/metrics", &[(k, v.as_str())]).body
    }

    /// Sum of one metric's samples whose labels contain every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A mysql_async connection URL through the gateway. `prefer_socket`
    /// is off: on loopback mysql_async would otherwise reconnect to the
    /// backend's own Unix socket (`@@socket`) and bypass the gateway.
    pub fn url(&self, user: &str, password: &str, db: Option<&str>) -> String {
        format!("mysql://{user}:{password}@{}/{}?prefer_socket=false", self.sql, db.unwrap_or(""))
    }
}

/// Run the `mariadb` CLI against `addr` over TCP; (exit ok, stdout+stderr).
pub fn cli(addr: SocketAddr, user: &str, password: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string(), "-u", user])
        .arg(format!("-p{password}"))
        .args(["--protocol=TCP", "--connect-timeout=5", "-N", "-B"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the mariadb CLI: {e}; {HOW_TO_INSTALL}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

impl Drop for SqlGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.proc.log_text());
        }
    }
}

impl SqlGateway {
    /// [`SqlGateway::start`] with `server` lines added to `[server]`
    /// (threads, work stealing) for the benches.
    pub fn start_tuned(cluster: &Cluster, server: &str, extra: &str) -> Self {
        let (config, sql) = Self::config(cluster, cluster.replicas.len(), None, extra);
        let config = config.replacen("[server]\n", &format!("[server]\n{server}"), 1);
        Self::launch(&config, sql)
    }
}
