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
        Collected { raw: Some(raw), errors, .. } if errors.is_empty() => Ok(raw),
        Collected { errors, .. } => Err(errors),
    }
}

/// Most deserializations tried on one file (errors, stand-ins and their
/// candidates together): a bound on the work, whatever the file.
const MAX_ROUNDS: usize = 256;

/// What deserializing with every offending key removed leaves.
pub(super) struct Collected {
    /// The config that remains, if any.
    pub raw: Option<RawConfig>,
    /// Every error, in file order.
    pub errors: Vec<ConfigError>,
    /// The text `raw` was read from.
    pub cleaned: String,
    /// Keys that were missing and hold a stand-in value in `cleaned`: what
    /// the checks after parsing say about them is not the user's doing.
    pub stand_ins: Vec<String>,
}

/// A value put in for a missing required key, so that parsing goes on to
/// the rest of the file (a missing key used to end the run and hide every
/// error after it).
struct StandIn {
    path: String,
    /// Values still to try if the current one has the wrong type.
    left: Vec<Item>,
}

/// Deserialize `text` with every offending key removed and every missing
/// key stood in for.
pub(super) fn parse_all(text: &str) -> Collected {
    let original = ImDocument::parse(text).ok();
    let mut current = text.to_string();
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut stand_ins: Vec<StandIn> = Vec::new();
    // Unknown keys taken out, by the path of their table: the likeliest
    // stand-in for a key then missing there is a misspelt key's value.
    let mut set_aside: Vec<(String, Item)> = Vec::new();
    let mut raw = None;
    for _ in 0..MAX_ROUNDS {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let (path, message, offset) = match once(&current) {
            Ok(r) => {
                raw = Some(r);
                break;
            }
            Err(e) => e,
        };
        let Ok(mut doc) = current.parse::<toml_edit::DocumentMut>() else { break };
        let missing = missing_key(&message);
        if let Some(i) = stand_ins.iter().rposition(|s| is_under(&path, &s.path)) {
            // About a stand-in, not the file: fill what it lacks, or try its next value.
            let ok = match missing {
                Some(key) => stand_in(&mut doc, &mut stand_ins, &path, key, &set_aside),
                None => next_candidate(&mut doc, &mut stand_ins, i),
            };
            if !ok {
                break;
            }
            current = doc.to_string();
            continue;
        }
        let segs = parse_path(&path);
        let line = original.as_ref().and_then(|d| line_in(text, d, &segs)).or_else(|| (current == text).then_some(offset).flatten().map(|o| line_of(text, o)));
        // A required key reported (and removed) as a bad value, or next to a
        // misspelt key in the same table, is not reported missing as well.
        let echo = missing.is_some_and(|key| {
            let full = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
            errors.iter().any(|e| e.path == full || (e.message.starts_with("unknown field") && e.path.rsplit_once('.').map_or("", |(parent, _)| parent) == path))
        });
        if !echo {
            errors.push(ConfigError { path: if path.is_empty() { "(top)".into() } else { path.clone() }, line, message: message.clone() });
        }
        let ok = match missing {
            Some(key) => stand_in(&mut doc, &mut stand_ins, &path, key, &set_aside),
            None => {
                if message.starts_with("unknown field") {
                    if let (Some(item), Some((parent, _))) = (item_at(doc.as_item_mut(), &segs).cloned(), path.rsplit_once('.')) {
                        set_aside.push((parent.to_string(), item));
                    }
                }
                remove(doc.as_item_mut(), &segs)
            }
        };
        if !ok {
            break;
        }
        current = doc.to_string();
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Collected { raw, errors, cleaned: current, stand_ins: stand_ins.into_iter().map(|s| s.path).collect() }
}

/// The key a "missing field `name`" message names.
fn missing_key(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// `path` is `base` or inside it.
pub(super) fn is_under(path: &str, base: &str) -> bool {
    path.strip_prefix(base).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Put a stand-in for `key`, missing in the table at `table`: first the
/// values of misspelt keys set aside from that table, then one value of
/// each TOML type until one is accepted.
fn stand_in(doc: &mut toml_edit::DocumentMut, stand_ins: &mut Vec<StandIn>, table: &str, key: &str, set_aside: &[(String, Item)]) -> bool {
    let mut left: Vec<Item> = [
        Item::Value(Value::InlineTable(toml_edit::InlineTable::new())),
        Item::Value(Value::Array(toml_edit::Array::new())),
        toml_edit::value(false),
        toml_edit::value(0i64),
        toml_edit::value(""),
    ]
    .into();
    left.extend(set_aside.iter().filter(|(t, v)| t == table && !v.is_none()).map(|(_, v)| v.clone()));
    let path = if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };
    let Some(first) = left.pop() else { return false };
    let placed = item_at(doc.as_item_mut(), &parse_path(table)).and_then(Item::as_table_like_mut).map(|t| t.insert(key, first)).is_some();
    stand_ins.push(StandIn { path, left });
    placed
}

/// The stand-in `i` has the wrong type: put its next value (and forget
/// the stand-ins inside it).
fn next_candidate(doc: &mut toml_edit::DocumentMut, stand_ins: &mut Vec<StandIn>, i: usize) -> bool {
    stand_ins.truncate(i + 1);
    let Some(next) = stand_ins[i].left.pop() else { return false };
    let segs = parse_path(&stand_ins[i].path);
    let Some((Seg::Key(key), parent)) = segs.split_last() else { return false };
    item_at(doc.as_item_mut(), parent).and_then(Item::as_table_like_mut).map(|t| t.insert(key, next)).is_some()
}

/// The item `segs` names, if it is there.
fn item_at<'a>(item: &'a mut Item, segs: &[Seg]) -> Option<&'a mut Item> {
    let Some((first, rest)) = segs.split_first() else { return Some(item) };
    let next = match first {
        Seg::Key(k) => item.as_table_like_mut()?.get_mut(k)?,
        Seg::Index(i) => item.get_mut(*i)?,
    };
    item_at(next, rest)
}

