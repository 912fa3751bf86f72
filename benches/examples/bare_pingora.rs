//! The HTTP bench's baseline: stock Pingora's `ProxyHttp` with an atomic
//! round robin and nothing else, driven as Switchyard drives it (same
//! thread count, same runtime flavour), so a run shows which part of a gap
//! to nginx is Switchyard's and which is Pingora's.
//!
//! With `BARE_MEMCACHED=HOST:PORT` it is also the floor of a centralized
//! session (`benches/session_floor.sh`): each request reads its client
//! connection's key (`mg KEY v c T1800`) before it is proxied and writes a
//! 200-byte value back with the CAS of that read (`ms KEY S200 C<cas>
//! T1800`) before the response leaves (not for a `GET`, which the cart
//! app answers without a change), each on a pooled connection the
//! request's own task drives: what any gateway pays for one read and one
//! write per request, without Wasm, a session format or a pipe task.
//! Each exchange is bounded as the gateway bounds its own. With
//! `BARE_MEMCACHED_PIPE=1` they go instead as Switchyard does: through
//! one task that owns one connection and writes every command waiting
//! when it wakes in one batch (`gateway/src/session/central/pipe.rs`).
//!
//! `bare_pingora LISTEN THREADS WORK_STEALING(true|false) BACKEND...`

use async_trait::async_trait;
use memcache::exp::{AsyncMetaConnection, MetaCommand, MetaOp, MetaResponse};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

struct Bare {
    backends: Vec<String>,
    next: AtomicUsize,
}

impl Bare {
    fn peer(&self) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(self.backends[i].as_str(), false, String::new())))
    }
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        self.peer()
    }
}

/// The session floor: [`Bare`] with a memcached read and write per request.
struct Floor {
    bare: Bare,
    mc: Memcached,
}

/// The session floor's store: memcached and its idle connections, or the
/// batching task's queue.
struct Memcached {
    addr: String,
    idle: Mutex<Vec<AsyncMetaConnection>>,
    pipe: Option<Mutex<Option<mpsc::UnboundedSender<Job>>>>,
}

/// The bound on each exchange, and (twice it) on each command's wait, as
/// the gateway bounds them (`timeout_ms` of `session_config` in
/// `benches/lib.sh`).
const TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

/// A command for the batching task, and where its answer goes.
type Job = (MetaCommand, oneshot::Sender<Option<MetaResponse>>);

/// The batching task: every command waiting when it wakes (up to 64)
/// leaves in one write; a failed batch fails its commands and redials.
async fn pipe_task(addr: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<AsyncMetaConnection> = None;
    let mut jobs = Vec::with_capacity(64);
    while rx.recv_many(&mut jobs, 64).await > 0 {
        let (cmds, replies): (Vec<MetaCommand>, Vec<_>) = jobs.drain(..).unzip();
        if conn.is_none() {
            conn = AsyncMetaConnection::connect(addr.as_str()).await.ok();
        }
        let answers = match conn.as_mut() {
            Some(c) => tokio::time::timeout(TIMEOUT, c.execute_batch(&cmds)).await.ok().and_then(Result::ok),
            None => None,
        };
        match answers {
            Some(answers) => replies.into_iter().zip(answers).for_each(|(tx, a)| drop(tx.send(Some(a)))),
            None => {
                conn = None;
                replies.into_iter().for_each(|tx| drop(tx.send(None)));
            }
        }
    }
}

impl Memcached {
    /// One command on a pooled connection (dialed when none is idle); a
    /// failed exchange drops its connection and fails the request.
    async fn exchange(&self, cmd: MetaCommand) -> Result<MetaResponse> {
        if let Some(pipe) = &self.pipe {
            let jobs = {
                let mut tx = pipe.lock().expect("pipe");
                let (addr, tx) = (&self.addr, &mut *tx);
                tx.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(pipe_task(addr.clone(), rx));
                    tx
                })
                .clone()
            };
            let (tx, rx) = oneshot::channel();
            let failed = || Error::explain(ErrorType::ReadError, "memcached batch failed");
            jobs.send((cmd, tx)).map_err(|_| failed())?;
            return tokio::time::timeout(TIMEOUT * 2, rx).await.ok().and_then(Result::ok).flatten().ok_or_else(failed);
        }
        let idle = self.idle.lock().expect("pool").pop();
        let mut conn = match idle {
            Some(c) => c,
            None => AsyncMetaConnection::connect(self.addr.as_str()).await.map_err(|e| Error::explain(ErrorType::ConnectError, e.to_string()))?,
        };
        let answer = tokio::time::timeout(TIMEOUT, conn.execute(&cmd)).await.map_err(|_| Error::explain(ErrorType::ReadError, "memcached timed out"))?;
        let answer = answer.map_err(|e| Error::explain(ErrorType::ReadError, e.to_string()))?;
        self.idle.lock().expect("pool").push(conn);
        Ok(answer)
    }
}

/// A request's session key and the CAS value its read found.
#[derive(Default)]
struct Ctx {
    key: String,
    cas: Option<u64>,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = Ctx;
    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.key = format!("floor:{}", session.client_addr().map(|a| a.to_string()).unwrap_or_default());
        let read = self.mc.exchange(MetaCommand::new(MetaOp::Get, ctx.key.as_str()).flag("v").flag("c").flag("T1800")).await?;
        ctx.cas = read.flags().find(|f| f.first() == Some(&b'c')).and_then(|f| std::str::from_utf8(&f[1..]).ok()?.parse().ok());
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        self.bare.peer()
    }

    /// The write-back, skipped for a `GET`: the cart read changes nothing,
    /// and the gateway writes only a session that changed.
    async fn response_filter(&self, session: &mut Session, _response: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if session.req_header().method == pingora::http::Method::GET {
            return Ok(());
        }
        let mut cmd = MetaCommand::new(MetaOp::Set, ctx.key.as_str()).flag("T1800").value([b'x'; 200]);
        if let Some(cas) = ctx.cas {
            cmd = cmd.flag(format!("C{cas}"));
        }
        self.mc.exchange(cmd).await.map(drop)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 4, "usage: bare_pingora LISTEN THREADS WORK_STEALING BACKEND...");
    let conf = ServerConf {
        threads: args[1].parse().expect("THREADS"),
        work_stealing: args[2].parse().expect("WORK_STEALING: true or false"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare { backends: args[3..].to_vec(), next: AtomicUsize::new(0) };
    match std::env::var("BARE_MEMCACHED") {
        Ok(addr) if !addr.is_empty() => {
            let pipe = (std::env::var("BARE_MEMCACHED_PIPE").as_deref() == Ok("1")).then(|| Mutex::new(None));
            let mc = Memcached { addr, idle: Mutex::new(Vec::new()), pipe };
            let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Floor { bare, mc });
            svc.add_tcp(&args[0]);
            server.add_service(svc);
        }
        _ => {
            let mut svc = pingora::proxy::http_proxy_service(&server.configuration, bare);
            svc.add_tcp(&args[0]);
            server.add_service(svc);
        }
    }
    server.run_forever();
}
