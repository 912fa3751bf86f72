//! Round robin: each healthy backend in turn.

use switchyard_sdk::lb::{next_healthy, Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// Cycles through the healthy backends.
pub struct RoundRobin {
    next: usize,
}

impl LoadBalancer for RoundRobin {
    fn configure(config: &Config) -> Result<Self, String> {
        let _: Settings = config.parse()?;
        // Start each pooled instance at a different place so a burst spread
        // over several instances does not hit backend 0 first everywhere.
        Ok(Self { next: switchyard_sdk::host::random_u64() as usize % 1024 })
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
        self.pick(backends)
    }

    // A hot swap continues the rotation instead of restarting it.
    fn snapshot(&self) -> Vec<u8> {
        switchyard_sdk::state::save(&self.next)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.next = switchyard_sdk::state::load(state)?;
        Ok(())
    }
}

impl RoundRobin {
    /// The next healthy backend after the previous pick.
    pub fn pick(&mut self, backends: &[Backend]) -> Option<usize> {
        let pick = next_healthy(backends, self.next % backends.len().max(1))?;
        self.next = pick + 1;
        Some(pick)
    }
}

switchyard_sdk::export_lb!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;

    fn set(healthy: &[bool]) -> Vec<Backend> {
        healthy.iter().enumerate().map(|(i, &h)| Backend { address: format!("10.0.0.{i}:80"), weight: 1, healthy: h }).collect()
    }

    fn cycle(backends: &[Backend], n: usize) -> Vec<usize> {
        let mut rr = RoundRobin { next: 0 };
        (0..n).map(|_| rr.pick(backends).unwrap()).collect()
    }

    #[test]
    fn cycles_through_healthy_backends_only() {
        assert_eq!(cycle(&set(&[true, false, true, true]), 6), vec![0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn state_survives_a_swap() {
        let backends = set(&[true, true, true]);
        let mut old = RoundRobin { next: 0 };
        old.pick(&backends);
        let mut new = RoundRobin { next: 0 };
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(new.pick(&backends), Some(1));
        assert!(new.restore(&[]).is_err());
    }

    #[test]
    fn none_when_all_down() {
        assert_eq!(RoundRobin { next: 5 }.pick(&set(&[false, false])), None);
    }
}
