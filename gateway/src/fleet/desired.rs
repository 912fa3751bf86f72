//! What the fleet wants one plugin to run (the record under
//! `PREFIX/plugins/NAME`): read off a node's slot when it changes there,
//! and the next step that brings another node's slot to it.

use crate::wasm::canary::Auto;
use crate::wasm::{PluginSlot, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The running version and canary every node should serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Desired {
    pub sha256: String,
    /// The plugin's `config` table.
    pub config: Value,
    pub canary: Option<CanaryWant>,
    /// The node that wrote it, what it did there, and why.
    pub by: String,
    pub action: String,
    #[serde(default)]
    pub evidence: String,
    pub at_unix: u64,
}

/// A canary beside the running version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CanaryWant {
    pub sha256: String,
    pub config: Value,
    pub percent: u32,
    pub auto: Option<Auto>,
}

/// What a slot serves, in the terms of a [`Desired`].
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub sha256: String,
    pub config: Value,
    /// The canary's bytes, table and share.
    pub canary: Option<(String, Value, u32)>,
}

/// The one step that brings a node closer to the fleet's record.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The running canary is what the fleet now runs.
    Promote,
    /// Other bytes or another table.
    Swap,
    /// The fleet runs no canary (any more), or another one.
    EndCanary,
    StartCanary,
    Done,
}

fn config_of(v: &Version) -> Value {
    serde_json::from_str(&v.plugin.spec.config_json).unwrap_or(Value::Null)
}

impl Running {
    pub fn of(slot: &PluginSlot) -> Self {
        let current = slot.current();
        let canary = slot.canary().map(|run| (run.version.sha256.clone(), config_of(&run.version), run.percent));
        Self { sha256: current.sha256.clone(), config: config_of(&current), canary }
    }

    /// The next step toward `want`; [`Step::Done`] when there.
    pub fn next(&self, want: &Desired) -> Step {
        let here = (&self.sha256, &self.config) == (&want.sha256, &want.config);
        let canary_is_want = self.canary.as_ref().is_some_and(|(s, c, _)| (s, c) == (&want.sha256, &want.config));
        match (here, &want.canary, &self.canary) {
            (false, _, Some(_)) if canary_is_want => Step::Promote,
            (false, _, Some(_)) => Step::EndCanary,
            (false, _, None) => Step::Swap,
            (true, None, Some(_)) => Step::EndCanary,
            (true, Some(w), Some((s, c, p))) if (&w.sha256, &w.config, w.percent) != (s, c, *p) => Step::EndCanary,
            (true, Some(_), None) => Step::StartCanary,
            (true, _, _) => Step::Done,
        }
    }
}

impl Desired {
    /// What `slot` serves now, as the fleet's record.
    pub fn of(slot: &PluginSlot, by: &str, action: &str, evidence: &str) -> Self {
        let current = slot.current();
        let canary = slot.canary().map(|run| CanaryWant {
            sha256: run.version.sha256.clone(),
            config: config_of(&run.version),
            percent: run.percent,
            auto: run.auto,
        });
        let at_unix = super::unix(std::time::SystemTime::now());
        Self { sha256: current.sha256.clone(), config: config_of(&current), canary, by: by.into(), action: action.into(), evidence: evidence.into(), at_unix }
    }

    /// Every version it names.
    pub fn shas(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.sha256.as_str()).chain(self.canary.as_ref().map(|c| c.sha256.as_str()))
    }

    /// A record read from the store; names what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let d: Self = serde_json::from_slice(bytes).map_err(|e| format!("the fleet record is not valid: {e}"))?;
        for sha in d.shas() {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("the fleet record names {sha:?}, not a sha256"));
            }
        }
        if let Some(c) = &d.canary {
            if !(1..=99).contains(&c.percent) {
                return Err(format!("the fleet record's canary takes {} %, not 1..=99", c.percent));
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn want(sha: &str, canary: Option<(&str, u32)>) -> Desired {
        Desired {
            sha256: sha.into(),
            config: json!({}),
            canary: canary.map(|(s, p)| CanaryWant { sha256: s.into(), config: json!({}), percent: p, auto: None }),
            by: "n1".into(),
            action: "push".into(),
            evidence: String::new(),
            at_unix: 0,
        }
    }

    fn running(sha: &str, canary: Option<(&str, u32)>) -> Running {
        Running { sha256: sha.into(), config: json!({}), canary: canary.map(|(s, p)| (s.into(), json!({}), p)) }
    }

    #[test]
    fn each_difference_has_one_next_step() {
        assert_eq!(running("a", None).next(&want("a", None)), Step::Done);
        assert_eq!(running("a", None).next(&want("b", None)), Step::Swap);
        assert_eq!(running("a", None).next(&want("a", Some(("b", 20)))), Step::StartCanary);
        assert_eq!(running("a", Some(("b", 20))).next(&want("a", Some(("b", 20)))), Step::Done);
        assert_eq!(running("a", Some(("b", 20))).next(&want("a", Some(("b", 30)))), Step::EndCanary);
        assert_eq!(running("a", Some(("b", 20))).next(&want("a", Some(("c", 20)))), Step::EndCanary);
        assert_eq!(running("a", Some(("b", 20))).next(&want("a", None)), Step::EndCanary);
        assert_eq!(running("a", Some(("b", 20))).next(&want("b", None)), Step::Promote);
        assert_eq!(running("a", Some(("b", 20))).next(&want("c", None)), Step::EndCanary);
        // Another table is another version, even for the same bytes.
        let mut other = want("a", None);
        other.config = json!({"k": 1});
        assert_eq!(running("a", None).next(&other), Step::Swap);
    }

    #[test]
    fn a_bad_record_is_named() {
        let good = serde_json::to_vec(&want(&"ab".repeat(32), None)).unwrap();
        assert!(Desired::parse(&good).is_ok());
        assert!(Desired::parse(b"{").unwrap_err().contains("not valid"));
        let short = serde_json::to_vec(&want("abc", None)).unwrap();
        assert!(Desired::parse(&short).unwrap_err().contains("not a sha256"));
        let wide = serde_json::to_vec(&want(&"ab".repeat(32), Some((&"cd".repeat(32), 100)))).unwrap();
        assert!(Desired::parse(&wide).unwrap_err().contains("1..=99"));
    }
}
