//! The downstream request as policies see it, built once per request.

use http::HeaderMap;
use std::net::IpAddr;

/// An owned, read-only view of the downstream request, shared by every seam
/// that runs for it (built once in the request phase, held in the CTX).
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
    /// The verified client certificate of the connection (mTLS).
    pub client_cert: Option<std::sync::Arc<crate::tls::ClientCert>>,
    /// While an lb canary runs: the scorecard of the version that routed
    /// the request, which its outcome goes to.
    pub routed_by: std::sync::OnceLock<std::sync::Arc<crate::wasm::canary::Scorecard>>,
}

impl RequestView {
    /// First value of a header, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A cookie's value from any `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(&self.headers, name)
    }
}

/// A cookie's value from any `Cookie` header of `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let mut r = RequestView::default();
        r.headers.append("cookie", "a=1; sid=xyz".parse().unwrap());
        r.headers.append("cookie", "b=2".parse().unwrap());
        assert_eq!(r.cookie("sid"), Some("xyz"));
        assert_eq!(r.cookie("b"), Some("2"));
        assert_eq!(r.cookie("c"), None);
    }
}
