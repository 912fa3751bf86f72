//! The session seam: implement [`SessionStrategy`] and call
//! [`export_session!`](crate::export_session). Enable the SDK's `session`
//! feature (and turn off the default `lb` one).
//!
//! Helpers here implement the backend protocol of `docs/sessions.md`: the
//! session travels to the backend as base64 JSON in `x-switchyard-session`,
//! changes come back in `x-switchyard-session-set`, and
//! `x-switchyard-session-end` ends it. Stores are in [`crate::store`],
//! signed tokens in [`crate::tokens`].

pub use crate::bindings::session::exports::switchyard::policy::session::{Action, Forward, Header, Reply, Response};
pub use crate::bindings::session::switchyard::policy::types::Request;
use crate::Config;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Request header carrying the session's attributes to the backend.
pub const SESSION_HEADER: &str = "x-switchyard-session";
/// Request header carrying the session (or passport) id to the backend.
pub const SESSION_ID_HEADER: &str = "x-switchyard-session-id";
/// Response header with the attributes the backend changed (`null` deletes).
pub const SESSION_SET_HEADER: &str = "x-switchyard-session-set";
/// Response header by which the backend ends the session (logout).
pub const SESSION_END_HEADER: &str = "x-switchyard-session-end";

/// A session strategy. One value lives in each Wasm instance; the gateway
/// keeps a pool of instances, so keep per-user state in the stores.
pub trait SessionStrategy: Sized + 'static {
    /// Build the strategy from its config table. An error fails the load.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Before the upstream request: load the session and forward (with a
    /// pin, headers for the backend and a context for `after_response`)
    /// or reply.
    fn before_request(&mut self, req: &Request) -> Action;

    /// After the upstream response: store the changes and return headers
    /// for the client (`set-cookie`).
    fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header>;
}

/// A session's attributes: a JSON object.
pub type Attributes = Map<String, Value>;

/// Encode attributes for the session header (standard base64 of JSON,
/// valid header bytes whatever the attributes contain).
pub fn encode(attrs: &Attributes) -> String {
    B64.encode(serde_json::to_vec(attrs).unwrap_or_default())
}

