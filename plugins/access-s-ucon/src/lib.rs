//! S-UCONabc (paper 002): roles are given to user classes and inherited by
//! their members, attribute-value subsets of a class get more roles, roles
//! form a hierarchy (cycles refused at configure), and per-permission rules
//! add conditions (time windows, client networks), obligations, mutable
//! attribute limits (reserved before the usage, given back only when the
//! backend surely did not act on it)
//! and ongoing re-checks that revoke a usage. The policy is a table in the
//! plugin config, checked at configure with errors that name the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use switchyard_sdk::access::{deny, AccessPolicy, Decision, Obligation, Outcome, Permit, Update, Usage};
use switchyard_sdk::Config;

#[derive(serde::Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Role {
    #[serde(default)]
    inherits: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Subset {
    class: String,
    when: BTreeMap<String, serde_json::Value>,
    roles: Vec<String>,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Condition {
    /// UTC hours [from, to).
    #[serde(default)]
    hours: Option<(u32, u32)>,
    /// Client networks, CIDR.
    #[serde(default)]
    networks: Vec<String>,
    /// An absolute window, Unix ms [from, to) (an exam session).
    #[serde(default)]
    window_ms: Option<(u64, u64)>,
    /// Fails while this mutable subject attribute is 1 or more (a teacher
    /// suspends a student; re-checked by ongoing decisions).
    #[serde(default)]
    unless_attribute: Option<String>,
    /// Shown when the condition does not hold.
    reason: String,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Obliged {
    attribute: String,
    at_least: i64,
    reason: String,
    fulfil_at: String,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Limit {
    attribute: String,
    max: i64,
    reason: String,
    /// Backend statuses that mean "not done": a usage whose backend
    /// answered one gives its reservation back. Each is a status (`409`)
    /// or a class (`5xx`). Only `limit` reads it.
    #[serde(default = "default_give_back")]
    give_back: Vec<String>,
}

fn default_give_back() -> Vec<String> {
    vec!["5xx".into()]
}

/// Whether `status` is in `give_back` (entries checked at configure).
fn gives_back(give_back: &[String], status: u16) -> bool {
    give_back.iter().any(|g| match g.strip_suffix("xx") {
        Some(class) => class.parse::<u16>().is_ok_and(|c| status / 100 == c),
        None => g.parse::<u16>().is_ok_and(|s| s == status),
    })
}

/// A `give_back` entry: a status 100..=599 or a class `1xx`..`5xx`.
fn valid_give_back(g: &str) -> bool {
    match g.strip_suffix("xx") {
        Some(class) => matches!(class, "1" | "2" | "3" | "4" | "5"),
        None => g.parse::<u16>().is_ok_and(|s| (100..=599).contains(&s)),
    }
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// `right:kind` this rule constrains.
    permission: String,
    #[serde(default)]
    conditions: Vec<String>,
    /// Attributes the subject and the object must share (`course`).
    #[serde(default)]
    same: Vec<String>,
    #[serde(default)]
    obligations: Vec<Obliged>,
    /// A usage reserves one unit up to `max`; a failed one gives it back.
    #[serde(default)]
    limit: Option<Limit>,
    /// A completed usage adds one to this attribute, up to `max` (fulfils an obligation).
    #[serde(default)]
    records: Option<Limit>,
    /// Re-check the conditions this often while the usage lasts.
    #[serde(default)]
    ongoing_ms: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_class_attribute")]
    class_attribute: String,
    roles: BTreeMap<String, Role>,
    classes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    subsets: Vec<Subset>,
    #[serde(default)]
    conditions: BTreeMap<String, Condition>,
    #[serde(default)]
    rules: Vec<Rule>,
}

fn default_class_attribute() -> String {
    "class".into()
}

/// Subsets of one class whose `when` is a single attribute, indexed by
/// (attribute, value as JSON): a decision looks its subset up instead of
/// scanning thousands of them (paper 002 has 3,479).
type SubsetIndex = BTreeMap<String, BTreeMap<(String, String), Vec<String>>>;

/// The compiled policy.
pub struct SUcon {
    class_attribute: String,
    /// Role -> every permission it grants, inherited ones included.
    grants: BTreeMap<String, BTreeSet<String>>,
    classes: BTreeMap<String, Vec<String>>,
    /// Single-attribute subsets, by class.
    indexed: SubsetIndex,
    /// The attribute names `indexed` uses, by class.
    indexed_attrs: BTreeMap<String, BTreeSet<String>>,
    /// Subsets with several attributes, scanned.
    subsets: Vec<Subset>,
    conditions: BTreeMap<String, (Condition, Vec<(IpAddr, u8)>)>,
    rules: Vec<Rule>,
}

fn covers(grant: &str, right: &str, kind: &str) -> bool {
    let (r, k) = grant.split_once(':').unwrap_or((grant, "*"));
    (r == "*" || r == right) && (k == "*" || k == kind)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/').unwrap_or((s, if s.contains(':') { "128" } else { "32" }));
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    (bits <= if ip.is_ipv4() { 32 } else { 128 }).then_some((ip, bits))
}

fn in_network(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Every permission of `role`, following `inherits`; an unknown role or a
/// cycle is an error naming it.
fn closure(roles: &BTreeMap<String, Role>, role: &str, path: &mut Vec<String>, out: &mut BTreeSet<String>) -> Result<(), String> {
    if path.iter().any(|r| r == role) {
        path.push(role.to_string());
        return Err(format!("roles: inheritance cycle {}", path.join(" -> ")));
    }
    let r = roles.get(role).ok_or_else(|| format!("roles.{}: inherits unknown role {role:?}", path.last().map_or("?", String::as_str)))?;
    path.push(role.to_string());
    out.extend(r.grants.iter().cloned());
    for parent in &r.inherits {
        closure(roles, parent, path, out)?;
    }
    path.pop();
    Ok(())
}

impl SUcon {
    fn compile(s: Settings) -> Result<Self, String> {
        let mut grants = BTreeMap::new();
        for (name, role) in &s.roles {
            if let Some(bad) = role.grants.iter().find(|g| !g.contains(':')) {
                return Err(format!("roles.{name}.grants: {bad:?} is not right:kind"));
            }
            let mut all = BTreeSet::new();
            closure(&s.roles, name, &mut Vec::new(), &mut all)?;
            grants.insert(name.clone(), all);
        }
        let known = |where_: String, r: &String| if s.roles.contains_key(r) { Ok(()) } else { Err(format!("{where_}: unknown role {r:?}")) };
        for (class, roles) in &s.classes {
            roles.iter().try_for_each(|r| known(format!("classes.{class}"), r))?;
        }
        for (i, sub) in s.subsets.iter().enumerate() {
            if !s.classes.contains_key(&sub.class) {
                return Err(format!("subsets[{i}].class: unknown class {:?}", sub.class));
            }
            sub.roles.iter().try_for_each(|r| known(format!("subsets[{i}].roles"), r))?;
        }
        let mut conditions = BTreeMap::new();
        for (name, c) in &s.conditions {
            if let Some((from, to)) = c.hours {
                if from > 23 || to > 24 || from == to {
                    return Err(format!("conditions.{name}.hours: [{from}, {to}] is not a UTC hour window"));
                }
            }
            let nets = c
                .networks
                .iter()
                .map(|n| parse_cidr(n).ok_or_else(|| format!("conditions.{name}.networks: {n:?} is not an address or CIDR")))
                .collect::<Result<Vec<_>, _>>()?;
            conditions.insert(name.clone(), (c.clone(), nets));
        }
        for (i, r) in s.rules.iter().enumerate() {
            if !r.permission.contains(':') {
                return Err(format!("rules[{i}].permission: {:?} is not right:kind", r.permission));
            }
            if let Some(c) = r.conditions.iter().find(|c| !conditions.contains_key(*c)) {
                return Err(format!("rules[{i}].conditions: unknown condition {c:?}"));
            }
            if r.limit.as_ref().is_some_and(|l| l.max < 1) {
                return Err(format!("rules[{i}].limit.max: must be at least 1"));
            }
            if let Some(bad) = r.limit.iter().flat_map(|l| &l.give_back).find(|g| !valid_give_back(g)) {
                return Err(format!("rules[{i}].limit.give_back: {bad:?} is not a status (100..=599) or a class (1xx..5xx)"));
            }
        }
        let (mut indexed, mut indexed_attrs, mut scanned) = (SubsetIndex::new(), BTreeMap::<String, BTreeSet<String>>::new(), Vec::new());
        for sub in s.subsets {
            match sub.when.iter().next() {
                Some((k, v)) if sub.when.len() == 1 => {
                    indexed_attrs.entry(sub.class.clone()).or_default().insert(k.clone());
                    indexed.entry(sub.class.clone()).or_default().entry((k.clone(), v.to_string())).or_default().extend(sub.roles);
                }
                _ => scanned.push(sub),
            }
        }
        Ok(Self { class_attribute: s.class_attribute, grants, classes: s.classes, indexed, indexed_attrs, subsets: scanned, conditions, rules: s.rules })
    }

    /// The subject's roles: its class's, and its subsets'.
    fn roles(&self, u: &Usage) -> BTreeSet<&str> {
        let Some(class) = u.subject_attr(&self.class_attribute).and_then(|c| c.as_str()) else { return BTreeSet::new() };
        let mut roles: BTreeSet<&str> = self.classes.get(class).into_iter().flatten().map(String::as_str).collect();
        if let (Some(index), Some(attrs)) = (self.indexed.get(class), self.indexed_attrs.get(class)) {
            for a in attrs {
                if let Some(found) = u.subject_attr(a).and_then(|v| index.get(&(a.clone(), v.to_string()))) {
                    roles.extend(found.iter().map(String::as_str));
                }
            }
        }
        for sub in self.subsets.iter().filter(|s| s.class == class) {
            if sub.when.iter().all(|(k, v)| u.subject_attr(k) == Some(v)) {
                roles.extend(sub.roles.iter().map(String::as_str));
            }
        }
        roles
    }

    fn rule(&self, right: &str, kind: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| covers(&r.permission, right, kind))
    }

    /// The first condition of `rule` that does not hold, as its reason.
    fn failed_condition(&self, rule: &Rule, u: &Usage) -> Option<String> {
        let hour = u.context.get("hour").and_then(|h| h.as_u64()).unwrap_or(0) as u32;
        let now_ms = u.context.get("now_ms").and_then(|h| h.as_u64()).unwrap_or(0);
        let ip: Option<IpAddr> = u.context.get("client_ip").and_then(|i| i.as_str()).and_then(|i| i.parse().ok());
        rule.conditions.iter().find_map(|name| {
            let (c, nets) = &self.conditions[name];
            let in_hours = c.hours.is_none_or(|(from, to)| if from < to { (from..to).contains(&hour) } else { hour >= from || hour < to });
            let in_nets = nets.is_empty() || ip.is_some_and(|ip| nets.iter().any(|n| in_network(ip, *n)));
            let in_window = c.window_ms.is_none_or(|(from, to)| (from..to).contains(&now_ms));
            let allowed = c.unless_attribute.as_ref().is_none_or(|a| u.subject_number(a) < 1);
            (!(in_hours && in_nets && in_window && allowed)).then(|| c.reason.clone())
        })
    }
}

impl AccessPolicy for SUcon {
    fn configure(config: &Config) -> Result<Self, String> {
        Self::compile(config.parse()?)
    }

    fn pre_decision(&mut self, u: &Usage) -> Decision {
        let kind = u.object.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let roles = self.roles(u);
        if roles.is_empty() {
            return deny("no role: the subject is in no user class");
        }
        if !roles.iter().filter_map(|r| self.grants.get(*r)).flatten().any(|g| covers(g, &u.right, kind)) {
            return deny(format!("no role of the subject grants {}:{kind}", u.right));
        }
        let Some(rule) = self.rule(&u.right, kind) else {
            return Decision::Permit(Permit { pre_updates: Vec::new(), ongoing_every_ms: None });
        };
        if let Some(why) = self.failed_condition(rule, u) {
            return deny(why);
        }
        if let Some(attr) = rule.same.iter().find(|a| u.subject_attr(a).is_none() || u.subject_attr(a) != u.object.get(a.as_str())) {
            return deny(format!("not your {attr}"));
        }
        if let Some(o) = rule.obligations.iter().find(|o| u.subject_number(&o.attribute) < o.at_least) {
            return Decision::Obligation(Obligation { reason: o.reason.clone(), fulfil_at: o.fulfil_at.clone() });
        }
        let pre_updates = rule
            .limit
            .iter()
            .map(|l| Update { name: l.attribute.clone(), delta: 1, min: None, max: Some(l.max), reason: l.reason.clone() })
            .collect();
        Decision::Permit(Permit { pre_updates, ongoing_every_ms: rule.ongoing_ms })
    }

    fn ongoing_decision(&mut self, u: &Usage, _elapsed_ms: u64) -> Result<(), String> {
        let kind = u.object.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        match self.rule(&u.right, kind).and_then(|r| self.failed_condition(r, u)) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn post_update(&mut self, u: &Usage, outcome: &Outcome) -> Vec<Update> {
        let kind = u.object.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let Some(rule) = self.rule(&u.right, kind) else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(l) = rule.limit.as_ref().filter(|l| not_done(l, outcome)) {
            out.push(Update { name: l.attribute.clone(), delta: -1, min: Some(0), max: None, reason: l.reason.clone() });
        }
        if let (Some(r), true) = (&rule.records, outcome.completed) {
            out.push(Update { name: r.attribute.clone(), delta: 1, min: None, max: Some(r.max), reason: r.reason.clone() });
        }
        out
    }
}

/// Whether the backend surely did not act on the usage, so its
/// reservation goes back: the request never left the gateway, or the
/// backend itself answered a `give_back` status. A client that hung up
/// after sending, a read timeout or a revoke mid-response keep it: the
/// backend may have accepted the request, and a limit is never exceeded.
fn not_done(l: &Limit, outcome: &Outcome) -> bool {
    !outcome.sent || outcome.upstream_status.is_some_and(|s| gives_back(&l.give_back, s))
}

switchyard_sdk::export_access!(SUcon);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Result<SUcon, String> {
        let text = format!(r#"{{"roles": {{"student": {{"grants": ["read:paper"]}}, "teacher": {{"inherits": ["student"], "grants": ["read:submission"]}} {extra} }}, "classes": {{"students": ["student"], "teachers": ["teacher"]}}}}"#);
        SUcon::configure(&Config::from_json(&text).unwrap())
    }

    #[test]
    fn a_role_cycle_is_refused_and_named() {
        let e = policy(r#", "a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}"#).err().unwrap();
        assert!(e.contains("cycle a -> b -> a"), "{e}");
        let e = policy(r#", "c": {"inherits": ["nope"]}"#).err().unwrap();
        assert!(e.contains("unknown role \"nope\""), "{e}");
    }

    #[test]
    fn inherited_grants_are_included() {
        let p = policy("").unwrap();
        assert!(p.grants["teacher"].contains("read:paper"));
        assert!(!p.grants["student"].contains("read:submission"));
    }

    #[test]
    fn subsets_are_found_through_the_index_and_the_scan() {
        let text = r#"{"roles": {"s": {"grants": ["read:paper"]}, "nj": {"grants": ["read:news"]}, "both": {"grants": ["read:both"]}},
            "classes": {"students": ["s"]},
            "subsets": [{"class": "students", "when": {"city": "Nanjing"}, "roles": ["nj"]},
                        {"class": "students", "when": {"city": "Nanjing", "year": 2}, "roles": ["both"]}]}"#;
        let p = SUcon::configure(&Config::from_json(text).unwrap()).unwrap();
        let usage = |subject: serde_json::Value| Usage { subject, object: serde_json::json!({}), right: "read".into(), context: serde_json::json!({}) };
        let r = p.roles(&usage(serde_json::json!({"class": "students", "city": "Nanjing", "year": 2})));
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec!["both", "nj", "s"]);
        let r = p.roles(&usage(serde_json::json!({"class": "students", "city": "Beijing"})));
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec!["s"]);
    }

    #[test]
    fn a_reservation_goes_back_only_when_the_backend_did_not_act() {
        let text = r#"{"roles": {"s": {"grants": ["submit:paper"]}}, "classes": {"students": ["s"]},
            "rules": [{"permission": "submit:paper", "limit": {"attribute": "attempts", "max": 3, "reason": "at most 3", "give_back": ["5xx", "409"]}}]}"#;
        let mut p = SUcon::configure(&Config::from_json(text).unwrap()).unwrap();
        let u = Usage { subject: serde_json::json!({"class": "students"}), object: serde_json::json!({"kind": "paper"}), right: "submit".into(), context: serde_json::json!({}) };
        let back = |p: &mut SUcon, status, sent, upstream_status| {
            let o = Outcome { status, completed: status > 0 && status < 500, sent, upstream_status };
            p.post_update(&u, &o).iter().any(|x| x.name == "attempts" && x.delta == -1)
        };
        assert!(back(&mut p, 502, false, None), "connect refused: never sent");
        assert!(back(&mut p, 0, false, None), "the client left before it was sent");
        assert!(back(&mut p, 500, true, Some(500)), "the backend failed it");
        assert!(back(&mut p, 409, true, Some(409)), "a configured not-done status");
        assert!(!back(&mut p, 0, true, None), "the client hung up after sending: kept");
        assert!(back(&mut p, 0, true, Some(500)), "a 5xx the client never saw still goes back");
        assert!(!back(&mut p, 504, true, None), "read timeout: the backend may have acted");
        assert!(!back(&mut p, 200, true, Some(200)), "done");
        assert!(!back(&mut p, 0, true, Some(200)), "done, then the client left or the usage was revoked");
        let bad = text.replace(r#""409""#, r#""6xx""#);
        let e = SUcon::configure(&Config::from_json(&bad).unwrap()).err().unwrap();
        assert!(e.contains("rules[0].limit.give_back: \"6xx\""), "{e}");
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = parse_cidr("10.1.0.0/16").unwrap();
        assert!(in_network("10.1.2.3".parse().unwrap(), net));
        assert!(!in_network("10.2.0.1".parse().unwrap(), net));
        assert!(parse_cidr("10.0.0.0/40").is_none());
    }
}
