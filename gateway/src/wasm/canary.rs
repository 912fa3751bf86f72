//! Canary versions: a second version of a plugin takes a stable share of
//! the calls beside the running one. Every version keeps a scorecard
//! (calls, faults, latency) and, for lb plugins, one of the requests it
//! routed (upstream failures, upstream latency); a verdict compares the
//! canary's with the baseline's over the same window to promote it or
//! roll it back.

use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in µs (the last is open).
const BOUNDS_US: [u64; 14] = [2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, u64::MAX];

/// Whether a call keyed by `key` goes to a canary taking `percent` % of
/// keys. A key always lands on the same side (a user never flips between
/// versions); a call without one is drawn at random.
pub fn in_share<K: Hash>(key: Option<K>, percent: u32) -> bool {
    let point = match key {
        // SipHash with fixed keys: the same split on every node and restart.
        Some(k) => {
            let mut h = std::hash::DefaultHasher::new();
            k.hash(&mut h);
            h.finish() % 100
        }
        None => crate::upstream::draw() % 100,
    };
    point < u64::from(percent)
}

/// Calls, faults and latency of one plugin version, over all its users
/// (or, as `routed`, the requests it routed: failures and upstream time).
#[derive(Default, Debug)]
pub struct Scorecard {
    calls: AtomicU64,
    faults: AtomicU64,
    buckets: [AtomicU64; BOUNDS_US.len()],
}

/// A reading of a [`Scorecard`].
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Score {
    pub calls: u64,
    pub faults: u64,
    buckets: [u64; BOUNDS_US.len()],
}

impl Scorecard {
    pub fn record(&self, took: Duration, fault: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if fault {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros() as u64;
        let i = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> Score {
        Score {
            calls: self.calls.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

impl Score {
    /// What happened after `start` was read.
    pub fn since(&self, start: &Score) -> Score {
        Score {
            calls: self.calls.saturating_sub(start.calls),
            faults: self.faults.saturating_sub(start.faults),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(start.buckets[i])),
        }
    }

    pub fn fault_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.faults as f64 / self.calls as f64 }
    }

    /// The bucket bound under which a share `q` of calls finished (µs).
    pub fn quantile_us(&self, q: f64) -> u64 {
        let want = (self.calls as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return BOUNDS_US[i.min(BOUNDS_US.len() - 2)];
            }
        }
        0
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls,
            "faults": self.faults,
            "fault_rate": (self.fault_rate() * 10_000.0).round() / 10_000.0,
            "p50_us_at_most": self.quantile_us(0.5),
            "p99_us_at_most": self.quantile_us(0.99),
            "latency_buckets": self.buckets_json(),
        })
    }

    /// How many calls finished under each bound (`le_us`; the last, null, is open).
    fn buckets_json(&self) -> serde_json::Value {
        let bound = |b: u64| if b == u64::MAX { serde_json::Value::Null } else { b.into() };
        self.buckets.iter().zip(BOUNDS_US).map(|(n, b)| serde_json::json!({ "le_us": bound(b), "n": n })).collect()
    }

    /// The same figures read as the requests a version routed.
    pub fn routed_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.calls,
            "failed": self.faults,
            "failure_rate": (self.fault_rate() * 10_000.0).round() / 10_000.0,
            "p50_us_at_most": self.quantile_us(0.5),
            "p99_us_at_most": self.quantile_us(0.99),
            "latency_buckets": self.buckets_json(),
        })
    }
}

/// Most distinct outcomes one version counts; the rest count as `other`.
const OUTCOMES_MAX: usize = 32;

/// What one version decided while a canary ran, by outcome: `permit`,
/// `deny: REASON` (access), `primary`, `replica`, `group NAME`, `reject`
/// (SQL), `loaded`, `new`, `renewed`, `store_error`, `none` (session).
#[derive(Default, Debug)]
pub struct Outcomes(parking_lot::Mutex<BTreeMap<String, u64>>);

impl Outcomes {
    pub fn add(&self, what: &str) {
        let mut m = self.0.lock();
        if let Some(n) = m.get_mut(what) {
            *n += 1;
        } else if m.len() < OUTCOMES_MAX {
            m.insert(what.to_string(), 1);
        } else {
            *m.entry("other".to_string()).or_default() += 1;
        }
    }

    pub fn read(&self) -> BTreeMap<String, u64> {
        self.0.lock().clone()
    }

