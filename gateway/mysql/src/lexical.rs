//! A lexical pass over statement text for what decides replica safety:
//! function calls that are not MariaDB builtins, user variables and `:=`.
//! It reads inside executable comments (`/*! */`, `/*M! */`), which the
//! server runs, and skips quoted text and ordinary comments.

/// What one pass over a statement found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lexical {
    /// Calls a function that is not a side-effect-free builtin: a stored
    /// function, a loadable (UDF) function, a schema-qualified name, or a
    /// builtin that writes (sequences).
    pub calls_routine: bool,
    /// Reads or writes a user variable (`@x`, not `@@x`).
    pub user_var: bool,
    /// Assigns with `:=`.
    pub assigns: bool,
    /// `PREVIOUS VALUE FOR s`: the session's last value of a sequence,
    /// known where the session last advanced it.
    pub previous_value: bool,
}

/// Scan `sql`; `pure` names stored functions the operator declared
/// side-effect free (lower case, `name` or `schema.name`).
pub fn scan(sql: &str, pure: &[String]) -> Lexical {
    let mut out = Lexical::default();
    let mut prev: Option<Tok> = None;
    let mut before: Option<Tok> = None;
    let mut pending: Option<String> = None;
    for tok in tokens(sql) {
        // `NEXT VALUE FOR s` advances a sequence (a write, like NEXTVAL(s)).
        if tok == word("for") && prev == Some(word("value")) {
            match &before {
                Some(Tok::Word(w)) if w == "next" => out.calls_routine = true,
                Some(Tok::Word(w)) if w == "previous" => out.previous_value = true,
                _ => {}
            }
        }
        if let Some(name) = pending.take() {
            if tok == Tok::Open && !is_pure(&name, pure) {
                out.calls_routine = true;
            }
        }
        match &tok {
            Tok::UserVar => out.user_var = true,
            Tok::Assign => out.assigns = true,
            Tok::Word(w) => {
                let qualified = prev == Some(Tok::Dot);
                let name = if qualified { format!(".{w}") } else { w.clone() };
                if !NOT_CALLS.contains(&w.as_str()) || qualified {
                    pending = Some(name);
                }
            }
            Tok::Quoted(w) => pending = Some(format!("`{w}")),
            _ => {}
        }
        before = prev.replace(tok);
    }
    out
}

fn word(w: &str) -> Tok {
    Tok::Word(w.into())
}

/// `sql` with its executable comments (`/*!`, `/*M!`, a version or not)
/// opened: the markers become spaces and the bodies plain text, as the
/// server runs them. `None` when it has none. A body is opened whatever
/// its version: reading one the server skips as code is the safe mistake.
pub fn open_executable(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut blank = |from: usize, to: usize| out.get_or_insert_with(|| b.to_vec())[from..to].fill(b' ');
    let (mut i, mut inside) = (0, false);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => i = skip_quoted(b, i, q),
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => i = line_end(b, i),
            b'#' => i = line_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => match executable_body(b, i + 2) {
                Some(body) if !inside => {
                    blank(i, body);
                    (i, inside) = (body, true);
                }
                _ => i = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2),
            },
            b'*' if inside && b.get(i + 1) == Some(&b'/') => {
                blank(i, i + 2);
                (i, inside) = (i + 2, false);
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes were replaced (by spaces): still UTF-8.
    out.map(|o| String::from_utf8(o).expect("ASCII replaced by ASCII"))
}

/// Where the body of an executable comment whose `/*` ends at `at` starts.
fn executable_body(b: &[u8], at: usize) -> Option<usize> {
    match (b.get(at), b.get(at + 1)) {
        (Some(b'!'), _) => Some(skip_version(b, at + 1)),
        (Some(b'M' | b'm'), Some(b'!')) => Some(skip_version(b, at + 2)),
        _ => None,
    }
}

fn is_pure(name: &str, pure: &[String]) -> bool {
    if let Some(quoted) = name.strip_prefix('`') {
        return pure.iter().any(|p| p == quoted);
    }
    if let Some(member) = name.strip_prefix('.') {
        // A qualified name is never a builtin; the pure list may name it
        // as `schema.name` or `name`.
        return pure.iter().any(|p| p == member || p.rsplit('.').next() == Some(member));
    }
    is_builtin(name) || pure.iter().any(|p| p == name)
}

/// A side-effect-free builtin: unqualified names only, since a stored
/// function that shares a builtin's name must be called schema-qualified.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.binary_search(&name).is_ok() || name.starts_with("st_") || name.starts_with("mbr") || name.starts_with("json_")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Dot,
    UserVar,
    Assign,
    Other,
}

