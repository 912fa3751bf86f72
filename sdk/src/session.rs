//! The session seam: implement [`SessionStrategy`] and call
//! [`export_session!`](crate::export_session). Enable the SDK's `session`
//! feature (and turn off the default `lb` one).
//!
//! Helpers here implement the backend protocol of `docs/sessions.md`: the
//! session travels to the backend as base64 JSON in `x-switchyard-session`,
//! changes come back in `x-switchyard-session-set`, and
//! `x-switchyard-session-end` ends it. Stores are in [`crate::store`],
//! signed tokens in [`crate::store::tokens`].
//!
//! Most strategies keep the session in a store tier under a signed id:
//! [`stored`] is that logic (the `centralized`, `o-session`, `replicated`
//! and `centralized-dynamic` plugins are its defaults), with hooks for a
//! strategy of your own ([`stored::Hooks`]) and its parts public (the id
//! from a request, loading, signing).

pub use crate::bindings::session::exports::switchyard::policy::session::{Action, After, Forward, Header, Needs, Reply, Response};
pub use crate::bindings::session::switchyard::policy::types::Request;
use crate::Config;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};

mod raw;

/// Request header carrying the session's attributes to the backend.
pub const SESSION_HEADER: &str = "x-switchyard-session";
/// Request header carrying the session (or passport) id to the backend.
pub const SESSION_ID_HEADER: &str = "x-switchyard-session-id";
/// Response header with the attributes the backend changed (`null` deletes).
pub const SESSION_SET_HEADER: &str = "x-switchyard-session-set";
/// Response header by which the backend ends the session (logout).
pub const SESSION_END_HEADER: &str = "x-switchyard-session-end";
/// Response header by which the backend asks for a new session id (a
/// privilege change that is not a new principal).
pub const SESSION_RENEW_HEADER: &str = "x-switchyard-session-renew";

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

    /// The backend response headers `after_response` reads, by name
    /// (case-insensitive); `None` (the default): all of them. Asked once,
    /// after `configure`. Each header passed costs two allocations in the
    /// plugin per request, so name what you read: [`stored`] strategies
    /// name the three session headers, sticky none.
    fn response_headers(&self) -> Option<Vec<String>> {
        None
    }
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

/// Attributes from stored bytes (empty, or unreadable: none).
fn part_from(bytes: &[u8]) -> Attributes {
    if bytes.is_empty() { Attributes::new() } else { from_bytes(bytes).unwrap_or_default() }
}

/// What the backend asked for in its response.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// The attributes to set (`null` deletes) as one JSON object, in the
    /// text the backend sent (its headers merged); empty for none.
    /// [`Self::set`] reads it.
    json: Vec<u8>,
    /// End the session.
    pub end: bool,
    /// Give the session a new id (the backend asked for it).
    pub renew: bool,
    /// A `x-switchyard-session-set` header was present but unreadable.
    pub malformed: bool,
}

impl Changes {
    /// Read the backend's session headers from a response.
    pub fn from_response(resp: &Response) -> Self {
        let mut c = Changes::default();
        let mut sets = Vec::new();
        for h in &resp.headers {
            if h.name.eq_ignore_ascii_case(SESSION_SET_HEADER) {
                match B64.decode(h.value.trim()).ok().and_then(|json| Some((raw::object_len(&json)?, json))) {
                    Some((0, _)) => {}
                    Some((_, json)) => sets.push(json),
                    None => c.malformed = true,
                }
            } else if h.name.eq_ignore_ascii_case(SESSION_END_HEADER) {
                c.end = true;
            } else if h.name.eq_ignore_ascii_case(SESSION_RENEW_HEADER) {
                c.renew = true;
            }
        }
        c.json = match sets.len() {
            0 => Vec::new(),
            1 => sets.pop().unwrap_or_default(),
            // Several headers: merged, a later one winning on a name.
            _ => {
                let mut all = raw::Raw::default();
                for set in &sets {
                    all.extend(&raw::Raw::parse(set).unwrap_or_default());
                }
                all.to_bytes()
            }
        };
        c
    }

    /// Changes that set `set` (a `null` value deletes), as a backend's
    /// `x-switchyard-session-set` header would.
    pub fn setting(set: &Attributes) -> Self {
        Self { json: if set.is_empty() { Vec::new() } else { to_bytes(set) }, ..Self::default() }
    }

    /// The attributes to set (`null` values delete).
    pub fn set(&self) -> Attributes {
        part_from(&self.json)
    }

    /// The attributes to set, each as its JSON text.
    fn set_raw(&self) -> raw::Raw<'_> {
        raw::Raw::parse(&self.json).unwrap_or_default()
    }

    /// Whether any attribute is set or deleted.
    pub fn sets_any(&self) -> bool {
        !self.json.is_empty()
    }

    /// Nothing to store.
    pub fn is_empty(&self) -> bool {
        !self.sets_any() && !self.end && !self.renew
    }

    /// Whether these changes give `principal` (the attribute naming who the
    /// session belongs to, `user` say) another value than `before` holds:
    /// a login, a logout or a switch of user. The session id must then be
    /// renewed (see [`renew`]), or a planted id would read the new user's
    /// session (session fixation).
    pub fn changes_principal(&self, principal: &str, before: &Attributes) -> bool {
        match self.set().get(principal) {
            None => false,
            Some(Value::Null) => before.contains_key(principal),
            Some(v) => before.get(principal) != Some(v),
        }
    }

    /// Apply to `attrs`: set, or delete on `null`.
    pub fn apply(&self, attrs: &mut Attributes) {
        for (k, v) in self.set() {
            if v.is_null() {
                attrs.remove(&k);
            } else {
                attrs.insert(k, v);
            }
        }
    }
}

