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
        let pick = next_healthy(backends, self.next % backends.len().max(1))?;
        self.next = pick + 1;
        Some(pick)
    }
}

switchyard_sdk::export_lb!(RoundRobin);
