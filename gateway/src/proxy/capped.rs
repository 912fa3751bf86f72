//! The HTTP listener's connection cap: past `server.max_connections` a new
//! connection gets a 503 naming the limit and is closed; the connections
//! being served are not disturbed. Also the HTTP/1.1 keep-alive loop, on a
//! task of its own, so an idle client costs its stream and little more.

use crate::metrics::metrics;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::ALPN;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `inner` (the HTTP proxy) behind a cap on open connections.
pub struct Capped<A> {
    inner: Arc<A>,
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open connection, counted while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics().http_connections.dec();
    }
}

impl<A> Capped<A> {
    pub fn new(inner: A, max: usize) -> Self {
        Self { inner: Arc::new(inner), open: Arc::new(AtomicUsize::new(0)), max }
    }

    fn slot(&self) -> Option<Slot> {
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).ok()?;
        metrics().http_connections.inc();
        Some(Slot(self.open.clone()))
    }

    /// Answer 503 and close; what the client already sent is read (up to
    /// 64 KiB, for at most 1 s) first, so the close does not reset the
    /// connection before the client reads the answer.
    async fn refuse(&self, mut stream: Stream) {
        metrics().http_refused.inc();
        let body = format!("503 Service Unavailable: the gateway serves at most {} connections (server.max_connections)\n", self.max);
        let head = format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        if stream.write_all((head + &body).as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 4096];
        let drain = async {
            let mut total = 0;
            while total < 64 << 10 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}

/// How long a keep-alive connection may sit idle between requests
/// (Pingora's default for HTTP/1).
const KEEPALIVE: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    /// Serve the connection, keep-alive requests included, while it holds
    /// a slot. HTTP/1.1 moves to a task of its own ([`keep_alive`]) and
    /// this one, Pingora's accept task, ends: that task's future is sized
    /// for the TLS handshake and Pingora's loop, and an idle client would
    /// hold it for as long as it stays connected. HTTP/2 and h2c keep
    /// Pingora's loop.
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(slot) = self.slot() else {
            self.refuse(stream).await;
            return None;
        };
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        if h2c || stream.selected_alpn_proto().is_some_and(|p| p != ALPN::H1) {
            let _slot = slot;
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let (inner, shutdown) = (self.inner.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            keep_alive(inner, stream, shutdown).await;
        });
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Pingora's HTTP/1.1 keep-alive loop, run here so that an idle connection
/// holds only its stream and a 512-byte read: Pingora's own loop waits for
/// the next request inside the boxed request future (the whole proxy
/// state machine, tens of KiB per idle client).
async fn keep_alive<A: HttpServerApp>(app: Arc<A>, mut stream: Stream, shutdown: ShutdownWatch) {
    let mut settings = None;
    while let Some(first) = first_bytes(&mut stream, &shutdown).await {
        let mut session = ServerSession::new_http1(stream);
        match settings.take() {
            Some(s) => HttpPersistentSettings::apply_to_session(s, &mut session),
            None => session.set_keepalive(Some(KEEPALIVE.as_secs())),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        session.set_pipelined_prefix(first);
        let Some(reused) = app.process_new_http(session, &shutdown).await else { return };
        (stream, settings) = reused.consume();
    }
}

/// Wait for a request's first bytes: `None` when the client closes, stays
/// idle past `KEEPALIVE`, or the gateway shuts down. What arrived (a whole
/// small request, usually, in the one read Pingora would have made) goes
/// into a buffer the size Pingora reads headers into.
async fn first_bytes(stream: &mut Stream, shutdown: &ShutdownWatch) -> Option<BytesMut> {
    let mut shutdown = shutdown.clone();
    // Already shutting down: wait only `LINGER` (closing at once would
    // reset a request the client sent after the last answer).
    let wait = if *shutdown.borrow() { LINGER } else { KEEPALIVE };
    let mut head = [0u8; FIRST_READ];
    let n = {
        let read = async {
            match tokio::time::timeout(wait, stream.read(&mut head)).await {
                Ok(Ok(n)) if n > 0 => Some(n),
                _ => None,
            }
        };
        tokio::pin!(read);
        tokio::select! {
            n = &mut read => n,
            // Shutting down (SIGTERM, or SIGQUIT handing the sockets to a
            // new process): a request already on its way still gets an
            // answer, with `Connection: close`, rather than a reset; a
            // quiet client is let go after `LINGER`.
            _ = shutdown.changed() => tokio::time::timeout(LINGER, &mut read).await.ok().flatten(),
        }
    }?;
    let mut buf = BytesMut::with_capacity(HEADER_BUF.max(n));
    buf.extend_from_slice(&head[..n]);
    Some(buf)
}

/// How long an idle connection is kept once the gateway shuts down.
const LINGER: Duration = Duration::from_secs(1);

/// Pingora's initial request-header buffer.
const HEADER_BUF: usize = 4096;

/// Bytes an idle connection waits with: a request line and a few headers
/// (most API requests whole); a longer header takes Pingora a second read.
const FIRST_READ: usize = 512;
