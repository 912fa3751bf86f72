//! Per-backend live stats: in-flight count, peak-EWMA latency, decaying
//! error rate, and the health flags of active and passive checks.

use crate::config::HealthSection;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
}

/// Shared, lock-light stats of one backend.
#[derive(Debug)]
pub struct BackendStats {
    active: AtomicU32,
    consecutive_failures: AtomicU32,
    active_up: AtomicBool,
    healthy: AtomicBool,
    window: Mutex<Window>,
}

impl Default for BackendStats {
    fn default() -> Self {
        Self {
            active: AtomicU32::new(0),
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
        let w = self.window.lock();
        let age = w.last.map(|t| t.elapsed());
        let decay = age.map_or(0.0, |a| (-a.as_secs_f64() / TAU.as_secs_f64()).exp());
        LiveStat {
            active: self.active(),
            ewma_us: w.ewma_us.round() as u32,
            age_ms: age.map_or(u32::MAX, |a| a.as_millis().min(u128::from(u32::MAX - 1)) as u32),
            error_permille: (w.error_rate * decay * 1000.0).round() as u32,
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
        if !failed {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= health.max_failures && self.is_healthy() {
            w.ejected_until = Some(now + Duration::from_millis(health.eject_ms));
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

    /// Recompute health from the active verdict and any passive ejection;
    /// returns true if it changed.
    pub fn refresh(&self) -> bool {
        let mut w = self.window.lock();
        if w.ejected_until.is_some_and(|t| t <= Instant::now()) {
            w.ejected_until = None;
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let healthy = self.active_up.load(Ordering::Relaxed) && w.ejected_until.is_none();
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
    fn ejection_ends_after_eject_ms() {
        let s = BackendStats::default();
        let h = HealthSection { max_failures: 1, eject_ms: 0, ..Default::default() };
        assert!(s.observe(Duration::ZERO, true, &h));
        assert!(!s.is_healthy());
        assert!(s.refresh());
        assert!(s.is_healthy());
    }
}
