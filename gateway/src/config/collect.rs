//! Every deserialization error in one run: after each unknown key or bad
//! value, that key is removed from a copy of the document and parsing goes
//! on, so a file with seven mistakes needs one `check`, not seven. Lines
//! come from the original file.

use super::model::RawConfig;
use super::{line_of, ConfigError};
use toml_edit::{ImDocument, Item, Value};

/// Stop after this many errors: the rest are likely consequences.
const MAX_ERRORS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Deserialize `text`, reporting every unknown key and bad value.
#[cfg(test)]
fn parse_raw(text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    match parse_all(text) {
        (Some(raw), errors, _) if errors.is_empty() => Ok(raw),
        (_, errors, _) => Err(errors),
    }
}

/// Deserialize `text` with every offending key removed: the config that
/// remains (if any), every error, and the text it was read from.
pub(super) fn parse_all(text: &str) -> (Option<RawConfig>, Vec<ConfigError>, String) {
    let original = ImDocument::parse(text).ok();
    let mut current = text.to_string();
    let mut errors: Vec<ConfigError> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let (path, message, offset) = match once(&current) {
            Ok(raw) => return (Some(raw), errors, current),
            Err(e) => e,
        };
        let segs = parse_path(&path);
        let line = original.as_ref().and_then(|d| line_in(text, d, &segs)).or_else(|| (current == text).then_some(offset).flatten().map(|o| line_of(text, o)));
        // A required key reported (and removed) as a bad value, or next to a
        // misspelt key in the same table, is not reported missing as well.
        let echo = message.starts_with("missing field") && errors.iter().any(|e| e.path.rsplit_once('.').map_or("", |(parent, _)| parent) == path);
        if !echo {
            errors.push(ConfigError { path: if path.is_empty() { "(top)".into() } else { path.clone() }, line, message: message.clone() });
        }
        let Ok(mut doc) = current.parse::<toml_edit::DocumentMut>() else { break };
        if message.starts_with("missing field") || !remove(doc.as_item_mut(), &segs) {
            break;
        }
        current = doc.to_string();
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    (None, errors, current)
}

/// Semantic errors found in the cleaned text, with lines of the original.
pub(super) fn relocate(text: &str, errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let Ok(doc) = ImDocument::parse(text) else { return errors };
    errors.into_iter().map(|e| ConfigError { line: line_in(text, &doc, &parse_path(&e.path)).or(e.line), ..e }).collect()
}

/// One deserialization: the value, or (key path, message, byte offset).
fn once(text: &str) -> Result<RawConfig, (String, String, Option<usize>)> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // Spanned<T> adds a private segment to the path; users never wrote it.
        let path = e.path().to_string().replace(".$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        let path = if path == "." { String::new() } else { path };
        (path, inner.message().trim().to_string(), inner.span().map(|s| s.start))
    })
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segs.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    segs.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

/// Remove the item `segs` names; false if it is not there.
fn remove(item: &mut Item, segs: &[Seg]) -> bool {
    match (segs, item) {
        ([Seg::Key(k)], Item::Table(t)) => t.remove(k).is_some(),
        ([Seg::Key(k), rest @ ..], Item::Table(t)) => t.get_mut(k).is_some_and(|i| remove(i, rest)),
        ([Seg::Index(i), rest @ ..], Item::ArrayOfTables(a)) => match (rest, a.get_mut(*i)) {
            ([], Some(_)) => {
                a.remove(*i);
                true
            }
            (_, Some(t)) => remove_in_table(t, rest),
            _ => false,
        },
        (_, Item::Value(v)) => remove_value(v, segs),
        _ => false,
    }
}

fn remove_in_table(t: &mut toml_edit::Table, segs: &[Seg]) -> bool {
    match segs {
        [Seg::Key(k)] => t.remove(k).is_some(),
        [Seg::Key(k), rest @ ..] => t.get_mut(k).is_some_and(|i| remove(i, rest)),
        _ => false,
    }
}

