//! An access plugin that fails on purpose (`mode = "trap"`: it panics in
//! every decision), to test that the access seam fails closed.

use switchyard_sdk::access::{deny, AccessPolicy, Decision, Usage};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
}

/// The misbehaving policy.
pub struct Misbehave(String);

impl AccessPolicy for Misbehave {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        Ok(Self(s.mode))
    }

    fn pre_decision(&mut self, _usage: &Usage) -> Decision {
        if self.0 == "trap" {
            panic!("misbehave-access: trapping on purpose");
        }
        deny("misbehave-access denies everything")
    }
}

switchyard_sdk::export_access!(Misbehave);
