//! A session's attributes as the JSON object they are stored in, each value
//! kept as its own JSON text: a request that changes one attribute neither
//! builds nor re-serializes the others, and "did anything change" is a
//! comparison of texts, not of trees.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// An attribute name, borrowed from the stored bytes unless it holds an
/// escape.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Attributes as stored: each name's value as its JSON text, in name order
/// (the order `serde_json` writes a [`Attributes`] map in).
#[derive(Default, Clone, Debug)]
pub(crate) struct Raw<'a>(BTreeMap<Cow<'a, str>, Cow<'a, RawValue>>);

impl<'a> Raw<'a> {
    /// A stored part's attributes; empty bytes are none. `None` unless the
    /// bytes are one JSON object.
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw = de.deserialize_map(RawVisitor).ok()?;
        de.end().ok()?;
        Some(raw)
    }

    /// No attributes.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON text of `name`'s value.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.get())
    }

    /// Its attribute names, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(|k| k.as_ref())
    }

    /// Whether it holds `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Add `other`'s attributes (its value wins on a name in both).
    pub(crate) fn extend(&mut self, other: &Raw<'a>) {
        self.0.extend(other.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Set each of `set`'s attributes, or delete it where it is `null`.
    pub(crate) fn apply(&mut self, set: &Raw<'a>) {
        for (name, value) in &set.0 {
            if value.get() == "null" {
                self.0.remove(name);
            } else {
                self.0.insert(name.clone(), value.clone());
            }
        }
    }

    /// The same attributes with the same JSON texts.
    pub(crate) fn same(&self, other: &Raw<'_>) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|((k, v), (ok, ov))| k == ok && v.get() == ov.get())
    }

    /// The attributes whose names `is_first` picks, and the rest.
    pub(crate) fn partition(self, is_first: impl Fn(&str) -> bool) -> (Raw<'a>, Raw<'a>) {
        let (first, rest) = self.0.into_iter().partition(|(k, _)| is_first(k));
        (Raw(first), Raw(rest))
    }

    /// The stored form: one compact JSON object, names in order.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>());
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A str always serializes.
            let _ = serde_json::to_writer(&mut out, k.as_ref());
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }

    /// As a JSON map.
    #[cfg(test)]
    fn to_attributes(&self) -> super::Attributes {
        self.0.iter().filter_map(|(k, v)| Some((k.to_string(), serde_json::from_str::<Value>(v.get()).ok()?))).collect()
    }
}

/// A value as text: a JSON string's contents, other values (numbers,
/// arrays) as their JSON; `None` when absent or `null`.
pub(crate) fn as_text(value: Option<&str>) -> Option<Cow<'_, str>> {
    match value? {
        "null" => None,
        s if s.starts_with('"') => serde_json::from_str::<Key>(s).ok().map(|k| k.0),
        other => Some(Cow::Borrowed(other)),
    }
}

/// Whether two JSON texts are the same value (`None`: absent).
pub(crate) fn same_value(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || serde_json::from_str::<Value>(a).ok().is_some_and(|a| serde_json::from_str::<Value>(b).ok() == Some(a)),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// How many attributes the JSON object `bytes` holds; `None` unless the
/// bytes are one JSON object. Checks without keeping anything.
pub(crate) fn object_len(bytes: &[u8]) -> Option<usize> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let n = de.deserialize_map(Count).ok()?;
    de.end().ok()?;
    Some(n)
}

/// The JSON text of attribute `name` in the JSON object `bytes` (`Some(None)`
/// when it has none), without keeping the rest; `None` unless the bytes
/// are one JSON object.
pub(crate) fn field<'a>(bytes: &'a [u8], name: &str) -> Option<Option<&'a str>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = de.deserialize_map(Field(name)).ok()?;
    de.end().ok()?;
    Some(found)
}

struct Count;

impl<'de> Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        // Keys and values as borrowed text: checked as UTF-8, not kept.
        while map.next_key::<Key>()?.is_some() {
            map.next_value::<&RawValue>()?;
            n += 1;
        }
        Ok(n)
    }
}

