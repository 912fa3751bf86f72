//! The access log (`[log]`): a line per HTTP request, built on the proxy
//! worker and handed to one writer thread through a bounded queue. A full
//! queue drops the line and counts it; the request never waits. SIGUSR1
//! reopens the file (logrotate's `postrotate`).

pub(crate) mod line;

pub use line::Record;

use crate::config::{Field, LogFormat, LogSpec};
use crate::error::Error;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the writer drains the queue. Workers never wake it: a line
/// costs them a `try_send`, and the writer writes a batch per round.
const ROUND: Duration = Duration::from_millis(10);

/// The access log of a running gateway.
pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
    fields: Box<[Field]>,
    sample: f64,
}

impl AccessLog {
    /// Open the destination, start the writer thread and watch SIGUSR1.
    pub fn start(spec: &LogSpec) -> Result<Arc<Self>, Error> {
        let out = open(spec.path.as_ref()).map_err(|e| Error::internal(format!("log.path: {e}")))?;
        let reopen = Arc::new(AtomicBool::new(false));
        if spec.path.is_some() {
            on_sigusr1(reopen.clone())?;
        }
        let (tx, rx) = sync_channel(spec.queue);
        let path = spec.path.clone();
        std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || write_loop(rx, out, path, reopen))
            .map_err(|e| Error::internal(format!("access log writer: {e}")))?;
        Ok(Arc::new(Self { tx, format: spec.format, fields: spec.fields.clone().into(), sample: spec.sample }))
    }

    /// Queue the line of a finished request, if it is sampled. `record`
    /// is built only then; its argument says whether the format shows the
    /// referer and user agent (else they need not be looked up).
    pub fn write<'a>(&self, record: impl FnOnce(bool) -> Record<'a>) {
        if self.sample < 1.0 && !sampled(self.sample) {
            return;
        }
        let record = record(self.format == LogFormat::Combined);
        let line = line::format(self.format, &self.fields, &record, SystemTime::now());
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => crate::metrics::metrics().access_log_dropped.inc(),
            Err(TrySendError::Disconnected(_)) => crate::metrics::metrics().access_log_dropped.inc(),
        }
    }
}

/// One in `1 / share` requests, by a per-thread draw.
fn sampled(share: f64) -> bool {
    ((crate::upstream::draw() >> 11) as f64 / (1u64 << 53) as f64) < share
}

type Sink = Box<dyn Write + Send>;

fn open(path: Option<&PathBuf>) -> std::io::Result<Sink> {
    Ok(match path {
        None => Box::new(std::io::stdout()),
        Some(p) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display())))?;
            Box::new(file)
        }
    })
}

/// Drain the queue every round into one buffered write; reopen the file
/// when SIGUSR1 asked for it; end when the gateway does.
fn write_loop(rx: Receiver<String>, out: Sink, path: Option<PathBuf>, reopen: Arc<AtomicBool>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        let open = loop {
            match rx.try_recv() {
                Ok(line) => {
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        tracing::warn!("access log: write failed: {e}");
                    }
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        if let Err(e) = out.flush() {
            tracing::warn!("access log: write failed: {e}");
        }
        if !open {
            return;
        }
        if reopen.swap(false, Ordering::Relaxed) {
            match self::open(path.as_ref()) {
                Ok(sink) => out = std::io::BufWriter::with_capacity(64 * 1024, sink),
                Err(e) => tracing::error!("access log: SIGUSR1: {e}; still writing to the old file"),
            }
        }
        std::thread::sleep(ROUND);
    }
}

/// Set `flag` on every SIGUSR1. Registered before `start` returns, so a
/// signal sent once the gateway listens never meets the default action
/// (exit).
fn on_sigusr1(flag: Arc<AtomicBool>) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let fail = |e: std::io::Error| Error::internal(format!("access log: cannot watch SIGUSR1: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(fail)?;
    let mut usr1 = {
        let _in = rt.enter();
        signal(SignalKind::user_defined1()).map_err(fail)?
    };
    std::thread::Builder::new()
        .name("switchyard-log-usr1".into())
        .spawn(move || {
            rt.block_on(async {
                while usr1.recv().await.is_some() {
                    tracing::info!("SIGUSR1: reopening the access log");
                    flag.store(true, Ordering::Relaxed);
                }
            })
        })
        .map_err(fail)?;
    Ok(())
}

tokio::task_local! {
    /// The plugin faults of the request whose phase is running.
    static FAULTS: Arc<AtomicU32>;
}

/// A plugin call failed (trap, deadline, bad answer): count it for the
/// request running in this task, if its faults are counted.
pub fn fault() {
    let _ = FAULTS.try_with(|f| f.fetch_add(1, Ordering::Relaxed));
}

/// Run `call` (a phase's seam calls) counting its plugin faults into
/// `faults`; `None` (the log is off) runs it as is.
pub async fn counting<F: Future>(faults: Option<Arc<AtomicU32>>, call: F) -> F::Output {
    match faults {
        Some(f) => FAULTS.scope(f, call).await,
        None => call.await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sampling_keeps_about_the_share() {
        let kept = (0..100_000).filter(|_| super::sampled(0.25)).count();
        assert!((23_000..27_000).contains(&kept), "{kept}");
        assert_eq!((0..1000).filter(|_| super::sampled(0.0)).count(), 0);
    }

    #[tokio::test]
    async fn faults_count_only_inside_a_counted_call() {
        let f = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        super::fault();
        super::counting(Some(f.clone()), async { super::fault() }).await;
        super::counting(None, async { super::fault() }).await;
        assert_eq!(f.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