fn remove_value(v: &mut Value, segs: &[Seg]) -> bool {
    match (segs, v) {
        ([Seg::Key(k)], Value::InlineTable(t)) => t.remove(k).is_some(),
        ([Seg::Key(k), rest @ ..], Value::InlineTable(t)) => t.get_mut(k).is_some_and(|v| remove_value(v, rest)),
        ([Seg::Index(i)], Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        ([Seg::Index(i), rest @ ..], Value::Array(a)) => a.get_mut(*i).is_some_and(|v| remove_value(v, rest)),
        _ => false,
    }
}

/// The line of the key (or value) `segs` names in the original document.
fn line_in(text: &str, doc: &ImDocument<&str>, segs: &[Seg]) -> Option<usize> {
    let mut item: &Item = doc.as_item();
    let mut value: Option<&Value> = None;
    for (n, seg) in segs.iter().enumerate() {
        let last = n + 1 == segs.len();
        let (next_item, next_value, key_span) = match (seg, value, item) {
            (Seg::Key(k), None, Item::Table(t)) => (t.get(k), None, t.key(k).and_then(|k| k.span())),
            (Seg::Index(i), None, Item::ArrayOfTables(a)) => (a.get(*i).map(|_| item), None, None),
            (Seg::Key(k), Some(Value::InlineTable(t)), _) | (Seg::Key(k), None, Item::Value(Value::InlineTable(t))) => {
                (None, t.get(k), t.key(k).and_then(|k| k.span()))
            }
            (Seg::Index(i), Some(Value::Array(a)), _) | (Seg::Index(i), None, Item::Value(Value::Array(a))) => (None, a.get(*i), None),
            _ => return None,
        };
        if last {
            let span = key_span.or_else(|| next_value.and_then(Value::span)).or_else(|| next_item.and_then(Item::span));
            return span.map(|s| line_of(text, s.start));
        }
        match (seg, item, next_item, next_value) {
            (Seg::Index(i), Item::ArrayOfTables(a), _, _) => {
                let t = a.get(*i)?;
                // An array-of-tables element is a table: keep walking in it.
                return line_in_table(text, t, &segs[n + 1..]);
            }
            (_, _, Some(i), _) => item = i,
            (_, _, None, Some(v)) => value = Some(v),
            _ => return None,
        }
    }
    None
}

fn line_in_table(text: &str, t: &toml_edit::Table, segs: &[Seg]) -> Option<usize> {
    let (first, rest) = segs.split_first()?;
    let Seg::Key(k) = first else { return None };
    if rest.is_empty() {
        return t.key(k).and_then(|k| k.span()).or_else(|| t.get(k).and_then(Item::span)).map(|s| line_of(text, s.start));
    }
    match t.get(k)? {
        Item::Table(inner) => line_in_table(text, inner, rest),
        Item::ArrayOfTables(a) => match rest.split_first()? {
            (Seg::Index(i), more) if !more.is_empty() => line_in_table(text, a.get(*i)?, more),
            _ => None,
        },
        Item::Value(v) => line_in_value(text, v, rest),
        Item::None => None,
    }
}

fn line_in_value(text: &str, v: &Value, segs: &[Seg]) -> Option<usize> {
    let (first, rest) = segs.split_first()?;
    let (next, key_span) = match (first, v) {
        (Seg::Key(k), Value::InlineTable(t)) => (t.get(k)?, t.key(k).and_then(|k| k.span())),
        (Seg::Index(i), Value::Array(a)) => (a.get(*i)?, None),
        _ => return None,
    };
    if rest.is_empty() {
        return key_span.or_else(|| next.span()).map(|s| line_of(text, s.start));
    }
    line_in_value(text, next, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mistake_in_one_run() {
        let text = "[server]\nthread = 2\nthreads = \"two\"\n\n[[upstreams]]\nname = \"web\"\nbakends = 1\nbackends = [{ address = \"127.0.0.1:1\", wieght = 3 }]\nretries = \"x\"\n";
        let errors = parse_raw(text).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(2), "server.thread"),
                (Some(3), "server.threads"),
                (Some(7), "upstreams[0].bakends"),
                (Some(8), "upstreams[0].backends[0].wieght"),
                (Some(9), "upstreams[0].retries"),
            ],
            "{errors:#?}"
        );
    }

    proptest::proptest! {
        /// Whatever the text, collecting errors ends and never panics.
        #[test]
        fn never_panics(lines in proptest::collection::vec("(\\[\\[?[a-z.]{1,12}\\]\\]?|[a-z_]{1,10} = (\"[a-z:0-9.]{0,12}\"|[0-9]{1,4}|\\{ [a-z]{1,8} = [0-9]{1,3} \\}|\\[\\]))", 0..12)) {
            let _ = parse_all(&lines.join("\n"));
        }
    }

    #[test]
    fn paths_parse() {
        assert_eq!(parse_path("upstreams[0].backends[1].weight"), [
            Seg::Key("upstreams".into()),
            Seg::Index(0),
            Seg::Key("backends".into()),
            Seg::Index(1),
            Seg::Key("weight".into())
        ]);
    }
}