    /// The counts since `start` was read, zeros left out.
    pub fn since(&self, start: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let mut now = self.read();
        for (k, n) in now.iter_mut() {
            *n -= start.get(k).copied().unwrap_or(0).min(*n);
        }
        now.retain(|_, n| *n > 0);
        now
    }
}

/// One version's figures over a window: its own calls, and the requests
/// it routed (lb plugins; empty for the other seams).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Figures {
    pub calls: Score,
    pub routed: Score,
}

/// When a canary is judged, and what it must show to be promoted.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Auto {
    /// Canary calls before the verdict.
    pub window: u64,
    /// Largest fault-rate excess over the baseline, in percentage points.
    pub max_fault_points: f64,
    /// Largest ratio of the canary's p99 call latency to the baseline's,
    /// and of the p99 upstream time of the requests each routed (lb).
    pub max_p99_ratio: f64,
    /// Largest excess of the canary's failed routed requests (5xx or no
    /// answer) over the baseline's, in percentage points (lb).
    pub max_error_points: f64,
}

impl Default for Auto {
    fn default() -> Self {
        Self { window: 200, max_fault_points: 1.0, max_p99_ratio: 2.0, max_error_points: 1.0 }
    }
}

/// What the figures say.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Wait,
    Promote(String),
    RollBack(String),
}

