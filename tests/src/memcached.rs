//! Real memcached for the session tests: its own process on a spare
//! loopback port, stopped and restarted at will.

use crate::free_port;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOW_TO_INSTALL: &str = "install it with `apt-get install -y memcached` (scripts/test.sh does it)";

/// One memcached process.
pub struct Memcached {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Memcached {
    /// Start memcached on a free port; fails with how to install it.
    pub fn start() -> Self {
        let mut m = Self { addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(), child: None };
        m.restart();
        m
    }

    /// Start it again on the same port (empty: memcached keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("memcached");
        cmd.args(["-l", "127.0.0.1", "-p", &self.addr.port().to_string(), "-U", "0", "-m", "64", "-c", "4096"]);
        if rustix_is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start memcached: {e}; {HOW_TO_INSTALL}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("memcached exited with {status}; {HOW_TO_INSTALL}");
            }
            assert!(Instant::now() < deadline, "memcached did not listen on {} within 20 s", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop it (a memcached outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rustix_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false) || std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    }).unwrap_or(false)
}
