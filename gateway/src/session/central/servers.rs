//! The memcached servers of the `central` tier: one connection pool per
//! server, each server's up/down state, and the rendezvous order that
//! gives every key its primary and its backups.

use super::StoreError;
use crate::metrics::metrics;
use memcache::exp::{AsyncMetaClient, Error as McError, MetaCommand, MetaOp, MetaResponse, ReturnCode};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a server that failed is skipped before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// One memcached server and its connection pool (`memcache::exp`'s engine:
/// idle connections reused, a dead pooled one redialed once).
pub struct Server {
    pub addr: SocketAddr,
    label: String,
    pool: u32,
    timeout: Duration,
    client: OnceCell<AsyncMetaClient>,
    /// Reads, coalesced on one pipelined connection.
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
            pool,
            timeout,
            client: OnceCell::new(),
            pipe: super::pipe::Pipe::new(addr, timeout),
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

    async fn client(&self) -> Result<&AsyncMetaClient, McError> {
        self.client
            .get_or_try_init(|| {
                // Boxed: connecting happens once, and inline it would
                // enlarge the future of every call.
                Box::pin(
                    AsyncMetaClient::builder()
                        .max_connections(Some(self.pool as usize))
                        .max_idle(self.pool as usize)
                        .connect_timeout(Some(self.timeout))
                        .io_timeout(Some(self.timeout))
                        .connect_async(self.addr),
                )
            })
            .await
    }

    /// Run `op` on this server within the call's timeout. A server that
    /// cannot be reached or does not answer in time is marked down.
    pub async fn call<'a, T, F>(&'a self, op: impl FnOnce(&'a AsyncMetaClient) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, McError>> + 'a,
    {
        let work = async {
            let c = self.client().await?;
            op(c).await
        };
        self.bounded(work).await
    }

    /// Read `key` through the read pipe (`mg KEY v f c`, with `T` when
    /// `touch` gives a TTL): whether it hit, and its value, client flags
    /// and CAS value. Failures mark the server down as [`Self::call`]'s do.
    pub async fn read(&self, key: &str, touch: Option<u32>) -> Result<Read, StoreError> {
        let mut cmd = MetaCommand::new(MetaOp::Get, key).flag("v").flag("f").flag("c");
        if let Some(ttl) = touch {
            cmd = cmd.flag(format!("T{ttl}"));
        }
        self.bounded(self.pipe.send(key, cmd)).await.map(Read::from)
    }

    /// Write `value` if `key` still has the CAS value `cas` (`ms KEY S C<cas>
    /// T<ttl> F<flags>`), through the pipe its read took: whether it was
    /// applied. Safe to send twice (see `pipe`).
    pub async fn write_as_read(&self, key: &str, value: &[u8], flags: u32, ttl: u32, cas: u64) -> Result<bool, StoreError> {
        let cmd = MetaCommand::new(MetaOp::Set, key).flag(format!("T{ttl}")).flag(format!("F{flags}")).flag(format!("C{cas}")).value(value);
        self.bounded(self.pipe.send(key, cmd)).await.map(|r| r.rc() == ReturnCode::Hd)
    }

    /// Finish a call or a read: marked up when it answers, down when the
    /// link fails or it times out.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, McError>>) -> Result<T, StoreError> {
        // The engine (or the read pipe) bounds each exchange by `timeout`
        // (and marks a server that lets it pass down, below). This outer
        // bound also covers the wait for a free pooled connection or a
        // batch: past it the call fails, but a gateway short of connections
        // or CPU does not mark the server down.
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

/// What a read found.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    pub hit: bool,
    pub value: Vec<u8>,
    pub flags: u32,
    pub cas: Option<u64>,
}

impl From<MetaResponse> for Read {
    fn from(r: MetaResponse) -> Self {
        let number = |prefix: u8| r.flags().find(|f| f.first() == Some(&prefix)).and_then(|f| std::str::from_utf8(&f[1..]).ok()?.parse::<u64>().ok());
        let (flags, cas) = (number(b'f').unwrap_or(0) as u32, number(b'c'));
        let hit = r.rc() == ReturnCode::Va;
        Self { hit, flags, cas, value: if hit { r.into_value().unwrap_or_default() } else { Vec::new() } }
    }
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
    fn a_read_takes_its_flags_and_cas_from_the_answer() {
        let read = |line: &[u8]| Read::from(MetaResponse::parse_header(line).unwrap());
        assert_eq!(read(b"EN"), Read::default(), "a miss");
        let hit = read(b"VA 0 f1 c42");
        assert_eq!((hit.hit, hit.flags, hit.cas), (true, 1, Some(42)));
        assert_eq!(read(b"VA 0 c7").flags, 0, "no f: flags 0");
    }

    #[test]
    fn the_order_is_stable_across_calls() {
        let s = servers(3);
        assert_eq!(order(&s, "session:abc"), order(&s, "session:abc"));
        assert_eq!(order(&s, "x").len(), 3);
    }
}
