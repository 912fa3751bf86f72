//! Statement classification: sqlparser's MySQL dialect first, a keyword
//! scan when it cannot parse, and textual features the host acts on.

use crate::{lexical, StatementClass};
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
    /// Calls `LAST_INSERT_ID()` or reads `PREVIOUS VALUE FOR` a sequence:
    /// runs where the client's last write ran.
    pub last_insert_id: bool,
    /// Reads the diagnostics (warnings, errors) of an earlier statement:
    /// runs where the last statement that set them ran.
    pub diagnostics: bool,
    /// May reset the diagnostics where it runs: uses a table or is not a
    /// plain read (a `SELECT` of constants or variables leaves them).
    pub resets_diagnostics: bool,
    /// Creates a temporary table or takes a named lock: pins the session to
    /// the primary.
    pub pins: bool,
    /// Touches named locks (`RELEASE_LOCK`, `IS_USED_LOCK`, ...): primary.
    pub named_lock: bool,
    /// May run on a replica: a plain read that calls only side-effect-free
    /// builtins and assigns nothing, or a session change that is replayed
    /// on every backend. The session refuses to send anything else there.
    pub replica_ok: bool,
    /// Reads or writes a user variable (`@x`).
    pub user_var: bool,
    /// May set user variables where it runs, without being replayed
    /// (`SELECT @x := ...`, `INTO @x`, `CALL`, a stored function).
    pub sets_vars: bool,
    /// `SET GLOBAL` (or `@@global.x =`): changes what new sessions start with.
    pub sets_global: bool,
}

impl Classified {
    /// A session-state command the host issues itself (COM_INIT_DB,
    /// COM_SET_OPTION): replayed on every backend.
    pub fn session_command() -> Self {
        Self {
            class: StatementClass::SessionState,
            multi: false,
            follows_previous: false,
            last_insert_id: false,
            diagnostics: false,
            resets_diagnostics: false,
            pins: false,
            named_lock: false,
            replica_ok: true,
            user_var: false,
            sets_vars: false,
            sets_global: false,
        }
    }

    /// A statement the host cannot read with confidence: it runs on the
    /// primary and counts as a write.
    pub fn unproven() -> Self {
        Self { class: StatementClass::Other, replica_ok: false, resets_diagnostics: true, sets_vars: true, ..Self::session_command() }
    }
}

/// Classify one COM_QUERY or COM_STMT_PREPARE text.
pub fn classify(sql: &str) -> Classified {
    classify_with(sql, &[])
}

/// Whether the classifier may misread `sql`, whatever character set the
/// client declared. It reads text as UTF-8 (bytes that are not become
/// U+FFFD, ASCII stays), which keeps every quote, backslash and comment
/// where the server sees it in UTF-8 and in the 8-bit sets (latin1,
/// hebrew, cp1251...). In big5, gbk, sjis, cp932 and gb18030 the second
/// byte of a character may be `\` or a backtick, which the server reads
/// as part of the character and the classifier as an escape or a quote:
/// text where such a byte follows a non-ASCII one is not classified.
pub fn misreadable(sql: &[u8]) -> bool {
    sql.windows(2).any(|w| w[0] >= 0x80 && matches!(w[1], b'\\' | b'`')) && std::str::from_utf8(sql).is_err()
}

/// Classify with `pure`: stored functions the operator declared free of
/// side effects (lower case, `name` or `schema.name`), which reads may
/// call on a replica.
pub fn classify_with(sql: &str, pure: &[String]) -> Classified {
    // The server runs executable comments: classify what it runs.
    match lexical::open_executable(sql) {
        Some(opened) => classify_code(&opened, pure),
        None => classify_code(sql, pure),
    }
}

