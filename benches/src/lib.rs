//! Shared helpers for the benches: timing loops, process figures, the
//! keep-alive cart user, and `switchyard bench` ([`bench`]).

pub mod bench;

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

/// utime + stime of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// CPU seconds (user + system) of this process's children that were
/// waited for (a load generator run with `Command::output`, say).
pub fn children_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().skip(13).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A cart user: one keep-alive connection and a cookie jar.
pub struct CartUser {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Cookies the gateway set.
    pub cookies: BTreeMap<String, String>,
    /// Extra request header lines, each ending in `\r\n`.
    pub headers: String,
    /// The last response's `x-backend` (which server answered).
    pub backend: String,
}

impl CartUser {
    /// A user with an empty cookie jar, not yet connected.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None, cookies: BTreeMap::new(), headers: String::new(), backend: String::new() }
    }

    /// Drop the connection (after an error or a timeout): the next request opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// One request on the user's keep-alive connection; its status.
    pub async fn send(&mut self, method: &str, path: &str) -> std::io::Result<u16> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let c = self.conn.as_mut().expect("connected");
        self.backend.clear();
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
        let req = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n{cookie}{}Content-Length: 0\r\n\r\n", self.headers);
        c.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        c.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            line.clear();
            c.read_line(&mut line).await?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            } else if k.eq_ignore_ascii_case("x-backend") {
                self.backend = v.to_string();
            } else if k.eq_ignore_ascii_case("set-cookie") {
                if let Some((name, value)) = v.split(';').next().and_then(|p| p.split_once('=')) {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        let mut body = vec![0; len];
        c.read_exact(&mut body).await?;
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

/// When a user stops (`until`: no request starts after it) and which of
/// its requests count: those that start after `from` and end by
/// `counted_until` (`None`: whenever they end). `every`: each of the
/// `users` starts a request at most this often (a paced load), else as
/// soon as the last one answered.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
    counted_until: Option<Instant>,
    every: Option<Duration>,
    users: usize,
}

/// The cart scenario, closed-loop until the window ends or `steps`
/// requests; latencies in µs of the requests inside the window, and the
/// failures among them.
async fn user_loop(addr: SocketAddr, id: usize, w: Window, steps: usize) -> (Vec<u32>, usize) {
    let mut u = CartUser::new(addr);
    let (mut lat, mut errors) = (Vec::new(), 0);
    let mut step = 0usize;
    // A paced user's slots are spread over the interval by its id, so the
    // users do not all send at once.
    let mut slot = w.every.map(|e| Instant::now() + e.mul_f64(id as f64 / w.users.max(1) as f64));
    while step < steps && Instant::now() < w.until {
        if let (Some(at), Some(every)) = (slot.as_mut(), w.every) {
            tokio::time::sleep_until((*at).into()).await;
            // Late (the last request took longer than the interval): go now,
            // without sending the missed ones in a burst.
            *at = (*at + every).max(Instant::now());
        }
        let path = match step % 7 {
            0 => format!("/cart/login?user=u{id}"),
            6 => "/cart".to_string(),
            n => format!("/cart/add?item=i{n}"),
        };
        let method = if step % 7 == 6 { "GET" } else { "POST" };
        let t = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(10), u.send(method, &path)).await;
        let counted = t >= w.from && w.counted_until.is_none_or(|end| Instant::now() <= end);
        match out {
            Ok(Ok(200)) if counted => lat.push(t.elapsed().as_micros() as u32),
            Ok(Ok(200)) => {}
            _ => {
                errors += usize::from(counted);
                u.reset();
            }
        }
        step += 1;
    }
    (lat, errors)
}

/// `users` closed-loop cart users for `run`, user `i` on `addrs[i % n]`;
/// (sorted latencies in µs, failed requests, seconds).
pub fn cart_load(rt: &tokio::runtime::Runtime, addrs: &[SocketAddr], users: usize, run: Duration) -> (Vec<u32>, usize, f64) {
    cart_users(rt, addrs, users, run, usize::MAX)
}

/// As [`cart_load`], each user stopping after `steps` requests (or after
/// `run`, whichever comes first): a load of a known count.
pub fn cart_users(rt: &tokio::runtime::Runtime, addrs: &[SocketAddr], users: usize, run: Duration, steps: usize) -> (Vec<u32>, usize, f64) {
    let start = Instant::now();
    // Every request counts, also those still running when `run` ends.
    let w = Window { from: start, until: start + run, counted_until: None, every: None, users };
    let (lat, errors) = run_users(rt, addrs, users, w, steps);
    (lat, errors, start.elapsed().as_secs_f64())
}

/// The steady state of `users` cart users: they connect, log in and run
/// for `warm + run` without stopping, and only what happens in the last
/// `run` counts: the requests that started and ended in it, and `probe`
/// (say, the servers' CPU seconds) read at its start and its end. So
/// neither the connects and first logins of every user at once nor the
/// last requests' drain are measured. `rate`: all users together send at
/// most this many requests a second (each paced to `users / rate` s), so
/// servers of different speed can be compared at the same load; `None`:
/// closed loop. (sorted latencies in µs, failed requests, `run` in
/// seconds, `probe` at the end less at the start).
pub fn cart_steady(rt: &tokio::runtime::Runtime, addrs: &[SocketAddr], users: usize, rate: Option<f64>, (warm, run): (Duration, Duration), probe: impl Fn() -> f64 + Send + 'static) -> (Vec<u32>, usize, f64, f64) {
    let from = Instant::now() + warm;
    let every = rate.map(|r| Duration::from_secs_f64(users as f64 / r));
    let w = Window { from, until: from + run, counted_until: Some(from + run), every, users };
    let probed = rt.spawn(async move {
        tokio::time::sleep_until(w.from.into()).await;
        let before = probe();
        tokio::time::sleep_until(w.until.into()).await;
        probe() - before
    });
    let (lat, errors) = run_users(rt, addrs, users, w, usize::MAX);
    let probed = rt.block_on(probed).expect("probe task");
    (lat, errors, run.as_secs_f64(), probed)
}

/// Run the users to the end of `w`; their counted latencies, sorted, and failures.
fn run_users(rt: &tokio::runtime::Runtime, addrs: &[SocketAddr], users: usize, w: Window, steps: usize) -> (Vec<u32>, usize) {
    let (mut lat, errors) = rt.block_on(async {
        let tasks: Vec<_> = (0..users).map(|i| tokio::spawn(user_loop(addrs[i % addrs.len()], i, w, steps))).collect();
        let (mut lat, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.expect("user task");
            lat.extend(l);
            errors += e;
        }
        (lat, errors)
    });
    lat.sort_unstable();
    (lat, errors)
}
