//! A session's attributes as the JSON object they are stored in, each value
//! kept as its own JSON text: a request that changes one attribute neither
//! builds nor re-serializes the others, and "did anything change" is a
//! comparison of texts, not of trees. Shared by the SDK's stored session
//! strategies (in the plugin) and the gateway's `store.write-back` (in the
//! host), so both store the same bytes for the same update.

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
/// (the order `serde_json` writes a map in).
#[derive(Default, Clone, Debug)]
pub struct Raw<'a>(BTreeMap<Cow<'a, str>, Cow<'a, RawValue>>);

impl<'a> Raw<'a> {
    /// A stored part's attributes; empty bytes are none. `None` unless the
    /// bytes are one JSON object.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw = de.deserialize_map(RawVisitor).ok()?;
        de.end().ok()?;
        Some(raw)
    }

    /// No attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON text of `name`'s value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.get())
    }

    /// Its attribute names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(|k| k.as_ref())
    }

    /// Whether it holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Add `other`'s attributes (its value wins on a name in both).
    pub fn extend(&mut self, other: &Raw<'a>) {
        self.0.extend(other.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Set each of `set`'s attributes, or delete it where it is `null`.
    pub fn apply(&mut self, set: &Raw<'a>) {
        for (name, value) in &set.0 {
            if value.get() == "null" {
                self.0.remove(name);
            } else {
                self.0.insert(name.clone(), value.clone());
            }
        }
    }

    /// Whether applying this set (see [`Raw::apply`]) changes `name` in
    /// `before`: sets it to another value (compared as JSON values, see
    /// [`same_value`]), or deletes it where it is. The SDK asks it of the
    /// principal (a change renews the id); the gateway's write-back of its
    /// guarded names (a change goes to the plugin).
    pub fn changes(&self, before: &Raw<'_>, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some("null") => before.contains(name),
            Some(v) => !same_value(before.get(name), Some(v)),
        }
    }

    /// The same attributes with the same JSON texts.
    pub fn same(&self, other: &Raw<'_>) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|((k, v), (ok, ov))| k == ok && v.get() == ov.get())
    }

    /// The attributes whose names `is_first` picks, and the rest.
    pub fn partition(self, is_first: impl Fn(&str) -> bool) -> (Raw<'a>, Raw<'a>) {
        let (first, rest) = self.0.into_iter().partition(|(k, _)| is_first(k));
        (Raw(first), Raw(rest))
    }

    /// The stored form: one compact JSON object, names in order.
    pub fn to_bytes(&self) -> Vec<u8> {
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

    /// As a JSON map (values parsed; one that does not parse is left out).
    pub fn to_attributes(&self) -> serde_json::Map<String, Value> {
        self.0.iter().filter_map(|(k, v)| Some((k.to_string(), serde_json::from_str::<Value>(v.get()).ok()?))).collect()
    }
}

/// A value as text: a JSON string's contents, other values (numbers,
/// arrays) as their JSON; `None` when absent or `null`.
pub fn as_text(value: Option<&str>) -> Option<Cow<'_, str>> {
    match value? {
        "null" => None,
        s if s.starts_with('"') => serde_json::from_str::<Key>(s).ok().map(|k| k.0),
        other => Some(Cow::Borrowed(other)),
    }
}

/// Whether two JSON texts are the same value (`None`: absent).
pub fn same_value(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || serde_json::from_str::<Value>(a).ok().is_some_and(|a| serde_json::from_str::<Value>(b).ok() == Some(a)),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// How many attributes the JSON object `bytes` holds; `None` unless the
/// bytes are one JSON object. Checks without keeping anything.
pub fn object_len(bytes: &[u8]) -> Option<usize> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let n = de.deserialize_map(Count).ok()?;
    de.end().ok()?;
    Some(n)
}

/// The JSON text of attribute `name` in the JSON object `bytes` (`Some(None)`
/// when it has none), without keeping the rest; `None` unless the bytes
/// are one JSON object.
pub fn field<'a>(bytes: &'a [u8], name: &str) -> Option<Option<&'a str>> {
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
