//! The memcached servers of the `central` tier: each server's commands
//! (coalesced per worker thread, `pipe.rs`), its up/down state, and the
//! rendezvous order that gives every key its primary and its backups.

use super::StoreError;
use crate::metrics::metrics;
use memcache::exp::{Error as McError, Get, GetResult, MutationResult, Op, OpResult};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server that failed is skipped before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// One memcached server: its command pipes and its state.
pub struct Server {
    pub addr: SocketAddr,
    label: String,
    timeout: Duration,
    pipe: super::pipe::Pipe,
    /// Milliseconds since `epoch` until which the server is skipped; 0: up.
    down_until: AtomicU64,
    epoch: Instant,
    /// Why it was last marked down (for admin reports).
    last_error: Mutex<Option<String>>,
}

impl Server {
    pub fn new(addr: SocketAddr, pool: u32, timeout: Duration) -> Self {
        let s = Self {
            addr,
            label: addr.to_string(),
            timeout,
            pipe: super::pipe::Pipe::new(addr, pool, timeout),
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
            last_error: Mutex::new(None),
        };
        metrics().session_central_up.with_label_values(&[&s.label]).set(1);
        s
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Skipped now: it failed less than [`DOWN_FOR`] ago.
    pub fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) > self.now_ms()
    }

    fn mark_down(&self, why: &str) {
        if !self.is_down() {
            tracing::warn!(server = %self.addr, "memcached server marked down for {DOWN_FOR:?}: {why}");
        }
        self.down_until.store(self.now_ms() + DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
        *self.last_error.lock() = Some(why.to_string());
        metrics().session_central_up.with_label_values(&[&self.label]).set(0);
    }

    fn mark_up(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 && self.down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(server = %self.addr, "memcached server answers again");
            metrics().session_central_up.with_label_values(&[&self.label]).set(1);
        }
    }

    /// `up`, or `down: WHY` (admin reports).
    pub fn state(&self) -> String {
        match (self.is_down(), self.last_error.lock().as_ref()) {
            (true, Some(e)) => format!("down: {e}"),
            (true, None) => "down".into(),
            (false, _) => "up".into(),
        }
    }

    /// Run one command on this server, with the other commands waiting on
    /// this thread, within the call's timeout. A server that cannot be
    /// reached or does not answer in time is marked down.
    async fn run(&self, op: Op) -> Result<OpResult, StoreError> {
        self.bounded(self.pipe.run(op)).await
    }

    /// A read (`mg`; the crate always asks for the client flags).
    pub async fn get(&self, get: Get) -> Result<GetResult, StoreError> {
        match self.run(get.into()).await? {
            OpResult::Get(r) => Ok(r),
            other => Err(self.failed(mismatch(&other))),
        }
    }

    /// A write or a delete (`ms`, `md`).
    pub async fn mutate(&self, op: impl Into<Op>) -> Result<MutationResult, StoreError> {
        match self.run(op.into()).await? {
            OpResult::Mutation(r) => Ok(r),
            other => Err(self.failed(mismatch(&other))),
        }
    }

    /// Finish a command: marked up when it answers, down when the link
    /// fails or it times out.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, McError>>) -> Result<T, StoreError> {
        // The engine bounds each exchange by `timeout` (and marks a server
        // that lets it pass down, below). This outer bound also covers the
        // wait for the batch ahead: past it the call fails, but a gateway
        // short of CPU does not mark the server down.
        let Ok(out) = tokio::time::timeout(self.timeout * 2, work).await else {
            return Err(StoreError::Timeout);
        };
        match out {
            Ok(v) => {
                self.mark_up();
                Ok(v)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A failed call: a link failure or a timeout marks the server down.
    fn failed(&self, e: McError) -> StoreError {
        let why = format!("memcached {}: {e}", self.addr);
        let timed_out = match &e {
            McError::Timeout { .. } => true,
            McError::Ambiguous { source, .. } => matches!(**source, McError::Timeout { .. }),
            _ => false,
        };
        if timed_out || matches!(e, McError::Io(_) | McError::Ambiguous { .. }) {
            self.mark_down(&why);
        }
        if timed_out {
            StoreError::Timeout
        } else {
            StoreError::Unavailable(why)
        }
    }
}

/// An answer of the wrong kind (the crate pairs answers by opaque token,
/// so this would be its bug): reported, never taken for the right one.
fn mismatch(got: &OpResult) -> McError {
    McError::Io(std::io::Error::other(format!("memcached answered with the wrong kind of result: {got:?}")))
}

/// Rendezvous (highest random weight) order of `servers` for `key`: the
/// first is the key's primary, the next its backups. A stable hash
/// (SHA-256), so every gateway node and every version agrees, and removing
/// a server moves only the keys it held.
pub fn order(servers: &[Server], key: &str) -> Vec<usize> {
    if servers.len() == 1 {
        return vec![0];
    }
    let mut scored: Vec<(u64, usize)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut h = Sha256::new();
            h.update(s.label.as_bytes());
            h.update([0]);
            h.update(key.as_bytes());
            let d = h.finalize();
            (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")), i)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<Server> {
        (0..n).map(|i| Server::new(format!("127.0.0.1:{}", 11211 + i).parse().unwrap(), 4, Duration::from_millis(100))).collect()
    }

    #[test]
    fn keys_spread_evenly_and_removing_a_server_moves_only_its_keys() {
        let three = servers(3);
        let keys: Vec<String> = (0..3000).map(|i| format!("session:{i:032x}")).collect();
        let mut per = [0usize; 3];
        for k in &keys {
            per[order(&three, k)[0]] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "about a third each: {per:?}");
        // Without server 2, a key of server 0 or 1 keeps its primary; a key
        // of server 2 goes to its first backup.
        let two: Vec<Server> = servers(2);
        for k in &keys {
            let full = order(&three, k);
            let less = order(&two, k);
            let expected = if full[0] == 2 { full[1] } else { full[0] };
            assert_eq!(less[0], expected, "{k}");
        }
    }

    #[test]
    fn the_order_is_stable_across_calls() {
        let s = servers(3);
        assert_eq!(order(&s, "session:abc"), order(&s, "session:abc"));
        assert_eq!(order(&s, "x").len(), 3);
    }
}