struct Field<'n>(&'n str);

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(k)) = map.next_key()? {
            if k == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?.get());
            } else {
                map.next_value::<&RawValue>()?;
            }
        }
        Ok(found)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(Key(k)) = map.next_key()? {
            let v: &'de RawValue = map.next_value()?;
            out.insert(k, Cow::Borrowed(v));
        }
        Ok(Raw(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Attributes;
    use super::*;

    fn attrs(v: Value) -> Attributes {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn stored_bytes_are_what_serde_json_writes_for_the_same_map() {
        let cases = [
            serde_json::json!({}),
            serde_json::json!({"user": "ann", "cart": ["tea", 1, null, {"b": 2, "a": [1.5]}]}),
            serde_json::json!({"quote\"d": "x\ny", "é": "\u{0}", "n": -0.25, "t": true}),
        ];
        for case in cases {
            let map = attrs(case);
            let bytes = serde_json::to_vec(&map).unwrap();
            let raw = Raw::parse(&bytes).unwrap();
            assert_eq!(String::from_utf8(raw.to_bytes()).unwrap(), String::from_utf8(bytes.clone()).unwrap());
            assert_eq!(raw.to_attributes(), map);
        }
    }

    #[test]
    fn only_one_json_object_parses() {
        for bad in [&b"[1]"[..], b"\"x\"", b"{\"a\":1} {}", b"{\"a\":", b"{\"a\":\"\xff\"}", b"nul"] {
            assert!(Raw::parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(Raw::parse(b"").unwrap().is_empty());
        assert!(Raw::parse(b" {\"a\" : [ 1 ]} ").is_some(), "whitespace is JSON");
    }

    #[test]
    fn applying_changes_matches_the_map_and_a_same_value_is_no_change() {
        let before = attrs(serde_json::json!({"user": "ann", "cart": ["tea"], "n": 1}));
        let bytes = serde_json::to_vec(&before).unwrap();
        let raw = Raw::parse(&bytes).unwrap();
        for set in [
            serde_json::json!({"cart": ["tea", "milk"]}),
            serde_json::json!({"n": null, "theme": "dark"}),
            serde_json::json!({"gone": null}),
            serde_json::json!({"user": "ann"}),
        ] {
            let set = attrs(set);
            let mut expected = before.clone();
            super::super::Changes::setting(&set).apply(&mut expected);
            let set_bytes = serde_json::to_vec(&set).unwrap();
            let mut after = raw.clone();
            after.apply(&Raw::parse(&set_bytes).unwrap());
            assert_eq!(after.to_bytes(), serde_json::to_vec(&expected).unwrap());
            assert_eq!(after.same(&raw), expected == before, "{set:?}");
        }
    }

    #[test]
    fn a_principal_reads_as_text_and_compares_as_a_value() {
        let raw_bytes = br#"{"a":"ann","n":7,"z":null,"q":"x\"y"}"#;
        let raw = Raw::parse(raw_bytes).unwrap();
        assert_eq!(as_text(raw.get("a")).as_deref(), Some("ann"));
        assert!(matches!(as_text(raw.get("a")), Some(Cow::Borrowed(_))), "no copy without escapes");
        assert_eq!(as_text(raw.get("n")).as_deref(), Some("7"));
        assert_eq!(as_text(raw.get("z")), None);
        assert_eq!(as_text(raw.get("q")).as_deref(), Some("x\"y"));
        assert_eq!(as_text(raw.get("missing")), None);
        assert!(same_value(raw.get("a"), Some(r#""ann""#)));
        assert!(same_value(raw.get("a"), Some(r#""\u0061nn""#)), "an escape is the same string");
        assert!(!same_value(raw.get("a"), Some(r#""bob""#)));
        assert!(!same_value(raw.get("n"), Some(r#""7""#)), "a number is not a string");
        assert!(same_value(None, None));
        assert!(!same_value(raw.get("missing"), Some("null")));
    }

    #[test]
    fn a_field_and_a_count_read_without_keeping() {
        let bytes = br#"{"cart":["a",{"user":"x"}],"user":"ann","n":1}"#;
        assert_eq!(field(bytes, "user"), Some(Some(r#""ann""#)));
        assert_eq!(field(bytes, "nobody"), Some(None));
        assert_eq!(field(b"[1]", "user"), None);
        assert_eq!(field(b"{\"user\":\"\xff\"}", "user"), None, "not UTF-8");
        assert_eq!(object_len(bytes), Some(3));
        assert_eq!(object_len(b"{}"), Some(0));
        assert_eq!(object_len(b"{\"a\":\"\xff\"}"), None, "not UTF-8");
        assert_eq!(object_len(b"{\"a\":1}x"), None);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        // Integers only: a float's text and its value disagree on -0.0.
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::from(n)),
            "[a-z\"\\\\\n\u{e9}\u{1f600}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]{1,2}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl proptest::strategy::Strategy<Value = Attributes> {
        use proptest::strategy::Strategy as _;
        proptest::collection::btree_map("[a-d\"\u{e9}]{0,3}", json_value(), 0..6).prop_map(|m| m.into_iter().collect())
    }

    proptest::proptest! {
        /// Whatever a session and a backend's changes hold, the texts give
        /// the bytes and the "changed" answer the JSON maps would.
        #[test]
        fn text_merge_is_the_map_merge(before in json_object(), set in json_object()) {
            let bytes = serde_json::to_vec(&before).unwrap();
            let raw = Raw::parse(&bytes).unwrap();
            proptest::prop_assert_eq!(raw.to_bytes(), bytes.clone());
            let mut expected = before.clone();
            super::super::Changes::setting(&set).apply(&mut expected);
            let set_bytes = serde_json::to_vec(&set).unwrap();
            let mut after = raw.clone();
            after.apply(&Raw::parse(&set_bytes).unwrap());
            proptest::prop_assert_eq!(after.to_bytes(), serde_json::to_vec(&expected).unwrap());
            proptest::prop_assert_eq!(after.same(&raw), expected == before);
            proptest::prop_assert_eq!(object_len(&bytes), Some(before.len()));
            for name in before.keys() {
                let text = field(&bytes, name).unwrap().unwrap();
                proptest::prop_assert_eq!(serde_json::from_str::<Value>(text).unwrap(), before[name].clone());
            }
        }
    }
}
