//! A session's attributes as stored, each value its JSON text: the
//! `switchyard-attrs` crate, which the gateway's `store.write-back` shares.

pub(crate) use switchyard_attrs::{as_text, field, object_len, Raw};

#[cfg(test)]
mod tests {
    use super::super::Attributes;
    use super::*;
    use serde_json::Value;
    use std::borrow::Cow;
    use switchyard_attrs::same_value;

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
