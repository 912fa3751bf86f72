//! Session memos (`store.remember`): a `before-request` forward the gateway
//! repeats for a session's next requests without calling the plugin, with
//! each request's own read of the session put where the plugin put its.

use super::host::WritePlan;
use super::session_exports as wit;
use super::store;
use crate::seams::RequestView;
use crate::session::Tier;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderName;
use std::sync::Weak;
use switchyard_attrs::{as_text, field, object_len, Raw};

/// What one session hook call did that a memo repeats, or that rules one out.
#[derive(Default)]
pub(crate) struct Trace {
    /// The call's `remember`.
    pub(crate) asked: Option<store::Memo>,
    /// How many reads it made (`get`, `get-versioned`)...
    pub(crate) reads: u8,
    /// ...and what the first [`MOST_READS`] found, when `get`s that found a value.
    got: Vec<(Tier, String, Vec<u8>)>,
    /// Its `index` call (a second one rules a memo out).
    indexed: Option<Indexed>,
    /// It wrote, added, retired, deleted or unindexed a key.
    pub(crate) wrote: bool,
    /// The keys `after-response` wrote with `set` (made at once).
    pub(crate) set: Vec<(Tier, String)>,
}

impl Trace {
    /// A `get` of `key` that gave `out`.
    pub(crate) fn read(&mut self, tier: Tier, key: String, out: &Result<Option<Vec<u8>>, store::StoreError>) {
        self.reads = self.reads.saturating_add(1);
        if let (true, Ok(Some(value))) = (usize::from(self.reads) <= MOST_READS, out) {
            self.got.push((tier, key, value.clone()));
        }
    }

    /// An `index` call.
    pub(crate) fn index(&mut self, principal: &str, id: &str, parts: &[(Tier, String)], ttl_s: u32) {
        if self.indexed.is_some() {
            self.wrote = true;
            return;
        }
        self.indexed = Some(Indexed { principal: principal.to_string(), id: id.to_string(), parts: parts.to_vec(), ttl_s });
    }
}

/// Most reads a remembered call may make: a session's part, or its two
/// parts when split (centralized-dynamic).
const MOST_READS: usize = 2;

/// An `index` call a memo makes again.
#[derive(Clone)]
pub(crate) struct Indexed {
    pub(crate) principal: String,
    pub(crate) id: String,
    pub(crate) parts: Vec<(Tier, String)>,
    pub(crate) ttl_s: u32,
}

/// A remembered forward: what it holds for, and how to rebuild it from a
/// new read of its key.
pub(crate) struct Memo {
    /// The plugin version that decided (the pointer pins its allocation)
    /// and the generation of it, by address.
    plugin: Weak<super::LoadedPlugin>,
    generation: usize,
    until_ms: u64,
    /// The request's `cookie` headers, each followed by a NUL (which no
    /// header value holds), then each input header the same way.
    inputs: Vec<(HeaderName, Vec<u8>)>,
    /// The keys read: the first is read anew for each request; a second
    /// (a split session's static part) must read `fixed` again.
    pub(crate) keys: Vec<(Tier, String)>,
    fixed: Option<Vec<u8>>,
    /// The principal's attribute (`""`: none) and its JSON text in the
    /// first read.
    principal: String,
    principal_json: Option<String>,
    pin: Option<String>,
    headers: Vec<wit::Header>,
    /// Which of `headers` carries the value (`None`: nothing was read).
    value_at: Option<usize>,
    /// The context around the value's length and bytes.
    context: (Vec<u8>, Vec<u8>),
    after: wit::After,
    plan: Option<WritePlan>,
    indexed: Option<Indexed>,
}

/// A memo's forward for one request: the call's action, its `write-back`,
/// and its `index` call.
pub(crate) struct Replayed {
    pub(crate) action: wit::Action,
    pub(crate) plan: Option<WritePlan>,
    pub(crate) indexed: Option<Indexed>,
}

