//! A client with a cookie jar (and optionally a passport header it keeps
//! from responses), for the session tests and benches.

use crate::{request, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One user agent.
#[derive(Clone)]
pub struct Browser {
    pub addr: SocketAddr,
    pub cookies: BTreeMap<String, String>,
    /// A header whose value the browser keeps from responses and sends back
    /// (`switchyard-passport`), instead of cookies.
    pub carry: Option<(String, Option<String>)>,
    /// Send cookies (false: an offline client that only keeps the passport).
    pub use_cookies: bool,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, cookies: BTreeMap::new(), carry: None, use_cookies: true }
    }

    /// A client that carries `header` instead of cookies.
    pub fn carrying(addr: SocketAddr, header: &str) -> Self {
        Self { addr, cookies: BTreeMap::new(), carry: Some((header.to_string(), None)), use_cookies: false }
    }

    /// One request; cookies and the carried header go out and come back.
    pub fn send(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if self.use_cookies && !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        let carried = self.carry.clone();
        if let Some((name, Some(value))) = &carried {
            headers.push((name, value));
        }
        let r = request(self.addr, method, path, &headers, body);
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let pair = v.split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    if v.contains("Max-Age=0") {
                        self.cookies.remove(name.trim());
                    } else {
                        self.cookies.insert(name.trim().to_string(), value.trim().to_string());
                    }
                }
            }
            if let Some((name, slot)) = self.carry.as_mut() {
                if k.eq_ignore_ascii_case(name) {
                    *slot = Some(v.clone());
                }
            }
        }
        r
    }

    /// A request answered with JSON: (status, body).
    pub fn json(&mut self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self.send(method, path, &[], b"");
        let v = serde_json::from_str(&r.body).unwrap_or_else(|_| serde_json::json!({ "raw": r.body }));
        (r.status, v)
    }
}
