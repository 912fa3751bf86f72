//! Per-backend live stats: in-flight count, peak-EWMA latency, decaying
//! error rate, and the health flags of active and passive checks.

use crate::config::HealthSection;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Time constant of the latency and error averages.
const TAU: Duration = Duration::from_secs(10);
/// Weight of one new sample in the error-rate average.
const ERROR_ALPHA: f64 = 0.2;

/// The compact per-call view a policy gets of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStat {
    pub active: u32,
    pub ewma_us: u32,
    pub age_ms: u32,
    pub error_permille: u32,
}

#[derive(Debug, Default)]
struct Window {
    ewma_us: f64,
    error_rate: f64,
    last: Option<Instant>,
    ejected_until: Option<Instant>,
    /// Good probes in a row since `eject_ms` ended; `Some` until there
    /// are `rise` of them (or the health loop, with no active check, ends it).
    probation: Option<u32>,
}

/// Nanoseconds since the first call: a cheap monotonic clock for stats.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +1 so that 0 can mean "never".
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// A cheap per-thread xorshift draw (no system call per request): for
/// sampling and splits, not for secrets.
pub fn draw() -> u64 {
    thread_local!(static STATE: std::cell::Cell<u64> = std::cell::Cell::new(now_ns() | 1));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Shared, lock-light stats of one backend. Writers (one per response)
/// take the window lock; readers (one per Wasm decision, per backend) only
/// load the published atomics.
#[derive(Debug)]
pub struct BackendStats {
    active: AtomicU32,
    published_ewma_us: AtomicU32,
    /// Error rate in parts per million at the time of `published_at`.
    published_error_ppm: AtomicU32,
    /// `now_ns()` of the last sample; 0 = never measured.
    published_at: AtomicU64,
    consecutive_failures: AtomicU32,
    active_up: AtomicBool,
    healthy: AtomicBool,
    window: Mutex<Window>,
}

impl Default for BackendStats {
    fn default() -> Self {
        Self {
            active: AtomicU32::new(0),
            published_ewma_us: AtomicU32::new(0),
            published_error_ppm: AtomicU32::new(0),
            published_at: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            active_up: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
            window: Mutex::default(),
        }
    }
}

impl BackendStats {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Failures in a row since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// A request started; the guard ends it when dropped.
    pub fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// The per-call view, with averages decayed to now.
    pub fn live(&self) -> LiveStat {
        self.live_at(now_ns())
    }

    /// As [`Self::live`], at `now` (from [`now_ns`]), without locking.
    pub fn live_at(&self, now: u64) -> LiveStat {
        let at = self.published_at.load(Ordering::Acquire);
        let active = self.active();
        if at == 0 {
            return LiveStat { active, ewma_us: 0, age_ms: u32::MAX, error_permille: 0 };
        }
        let age_ns = now.saturating_sub(at);
        let ppm = self.published_error_ppm.load(Ordering::Relaxed);
        let error_permille = if ppm == 0 {
            0
        } else {
            let decay = (-(age_ns as f64) / TAU.as_nanos() as f64).exp();
            (f64::from(ppm) * decay / 1000.0).round() as u32
        };
        LiveStat {
            active,
            ewma_us: self.published_ewma_us.load(Ordering::Relaxed),
            age_ms: (age_ns / 1_000_000).min(u64::from(u32::MAX - 1)) as u32,
            error_permille,
        }
    }

    /// Record one response (or connect failure). Returns true if this
    /// failure ejected the backend.
    pub fn observe(&self, latency: Duration, failed: bool, health: &HealthSection) -> bool {
        let now = Instant::now();
        let mut w = self.window.lock();
        let decay = w.last.map_or(0.0, |t| (-(now - t).as_secs_f64() / TAU.as_secs_f64()).exp());
        let sample = latency.as_secs_f64() * 1e6;
        // Peak EWMA: jump up at once on a slow sample, ease down over TAU.
        w.ewma_us = if sample > w.ewma_us || w.last.is_none() { sample } else { w.ewma_us * decay + sample * (1.0 - decay) };
        w.error_rate = w.error_rate * decay * (1.0 - ERROR_ALPHA) + if failed { ERROR_ALPHA } else { 0.0 };
        w.last = Some(now);
        self.published_ewma_us.store(w.ewma_us.round().min(f64::from(u32::MAX)) as u32, Ordering::Relaxed);
        self.published_error_ppm.store((w.error_rate * 1e6).round() as u32, Ordering::Relaxed);
        self.published_at.store(now_ns(), Ordering::Release);
        if !failed {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= health.max_failures && self.is_healthy() {
            w.ejected_until = Some(now + Duration::from_millis(health.eject_ms));
            w.probation = Some(0);
            self.healthy.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Set the verdict of active checks; returns true if health changed.
    pub fn set_active_up(&self, up: bool) -> bool {
        self.active_up.store(up, Ordering::Relaxed);
        self.refresh()
    }

    /// Count one active probe (`None`: the upstream has no active check)
    /// towards ending a passive ejection: after `eject_ms`, `rise` good
    /// probes in a row end it; probes during `eject_ms` do not count.
    pub fn count_probe(&self, ok: Option<bool>, rise: u32) {
        let mut w = self.window.lock();
        if w.ejected_until.is_some_and(|t| t <= Instant::now()) {
            w.ejected_until = None;
        }
        if w.ejected_until.is_some() {
            return;
        }
        w.probation = match (w.probation, ok) {
            (None, _) | (Some(_), None) => None,
            (Some(n), Some(true)) => (n + 1 < rise).then_some(n + 1),
            (Some(_), Some(false)) => Some(0),
        };
        if w.probation.is_none() {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Recompute health from the active verdict and any passive ejection;
    /// returns true if it changed.
    pub fn refresh(&self) -> bool {
        let w = self.window.lock();
        let healthy = self.active_up.load(Ordering::Relaxed) && w.ejected_until.is_none() && w.probation.is_none();
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_eases_down() {
        let s = BackendStats::default();
        let h = HealthSection::default();
        s.observe(Duration::from_millis(1), false, &h);
        assert_eq!(s.live().ewma_us, 1000);
        s.observe(Duration::from_millis(9), false, &h);
        assert_eq!(s.live().ewma_us, 9000);
        s.observe(Duration::from_millis(1), false, &h);
        // Samples microseconds apart barely move a 10 s average down.
        assert!(s.live().ewma_us > 8000);
    }

    #[test]
    fn unmeasured_backend_reports_max_age() {
        let l = BackendStats::default().live();
        assert_eq!((l.ewma_us, l.age_ms, l.error_permille), (0, u32::MAX, 0));
    }

    #[test]
    fn errors_raise_the_rate() {
        let s = BackendStats::default();
        let h = HealthSection { max_failures: 100, ..Default::default() };
        for _ in 0..20 {
            s.observe(Duration::from_micros(50), true, &h);
        }
        assert!(s.live().error_permille > 900, "{:?}", s.live());
    }

    #[test]
    fn an_ejection_lasts_eject_ms_then_rise_good_probes() {
        let s = BackendStats::default();
        let h = HealthSection { max_failures: 1, eject_ms: 60_000, ..Default::default() };
        assert!(s.observe(Duration::ZERO, true, &h));
        for _ in 0..5 {
            s.count_probe(Some(true), 2);
        }
        s.refresh();
        assert!(!s.is_healthy(), "probes during eject_ms do not count");
        let s = BackendStats::default();
        let h = HealthSection { max_failures: 1, eject_ms: 0, ..Default::default() };
        assert!(s.observe(Duration::ZERO, true, &h));
        assert!(!s.refresh(), "eject_ms alone does not bring it back");
        s.count_probe(Some(true), 2);
        assert!(!s.refresh());
        s.count_probe(Some(true), 2);
        assert!(s.refresh());
        assert!(s.is_healthy());
    }
}