/// Tokens outside strings and comments, words lower-cased.
fn tokens(sql: &str) -> Vec<Tok> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => i = skip_quoted(b, i, c),
            b'`' => {
                let end = skip_quoted(b, i, b'`');
                let inner = sql.get(i + 1..end.saturating_sub(1).max(i + 1)).unwrap_or("");
                out.push(Tok::Quoted(inner.to_ascii_lowercase()));
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => i = line_end(b, i),
            b'#' => i = line_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Executable comments run on the server: read their body.
                let body = i + 2;
                if b.get(body) == Some(&b'!') {
                    i = skip_version(b, body + 1);
                } else if b.get(body).is_some_and(|c| *c == b'M' || *c == b'm') && b.get(body + 1) == Some(&b'!') {
                    i = skip_version(b, body + 2);
                } else {
                    i = sql[body..].find("*/").map_or(b.len(), |p| body + p + 2);
                }
            }
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2,
            b'@' if b.get(i + 1) == Some(&b'@') => {
                // A system variable: skip its (possibly dotted) name.
                i += 2;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.' || b[i] == b'$') {
                    i += 1;
                }
                out.push(Tok::Other);
            }
            b'@' => {
                out.push(Tok::UserVar);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Assign);
                i += 2;
            }
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'.' => {
                out.push(Tok::Dot);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                    i += 1;
                }
                out.push(Tok::Word(sql[start..i].to_ascii_lowercase()));
            }
            c if c.is_ascii_whitespace() => i += 1,
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Other);
            }
            _ => {
                out.push(Tok::Other);
                i += 1;
            }
        }
    }
    out
}

fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1)
}

