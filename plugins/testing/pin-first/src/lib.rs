//! Test plugin: always the first healthy backend. With `pin-last` it makes
//! two versions whose answers tell them apart in hot-swap tests.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

pub struct PinFirst;

impl LoadBalancer for PinFirst {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
        // A plugin-defined metric: `/metrics` shows it with this plugin's name.
        switchyard_sdk::host::counter_add("picks", 1);
        backends.iter().position(|b| b.healthy)
    }
}

switchyard_sdk::export_lb!(PinFirst);
