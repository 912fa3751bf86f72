//! The `replicated` session tier across gateway nodes (`[cluster]`). Every
//! write is applied here and pushed to every peer as a signed, versioned
//! delta; a peer that is down is retried with backoff and its backlog is
//! bounded; a node that starts catches up by a state transfer from a live
//! peer while it already serves traffic.

mod store;
mod wire;

pub use store::{Entry, Expect, Refused, Versioned};

use crate::config::ClusterSpec;
use crate::metrics::metrics;
use crate::session::StoreError;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use wire::Message;

/// Deltas per frame.
const BATCH: usize = 256;
/// Entries per state-transfer frame.
const STATE_CHUNK: usize = 512;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Budget of one connect or state transfer step.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What waits to be sent to one peer.
#[derive(Default)]
struct Backlog {
    queue: VecDeque<Entry>,
    /// The queue overflowed: send the whole state when the peer is back.
    resync: bool,
}

/// One peer node.
struct Peer {
    id: u32,
    label: String,
    addr: SocketAddr,
    backlog: Mutex<Backlog>,
    wake: Notify,
}

/// This node's view of the cluster and the replicated data.
pub struct Cluster {
    pub id: u32,
    listen: SocketAddr,
    key: Vec<u8>,
    peers: Vec<Arc<Peer>>,
    data: Mutex<Versioned>,
    caught_up: AtomicBool,
    backlog_cap: usize,
    ttl_s: u32,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    pub fn new(spec: &ClusterSpec) -> Arc<Self> {
        let peers = spec
            .peers
            .iter()
            .map(|(id, addr)| Arc::new(Peer { id: *id, label: id.to_string(), addr: *addr, backlog: Mutex::default(), wake: Notify::new() }))
            .collect();
        let c = Arc::new(Self {
            id: spec.id,
            listen: spec.listen,
            key: spec.key.clone(),
            peers,
            data: Mutex::default(),
            caught_up: AtomicBool::new(spec.peers.is_empty()),
            backlog_cap: spec.backlog,
            ttl_s: spec.ttl_s,
        });
        metrics().cluster_caught_up.set(i64::from(c.caught_up()));
        c
    }

    /// Whether this node has the state of a live peer (or has no peers).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// `/healthz` detail.
    pub fn health(&self) -> String {
        let state = if self.caught_up() { "caught up" } else { "catching up: state transfer from a peer not finished" };
        format!("cluster node {}: {state}; {} replicated keys\n", self.id, self.data.lock().len())
    }

    /// Every node's id, this one's first.
    pub fn node_ids(&self) -> Vec<u32> {
        std::iter::once(self.id).chain(self.peers.iter().map(|p| p.id)).collect()
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.data.lock().get(key, now_ms()).map(<[u8]>::to_vec)
    }

