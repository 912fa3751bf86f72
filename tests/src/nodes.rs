//! Gateway nodes of one `[cluster]` on fixed loopback ports, started,
//! stopped and restarted one by one (replicated sessions).

use crate::memcached::Memcached;
use crate::{free_port, gateway_with_admin, plugin, Proc, SERVER};
use std::net::SocketAddr;

/// The cluster key every node of a test shares.
pub const CLUSTER_KEY: &str = "test-cluster-shared-key-0123456789abcdef";

/// Gateway nodes with fixed cluster ports, restartable one by one.
pub struct Nodes {
    pub cluster_ports: Vec<u16>,
    pub nodes: Vec<Option<(Proc, SocketAddr)>>,
    pub base: String,
}

impl Nodes {
    pub fn start(n: usize, base: String) -> Self {
        let mut s = Self { cluster_ports: (0..n).map(|_| free_port()).collect(), nodes: (0..n).map(|_| None).collect(), base };
        for i in 0..n {
            s.up(i);
        }
        s
    }

    pub fn config(&self, i: usize) -> String {
        let peers: String = self
            .cluster_ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| format!("[[cluster.peers]]\nid = {}\naddress = \"127.0.0.1:{p}\"\n", j + 1))
            .collect();
        format!("{}\n[cluster]\nid = {}\nlisten = \"127.0.0.1:{}\"\nkey = \"{CLUSTER_KEY}\"\n{peers}", self.base, i + 1, self.cluster_ports[i])
    }

    pub fn up(&mut self, i: usize) {
        self.nodes[i] = Some(gateway_with_admin(&self.config(i), ""));
    }

    pub fn down(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().expect("node up").0.addr
    }

    pub fn admin(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().expect("node up").1
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()).collect()
    }
}

/// Session signing key of the session tests' gateways.
pub const SESSION_KEY: &str = "test-session-signing-key-0123456789abcdef";

/// A gateway config: memcached as the central tier, one upstream over
/// `backends`, and a catch-all route whose session plugin is `file` with
/// `plugin_config` (TOML lines); add `[cluster]` with [`Nodes`]. The call
/// deadline is 2 s: these tests are about sessions surviving swaps and node
/// losses, and a wall-clock deadline of 500 ms was exceeded once on a busy
/// 2-core CI machine running three debug nodes per test while a swap compiled.
pub fn session_config(mc: &Memcached, file: &str, plugin_config: &str, backends: &[Proc]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    format!(
        "{SERVER}\n[session]\nkeys = [\"{SESSION_KEY}\"]\n[session.central]\nservers = [\"{}\"]\nlock_timeout_ms = 10000\n\
         [plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 2000 }}\n[plugins.sess.config]\n{plugin_config}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[[routes]]\nupstream = \"app\"\nsession = \"sess\"\n",
        mc.addr,
        plugin(file).to_string_lossy(),
        list.join(", ")
    )
}

