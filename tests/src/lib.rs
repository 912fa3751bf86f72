//! Harness for end-to-end tests: start the real `switchyard` binary, demo
//! backends as separate processes, and talk plain HTTP/1.1 to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the built binaries live (`target/debug`): beside this executable
/// (`switchyard-bench` in `target/{debug,release}`), else one level up (a
/// test in `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().expect("exe dir");
    if dir.join("switchyard").is_file() {
        return dir.to_path_buf();
    }
    dir.parent().expect("target/debug/deps/..").to_path_buf()
}

/// The gateway binary (`SWITCHYARD_BIN` if set), or how to build it.
pub fn try_switchyard_bin() -> Result<PathBuf, String> {
    let p = std::env::var_os("SWITCHYARD_BIN").map_or_else(|| bin_dir().join("switchyard"), PathBuf::from);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} is missing: run `cargo build -p switchyard` (scripts/test.sh does it)", p.display()))
    }
}

/// The gateway binary; fails with how to build it.
pub fn switchyard_bin() -> PathBuf {
    try_switchyard_bin().unwrap_or_else(|e| panic!("{e}"))
}

/// Where `scripts/test.sh` builds the plugins: `SWITCHYARD_PLUGIN_DIR`, else
/// `plugins/target/wasm32-wasip2/release`.
pub fn plugin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::var_os("SWITCHYARD_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("plugins/target/wasm32-wasip2/release"))
}

/// A plugin component built by `scripts/test.sh`; fails with how to build it.
pub fn plugin(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: build the plugins with `rustup target add wasm32-wasip2 && cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml` (scripts/test.sh does it)",
        p.display()
    );
    p
}

/// A free loopback port.
pub fn free_port() -> u16 {
    // Tests of one binary run in parallel, and the kernel may hand the
    // same free port to two of them in a row: never give one out twice.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    // Generous: a debug gateway compiles every plugin before it listens,
    // and the Python and JS components take long when tests run in
    // parallel on 2 cores. This bounds a hang; it is not a timing check.
    let deadline = Instant::now() + Duration::from_secs(STARTUP_SECS);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within {STARTUP_SECS} s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Longest wait for a started process to listen.
const STARTUP_SECS: u64 = 180;

/// A process killed on drop.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failing test shows what the process said (and whether it exited).
        if std::thread::panicking() {
            let exited = self.child.try_wait().ok().flatten().map_or_else(|| "running".to_string(), |s| format!("exited: {s}"));
            let log = self.log_text();
            let start = (log.len().saturating_sub(6000)..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(0);
            let tail = &log[start..];
            eprintln!("--- process {} on {} ({exited}), last of its log ---\n{tail}", self.child.id(), self.addr);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Everything the process wrote to stderr/stdout so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `secs` for the process to exit on its own.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Stop it now (a backend going down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], addr: SocketAddr, what: &str, dir: tempfile::TempDir) -> Proc {
    let log = dir.path().join("out.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(switchyard_bin())
        .args(args)
        .env("RUST_LOG", std::env::var("SWITCHYARD_TEST_LOG").unwrap_or("info".into()))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait_listening(addr, &mut child, what, &log);
    Proc { child, addr, log, _dir: dir }
}

/// Start a demo backend named `name` on `port`; extra args like `--delay-ms`.
pub fn backend_on(port: u16, name: &str, extra: &[&str]) -> Proc {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = addr.to_string();
    let mut args = vec!["demo-backend", "--listen", &listen, "--name", name];
    args.extend_from_slice(extra);
    spawn(&args, addr, &format!("backend {name}"), tempfile::tempdir().unwrap())
}

/// Start a demo backend on a fresh port.
pub fn backend(name: &str, extra: &[&str]) -> Proc {
    backend_on(free_port(), name, extra)
}

/// Start the gateway with a config; `{listen}` in the text is replaced by
/// the gateway's address.
pub fn gateway(config: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config.replace("{listen}", &addr.to_string())).unwrap();
    let p = path.to_string_lossy().to_string();
    spawn(&["run", "--config", &p], addr, "switchyard", dir)
}

/// Run `switchyard check` on a config file; returns (exit ok, stdout+stderr).
pub fn check(config: &Path) -> (bool, String) {
    let out = Command::new(switchyard_bin())
        .args(["check", "--config"])
        .arg(config.file_name().unwrap())
        .current_dir(config.parent().unwrap())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The demo backend's name (first body line).
    pub fn backend(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }
}

/// One GET with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, &[])
}

/// One request with a body and `Connection: close`.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before reading it all.
    let _ = s.write_all(body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap_or_else(|e| panic!("no response to {method} {path}: {e}"));
    let mut body = String::new();
    let _ = r.read_to_string(&mut body);
    Response { status, headers, body }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before a status line"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// One request on a keep-alive load connection.
#[derive(Debug, Clone)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    pub status: u16,
    /// The demo backend's name (first body line).
    pub backend: String,
}

/// A bounded keep-alive HTTP load: `conns` connections, each sending GETs
/// back to back until stopped, `max_per_conn` requests or `max_time`.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(Vec<Sample>, Vec<String>)>>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &str, conns: usize, max_per_conn: usize, max_time: Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..conns)
            .map(|_| {
                let stop = stop.clone();
                let path = path.to_string();
                std::thread::spawn(move || keepalive_loop(addr, &path, &stop, max_per_conn, max_time))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stop and collect every sample and every failure.
    pub fn finish(self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for t in self.threads {
            let (s, e) = t.join().expect("load thread");
            samples.extend(s);
            errors.extend(e);
        }
        samples.sort_by_key(|s| s.start);
        (samples, errors)
    }
}

fn keepalive_loop(
    addr: SocketAddr,
    path: &str,
    stop: &std::sync::atomic::AtomicBool,
    max: usize,
    max_time: Duration,
) -> (Vec<Sample>, Vec<String>) {
    let deadline = Instant::now() + max_time;
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    while samples.len() + errors.len() < max && Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let start = Instant::now();
        let r = conn.take().map_or_else(|| TcpStream::connect(addr).map(BufReader::new), Ok).and_then(|mut c| {
            c.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
            c.get_mut().write_all(req.as_bytes())?;
            let (status, headers) = read_head(&mut c)?;
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no content-length"))?;
            let mut body = vec![0; len];
            c.read_exact(&mut body)?;
            let close = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
            Ok((status, String::from_utf8_lossy(&body).lines().next().unwrap_or("").to_string(), (!close).then_some(c)))
        });
        match r {
            Ok((status, backend, next)) => {
                conn = next;
                samples.push(Sample { start, end: Instant::now(), status, backend });
            }
            Err(e) => errors.push(format!("{e}")),
        }
    }
    (samples, errors)
}

/// Poll `f` until it returns true; fail after `secs` with `what`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("gave up after {secs} s waiting for: {what}");
}

