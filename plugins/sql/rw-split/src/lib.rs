//! SQL router: ordered rules, first match wins, over the classic split
//! (reads to replicas, everything else to the primary).
//!
//! ```toml
//! [plugins.rw-split.config]
//! rules = [
//!   { statement = "(?i)from\\s+reports", route = "group:reporting" },
//!   { user = "^batch$", route = "primary" },
//!   { schema = "^audit$", class = "write", route = "reject:audit is read-only" },
//! ]
//! default = "classic"   # or "primary"
//! ```
//!
//! A rule matches when every field it sets matches: `statement`, `user`
//! and `schema` are regexes (a search, anchor them with `^...$`), `class`
//! is one of `read`, `write`, `locking-read`, `transaction`,
//! `session-state`, `other`. `route` is `primary`, `replica`,
//! `group:NAME` or `reject:MESSAGE`.

use regex::Regex;
use serde::Deserialize;
use switchyard_sdk::sql::{classic, Connection, Route, SqlRouter, Statement, StatementClass};
use switchyard_sdk::Config;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default = "classic_default")]
    default: String,
}

fn classic_default() -> String {
    "classic".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    statement: Option<String>,
    user: Option<String>,
    schema: Option<String>,
    class: Option<String>,
    route: String,
}

struct Rule {
    statement: Option<Regex>,
    user: Option<Regex>,
    schema: Option<Regex>,
    class: Option<StatementClass>,
    route: Route,
}

pub struct RwSplit {
    rules: Vec<Rule>,
    all_primary: bool,
}

fn parse_route(s: &str) -> Result<Route, String> {
    match s.split_once(':') {
        None if s == "primary" => Ok(Route::Primary),
        None if s == "replica" => Ok(Route::Replica),
        Some(("group", g)) if !g.is_empty() => Ok(Route::Group(g.to_string())),
        Some(("reject", m)) if !m.is_empty() => Ok(Route::Reject(m.to_string())),
        _ => Err(format!("{s:?} is not a route: use primary, replica, group:NAME or reject:MESSAGE")),
    }
}

fn parse_class(s: &str) -> Result<StatementClass, String> {
    Ok(match s {
        "read" => StatementClass::Read,
        "write" => StatementClass::Write,
        "locking-read" => StatementClass::LockingRead,
        "transaction" => StatementClass::Transaction,
        "session-state" => StatementClass::SessionState,
        "other" => StatementClass::Other,
        _ => return Err(format!("{s:?} is not a class: use read, write, locking-read, transaction, session-state or other")),
    })
}

fn regex(field: &str, i: usize, pattern: &Option<String>) -> Result<Option<Regex>, String> {
    pattern.as_deref().map(|p| Regex::new(p).map_err(|e| format!("rules[{i}].{field}: invalid regex: {e}"))).transpose()
}

impl Rule {
    fn matches(&self, stmt: &Statement, conn: &Connection) -> bool {
        self.class.is_none_or(|c| c == stmt.class)
            && self.statement.as_ref().is_none_or(|r| r.is_match(&stmt.text))
            && self.user.as_ref().is_none_or(|r| r.is_match(&conn.user))
            && self.schema.as_ref().is_none_or(|r| conn.schema.as_deref().is_some_and(|s| r.is_match(s)))
    }
}

impl SqlRouter for RwSplit {
    fn configure(config: &Config) -> Result<Self, String> {
        let raw: RawConfig = config.parse()?;
        let all_primary = match raw.default.as_str() {
            "classic" => false,
            "primary" => true,
            other => return Err(format!("default: {other:?} is not a default: use classic or primary")),
        };
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rule {
                    statement: regex("statement", i, &r.statement)?,
                    user: regex("user", i, &r.user)?,
                    schema: regex("schema", i, &r.schema)?,
                    class: r.class.as_deref().map(parse_class).transpose().map_err(|e| format!("rules[{i}].class: {e}"))?,
                    route: parse_route(&r.route).map_err(|e| format!("rules[{i}].route: {e}"))?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { rules, all_primary })
    }

    fn route(&mut self, stmt: &Statement, conn: &Connection) -> Route {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(stmt, conn)) {
            return rule.route.clone();
        }
        if self.all_primary {
            Route::Primary
        } else {
            classic(stmt)
        }
    }
}

switchyard_sdk::export_sql_router!(RwSplit);

#[cfg(test)]
mod tests {
    use super::*;

    fn router(json: &str) -> Result<RwSplit, String> {
        RwSplit::configure(&Config::from_json(json)?)
    }

    fn stmt(text: &str, class: StatementClass) -> Statement {
        Statement { text: text.into(), class, prepare: false }
    }

    fn conn(user: &str, schema: Option<&str>) -> Connection {
        Connection { user: user.into(), schema: schema.map(Into::into), in_transaction: false, autocommit: true, pinned: false, ms_since_last_write: None }
    }

    #[test]
    fn classic_default() {
        let mut r = router("{}").unwrap();
        assert_eq!(r.route(&stmt("SELECT 1", StatementClass::Read), &conn("app", None)), Route::Replica);
        assert_eq!(r.route(&stmt("INSERT", StatementClass::Write), &conn("app", None)), Route::Primary);
        assert_eq!(r.route(&stmt("BEGIN", StatementClass::Transaction), &conn("app", None)), Route::Primary);
    }

    #[test]
    fn rules_in_order() {
        let mut r = router(
            r#"{"rules": [
                {"statement": "(?i)from\\s+reports", "route": "group:reporting"},
                {"user": "^batch$", "route": "primary"},
                {"schema": "^audit$", "class": "write", "route": "reject:audit is read-only"}
            ]}"#,
        )
        .unwrap();
        let read = stmt("select * FROM  reports", StatementClass::Read);
        assert_eq!(r.route(&read, &conn("batch", None)), Route::Group("reporting".into()));
        assert_eq!(r.route(&stmt("SELECT 1", StatementClass::Read), &conn("batch", None)), Route::Primary);
        assert_eq!(r.route(&stmt("DELETE", StatementClass::Write), &conn("app", Some("audit"))), Route::Reject("audit is read-only".into()));
        assert_eq!(r.route(&stmt("SELECT 1", StatementClass::Read), &conn("app", Some("audit"))), Route::Replica);
    }

    #[test]
    fn bad_config_names_the_rule() {
        assert!(router(r#"{"rules": [{"statement": "(", "route": "primary"}]}"#).err().unwrap().contains("rules[0].statement: invalid regex"));
        assert!(router(r#"{"rules": [{"route": "sideways"}]}"#).err().unwrap().contains("rules[0].route"));
        assert!(router(r#"{"rules": [{"class": "reads", "route": "primary"}]}"#).err().unwrap().contains("rules[0].class"));
        assert!(router(r#"{"default": "nowhere"}"#).err().unwrap().contains("default"));
        assert!(router(r#"{"rulez": []}"#).is_err());
    }

    #[test]
    fn primary_default() {
        let mut r = router(r#"{"default": "primary"}"#).unwrap();
        assert_eq!(r.route(&stmt("SELECT 1", StatementClass::Read), &conn("app", None)), Route::Primary);
    }
}
