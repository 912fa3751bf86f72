//! Test plugin: always the last healthy backend (see `pin-first`).

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

pub struct PinLast;

impl LoadBalancer for PinLast {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
        backends.iter().rposition(|b| b.healthy)
    }
}

switchyard_sdk::export_lb!(PinLast);
