//! A real etcd cluster for the fleet tests: members on spare loopback
//! ports with their own data dirs, auth on, each member stopped and
//! restarted at will; `etcdctl` for what a test writes around the gateway.

use crate::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOW_TO_INSTALL: &str = "install it with `apt-get install -y etcd-server etcd-client` (scripts/test.sh does it)";

/// The root user's password; the gateways use [`USER`].
pub const ROOT_PASSWORD: &str = "root-password-for-tests";
/// The gateways' etcd user: read and write under `/switchyard/` only.
pub const USER: &str = "switchyard";
pub const PASSWORD: &str = "switchyard-password-for-tests";

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// Certificates of an etcd that speaks TLS to its clients and wants a
/// client certificate (`--client-cert-auth`): the CA, the members' cert
/// and key, and a client cert and key for `etcdctl`.
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

/// A running etcd cluster.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    auth_on: std::cell::Cell<bool>,
    tls: Option<EtcdTls>,
}

impl Etcd {
    /// `n` members, auth on, the `switchyard` user allowed `/switchyard/`.
    pub fn start(n: usize) -> Self {
        let e = Self::spawn_all(n, None);
        e.setup_auth();
        e
    }

    /// `n` members speaking TLS to clients, each client authenticated by
    /// its certificate (no password auth).
    pub fn start_tls(n: usize, tls: EtcdTls) -> Self {
        Self::spawn_all(n, Some(tls))
    }

    fn spawn_all(n: usize, tls: Option<EtcdTls>) -> Self {
        let members = (0..n).map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None }).collect();
        let mut e = Self { dir: tempfile::tempdir().unwrap(), members, auth_on: std::cell::Cell::new(false), tls };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_healthy();
        e
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client addresses, for `[fleet] endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https://" } else { "" };
        self.members.iter().map(|m| format!("{scheme}127.0.0.1:{}", m.client)).collect()
    }

    /// `endpoints = [...]` as TOML.
    pub fn endpoints_toml(&self) -> String {
        let list: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", list.join(", "))
    }

    fn spawn(&mut self, i: usize) {
        let cluster: Vec<String> = self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), m.client);
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(&t.server.0).arg("--key-file").arg(&t.server.1).arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-token", "switchyard-test", "--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}; {HOW_TO_INSTALL}"));
        self.members[i].child = Some(child);
    }

    /// `etcdctl` against every member; `auth`: `Some((user, password))`.
    pub fn ctl(&self, auth: Option<(&str, &str)>, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoints().join(","))).arg("--dial-timeout=2s").arg("--command-timeout=5s");
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client.0).arg("--key").arg(&t.client.1);
        }
        if let Some((u, p)) = auth {
            cmd.arg(format!("--user={u}:{p}"));
        }
        cmd.args(args).output().unwrap_or_else(|e| panic!("cannot run etcdctl: {e}; {HOW_TO_INSTALL}"))
    }

    /// `etcdctl` as root, which must succeed.
    pub fn root(&self, args: &[&str]) -> String {
        // Before `auth enable` nothing needs a user.
        let auth = Some(("root", ROOT_PASSWORD)).filter(|_| self.auth_on.get());
        let out = self.ctl(auth, args);
        assert!(out.status.success(), "etcdctl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn setup_auth(&self) {
        self.root(&["user", "add", &format!("root:{ROOT_PASSWORD}"), "--interactive=false"]);
        self.root(&["user", "add", &format!("{USER}:{PASSWORD}"), "--interactive=false"]);
        self.root(&["role", "add", USER]);
        self.root(&["role", "grant-permission", USER, "--prefix=true", "readwrite", "/switchyard/"]);
        self.root(&["user", "grant-role", USER, USER]);
        self.root(&["user", "grant-role", "root", "root"]);
        self.root(&["auth", "enable"]);
        self.auth_on.set(true);
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default();
                    panic!("etcd member {i} exited with {status}; {HOW_TO_INSTALL}\n{log}");
                }
            }
            if self.ctl(None, &["endpoint", "health"]).status.success() || self.ctl(Some(("root", ROOT_PASSWORD)), &["endpoint", "health"]).status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "the etcd cluster was not healthy within 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stop member `i` (a lost member).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.spawn(i);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
