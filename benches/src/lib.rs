//! Shared helpers for the benches: timing loops and report formatting.

use std::time::Instant;

/// Median nanoseconds per call of `f`, over `batches` batches of `per` calls.
pub fn median_ns(batches: usize, per: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per {
                f();
            }
            t.elapsed().as_nanos() as f64 / per as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}
