//! Session reads, and the compare-and-swap write-back that follows one,
//! coalesced on one pipelined connection per server: the commands of
//! concurrent requests leave in one write and their answers come back in
//! one read, so memcached and the gateway wake once per batch instead of
//! once per command. Only commands that may be sent twice go this way: a
//! read changes nothing, and a write conditional on the CAS value of the
//! read before it applies at most once (sent again after it applied, it
//! finds the CAS value changed and is refused, and its caller takes the
//! general path). So a batch that breaks needs no attribution; other
//! writes keep the pooled connections and their ambiguity rules. One
//! connection also keeps a request's write-back behind its read, and a
//! later read of the key on this node behind that write.

use memcache::exp::{AsyncMetaConnection, Error as McError, MetaCommand, MetaResponse};
use std::net::SocketAddr;
use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most reads one write carries.
const BATCH: usize = 64;

/// A read waiting for its batch, and where its answer goes.
type Job = (MetaCommand, oneshot::Sender<Result<MetaResponse, McError>>);

/// One server's read pipe: a task that owns the connection, started by
/// the first read on the runtime serving it, and again by the next read
/// if that runtime ended.
pub struct Pipe {
    addr: SocketAddr,
    timeout: Duration,
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl Pipe {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self { addr, timeout, jobs: Mutex::new(None) }
    }

    fn jobs(&self) -> mpsc::UnboundedSender<Job> {
        let mut jobs = self.jobs.lock();
        match jobs.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(self.addr, self.timeout, rx));
                jobs.insert(tx).clone()
            }
        }
    }

    /// Send `cmd` (a read, or a write that may be sent twice: see the
    /// module) with the next batch; its answer, or why there is none. A
    /// command with a key memcached would refuse is refused here, so it
    /// never breaks a batch of other requests' commands.
    pub async fn send(&self, key: &str, cmd: MetaCommand) -> Result<MetaResponse, McError> {
        if let Err(e) = super::super::check_key(key) {
            return Err(McError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("key refused: {e:?}"))));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs().send((cmd, tx)).map_err(|_| gone("the read pipe stopped"))?;
        rx.await.map_err(|_| gone("the read pipe dropped the read"))?
    }
}

fn gone(why: &str) -> McError {
    McError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, why.to_string()))
}

/// Take every waiting read (up to [`BATCH`]), write them at once, answer
/// each in order. A batch that fails on a connection used before (the
/// server may have restarted since) is sent once more on a new one, as
/// reads may be; one that fails again or passes `timeout` fails all its
/// reads, and the next batch dials again.
async fn run(addr: SocketAddr, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<AsyncMetaConnection> = None;
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let (cmds, replies): (Vec<MetaCommand>, Vec<_>) = jobs.drain(..).unzip();
        let reused = conn.is_some();
        let mut out = exchange(&mut conn, addr, &cmds, timeout).await;
        if reused && matches!(out, Err(ref e) if !matches!(e, McError::Timeout { .. })) {
            out = exchange(&mut conn, addr, &cmds, timeout).await;
        }
        match out {
            Ok(answers) if answers.len() == replies.len() => {
                for (tx, answer) in replies.into_iter().zip(answers) {
                    let _ = tx.send(Ok(answer));
                }
            }
            other => {
                conn = None;
                let (timed_out, why) = match other {
                    Err(McError::Timeout { .. }) => (true, String::new()),
                    Err(e) => (false, e.to_string()),
                    Ok(a) => (false, format!("{} answers to {} reads", a.len(), replies.len())),
                };
                for tx in replies {
                    let e = if timed_out { McError::Timeout { key: Vec::new() } } else { McError::Io(std::io::Error::other(why.clone())) };
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}

/// One batch on `conn` (dialed first if there is none) within `timeout`;
/// a failed exchange leaves no connection behind.
async fn exchange(conn: &mut Option<AsyncMetaConnection>, addr: SocketAddr, cmds: &[MetaCommand], timeout: Duration) -> Result<Vec<MetaResponse>, McError> {
    let work = async {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(AsyncMetaConnection::connect(addr).await?),
        };
        c.execute_batch(cmds).await
    };
    let out = tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| Err(McError::Timeout { key: Vec::new() }));
    if out.is_err() {
        *conn = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcache::exp::MetaOp;

    /// Nothing listens on the address: a refused command fails before any
    /// batch or connection.
    #[tokio::test]
    async fn a_key_memcached_would_refuse_never_joins_a_batch() {
        let pipe = Pipe::new("127.0.0.1:9".parse().unwrap(), Duration::from_millis(200));
        let long = "k".repeat(300);
        assert!(pipe.send(&long, MetaCommand::new(MetaOp::Get, long.as_str()).flag("v")).await.is_err());
        assert!(pipe.jobs.lock().is_none(), "no pipe task was started for it");
    }
}