fn classify_code(sql: &str, pure: &[String]) -> Classified {
    let lower = sql.to_ascii_lowercase();
    let lex = lexical::scan(sql, pure);
    let form = set_form(&lower);
    let sets_global = form == SetForm::Global;
    let (class, multi) = match form {
        // `SET STATEMENT v=x FOR inner` is the inner statement, never replayed.
        SetForm::Statement(at) => {
            let inner = classify_with(&sql[at..], pure);
            let class = if inner.class == StatementClass::SessionState { StatementClass::Other } else { inner.class };
            (class, inner.multi)
        }
        // Global and account changes run once, on the primary.
        SetForm::Global => (StatementClass::Write, looks_multi(sql)),
        SetForm::Session if lex.calls_routine => (StatementClass::Write, looks_multi(sql)),
        _ => parsed_class(sql, &lower),
    };
    let has = |needle: &str| lower.contains(needle);
    let named_lock = has("get_lock(") || has("release_lock(") || has("release_all_locks(") || has("is_used_lock(") || has("is_free_lock(");
    let pins = has("get_lock(") || (has("create") && has("temporary") && has("table"));
    // Where the server keeps its files and how it is reached: the primary's
    // answer, since a client acts on it (opens a file, connects).
    let identity = IDENTITY_VARS.iter().any(|v| lower.contains(v)) || describes_server(&lower);
    let replica_ok = !multi
        && !identity
        && !pins
        && !named_lock
        && !lex.calls_routine
        && !lex.assigns
        && matches!(class, StatementClass::Read | StatementClass::SessionState);
    let call = first_keyword(&lower) == "call";
    Classified {
        class,
        multi,
        // Session functions are answered where the previous statement ran.
        follows_previous: has("found_rows(") || has("row_count(") || has("show profile"),
        last_insert_id: has("last_insert_id(") || lex.previous_value,
        diagnostics: DIAGNOSTICS.iter().any(|d| lower.contains(d)),
        resets_diagnostics: class != StatementClass::Read || has(" from ") || has("\nfrom ") || has("\tfrom "),
        pins,
        named_lock,
        replica_ok,
        user_var: lex.user_var,
        sets_vars: !replica_ok && (lex.user_var || lex.assigns || lex.calls_routine || call),
        sets_global,
    }
}

fn parsed_class(sql: &str, lower: &str) -> (StatementClass, bool) {
    match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(stmts) if !stmts.is_empty() => {
            let class = stmts.iter().map(|s| class_of(s, lower)).reduce(merge).unwrap_or(StatementClass::Other);
            (class, stmts.len() > 1)
        }
        _ => (fallback_class(lower), looks_multi(sql)),
    }
}

/// The forms of `SET` the host treats differently.
#[derive(Debug, PartialEq, Eq)]
enum SetForm {
    NotSet,
    /// A session change: run once, replayed on every backend.
    Session,
    /// `SET GLOBAL`, `SET @@global.x`, `SET PASSWORD`, `SET DEFAULT ROLE`.
    Global,
    /// `SET STATEMENT ... FOR`: the inner statement starts at this offset.
    Statement(usize),
}

fn set_form(lower: &str) -> SetForm {
    let first = first_keyword(lower);
    if first != "set" {
        return SetForm::NotSet;
    }
    let after = first.as_ptr() as usize - lower.as_ptr() as usize + first.len();
    let second = first_keyword(&lower[after..]);
    match second {
        "statement" => match top_level_word(lower, after, "for") {
            Some(at) => SetForm::Statement(at + 3),
            None => SetForm::Global,
        },
        "global" | "persist" | "persist_only" | "password" | "default" => SetForm::Global,
        _ if top_level_parts(&lower[after..]).iter().any(|p| {
            let target = p.trim_start();
            target.starts_with("@@global.") || target.starts_with("@@persist") || target.starts_with("global ")
        }) =>
        {
            SetForm::Global
        }
        _ => SetForm::Session,
    }
}

/// Byte offsets of `s` from `from` on that are outside quotes and
/// parentheses.
fn top_level(s: &str, from: usize) -> impl Iterator<Item = usize> + '_ {
    let b = s.as_bytes();
    let (mut i, mut depth, mut quote) = (from, 0usize, None::<u8>);
    std::iter::from_fn(move || {
        while i < b.len() {
            let (at, c) = (i, b[i]);
            i += 1;
            match quote {
                Some(q) if c == b'\\' && q != b'`' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    b'\'' | b'"' | b'`' => quote = Some(c),
                    b'(' => depth += 1,
                    b')' => depth = depth.saturating_sub(1),
                    _ if depth == 0 => return Some(at),
                    _ => {}
                },
            }
        }
        None
    })
}

