//! Consistent hashing on the client IP, a header or a cookie, over a ring of
//! virtual nodes, with a bounded-load cap (Mirrokni et al.): a key goes to
//! the first backend clockwise whose load is under `load_factor` times the
//! average, so one hot key cannot swamp a backend.

use switchyard_sdk::lb::{Backend, LiveStat, LoadBalancer, Request};
use switchyard_sdk::Config;
use xxhash_rust::xxh3::xxh3_64;

/// Where the hash key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// The client's IP address.
    ClientIp,
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
}

impl KeySource {
    fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "client-ip" => Ok(Self::ClientIp),
            Some(("header", name)) if !name.is_empty() => Ok(Self::Header(name.to_string())),
            Some(("cookie", name)) if !name.is_empty() => Ok(Self::Cookie(name.to_string())),
            _ => Err(format!("key = {s:?}: expected \"client-ip\", \"header:NAME\" or \"cookie:NAME\"")),
        }
    }
}

/// The hash ring: sorted `(point, backend)` pairs.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// `vnodes` points per unit of weight for each backend, placed by address
    /// so a backend keeps its points when others come or go.
    pub fn build<'a>(backends: impl Iterator<Item = (&'a str, u32)>, vnodes: u32) -> Self {
        let mut points = Vec::new();
        for (i, (address, weight)) in backends.enumerate() {
            for v in 0..vnodes * weight.max(1) {
                points.push((xxh3_64(format!("{address}#{v}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The first backend clockwise from `hash` that `accept` takes.
    pub fn lookup(&self, hash: u64, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        let start = self.points.partition_point(|&(p, _)| p < hash);
        (0..n).map(|k| self.points[(start + k) % n].1).find(|&b| accept(b))
    }
}

/// Largest in-flight count a backend may have to take one more request.
pub fn load_cap(load_factor: f64, total_active: u64, healthy: usize) -> u64 {
    ((load_factor * (total_active + 1) as f64) / healthy.max(1) as f64).ceil() as u64
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    key: String,
    vnodes: u32,
    load_factor: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { key: "client-ip".into(), vnodes: 160, load_factor: 1.25 }
    }
}

/// The plugin.
pub struct ConsistentHash {
    key: KeySource,
    vnodes: u32,
    load_factor: f64,
    ring: Ring,
}

impl ConsistentHash {
    fn key_of(&self, req: &Request) -> Option<String> {
        match &self.key {
            KeySource::ClientIp => req.client_ip(),
            KeySource::Header(h) => req.header(h).or_else(|| req.client_ip()),
            KeySource::Cookie(c) => req.cookie(c).or_else(|| req.client_ip()),
        }
    }
}

impl LoadBalancer for ConsistentHash {
    const NEEDS_LIVE_STATS: bool = true;

    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.vnodes == 0 || s.vnodes > 10_000 {
            return Err(format!("vnodes = {}: expected 1..=10000", s.vnodes));
        }
        if s.load_factor != 0.0 && s.load_factor < 1.0 {
            return Err(format!("load_factor = {}: expected 0 (no cap) or >= 1.0", s.load_factor));
        }
        Ok(Self { key: KeySource::parse(&s.key)?, vnodes: s.vnodes, load_factor: s.load_factor, ring: Ring::default() })
    }

    fn backends_changed(&mut self, backends: &[Backend]) {
        self.ring = Ring::build(backends.iter().map(|b| (b.address.as_str(), b.weight)), self.vnodes);
    }

    fn select(&mut self, req: &Request, backends: &[Backend], live: &[LiveStat]) -> Option<usize> {
        let hash = xxh3_64(self.key_of(req).unwrap_or_default().as_bytes());
        let healthy = backends.iter().filter(|b| b.healthy).count();
        let cap = if self.load_factor == 0.0 || live.len() != backends.len() {
            u64::MAX
        } else {
            load_cap(self.load_factor, live.iter().map(|l| u64::from(l.active)).sum(), healthy)
        };
        let under_cap = |b: usize| backends[b].healthy && live.get(b).is_none_or(|l| u64::from(l.active) < cap);
        self.ring.lookup(hash, under_cap).or_else(|| self.ring.lookup(hash, |b| backends[b].healthy))
    }
}

switchyard_sdk::export_lb!(ConsistentHash);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn owner(ring: &Ring, key: u64) -> usize {
        ring.lookup(xxh3_64(&key.to_le_bytes()), |_| true).unwrap()
    }

    #[test]
    fn key_sources_parse() {
        assert_eq!(KeySource::parse("client-ip"), Ok(KeySource::ClientIp));
        assert_eq!(KeySource::parse("header:x-user"), Ok(KeySource::Header("x-user".into())));
        assert!(KeySource::parse("header:").is_err());
        assert!(KeySource::parse("ip").unwrap_err().contains("client-ip"));
    }

    #[test]
    fn bounded_load_skips_a_full_backend() {
        let a = addrs(3);
        let ring = Ring::build(a.iter().map(|s| (s.as_str(), 1)), 160);
        let active = [10u64, 0, 0];
        let cap = load_cap(1.25, active.iter().sum(), 3);
        for key in 0..1000u64 {
            let b = ring.lookup(xxh3_64(&key.to_le_bytes()), |b| active[b] < cap).unwrap();
            assert_ne!(b, 0, "backend 0 is over the cap {cap}");
        }
    }

    #[test]
    fn spread_is_even_enough() {
        let a = addrs(4);
        let ring = Ring::build(a.iter().map(|s| (s.as_str(), 1)), 160);
        let mut counts = [0u32; 4];
        for key in 0..40_000u64 {
            counts[owner(&ring, key)] += 1;
        }
        assert!(counts.iter().all(|&c| (7_000..13_000).contains(&c)), "{counts:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Adding a backend moves about 1/N of the keys, all of them to it.
        #[test]
        fn adding_a_backend_moves_about_one_nth(n in 2usize..12) {
            let before_addrs = addrs(n);
            let after_addrs = addrs(n + 1);
            let before = Ring::build(before_addrs.iter().map(|s| (s.as_str(), 1)), 160);
            let after = Ring::build(after_addrs.iter().map(|s| (s.as_str(), 1)), 160);
            let keys = 20_000u64;
            let mut moved = 0;
            for key in 0..keys {
                let (b, a) = (owner(&before, key), owner(&after, key));
                if a != b {
                    prop_assert_eq!(a, n, "a key moved between old backends");
                    moved += 1;
                }
            }
            let share = moved as f64 / keys as f64;
            let ideal = 1.0 / (n + 1) as f64;
            prop_assert!((share - ideal).abs() < ideal * 0.35, "moved {share:.3}, ideal {ideal:.3}");
        }
    }
}
