//! `store.write-back`: a backend's `x-switchyard-session-set` applied to a
//! session as loaded with the SDK's own merge (`switchyard-attrs`: each
//! value kept as its JSON text, names in order, compact), so the common
//! write needs no `after-response` call into the plugin and stores the
//! bytes the plugin would.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use switchyard_attrs::Raw;

/// The backend header that sets attributes (base64 of a JSON object).
pub const SET_HEADER: &str = "x-switchyard-session-set";
/// The backend headers only the plugin handles: ending and renewing.
pub const PLUGIN_HEADERS: [&str; 2] = ["x-switchyard-session-end", "x-switchyard-session-renew"];

/// What a write-back made of a response.
#[derive(Debug, PartialEq)]
pub enum Merged {
    /// Nothing changed: no write.
    Same,
    /// The attributes to store.
    Changed(Vec<u8>),
    /// The plugin must see it (its `after-response`): a header it alone
    /// handles, several or unreadable set headers, a guarded name set to
    /// another value or deleted, or a result over `max_bytes`.
    ToPlugin,
}

/// Apply the response's set header `set` (its value as sent) to `base`
/// (the stored JSON object; empty for none). `other` is a split session's
/// other part as loaded (empty for none): a name `set` gives the JSON text
/// it holds there is left out, as the SDK stores nothing for it; any other
/// set or delete of one of its names goes to the plugin.
pub fn apply(base: &[u8], other: &[u8], set: &[u8], guard: &[String], max_bytes: usize) -> Merged {
    let Some(json) = B64.decode(set.trim_ascii()).ok() else { return Merged::ToPlugin };
    let (Some(set), Some(before), Some(other)) = (Raw::parse(&json), Raw::parse(base), Raw::parse(other)) else { return Merged::ToPlugin };
    let set = unchanged_elsewhere(set, &other);
    // Any other change to the other part is the plugin's to write.
    if set.names().any(|name| other.contains(name)) {
        return Merged::ToPlugin;
    }
    // The SDK's own test of a principal change: a login of the user the
    // session already holds needs no plugin (and gets no new id there).
    if guard.iter().any(|g| set.changes(&before, g)) {
        return Merged::ToPlugin;
    }
    let mut merged = before.clone();
    merged.apply(&set);
    if merged.same(&before) {
        return Merged::Same;
    }
    let bytes = merged.to_bytes();
    if bytes.len() > max_bytes { Merged::ToPlugin } else { Merged::Changed(bytes) }
}

