//! Gateway nodes of one `[cluster]` on fixed loopback ports, started,
//! stopped and restarted one by one (replicated sessions).

use crate::{free_port, gateway_with_admin, Proc};
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