/// `s` split at commas outside quotes and parentheses.
fn top_level_parts(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for at in top_level(s, 0).filter(|&at| s.as_bytes()[at] == b',') {
        parts.push(&s[start..at]);
        start = at + 1;
    }
    parts.push(&s[start.min(s.len())..]);
    parts
}

/// The offset of `word` as a whole word outside quotes and parentheses.
fn top_level_word(lower: &str, from: usize, word: &str) -> Option<usize> {
    let b = lower.as_bytes();
    top_level(lower, from).find(|&i| {
        lower[i..].starts_with(word)
            && i.checked_sub(1).is_none_or(|p| !is_word_byte(b[p]))
            && b.get(i + word.len()).is_none_or(|&n| !is_word_byte(n))
    })
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'@'
}

const DIAGNOSTICS: &[&str] = &["show warnings", "show errors", "show count(", "@@warning_count", "@@error_count"];

/// `SHOW` statements about one server's state rather than the data
/// (variables, status, processes, table status, engines, replication):
/// the primary answers, as the server the client believes it talks to.
fn describes_server(lower: &str) -> bool {
    if first_keyword(lower) != "show" {
        return false;
    }
    let mut words = lower.split_whitespace().skip(1).skip_while(|w| matches!(*w, "global" | "session" | "local" | "full"));
    match words.next().unwrap_or("") {
        "variables" | "status" | "processlist" | "engine" | "engines" | "master" | "slave" | "replica" | "binary" | "binlog" | "open" => true,
        "table" => words.next().is_some_and(|w| w.starts_with("status")),
        _ => false,
    }
}

const IDENTITY_VARS: &[&str] = &[
    "@@datadir", "@@basedir", "@@tmpdir", "@@hostname", "@@socket", "@@port", "@@pid_file", "@@secure_file_priv",
    "@@plugin_dir", "@@log_error", "@@general_log_file", "@@slow_query_log_file", "@@character_sets_dir",
    "@@lc_messages_dir", "@@global.datadir", "@@global.tmpdir",
];

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
        | Ast::UnlockTables
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

