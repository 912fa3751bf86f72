//! Least connections: the healthy backend with the fewest requests in flight,
//! relative to its weight; ties go round robin.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

/// Index of the eligible backend with the least `active / weight`, starting
/// the scan at `start` so equal loads rotate.
pub fn least_loaded(candidates: &[(u32, u32, bool)], start: usize) -> Option<usize> {
    let n = candidates.len();
    let mut best: Option<(usize, u64, u64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let (active, weight, eligible) = candidates[i];
        if !eligible {
            continue;
        }
        let (a, w) = (u64::from(active), u64::from(weight.max(1)));
        // a/w < ba/bw  <=>  a*bw < ba*w, no division, no float.
        if best.is_none_or(|(_, ba, bw)| a * bw < ba * w) {
            best = Some((i, a, w));
        }
    }
    best.map(|(i, _, _)| i)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// The plugin.
pub struct LeastConnections {
    rotate: usize,
    scratch: Vec<(u32, u32, bool)>,
}

impl LoadBalancer for LeastConnections {
    const NEEDS_LIVE_STATS: bool = true;

    fn configure(config: &Config) -> Result<Self, String> {
        let _: Settings = config.parse()?;
        Ok(Self { rotate: 0, scratch: Vec::new() })
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], live: &[LiveStat]) -> Option<usize> {
        self.scratch.clear();
        self.scratch.extend(backends.iter().zip(live).map(|(b, l)| (l.active, b.weight, b.healthy)));
        self.rotate = self.rotate.wrapping_add(1);
        least_loaded(&self.scratch, self.rotate % backends.len().max(1))
    }
}

switchyard_sdk::export_lb!(LeastConnections);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_rotate() {
        let c = [(0, 1, true), (0, 1, true), (0, 1, true)];
        let picks: Vec<_> = (0..3).map(|s| least_loaded(&c, s).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    proptest! {
        /// Never a busier backend when an idler one is healthy (equal weights).
        #[test]
        fn never_busier_than_an_idler_healthy_one(
            loads in proptest::collection::vec((0u32..50, any::<bool>()), 1..16),
            start in 0usize..16,
        ) {
            let c: Vec<_> = loads.iter().map(|&(a, h)| (a, 1, h)).collect();
            match least_loaded(&c, start) {
                None => prop_assert!(c.iter().all(|x| !x.2)),
                Some(i) => {
                    prop_assert!(c[i].2, "picked an unhealthy backend");
                    for other in c.iter().filter(|x| x.2) {
                        prop_assert!(c[i].0 <= other.0, "picked {} with {} active, {} is idler", i, c[i].0, other.0);
                    }
                }
            }
        }

        /// With weights, the pick minimises active/weight.
        #[test]
        fn weighted_pick_minimises_ratio(
            loads in proptest::collection::vec((0u32..50, 1u32..10), 1..16),
        ) {
            let c: Vec<_> = loads.iter().map(|&(a, w)| (a, w, true)).collect();
            let i = least_loaded(&c, 0).unwrap();
            for &(a, w, _) in &c {
                prop_assert!(c[i].0 as u64 * w as u64 <= a as u64 * c[i].1 as u64);
            }
        }
    }
}