/// One stored part of a session, for [`renew`]: the key is `prefix + id`.
pub struct Part<'a> {
    /// Where the part lives.
    pub tier: crate::store::Tier,
    /// Its key prefix.
    pub prefix: &'a str,
    /// What to store under the new id.
    pub value: &'a [u8],
}

/// Move a session to a fresh id, the defence against session fixation
/// (OWASP: renew the id on any privilege change). Every part's old key is
/// retired first ([`crate::store::retire`]): from then on the old id reads
/// nothing, on every node and tier, and a concurrent request still holding
/// it cannot write it back. Then each part is written under the new id,
/// which is returned; sign it and hand it to the client in this response.
///
/// `Err(StoreError::Retired)`: another request renewed (or ended) this
/// session first, and nothing was written. Any other error leaves the old
/// id retired where that succeeded: the user logs in again, the planted id
/// still reads nothing.
pub fn renew(old_id: &str, parts: &[Part<'_>], ttl_s: u32) -> Result<String, crate::store::StoreError> {
    use crate::store;
    for p in parts {
        store::retire(p.tier, &format!("{}{old_id}", p.prefix), ttl_s)?;
    }
    let id = store::tokens::new_id();
    for p in parts {
        store::set(p.tier, &format!("{}{id}", p.prefix), p.value, ttl_s)?;
    }
    crate::host::counter_add("renewals", 1);
    Ok(id)
}

/// A header.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    Header { name: name.to_string(), value: value.into() }
}

/// Forward with these backend headers and context, no pin;
/// `after_response` runs after every response.
pub fn forward(headers: Vec<Header>, context: Vec<u8>) -> Action {
    forward_after(headers, context, After::Always)
}

