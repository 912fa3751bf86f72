//! A deliberately broken policy for the gateway's failure tests. `mode`
//! picks the failure; every select misbehaves that way.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// "trap", "trap-half" (every other call), "spin", "hog", "sleep"
    /// (30 s in a WASI clock wait), "out-of-range", "reject-config" or
    /// "sleep-configure" (30 s in `configure`).
    mode: String,
}

/// The plugin.
pub struct Misbehave {
    mode: String,
    hoard: Vec<Vec<u8>>,
    calls: u64,
}

impl LoadBalancer for Misbehave {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        match s.mode.as_str() {
            "reject-config" => Err("misbehave: this config is rejected on purpose".into()),
            "sleep-configure" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(Self { mode: s.mode, hoard: Vec::new(), calls: 0 })
            }
            "trap" | "trap-half" | "spin" | "hog" | "sleep" | "out-of-range" => Ok(Self { mode: s.mode, hoard: Vec::new(), calls: 0 }),
            other => Err(format!("unknown mode {other:?}")),
        }
    }

    fn select(&mut self, _req: &Request, backends: &[Backend], _live: &[LiveStat]) -> Option<usize> {
        self.calls += 1;
        match self.mode.as_str() {
            "trap" => panic!("misbehave: trapping on purpose"),
            // A trap loses the instance and the count starts again: each
            // instance answers once (a smoke call passes), then traps.
            "trap-half" if self.calls % 2 == 0 => panic!("misbehave: trapping on every other call"),
            "trap-half" => Some(0),
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Some(0)
            }
            "hog" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            _ => Some(backends.len() + 7),
        }
    }
}

switchyard_sdk::export_lb!(Misbehave);
