//! Office hours and a daily limit per user (the SDK README's example of an
//! access policy): requests are permitted only inside a window of UTC
//! hours (and weekdays), and each subject gets at most `daily_limit`
//! permitted requests per UTC day, counted atomically in a store tier
//! shared by every gateway node (`store::update`: add, then compare-and-set).

use switchyard_sdk::access::{deny, permit, AccessPolicy, Decision, Usage};
use switchyard_sdk::store::{self, Tier};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// First hour of the window (UTC, 0-23).
    #[serde(default = "default_open")]
    open_hour: u32,
    /// First hour after it; below `open_hour` the window crosses midnight.
    #[serde(default = "default_close")]
    close_hour: u32,
    /// Days it applies on, 0 = Monday; every day by default.
    #[serde(default = "all_days")]
    weekdays: Vec<u32>,
    /// Permitted requests per subject and UTC day; 0: no limit.
    #[serde(default)]
    daily_limit: u64,
    /// Where the daily counts live (`central` to share them between nodes).
    #[serde(default = "default_tier")]
    tier: String,
    /// Key prefix of the counts: `PREFIX SUBJECT : DAY`.
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_open() -> u32 {
    8
}
fn default_close() -> u32 {
    18
}
fn all_days() -> Vec<u32> {
    (0..7).collect()
}
fn default_tier() -> String {
    "central".into()
}
fn default_prefix() -> String {
    "daily:".into()
}

/// The policy.
pub struct OfficeHours {
    s: Settings,
    tier: Tier,
}

/// Is `hour` inside `[open, close)`, a window that may cross midnight?
pub fn within(hour: u32, open: u32, close: u32) -> bool {
    if open <= close {
        (open..close).contains(&hour)
    } else {
        hour >= open || hour < close
    }
}

const DAY_MS: u64 = 86_400_000;

impl OfficeHours {
    /// Count one more request of `subject` today, unless it is at the limit.
    fn take_one(&self, subject: &str, now_ms: u64) -> Result<bool, String> {
        // Subjects are any text; keys may not hold spaces: hex them then.
        let clean = subject.len() <= 128 && subject.bytes().all(|b| b.is_ascii_graphic());
        let who = if clean { subject.to_string() } else { subject.bytes().map(|b| format!("{b:02x}")).collect() };
        let key = format!("{}{who}:{}", self.s.prefix, now_ms / DAY_MS);
        let limit = self.s.daily_limit;
        let taken = store::update(self.tier, &key, 2 * 86_400, |current| {
            let n: u64 = current.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
            (n < limit).then(|| (n + 1).to_string().into_bytes())
        });
        taken.map(|t| t.is_some()).map_err(|e| store::describe(&e))
    }
}

impl AccessPolicy for OfficeHours {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.open_hour > 23 || s.close_hour > 24 {
            return Err("open_hour: 0-23, close_hour: 0-24".into());
        }
        if let Some(d) = s.weekdays.iter().find(|d| **d > 6) {
            return Err(format!("weekdays: {d} is not 0 (Monday) to 6 (Sunday)"));
        }
        let tier = store::tier(&s.tier).map_err(|e| format!("tier: {e}"))?;
        Ok(Self { s, tier })
    }

    fn pre_decision(&mut self, usage: &Usage) -> Decision {
        let ctx = |k: &str| usage.context.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let (hour, weekday) = (ctx("hour") as u32, ctx("weekday") as u32);
        if !self.s.weekdays.contains(&weekday) || !within(hour, self.s.open_hour, self.s.close_hour) {
            return deny(format!("outside office hours ({:02}:00-{:02}:00 UTC)", self.s.open_hour, self.s.close_hour));
        }
        if self.s.daily_limit == 0 {
            return permit();
        }
        let Some(subject) = usage.subject_attr("sub").and_then(|s| s.as_str()) else {
            return deny("no subject: a daily limit needs a signed-in user");
        };
        match self.take_one(subject, ctx("now_ms")) {
            Ok(true) => permit(),
            Ok(false) => deny(format!("daily limit of {} requests reached", self.s.daily_limit)),
            // Fail closed: without the count there is no limit.
            Err(e) => deny(format!("the daily count is unavailable: {e}")),
        }
    }
}

switchyard_sdk::export_access!(OfficeHours);

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn a_window_may_cross_midnight() {
        assert!(within(9, 8, 18) && !within(18, 8, 18) && !within(7, 8, 18));
        assert!(within(23, 22, 2) && within(1, 22, 2) && !within(2, 22, 2) && !within(12, 22, 2));
        assert!(within(0, 0, 24) && within(23, 0, 24));
    }
}
