//! Load generators: open-loop Poisson arrivals and closed-loop users, on
//! keep-alive HTTP/1.1 connections ([`CartUser`]), every loop bounded in
//! count and time.
//!
//! Open loop: arrival times are drawn up front from a seeded Poisson
//! process, so every plugin gets the same load, and a request's latency is
//! measured from its *scheduled* time: a request that waits for a free
//! connection (at most `conns`) counts that wait, so a slow policy cannot
//! hide by slowing the load (no coordinated omission). Closed loop: `users`
//! clients each send back to back, as JMeter threads and the papers' users
//! do; latency is measured from the send.

use crate::CartUser;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};

/// How requests arrive.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Arrivals {
    /// Poisson arrivals at this many requests per second.
    Open { rate: f64 },
    /// This many users, each sending its next request when the last one answered.
    Closed { users: usize },
}

/// One load run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub arrivals: Arrivals,
    /// How long requests are started for.
    pub duration: Duration,
    /// Open loop: most connections at once.
    pub conns: usize,
    /// A request not answered within this is an error (status 0).
    pub timeout: Duration,
    /// Seeds the arrival times.
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Self { arrivals: Arrivals::Closed { users: 1 }, duration: Duration::from_secs(5), conns: 256, timeout: Duration::from_secs(5), seed: 1 }
    }
}

impl Plan {
    /// The plan of repetition `rep`: its own arrival times (every plugin
    /// of one repetition gets the same), so repetitions sample the load too.
    pub fn rep(&self, rep: usize) -> Self {
        Self { seed: self.seed.wrapping_add(rep as u64), ..self.clone() }
    }
}

/// What one request asks for.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub path: String,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
}

/// The request for (user, n): closed-loop user and its n-th request; in the
/// open loop user is 0 and n the arrival's index.
pub type Gen = Arc<dyn Fn(usize, usize) -> Target + Send + Sync>;

/// The same GET every time.
pub fn plain(path: &str) -> Gen {
    let path = path.to_string();
    Arc::new(move |_, _| Target { path: path.clone(), headers: String::new() })
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds from the run's start to the request's scheduled (open) or sent (closed) time.
    pub at: f64,
    pub latency_us: u64,
    /// 0: no answer (connection error, timeout, or the run's end).
    pub status: u16,
    /// The answering backend's `x-backend`.
    pub backend: String,
    /// The target's first header value (a key, a user), for affinity counts.
    pub key: String,
}

/// A finished run.
pub struct Outcome {
    pub samples: Vec<Sample>,
    /// Wall seconds from start to the last answer.
    pub secs: f64,
}

/// Run `plan` against `addr` on `rt`.
pub fn run(rt: &tokio::runtime::Runtime, addr: SocketAddr, plan: &Plan, gen: Gen) -> Outcome {
    let start = Instant::now() + Duration::from_millis(20);
    let mut samples = rt.block_on(async {
        match plan.arrivals {
            Arrivals::Open { rate } => open(addr, plan, rate, start, gen).await,
            Arrivals::Closed { users } => closed(addr, plan, users, start, gen).await,
        }
    });
    samples.sort_by(|a, b| a.at.total_cmp(&b.at));
    Outcome { samples, secs: start.elapsed().as_secs_f64() }
}

/// Arrival offsets of a Poisson process at `rate`/s over `duration`.
pub fn poisson(rate: f64, duration: Duration, seed: u64) -> Vec<Duration> {
    let gap = Exp::new(rate).expect("rate > 0");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        t += gap.sample(&mut rng);
        if t >= duration.as_secs_f64() {
            return out;
        }
        out.push(Duration::from_secs_f64(t));
    }
}

async fn open(addr: SocketAddr, plan: &Plan, rate: f64, start: Instant, gen: Gen) -> Vec<Sample> {
    let schedule = poisson(rate, plan.duration, plan.seed);
    let end = start + plan.duration + plan.timeout;
    let (tx, rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..plan.conns.min(schedule.len()).max(1))
        .map(|_| {
            let (rx, gen, timeout) = (rx.clone(), gen.clone(), plan.timeout);
            tokio::spawn(async move {
                let mut user = CartUser::new(addr);
                let mut out = Vec::new();
                loop {
                    let Some((n, due)) = rx.lock().await.recv().await else { return out };
                    out.push(one(&mut user, &gen(0, n), start, due, timeout, end).await);
                }
            })
        })
        .collect();
    for (n, off) in schedule.into_iter().enumerate() {
        tokio::time::sleep_until((start + off).into()).await;
        let _ = tx.send((n, start + off));
    }
    drop(tx);
    collect(workers).await
}

async fn closed(addr: SocketAddr, plan: &Plan, users: usize, start: Instant, gen: Gen) -> Vec<Sample> {
    let until = start + plan.duration;
    let end = until + plan.timeout;
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let (gen, timeout) = (gen.clone(), plan.timeout);
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut user = CartUser::new(addr);
                let mut out = Vec::new();
                for n in 0.. {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    out.push(one(&mut user, &gen(u, n), start, now, timeout, end).await);
                }
                out
            })
        })
        .collect();
    collect(tasks).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

/// One request due at `due`, given up at `timeout` or the run's `end`.
async fn one(user: &mut CartUser, target: &Target, start: Instant, due: Instant, timeout: Duration, end: Instant) -> Sample {
    let key = target.headers.split_once(':').map_or("", |(_, v)| v.lines().next().unwrap_or("").trim()).to_string();
    let at = due.saturating_duration_since(start).as_secs_f64();
    let left = end.saturating_duration_since(Instant::now()).min(timeout);
    user.headers.clone_from(&target.headers);
    let status = match tokio::time::timeout(left, user.send("GET", &target.path)).await {
        Ok(Ok(status)) => status,
        _ => {
            user.reset();
            0
        }
    };
    let backend = if status == 0 { String::new() } else { user.backend.clone() };
    Sample { at, latency_us: due.elapsed().as_micros() as u64, status, backend, key }
}

/// Latency and error figures of a set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub requests: usize,
    /// Answers other than 200, and no answers.
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// p50 / p99 of every answered request (HDR histogram, 3 significant digits).
pub fn summary(samples: &[Sample]) -> Summary {
    let (p50_ms, p99_ms, mean_ms) = percentiles(samples.iter().filter(|s| s.status != 0).map(|s| s.latency_us));
    Summary { requests: samples.len(), errors: samples.iter().filter(|s| s.status != 200).count(), p50_ms, p99_ms, mean_ms }
}

/// (p50, p99, mean) in ms of latencies in µs, through an HDR histogram.
pub fn percentiles(latencies_us: impl IntoIterator<Item = u64>) -> (f64, f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for us in latencies_us {
        h.saturating_record(us.max(1));
    }
    if h.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.5), ms(0.99), h.mean() / 1000.0)
}