    /// Write (or delete, `None`) and push to every peer. A retired key
    /// refuses values (`Retired`) and stays retired on a delete.
    pub fn set(&self, key: &str, value: Option<Vec<u8>>, ttl_s: u32) -> Result<(), StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        let now = now_ms();
        let deleting = value.is_none();
        let Some(entry) = self.data.lock().write(self.id, key, value, now + u64::from(ttl) * 1000, now) else {
            return if deleting { Ok(()) } else { Err(StoreError::Retired) };
        };
        for p in &self.peers {
            self.enqueue(p, entry.clone());
        }
        Ok(())
    }

    /// A value and the version `cas` compares.
    pub fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        self.data.lock().versioned(key, now_ms()).map(|(v, version)| (v.to_vec(), version))
    }

    /// Write `value` if the key holds what `expect` says, decided under
    /// this node's lock only: two nodes may both accept conflicting writes
    /// before they hear of each other; the newer version then wins on
    /// every node. False: the key held something else.
    pub fn write_if(&self, key: &str, value: Vec<u8>, ttl_s: u32, expect: Expect) -> Result<bool, StoreError> {
        let ttl = if ttl_s == 0 { self.ttl_s } else { ttl_s };
        let now = now_ms();
        let entry = match self.data.lock().write_if(self.id, key, value, now + u64::from(ttl) * 1000, now, expect) {
            Ok(e) => e,
            Err(Refused::Changed) => return Ok(false),
            Err(Refused::Retired) => return Err(StoreError::Retired),
        };
        for p in &self.peers {
            self.enqueue(p, entry.clone());
        }
        Ok(true)
    }

    fn enqueue(&self, peer: &Peer, e: Entry) {
        let mut b = peer.backlog.lock();
        if b.resync {
            return; // the whole state goes when the peer is back
        }
        if b.queue.len() >= self.backlog_cap {
            // Past the bound the queue is dropped, counted, and replaced
            // by a full state transfer once the peer answers again.
            metrics().cluster_backlog_dropped.with_label_values(&[peer.label.as_str()]).inc_by(b.queue.len() as u64 + 1);
            b.queue.clear();
            b.resync = true;
        } else {
            b.queue.push_back(e);
        }
        drop(b);
        peer.wake.notify_one();
    }

    fn frame(&self, msg: &Message) -> Vec<u8> {
        wire::encode(&self.key, self.id, msg)
    }

    fn known(&self, id: u32) -> Option<&Arc<Peer>> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Check a received frame: a known peer, a valid MAC.
    fn accept(&self, frame: &[u8]) -> Option<(Arc<Peer>, Message)> {
        let m = metrics();
        match wire::decode(&self.key, frame) {
            Ok((from, msg)) => match self.known(from) {
                Some(p) => {
                    m.cluster_bytes_received.with_label_values(&[p.label.as_str()]).inc_by(frame.len() as u64 + 4);
                    m.cluster_messages_received.with_label_values(&[p.label.as_str()]).inc();
                    Some((p.clone(), msg))
                }
                None => {
                    m.cluster_rejected.with_label_values(&["unknown_node"]).inc();
                    tracing::warn!(from, "cluster message from a node not in [cluster] peers dropped");
                    None
                }
            },
            Err(wire::Refused::BadMac) => {
                m.cluster_rejected.with_label_values(&["bad_mac"]).inc();
                tracing::warn!("cluster message with a bad MAC dropped");
                None
            }
            Err(wire::Refused::Malformed) => {
                m.cluster_rejected.with_label_values(&["malformed"]).inc();
                None
            }
        }
    }

    fn apply(&self, entries: Vec<Entry>) {
        let mut data = self.data.lock();
        let now = now_ms();
        let (mut applied, mut stale) = (0u64, 0u64);
        let mut revoked = Vec::new();
        for e in entries {
            // A peer's `DELETE /sessions`: cut the principal's responses here.
            let signal = e.key.starts_with(crate::session::index::SIGNAL_PREFIX).then(|| e.value.clone()).flatten();
            if data.apply(e, now) {
                applied += 1;
                revoked.extend(signal);
            } else {
                stale += 1;
            }
        }
        drop(data);
        revoked.iter().for_each(|p| crate::session::index::signalled(p));
        let m = metrics();
        m.cluster_deltas.with_label_values(&["applied"]).inc_by(applied);
        m.cluster_deltas.with_label_values(&["stale"]).inc_by(stale);
    }

    fn state_frames(&self) -> Vec<Vec<u8>> {
        let entries: Vec<Entry> = self.data.lock().entries().cloned().collect();
        let mut chunks: Vec<Vec<Entry>> = entries.chunks(STATE_CHUNK).map(<[Entry]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let n = chunks.len();
        chunks.into_iter().enumerate().map(|(i, entries)| self.frame(&Message::State { entries, last: i + 1 == n })).collect()
    }

    fn sent(&self, peer: &Peer, bytes: usize) {
        let m = metrics();
        m.cluster_bytes_sent.with_label_values(&[peer.label.as_str()]).inc_by(bytes as u64);
        m.cluster_messages_sent.with_label_values(&[peer.label.as_str()]).inc();
    }
}

/// Serve one inbound link: deltas, or a state request.
async fn serve_link(cluster: Arc<Cluster>, mut s: TcpStream) {
    loop {
        let frame = match wire::read_frame(&mut s).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("cluster link closed: {e}");
                metrics().cluster_rejected.with_label_values(&["malformed"]).inc();
                return;
            }
        };
        let Some((peer, msg)) = cluster.accept(&frame) else { continue };
        match msg {
            Message::Deltas(entries) => cluster.apply(entries),
            Message::State { entries, .. } => cluster.apply(entries),
            Message::StateRequest => {
                for f in cluster.state_frames() {
                    if wire::write_frame(&mut s, &f).await.is_err() {
                        return;
                    }
                    cluster.sent(&peer, f.len());
                }
            }
        }
    }
}