/// `set` without the names it gives the very text `other` holds (the
/// SDK leaves a part whose text is unchanged unwritten).
fn unchanged_elsewhere<'a>(set: Raw<'a>, other: &Raw<'_>) -> Raw<'a> {
    let same: Vec<&str> = other.names().filter(|n| set.get(n) == other.get(n)).collect();
    if same.is_empty() {
        return set;
    }
    set.partition(|name| same.contains(&name)).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn set(json: &str) -> Vec<u8> {
        B64.encode(json).into_bytes()
    }

    #[test]
    fn a_set_is_applied_in_place_and_nulls_delete() {
        let base = br#"{"cart":["a"],"user":"ann","x":1}"#;
        assert_eq!(apply(base, b"", &set(r#"{"cart":["a","b"],"x":null}"#), &[], 1024), Merged::Changed(br#"{"cart":["a","b"],"user":"ann"}"#.to_vec()));
        // Values keep their text (no re-serialization), names sort.
        assert_eq!(apply(b"", b"", &set(r#"{"z": 1.50, "a": {"k" : true}}"#), &[], 1024), Merged::Changed(br#"{"a":{"k" : true},"z":1.50}"#.to_vec()));
    }

    #[test]
    fn what_changes_nothing_writes_nothing() {
        assert_eq!(apply(br#"{"a":1}"#, b"", &set(r#"{"a":1}"#), &[], 1024), Merged::Same);
        assert_eq!(apply(br#"{"a":1}"#, b"", &set("{}"), &[], 1024), Merged::Same);
        assert_eq!(apply(b"", b"", &set(r#"{"gone":null}"#), &[], 1024), Merged::Same);
        // Stored with spaces: the same attributes, so no write either.
        assert_eq!(apply(br#"{ "a" : 1 }"#, b"", &set(r#"{"a":1}"#), &[], 1024), Merged::Same);
    }

    #[test]
    fn the_plugin_decides_what_the_gateway_cannot() {
        let guard = ["user".to_string()];
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"user":"bob"}"#), &guard, 1024), Merged::ToPlugin, "a guarded name");
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"user":null}"#), &guard, 1024), Merged::ToPlugin, "a guarded delete");
        // The guard sees names as JSON reads them: escaped, or repeated.
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"us\u0065r":"bob"}"#), &guard, 1024), Merged::ToPlugin, "an escaped guarded name");
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"user":"ann","cart":[],"user":"bob"}"#), &guard, 1024), Merged::ToPlugin, "a repeated one");
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"User":"bob"}"#), &guard, 1024), Merged::Changed(br#"{"User":"bob","user":"ann"}"#.to_vec()), "another name");
        assert_eq!(apply(br#"{"cart":[]}"#, b"", &set(r#"{"user":"ann"}"#), &guard, 1024), Merged::ToPlugin, "a guarded name set where there was none");
        assert_eq!(apply(br#"{"user":"ann"}"#, b"", &set(r#"{"user":1}"#), &guard, 1024), Merged::ToPlugin, "another type");
        assert_eq!(apply(b"", b"", &set(r#"{"a":"0123456789"}"#), &[], 10), Merged::ToPlugin, "over max_bytes");
    }

    /// The same user logging in again: the guarded name keeps its value,
    /// so the gateway stores the rest itself, as the plugin would.
    #[test]
    fn a_guarded_name_set_to_the_value_it_has_is_no_change() {
        let guard = ["user".to_string()];
        let base = br#"{"cart":["a"],"user":"ann"}"#;
        assert_eq!(apply(base, b"", &set(r#"{"user":"ann","cart":[]}"#), &guard, 1024), Merged::Changed(br#"{"cart":[],"user":"ann"}"#.to_vec()));
        assert_eq!(apply(base, b"", &set(r#"{"user":"ann"}"#), &guard, 1024), Merged::Same);
        // The same value written another way passes the guard, and is
        // stored as sent, as the plugin stores it.
        assert_eq!(apply(br#"{"user":{"id":1,"n":"ann"}}"#, b"", &set(r#"{"user":{"n":"ann","id":1}}"#), &guard, 1024), Merged::Changed(br#"{"user":{"n":"ann","id":1}}"#.to_vec()));
        assert_eq!(apply(b"", b"", &set(r#"{"user":null}"#), &guard, 1024), Merged::Same, "a delete of what is not there");
        for bad in [&b"not base64!"[..], &set("[1]"), &set("{\"a\":"), &set("{} {}"), &set("\"text\"")] {
            assert_eq!(apply(b"", b"", bad, &[], 1024), Merged::ToPlugin, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(apply(b"{corrupt", b"", &set(r#"{"a":1}"#), &[], 1024), Merged::ToPlugin, "unreadable base");
    }

    /// A split session (`write-back-split`): `user` lives in the other
    /// part. Set to the text it holds there, it is left out and the rest is
    /// a plain update of the main part; set to anything else (even the same
    /// value written another way, which the SDK would store anew), or
    /// deleted, it goes to the plugin.
    #[test]
    fn a_name_of_the_other_part_set_to_its_text_is_left_out() {
        let guard = ["user".to_string(), "role".to_string()];
        let (main, other) = (br#"{"cart":["a"]}"#, br#"{"role":"x","user":"ann"}"#);
        assert_eq!(apply(main, other, &set(r#"{"user":"ann","cart":[]}"#), &guard, 1024), Merged::Changed(br#"{"cart":[]}"#.to_vec()));
        assert_eq!(apply(main, other, &set(r#"{"user":"ann","role":"x"}"#), &guard, 1024), Merged::Same);
        assert_eq!(apply(main, other, &set(r#"{"user":"bob","cart":[]}"#), &guard, 1024), Merged::ToPlugin, "another user");
        assert_eq!(apply(main, other, &set(r#"{"user":null}"#), &guard, 1024), Merged::ToPlugin, "a logout of the user");
        assert_eq!(apply(main, other, &set(r#"{"user":"\u0061nn"}"#), &guard, 1024), Merged::ToPlugin, "the same value in another text");
        assert_eq!(apply(main, other, &set(r#"{"user":"bob","user":"ann"}"#), &guard, 1024), Merged::Same, "the last of a repeated name counts");
        assert_eq!(apply(main, other, &set(r#"{"us\u0065r":"ann"}"#), &guard, 1024), Merged::Same, "an escaped name is the name it decodes to");
        assert_eq!(apply(main, other, &set(r#"{"role":"y"}"#), &[], 1024), Merged::ToPlugin, "the other part is the plugin's to change, guarded or not");
        assert_eq!(apply(main, b"{corrupt", &set(r#"{"a":1}"#), &guard, 1024), Merged::ToPlugin, "an unreadable other part");
    }

    /// A backend's value nested past any sane depth, or huge, neither
    /// overflows the stack nor slips past `max_bytes`. (A value is kept as
    /// its text, never built: the depth is taken as the plugin takes it.)
    #[test]
    fn deep_or_huge_values_are_bounded() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(apply(b"", b"", &set(&deep), &[], usize::MAX), Merged::Changed(v) if v.len() == deep.len()), "kept as sent");
        assert_eq!(apply(b"", b"", &set(&deep), &[], 16 * 1024), Merged::ToPlugin, "over max_bytes");
        let huge = format!("{{\"a\":\"{}\"}}", "x".repeat(64 * 1024));
        assert_eq!(apply(b"", b"", &set(&huge), &[], 16 * 1024), Merged::ToPlugin);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), any::<i32>().prop_map(Value::from), "[a-z\"\\\\é]{0,6}".prop_map(Value::from)];
        leaf.prop_recursive(2, 8, 3, |inner| prop::collection::vec(inner, 0..3).prop_map(Value::from))
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-d\"é]{1,2}", json_value(), 0..5).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// The same result as setting and deleting in a JSON map, then
        /// writing it compactly (what the SDK's strategies store).
        #[test]
        fn it_agrees_with_a_json_map(base in object(), changes in object()) {
            let base: Map<String, Value> = base.into_iter().filter(|(_, v)| !v.is_null()).collect();
            let base_bytes = if base.is_empty() { Vec::new() } else { serde_json::to_vec(&base).unwrap() };
            let mut want = base.clone();
            for (k, v) in &changes {
                if v.is_null() { want.remove(k); } else { want.insert(k.clone(), v.clone()); }
            }
            let got = apply(&base_bytes, b"", &set(&serde_json::to_string(&changes).unwrap()), &[], usize::MAX);
            if want == base {
                prop_assert_eq!(got, Merged::Same);
            } else {
                prop_assert_eq!(got, Merged::Changed(serde_json::to_vec(&want).unwrap()));
            }
        }
    }
}
