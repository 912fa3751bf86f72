//! Plain role-based access control, the baseline: the subject's roles
//! (a token claim or static attribute) grant `right:kind` permissions.

use std::collections::BTreeMap;
use switchyard_sdk::access::{deny, permit, AccessPolicy, Decision, Usage};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Subject attribute holding a role name or a list of them.
    #[serde(default = "default_role_attribute")]
    role_attribute: String,
    /// Role -> permissions, each `right:kind` (`*` matches any).
    grants: BTreeMap<String, Vec<String>>,
}

fn default_role_attribute() -> String {
    "roles".into()
}

/// The rbac policy.
pub struct Rbac(Settings);

/// Does `grant` (`right:kind`, `*` wildcards) cover `right` on `kind`?
pub fn covers(grant: &str, right: &str, kind: &str) -> bool {
    let (r, k) = grant.split_once(':').unwrap_or((grant, "*"));
    (r == "*" || r == right) && (k == "*" || k == kind)
}

/// The subject's roles from `attr` (a string or a list of strings).
pub fn roles_of(usage: &Usage, attr: &str) -> Vec<String> {
    match usage.subject_attr(attr) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

impl AccessPolicy for Rbac {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        for (role, grants) in &s.grants {
            if let Some(bad) = grants.iter().find(|g| !g.contains(':') && g.as_str() != "*") {
                return Err(format!("grants.{role}: {bad:?} is not right:kind"));
            }
        }
        Ok(Self(s))
    }

    fn pre_decision(&mut self, usage: &Usage) -> Decision {
        let kind = usage.object.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let roles = roles_of(usage, &self.0.role_attribute);
        let granted = roles.iter().filter_map(|r| self.0.grants.get(r)).flatten().any(|g| covers(g, &usage.right, kind));
        if granted {
            permit()
        } else {
            deny(format!("no role grants {}:{kind}", usage.right))
        }
    }
}

switchyard_sdk::export_access!(Rbac);
