//! The HTTP listener's connection cap: past `server.max_connections` a new
//! connection gets a 503 naming the limit and is closed; the connections
//! being served are not disturbed.

use crate::metrics::metrics;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `inner` (the HTTP proxy) behind a cap on open connections.
pub struct Capped<A> {
    inner: Arc<A>,
    open: AtomicUsize,
    max: usize,
}

/// One open connection, counted while it lives.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics().http_connections.dec();
    }
}

impl<A> Capped<A> {
    pub fn new(inner: A, max: usize) -> Self {
        Self { inner: Arc::new(inner), open: AtomicUsize::new(0), max }
    }

    fn slot(&self) -> Option<Slot<'_>> {
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).ok()?;
        metrics().http_connections.inc();
        Some(Slot(&self.open))
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

#[async_trait::async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    /// Serve the connection, keep-alive requests included, while it holds a slot.
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(_slot) = self.slot() else {
            self.refuse(stream).await;
            return None;
        };
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
