//! Capacity-model HTTP backends: a fixed number of workers and a service-time
//! distribution each, so queues form as on the papers' servers.
//!
//! A request waits for a worker (a semaphore permit), then holds it for a
//! sampled service time (`tokio::time::sleep`: queues form without burning
//! the CPU the gateway needs). Each server counts requests, busy time and
//! its longest queue; it can fail a share of requests (500) and turn slow at
//! a time after [`Farm::reset`].

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long one request holds a worker.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Service {
    /// Always the same.
    Fixed { ms: f64 },
    /// Exponential with this mean (M/M/c servers).
    Exp { mean_ms: f64 },
    /// Log-normal with this mean and shape (a long tail: writes, I/O).
    LogNormal { mean_ms: f64, sigma: f64 },
}

impl Service {
    /// Mean service time in ms.
    pub fn mean_ms(self) -> f64 {
        match self {
            Self::Fixed { ms } => ms,
            Self::Exp { mean_ms } | Self::LogNormal { mean_ms, .. } => mean_ms,
        }
    }

    fn sample(self, rng: &mut StdRng) -> f64 {
        match self {
            Self::Fixed { ms } => ms,
            Self::Exp { mean_ms } => Exp::new(1.0 / mean_ms).expect("mean > 0").sample(rng),
            Self::LogNormal { mean_ms, sigma } => {
                // mean = exp(mu + sigma^2 / 2)
                LogNormal::new(mean_ms.ln() - sigma * sigma / 2.0, sigma).expect("sigma >= 0").sample(rng)
            }
        }
    }

    /// For the report's parameter table.
    pub fn describe(self) -> String {
        match self {
            Self::Fixed { ms } => format!("fixed {ms} ms"),
            Self::Exp { mean_ms } => format!("exponential, mean {mean_ms} ms"),
            Self::LogNormal { mean_ms, sigma } => format!("log-normal, mean {mean_ms} ms, sigma {sigma}"),
        }
    }
}

/// One server's capacity model.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub name: String,
    pub workers: usize,
    pub service: Service,
    /// Share of requests answered 500 (after their service time).
    pub fail: f64,
    /// From this long after [`Farm::reset`], service times are multiplied by `slow_factor`.
    pub slow_at: Option<Duration>,
    pub slow_factor: f64,
}

impl Model {
    /// A healthy server.
    pub fn new(name: &str, workers: usize, service: Service) -> Self {
        Self { name: name.into(), workers, service, fail: 0.0, slow_at: None, slow_factor: 1.0 }
    }

    /// Requests per second it sustains at full use.
    pub fn capacity(&self) -> f64 {
        self.workers as f64 * 1000.0 / self.service.mean_ms()
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let mut s = format!("{} workers, {} (capacity {:.0} req/s)", self.workers, self.service.describe(), self.capacity());
        if self.fail > 0.0 {
            s += &format!(", fails {:.1}% (500)", self.fail * 100.0);
        }
        if let Some(at) = self.slow_at {
            s += &format!(", {}x slower from {:.1} s", self.slow_factor, at.as_secs_f64());
        }
        s
    }
}

/// What a server did since the last reset.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub served: u64,
    pub failed: u64,
    /// Sum of the times workers were held, µs.
    pub busy_us: u64,
    /// Longest line of requests waiting for a worker.
    pub max_queue: u64,
}

struct Server {
    model: Model,
    addr: SocketAddr,
    workers: Semaphore,
    seed: u64,
    rng: Mutex<StdRng>,
    epoch: Mutex<Instant>,
    served: AtomicU64,
    failed: AtomicU64,
    busy_us: AtomicU64,
    waiting: AtomicU64,
    max_queue: AtomicU64,
    in_flight: AtomicU64,
    /// Seconds from the reset to each request's arrival.
    arrivals: Mutex<Vec<f64>>,
}

impl Server {
    fn stats(&self) -> Stats {
        Stats {
            served: self.served.load(Relaxed),
            failed: self.failed.load(Relaxed),
            busy_us: self.busy_us.load(Relaxed),
            max_queue: self.max_queue.load(Relaxed),
        }
    }

    fn reset(&self) {
        for c in [&self.served, &self.failed, &self.busy_us, &self.max_queue] {
            c.store(0, Relaxed);
        }
        *self.epoch.lock().expect("epoch") = Instant::now();
        self.arrivals.lock().expect("arrivals").clear();
        // Every run draws the same service times in the same order.
        *self.rng.lock().expect("rng") = StdRng::seed_from_u64(self.seed);
    }

    /// Queue for a worker, hold it for a service time; the status.
    async fn serve(&self) -> u16 {
        let since = self.epoch.lock().expect("epoch").elapsed().as_secs_f64();
        self.arrivals.lock().expect("arrivals").push(since);
        let _in_flight = Count::up(&self.in_flight);
        let waiting = Count::up(&self.waiting);
        self.max_queue.fetch_max(waiting.1, Relaxed);
        let permit = self.workers.acquire().await.expect("never closed");
        drop(waiting);
        let (ms, fail) = {
            let mut rng = self.rng.lock().expect("rng");
            let slow = self.model.slow_at.is_some_and(|at| self.epoch.lock().expect("epoch").elapsed() >= at);
            let factor = if slow { self.model.slow_factor } else { 1.0 };
            (self.model.service.sample(&mut rng) * factor, rand::Rng::random_bool(&mut *rng, self.model.fail))
        };
        // Busy time is the time the worker was held: the timer rounds
        // sleeps up to the next millisecond, and that is service too.
        let held = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
        drop(permit);
        self.busy_us.fetch_add(held.elapsed().as_micros() as u64, Relaxed);
        self.served.fetch_add(1, Relaxed);
        self.failed.fetch_add(u64::from(fail), Relaxed);
        if fail { 500 } else { 200 }
    }
}

