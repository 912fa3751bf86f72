//! The Pingora peer of each backend, built once from its upstream's
//! config: protocol (HTTP/1.1, h2 by ALPN, h2c), TLS with SNI, its CA and
//! client certificate, and the I/O timeouts. Requests and health checks
//! clone it, so both speak the same protocol.

use crate::config::{Protocol, UpstreamSpec};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The peer of `addr` in `spec`.
pub fn template(spec: &UpstreamSpec, addr: SocketAddr) -> HttpPeer {
    let tls = spec.tls.as_ref();
    let sni = tls.map(|t| t.sni.clone().unwrap_or_else(|| addr.ip().to_string())).unwrap_or_default();
    let mut p = HttpPeer::new(addr, tls.is_some(), sni);
    let o = &mut p.options;
    o.connection_timeout = Some(Duration::from_millis(spec.connect_timeout_ms));
    o.read_timeout = Some(Duration::from_millis(spec.io.read_ms));
    o.write_timeout = Some(Duration::from_millis(spec.io.write_ms));
    o.idle_timeout = Some(Duration::from_millis(spec.io.idle_ms));
    o.max_h2_streams = spec.max_streams;
    match spec.protocol {
        Protocol::Http1 => {}
        Protocol::H2 => o.alpn = ALPN::H2,
        Protocol::H2c => o.set_http_version(2, 2),
    }
    if let Some(t) = tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        if let Some(ca) = &t.ca {
            let certs: Vec<WrappedX509> = ca.iter().map(|der| WrappedX509::new(der.clone(), parse_x509)).collect();
            o.ca = Some(Arc::from(certs.into_boxed_slice()));
        }
        if let Some((chain, key)) = &t.client {
            p.client_cert_key = Some(Arc::new(CertKey::new(chain.clone(), key.clone())));
        }
    }
    p
}