/// Count responses per backend name over `n` requests.
pub fn tally(addr: SocketAddr, path: &str, n: usize, headers: &[(&str, &str)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = get(addr, path, headers);
        assert_eq!(r.status, 200, "{r:?}");
        *m.entry(r.backend().to_string()).or_insert(0) += 1;
    }
    m
}

/// A `[plugins.NAME]` table for a built plugin.
pub fn plugin_table(name: &str, file: &str, extra: &str) -> String {
    format!("[plugins.{name}]\npath = {:?}\n{extra}\n", plugin(file).to_string_lossy())
}

/// An upstream + catch-all route over `backends`.
pub fn upstream(name: &str, lb: Option<&str>, backends: &[(&Proc, u32)], extra: &str) -> String {
    let list: Vec<String> =
        backends.iter().map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr)).collect();
    let lb = lb.map(|l| format!("lb = \"{l}\"\n")).unwrap_or_default();
    format!("[[upstreams]]\nname = \"{name}\"\n{lb}backends = [{}]\n{extra}\n[[routes]]\nupstream = \"{name}\"\n", list.join(", "))
}

/// `[admin]` for a test gateway: `{admin}` is replaced by a free port by
/// [`gateway_with_admin`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Start the gateway with an admin listener; returns it and the admin address.
pub fn gateway_with_admin(config: &str, admin_extra: &str) -> (Proc, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!("{config}\n[admin]\nlisten = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n{admin_extra}\n");
    let gw = gateway(&cfg);
    eventually(30, "the admin listener answers /healthz", || {
        TcpStream::connect(admin).is_ok() && get(admin, "/healthz", &[]).status == 200
    });
    (gw, admin)
}

/// The bearer header for [`ADMIN_TOKEN`].
pub fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {ADMIN_TOKEN}"))
}

/// `[server]` for a test gateway.
pub const SERVER: &str = "[server]\nlisten = \"{listen}\"\nthreads = 2\n";

pub mod mariadb;
pub mod memcached;
pub mod browser;
pub mod nodes;
pub mod pki;
pub mod ha;
pub mod etcd;
pub mod clients;

/// Sum of one metric's samples (from an admin `/metrics`) whose labels
/// contain every `labels` pair.
pub fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (k, v) = bearer();
    get(admin, "/metrics", &[(k, v.as_str())])
        .body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
