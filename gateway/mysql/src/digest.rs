//! Statement digests (ProxySQL's approach): the text with its number and
//! string literals replaced by `?`, so `SELECT c FROM t WHERE id = 7` and
//! `... id = 8` share one classification, parsed once.

use crate::classify::{classify_with, Classified};
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest statement the cache keys: longer ones (bulk inserts, whose
/// digests rarely repeat) are classified directly.
pub const MAX_CACHED_LEN: usize = 4096;

/// The digest of `sql`, or `None` when its class may depend on a literal:
/// `PREPARE ... FROM 'text'` and `EXECUTE IMMEDIATE 'text'` run the SQL in
/// their strings. Comments stay as they are (`/*! ... */` runs too).
pub fn digest(sql: &str) -> Option<String> {
    if sql.len() > MAX_CACHED_LEN || runs_a_string(sql) {
        return None;
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let c = b[i];
        let literal_end = match c {
            b'\'' => Some(quoted_end(b, i, b'\'')),
            // Identifiers (and ANSI_QUOTES strings) stay: a name can matter.
            b'"' | b'`' => {
                i = quoted_end(b, i, c);
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_end(b, i);
                continue;
            }
            b'#' => {
                i = line_end(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |at| i + 2 + at + 2);
                continue;
            }
            b'0'..=b'9' if i == 0 || !word_byte(b[i - 1]) => Some(number_end(b, i)),
            _ => None,
        };
        match literal_end {
            Some(end) => {
                out.push_str(&sql[copied..i]);
                out.push('?');
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

fn runs_a_string(sql: &str) -> bool {
    let has = |word: &str| sql.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes()));
    has("prepare") || has("execute")
}

fn word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'@' | b'.') || c >= 0x80
}

/// The offset after a quoted run starting at `at` (backslash escapes and
/// doubled quotes inside; an unterminated run ends the text).
fn quoted_end(b: &[u8], at: usize, q: u8) -> usize {
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q != b'`' => i += 2,
            c if c == q && b.get(i + 1) == Some(&q) => i += 2,
            c if c == q => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn line_end(b: &[u8], at: usize) -> usize {
    b[at..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| at + p)
}

/// A number: digits, a fraction, an exponent, or `0x..`/`0b..` digits.
fn number_end(b: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < b.len() {
        let c = b[i];
        let exp_sign = matches!(c, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E') && b[at..i].iter().all(|d| d.is_ascii_digit() || matches!(d, b'.' | b'e' | b'E'));
        if c.is_ascii_alphanumeric() || c == b'.' || exp_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// How a class was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// Parsed, then kept under its digest.
    Miss,
    /// Parsed and not kept (`digest` gave none).
    Uncached,
}

/// Classifications by digest, bounded; the parser runs on a miss only.
pub struct ClassCache {
    cache: quick_cache::sync::Cache<String, Classified>,
    pure: Vec<String>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ClassCache {
    /// A cache of up to `entries` digests for a listener whose declared
    /// pure functions are `pure`.
    pub fn new(entries: usize, pure: Vec<String>) -> Self {
        Self { cache: quick_cache::sync::Cache::new(entries.max(1)), pure, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The class of `sql`: cached by digest, or parsed now.
    pub fn classify(&self, sql: &str) -> Classified {
        self.lookup(sql).0
    }

    /// The class of `sql` and how it was found.
    pub fn lookup(&self, sql: &str) -> (Classified, Lookup) {
        let Some(key) = digest(sql) else {
            return (classify_with(sql, &self.pure), Lookup::Uncached);
        };
        if let Some(c) = self.cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (c, Lookup::Hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let c = classify_with(sql, &self.pure);
        self.cache.insert(key, c);
        (c, Lookup::Miss)
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatementClass;

    #[test]
    fn literals_become_placeholders_names_and_comments_stay() {
        let d = |s| digest(s).unwrap();
        assert_eq!(d("SELECT c FROM sbtest1 WHERE id=4711"), "SELECT c FROM sbtest1 WHERE id=?");
        assert_eq!(d("SELECT c FROM sbtest1 WHERE id=4712"), d("SELECT c FROM sbtest1 WHERE id=4711"));
        assert_eq!(d("UPDATE t SET note='it''s \\' done', v=1.5e-3 WHERE id IN (1,0x1F)"), "UPDATE t SET note=?, v=? WHERE id IN (?,?)");
        assert_eq!(d("SELECT `col 1`, \"x\", t2.c3 FROM t2 -- id=1\nWHERE a=-2"), "SELECT `col 1`, \"x\", t2.c3 FROM t2 -- id=1\nWHERE a=-?");
        assert_eq!(d("SELECT /*!50000 SQL_NO_CACHE */ 1 # one"), "SELECT /*!50000 SQL_NO_CACHE */ ? # one");
        assert_eq!(d("SELECT @a1, @@max_connections, x1"), "SELECT @a1, @@max_connections, x1");
    }

    #[test]
    fn statements_whose_strings_run_are_not_cached() {
        assert_eq!(digest("PREPARE s FROM 'DELETE FROM t'"), None);
        assert_eq!(digest("execute immediate 'DELETE FROM t'"), None);
        assert_eq!(digest(&format!("INSERT INTO t VALUES {}", "(1),".repeat(2000))), None);
    }

    #[test]
    fn the_cache_answers_what_the_parser_answers() {
        let cache = ClassCache::new(64, vec![]);
        for sql in ["SELECT c FROM t WHERE id = 1", "SELECT c FROM t WHERE id = 2", "UPDATE t SET v = 3 WHERE id = 1", "UPDATE t SET v = 4 WHERE id = 1", "SET autocommit = 0", "SET autocommit = 1"] {
            assert_eq!(cache.classify(sql), classify_with(sql, &[]), "{sql}");
        }
        assert_eq!(cache.stats(), (3, 3));
        assert_eq!(cache.classify("SELECT c FROM t WHERE id = 9").class, StatementClass::Read);
        assert_eq!(cache.classify("UPDATE t SET v = 9 WHERE id = 9").class, StatementClass::Write);
    }

    proptest::proptest! {
        /// Statements that differ only in their literals share a digest, and
        /// the parser gives them the same class.
        #[test]
        fn literal_values_never_change_the_digest_or_the_class(a in 0u64..1_000_000, b in 0u64..1_000_000, s in "[a-z ]{0,12}", t in "[a-z ]{0,12}") {
            for (x, y) in [
                (format!("SELECT c FROM t WHERE id = {a} AND n = '{s}'"), format!("SELECT c FROM t WHERE id = {b} AND n = '{t}'")),
                (format!("UPDATE t SET n = '{s}' WHERE id BETWEEN {a} AND {b}"), format!("UPDATE t SET n = '{t}' WHERE id BETWEEN {b} AND {a}")),
                (format!("INSERT INTO t (id, n) VALUES ({a}, '{s}')"), format!("INSERT INTO t (id, n) VALUES ({b}, '{t}')")),
            ] {
                proptest::prop_assert_eq!(digest(&x), digest(&y));
                proptest::prop_assert_eq!(classify_with(&x, &[]), classify_with(&y, &[]));
            }
        }
    }
}