/// A request's values of header `name`, each followed by a NUL.
fn values_of(req: &RequestView, name: &HeaderName) -> Vec<u8> {
    let mut out = Vec::new();
    for v in req.headers.get_all(name) {
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Whether the request's values of `name` are `stored` ([`values_of`]).
fn same_values(req: &RequestView, name: &HeaderName, stored: &[u8]) -> bool {
    let mut rest = stored;
    for v in req.headers.get_all(name) {
        let v = v.as_bytes();
        match rest.strip_prefix(v).and_then(|r| r.strip_prefix(&[0])) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// The JSON text of `value`'s principal (`Some(None)`: it has none), or
/// `None` when `value` is not one JSON object.
fn principal_of<'a>(value: &'a [u8], name: &str) -> Option<Option<&'a str>> {
    if name.is_empty() {
        object_len(value)?;
        return Some(None);
    }
    field(value, name)
}

/// The session the forward's header carries for these reads: one read as
/// it is; a split session's two merged (the second's names win), as
/// `session::stored` merges them. `None` when one is not a JSON object.
fn carried(values: &[&[u8]]) -> Option<Vec<u8>> {
    match values {
        [one] => Some(one.to_vec()),
        [main, statics] => {
            let mut all = Raw::parse(main)?;
            all.extend(&Raw::parse(statics)?);
            Some(all.to_bytes())
        }
        _ => None,
    }
}

/// The reads as the context holds them: each one's length (u32, little
/// endian), then its bytes.
fn framed(values: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(values.iter().map(|v| v.len() + 4).sum());
    for v in values {
        out.extend_from_slice(&u32::try_from(v.len()).ok()?.to_le_bytes());
        out.extend_from_slice(v);
    }
    Some(out)
}

impl Memo {
    /// The memo a `before-request` call asked for (`trace.asked`), if the
    /// gateway can rebuild exactly its `action` and `plan` from its one
    /// read; `None` when it did not ask, or did more than that.
    pub(crate) fn record(trace: Trace, plugin: Weak<super::LoadedPlugin>, generation: usize, req: &RequestView, action: &wit::Action, locked: bool, plan: &Option<WritePlan>) -> Option<Self> {
        let asked = trace.asked?;
        if trace.wrote || locked || usize::from(trace.reads) != trace.got.len() {
            return None;
        }
        let values: Vec<&[u8]> = trace.got.iter().map(|(_, _, v)| v.as_slice()).collect();
        let wit::Action::Forward(f) = action else { return None };
        let value_at = if values.is_empty() {
            // No read (sticky): the forward is its cookie's alone, repeated
            // as it is; nothing read may be named, written back or indexed.
            if !asked.value_header.is_empty() || !asked.principal.is_empty() || plan.is_some() || trace.indexed.is_some() {
                return None;
            }
            None
        } else {
            let encoded = B64.encode(carried(&values)?);
            let mut carriers = f.headers.iter().enumerate().filter(|(_, h)| h.name.eq_ignore_ascii_case(&asked.value_header));
            let (Some((value_at, carrier)), None) = (carriers.next(), carriers.next()) else { return None };
            if carrier.value != encoded {
                return None;
            }
            Some(value_at)
        };
        let framed = framed(&values)?;
        let at = usize::try_from(asked.context_at).ok()?;
        let end = at.checked_add(framed.len())?;
        if f.context.get(at..end)? != framed.as_slice() {
            return None;
        }
        let principals = values.iter().map(|v| principal_of(v, &asked.principal)).collect::<Option<Vec<_>>>()?;
        let first = principals.first().copied().flatten();
        let principal = principals.into_iter().fold(None, Option::or);
        let indexed_as = trace.indexed.as_ref().map(|i| i.principal.as_str());
        if as_text(principal).as_deref() != indexed_as || plan.as_ref().is_some_and(|p| values.first() != Some(&p.base.as_slice())) {
            return None;
        }
        let mut inputs = vec![(http::header::COOKIE, values_of(req, &http::header::COOKIE))];
        for name in &asked.inputs {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            inputs.push((name.clone(), values_of(req, &name)));
        }
        if inputs[0].1.is_empty() {
            return None; // remembered by cookies: a request without them never repeats
        }
        let principal_json = first.map(str::to_string);
        let fixed = values.get(1).map(|v| v.to_vec());
        let keys = trace.got.into_iter().map(|(t, k, _)| (t, k)).collect();
        Some(Self {
            plugin,
            generation,
            until_ms: asked.until_ms,
            inputs,
            keys,
            fixed,
            principal: asked.principal,
            principal_json,
            pin: f.pin.clone(),
            headers: f.headers.iter().enumerate().map(|(i, h)| wit::Header { name: h.name.clone(), value: if Some(i) == value_at { String::new() } else { h.value.clone() } }).collect(),
            value_at,
            context: (f.context[..at].to_vec(), f.context[end..].to_vec()),
            after: f.after,
            plan: plan.clone().map(|p| WritePlan { base: Vec::new(), ..p }),
            indexed: trace.indexed,
        })
    }

    /// Whether it holds for `req` on this plugin generation at `now_ms`.
    pub(crate) fn holds(&self, plugin: *const super::LoadedPlugin, generation: usize, req: &RequestView, now_ms: u64) -> bool {
        now_ms < self.until_ms
            && self.generation == generation
            && std::ptr::eq(self.plugin.as_ptr(), plugin)
            && self.inputs.iter().all(|(name, stored)| same_values(req, name, stored))
    }

    /// The forward for `values`, new reads of its keys; `None` when the
    /// first is not one JSON object or names another principal, or a
    /// second is not what it was (the plugin decides).
    pub(crate) fn replay(&self, values: &[&[u8]]) -> Option<Replayed> {
        if values.len() != self.keys.len() {
            return None;
        }
        let Some((&first, rest)) = values.split_first() else {
            // Nothing read: the forward as the plugin made it.
            let (pin, headers, context) = (self.pin.clone(), self.headers.clone(), [self.context.0.as_slice(), &self.context.1].concat());
            return Some(Replayed { action: wit::Action::Forward(wit::Forward { pin, headers, context, after: self.after }), plan: None, indexed: None });
        };
        if rest.first().copied() != self.fixed.as_deref() {
            return None;
        }
        if principal_of(first, &self.principal)? != self.principal_json.as_deref() {
            return None;
        }
        // Split: the write-back stands while the main part holds none of
        // the names only the plugin may change (its static keys among them).
        if !rest.is_empty() && self.plan.as_ref().is_some_and(|p| Raw::parse(first).is_none_or(|r| r.names().any(|n| p.guard.iter().any(|g| g == n)))) {
            return None;
        }
        let mut headers = self.headers.clone();
        if let Some(at) = self.value_at {
            headers[at].value = B64.encode(carried(values)?);
        }
        let (head, tail) = &self.context;
        let mut context = head.clone();
        context.extend_from_slice(&framed(values)?);
        context.extend_from_slice(tail);
        let plan = self.plan.clone().map(|p| WritePlan { base: first.to_vec(), ..p });
        let action = wit::Action::Forward(wit::Forward { pin: self.pin.clone(), headers, context, after: self.after });
        Some(Replayed { action, plan, indexed: self.indexed.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ab";

    fn req(cookies: &[&str], passport: Option<&str>) -> RequestView {
        let mut r = RequestView::default();
        for c in cookies {
            r.headers.append(http::header::COOKIE, http::HeaderValue::from_str(c).unwrap());
        }
        if let Some(p) = passport {
            r.headers.insert("x-passport", http::HeaderValue::from_str(p).unwrap());
        }
        r
    }

    /// What `session::stored` forwards for `value`: its wire context.
    fn forward(value: &[u8]) -> wit::Action {
        let mut context = vec![1, 0];
        for part in [ID.as_bytes(), value, b""] {
            context.extend_from_slice(&(part.len() as u32).to_le_bytes());
            context.extend_from_slice(part);
        }
        let headers = vec![wit::Header { name: "x-switchyard-session".into(), value: B64.encode(value) }, wit::Header { name: "x-switchyard-session-id".into(), value: ID.into() }];
        wit::Action::Forward(wit::Forward { pin: None, headers, context, after: wit::After::IfNamedHeaders })
    }

    fn asked() -> store::Memo {
        store::Memo { until_ms: 10_000, inputs: vec!["x-passport".into()], value_header: "X-Switchyard-Session".into(), context_at: 6 + ID.len() as u32, principal: "user".into() }
    }

    fn trace(value: &[u8]) -> Trace {
        Trace {
            asked: Some(asked()),
            reads: 1,
            got: vec![(Tier::Central, "s:ab".into(), value.to_vec())],
            indexed: Some(Indexed { principal: "alice".into(), id: ID.into(), parts: vec![(Tier::Central, "s:ab".into())], ttl_s: 60 }),
            wrote: false,
            set: Vec::new(),
        }
    }

    fn plan(base: &[u8]) -> Option<WritePlan> {
        Some(WritePlan { tier: Tier::Central, key: "s:ab".into(), base: base.to_vec(), ttl_s: 60, max_bytes: 1000, guard: vec!["user".into()], other_part: Vec::new(), counter: "writes".into(), on_failure: Vec::new() })
    }

    const V1: &[u8] = br#"{"user":"alice","cart":[1]}"#;

    fn recorded() -> Memo {
        Memo::record(trace(V1), Weak::new(), 7, &req(&["sy=t1"], None), &forward(V1), false, &plan(V1)).expect("a forward it can rebuild")
    }

    fn same(a: &wit::Action, b: &wit::Action) -> bool {
        let (wit::Action::Forward(a), wit::Action::Forward(b)) = (a, b) else { return false };
        let headers = |f: &wit::Forward| f.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect::<Vec<_>>();
        a.pin == b.pin && headers(a) == headers(b) && a.context == b.context && matches!((a.after, b.after), (wit::After::IfNamedHeaders, wit::After::IfNamedHeaders))
    }

    #[test]
    fn a_remembered_forward_is_rebuilt_byte_for_byte_from_a_new_read() {
        let memo = recorded();
        for value in [V1, br#"{"user":"alice","cart":[1,2],"note":"\u00e9"}"#, br#"{"cart":[],"user":"alice"}"#] {
            let r = memo.replay(&[value]).expect("same principal");
            assert!(same(&r.action, &forward(value)), "{}", String::from_utf8_lossy(value));
            assert_eq!(r.plan.expect("the write-back").base, value);
            assert_eq!(r.indexed.expect("the index call").principal, "alice");
        }
    }

    #[test]
    fn a_read_of_another_principal_or_not_one_object_goes_to_the_plugin() {
        let memo = recorded();
        for value in [&br#"{"user":"bob","cart":[1]}"#[..], br#"{"cart":[1]}"#, br#"{"user":null}"#, b"[1]", b"", br#"{"user":"alice"} {}"#, b"\0retired"] {
            assert!(memo.replay(&[value]).is_none(), "{}", String::from_utf8_lossy(value));
        }
        assert!(memo.replay(&[V1, b"{}"]).is_none(), "two reads for one key");
        assert!(memo.replay(&[]).is_none());
    }

    /// A split session's forward: both parts in the context, merged in the header.
    fn forward_split(main: &[u8], statics: &[u8]) -> wit::Action {
        let mut context = vec![1, 0];
        for part in [ID.as_bytes(), main, statics] {
            context.extend_from_slice(&(part.len() as u32).to_le_bytes());
            context.extend_from_slice(part);
        }
        let mut all = Raw::parse(main).unwrap();
        all.extend(&Raw::parse(statics).unwrap());
        let headers = vec![wit::Header { name: "x-switchyard-session".into(), value: B64.encode(all.to_bytes()) }];
        wit::Action::Forward(wit::Forward { pin: None, headers, context, after: wit::After::IfNamedHeaders })
    }

    #[test]
    fn a_split_session_is_repeated_while_its_static_part_reads_the_same() {
        const MAIN: &[u8] = br#"{"cart":[1]}"#;
        const STATICS: &[u8] = br#"{"user":"alice"}"#;
        let two = Trace { reads: 2, got: vec![(Tier::Central, "s:ab".into(), MAIN.to_vec()), (Tier::Replicated, "st:ab".into(), STATICS.to_vec())], ..trace(MAIN) };
        let guarded = plan(MAIN).map(|p| WritePlan { guard: vec!["user".into(), "role".into()], ..p });
        let memo = Memo::record(two, Weak::new(), 7, &req(&["sy=t1"], None), &forward_split(MAIN, STATICS), false, &guarded).expect("a split forward it can rebuild");
        let main = br#"{"cart":[1,2],"note":"x"}"#;
        let r = memo.replay(&[main, STATICS]).expect("the static part is the same");
        assert!(same(&r.action, &forward_split(main, STATICS)));
        assert_eq!(r.plan.unwrap().base, main, "the write-back is the main part's");
        assert!(memo.replay(&[main, br#"{"user":"alice","role":"admin"}"#]).is_none(), "the static part changed");
        assert!(memo.replay(&[br#"{"cart":[],"role":"admin"}"#, STATICS]).is_none(), "a static key in the main part: the plugin's");
        assert!(memo.replay(&[main]).is_none(), "one read of two");
        let mut wrong = forward_split(MAIN, STATICS);
        if let wit::Action::Forward(f) = &mut wrong {
            f.headers[0].value = B64.encode(MAIN);
        }
        let two = Trace { reads: 2, got: vec![(Tier::Central, "s:ab".into(), MAIN.to_vec()), (Tier::Replicated, "st:ab".into(), STATICS.to_vec())], ..trace(MAIN) };
        assert!(Memo::record(two, Weak::new(), 7, &req(&["sy=t1"], None), &wrong, false, &guarded).is_none(), "a header that is not the merge");
    }

    #[test]
    fn a_forward_that_read_nothing_is_repeated_as_it_was() {
        let sticky = |principal: &str, value_header: &str| store::Memo { until_ms: 10_000, inputs: Vec::new(), value_header: value_header.into(), context_at: 0, principal: principal.into() };
        let asked = |memo| Trace { asked: Some(memo), ..Trace::default() };
        let pinned = wit::Action::Forward(wit::Forward { pin: Some("127.0.0.1:9001".into()), headers: Vec::new(), context: b"127.0.0.1:9001".to_vec(), after: wit::After::UnlessPinned });
        let r = req(&["sy_backend=t1"], None);
        let memo = Memo::record(asked(sticky("", "")), Weak::new(), 7, &r, &pinned, false, &None).expect("a forward of the cookie alone");
        let again = memo.replay(&[]).expect("nothing to read");
        let (wit::Action::Forward(f), None, None) = (again.action, again.plan, again.indexed) else { panic!("a forward, no write-back, no index") };
        assert_eq!((f.pin.as_deref(), f.context.as_slice(), f.headers.len()), (Some("127.0.0.1:9001"), &b"127.0.0.1:9001"[..], 0));
        assert!(matches!(f.after, wit::After::UnlessPinned));
        assert!(memo.replay(&[b"{}"]).is_none(), "a read it did not make");
        assert!(Memo::record(asked(sticky("user", "")), Weak::new(), 7, &r, &pinned, false, &None).is_none(), "a principal with nothing read");
        assert!(Memo::record(asked(sticky("", "x-switchyard-session")), Weak::new(), 7, &r, &pinned, false, &None).is_none(), "a value header with nothing read");
        assert!(Memo::record(asked(sticky("", "")), Weak::new(), 7, &r, &pinned, false, &plan(b"{}")).is_none(), "a write-back with no read base");
        assert!(Memo::record(asked(sticky("", "")), Weak::new(), 7, &req(&[], None), &pinned, false, &None).is_none(), "no cookie");
    }

    #[test]
    fn it_holds_for_the_same_cookies_inputs_version_and_time_only() {
        let memo = recorded();
        let me = Weak::<super::super::LoadedPlugin>::new().as_ptr();
        assert!(memo.holds(me, 7, &req(&["sy=t1"], None), 9_999));
        assert!(!memo.holds(me, 7, &req(&["sy=t1"], None), 10_000), "until_ms");
        assert!(!memo.holds(me, 8, &req(&["sy=t1"], None), 1), "another generation");
        assert!(!memo.holds(std::ptr::null(), 7, &req(&["sy=t1"], None), 1), "another plugin");
        assert!(!memo.holds(me, 7, &req(&["sy=t2"], None), 1), "another token");
        assert!(!memo.holds(me, 7, &req(&["sy=t1", "a=b"], None), 1), "another cookie header");
        assert!(!memo.holds(me, 7, &req(&["sy=t1a=b"], None), 1));
        assert!(!memo.holds(me, 7, &req(&[], None), 1), "no cookie");
        assert!(!memo.holds(me, 7, &req(&["sy=t1"], Some("p")), 1), "an input it lacked");
        let with_passport = Memo::record(trace(V1), Weak::new(), 7, &req(&["sy=t1"], Some("p1")), &forward(V1), false, &plan(V1)).unwrap();
        assert!(with_passport.holds(me, 7, &req(&["sy=t1"], Some("p1")), 1));
        assert!(!with_passport.holds(me, 7, &req(&["sy=t1"], Some("p2")), 1), "another input");
        assert!(!with_passport.holds(me, 7, &req(&["sy=t1"], None), 1), "an input missing");
    }

    #[test]
    fn nothing_is_remembered_for_a_call_it_cannot_rebuild_or_that_did_more() {
        let r = req(&["sy=t1"], None);
        let record = |t: Trace, action: &wit::Action, locked: bool, plan: &Option<WritePlan>| Memo::record(t, Weak::new(), 7, &r, action, locked, plan).is_some();
        assert!(record(trace(V1), &forward(V1), false, &None), "no write-back is fine");
        assert!(!record(Trace { asked: None, ..trace(V1) }, &forward(V1), false, &None), "not asked");
        assert!(!record(Trace { wrote: true, ..trace(V1) }, &forward(V1), false, &None), "it wrote");
        assert!(!record(Trace { reads: 2, ..trace(V1) }, &forward(V1), false, &None), "two reads");
        assert!(!record(Trace { got: Vec::new(), ..trace(V1) }, &forward(V1), false, &None), "it found nothing");
        assert!(!record(trace(V1), &forward(V1), true, &None), "it locked");
        assert!(!record(trace(V1), &forward(br#"{"user":"alice"}"#), false, &None), "it forwarded something else");
        assert!(!record(trace(V1), &forward(V1), false, &plan(b"{}")), "its write-back has another base");
        let other_principal = Trace { indexed: Some(Indexed { principal: "bob".into(), id: ID.into(), parts: Vec::new(), ttl_s: 60 }), ..trace(V1) };
        assert!(!record(other_principal, &forward(V1), false, &None), "it indexed another principal");
        assert!(!record(Trace { indexed: None, ..trace(V1) }, &forward(V1), false, &None), "it did not index alice");
        let at = |context_at| Trace { asked: Some(store::Memo { context_at, ..asked() }), ..trace(V1) };
        assert!(!record(at(0), &forward(V1), false, &None), "the value is not there");
        assert!(!record(at(u32::MAX), &forward(V1), false, &None), "past the context");
        let header = Trace { asked: Some(store::Memo { value_header: "x-switchyard-session-id".into(), ..asked() }), ..trace(V1) };
        assert!(!record(header, &forward(V1), false, &None), "that header holds something else");
        let reply = wit::Action::Reply(wit::Reply { status: 503, headers: Vec::new(), body: Vec::new() });
        assert!(!record(trace(V1), &reply, false, &None), "a reply");
        assert!(Memo::record(trace(V1), Weak::new(), 7, &req(&[], None), &forward(V1), false, &None).is_none(), "no cookie to find it by");
    }
}
