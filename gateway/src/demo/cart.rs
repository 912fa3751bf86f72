//! The demo shopping cart (and the exam of paper 002), speaking the session
//! backend protocol of `docs/sessions.md`: with `Sessions::Header` it is
//! stateless (the gateway's session plugin carries the session in
//! `x-switchyard-session`), with `Sessions::Memory` it keeps sessions in
//! its own memory under a `demo_sid` cookie, which the sticky strategy
//! protects and a restart loses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Where the cart keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sessions {
    /// In `x-switchyard-session` headers: the backend is stateless.
    Header,
    /// In this process, under the `demo_sid` cookie.
    Memory,
}

/// Cookie of the memory mode.
const SID_COOKIE: &str = "demo_sid";

/// The cart app.
pub struct Cart {
    pub mode: Sessions,
    memory: Mutex<HashMap<String, Map<String, Value>>>,
}

/// What one request did.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// Headers to add (session changes, cookies).
    pub headers: Vec<(String, String)>,
}

impl Cart {
    pub fn new(mode: Sessions) -> Self {
        Self { mode, memory: Mutex::default() }
    }

    /// Serve `/cart...` and `/exam...`; `None` for other paths.
    pub fn serve(&self, method: &str, path: &str, query: &str, headers: &http::HeaderMap, body: &[u8]) -> Option<Answer> {
        if !is_app_path(path) {
            return None;
        }
        let (sid, attrs) = self.load(headers);
        let (status, out, changes, end) = app(method, path, query, attrs.as_ref(), body);
        let mut headers = Vec::new();
        match self.mode {
            Sessions::Header => {
                if !changes.is_empty() {
                    headers.push(("x-switchyard-session-set".into(), B64.encode(Value::Object(changes).to_string())));
                }
                if end {
                    headers.push(("x-switchyard-session-end".into(), "1".into()));
                }
                if status == 200 && path == "/cart/elevate" {
                    // A privilege change that keeps the user: ask for a new id.
                    headers.push(("x-switchyard-session-renew".into(), "1".into()));
                }
            }
            Sessions::Memory => {
                let mut mem = self.memory.lock();
                if end {
                    if let Some(s) = &sid {
                        mem.remove(s);
                    }
                } else if !changes.is_empty() {
                    let sid = sid.unwrap_or_else(|| {
                        let s = format!("{:016x}{:016x}", rand_u64(), rand_u64());
                        headers.push(("set-cookie".into(), format!("{SID_COOKIE}={s}; Path=/; HttpOnly")));
                        s
                    });
                    let entry = mem.entry(sid).or_default();
                    for (k, v) in changes {
                        if v.is_null() {
                            entry.remove(&k);
                        } else {
                            entry.insert(k, v);
                        }
                    }
                }
            }
        }
        Some(Answer { status, body: out, headers })
    }

    /// The session id (memory mode) and the session, if any.
    fn load(&self, headers: &http::HeaderMap) -> (Option<String>, Option<Map<String, Value>>) {
        match self.mode {
            Sessions::Header => {
                let attrs = headers
                    .get("x-switchyard-session")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| B64.decode(v).ok())
                    .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
                    .filter(|m| !m.is_empty());
                (None, attrs)
            }
            Sessions::Memory => {
                let sid = crate::seams::request::cookie(headers, SID_COOKIE).map(str::to_string);
                let attrs = sid.as_ref().and_then(|s| self.memory.lock().get(s).cloned());
                (sid.filter(|_| attrs.is_some()), attrs)
            }
        }
    }
}

/// The application: (status, body, session changes, end session).
fn app(method: &str, path: &str, query: &str, s: Option<&Map<String, Value>>, body: &[u8]) -> (u16, Value, Map<String, Value>, bool) {
    let mut set = Map::new();
    let q = |k: &str| query.split('&').filter_map(|kv| kv.split_once('=')).find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
    let user = s.and_then(|s| s.get("user")).cloned();
    let cart = s.and_then(|s| s.get("cart")).and_then(Value::as_array).cloned().unwrap_or_default();
    match (method, path) {
        ("POST", "/cart/login") => {
            let Some(name) = q("user") else { return (400, json!({"error": "user= is required"}), set, false) };
            set.insert("user".into(), json!(name));
            set.insert("cart".into(), json!([]));
            (200, json!({"user": name, "cart": []}), set, false)
        }
        ("POST", "/cart/logout") => (200, json!({"user": null}), set, true),
        (_, "/cart/add") | (_, "/cart/incr") | (_, "/cart/elevate") | ("GET", "/cart") if user.is_none() => (401, json!({"error": "log in first: POST /cart/login?user=NAME"}), set, false),
        ("POST", "/cart/elevate") => {
            let Some(role) = q("role") else { return (400, json!({"error": "role= is required"}), set, false) };
            set.insert("role".into(), json!(role));
            (200, json!({"user": user, "role": role}), set, false)
        }
        ("POST", "/cart/add") => {
            let Some(item) = q("item") else { return (400, json!({"error": "item= is required"}), set, false) };
            let mut cart = cart;
            cart.push(json!(item));
            set.insert("cart".into(), Value::Array(cart.clone()));
            (200, json!({"user": user, "cart": cart}), set, false)
        }
        ("POST", "/cart/incr") => {
            let n = s.and_then(|s| s.get("count")).and_then(Value::as_u64).unwrap_or(0) + 1;
            set.insert("count".into(), json!(n));
            (200, json!({"user": user, "count": n}), set, false)
        }
        ("GET", "/cart") => (200, json!({"user": user, "cart": cart, "count": s.and_then(|s| s.get("count")), "role": s.and_then(|s| s.get("role"))}), set, false),
        ("GET", "/exam/paper") => {
            let Some(student) = q("student") else { return (400, json!({"error": "student= is required"}), set, false) };
            let paper = format!("paper-{:08x}", rand_u64() as u32);
            set.insert("student".into(), json!(student));
            set.insert("paper".into(), json!(paper));
            (200, json!({"student": student, "paper": paper, "questions": ["1 + 1 = ?", "Name a prime."]}), set, false)
        }
        ("POST", "/exam/submit") => {
            let (Some(student), Some(paper)) = (s.and_then(|s| s.get("student")), s.and_then(|s| s.get("paper"))) else {
                return (409, json!({"error": "no paper was downloaded in this session: GET /exam/paper?student=ID"}), set, false);
            };
            set.insert("submitted".into(), json!(true));
            (200, json!({"receipt": {"student": student, "paper": paper, "answer_bytes": body.len()}}), set, false)
        }
        _ => (404, json!({"error": "unknown cart or exam path"}), set, false),
    }
}

/// The paths the app answers; every other one gets the demo backend's
/// plain answer.
pub fn is_app_path(path: &str) -> bool {
    path.starts_with("/cart") || path == "/exam/paper" || path == "/exam/submit"
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random source");
    u64::from_le_bytes(b)
}
