//! Statement classification: sqlparser's MySQL dialect first, a keyword
//! scan when it cannot parse, and textual features the host acts on.

use crate::StatementClass;
use sqlparser::ast::{SetExpr, Statement as Ast};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// What the host needs to know about one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub class: StatementClass,
    /// More than one statement in one COM_QUERY.
    pub multi: bool,
    /// Reads `LAST_INSERT_ID()`, `FOUND_ROWS()` or `ROW_COUNT()`: runs where
    /// the previous statement ran.
    pub follows_previous: bool,
    /// Creates a temporary table or takes a named lock: pins the session to
    /// the primary.
    pub pins: bool,
    /// Touches named locks (`RELEASE_LOCK`, `IS_USED_LOCK`, ...): primary.
    pub named_lock: bool,
}

/// Classify one COM_QUERY or COM_STMT_PREPARE text.
pub fn classify(sql: &str) -> Classified {
    let lower = sql.to_ascii_lowercase();
    let (class, multi) = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(stmts) if !stmts.is_empty() => {
            let class = stmts.iter().map(|s| class_of(s, &lower)).reduce(merge).unwrap_or(StatementClass::Other);
            (class, stmts.len() > 1)
        }
        _ => (fallback_class(&lower), looks_multi(sql)),
    };
    let has = |needle: &str| lower.contains(needle);
    let named_lock = has("get_lock(") || has("release_lock(") || has("release_all_locks(") || has("is_used_lock(") || has("is_free_lock(");
    Classified {
        class,
        multi,
        follows_previous: has("last_insert_id(") || has("found_rows(") || has("row_count("),
        pins: has("get_lock(") || (has("create") && has("temporary") && has("table")),
        named_lock,
    }
}

/// Several statements together: the most demanding class wins.
fn merge(a: StatementClass, b: StatementClass) -> StatementClass {
    use StatementClass::*;
    let rank = |c| match c {
        Read => 0,
        SessionState => 1,
        LockingRead => 2,
        Transaction => 3,
        Other => 4,
        Write => 5,
    };
    if rank(a) >= rank(b) { a } else { b }
}

fn class_of(stmt: &Ast, lower: &str) -> StatementClass {
    use StatementClass::*;
    match stmt {
        Ast::Query(q) => {
            let into = matches!(q.body.as_ref(), SetExpr::Select(s) if s.into.is_some()) || lower.contains(" into ");
            if into {
                Write
            } else if !q.locks.is_empty() || locking_text(lower) {
                LockingRead
            } else {
                Read
            }
        }
        Ast::ShowVariable { .. }
        | Ast::ShowStatus { .. }
        | Ast::ShowVariables { .. }
        | Ast::ShowCreate { .. }
        | Ast::ShowColumns { .. }
        | Ast::ShowDatabases { .. }
        | Ast::ShowSchemas { .. }
        | Ast::ShowTables { .. }
        | Ast::ShowViews { .. }
        | Ast::ShowCollation { .. }
        | Ast::ShowFunctions { .. }
        | Ast::ShowCharset(_)
        | Ast::ExplainTable { .. } => Read,
        Ast::Explain { analyze: false, statement, .. } => match class_of(statement, lower) {
            Read => Read,
            _ => Other,
        },
        Ast::StartTransaction { .. } | Ast::Commit { .. } | Ast::Rollback { .. } | Ast::Savepoint { .. } | Ast::ReleaseSavepoint { .. } => {
            Transaction
        }
        Ast::Set(_) | Ast::Use(_) => SessionState,
        Ast::Insert(_)
        | Ast::Update(_)
        | Ast::Delete(_)
        | Ast::Merge(_)
        | Ast::Truncate(_)
        | Ast::CreateTable(_)
        | Ast::CreateView(_)
        | Ast::CreateIndex(_)
        | Ast::CreateDatabase { .. }
        | Ast::CreateSchema { .. }
        | Ast::CreateFunction(_)
        | Ast::CreateProcedure { .. }
        | Ast::CreateTrigger(_)
        | Ast::CreateUser(_)
        | Ast::AlterTable(_)
        | Ast::AlterView { .. }
        | Ast::AlterUser(_)
        | Ast::Drop { .. }
        | Ast::DropFunction(_)
        | Ast::DropProcedure { .. }
        | Ast::DropTrigger(_)
        | Ast::Grant(_)
        | Ast::Revoke(_)
        | Ast::RenameTable(_)
        | Ast::LoadData { .. }
        | Ast::LockTables { .. }
        | Ast::UnlockTables { .. }
        | Ast::OptimizeTable { .. }
        | Ast::Analyze(_) => Write,
        _ => Other,
    }
}

