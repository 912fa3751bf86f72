//! High availability the way paper 001 runs it, as a harness: real
//! keepalived and real VRRP in network namespaces made for the purpose.
//! Used by `tests/ha_keepalived.rs` and by `switchyard bench ha-failover`.
//!
//! [`Topo`] builds a bridge namespace `b` and, on its bridge, two gateway
//! namespaces `g1` (198.18.0.1) and `g2` (.2), a client namespace `c` (.10)
//! and a backend namespace `m` (.50, memcached). keepalived runs VRRPv3
//! with `advert_int` 0.2 and a `vrrp_script` on the gateway's admin
//! `/healthz`; the VIP is 198.18.0.100 (active-active adds .101). A bounded
//! curl loop in the client namespace records every request, and
//! [`Figures`] says what the client saw around a failover. Session carts
//! ([`fill_cart`], [`read_cart`]) run through the VIP with a cookie jar.
//!
//! Only loopback and 198.18.0.0/24 addresses inside the topology's own
//! namespaces are used. Every namespace and process is removed on drop,
//! also after a panic ([`sweep`] does the same by name prefix). Needs root,
//! iproute2 (`ip netns`), keepalived, curl and, for centralized sessions,
//! memcached ([`require_tools`]).

use crate::{plugin, switchyard_bin, ADMIN_TOKEN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const VIP: &str = "198.18.0.100";
/// Active-active: gw2's VIP (gw1 is MASTER for `VIP`).
pub const VIP_B: &str = "198.18.0.101";
/// Replicated sessions: `[cluster]` listens here on each node's bridge address.
pub const CLUSTER_PORT: u16 = 7946;
const CLUSTER_KEY: &str = "test-cluster-shared-key-0123456789abcdef";
pub const MEMCACHED: &str = "198.18.0.50:11211";
pub const ADMIN_PORT: u16 = 9000;
pub const BACKEND_PORT: u16 = 8081;
const KEY: &str = "test-session-signing-key-0123456789abcdef";

/// keepalived settings (also in the README's "High availability" section).
pub const ADVERT_INT: &str = "0.2";
pub const CHECK_INTERVAL: &str = "1";
pub const CHECK_TIMEOUT: &str = "1";
pub const CHECK_FALL: u32 = 2;
pub const CHECK_RISE: u32 = 2;
/// More than interval x fall (2 s): the VIP moves (priority 0 advert on
/// FAULT, within ms) while gw1 still serves; 1 s of margin for the check itself.
pub const DRAIN_DELAY_MS: u64 = 3000;

/// The client's load around a failover: [`LOAD_SECS`] of requests, the
/// event [`EVENT_AFTER`] in.
pub const LOAD_SECS: u32 = 8;
pub const EVENT_AFTER: Duration = Duration::from_millis(2000);

/// The session strategy of a node.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Sessions {
    None,
    /// The session tier is the memcached in namespace `m` (`session_centralized`).
    Central,
    /// gw1 and gw2 are `[cluster]` peers over the bridge (`session_replicated`).
    Replicated,
    /// Both stores: a plugin of your own picks its tier.
    Both,
}

impl Sessions {
    /// Whether the nodes use the memcached in namespace `m`.
    pub fn central(self) -> bool {
        matches!(self, Self::Central | Self::Both)
    }

    /// Whether the nodes are `[cluster]` peers.
    pub fn replicated(self) -> bool {
        matches!(self, Self::Replicated | Self::Both)
    }

    /// The shipped plugin of the strategy (centralized for `Both`).
    fn shipped(self) -> PathBuf {
        plugin(if self == Self::Replicated { "session_replicated" } else { "session_centralized" })
    }
}

/// A bridge address of a gateway namespace.
pub fn bridge_ip(n: &str) -> &'static str {
    match n {
        "g1" => "198.18.0.1",
        "g2" => "198.18.0.2",
        _ => panic!("no gateway namespace {n}"),
    }
}

/// Where the tools come from.
pub const INSTALL: &str = "`apt-get install -y keepalived iproute2 curl memcached` (scripts/test.sh does it)";

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Run `cmd args`; its stdout, or a panic with its output.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}; install it with {INSTALL}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The effective user id, from `/proc/self/status`.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Root, `ip netns`, keepalived and curl; Err says how to get them.
pub fn require_tools() -> Result<(), String> {
    if euid() != Some(0) {
        return Err(format!("network namespaces and keepalived need root: run as root (sudo); the tools come from {INSTALL}"));
    }
    let missing = [("ip", "netns"), ("keepalived", "--version"), ("curl", "--version")].into_iter().find(|(c, a)| !works(c, &[a]));
    missing.map_or(Ok(()), |(c, _)| Err(format!("`{c}` is missing or does not work here: install it with {INSTALL}")))
}

