//! The plugin's `config` table, as the gateway passes it to `configure`.

use serde::de::DeserializeOwned;

/// The `[plugins.NAME.config]` table of the gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    value: serde_json::Value,
}

impl Config {
    /// Parse the JSON text the host sends; an empty text is an empty table.
    pub fn from_json(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self { value: serde_json::Value::Object(Default::default()) });
        }
        let value = serde_json::from_str(text).map_err(|e| format!("config is not valid JSON: {e}"))?;
        Ok(Self { value })
    }

    /// Deserialize the whole table into `T`. Use `#[serde(deny_unknown_fields)]`
    /// on `T` so a misspelt key is reported instead of ignored. Every
    /// unknown key and bad value is reported at once, each with its path
    /// (`rules[0].statement: ...`), joined by `; `.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let mut value = self.value.clone();
        let mut problems: Vec<String> = Vec::new();
        while problems.len() < 32 {
            let err = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(t) if problems.is_empty() => return Ok(t),
                Ok(_) => break,
                Err(e) => e,
            };
            let path = err.path().to_string();
            let message = err.inner().to_string();
            let missing = message.starts_with("missing field");
            // A key set aside below is not also reported as missing.
            if !(missing && problems.iter().any(|p| p.starts_with(&format!("{path}.")) || path == ".")) || problems.is_empty() {
                problems.push(if path == "." { message.clone() } else { format!("{path}: {message}") });
            }
            if missing || !remove(&mut value, &path) {
                break;
            }
        }
        Err(format!("invalid plugin config: {}", problems.join("; ")))
    }

    /// As [`Self::parse`], with the table's keys laid over `defaults` (an
    /// object): a plugin states its defaults as data and the operator
    /// overrides any of them.
    pub fn parse_over<T: DeserializeOwned>(&self, defaults: serde_json::Value) -> Result<T, String> {
        let mut merged = defaults;
        if let (serde_json::Value::Object(base), serde_json::Value::Object(over)) = (&mut merged, &self.value) {
            base.extend(over.clone());
        } else {
            return Err("invalid plugin config: expected a table".into());
        }
        Self { value: merged }.parse()
    }

    /// Split the table in two: the `keys` listed (those present), and the
    /// rest. For a plugin that adds keys of its own to a table another type
    /// parses with `deny_unknown_fields` (a session strategy built on
    /// `session::stored`, say).
    pub fn split_off(&self, keys: &[&str]) -> (Config, Config) {
        let (mut mine, mut rest) = (serde_json::Map::new(), serde_json::Map::new());
        if let serde_json::Value::Object(m) = &self.value {
            for (k, v) in m {
                let side = if keys.contains(&k.as_str()) { &mut mine } else { &mut rest };
                side.insert(k.clone(), v.clone());
            }
        }
        (Self { value: mine.into() }, Self { value: rest.into() })
    }

    /// The raw JSON value.
    pub fn raw(&self) -> &serde_json::Value {
        &self.value
    }
}

/// Remove the value at a `serde_path_to_error` path (`a.b[2].c`).
fn remove(value: &mut serde_json::Value, path: &str) -> bool {
    let mut segs: Vec<&str> = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            if open > 0 {
                segs.push(&rest[..open]);
            }
            let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
            segs.push(&rest[open..(close + 1).min(rest.len())]);
            rest = &rest[(close + 1).min(rest.len())..];
        }
        if !rest.is_empty() {
            segs.push(rest);
        }
    }
    let Some((last, parents)) = segs.split_last() else { return false };
    let mut node = value;
    for seg in parents {
        node = match (seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')).and_then(|i| i.parse::<usize>().ok()), node) {
            (Some(i), serde_json::Value::Array(a)) => match a.get_mut(i) {
                Some(n) => n,
                None => return false,
            },
            (None, serde_json::Value::Object(o)) => match o.get_mut(*seg) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last.strip_prefix('[').and_then(|s| s.strip_suffix(']')).and_then(|i| i.parse::<usize>().ok()), node) {
        (Some(i), serde_json::Value::Array(a)) if i < a.len() => {
            a.remove(i);
            true
        }
        (None, serde_json::Value::Object(o)) => o.remove(*last).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_off_takes_the_listed_keys_and_leaves_the_rest() {
        let c = Config::from_json(r#"{"every": 3, "cookie": "c", "ttl_s": 60}"#).unwrap();
        let (mine, rest) = c.split_off(&["every", "absent"]);
        assert_eq!(mine.raw(), &serde_json::json!({"every": 3}));
        assert_eq!(rest.raw(), &serde_json::json!({"cookie": "c", "ttl_s": 60}));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        vnodes: u32,
    }

    #[test]
    fn unknown_key_is_named() {
        let c = Config::from_json(r#"{"vnode": 3}"#).unwrap();
        let err = c.parse::<Conf>().unwrap_err();
        assert!(err.contains("vnode"), "{err}");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rules {
        rules: Vec<Rule>,
        #[serde(default)]
        mode: Option<u32>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        statement: String,
        #[serde(default)]
        weight: u32,
    }

    #[test]
    fn every_problem_at_once_with_its_path() {
        let c = Config::from_json(r#"{"rules": [{"statement": "x", "wieght": 2}, {"statement": 5}], "mode": "fast", "extra": 1}"#).unwrap();
        let err = c.parse::<Rules>().unwrap_err();
        for part in ["rules[0].wieght: unknown field", "rules[1].statement: invalid type", "mode: invalid type", "extra: unknown field"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
    }

    #[test]
    fn empty_text_is_empty_table() {
        let c = Config::from_json("").unwrap();
        assert!(c.raw().as_object().unwrap().is_empty());
    }
}