fn skip_version(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Keywords and type names that may stand before `(` without being calls.
const NOT_CALLS: &[&str] = &[
    "all", "and", "any", "as", "between", "bigint", "binary", "bit", "blob", "by", "case", "char", "character", "check",
    "columns", "constraint", "cross", "date", "datetime", "dec", "decimal", "default", "distinct", "div", "double", "else",
    "end", "except", "exists", "float", "for", "foreign", "from", "having", "in", "index", "inner", "int", "integer",
    "intersect", "into", "is", "join", "json", "key", "lateral", "left", "like", "limit", "match", "mediumint", "natural", "nchar",
    "not", "numeric", "of", "on", "or", "order", "outer", "over", "partition", "primary", "real", "recursive", "references",
    "regexp", "return", "returns", "right", "rlike", "row", "rows", "select", "set", "signed", "smallint", "some",
    "straight_join", "table", "text", "then", "time", "timestamp", "tinyint", "union", "unique", "unsigned", "using",
    "values", "varbinary", "varchar", "when", "where", "window", "with", "xor",
];

/// MariaDB builtins without side effects, sorted (checked by a test).
/// Missing a builtin here only sends its reads to the primary. Sequences
/// (`nextval`, `setval`, `lastval`) and named locks are left out on purpose.
const BUILTINS: &[&str] = &[
    "abs", "acos", "adddate", "addtime", "aes_decrypt", "aes_encrypt", "ascii", "asin", "atan", "atan2", "avg", "benchmark",
    "bin", "binlog_gtid_pos", "bit_and", "bit_count", "bit_length", "bit_or", "bit_xor", "cast", "ceil", "ceiling",
    "char_length", "character_length", "charset", "chr", "coalesce", "coercibility", "collation", "column_add",
    "column_check", "column_create", "column_delete", "column_exists", "column_get", "column_json", "column_list", "compress",
    "concat", "concat_ws", "connection_id", "conv", "convert", "convert_tz", "cos", "cot", "count", "crc32", "crc32c",
    "cume_dist", "curdate", "current_date", "current_role", "current_time", "current_timestamp", "current_user", "curtime",
    "database", "date_add", "date_format", "date_sub", "datediff", "day", "dayname", "dayofmonth", "dayofweek", "dayofyear",
    "decode", "decode_oracle", "degrees", "dense_rank", "des_decrypt", "des_encrypt", "elt", "encode", "encrypt", "exp",
    "export_set", "extract", "extractvalue", "field", "find_in_set", "first_value", "floor", "format", "format_bytes",
    "format_pico_time", "found_rows", "from_base64", "from_days", "from_unixtime", "geomfromtext", "geomfromwkb",
    "get_format", "greatest", "group_concat", "hex", "hour", "if", "ifnull", "inet6_aton", "inet6_ntoa", "inet_aton",
    "inet_ntoa", "insert", "instr", "interval", "is_ipv4", "is_ipv4_compat", "is_ipv4_mapped", "is_ipv6", "isnull", "kdf",
    "lag", "last_day", "last_insert_id", "last_value", "lcase", "lead", "least", "length", "length_b", "linestring", "ln",
    "load_file", "localtime", "localtimestamp", "locate", "log", "log10", "log2", "lower", "lpad", "ltrim", "make_set",
    "makedate", "maketime", "master_gtid_wait", "master_pos_wait", "max", "md5", "median", "microsecond", "mid", "min",
    "minute", "mod", "month", "monthname", "multilinestring", "multipoint", "multipolygon", "name_const",
    "natural_sort_key", "now", "nth_value", "ntile", "nullif", "nvl", "nvl2", "oct", "octet_length", "old_password", "ord",
    "password", "percent_rank", "percentile_cont", "percentile_disc", "period_add", "period_diff", "pi", "point", "polygon",
    "position", "pow", "power", "quarter", "quote", "radians", "rand", "random_bytes", "rank", "regexp_instr",
    "regexp_replace", "regexp_substr", "repeat", "replace", "reverse", "round", "row_count", "row_number", "rpad", "rtrim",
    "schema", "sec_to_time", "second", "session_user", "sformat", "sha", "sha1", "sha2", "sign", "sin", "sleep", "soundex",
    "space", "sqrt", "std", "stddev", "stddev_pop", "stddev_samp", "str_to_date", "strcmp", "subdate", "substr",
    "substring", "substring_index", "subtime", "sum", "sys_guid", "sysdate", "system_user", "tan", "time_format",
    "time_to_sec", "timediff", "timestampadd", "timestampdiff", "to_base64", "to_char", "to_days", "to_seconds", "trim",
    "trim_oracle", "truncate", "ucase", "uncompress", "uncompressed_length", "unhex", "unix_timestamp", "updatexml",
    "upper", "user", "utc_date", "utc_time", "utc_timestamp", "uuid", "uuid_short", "var_pop", "var_samp", "variance",
    "version", "week", "weekday", "weekofyear", "weight_string", "year", "yearweek",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_sorted() {
        assert!(BUILTINS.windows(2).all(|w| w[0] < w[1]), "BUILTINS must stay sorted for binary search");
    }

    #[test]
    fn routines() {
        let calls = |s: &str| scan(s, &[]).calls_routine;
        assert!(!calls("SELECT COUNT(*), MAX(a) FROM t WHERE b IN (1, 2) AND EXISTS (SELECT 1)"));
        assert!(!calls("SELECT CAST(a AS DECIMAL(10,2)), CONCAT('f(', x, ')') FROM t"));
        assert!(!calls("SELECT a FROM t1 JOIN t2 USING (id) WHERE x = 'myfunc(1)'"));
        assert!(calls("SELECT myfunc(1)"));
        assert!(calls("SELECT db.f(1)"));
        assert!(calls("SELECT `f`(1)"));
        assert!(calls("SELECT NEXTVAL(s)"));
        assert!(calls("SELECT NEXT VALUE FOR s"));
        assert!(calls("SELECT a FROM t WHERE b = next\n  value for db.s"));
        assert!(!calls("SELECT PREVIOUS VALUE FOR s") && scan("SELECT PREVIOUS VALUE FOR s", &[]).previous_value);
        assert!(!calls("SELECT 'next value for s'"));
        assert!(calls("SELECT /*!50000 f(1) */"));
        assert!(!calls("SELECT 1 /* f(1) */"));
        assert!(!calls("SELECT 1 -- f(1)\n"));
        assert!(!scan("SELECT f(1)", &["f".into()]).calls_routine);
        assert!(!scan("SELECT db.f(1)", &["db.f".into()]).calls_routine);
        assert!(!calls("SELECT ST_AsText(g), JSON_EXTRACT(j, '$.a') FROM t"));
    }

    #[test]
    fn executable_comments_open_into_code() {
        let open = |s: &str| open_executable(s);
        assert_eq!(open("SELECT 1"), None);
        assert_eq!(open("SELECT 1 /* plain */"), None);
        assert_eq!(open("/*!100000 INSERT INTO t VALUES (1) */").as_deref(), Some("          INSERT INTO t VALUES (1)   "));
        assert_eq!(open("/*M!100000 INSERT INTO t */ SELECT 1").as_deref(), Some("           INSERT INTO t    SELECT 1"));
        assert_eq!(open("SELECT 1 /*! , f() */ /* a */").as_deref(), Some("SELECT 1     , f()    /* a */"));
        assert_eq!(open("SELECT '/*!' , 1"), None, "quoted text is not a comment");
        assert_eq!(open("SELECT /*!50000 'a*/b' */ 1").as_deref(), Some("SELECT          'a*/b'    1"), "a quote inside the body");
    }

    #[test]
    fn variables() {
        assert!(scan("SELECT @x", &[]).user_var);
        assert!(!scan("SELECT @@version, @@session.sql_mode", &[]).user_var);
        assert!(!scan("SELECT '@x'", &[]).user_var);
        assert!(scan("SELECT @x := 1", &[]).assigns);
        assert!(!scan("SELECT ':='", &[]).assigns);
    }
}