fn locking_text(lower: &str) -> bool {
    lower.contains("for update") || lower.contains("lock in share mode") || lower.contains("for share")
}

/// The first keyword decides when sqlparser cannot parse the statement.
fn fallback_class(lower: &str) -> StatementClass {
    use StatementClass::*;
    let word = first_keyword(lower);
    match word {
        "select" | "with" | "show" | "desc" | "describe" | "explain" | "help" | "values" | "table" => {
            if lower.contains(" into ") {
                Write
            } else if locking_text(lower) {
                LockingRead
            } else if word == "explain" && lower.contains("analyze") {
                Other
            } else {
                Read
            }
        }
        "insert" | "update" | "delete" | "replace" | "create" | "alter" | "drop" | "truncate" | "rename" | "grant" | "revoke"
        | "load" | "lock" | "unlock" | "optimize" | "analyze" | "repair" | "flush" | "purge" | "install" | "uninstall" => Write,
        "begin" | "start" | "commit" | "rollback" | "savepoint" | "release" | "xa" => Transaction,
        "set" | "use" => SessionState,
        _ => Other,
    }
}

/// The first word after whitespace, comments and opening parentheses.
fn first_keyword(lower: &str) -> &str {
    let mut s = lower;
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = s.strip_prefix("/*") {
            // `/*! ... */` and `/*M! ... */` are executable comments: read inside them.
            if rest.starts_with('!') || rest.starts_with("m!") {
                s = rest.trim_start_matches(|c: char| c == '!' || c == 'm' || c.is_ascii_digit());
                continue;
            }
            s = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else if s.starts_with("--") || s.starts_with('#') {
            s = s.find('\n').map_or("", |i| &s[i + 1..]);
        } else {
            break;
        }
    }
    let end = s.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(s.len());
    &s[..end]
}

/// A `;` followed by more SQL, outside quotes and comments.
fn looks_multi(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p)
                }
                b'#' => i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p),
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 1)
                }
                b';' => return sql[i + 1..].trim().trim_end_matches(';').trim() != "",
                _ => {}
            },
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

    #[test]
    fn classes() {
        let cases = [
            ("SELECT * FROM t WHERE id = 1", Read),
            ("select c from sbtest1 where id=5", Read),
            ("SHOW TABLES", Read),
            ("SELECT * FROM t WHERE id = 1 FOR UPDATE", LockingRead),
            ("SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE", LockingRead),
            ("INSERT INTO t VALUES (1)", Write),
            ("update t set a=1", Write),
            ("DELETE FROM t", Write),
            ("CREATE TABLE x (a int)", Write),
            ("BEGIN", Transaction),
            ("START TRANSACTION", Transaction),
            ("COMMIT", Transaction),
            ("ROLLBACK", Transaction),
            ("SET NAMES utf8mb4", SessionState),
            ("SET autocommit = 0", SessionState),
            ("USE test", SessionState),
            ("SELECT 1 INTO @x", Write),
            ("frobnicate the database", Other),
            ("/* hint */ SELECT 1", Read),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql).class, want, "{sql}");
        }
    }

    #[test]
    fn features() {
        assert!(classify("SELECT LAST_INSERT_ID()").follows_previous);
        assert!(classify("select found_rows()").follows_previous);
        assert!(classify("SELECT GET_LOCK('a', 1)").pins);
        assert!(classify("CREATE TEMPORARY TABLE tmp (a int)").pins);
        assert!(!classify("SELECT 1").pins);
        assert!(classify("SELECT 1; SELECT 2").multi);
        assert!(!classify("SELECT ';'").multi);
        assert!(!classify("SELECT 1;").multi);
    }

    #[test]
    fn fallback_is_safe() {
        // MariaDB syntax sqlparser does not know still gets a class.
        assert_eq!(fallback_class("select 1 for update"), LockingRead);
        assert_eq!(fallback_class("  (select 1)"), Read);
        assert_eq!(fallback_class("xa start 'x'"), Transaction);
        assert_eq!(fallback_class("handler t open"), Other);
        assert!(looks_multi("select 1; select 2"));
        assert!(!looks_multi("select 'a;b' -- ;x\n"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = classify(&s);
        }
    }
}
