//! TLS on the SQL listener and toward the SQL backends. After a client's
//! SSL request, the connection continues over rustls with the HTTPS
//! listener's certificates (one `TlsHub`, one reload path); toward a
//! backend in `[sql.backend_tls]`, the gateway sends the SSL request
//! itself and verifies the backend's certificate.

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
        Box::pin(switch(io, |plain| self.0.accept(plain)))
    }
}

/// The client side, toward the backends of `[sql.backend_tls]`.
pub struct BackendTls {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

impl BackendTls {
    /// For the backend at `addr`, or `None` when it does not speak TLS.
    pub fn for_backend(spec: &crate::config::SqlBackendTls, role: &str, addr: std::net::SocketAddr) -> Result<Option<Self>, String> {
        if !spec.covers(role) {
            return Ok(None);
        }
        let name = spec.server_name.clone().unwrap_or_else(|| addr.ip().to_string());
        let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| format!("sql.backend_tls.server_name {name:?}: {e}"))?;
        let provider = std::sync::Arc::new(crate::tls::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| e.to_string())?;
        let config = if spec.verify {
            let mut roots = rustls::RootCertStore::empty();
            match &spec.ca {
                Some(ca) => {
                    for der in ca {
                        roots.add(rustls_pki_types::CertificateDer::from(der.clone())).map_err(|e| format!("sql.backend_tls.ca_file: {e}"))?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(native.certs);
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            tracing::warn!(backend = role, "sql.backend_tls.verify = false: the backend's certificate and name are NOT checked");
            builder.dangerous().with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider))).with_no_client_auth()
        };
        Ok(Some(Self { connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), name }))
    }
}

impl StartTls<ClientStream> for BackendTls {
    fn start<'a>(&'a self, io: &'a mut PacketIo<ClientStream>) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(switch(io, |plain| self.connector.connect(self.name.clone(), plain)))
    }
}

/// `verify = false`: any certificate, still with a valid signature over
/// the handshake (the channel is encrypted, the peer not authenticated).
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &rustls_pki_types::CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &rustls_pki_types::CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Take `io`'s plain stream out (with the bytes read ahead of it), run
/// `handshake` on it, and put the TLS stream in its place.
async fn switch<T, F, Fut>(io: &mut PacketIo<ClientStream>, handshake: F) -> io::Result<()>
where
    T: ClientIo + 'static,
    F: FnOnce(Prefixed) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let unread = io.take_unread();
    let placeholder: ClientStream = Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
    let inner = std::mem::replace(&mut io.stream, placeholder);
    io.stream = Box::new(handshake(Prefixed { unread, inner }).await?);
    Ok(())
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
