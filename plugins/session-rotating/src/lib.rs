//! Centralized sessions whose id moves to a new one every `every` requests
//! (the SDK README's example of a strategy of your own): the session
//! logic is `session::stored`'s, this adds one hook that counts each
//! session's requests in the store and asks for a renewal at the Nth. The
//! old id's keys are retired by the renewal, so a copied cookie works for
//! at most `every` requests after its owner's last rotation.

use switchyard_sdk::session::stored::{Context, Defaults, Hooks, Settings, Stored, Strategy, Written};
use switchyard_sdk::session::Changes;
use switchyard_sdk::store::{self, Tier};
use switchyard_sdk::Config;

/// The strategy: centralized defaults, plus `every` (default 10).
pub struct Rotating;

impl Defaults for Rotating {
    fn defaults() -> serde_json::Value {
        serde_json::json!({ "cookie": "sy_session", "prefix": "session:", "tier": "central", "ttl_s": 1800 })
    }

    fn configure(config: &Config) -> Result<Stored, String> {
        // `every` is ours; the rest is the stored strategy's (which
        // refuses keys it does not know).
        let (mine, rest) = config.split_off(&["every"]);
        let own: Own = mine.parse()?;
        if own.every == 0 {
            return Err("every: must be at least 1".into());
        }
        let settings: Settings = rest.parse_over(Self::defaults())?;
        let counter = EveryNth {
            tier: store::tier(&settings.tier)?,
            prefix: format!("{}requests:", settings.prefix),
            ttl_s: settings.ttl_s,
            every: own.every,
        };
        Ok(Stored::new(settings)?.with_hooks(counter))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default = "default_every")]
    every: u64,
}

fn default_every() -> u64 {
    10
}

/// Counts a session's requests under `PREFIX requests: ID`, in the
/// session's own tier (so every gateway node counts the same requests).
struct EveryNth {
    tier: Tier,
    prefix: String,
    ttl_s: u32,
    every: u64,
}

impl EveryNth {
    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// A stored count (absent or unreadable: 0).
pub fn count(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
}

impl Hooks for EveryNth {
    fn renew(&mut self, session: &Context, _changes: &Changes) -> bool {
        // add/cas under the hood: concurrent requests each count once.
        match store::update(self.tier, &self.key(&session.id), self.ttl_s, |n| Some((count(n) + 1).to_string().into_bytes())) {
            Ok(n) => count(n.as_deref()) >= self.every,
            // The store failed: keep the id this time, the session still works.
            Err(_) => false,
        }
    }

    fn after_write(&mut self, write: &Written<'_>) {
        if write.renewed {
            // The new id starts at 0; the old id's count is of no use now.
            let _ = store::delete(self.tier, &self.key(write.old_id));
        }
    }
}

switchyard_sdk::export_session!(Strategy<Rotating>);

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_or_unreadable_count_is_zero() {
        assert_eq!(super::count(None), 0);
        assert_eq!(super::count(Some(b"x")), 0);
        assert_eq!(super::count(Some(b"7")), 7);
    }
}