/// True for `LOAD DATA ... LOCAL INFILE` and `LOAD XML ... LOCAL INFILE`:
/// the only statements a server may answer with a local file request.
/// Leading comments are skipped; anything else (a SELECT a hostile server
/// answers with a file request) is not one.
pub fn loads_local_file(sql: &str) -> bool {
    let words: Vec<String> = strip_leading_comments(sql).split_whitespace().take(5).map(str::to_ascii_uppercase).collect();
    let w = |i: usize| words.get(i).map(String::as_str);
    if w(0) != Some("LOAD") || !matches!(w(1), Some("DATA" | "XML")) {
        return false;
    }
    // LOAD DATA [LOW_PRIORITY | CONCURRENT] LOCAL INFILE
    let at = if matches!(w(2), Some("LOW_PRIORITY" | "CONCURRENT")) { 3 } else { 2 };
    w(at) == Some("LOCAL") && w(at + 1).is_some_and(|x| x.starts_with("INFILE"))
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = &rest[end + 2..],
                None => return "",
            }
        } else if s.starts_with("-- ") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = &s[end + 1..],
                None => return "",
            }
        } else {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_load_local_statements_may_be_answered_with_a_file_request() {
        use super::loads_local_file as l;
        assert!(l("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"));
        assert!(l("  /* bulk */ load data low_priority local infile 'x' into table t"));
        assert!(l("-- import\nLOAD XML LOCAL INFILE 'x.xml' INTO TABLE t"));
        assert!(!l("LOAD DATA INFILE '/tmp/x' INTO TABLE t"), "a server-side file is not the client's");
        assert!(!l("SELECT 'LOAD DATA LOCAL INFILE'"));
        assert!(!l("SELECT * FROM t"));
        assert!(!l("/* unterminated LOAD DATA LOCAL INFILE"));
    }

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
        assert!(classify("SELECT LAST_INSERT_ID()").last_insert_id);
        assert!(classify("SELECT PREVIOUS VALUE FOR s").last_insert_id, "the session's sequence value is where it wrote");
        assert!(classify("select found_rows()").follows_previous);
        assert!(classify("SELECT GET_LOCK('a', 1)").pins);
        assert!(classify("CREATE TEMPORARY TABLE tmp (a int)").pins);
        assert!(!classify("SELECT 1").pins);
        assert!(classify("SELECT 1; SELECT 2").multi);
        assert!(!classify("SELECT ';'").multi);
        assert!(!classify("SELECT 1;").multi);
    }

    #[test]
    fn only_plain_reads_and_session_settings_may_leave_the_primary() {
        let replica_ok = |s: &str| classify(s).replica_ok;
        for ok in [
            "SELECT * FROM t WHERE id = 1",
            "SELECT COUNT(*), CONCAT(a, 'x') FROM t",
            "SHOW TABLES",
            "SET NAMES utf8mb4",
            "SET @x = 5",
            "SET SESSION sql_mode = ''",
            "USE test",
            "SELECT @x",
            // sysbench oltp_read_only's statements: read scaling depends on them.
            "SELECT c FROM sbtest1 WHERE id=?",
            "SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ?",
            "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN ? AND ?",
            "SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c",
            "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c",
        ] {
            assert!(replica_ok(ok), "{ok}");
        }
        for write in [
            "SET STATEMENT max_statement_time=10 FOR INSERT INTO t VALUES (1)",
            "SET STATEMENT max_statement_time=10 FOR ALTER TABLE t ADD c INT",
            "set statement sql_mode='' for create index i on t (a)",
            "SET GLOBAL autocommit = 0",
            "SET @@global.autocommit = 0",
            "SET PASSWORD = PASSWORD('x')",
            "SET DEFAULT ROLE r FOR u",
            "SET @x = my_counter()",
            "INSERT INTO t SELECT ROW_COUNT()",
            "SELECT f_with_side_effect(1)",
            "SELECT db.f(1) FROM t",
            "SELECT NEXTVAL(s1)",
            "SELECT NEXT VALUE FOR s1",
            "SELECT a FROM t WHERE id = NEXT VALUE FOR s1",
            "SELECT @x := a FROM t",
            "SELECT a INTO @x FROM t",
            "SELECT a FROM t INTO OUTFILE '/tmp/x'",
            "CALL p()",
            "CALL p",
            "DO f(1)",
            "LOAD DATA INFILE 'x' INTO TABLE t",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "SELECT 1 FROM t FOR UPDATE",
            "HANDLER t OPEN",
            "EXECUTE s",
            "/*!40101 INSERT INTO t VALUES (1) */",
            "SELECT /*! f(1) */ 1",
        ] {
            assert!(!replica_ok(write), "{write}");
        }
    }

    /// What the server runs, not what a comment-blind parser sees.
    #[test]
    fn executable_comments_are_classified_as_code() {
        for write in [
            "/*!100000 INSERT INTO t VALUES (1) */",
            "/*M!100000 INSERT INTO t VALUES (1) */",
            "/*!100000 INSERT INTO t */ SELECT 1",
            "/*M!100000 INSERT INTO t */ SELECT 1",
            "/*!100000 CREATE TABLE t2 AS */ SELECT 1",
            "/*M!100000 CREATE TABLE t2 AS */ SELECT 1",
            "SELECT * FROM t /*!50000 INTO OUTFILE '/tmp/x' */",
            "SELECT 1 /*!100000 ; INSERT INTO t VALUES (1) */",
            "SELECT 1 /*!100000 FOR UPDATE */",
        ] {
            let c = classify(write);
            assert!(!c.replica_ok, "{write}: {c:?}");
            assert_ne!(c.class, Read, "{write}");
        }
        assert!(classify("SELECT 1 /*!100000 ; INSERT INTO t VALUES (1) */").multi);
        assert!(classify("SELECT /*! STRAIGHT_JOIN */ a FROM t").replica_ok, "a hint stays a read");
        assert!(classify("SELECT a FROM t /* DELETE FROM t */").replica_ok, "a plain comment does not run");
    }

    /// Bytes of a client character set that is not UTF-8: 8-bit sets
    /// classify as their ASCII reads; a multibyte character whose second
    /// byte is a backslash or backtick (sjis, big5, gbk) is not classified.
    #[test]
    fn client_charsets_that_are_not_utf8() {
        let latin1_read = b"SELECT a FROM t WHERE a = 'caf\xe9'";
        assert!(!misreadable(latin1_read));
        assert!(classify(&String::from_utf8_lossy(latin1_read)).replica_ok);
        let hebrew_ddl = b"CREATE TABLE t1 (a CHAR(1)) COMMENT '\xe0'";
        assert!(!misreadable(hebrew_ddl));
        assert_eq!(classify(&String::from_utf8_lossy(hebrew_ddl)).class, Write);
        // sjis: 0x95 0x5C is one character; read as UTF-8 the backslash
        // escapes the closing quote and hides the call.
        let sjis = b"SELECT '\x95\x5c', f_writes(1) -- '";
        assert!(classify(&String::from_utf8_lossy(sjis)).replica_ok, "the UTF-8 reading is wrong");
        assert!(misreadable(sjis));
        assert!(misreadable(b"SELECT `\x95`` FROM t"));
        assert!(!misreadable("SELECT 'caf\u{e9}\\n'".as_bytes()), "valid UTF-8 reads as UTF-8");
        let c = Classified::unproven();
        assert!(!c.replica_ok && c.class == Other);
    }

    #[test]
    fn set_statement_is_its_inner_statement() {
        let c = classify("SET STATEMENT max_statement_time=10 FOR SELECT * FROM t");
        assert_eq!(c.class, Read);
        assert!(c.replica_ok);
        assert_eq!(classify("SET STATEMENT a='for' FOR DELETE FROM t").class, Write);
        assert_eq!(classify("SET GLOBAL x = 1").class, Write);
        assert_eq!(classify("SET @x = 1").class, SessionState);
        assert!(!classify("SHOW TABLE STATUS LIKE 't'").replica_ok, "server-local state comes from the primary");
        assert!(!classify("show global variables like 'datadir'").replica_ok);
        assert!(classify("SHOW TABLES").replica_ok);
        assert!(classify("SHOW WARNINGS").diagnostics);
        assert!(!classify("SELECT 1").resets_diagnostics && classify("SELECT a FROM t").resets_diagnostics);
        assert_eq!(classify("SET @save = @@global.autocommit").class, SessionState, "reads a global, sets a user variable");
        assert_eq!(classify("SET @a = 1, @@global.max_connections = 10").class, Write);
        assert!(classify("SET GLOBAL x = 1").sets_global);
        assert!(!classify("SET SESSION x = 1").sets_global);
    }

    #[test]
    fn writes_that_follow_the_previous_statement_are_still_writes() {
        let c = classify("INSERT INTO t SELECT ROW_COUNT()");
        assert!(c.follows_previous && !c.replica_ok && c.class == Write);
    }

    #[test]
    fn what_may_set_user_variables() {
        assert!(classify("SELECT @x := 1").sets_vars);
        assert!(classify("CALL p()").sets_vars);
        assert!(classify("SELECT 1 INTO @x").sets_vars);
        assert!(!classify("SET @x = 1").sets_vars, "SET is replayed on every backend");
        assert!(!classify("SELECT @x").sets_vars);
    }

    #[test]
    fn declared_pure_functions_may_run_on_replicas() {
        assert!(!classify("SELECT price(1)").replica_ok);
        assert!(classify_with("SELECT price(1)", &["price".into()]).replica_ok);
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
