//! The SQL listener's switch to TLS: after a client's SSL request, the
//! connection continues over rustls with the HTTPS listener's
//! certificates (one `TlsHub`, one reload path). TLS ends at the gateway.

use super::wire::PacketIo;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use switchyard_mysql::auth::StartTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client connection, before or after the switch.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> ClientIo for T {}

pub type ClientStream = Box<dyn ClientIo>;

/// The listener's TLS acceptor.
pub struct SqlTls(pub tokio_rustls::TlsAcceptor);

impl StartTls<ClientStream> for SqlTls {
    fn start<'a>(&'a self, io: &'a mut PacketIo<ClientStream>) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let unread = io.take_unread();
            let placeholder: ClientStream = Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
            let raw = std::mem::replace(&mut io.stream, placeholder);
            let tls = self.0.accept(Prefixed { unread, inner: raw }).await?;
            io.stream = Box::new(tls);
            Ok(())
        })
    }
}

/// `inner` with bytes already read from it put back in front.
struct Prefixed {
    unread: BytesMut,
    inner: ClientStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_read_ahead_come_back_first() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        let mut p = Prefixed { unread: BytesMut::from(&b"hello"[..]), inner: Box::new(a) };
        let mut got = vec![0u8; 11];
        p.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }
}