/// As [`forward`], saying when `after_response` is needed: with
/// `After::IfNamedHeaders` the gateway calls it only when the backend's
/// response carries a header [`SessionStrategy::response_headers`] names
/// (or no backend answered).
pub fn forward_after(headers: Vec<Header>, context: Vec<u8>, after: After) -> Action {
    Action::Forward(Forward { pin: None, headers, context, after })
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

pub mod stored {
    //! Sessions kept in a store tier under a signed id: the logic of the
    //! `centralized`, `o-session`, `replicated` and `centralized-dynamic`
    //! plugins, which differ in defaults (cookie, key prefix, tier, how the
    //! client carries the id, a split into two tiers).
    //!
    //! **The id token.** The client holds the session id as a token signed by
    //! the gateway ([`crate::store::tokens`]): `v1.EXPIRY.PAYLOAD.MAC`, where
    //! `EXPIRY` is the token's end in seconds since the Unix epoch, `PAYLOAD`
    //! and `MAC` are unpadded base64url, and `MAC` is HMAC-SHA256 over
    //! `v1.EXPIRY.PAYLOAD` with the first of the `[session] keys`. The payload
    //! is `ID|ISSUED` ([`token_payload`]): the 32-hex-digit session id and
    //! when the token was signed, in seconds since the epoch. A token is
    //! signed again when it is past half its `ttl_s` (so an active user's
    //! cookie does not expire), and whenever the id changes.
    //!
    //! **Your own strategy.** Export `Strategy<D>` for a [`Defaults`] of your
    //! own: override [`Defaults::configure`] to read config keys of yours and
    //! attach [`Hooks`] with [`Stored::with_hooks`] (renew the id when you
    //! decide; act after each write). Or drive a [`Stored`] from your own
    //! [`SessionStrategy`]: [`Stored::before`] and [`Stored::after`] are the two
    //! hooks, [`Context`] what passes between them, and [`Stored::session_id`],
    //! [`Stored::load`] and [`Stored::sign`] the steps. `plugins/session-rotating`
    //! is a complete example.

    use super::raw::{self, Raw};
    use super::*;
    use std::borrow::Cow;
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
        /// The attribute naming who the session belongs to (`user` by
        /// default). A response that gives it another value (a login, a
        /// switch of user, its removal) moves the session to a new id, so
        /// an id planted before the login reads nothing after it. `""`:
        /// no principal; the id changes only on `x-switchyard-session-renew`.
        #[serde(default = "default_principal")]
        pub principal: String,
        /// Store key prefix of the static part.
        #[serde(default = "default_static_prefix")]
        pub static_prefix: String,
        /// Let the gateway store a loaded session's plain update itself
        /// ([`store::write_back`]): a response that only sets attributes
        /// other than the principal then needs no `after-response` call.
        /// `false` keeps every write in this plugin. Split, only the main
        /// part's update (no static key set); not with [`Hooks`] (they are
        /// asked on every response).
        #[serde(default = "default_true")]
        pub write_back: bool,
        /// Let the gateway repeat a loaded session's forward for its next
        /// requests ([`store::remember`]) while the token is not due to be
        /// signed again: such a request then needs no `before-request`
        /// call. `false` calls this plugin on every request. Not with
        /// [`Hooks`] or `lock`.
        #[serde(default = "default_true")]
        pub memo: bool,
    }

    fn default_true() -> bool {
        true
    }

    fn default_static_tier() -> String {
        "replicated".into()
    }

    fn default_static_prefix() -> String {
        "session-static:".into()
    }

    fn default_principal() -> String {
        "user".into()
    }

    fn default_max_bytes() -> usize {
        16 * 1024
    }

    fn default_on_store_error() -> String {
        "reject".into()
    }

    /// The id token's payload: `ID|ISSUED`, the session id and when the
    /// token is signed, in seconds since the Unix epoch.
    pub fn token_payload(id: &str, issued_s: u64) -> String {
        format!("{id}|{issued_s}")
    }

    /// The session id and its issue time from a verified token's payload
    /// ([`token_payload`]); `None` if it is not `ID|ISSUED`.
    pub fn parse_token_payload(payload: &[u8]) -> Option<(String, u64)> {
        let (id, issued) = std::str::from_utf8(payload).ok()?.split_once('|')?;
        Some((id.to_string(), issued.parse().ok()?))
    }

    /// One request's session, as [`Stored::before`] loaded it and hands it
    /// to [`Stored::after`] (through the context of the session seam:
    /// [`Context::to_bytes`], [`Context::from_bytes`]). The attributes stay
    /// in the bytes they were stored in; [`Context::attrs`] reads them.
    #[derive(Default, Clone, Debug, PartialEq)]
    pub struct Context {
        /// The session id (the key is `prefix + id`).
        pub id: String,
        /// Sign the id and hand it to the client in this response: a new
        /// id, or a token past half its life.
        pub sign: bool,
        /// The id was made for this request (no session yet): never
        /// handed out, so it needs no renewal.
        pub fresh: bool,
        /// The store failed and the request went on without a session:
        /// write nothing back.
        pub degraded: bool,
        /// The session as loaded, as stored (a JSON object; empty for no
        /// attributes): its main part...
        attrs: Vec<u8>,
        /// ...and its static part, when split (centralized-dynamic).
        statics: Vec<u8>,
    }

    /// The first byte of the context bytes (their format's version).
    const WIRE: u8 = 1;
    const SIGN: u8 = 1;
    const FRESH: u8 = 2;
    const DEGRADED: u8 = 4;

    /// The context bytes: the format's version, the flags, then the id and
    /// both parts as stored (JSON; empty for no attributes), each after its
    /// length (u32, little-endian). A session as loaded goes to
    /// `after-response` in the bytes it was read in, never serialized again.
    /// [`wire`]'s bytes before the id: the tag, the flags, the id's length.
    const WIRE_HEAD: usize = 6;

    fn wire(id: &str, flags: u8, attrs: &[u8], statics: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + id.len() + attrs.len() + statics.len());
        out.extend_from_slice(&[WIRE, flags]);
        for part in [id.as_bytes(), attrs, statics] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// The context bytes read in place, both parts parsed (but not their
    /// values): what [`Stored::after`] works on.
    struct View<'a> {
        id: &'a str,
        flags: u8,
        bytes: (&'a [u8], &'a [u8]),
        attrs: Raw<'a>,
        statics: Raw<'a>,
    }

    impl<'a> View<'a> {
        /// [`wire`]'s output read back; `None` if it is not that.
        fn of(bytes: &'a [u8]) -> Option<Self> {
            let (&[WIRE, flags], mut rest) = bytes.split_first_chunk::<2>()? else { return None };
            let mut next = || {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let len = u32::from_le_bytes(*len) as usize;
                let part = tail.get(..len)?;
                rest = &tail[len..];
                Some(part)
            };
            let (id, attrs, statics) = (std::str::from_utf8(next()?).ok()?, next()?, next()?);
            if !rest.is_empty() {
                return None;
            }
            Some(Self { id, flags, bytes: (attrs, statics), attrs: Raw::parse(attrs)?, statics: Raw::parse(statics)? })
        }

        fn context(&self) -> Context {
            Context {
                id: self.id.to_string(),
                sign: self.flags & SIGN != 0,
                fresh: self.flags & FRESH != 0,
                degraded: self.flags & DEGRADED != 0,
                attrs: self.bytes.0.to_vec(),
                statics: self.bytes.1.to_vec(),
            }
        }

        /// Every attribute: the main part, then the static part.
        fn merged(&self) -> Raw<'a> {
            let mut all = self.attrs.clone();
            all.extend(&self.statics);
            all
        }
    }

    /// Stored bytes of a part: empty for no attributes.
    fn part_bytes(attrs: &Attributes) -> Vec<u8> {
        if attrs.is_empty() { Vec::new() } else { to_bytes(attrs) }
    }

    impl Context {
        /// A context for `id` holding these parts (`statics` is empty
        /// unless the strategy splits).
        pub fn new(id: &str, attrs: &Attributes, statics: &Attributes) -> Self {
            Self { id: id.to_string(), attrs: part_bytes(attrs), statics: part_bytes(statics), ..Self::default() }
        }

        fn flags(&self) -> u8 {
            [(self.sign, SIGN), (self.fresh, FRESH), (self.degraded, DEGRADED)].iter().filter(|(on, _)| *on).map(|(_, f)| f).sum()
        }

        /// The context bytes of the session seam.
        pub fn to_bytes(&self) -> Vec<u8> {
            wire(&self.id, self.flags(), &self.attrs, &self.statics)
        }

        /// Read what [`Self::to_bytes`] wrote; `None` if it is not that.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            View::of(bytes).map(|v| v.context())
        }

        /// The session's main part as loaded.
        pub fn attrs(&self) -> Attributes {
            part_from(&self.attrs)
        }

        /// Its static part (empty unless split).
        pub fn statics(&self) -> Attributes {
            part_from(&self.statics)
        }

        /// Every attribute: the main part and the static part.
        pub fn merged(&self) -> Attributes {
            let mut all = self.attrs();
            all.extend(self.statics());
            all
        }
    }

    /// A session write [`Hooks::after_write`] is told of.
    #[derive(Debug)]
    pub struct Written<'a> {
        /// The id the request came with.
        pub old_id: &'a str,
        /// The id the session has now (`old_id` unless `renewed`).
        pub id: &'a str,
        /// Every attribute of the session as stored now: one JSON
        /// object ([`Self::attrs`] reads it).
        pub json: &'a [u8],
        /// The session moved to a new id ([`renew`]): the old
        /// id's keys are retired.
        pub renewed: bool,
    }

    impl Written<'_> {
        /// Every attribute of the session as stored now.
        pub fn attrs(&self) -> Attributes {
            part_from(self.json)
        }
    }

    /// What [`Stored::store`] wrote: the session's id now, every
    /// attribute as one JSON object, and whose the session is now (when
    /// asked).
    struct Write<'a> {
        id: Cow<'a, str>,
        json: Vec<u8>,
        principal: Option<String>,
    }

    /// What a strategy of your own adds to [`Stored`]; every method has a
    /// default that does nothing. One value lives in each Wasm instance
    /// (the gateway pools them), so keep per-session state in the stores.
    pub trait Hooks: 'static {
        /// Move this session to a new id in this response, as a login does?
        /// Asked after each response to a request that came with a live
        /// session, before its changes are stored (not for a session made
        /// by this request, on logout, when the store failed or when no
        /// backend answered). The
        /// backend's own reasons (a new principal,
        /// `x-switchyard-session-renew`) renew it whatever this answers.
        fn renew(&mut self, _session: &Context, _changes: &Changes) -> bool {
            false
        }

        /// After the session was stored: the backend's changes, a renewal,
        /// or both, all acknowledged by the store. Not called when the
        /// write failed (the client got a `Warning`).
        fn after_write(&mut self, _write: &Written<'_>) {}
    }

    /// No hooks.
    impl Hooks for () {}

    /// A store-backed session strategy.
    pub struct Stored {
        s: Settings,
        tier: Tier,
        /// Split static keys into their own tier (centralized-dynamic).
        split: Option<Tier>,
        /// A strategy of your own's additions ([`Stored::with_hooks`]).
        hooks: Option<Box<dyn Hooks>>,
        /// What the client gets when a deferred write fails.
        on_failure: [(String, String); 1],
    }

    /// A store-backed strategy as data: its defaults, and an optional last
    /// step (split the static keys, refuse a setting, attach [`Hooks`]).
    /// Export it with
    /// `export_session!(switchyard_sdk::session::stored::Strategy<MyDefaults>)`.
    pub trait Defaults: 'static {
        /// Settings under the operator's config table.
        fn defaults() -> serde_json::Value;
        /// Finish the strategy from the merged settings.
        fn build(settings: Settings) -> Result<Stored, String> {
            Stored::new(settings)
        }
        /// The strategy from the operator's config table: by default its
        /// keys over [`Self::defaults`], then [`Self::build`]. Override it to
        /// read keys of your own: take them out with
        /// [`Config::split_off`](crate::Config::split_off), since
        /// [`Settings`] refuses keys it does not know.
        fn configure(config: &Config) -> Result<Stored, String> {
            Self::build(config.parse_over(Self::defaults())?)
        }
    }

    /// The [`SessionStrategy`] of a [`Defaults`].
    pub struct Strategy<D: Defaults>(Stored, std::marker::PhantomData<D>);

    impl<D: Defaults> SessionStrategy for Strategy<D> {
        fn configure(config: &Config) -> Result<Self, String> {
            Ok(Self(D::configure(config)?, std::marker::PhantomData))
        }

        fn before_request(&mut self, req: &Request) -> Action {
            self.0.before(req)
        }

        fn after_response(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
            self.0.after(context, resp)
        }

        fn response_headers(&self) -> Option<Vec<String>> {
            Some(Stored::RESPONSE_HEADERS.iter().map(|h| h.to_string()).collect())
        }
    }

    impl Stored {
        /// The backend response headers [`Stored::after`] reads (see
        /// [`SessionStrategy::response_headers`]).
        pub const RESPONSE_HEADERS: [&'static str; 3] = [SESSION_SET_HEADER, SESSION_END_HEADER, SESSION_RENEW_HEADER];

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
            let on_failure = [not_stored_pair("the session store did not take the write (the store is unavailable, or another request renewed or ended the session)")];
            Ok(Self { s, tier, split: None, hooks: None, on_failure })
        }

        /// Run `hooks` in this strategy (replacing any set before).
        pub fn with_hooks(mut self, hooks: impl Hooks) -> Self {
            self.hooks = Some(Box::new(hooks));
            self
        }

        /// The settings it runs with.
        pub fn settings(&self) -> &Settings {
            &self.s
        }

        /// The tier of the session's main part.
        pub fn tier(&self) -> Tier {
            self.tier
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
            [self.s.static_prefix.as_str(), id].concat()
        }

        /// A stored part; `None` when absent (expired, ended or retired).
        /// Unreadable bytes load as an empty session (and are counted).
        pub fn load(&self, tier: Tier, key: &str) -> Result<Option<Attributes>, store::StoreError> {
            Ok(store::get(tier, key)?.map(|bytes| {
                from_bytes(&bytes).unwrap_or_else(|| {
                    crate::host::counter_add("corrupt_sessions", 1);
                    Attributes::new()
                })
            }))
        }

        /// A loaded part's bytes as a session (empty, and counted, unless
        /// they are one JSON object), and the JSON text of its principal.
        fn checked<'b>(&self, bytes: &'b [u8]) -> (&'b [u8], Option<&'b str>) {
            if bytes.is_empty() {
                return (bytes, None);
            }
            let principal = if self.s.principal.is_empty() { raw::object_len(bytes).map(|_| None) } else { raw::field(bytes, &self.s.principal) };
            match principal {
                Some(p) => (bytes, p),
                None => {
                    crate::host::counter_add("corrupt_sessions", 1);
                    (&[], None)
                }
            }
        }

        /// The store key of the session's main part: `prefix + id`.
        pub fn key(&self, id: &str) -> String {
            [self.s.prefix.as_str(), id].concat()
        }

        /// The session id and when its token was signed (seconds since
        /// the epoch), from the request's cookie or else the configured
        /// header; `None` without a token or with one that is forged,
        /// tampered, expired or not `ID|ISSUED`.
        pub fn session_id(&self, req: &Request) -> Option<(String, u64)> {
            let token = req.cookie(&self.s.cookie).or_else(|| self.s.header.as_ref().and_then(|h| req.header(h)))?;
            parse_token_payload(&tokens::verify(&token)?)
        }

        /// The id, whether to sign it again (past half its life), and
        /// from when on it is (milliseconds since the epoch).
        fn id(&self, req: &Request) -> Option<(String, bool, u64)> {
            let (id, issued) = self.session_id(req)?;
            let half = u64::from(self.s.ttl_s) / 2;
            let age = (crate::host::now_ms() / 1000).saturating_sub(issued);
            Some((id, age > half, issued.saturating_add(half + 1).saturating_mul(1000)))
        }

        fn store_failed(&self, e: &store::StoreError, id: String) -> Action {
            crate::host::counter_add("store_errors", 1);
            crate::host::log_warn(&format!("session {}: {}", self.key(&id), store::describe(e)));
            if self.s.on_store_error == "forward" {
                let ctx = Context { id, degraded: true, ..Context::default() };
                return forward(Vec::new(), ctx.to_bytes());
            }
            reply(503, &format!("Service Unavailable: {}; try again", store::describe(e)), vec![header("retry-after", "1")])
        }

        /// Load the session (taking its lock if configured) and forward.
        /// The forward asks for `after_response` only when the backend's
        /// response carries a session header (`After::IfNamedHeaders`),
        /// unless the cookie is due to be signed again or [`Hooks`] are
        /// attached; a strategy of your own that wraps this and needs its
        /// `after_response` on every request sets `after` to
        /// `After::Always` on the returned forward.
        pub fn before(&mut self, req: &Request) -> Action {
            let Some((id, sign, sign_from)) = self.id(req) else {
                let ctx = Context { id: tokens::new_id(), sign: true, fresh: true, ..Context::default() };
                return self.forward_with(ctx);
            };
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
            // Both parts asked for first: the gateway reads them while no
            // instance waits, and calls this hook again.
            let main_ready = store::read_ahead(self.tier, &key);
            let static_ready = self.split.is_none_or(|t| store::read_ahead(t, &self.static_key(&id)));
            if !(main_ready && static_ready) {
                return forward(Vec::new(), Vec::new());
            }
            // The main part first: a memo (`store::remember`) reads the
            // parts in the order this call did, and keeps the second fixed.
            let attrs = store::get(self.tier, &key);
            let statics = match self.split.map(|t| store::get(t, &self.static_key(&id))).transpose() {
                Ok(a) => a.flatten(),
                Err(e) => return self.store_failed(&e, id),
            };
            match (attrs, statics) {
                // A valid id that holds nothing (expired, ended, or retired
                // by a renewal): never written again; a new id if needed.
                (Ok(None), None) => self.forward_with(Context { id: tokens::new_id(), sign: true, fresh: true, ..Context::default() }),
                (Ok(attrs), statics) => self.forward_loaded(&id, (sign, sign_from), key, &attrs.unwrap_or_default(), &statics.unwrap_or_default()),
                (Err(e), _) => self.store_failed(&e, id),
            }
        }

        /// Forward a session that has no attributes yet. Unless the
        /// backend sets some, there is nothing to store and no cookie to
        /// set: `after` runs only on a session header.
        fn forward_with(&self, ctx: Context) -> Action {
            let headers = vec![header(SESSION_HEADER, B64.encode(b"{}")), header(SESSION_ID_HEADER, ctx.id.clone())];
            super::forward_after(headers, ctx.to_bytes(), After::IfNamedHeaders)
        }

        /// Forward a session as loaded (`key` is its main part's): its
        /// bytes as read go to the backend (unless split: the parts are
        /// merged) and into the context. Tells the gateway whose it is.
        /// `sign`: whether the token is signed again in this response, and
        /// from when on it would be.
        fn forward_loaded(&self, id: &str, (sign, sign_from): (bool, u64), key: String, attrs: &[u8], statics: &[u8]) -> Action {
            let ((attrs, principal), (statics, static_principal)) = (self.checked(attrs), self.checked(statics));
            let may_write_back = !sign && self.s.write_back && self.hooks.is_none();
            if may_write_back && self.split.is_none() {
                self.write_back(&key, attrs, &[], self.s.max_bytes, None);
            }
            let session = match (&self.split, attrs.is_empty()) {
                (Some(_), _) => {
                    let (main, parsed) = (Raw::parse(attrs).unwrap_or_default(), Raw::parse(statics).unwrap_or_default());
                    if may_write_back {
                        self.write_back_split(&key, (attrs, &main), (statics, &parsed));
                    }
                    let mut all = main;
                    all.extend(&parsed);
                    B64.encode(all.to_bytes())
                }
                (None, true) => B64.encode(b"{}"),
                (None, false) => B64.encode(attrs),
            };
            if let Some(p) = raw::as_text(principal.or(static_principal)) {
                self.index(&p, id, key);
            }
            if !sign && self.s.memo && self.hooks.is_none() && !self.s.lock && !attrs.is_empty() {
                self.remember(id, sign_from);
            }
            let headers = vec![header(SESSION_HEADER, session), header(SESSION_ID_HEADER, id.to_string())];
            // A read that changes nothing needs no `after`, unless the cookie
            // is due to be signed again or a hook is asked on every request.
            let after = if sign || self.hooks.is_some() { After::Always } else { After::IfNamedHeaders };
            super::forward_after(headers, wire(id, if sign { SIGN } else { 0 }, attrs, statics), after)
        }

        /// Let the gateway repeat [`Stored::forward_loaded`]'s forward of
        /// session `id` until its token is due to be signed again
        /// (`until_ms`): it depends on the token (the cookie, else the
        /// header) and on the values read alone (split: the gateway keeps
        /// the static part as it was, and comes back here when it changes).
        fn remember(&self, id: &str, until_ms: u64) {
            store::remember(&store::Memo {
                until_ms,
                inputs: self.s.header.iter().cloned().collect(),
                value_header: SESSION_HEADER.into(),
                context_at: u32::try_from(WIRE_HEAD + id.len()).unwrap_or(u32::MAX),
                principal: self.s.principal.clone(),
            });
        }

        /// Leave the plain update of the session under `key` (as loaded:
        /// `attrs`) to the gateway: [`Stored::after`] would store exactly
        /// what it stores, and the principal stays with this plugin.
        fn write_back(&self, key: &str, attrs: &[u8], guard: &[String], max_bytes: usize, other_part: Option<&[u8]>) {
            let principal = Some(&self.s.principal).filter(|p| !p.is_empty());
            let plan = store::WritePlan {
                tier: self.tier,
                key: key.to_string(),
                base: attrs.to_vec(),
                ttl_s: self.s.ttl_s,
                max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
                guard: principal.into_iter().chain(guard).cloned().collect(),
                counter: "writes".into(),
                on_failure: self.on_failure.to_vec(),
            };
            match other_part {
                Some(other) => store::write_back_split(&plan, other),
                None => store::write_back(&plan),
            }
        }

        /// A split session's plain update (of its main part: `attrs`, read
        /// as `main`; its static part `static_bytes`, read as `statics`),
        /// left to the gateway when [`Stored::after`] would write exactly
        /// that part: no static key in the main part, none but static keys
        /// in the static part, and the response sets no static key to a
        /// text other than the one it holds (a static key set to its own
        /// text, the same user logging in again, leaves the static part
        /// unwritten here too). `max_bytes` bounds both parts together, so
        /// the main part gets what the static part leaves (one brace pair
        /// and a comma shared).
        fn write_back_split(&self, key: &str, (attrs, main): (&[u8], &Raw<'_>), (static_bytes, statics): (&[u8], &Raw<'_>)) {
            let is_static = |k: &str| self.s.static_keys.iter().any(|s| s == k);
            if main.names().any(is_static) || !statics.names().all(is_static) {
                return;
            }
            let static_len = if statics.is_empty() { 0 } else { statics.to_bytes().len() - 1 };
            if let Some(max_bytes) = self.s.max_bytes.checked_sub(static_len) {
                self.write_back(key, attrs, &self.s.static_keys, max_bytes, Some(static_bytes));
            }
        }

        /// Store the backend's changes; set the cookie (and header) when
        /// the id is new, renewed or past half its life.
        pub fn after(&mut self, context: Vec<u8>, resp: &Response) -> Vec<Header> {
            let Some(view) = View::of(&context) else { return Vec::new() };
            let changes = Changes::from_response(resp);
            if changes.malformed {
                crate::host::counter_add("malformed_updates", 1);
            }
            if view.flags & DEGRADED != 0 || resp.backend.is_none() {
                return Vec::new();
            }
            let before = view.merged();
            if changes.end {
                self.end(view.id);
                self.reindex(view.id, self.principal_of(&before).map(Cow::into_owned), "", None);
                return vec![clear_cookie(&self.s.cookie)];
            }
            let fresh = view.flags & FRESH != 0;
            // Asked on every request of a live session (a hook may count them).
            let hooked = !fresh && self.hooks.as_mut().is_some_and(|h| h.renew(&view.context(), &changes));
            let set = changes.set_raw();
            let new_principal = !self.s.principal.is_empty() && set.changes(&before, &self.s.principal);
            let new_id = !fresh && (hooked || changes.renew || new_principal);
            // The index changes only with the id or the principal.
            let reindex = new_id || new_principal;
            let mut id = Cow::Borrowed(view.id);
            if changes.sets_any() || new_id {
                let old = if reindex { self.principal_of(&before).map(Cow::into_owned) } else { None };
                let written = match self.store(&view, before, &set, new_id, reindex) {
                    Ok(w) => w,
                    Err(warning) => return vec![warning],
                };
                if reindex {
                    self.reindex(view.id, old, &written.id, written.principal);
                }
                if let Some(h) = self.hooks.as_mut() {
                    h.after_write(&Written { old_id: view.id, id: &written.id, json: &written.json, renewed: new_id });
                }
                id = written.id;
            } else if before.is_empty() {
                return Vec::new(); // a visitor with no session: no cookie
            }
            if view.flags & SIGN != 0 || new_id { self.sign(&id) } else { Vec::new() }
        }

        /// End the session: its keys are retired, so the id reads nothing
        /// and a concurrent request cannot write it back.
        fn end(&self, id: &str) {
            let static_part = self.split.map(|t| (t, self.static_key(id)));
            for (tier, k) in std::iter::once((self.tier, self.key(id))).chain(static_part) {
                match store::retire(tier, &k, self.s.ttl_s) {
                    Ok(()) | Err(store::StoreError::Retired) => {}
                    Err(e) => crate::host::log_warn(&format!("session {k} not ended: {}", store::describe(&e))),
                }
            }
        }

        /// Apply `set` to the session as loaded (`merged`: both parts) and
        /// write what changed, under a new id when `new_id`. `Ok`: what was
        /// written (with the principal now if `principal`). `Err`: the
        /// warning header for the client; nothing new was kept.
        fn store<'a>(&self, view: &View<'a>, mut merged: Raw<'a>, set: &Raw<'a>, new_id: bool, principal: bool) -> Result<Write<'a>, Header> {
            merged.apply(set);
            let principal = if principal { self.principal_of(&merged).map(Cow::into_owned) } else { None };
            let json = merged.to_bytes();
            if json.len() > self.s.max_bytes {
                crate::host::counter_add("too_large", 1);
                return Err(not_stored(&format!("{} bytes is over max_bytes {}", json.len(), self.s.max_bytes)));
            }
            let (statics, dynamic) = self.split_parts(&view.attrs, merged);
            // Unsplit, the one part is all of it: write the bytes measured.
            let split_bytes = self.split.map(|_| dynamic.to_bytes());
            let dynamic_bytes = split_bytes.as_deref().unwrap_or(&json);
            if new_id {
                let s = statics.to_bytes();
                let mut parts = vec![super::Part { tier: self.tier, prefix: &self.s.prefix, value: dynamic_bytes }];
                if let Some(t) = self.split {
                    parts.push(super::Part { tier: t, prefix: &self.s.static_prefix, value: &s });
                }
                let id = super::renew(view.id, &parts, self.s.ttl_s).map_err(|e| self.write_failed(&e))?;
                return Ok(Write { id: Cow::Owned(id), json, principal });
            }
            // Written once the hook returns (no instance waits on the
            // store); a refusal (the id was renewed meanwhile, the store
            // is down) turns the answer into `on_failure`.
            if let (Some(t), false) = (self.split, statics.same(&view.statics)) {
                store::set_deferred(t, &self.static_key(view.id), &statics.to_bytes(), self.s.ttl_s, &self.on_failure);
                crate::host::counter_add("writes", 1);
            }
            if !dynamic.same(&view.attrs) {
                store::set_deferred(self.tier, &self.key(view.id), dynamic_bytes, self.s.ttl_s, &self.on_failure);
                crate::host::counter_add("writes", 1);
            }
            Ok(Write { id: Cow::Borrowed(view.id), json, principal })
        }

        /// The static and the dynamic part of `merged` (all of it is
        /// dynamic unless split); `attrs` is the main part as loaded.
        fn split_parts<'a>(&self, attrs: &Raw<'a>, merged: Raw<'a>) -> (Raw<'a>, Raw<'a>) {
            if self.split.is_none() {
                return (Raw::default(), merged);
            }
            // A static key the main record already held (a session a
            // non-splitting strategy wrote, before a hot swap) stays
            // there too, so nodes still running that strategy read it.
            let is_static = |k: &str| self.s.static_keys.iter().any(|s| s == k);
            let (statics, mut dynamic) = merged.partition(is_static);
            let kept: Raw<'a> = statics.clone().partition(|k| attrs.contains(k)).0;
            dynamic.extend(&kept);
            (statics, dynamic)
        }

        fn write_failed(&self, e: &store::StoreError) -> Header {
            if matches!(e, store::StoreError::Retired) {
                // Another request of this session renewed its id or ended
                // it first; writing the old id would bring it back.
                crate::host::counter_add("renewal_conflicts", 1);
            } else {
                crate::host::counter_add("store_errors", 1);
            }
            not_stored(&store::describe(e))
        }

        // The principal index (`GET`/`DELETE /sessions?principal=U`): the
        // gateway learns whose each session is, so an operator can list and
        // end a user's sessions everywhere.

        /// Who the session belongs to: its `principal` attribute as text.
        fn principal_of<'r>(&self, attrs: &'r Raw<'_>) -> Option<Cow<'r, str>> {
            if self.s.principal.is_empty() {
                return None;
            }
            raw::as_text(attrs.get(&self.s.principal))
        }

        /// Tell the gateway that session `id` (its main part under `key`)
        /// is `principal`'s (every request: the gateway rewrites its index
        /// only now and then).
        fn index(&self, principal: &str, id: &str, key: String) {
            let main = store::IndexPart { tier: self.tier, key };
            match self.split {
                None => store::index_parts(principal, id, std::slice::from_ref(&main), self.s.ttl_s),
                Some(t) => store::index_parts(principal, id, &[main, store::IndexPart { tier: t, key: self.static_key(id) }], self.s.ttl_s),
            }
        }

        /// The session's stored parts (tier and key): the main one first,
        /// then the static one when split.
        pub fn parts(&self, id: &str) -> Vec<(Tier, String)> {
            let statics = self.split.map(|t| (t, self.static_key(id)));
            std::iter::once((self.tier, self.key(id))).chain(statics).collect()
        }

        /// The session went from (`old_id`, `old`) to (`new_id`, `new`): a
        /// login, a renewal, a logout (`new_id` empty).
        fn reindex(&self, old_id: &str, old: Option<String>, new_id: &str, new: Option<String>) {
            if old_id == new_id && old == new {
                return;
            }
            if let Some(p) = &old {
                store::unindex(p, old_id, self.tier);
            }
            if let Some(p) = new.filter(|_| !new_id.is_empty()) {
                store::index(&p, new_id, &self.parts(new_id), self.s.ttl_s);
            }
        }

        /// `id` signed for the client ([`token_payload`], issued now, for
        /// `ttl_s`): a `Set-Cookie`, and the configured header if any. Empty
        /// (and logged) when no signing key is configured.
        pub fn sign(&self, id: &str) -> Vec<Header> {
            let payload = token_payload(id, crate::host::now_ms() / 1000);
            match tokens::sign(payload.as_bytes(), self.s.ttl_s) {
                Ok(t) => {
                    let mut out: Vec<Header> = self.s.header.iter().map(|h| header(h, t.clone())).collect();
                    out.push(set_cookie(&self.s.cookie, &t, u64::from(self.s.ttl_s), self.s.secure));
                    out
                }
                Err(e) => {
                    crate::host::log_error(&format!("cannot sign the session id: {e}"));
                    Vec::new()
                }
            }
        }
    }
}

