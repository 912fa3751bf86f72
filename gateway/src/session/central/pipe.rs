//! Every memcached command of one server coalesced per worker thread: a
//! task on each thread that uses the server takes the commands waiting on
//! that thread and sends them as one pipelined batch (`memcache::exp`'s
//! `run_batch`: one write, one read, each answer matched to its command by
//! an opaque token), so memcached and the gateway wake once per batch
//! instead of once per command, and no command crosses threads to get
//! there. The crate attributes a failed batch per command: one written in
//! full with side effects is `Error::Ambiguous` (it may have landed), the
//! rest were not applied.

use memcache::exp::{AsyncMetaClient, Error as McError, MetaCommand, MetaOp, Op, OpResult};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::thread::ThreadId;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most commands one write carries.
const BATCH: usize = 64;

/// A command waiting for its batch, and where its answer goes.
type Job = (Op, oneshot::Sender<Result<OpResult, McError>>);

/// One server's pipes, one per thread that sends it commands. A pipe's
/// task ends when the `Pipe` is dropped (a reload replaced the tier) or
/// when its runtime ends; the next command on that thread starts another.
pub struct Pipe {
    addr: SocketAddr,
    /// Most connections each thread's client keeps (`[session.central] pool`).
    pool: u32,
    timeout: Duration,
    senders: Mutex<Vec<(ThreadId, mpsc::UnboundedSender<Job>)>>,
}

impl Pipe {
    pub fn new(addr: SocketAddr, pool: u32, timeout: Duration) -> Self {
        Self { addr, pool, timeout, senders: Mutex::new(Vec::new()) }
    }

    /// This thread's pipe, started on the runtime running the caller.
    fn sender(&self) -> mpsc::UnboundedSender<Job> {
        let me = std::thread::current().id();
        let mut senders = self.senders.lock();
        senders.retain(|(_, tx)| !tx.is_closed());
        if let Some((_, tx)) = senders.iter().find(|(t, _)| *t == me) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.addr, self.pool, self.timeout, rx));
        senders.push((me, tx.clone()));
        tx
    }

    /// Send `op` with this thread's next batch; its answer, or why there is
    /// none. An op whose key memcached would refuse is refused here, so it
    /// never joins a batch of other requests' commands.
    pub async fn run(&self, op: Op) -> Result<OpResult, McError> {
        check_key(&op)?;
        let (tx, rx) = oneshot::channel();
        self.sender().send((op, tx)).map_err(|_| gone("the memcached pipe stopped"))?;
        rx.await.map_err(|_| gone("the memcached pipe dropped the command"))?
    }
}

fn key(op: &Op) -> &[u8] {
    match op {
        Op::Get(g) => &g.key,
        Op::Set(s) => &s.key,
        Op::Delete(d) => &d.key,
        Op::Arithmetic(a) => &a.key,
        // A kind this code does not send: refused as an empty key.
        _ => &[],
    }
}

/// The crate's own key check (length, no spaces or control bytes), the one
/// a batch applies to all its commands before it writes any.
fn check_key(op: &Op) -> Result<(), McError> {
    MetaCommand::new(MetaOp::Get, key(op)).encode().map(drop)
}

fn gone(why: &str) -> McError {
    McError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, why.to_string()))
}

/// Take every waiting command (up to [`BATCH`]), send them at once, answer
/// each, then the next batch: one batch at a time, so the thread's own
/// client uses one connection (up to `pool` while a dead one is redialed).
/// The engine probes an idle connection before reuse and redials a pooled
/// one that failed before anything was written.
async fn run(addr: SocketAddr, pool: u32, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Job>) {
    let built = AsyncMetaClient::builder().max_connections(Some(pool as usize)).max_idle(1).connect_timeout(Some(timeout)).io_timeout(Some(timeout)).connect_async(addr).await;
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.drain(..).unzip();
        let client = match &built {
            Ok(c) => c,
            Err(e) => {
                for tx in replies {
                    let _ = tx.send(Err(gone(&format!("no client for {addr}: {e}"))));
                }
                continue;
            }
        };
        for (tx, answer) in replies.into_iter().zip(batch(client, ops).await) {
            let _ = tx.send(answer);
        }
    }
}

/// One batch, one answer per op. The crate checks every op before it
/// writes any and refuses the whole batch if one fails; each was checked
/// alone already, but should one still be refused, each op runs alone so
/// the others are unaffected (nothing of the refused batch was sent).
async fn batch(client: &AsyncMetaClient, ops: Vec<Op>) -> Vec<Result<OpResult, McError>> {
    if ops.len() == 1 {
        return match client.run_batch(ops).await {
            Ok(answers) => answers,
            Err(e) => vec![Err(e)],
        };
    }
    match client.run_batch(ops.iter().cloned()).await {
        Ok(answers) => answers,
        Err(_) => {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(match client.run_batch([op]).await {
                    Ok(mut a) => a.pop().unwrap_or_else(|| Err(gone("no answer"))),
                    Err(e) => Err(e),
                });
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcache::exp::Get;

    /// Nothing listens on the address: a refused command fails before any
    /// batch or connection.
    #[tokio::test]
    async fn a_key_memcached_would_refuse_never_joins_a_batch() {
        let pipe = Pipe::new("127.0.0.1:9".parse().unwrap(), 2, Duration::from_millis(200));
        assert!(pipe.run(Get::new("k".repeat(300)).into()).await.is_err());
        assert!(pipe.run(Get::new("").into()).await.is_err());
        assert!(pipe.senders.lock().is_empty(), "no pipe task was started for them");
    }

    /// A server that is down fails the command, with the link error.
    #[tokio::test]
    async fn a_server_that_is_down_fails_the_command() {
        let pipe = Pipe::new("127.0.0.1:9".parse().unwrap(), 2, Duration::from_millis(200));
        let e = pipe.run(Get::new("k").into()).await.unwrap_err();
        assert!(!matches!(e, McError::Ambiguous { .. }), "a read is never ambiguous: {e:?}");
    }
}
