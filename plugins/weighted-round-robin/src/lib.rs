//! Smooth weighted round robin, as nginx does it: shares follow the weights
//! and picks of one backend are spread out, not bunched.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

/// nginx's smooth weighted round robin over `(weight, eligible)` pairs.
#[derive(Debug, Default, Clone)]
pub struct Smooth {
    current: Vec<i64>,
}

impl Smooth {
    /// Forget accumulated credit (the set changed).
    pub fn reset(&mut self, n: usize) {
        self.current = vec![0; n];
    }

    /// Each eligible backend gains its weight; the richest is picked and
    /// pays the total back.
    pub fn pick(&mut self, weights: impl Iterator<Item = (u32, bool)>) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, (weight, eligible)) in weights.enumerate() {
            if i >= self.current.len() {
                self.current.resize(i + 1, 0);
            }
            if !eligible {
                continue;
            }
            let w = i64::from(weight.max(1));
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// The plugin: one [`Smooth`] per instance.
pub struct WeightedRoundRobin {
    smooth: Smooth,
}

impl LoadBalancer for WeightedRoundRobin {
    fn configure(config: &Config) -> Result<Self, String> {
        let _: Settings = config.parse()?;
        Ok(Self { smooth: Smooth::default() })
    }

    fn backends_changed(&mut self, backends: &[Backend]) {
        self.smooth.reset(backends.len());
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
        self.smooth.pick(backends.iter().map(|b| (b.weight, b.healthy)))
    }
}

switchyard_sdk::export_lb!(WeightedRoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let mut s = Smooth::default();
        let seq: Vec<usize> = (0..7).map(|_| s.pick([(5, true), (1, true), (1, true)].into_iter()).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn skips_ineligible() {
        let mut s = Smooth::default();
        for _ in 0..100 {
            assert_ne!(s.pick([(5, true), (9, false), (1, true)].into_iter()), Some(1));
        }
        assert_eq!(s.pick([(1, false)].into_iter()), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Weighted shares within 1% over 100k picks.
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(1u32..20, 2..8)) {
            let mut s = Smooth::default();
            let mut counts = vec![0u64; weights.len()];
            let picks = 100_000u64;
            for _ in 0..picks {
                counts[s.pick(weights.iter().map(|&w| (w, true))).unwrap()] += 1;
            }
            let total: u64 = weights.iter().map(|&w| w as u64).sum();
            for (i, &w) in weights.iter().enumerate() {
                let want = w as f64 / total as f64;
                let got = counts[i] as f64 / picks as f64;
                prop_assert!((got - want).abs() <= 0.01, "backend {i}: want {want:.4} got {got:.4}");
            }
        }
    }
}