/// Semantic errors found in the cleaned text, with lines of the original.
pub(super) fn relocate(text: &str, errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let Ok(doc) = ImDocument::parse(text) else { return errors };
    errors.into_iter().map(|e| ConfigError { line: line_in(text, &doc, &parse_path(&e.path)).or(e.line), ..e }).collect()
}

/// A plugin's rejection of its config (what its `configure` returned), as
/// one error per problem at the line of the key it names inside
/// `[plugins.NAME.config]`; a problem naming no key found there is put at
/// the config table's line.
pub(super) fn plugin_config_errors(text: &str, plugin: &str, said: &str) -> Vec<ConfigError> {
    let doc = ImDocument::parse(text).ok();
    let line = |path: &str| doc.as_ref().and_then(|d| line_in(text, d, &parse_path(path)));
    let base = format!("plugins.{plugin}.config");
    let base_line = line(&base).or_else(|| line(&format!("plugins.{plugin}")));
    problems(said)
        .into_iter()
        .map(|p| {
            let keyed = p.split_once(": ").filter(|(k, _)| is_key_path(k)).and_then(|(k, m)| {
                let path = format!("{base}.{k}");
                Some(ConfigError { line: Some(line(&path)?), path, message: m.to_string() })
            });
            keyed.unwrap_or_else(|| ConfigError { path: base.clone(), line: base_line, message: p })
        })
        .collect()
}

/// The problems in a plugin's message: the SDK's `Config::parse` lists
/// them after "invalid plugin config: ", joined by "; "; other plugins may
/// put one per line.
fn problems(said: &str) -> Vec<String> {
    let (list, sep) = match said.strip_prefix("invalid plugin config: ") {
        Some(rest) => (rest, "; "),
        None => (said, "\n"),
    };
    list.split(sep).map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect()
}

/// `rules[0].weight`, `mode`: a key path as serde reports it.
fn is_key_path(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b))
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
            (Seg::Index(i), None, Item::ArrayOfTables(a)) => (a.get(*i).map(|_| item), None, a.get(*i).and_then(toml_edit::Table::span)),
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

    /// The file of issue 21: the misspelt `adress` leaves `address`
    /// missing, which used to end the run before `retires`.
    #[test]
    fn a_missing_key_does_not_hide_what_follows() {
        let text = "[server]\nthredas = 2\n\n[[upstreams]]\nname = \"web\"\nbackends = [{ adress = \"127.0.0.1:9001\" }]\nretires = 3\n";
        let errors = parse_raw(text).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.path.as_str())).collect();
        assert_eq!(got, [(Some(2), "server.thredas"), (Some(6), "upstreams[0].backends[0].adress"), (Some(7), "upstreams[0].retires")], "{errors:#?}");
    }

    /// A key missing outright is reported, and a value of the type it
    /// needs stands in for it so the rest is still read.
    #[test]
    fn a_stand_in_takes_the_type_the_key_needs() {
        let text = "[[upstreams]]\nname = \"web\"\nretries = \"x\"\n\n[sql]\nprimary = \"127.0.0.1:3306\"\nusers = []\nlisten = 5\n";
        let c = parse_all(text);
        let got: Vec<(Option<usize>, &str, &str)> = c.errors.iter().map(|e| (e.line, e.path.as_str(), e.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "upstreams[0]", "missing field `backends`"),
                (Some(3), "upstreams[0].retries", "invalid type: string \"x\", expected usize"),
                (Some(5), "sql", "missing field `monitor`"),
                (Some(8), "sql.listen", "invalid type: integer `5`, expected a string"),
            ],
            "{:#?}",
            c.errors
        );
        assert!(c.raw.is_some());
        assert_eq!(c.stand_ins, ["upstreams[0].backends", "sql.monitor", "sql.monitor.name"]);
    }

    #[test]
    fn a_plugin_config_error_is_at_its_key() {
        let text = "[plugins.x]\npath = \"x.wasm\"\n[plugins.x.config]\nmode = \"fast\"\n[[plugins.x.config.rules]]\nstatement = 5\n";
        let said = "invalid plugin config: rules[0].statement: invalid type: integer `5`, expected a string; mode: unknown field `mode`; missing field `name`";
        let got: Vec<(Option<usize>, String, String)> = plugin_config_errors(text, "x", said).into_iter().map(|e| (e.line, e.path, e.message)).collect();
        assert_eq!(
            got,
            [
                (Some(6), "plugins.x.config.rules[0].statement".into(), "invalid type: integer `5`, expected a string".into()),
                (Some(4), "plugins.x.config.mode".into(), "unknown field `mode`".into()),
                (Some(3), "plugins.x.config".into(), "missing field `name`".into()),
            ]
        );
        // Words that name no key of the table stay whole, at the table.
        let e = plugin_config_errors(text, "x", "misbehave: rejected");
        assert_eq!((e[0].line, e[0].path.as_str(), e[0].message.as_str()), (Some(3), "plugins.x.config", "misbehave: rejected"));
        let inline = "[plugins.y]\npath = \"y.wasm\"\nconfig = { stiky = true }\n";
        let e = plugin_config_errors(inline, "y", "invalid plugin config: stiky: unknown field `stiky`");
        assert_eq!((e[0].line, e[0].path.as_str()), (Some(3), "plugins.y.config.stiky"));
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