/// memcached, for centralized sessions; Err says how to get it.
pub fn require_memcached() -> Result<(), String> {
    if works("memcached", &["--version"]) { Ok(()) } else { Err(format!("memcached is missing: install it with {INSTALL}")) }
}

/// Kill every process in `namespaces` and delete them.
fn remove_namespaces(namespaces: &[String]) {
    for ns in namespaces {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    for ns in namespaces {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
}

/// Remove every namespace whose name starts with `prefix`, and what runs
/// in it (a signal handler's clean-up, when no `Drop` will run).
pub fn sweep(prefix: &str) {
    let list = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let ours: Vec<String> = list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(prefix)).map(String::from).collect();
    remove_namespaces(&ours);
}

/// The namespaces, bridge and every process started in them.
pub struct Topo {
    prefix: String,
    dir: tempfile::TempDir,
    /// (what, process, log file)
    procs: Vec<(String, Child, PathBuf)>,
    namespaces: Vec<String>,
}

impl Topo {
    /// Namespace `n` of this topology.
    pub fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// [`Topo::named`] with the prefix `sy<pid><tag>` (the tests').
    pub fn new(tag: &str) -> Self {
        Self::named(&format!("sy{}{tag}", std::process::id()))
    }

    /// Bridge namespace `b` with bridge `br0`; `g1` (198.18.0.1), `g2`
    /// (.2), client `c` (.10) and backend `m` (.50), each on `eth0`; every
    /// namespace's name starts with `prefix`. Panics without the tools.
    pub fn named(prefix: &str) -> Self {
        require_tools().unwrap_or_else(|e| panic!("{e}"));
        let mut t = Topo { prefix: prefix.to_string(), dir: tempfile::tempdir().unwrap(), procs: Vec::new(), namespaces: Vec::new() };
        for n in ["b", "g1", "g2", "c", "m"] {
            let ns = t.ns(n);
            run("ip", &["netns", "add", &ns]);
            t.namespaces.push(ns.clone());
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        let b = t.ns("b");
        run("ip", &["-n", &b, "link", "add", "br0", "type", "bridge", "forward_delay", "0"]);
        run("ip", &["-n", &b, "link", "set", "br0", "up"]);
        for (n, ip) in [("g1", "198.18.0.1"), ("g2", "198.18.0.2"), ("c", "198.18.0.10"), ("m", "198.18.0.50")] {
            let ns = t.ns(n);
            let port = format!("p{n}");
            run("ip", &["-n", &b, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run("ip", &["-n", &b, "link", "set", &port, "master", "br0", "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        }
        t
    }

    /// A file in the topology's temporary directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start `cmd args` in namespace `n`; returns its index in `procs`.
    pub fn spawn(&mut self, n: &str, what: &str, cmd: &str, args: &[&str]) -> usize {
        let log = self.file(&format!("{what}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let ns = self.ns(n);
        let mut full = vec!["netns", "exec", ns.as_str(), cmd];
        full.extend_from_slice(args);
        // `ip netns exec` execs the command: the child's pid is its pid.
        let child = Command::new("ip")
            .args(&full)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.procs.push((what.to_string(), child, log));
        self.procs.len() - 1
    }

    pub fn pid(&self, i: usize) -> String {
        self.procs[i].1.id().to_string()
    }

    /// `kill -SIG` process `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.pid(i)]);
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].2).unwrap_or_default()
    }

    /// `curl -sf URL` from namespace `n` (1 s timeout): Some(body) on 2xx.
    pub fn curl(&self, n: &str, url: &str) -> Option<String> {
        self.curl_within(n, url, "1")
    }

    /// [`Topo::curl`] with a timeout of `secs`.
    pub fn curl_within(&self, n: &str, url: &str, secs: &str) -> Option<String> {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(n), "curl", "-sf", "--max-time", secs, url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    pub fn has_vip(&self, n: &str) -> bool {
        self.holds(n, VIP)
    }

    /// Whether namespace `n` holds address `vip`.
    pub fn holds(&self, n: &str, vip: &str) -> bool {
        run("ip", &["-n", &self.ns(n), "-4", "addr", "show"]).contains(&format!("{vip}/"))
    }

    /// Poll `f` (at most `secs`, every 20 ms); how long until it held, if it did.
    pub fn poll(&self, secs: f64, mut f: impl FnMut(&Self) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            if f(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// [`Topo::poll`], or a panic naming `what`.
    pub fn wait(&self, secs: f64, what: &str, f: impl FnMut(&Self) -> bool) -> Duration {
        self.poll(secs, f).unwrap_or_else(|| panic!("{what}: not within {secs} s"))
    }

    /// The one memcached, in namespace `m`, that both gateways reach.
    pub fn memcached(&mut self) -> usize {
        require_memcached().unwrap_or_else(|e| panic!("{e}"));
        let (ip, port) = MEMCACHED.split_once(':').unwrap();
        self.spawn("m", "memcached", "memcached", &["-l", ip, "-p", port, "-U", "0", "-m", "64", "-u", "nobody"])
    }

    /// A demo backend named after the node on 127.0.0.1:8081 in `n`, and a
    /// gateway on 0.0.0.0:8080 (so the VIP reaches it) with its admin on
    /// 127.0.0.1:9000; `sessions` adds the centralized session plugin over
    /// the memcached in namespace `m`. Returns the gateway's index.
    pub fn node(&mut self, n: &str, sessions: bool) -> usize {
        self.node_with(n, if sessions { Sessions::Central } else { Sessions::None })
    }

    /// [`Topo::node`] with any session strategy and its shipped plugin.
    pub fn node_with(&mut self, n: &str, strategy: Sessions) -> usize {
        self.node_using(n, strategy, None)
    }

    /// [`Topo::node_with`] with the session plugin at `plugin` (default: the strategy's shipped one).
    pub fn node_using(&mut self, n: &str, strategy: Sessions, plugin: Option<&Path>) -> usize {
        let sessions = strategy != Sessions::None;
        let bin = switchyard_bin();
        let bin = bin.to_str().unwrap();
        let listen = format!("127.0.0.1:{BACKEND_PORT}");
        let mut args = vec!["demo-backend", "--listen", &listen, "--name", n];
        if sessions {
            args.extend_from_slice(&["--sessions", "header"]);
        }
        self.spawn(n, &format!("backend-{n}"), bin, &args);
        let session = if sessions { session_toml(n, strategy, &plugin.map_or_else(|| strategy.shipped(), Path::to_path_buf)) } else { String::new() };
        let route_session = if sessions { "session = \"sess\"\n" } else { "" };
        let cfg = format!(
            "[server]\nlisten = \"0.0.0.0:8080\"\nthreads = 2\ndrain_delay_ms = {DRAIN_DELAY_MS}\n{session}\n\
             [[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"{listen}\" }}]\nhealth = {{ check = \"none\" }}\n\
             [[routes]]\nupstream = \"web\"\n{route_session}\n\
             [admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\ntoken = \"{ADMIN_TOKEN}\"\n"
        );
        let path = self.file(&format!("switchyard-{n}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let i = self.spawn(n, &format!("gateway-{n}"), bin, &["run", "--config", path.to_str().unwrap()]);
        self.healthy(n, i);
        i
    }

    /// Wait (bounded) until gateway `i` in `n` is healthy and proxies to its backend.
    fn healthy(&mut self, n: &str, i: usize) {
        // Generous: a debug gateway compiles its plugins before it listens.
        let healthz = format!("http://127.0.0.1:{ADMIN_PORT}/healthz");
        let start = Instant::now();
        while self.curl(n, &healthz).is_none() {
            if let Ok(Some(s)) = self.procs[i].1.try_wait() {
                panic!("gateway in {n} exited with {s}:\n{}", self.log(i));
            }
            assert!(start.elapsed() < Duration::from_secs(180), "gateway in {n} not healthy within 180 s:\n{}", self.log(i));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(self.curl(n, "http://127.0.0.1:8080/").is_some_and(|b| b.starts_with(n)), "gateway in {n} proxies to its backend");
    }

    /// Replicated sessions: wait (bounded) until both `[cluster]` nodes say they caught up.
    pub fn caught_up(&self) {
        let healthz = format!("http://127.0.0.1:{ADMIN_PORT}/healthz");
        self.wait(30.0, "both cluster nodes caught up", |t| ["g1", "g2"].iter().all(|n| t.curl(n, &healthz).is_some_and(|b| b.contains("caught up"))));
    }

    /// keepalived in `n`: both nodes `state BACKUP` with `nopreempt` (a
    /// node that comes back does not take the VIP back); the higher
    /// priority wins the first election.
    pub fn keepalived(&mut self, n: &str, priority: u32) -> usize {
        self.keepalived_with(n, &[("VI_1", 51, priority, VIP)], true)
    }

    /// keepalived in `n` with one `vrrp_instance` per (name,
    /// virtual_router_id, priority, VIP), all tracking the gateway's
    /// `/healthz`; `nopreempt` or (the default) preemption.
    pub fn keepalived_with(&mut self, n: &str, instances: &[(&str, u32, u32, &str)], nopreempt: bool) -> usize {
        let mut conf = format!(
            "global_defs {{\n  enable_script_security\n  script_user root\n  vrrp_version 3\n}}\n\
             vrrp_script gateway_healthz {{\n  script \"/usr/bin/curl -sf -o /dev/null --max-time 0.8 http://127.0.0.1:{ADMIN_PORT}/healthz\"\n  \
             interval {CHECK_INTERVAL}\n  timeout {CHECK_TIMEOUT}\n  fall {CHECK_FALL}\n  rise {CHECK_RISE}\n}}\n"
        );
        let preempt = if nopreempt { "  nopreempt\n" } else { "" };
        for (name, vrid, priority, vip) in instances {
            conf += &format!(
                "vrrp_instance {name} {{\n  state BACKUP\n{preempt}  interface eth0\n  virtual_router_id {vrid}\n  priority {priority}\n  \
                 advert_int {ADVERT_INT}\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n  track_script {{\n    gateway_healthz\n  }}\n}}\n"
            );
        }
        let f = |s: &str| self.file(&format!("keepalived-{n}.{s}")).to_string_lossy().to_string();
        let (c, p, r, k) = (f("conf"), f("pid"), f("vrrp.pid"), f("check.pid"));
        std::fs::write(&c, conf).unwrap();
        self.spawn(n, &format!("keepalived-{n}"), "keepalived", &["-n", "-l", "-D", "-f", &c, "-p", &p, "-r", &r, "-c", &k])
    }

    /// gw1 (priority 150) then gw2 (100), so gw1 is MASTER.
    pub fn start_ha(&mut self) -> (usize, usize) {
        let k1 = self.keepalived("g1", 150);
        self.wait(15.0, "gw1 takes the VIP", |t| t.has_vip("g1"));
        let k2 = self.keepalived("g2", 100);
        self.wait(15.0, "keepalived on gw2 is BACKUP", |t| t.log(k2).contains("Entering BACKUP STATE"));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(self.has_vip("g1") && !self.has_vip("g2"), "gw1 is MASTER");
        assert!(self.curl("c", &format!("http://{VIP}:8080/")).is_some_and(|b| b.starts_with("g1")), "the VIP answers from gw1");
        (k1, k2)
    }

    /// A bounded load: one curl after another (new connection each, 1 s
    /// timeout, 10 ms apart) from the client namespace for `secs`.
    pub fn load(&mut self, secs: u32, path: &str) -> usize {
        self.load_to(VIP, secs, path)
    }

    /// [`Topo::load`] against `vip` (one loop per VIP can run at once).
    pub fn load_to(&mut self, vip: &str, secs: u32, path: &str) -> usize {
        let script = format!(
            "end=$((SECONDS+{secs})); i=0; while [ $i -lt 5000 ] && [ $SECONDS -lt $end ]; do \
             t=$EPOCHREALTIME; r=$(curl -s --max-time 1 -w '\\n%{{http_code}}' http://{vip}:8080{path}); \
             echo \"$t ${{r##*$'\\n'}} ${{r%%$'\\n'*}}\"; i=$((i+1)); sleep 0.01; done"
        );
        self.spawn("c", &format!("load-{vip}"), "bash", &["-c", &script])
    }

    /// Wait for the load to end (bounded) and parse it: (unix time, status, body).
    pub fn samples(&mut self, i: usize, secs: u64) -> Vec<(f64, u16, String)> {
        let start = Instant::now();
        while self.procs[i].1.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(secs), "the load loop did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log(i)
            .lines()
            .filter_map(|l| {
                let mut w = l.splitn(3, ' ');
                let t = w.next()?.parse().ok()?;
                let code = w.next()?.parse().unwrap_or(0);
                Some((t, code, w.next().unwrap_or("").trim().to_string()))
            })
            .collect()
    }
}

/// Session and cluster tables of node `n`'s config.
fn session_toml(n: &str, strategy: Sessions, plugin: &Path) -> String {
    let mut s = format!("[session]\nkeys = [\"{KEY}\"]\n");
    if strategy.central() {
        s += &format!("[session.central]\nservers = [\"{MEMCACHED}\"]\nlock_timeout_ms = 10000\n");
    }
    s += &format!(
        "[plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 500 }}\n[plugins.sess.config]\n",
        plugin.to_string_lossy()
    );
    if strategy.replicated() {
        let (id, peer, peer_id) = if n == "g1" { (1, "g2", 2) } else { (2, "g1", 1) };
        s += &format!(
            "[cluster]\nid = {id}\nlisten = \"{}:{CLUSTER_PORT}\"\nkey = \"{CLUSTER_KEY}\"\n\
             [[cluster.peers]]\nid = {peer_id}\naddress = \"{}:{CLUSTER_PORT}\"\n",
            bridge_ip(n),
            bridge_ip(peer)
        );
    }
    s
}

impl Drop for Topo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (what, _, log) in &self.procs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let start = (text.len().saturating_sub(3000)..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                eprintln!("--- {what}, last of its log ---\n{}", &text[start..]);
            }
        }
        for (_, c, _) in &mut self.procs {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever else runs in our namespaces (keepalived's children, the
        // check scripts) is ours too.
        remove_namespaces(&self.namespaces);
    }
}

/// What the client saw around a failover at `event` (unix seconds).
#[derive(Debug)]
pub struct Figures {
    pub requests: usize,
    pub failed: usize,
    /// First failure to first success on gw2 (None without failures).
    pub takeover_from_failure: Option<f64>,
    /// The event to the first success on gw2.
    pub takeover_from_event: f64,
    /// Last success on gw1 to first success on gw2.
    pub gap: f64,
}

fn answered_by(s: &(f64, u16, String), n: &str) -> bool {
    s.1 == 200 && s.2.starts_with(n)
}

impl Figures {
    /// The figures of `samples` around `event`; Err when gw1 never
    /// answered before or gw2 never answered after.
    pub fn of(samples: &[(f64, u16, String)], event: f64) -> Result<Self, String> {
        let first_g2 = samples.iter().find(|s| answered_by(s, "g2")).ok_or("no request was answered by gw2")?;
        let last_g1 = samples.iter().rev().find(|s| answered_by(s, "g1")).ok_or("no request was answered by gw1 first")?;
        let failed: Vec<_> = samples.iter().filter(|s| s.1 != 200).collect();
        Ok(Figures {
            requests: samples.len(),
            failed: failed.len(),
            takeover_from_failure: failed.first().map(|s| first_g2.0 - s.0),
            takeover_from_event: first_g2.0 - event,
            gap: first_g2.0 - last_g1.0,
        })
    }
}

/// [`Figures::of`], printed; asserts that gw2 answered every request after
/// the switch (at least 20).
pub fn figures(name: &str, samples: &[(f64, u16, String)], event: f64) -> Figures {
    let f = Figures::of(samples, event).unwrap_or_else(|e| panic!("{name}: {e}: {samples:?}"));
    println!(
        "{name}: requests {}, failed {}, take-over (first failure -> first gw2 answer) {}, event -> first gw2 answer {:.3} s, last gw1 -> first gw2 {:.3} s",
        f.requests,
        f.failed,
        f.takeover_from_failure.map_or("n/a (no failure)".into(), |t| format!("{t:.3} s")),
        f.takeover_from_event,
        f.gap
    );
    let switch = event + f.takeover_from_event;
    let after: Vec<_> = samples.iter().filter(|s| s.0 > switch).collect();
    assert!(after.len() >= 20, "{name}: load went on after the switch ({} requests)", after.len());
    assert!(after.iter().all(|s| answered_by(s, "g2")), "{name}: every request after the switch is answered by gw2: {after:?}");
    f
}

/// What one failover did: to the client's load and to its carts.
pub struct Failover {
    /// When the action ran (unix seconds).
    pub event: f64,
    /// Seconds from the event to the VIP showing on gw2 (polled every 20 ms).
    pub vip_moved: f64,
    /// Seconds from the event to gw2's first answer through the VIP to a
    /// probe started once the VIP moved (a request every 20 ms, 0.2 s timeout).
    pub answered: f64,
    pub samples: Vec<(f64, u16, String)>,
    /// Each jar's cart read through the VIP once it moved.
    pub carts: Vec<(u16, serde_json::Value)>,
}

/// Under a [`Topo::load`] of [`LOAD_SECS`], [`EVENT_AFTER`] in: `action`
/// (kill, stop or cut gw1); waits for the VIP on gw2 and for gw2 to answer
/// through it, reads each jar's cart through the VIP, then waits for the
/// load to end.
pub fn fail_over(t: &mut Topo, jars: &[PathBuf], action: impl FnOnce(&mut Topo)) -> Failover {
    let load = t.load(LOAD_SECS, "/");
    std::thread::sleep(EVENT_AFTER);
    let event = now();
    action(t);
    t.wait(10.0, "the VIP moves to gw2", |t| t.has_vip("g2"));
    let vip_moved = now() - event;
    assert!(!t.has_vip("g1"), "gw1 gave the VIP up");
    let url = format!("http://{VIP}:8080/");
    t.wait(5.0, "gw2 answers through the VIP", |t| t.curl_within("c", &url, "0.2").is_some_and(|b| b.starts_with("g2")));
    let answered = now() - event;
    let carts = jars.iter().map(|jar| read_cart(t, jar)).collect();
    let samples = t.samples(load, 30);
    Failover { event, vip_moved, answered, samples, carts }
}

/// [`fail_over`] with no carts; prints and returns the [`figures`].
pub fn failover(name: &str, t: &mut Topo, action: impl FnOnce(&mut Topo)) -> Figures {
    let f = fail_over(t, &[], action);
    println!("{name}: VIP on gw2 {:.3} s after the event, gw2 answers a probe through it {:.3} s after", f.vip_moved, f.answered);
    figures(name, &f.samples, f.event)
}

/// `curl` with a cookie jar from the client namespace to the VIP; (status, JSON body).
pub fn cart(t: &Topo, jar: &Path, method: &str, path: &str) -> (u16, serde_json::Value) {
    let jar = jar.to_str().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns("c"), "curl", "-s", "--max-time", "2", "-c", jar, "-b", jar, "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://{VIP}:8080{path}"))
        .output()
        .unwrap();
    parse_cart(&out.stdout)
}

/// A GET of `path` on `host` from the client namespace with the cookies the
/// jar holds for the VIP (a jar sends them to that host only), leaving the
/// jar as it is.
pub fn peek(t: &Topo, jar: &Path, host: &str, path: &str) -> (u16, serde_json::Value) {
    let jar = std::fs::read_to_string(jar).unwrap_or_default();
    let cookies: Vec<String> = jar
        .lines()
        .map(|l| l.strip_prefix("#HttpOnly_").unwrap_or(l))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 7).then(|| format!("{}={}", f[5], f[6].trim()))
        })
        .collect();
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns("c"), "curl", "-s", "--max-time", "2", "-b", &cookies.join("; "), "-w", "\n%{http_code}"])
        .arg(format!("http://{host}:8080{path}"))
        .output()
        .unwrap();
    parse_cart(&out.stdout)
}

fn parse_cart(stdout: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string())))
}

/// Log `user` in through the VIP and add `n` items (`USER-0`, ...), each
/// answered by node `by`; the items.
pub fn fill_cart(t: &Topo, jar: &Path, user: &str, n: usize, by: &str) -> Result<Vec<String>, String> {
    let (s, v) = cart(t, jar, "POST", &format!("/cart/login?user={user}"));
    if s != 200 {
        return Err(format!("login of {user}: {s} {v}"));
    }
    let items: Vec<String> = (0..n).map(|i| format!("{user}-{i}")).collect();
    for item in &items {
        let (s, v) = cart(t, jar, "POST", &format!("/cart/add?item={item}"));
        if (s, v["backend"].as_str()) != (200, Some(by)) {
            return Err(format!("add {item}: {s} {v} (expected 200 from {by})"));
        }
    }
    Ok(items)
}

/// The jar's cart through the VIP, retried (at most 5 s) while the
/// client's ARP entry moves.
pub fn read_cart(t: &Topo, jar: &Path) -> (u16, serde_json::Value) {
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..50 {
        last = cart(t, jar, "GET", "/cart");
        if last.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// Whether a cart answer holds exactly `items`.
pub fn cart_intact(answer: &(u16, serde_json::Value), items: &[String]) -> bool {
    answer.0 == 200 && answer.1["cart"] == serde_json::json!(items)
}