/// Decode a session header value; `None` if it is not base64 JSON object.
pub fn decode(value: &str) -> Option<Attributes> {
    let bytes = B64.decode(value.trim()).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Stored form of attributes (JSON bytes).
pub fn to_bytes(attrs: &Attributes) -> Vec<u8> {
    serde_json::to_vec(attrs).unwrap_or_default()
}

/// Read stored attributes; `None` if corrupt.
pub fn from_bytes(bytes: &[u8]) -> Option<Attributes> {
    match serde_json::from_slice(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// What the backend asked for in its response.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Attributes to set (`null` values delete).
    pub set: Attributes,
    /// End the session.
    pub end: bool,
    /// A `x-switchyard-session-set` header was present but unreadable.
    pub malformed: bool,
}

impl Changes {
    /// Read the backend's session headers from a response.
    pub fn from_response(resp: &Response) -> Self {
        let mut c = Changes::default();
        for h in &resp.headers {
            if h.name.eq_ignore_ascii_case(SESSION_SET_HEADER) {
                match decode(&h.value) {
                    Some(m) => c.set.extend(m),
                    None => c.malformed = true,
                }
            } else if h.name.eq_ignore_ascii_case(SESSION_END_HEADER) {
                c.end = true;
            }
        }
        c
    }

    /// Nothing to store.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && !self.end
    }

    /// Apply to `attrs`: set, or delete on `null`.
    pub fn apply(&self, attrs: &mut Attributes) {
        for (k, v) in &self.set {
            if v.is_null() {
                attrs.remove(k);
            } else {
                attrs.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A header.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    Header { name: name.to_string(), value: value.into() }
}

/// Forward with these backend headers and context, no pin.
pub fn forward(headers: Vec<Header>, context: Vec<u8>) -> Action {
    Action::Forward(Forward { pin: None, headers, context })
}

/// Answer the client with a short text body.
pub fn reply(status: u16, text: &str, headers: Vec<Header>) -> Action {
    let mut headers = headers;
    headers.push(header("content-type", "text/plain; charset=utf-8"));
    headers.push(header("cache-control", "private, no-store"));
    Action::Reply(Reply { status, headers, body: format!("{status} {text}\n").into_bytes() })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Path=/`, `Max-Age`.
/// `secure` adds `Secure` (set it when clients reach the gateway over TLS).
pub fn set_cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> Header {
    let secure = if secure { "; Secure" } else { "" };
    header("set-cookie", format!("{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}"))
}

/// A `Set-Cookie` that removes the cookie.
pub fn clear_cookie(name: &str) -> Header {
    header("set-cookie", format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"))
}

/// Sessions kept in a store tier under a signed id: the logic of the
/// `centralized` and `o-session` plugins, which differ in defaults (cookie,
/// key prefix, tier, how the client carries the id).
pub mod stored {
    use super::*;
    use crate::store::{self, tokens, Tier};

    /// Settings (the plugin's config table).
    #[derive(serde::Deserialize, Clone, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        /// Cookie carrying the signed id.
        pub cookie: String,
        /// A request header that may carry the signed id instead (clients
        /// without cookies, O-Session's offline clients); the id is also
        /// returned in it.
        #[serde(default)]
        pub header: Option<String>,
        /// Store key prefix: the key is `PREFIX + id`.
        pub prefix: String,
        /// `central` (memcached), `durable` (MariaDB) or `local`.
        pub tier: String,
        /// Idle lifetime of the session and of its signed id.
        pub ttl_s: u32,
        /// Largest stored session (JSON bytes); a larger update is refused.
        #[serde(default = "default_max_bytes")]
        pub max_bytes: usize,
        /// Serialize concurrent requests of one session (store lock).
        #[serde(default)]
        pub lock: bool,
        /// What a request gets when the store fails: `reject` (503) or
        /// `forward` (no session; nothing is written back).
        #[serde(default = "default_on_store_error")]
        pub on_store_error: String,
        /// Add `Secure` to the cookie.
        #[serde(default)]
        pub secure: bool,
        /// Centralized-dynamic (paper 003): attributes kept in
        /// `static_tier` instead, written only when they change (user name,
        /// system parameters); the rest stays in `tier`. Strategies that do
        /// not split accept and ignore it, so one config table serves a
        /// hot swap between them.
        #[serde(default)]
        pub static_keys: Vec<String>,
        /// Where the static part lives (`replicated` by default).
        #[serde(default = "default_static_tier")]
        pub static_tier: String,
        /// Store key prefix of the static part.
        #[serde(default = "default_static_prefix")]
        pub static_prefix: String,
    }

    fn default_static_tier() -> String {
        "replicated".into()
    }

    fn default_static_prefix() -> String {
        "session-static:".into()
    }

    fn default_max_bytes() -> usize {
        16 * 1024
    }

    fn default_on_store_error() -> String {
        "reject".into()
    }

    /// What `before` hands to `after`.
    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct Ctx {
        id: String,
        /// Sign a fresh id token in the response.
        renew: bool,
        /// The store failed and the request went on without a session:
        /// write nothing back.
        degraded: bool,
        /// The session as loaded: the main part, and the static part when split.
        attrs: Attributes,
        statics: Attributes,
    }

    /// A store-backed session strategy.
    pub struct Stored {
        s: Settings,
        tier: Tier,
        /// Split static keys into their own tier (centralized-dynamic).
        split: Option<Tier>,
    }

    /// A store-backed strategy as data: its defaults, and an optional last
    /// step (split the static keys, refuse a setting). Export it with
    /// `export_session!(switchyard_sdk::session::stored::Strategy<MyDefaults>)`.
    pub trait Defaults: 'static {
        /// Settings under the operator's config table.
        fn defaults() -> serde_json::Value;
        /// Finish the strategy from the merged settings.
        fn build(settings: Settings) -> Result<Stored, String> {
            Stored::new(settings)
        }
    }

    /// The [`SessionStrategy`] of a [`Defaults`].
    pub struct Strategy<D: Defaults>(Stored, std::marker::PhantomData<D>);

    impl<D: Defaults> SessionStrategy for Strategy<D> {
        fn configure(config: &Config) -> Result<Self, String> {
            Ok(Self(D::build(config.parse_over(D::defaults())?)?, std::marker::PhantomData))
        }

        fn before_request(&mut self, req: &Request) -> Action {
            self.0.before(req)
        }

        fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
            self.0.after(context, resp)
        }
    }

    impl Stored {
        /// Check `settings` (merged over the plugin's defaults).
        pub fn new(s: Settings) -> Result<Self, String> {
            let name_ok = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok(&s.cookie) {
                return Err(format!("cookie: {:?} is not a cookie name ([A-Za-z0-9_-]+)", s.cookie));
            }
            if let Some(h) = &s.header {
                if !name_ok(h) || h.to_ascii_lowercase().starts_with("x-switchyard-") {
                    return Err(format!("header: {h:?} must be a header name outside x-switchyard-*"));
                }
            }
            if s.prefix.len() > 64 || s.prefix.bytes().any(|b| b <= b' ') {
                return Err("prefix: at most 64 characters, no spaces".into());
            }
            if s.ttl_s == 0 {
                return Err("ttl_s: must be at least 1".into());
            }
            if !matches!(s.on_store_error.as_str(), "reject" | "forward") {
                return Err(format!("on_store_error: {:?} is not reject or forward", s.on_store_error));
            }
            let tier = store::tier(&s.tier).map_err(|e| format!("tier: {e}"))?;
            if s.lock && !matches!(tier, Tier::Central | Tier::Local) {
                return Err(format!("lock: the {} tier has no locks; use tier = \"central\" or \"local\"", s.tier));
            }
            Ok(Self { s, tier, split: None })
        }

        /// Keep `static_keys` in `static_tier` (centralized-dynamic).
        pub fn split(mut self) -> Result<Self, String> {
            if self.s.static_keys.is_empty() {
                return Err("static_keys: list the keys kept in the static part (for example [\"user\"])".into());
            }
            if self.s.static_prefix == self.s.prefix {
                return Err("static_prefix: must differ from prefix".into());
            }
            self.split = Some(store::tier(&self.s.static_tier).map_err(|e| format!("static_tier: {e}"))?);
            Ok(self)
        }

        fn static_key(&self, id: &str) -> String {
            format!("{}{id}", self.s.static_prefix)
        }

        fn load(&self, tier: Tier, key: &str) -> Result<Attributes, store::StoreError> {
            Ok(match store::get(tier, key)? {
                Some(bytes) => from_bytes(&bytes).unwrap_or_else(|| {
                    crate::host::counter_add("corrupt_sessions", 1);
                    Attributes::new()
                }),
                None => Attributes::new(),
            })
        }

        fn key(&self, id: &str) -> String {
            format!("{}{id}", self.s.prefix)
        }

        /// The id from a valid signed token, and whether to renew it
        /// (past half its life).
        fn id(&self, req: &Request) -> Option<(String, bool)> {
            let token = req.cookie(&self.s.cookie).or_else(|| self.s.header.as_ref().and_then(|h| req.header(h)))?;
            let payload = String::from_utf8(tokens::verify(&token)?).ok()?;
            let (id, issued) = payload.split_once('|')?;
            let age = (crate::host::now_ms() / 1000).saturating_sub(issued.parse().ok()?);
            Some((id.to_string(), age > u64::from(self.s.ttl_s) / 2))
        }

        fn store_failed(&self, e: &store::StoreError, id: String) -> Action {
            crate::host::counter_add("store_errors", 1);
            crate::host::log_warn(&format!("session {}: {}", self.key(&id), store::describe(e)));
            if self.s.on_store_error == "forward" {
                let ctx = Ctx { id, degraded: true, ..Ctx::default() };
                return forward(Vec::new(), serde_json::to_vec(&ctx).unwrap_or_default());
            }
            reply(503, &format!("Service Unavailable: {}; try again", store::describe(e)), vec![header("retry-after", "1")])
        }

        /// Load the session (taking its lock if configured) and forward.
        pub fn before(&mut self, req: &Request) -> Action {
            let (id, renew, attrs, statics) = match self.id(req) {
                None => (tokens::new_id(), true, Attributes::new(), Attributes::new()),
                Some((id, renew)) => {
                    let key = self.key(&id);
                    if self.s.lock {
                        match store::lock(self.tier, &key) {
                            Ok(true) => {}
                            Ok(false) => {
                                crate::host::counter_add("lock_timeouts", 1);
                                return reply(503, "Service Unavailable: another request of this session holds its lock; try again", vec![header("retry-after", "1")]);
                            }
                            Err(e) => return self.store_failed(&e, id),
                        }
                    }
                    let statics = match self.split {
                        Some(t) => match self.load(t, &self.static_key(&id)) {
                            Ok(a) => a,
                            Err(e) => return self.store_failed(&e, id),
                        },
                        None => Attributes::new(),
                    };
                    match self.load(self.tier, &key) {
                        Ok(a) => (id, renew, a, statics),
                        Err(e) => return self.store_failed(&e, id),
                    }
                }
            };
            let mut merged = attrs.clone();
            merged.extend(statics.clone());
            let headers = vec![header(SESSION_HEADER, encode(&merged)), header(SESSION_ID_HEADER, id.clone())];
            let ctx = Ctx { id, renew, degraded: false, attrs, statics };
            forward(headers, serde_json::to_vec(&ctx).unwrap_or_default())
        }

        /// Store the backend's changes; set the cookie (and header) when
        /// the id is new or past half its life.
        pub fn after(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
            let Ok(mut ctx) = serde_json::from_slice::<Ctx>(&context) else { return Vec::new() };
            let changes = Changes::from_response(resp);
            if changes.malformed {
                crate::host::counter_add("malformed_updates", 1);
            }
            if ctx.degraded || resp.backend.is_none() {
                return Vec::new();
            }
            let key = self.key(&ctx.id);
            let mut out = Vec::new();
            if changes.end {
                let static_part = self.split.map(|t| (t, self.static_key(&ctx.id)));
                for (tier, k) in std::iter::once((self.tier, key.clone())).chain(static_part) {
                    if let Err(e) = store::delete(tier, &k) {
                        crate::host::log_warn(&format!("session {k} not deleted: {}", store::describe(&e)));
                    }
                }
                out.push(clear_cookie(&self.s.cookie));
                return out;
            }
            if !changes.set.is_empty() {
                let mut merged = ctx.attrs.clone();
                merged.extend(ctx.statics.clone());
                changes.apply(&mut merged);
                let total = to_bytes(&merged).len();
                if total > self.s.max_bytes {
                    crate::host::counter_add("too_large", 1);
                    out.push(header("warning", format!("199 switchyard \"session update not stored: {total} bytes is over max_bytes {}\"", self.s.max_bytes)));
                    return out;
                }
                let (statics, dynamic): (Attributes, Attributes) = match self.split {
                    Some(_) => {
                        // A static key the main record already held (a session a
                        // non-splitting strategy wrote, before a hot swap) stays
                        // there too, so nodes still running that strategy read it.
                        let keep = |k: &String| ctx.attrs.contains_key(k);
                        let statics = merged.iter().filter(|(k, _)| self.s.static_keys.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
                        let dynamic = merged.into_iter().filter(|(k, _)| !self.s.static_keys.contains(k) || keep(k)).collect();
                        (statics, dynamic)
                    }
                    None => (Attributes::new(), merged),
                };
                let mut writes = Vec::new();
                if let (Some(t), true) = (self.split, statics != ctx.statics) {
                    writes.push((t, self.static_key(&ctx.id), to_bytes(&statics)));
                }
                if dynamic != ctx.attrs {
                    writes.push((self.tier, key.clone(), to_bytes(&dynamic)));
                }
                for (tier, k, bytes) in writes {
                    if let Err(e) = store::set(tier, &k, &bytes, self.s.ttl_s) {
                        crate::host::counter_add("store_errors", 1);
                        out.push(header("warning", format!("199 switchyard \"session update not stored: {}\"", store::describe(&e))));
                        return out;
                    }
                    crate::host::counter_add("writes", 1);
                }
                ctx.attrs = dynamic;
                ctx.statics = statics;
            } else if ctx.attrs.is_empty() && ctx.statics.is_empty() {
                return out; // a visitor with no session: no cookie
            }
            if ctx.renew {
                let payload = format!("{}|{}", ctx.id, crate::host::now_ms() / 1000);
                match tokens::sign(payload.as_bytes(), self.s.ttl_s) {
                    Ok(t) => {
                        if let Some(h) = &self.s.header {
                            out.push(header(h, t.clone()));
                        }
                        out.push(set_cookie(&self.s.cookie, &t, u64::from(self.s.ttl_s), self.s.secure));
                    }
                    Err(e) => crate::host::log_error(&format!("cannot sign the session id: {e}")),
                }
            }
            out
        }
    }
}

#[doc(hidden)]
pub struct Runner<T> {
    strategy: Option<T>,
}

#[doc(hidden)]
impl<T: SessionStrategy> Runner<T> {
    pub const fn new() -> Self {
        Self { strategy: None }
    }

    pub fn configure(&mut self, config: String) -> Result<(), String> {
        crate::host::install_panic_hook();
        let config = Config::from_json(&config)?;
        self.strategy = Some(T::configure(&config)?);
        Ok(())
    }

    pub fn before_request(&mut self, req: &Request) -> Action {
        match self.strategy.as_mut() {
            Some(s) => s.before_request(req),
            None => reply(503, "session plugin not configured", Vec::new()),
        }
    }

    pub fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
        self.strategy.as_mut().map_or_else(Vec::new, |s| s.after_response(context, resp))
    }
}

/// Export a [`SessionStrategy`] as the component's `session` interface
/// (world `session-policy`).
#[macro_export]
macro_rules! export_session {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::session::exports::switchyard::policy::session as __wit;
            struct __SwitchyardSession;
            ::std::thread_local! {
                static RUNNER: ::core::cell::RefCell<$crate::session::Runner<$strategy>> =
                    const { ::core::cell::RefCell::new($crate::session::Runner::new()) };
            }
            impl __wit::Guest for __SwitchyardSession {
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().configure(config))
                }
                fn before_request(req: &$crate::session::Request) -> __wit::Action {
                    RUNNER.with(|r| r.borrow_mut().before_request(req))
                }
                fn after_response(context: ::std::vec::Vec<u8>, resp: __wit::Response) -> ::std::vec::Vec<__wit::Header> {
                    RUNNER.with(|r| r.borrow_mut().after_response(context, &resp))
                }
            }
            $crate::bindings::session::__export_session!(__SwitchyardSession with_types_in $crate::bindings::session);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_a_header_whatever_they_hold() {
        let mut a = Attributes::new();
        a.insert("cart".into(), serde_json::json!(["tea", "naïve\r\nX-Evil: 1", "\u{0}"]));
        let h = encode(&a);
        assert!(h.bytes().all(|b| b.is_ascii_graphic()), "{h}");
        assert_eq!(decode(&h), Some(a));
        assert_eq!(decode("not base64!"), None);
        assert_eq!(decode(&B64.encode(b"[1,2]")), None);
    }

    #[test]
    fn changes_set_and_delete() {
        let mut a = Attributes::new();
        a.insert("user".into(), "alice".into());
        a.insert("cart".into(), serde_json::json!([]));
        let mut set = Attributes::new();
        set.insert("cart".into(), Value::Null);
        set.insert("theme".into(), "dark".into());
        Changes { set, end: false, malformed: false }.apply(&mut a);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"theme":"dark","user":"alice"}"#);
    }
}
