//! `GET`/`DELETE /sessions?principal=U`: a user's sessions on every tier
//! and node, listed (id prefix only) or ended; `GET /sessions/counts`:
//! sessions this node serves, per strategy (the dashboard's table).

use crate::session::index::{self, Entry};
use crate::session::Stores;
use serde_json::{json, Value};

/// The `principal` of a query string, percent-decoded and checked; the
/// error names what is wrong.
pub fn principal(query: Option<&str>) -> Result<String, String> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "principal" {
            return Err(format!("unknown query parameter {name:?} (expected principal=USER)"));
        }
        if found.is_some() {
            return Err("principal: given more than once".into());
        }
        found = Some(decode(value).ok_or("principal: bad percent-encoding (use %XX with two hex digits, UTF-8)")?);
    }
    let p = found.ok_or("principal: missing (GET or DELETE /sessions?principal=USER)")?;
    index::check_principal(&p)?;
    Ok(p)
}

/// `application/x-www-form-urlencoded` value decoding: `+` is a space.
fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn session(e: &Entry) -> Value {
    json!({
        "id": format!("{}…", index::prefix(&e.id)),
        "strategy": e.strategy,
        "tier": e.parts.first().map(|(t, _)| t.as_str()),
        "created": e.created,
        "last_seen": e.last_seen,
        "node": e.node,
    })
}

/// `GET /sessions?principal=U`.
pub async fn list(stores: &Stores, principal: &str) -> Value {
    let found = index::find(stores, principal).await;
    json!({
        "principal": principal,
        "sessions": found.sessions.iter().map(session).collect::<Vec<_>>(),
        "errors": found.errors,
    })
}

/// `DELETE /sessions?principal=U`.
pub async fn revoke(stores: &Stores, principal: &str) -> Value {
    let r = index::revoke(stores, principal).await;
    tracing::warn!(principal, sessions = r.sessions, cut = r.cut, "admin: every session of the principal revoked");
    json!({ "principal": principal, "revoked": r.sessions, "responses_cut": r.cut, "errors": r.errors })
}

/// `GET /sessions/counts`.
pub fn counts(stores: &Stores) -> Value {
    json!({ "node": stores.replicated.as_ref().map(|c| c.id), "strategies": index::counts() })
}

#[cfg(test)]
mod tests {
    use super::principal;

    #[test]
    fn the_principal_is_decoded_and_bad_input_is_named() {
        assert_eq!(principal(Some("principal=alice")).unwrap(), "alice");
        assert_eq!(principal(Some("principal=Jos%C3%A9+Mar%C3%ADa%40x")).unwrap(), "José María@x");
        assert!(principal(None).unwrap_err().contains("principal: missing"));
        assert!(principal(Some("")).unwrap_err().contains("principal: missing"));
        assert!(principal(Some("principal=")).unwrap_err().contains("principal: empty"));
        assert!(principal(Some("principal=a%0Ab")).unwrap_err().contains("control characters"));
        assert!(principal(Some("principal=a%zz")).unwrap_err().contains("percent-encoding"));
        assert!(principal(Some("principal=%FF")).unwrap_err().contains("percent-encoding"));
        assert!(principal(Some("user=alice")).unwrap_err().contains("unknown query parameter \"user\""));
        assert!(principal(Some("principal=a&principal=b")).unwrap_err().contains("more than once"));
        assert!(principal(Some(&format!("principal={}", "x".repeat(300)))).unwrap_err().contains("limit"));
    }
}