/// Push this node's writes to one peer, for as long as the process runs.
async fn sender(cluster: Arc<Cluster>, peer: Arc<Peer>) {
    let mut conn: Option<TcpStream> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let (batch, resync) = {
            let mut b = peer.backlog.lock();
            let n = b.queue.len().min(BATCH);
            (b.queue.drain(..n).collect::<Vec<_>>(), std::mem::take(&mut b.resync))
        };
        if batch.is_empty() && !resync {
            peer.wake.notified().await;
            continue;
        }
        let frames = if resync { cluster.state_frames() } else { vec![cluster.frame(&Message::Deltas(batch.clone()))] };
        let sent = async {
            if conn.is_none() {
                let s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(peer.addr)).await.map_err(|_| std::io::Error::other("connect timed out"))??;
                s.set_nodelay(true)?;
                conn = Some(s);
            }
            let s = conn.as_mut().expect("connected");
            for f in &frames {
                tokio::time::timeout(IO_TIMEOUT, wire::write_frame(s, f)).await.map_err(|_| std::io::Error::other("write timed out"))??;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        match sent {
            Ok(()) => {
                frames.iter().for_each(|f| cluster.sent(&peer, f.len()));
                metrics().cluster_peer_up.with_label_values(&[peer.label.as_str()]).set(1);
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                tracing::debug!(peer = peer.id, "cluster peer unreachable, retrying in {backoff:?}: {e}");
                metrics().cluster_peer_up.with_label_values(&[peer.label.as_str()]).set(0);
                conn = None;
                // Put the batch back (or keep the resync) and wait.
                {
                    let mut b = peer.backlog.lock();
                    if resync || b.resync {
                        b.resync = true;
                    } else if b.queue.len() + batch.len() > cluster.backlog_cap {
                        metrics().cluster_backlog_dropped.with_label_values(&[peer.label.as_str()]).inc_by((b.queue.len() + batch.len()) as u64);
                        b.queue.clear();
                        b.resync = true;
                    } else {
                        for e in batch.into_iter().rev() {
                            b.queue.push_front(e);
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Ask peers, in turn, for their state until one answers it all.
async fn catch_up(cluster: Arc<Cluster>) {
    let started = Instant::now();
    let mut round = 0u32;
    while !cluster.caught_up() {
        for peer in &cluster.peers {
            match transfer_from(&cluster, peer).await {
                Ok(n) => {
                    cluster.caught_up.store(true, Ordering::Relaxed);
                    let m = metrics();
                    m.cluster_caught_up.set(1);
                    m.cluster_state_transfer_seconds.observe(started.elapsed().as_secs_f64());
                    tracing::info!(peer = peer.id, entries = n, "cluster state transfer done in {:?}", started.elapsed());
                    return;
                }
                Err(e) => tracing::debug!(peer = peer.id, "state transfer failed: {e}"),
            }
        }
        round += 1;
        if round == 3 {
            // No peer answered three rounds: this is the first node up.
            tracing::warn!("no cluster peer answered a state request; serving with this node's state alone");
            cluster.caught_up.store(true, Ordering::Relaxed);
            metrics().cluster_caught_up.set(1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn transfer_from(cluster: &Cluster, peer: &Peer) -> std::io::Result<usize> {
    let mut s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(peer.addr)).await.map_err(|_| std::io::Error::other("connect timed out"))??;
    let req = cluster.frame(&Message::StateRequest);
    wire::write_frame(&mut s, &req).await?;
    cluster.sent(peer, req.len());
    let mut n = 0;
    loop {
        let frame = tokio::time::timeout(IO_TIMEOUT * 6, wire::read_frame(&mut s))
            .await
            .map_err(|_| std::io::Error::other("state transfer timed out"))??
            .ok_or_else(|| std::io::Error::other("peer closed the link mid-transfer"))?;
        let Some((_, Message::State { entries, last })) = cluster.accept(&frame) else { continue };
        n += entries.len();
        cluster.apply(entries);
        if last {
            return Ok(n);
        }
    }
}

/// The cluster's listener, senders, catch-up and expiry, as one service.
pub struct ClusterService(pub Arc<Cluster>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ClusterService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let c = self.0.clone();
        let listener = match TcpListener::bind(c.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cluster.listen {}: {e}; this node neither receives nor serves state", c.listen);
                return;
            }
        };
        let mut tasks = vec![tokio::spawn(catch_up(c.clone()))];
        tasks.extend(c.peers.iter().map(|p| tokio::spawn(sender(c.clone(), p.clone()))));
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let mut d = c.data.lock();
                    d.expire(now_ms());
                    metrics().cluster_keys.set(d.len() as i64);
                }
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(serve_link(c.clone(), s));
                    }
                    Err(e) => tracing::warn!("cluster accept: {e}"),
                },
            }
        }
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}