/// A gauge held up while alive (the request may be cancelled at any await).
struct Count<'a>(&'a AtomicU64, u64);

impl<'a> Count<'a> {
    fn up(c: &'a AtomicU64) -> Self {
        Self(c, c.fetch_add(1, Relaxed) + 1)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Backends running on their own runtime, stopped on drop.
pub struct Farm {
    servers: Vec<Arc<Server>>,
    rt: tokio::runtime::Runtime,
}

impl Farm {
    /// Start one server per model on a free loopback port; `seed` makes
    /// their service times repeatable.
    pub fn start(models: &[Model], seed: u64) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("bench-backend").enable_all().build()?;
        let servers = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
                let seed = seed.wrapping_mul(1000).wrapping_add(i as u64);
                let server = Arc::new(Server {
                    model: m.clone(),
                    addr: listener.local_addr()?,
                    workers: Semaphore::new(m.workers),
                    seed,
                    rng: Mutex::new(StdRng::seed_from_u64(seed)),
                    epoch: Mutex::new(Instant::now()),
                    served: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    busy_us: AtomicU64::new(0),
                    waiting: AtomicU64::new(0),
                    max_queue: AtomicU64::new(0),
                    in_flight: AtomicU64::new(0),
                    arrivals: Mutex::new(Vec::new()),
                });
                rt.spawn(accept(listener, server.clone()));
                Ok(server)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { servers, rt })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// Zero the counters, restart the clock of `slow_at` and the service-time draws.
    pub fn reset(&self) {
        self.servers.iter().for_each(|s| s.reset());
    }

    pub fn stats(&self) -> Vec<Stats> {
        self.servers.iter().map(|s| s.stats()).collect()
    }

    /// Per server, when requests arrived (seconds since the reset): where
    /// the gateway sent them, whether or not they were answered in time.
    pub fn arrivals(&self) -> Vec<Vec<f64>> {
        self.servers.iter().map(|s| s.arrivals.lock().expect("arrivals").clone()).collect()
    }

    /// Wait (at most `max`) until no request is queued or in service, so a
    /// run does not inherit the last one's queue.
    pub fn wait_idle(&self, max: Duration) -> bool {
        let until = Instant::now() + max;
        while self.servers.iter().any(|s| s.in_flight.load(Relaxed) > 0) {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The runtime the servers run on (tests drive load from it).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

async fn accept(listener: TcpListener, server: Arc<Server>) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, server.clone()));
    }
}

/// Keep-alive HTTP/1.1: `/healthz` answers at once, anything else queues.
async fn connection(stream: TcpStream, server: Arc<Server>) -> std::io::Result<()> {
    let mut conn = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (len, close) = read_headers(&mut conn).await?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        let status = if path == "/healthz" {
            200
        } else {
            // A client that gave up (the gateway closed the connection)
            // leaves the queue, so a run does not leave work for the next.
            tokio::select! {
                status = server.serve() => status,
                () = peer_gone(&mut conn) => return Ok(()),
            }
        };
        let name = &server.model.name;
        let reason = if status == 200 { "OK" } else { "Internal Server Error" };
        let head = format!("HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {name}\r\n\r\n{name}\n", name.len() + 1);
        conn.get_mut().write_all(head.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

/// Resolves when the peer closes the connection (not on pipelined data).
async fn peer_gone(conn: &mut BufReader<TcpStream>) {
    if matches!(conn.fill_buf().await, Ok([]) | Err(_)) {
        return;
    }
    std::future::pending().await
}

/// (content-length, connection: close) of a request head.
async fn read_headers(conn: &mut BufReader<TcpStream>) -> std::io::Result<(usize, bool)> {
    let (mut len, mut close) = (0, false);
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let Some((k, v)) = line.trim_end().split_once(':') else { return Ok((len, close)) };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().unwrap_or(0);
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::{self, Arrivals, Plan};

    /// p50 latency in ms of `users` closed-loop clients on one server.
    fn p50_ms(farm: &Farm, users: usize) -> f64 {
        let plan = Plan { arrivals: Arrivals::Closed { users }, duration: Duration::from_millis(1500), ..Plan::default() };
        let out = load::run(farm.runtime(), farm.addrs()[0], &plan, load::plain("/"));
        load::summary(&out.samples).p50_ms
    }

    #[test]
    fn a_server_queues_past_its_workers() {
        let service = 20.0;
        let farm = Farm::start(&[Model::new("q", 2, Service::Fixed { ms: service })], 1).unwrap();
        let alone = p50_ms(&farm, 1);
        assert!(farm.wait_idle(Duration::from_secs(5)));
        let crowded = p50_ms(&farm, 8);
        assert!(alone < 2.0 * service, "1 client: p50 {alone:.1} ms");
        assert!(crowded >= 2.0 * service, "8 clients on 2 workers: p50 {crowded:.1} ms");
        assert!(farm.stats()[0].max_queue >= 4, "{:?}", farm.stats());
    }
}