/// Compare the canary with the baseline over the same window: its own
/// faults and call latency, then (lb) the failures and upstream time of
/// the requests it routed. A canary whose faults or failures already
/// exceed the allowance by far is rolled back before the window ends, to
/// bound the damage.
pub fn judge(baseline: &Figures, canary: &Figures, auto: &Auto) -> Verdict {
    let (b, c) = (&baseline.calls, &canary.calls);
    let (br, cr) = (&baseline.routed, &canary.routed);
    let points = 100.0 * (c.fault_rate() - b.fault_rate());
    let routed = cr.calls > 0 && br.calls > 0;
    let error_points = if routed { 100.0 * (cr.fault_rate() - br.fault_rate()) } else { 0.0 };
    // "canary N calls, F % faults, p99 <= P us; baseline ..." for one pair of scores.
    let pair = |c: &Score, b: &Score, (calls, faults, p99): (&str, &str, &str)| {
        let one = |s: &Score| format!("{} {calls}, {:.2} % {faults}, {p99} <= {} us", s.calls, 100.0 * s.fault_rate(), s.quantile_us(0.99));
        format!("canary {}; baseline {}", one(c), one(b))
    };
    let evidence = |what: &str| {
        let mut e = format!("{what}: {}", pair(c, b, ("calls", "faults", "p99")));
        if routed {
            e += &format!("; routed: {}", pair(cr, br, ("requests", "failed", "upstream p99")));
        }
        e + &format!(
            " (allowed: +{} points of faults, +{} points of failed requests, {}x p99)",
            auto.max_fault_points, auto.max_error_points, auto.max_p99_ratio
        )
    };
    let early = (c.faults >= 10 && points > (10.0 * auto.max_fault_points).max(20.0))
        || (cr.faults >= 10 && error_points > (10.0 * auto.max_error_points).max(20.0));
    if c.calls < auto.window && !early {
        return Verdict::Wait;
    }
    if points > auto.max_fault_points {
        return Verdict::RollBack(evidence("more faults than the baseline"));
    }
    if error_points > auto.max_error_points {
        return Verdict::RollBack(evidence("more failed requests than the baseline"));
    }
    // Latency is judged only past the timer's floor (a few µs of noise),
    // upstream time past a millisecond.
    let (p99, base) = (c.quantile_us(0.99), b.quantile_us(0.99));
    if b.calls > 0 && p99 > 50 && p99 as f64 > auto.max_p99_ratio * base as f64 {
        return Verdict::RollBack(evidence("slower than the baseline"));
    }
    let (p99, base) = (cr.quantile_us(0.99), br.quantile_us(0.99));
    if routed && p99 > 1_000 && p99 as f64 > auto.max_p99_ratio * base as f64 {
        return Verdict::RollBack(evidence("its requests were slower upstream than the baseline's"));
    }
    Verdict::Promote(evidence("no worse than the baseline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(calls: u64, faults: u64, us: u64) -> Score {
        let card = Scorecard::default();
        for i in 0..calls {
            card.record(Duration::from_micros(us), i < faults);
        }
        card.read()
    }

    #[test]
    fn a_key_stays_on_its_side_and_the_share_is_near_the_percent() {
        let on: Vec<bool> = (0..10_000u32).map(|k| in_share(Some(k), 20)).collect();
        assert!((0..10_000u32).all(|k| in_share(Some(k), 20) == on[k as usize]), "stable per key");
        let share = on.iter().filter(|&&b| b).count() as f64 / 100.0;
        assert!((17.0..=23.0).contains(&share), "{share} %");
        assert!((0..1000u32).all(|k| !in_share(Some(k), 0) && in_share(Some(k), 100)));
        let drawn = (0..10_000).filter(|_| in_share(None::<u32>, 30)).count() as f64 / 100.0;
        assert!((25.0..=35.0).contains(&drawn), "{drawn} %");
    }

    fn calls(s: Score) -> Figures {
        Figures { calls: s, routed: Score::default() }
    }

    #[test]
    fn verdicts_follow_faults_latency_and_the_window() {
        let auto = Auto { window: 100, ..Auto::default() };
        let judge = |b: &Score, c: &Score, auto: &Auto| judge(&calls(*b), &calls(*c), auto);
        assert_eq!(judge(&score(1000, 0, 10), &score(50, 0, 10), &auto), Verdict::Wait);
        assert!(matches!(judge(&score(1000, 0, 10), &score(100, 0, 10), &auto), Verdict::Promote(_)));
        assert!(matches!(judge(&score(1000, 10, 10), &score(100, 1, 10), &auto), Verdict::Promote(_)), "as good as the baseline");
        assert!(matches!(judge(&score(1000, 0, 10), &score(100, 5, 10), &auto), Verdict::RollBack(e) if e.contains("more faults")));
        assert!(matches!(judge(&score(1000, 0, 80), &score(100, 0, 900), &auto), Verdict::RollBack(e) if e.contains("slower")));
        assert!(matches!(judge(&score(1000, 0, 10), &score(30, 15, 10), &auto), Verdict::RollBack(_)), "half of its calls trap: no need to wait");
    }

    #[test]
    fn the_requests_an_lb_version_routed_are_judged_too() {
        let auto = Auto { window: 100, ..Auto::default() };
        let both = |calls: Score, routed: Score| Figures { calls, routed };
        let fine = score(1000, 0, 10);
        let base = both(fine, score(1000, 5, 2_000));
        assert!(matches!(judge(&base, &both(score(100, 0, 10), score(100, 1, 2_000)), &auto), Verdict::Promote(e) if e.contains("routed: canary 100 requests")));
        assert!(matches!(judge(&base, &both(score(100, 0, 10), score(100, 10, 2_000)), &auto), Verdict::RollBack(e) if e.contains("more failed requests")));
        assert!(matches!(judge(&base, &both(score(100, 0, 10), score(100, 0, 40_000)), &auto), Verdict::RollBack(e) if e.contains("slower upstream")));
        assert!(matches!(judge(&base, &both(score(30, 0, 10), score(30, 20, 2_000)), &auto), Verdict::RollBack(_)), "most of its requests fail: no need to wait");
        assert!(matches!(judge(&calls(fine), &both(score(100, 0, 10), score(100, 50, 10)), &auto), Verdict::Promote(_)), "nothing routed by the baseline to compare with");
    }

    #[test]
    fn outcomes_are_counted_from_a_start_and_bounded() {
        let o = Outcomes::default();
        o.add("permit");
        let start = o.read();
        o.add("permit");
        o.add("deny: over quota");
        assert_eq!(o.since(&start), BTreeMap::from([("deny: over quota".to_string(), 1), ("permit".to_string(), 1)]));
        for i in 0..100 {
            o.add(&format!("deny: reason {i}"));
        }
        let all = o.read();
        assert!(all.len() <= OUTCOMES_MAX + 1, "{}", all.len());
        assert_eq!(all.values().sum::<u64>(), 103, "nothing lost past the cap: {all:?}");
    }

    #[test]
    fn a_window_is_read_from_a_start() {
        let card = Scorecard::default();
        card.record(Duration::from_micros(3), true);
        let start = card.read();
        card.record(Duration::from_micros(3), false);
        let w = card.read().since(&start);
        assert_eq!((w.calls, w.faults, w.quantile_us(0.99)), (1, 0, 5));
    }
}
