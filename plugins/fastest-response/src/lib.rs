//! Fastest response: peak-EWMA latency times load, compared between two
//! backends drawn at random without replacement (power of two choices).
//!
//! - An unmeasured backend costs `default_latency_us`, and a measurement
//!   decays toward that default as it grows stale, so a backend that was slow
//!   once is probed again later.
//! - Connect errors and 5xx raise the cost by `error_penalty` per unit of
//!   error rate, so a backend that fails fast does not attract traffic.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::rand::Rng;
use switchyard_sdk::Config;

/// Tunables, from the plugin's `config` table.
#[derive(serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Cost of a backend with no measurement, in microseconds.
    pub default_latency_us: f64,
    /// How fast a stale measurement fades into the default (ms time constant).
    pub decay_ms: f64,
    /// Cost multiplier per unit of error rate (1.0 = every response failed).
    pub error_penalty: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { default_latency_us: 1_000.0, decay_ms: 10_000.0, error_penalty: 50.0 }
    }
}

impl Settings {
    /// The estimated cost of sending one more request to this backend.
    pub fn cost(&self, s: &LiveStat) -> f64 {
        let latency = if s.ewma_us == 0 {
            self.default_latency_us
        } else {
            let w = (-(f64::from(s.age_ms)) / self.decay_ms).exp();
            f64::from(s.ewma_us) * w + self.default_latency_us * (1.0 - w)
        };
        let errors = f64::from(s.error_permille.min(1000)) / 1000.0;
        latency * f64::from(s.active + 1) * (1.0 + self.error_penalty * errors)
    }

    /// Power of two choices among `eligible` (indices into `live`).
    pub fn p2c(&self, rng: &mut Rng, eligible: &[usize], live: &[LiveStat]) -> Option<usize> {
        match eligible.len() {
            0 => None,
            1 => Some(eligible[0]),
            n => {
                let (a, b) = rng.two_distinct(n);
                let (a, b) = (eligible[a], eligible[b]);
                Some(if self.cost(&live[b]) < self.cost(&live[a]) { b } else { a })
            }
        }
    }
}

/// The plugin.
pub struct FastestResponse {
    settings: Settings,
    rng: Rng,
    eligible: Vec<usize>,
}

impl LoadBalancer for FastestResponse {
    const NEEDS_LIVE_STATS: bool = true;

    fn configure(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if !(settings.default_latency_us > 0.0 && settings.decay_ms > 0.0 && settings.error_penalty >= 0.0) {
            return Err("default_latency_us and decay_ms must be > 0, error_penalty >= 0".into());
        }
        Ok(Self { settings, rng: Rng::from_host(), eligible: Vec::new() })
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], live: &[LiveStat]) -> Option<usize> {
        self.eligible.clear();
        self.eligible.extend(backends.iter().enumerate().filter(|(_, b)| b.healthy).map(|(i, _)| i));
        self.settings.p2c(&mut self.rng, &self.eligible, live)
    }
}

switchyard_sdk::export_lb!(FastestResponse);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use switchyard_sdk::rand::Rng;

    fn stat(active: u32, ewma_us: u32, age_ms: u32, error_permille: u32) -> LiveStat {
        LiveStat { active, ewma_us, age_ms, error_permille }
    }

    #[test]
    fn fast_errors_do_not_attract() {
        let s = Settings::default();
        let failing_fast = stat(0, 50, 0, 1000);
        let healthy_slow = stat(0, 2_000, 0, 0);
        assert!(s.cost(&failing_fast) > s.cost(&healthy_slow));
    }

    #[test]
    fn unmeasured_gets_default_and_stale_decays_toward_it() {
        let s = Settings::default();
        assert_eq!(s.cost(&stat(0, 0, u32::MAX, 0)), s.default_latency_us);
        let fresh = s.cost(&stat(0, 50_000, 0, 0));
        let stale = s.cost(&stat(0, 50_000, 60_000, 0));
        assert!(fresh > stale && stale > s.default_latency_us, "{fresh} {stale}");
    }

    #[test]
    fn traffic_prefers_the_fast_backend() {
        let s = Settings::default();
        let mut rng = Rng::from_seed(3);
        let live = [stat(0, 500, 0, 0), stat(0, 5_000, 0, 0), stat(0, 5_000, 0, 0)];
        let mut counts = [0; 3];
        for _ in 0..3_000 {
            counts[s.p2c(&mut rng, &[0, 1, 2], &live).unwrap()] += 1;
        }
        // Backend 0 wins every draw it is in: 2 of 3 pairs.
        assert!(counts[0] > 1_800, "{counts:?}");
    }

    proptest! {
        /// The pick is never the costlier of the two drawn, and never ineligible.
        #[test]
        fn pick_is_eligible_and_cheapest_of_two(
            stats in proptest::collection::vec((0u32..20, 0u32..10_000, 0u32..100_000, 0u32..1000), 2..16),
            seed in 1u64..u64::MAX,
        ) {
            let s = Settings::default();
            let live: Vec<_> = stats.iter().map(|&(a, e, g, r)| stat(a, e, g, r)).collect();
            let eligible: Vec<usize> = (0..live.len()).step_by(2).collect();
            let mut rng = Rng::from_seed(seed);
            let mut probe = rng.clone();
            let pick = s.p2c(&mut rng, &eligible, &live).unwrap();
            prop_assert!(eligible.contains(&pick));
            if eligible.len() >= 2 {
                let (a, b) = probe.two_distinct(eligible.len());
                let other = if pick == eligible[a] { eligible[b] } else { eligible[a] };
                prop_assert!(s.cost(&live[pick]) <= s.cost(&live[other]));
            }
        }
    }
}