/// The `Warning` a client gets when its session update was not kept.
fn not_stored(why: &str) -> Header {
    let (name, value) = not_stored_pair(why);
    header(&name, value)
}

fn not_stored_pair(why: &str) -> (String, String) {
    ("warning".into(), format!("199 switchyard \"session update not stored: {why}\""))
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

    pub fn configure(&mut self, config: String) -> Result<Needs, String> {
        crate::host::install_panic_hook();
        let config = Config::from_json(&config)?;
        let strategy = T::configure(&config)?;
        let needs = Needs { response_headers: strategy.response_headers() };
        self.strategy = Some(strategy);
        Ok(needs)
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
                fn configure(config: ::std::string::String) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
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
    fn a_context_round_trips_and_refuses_bytes_it_did_not_write() {
        use stored::Context;
        let mut attrs = Attributes::new();
        attrs.insert("user".into(), Value::String("ann|\u{0}".into()));
        attrs.insert("cart".into(), serde_json::json!(["a", 1, null]));
        let mut statics = Attributes::new();
        statics.insert("locale".into(), Value::String("fi".into()));
        let mut signed = Context::new("0123456789abcdef0123456789abcdef", &attrs, &statics);
        signed.sign = true;
        assert_eq!((signed.attrs(), signed.statics()), (attrs.clone(), statics.clone()));
        assert_eq!(signed.merged().len(), 3);
        let mut degraded = Context::new("x", &attrs, &Attributes::new());
        (degraded.fresh, degraded.degraded) = (true, true);
        for ctx in [signed, degraded, Context::default()] {
            let bytes = ctx.to_bytes();
            assert_eq!(Context::from_bytes(&bytes).as_ref(), Some(&ctx));
            for cut in 0..bytes.len() {
                assert_eq!(Context::from_bytes(&bytes[..cut]), None, "a context cut at {cut} of {}", bytes.len());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Context::from_bytes(&longer), None, "trailing bytes");
        }
        assert_eq!(Context::from_bytes(br#"{"id":"x","sign":true,"degraded":false,"attrs":{},"statics":{}}"#), None, "not this format");
    }

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
    fn a_login_a_switch_of_user_or_a_logout_changes_the_principal() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let changes = |set: Value| Changes::setting(&obj(set));
        let anon = obj(serde_json::json!({"cart": ["tea"]}));
        let alice = obj(serde_json::json!({"user": "alice", "cart": ["tea"]}));
        assert!(changes(serde_json::json!({"user": "victim"})).changes_principal("user", &anon), "login");
        assert!(changes(serde_json::json!({"user": "bob"})).changes_principal("user", &alice), "switch");
        assert!(changes(serde_json::json!({"user": null})).changes_principal("user", &alice), "logout by removal");
        assert!(!changes(serde_json::json!({"user": "alice", "cart": []})).changes_principal("user", &alice), "same user");
        assert!(!changes(serde_json::json!({"cart": []})).changes_principal("user", &alice), "no principal change");
        assert!(!changes(serde_json::json!({"user": null})).changes_principal("user", &anon), "nothing to remove");
        assert!(changes(serde_json::json!({"account": 7})).changes_principal("account", &alice), "the principal is configurable");
    }

    #[test]
    fn the_backend_asks_for_a_new_id_with_a_header() {
        let resp = Response { status: 200, headers: vec![header("X-Switchyard-Session-Renew", "1")], backend: Some("b".into()), pin_lost: false };
        let c = Changes::from_response(&resp);
        assert!(c.renew && !c.end && !c.sets_any() && c.set().is_empty());
        assert!(!c.is_empty(), "a renewal is something to store");
    }

    #[test]
    fn a_backends_set_headers_merge_and_a_bad_one_is_malformed() {
        let set = |json: &str| header("x-switchyard-session-set", B64.encode(json));
        let resp = |headers| Response { status: 200, headers, backend: Some("b".into()), pin_lost: false };
        let c = Changes::from_response(&resp(vec![set(r#"{"cart":["tea"],"user":"ann"}"#), set(r#"{"cart":null,"n":1}"#)]));
        assert_eq!(Value::Object(c.set()), serde_json::json!({"cart": null, "n": 1, "user": "ann"}), "a later header wins on a name");
        assert!(!c.malformed && c.sets_any());
        let c = Changes::from_response(&resp(vec![set("{}")]));
        assert!(!c.sets_any() && c.is_empty() && !c.malformed, "an empty object sets nothing");
        for bad in ["[1]", "{\"a\":", "not json"] {
            let c = Changes::from_response(&resp(vec![set(bad), set(r#"{"n":2}"#)]));
            assert!(c.malformed, "{bad}");
            assert_eq!(Value::Object(c.set()), serde_json::json!({"n": 2}), "the readable header still counts");
        }
        let c = Changes::from_response(&resp(vec![header("x-switchyard-session-set", "%%%")]));
        assert!(c.malformed && !c.sets_any(), "not base64");
    }

    #[test]
    fn changes_set_and_delete() {
        let mut a = Attributes::new();
        a.insert("user".into(), "alice".into());
        a.insert("cart".into(), serde_json::json!([]));
        let mut set = Attributes::new();
        set.insert("cart".into(), Value::Null);
        set.insert("theme".into(), "dark".into());
        Changes::setting(&set).apply(&mut a);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"theme":"dark","user":"alice"}"#);
    }
}
