//! Backend nodes (the primary and each replica): authenticated connection
//! pools keyed by user and wire capabilities, health and GTID position.

use super::auth::login;
use super::wire::{column_name, parse_err, parse_text_row, Expect, PacketIo, Scanner, End};
use super::SqlError;
use crate::metrics::metrics;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Pool key: connections are interchangeable only for the same login and
/// the same wire format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: String,
    pub caps: u32,
    /// MariaDB extended capabilities.
    pub ext: u32,
    pub collation: u8,
}

/// One authenticated connection to a backend.
pub struct BackendConn {
    pub io: PacketIo<super::tls::ClientStream>,
    pub caps: CapabilityFlags,
    pub key: PoolKey,
    /// Session-log entries replayed on this connection (see `Session`).
    pub applied: usize,
    /// Session state was changed: reset before reuse.
    pub dirty: bool,
    pub status: StatusFlags,
    /// The server version from the backend's greeting.
    pub server_version: String,
    /// The backend's id for this connection (what `KILL` takes there).
    pub thread_id: u32,
    /// Bound on each command the gateway issues itself (replay, reset,
    /// GTID reads, causal waits): a backend that stops answering fails it.
    pub command_timeout: Duration,
}

/// A text result: column names and rows.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// First row's value of `column`.
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c.eq_ignore_ascii_case(column))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

impl BackendConn {
    /// Run one command the gateway issues itself and collect a text
    /// result (empty for OK). A backend ERR becomes `SqlError`.
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Result<(Rows, Option<(u32, u16, u16)>), SqlError> {
        let limit = self.command_timeout;
        tokio::time::timeout(limit, self.command_unbounded(payload, expect))
            .await
            .unwrap_or_else(|_| Err(SqlError::new(2013, "HY000", format!("lost connection: the backend did not answer within {} ms", limit.as_millis()))))
    }

    async fn command_unbounded(&mut self, payload: &[u8], expect: Expect) -> Result<(Rows, Option<(u32, u16, u16)>), SqlError> {
        self.io.send(0, payload).await.map_err(SqlError::io)?;
        let mut scanner = Scanner::new(self.caps, expect);
        let mut out = Rows::default();
        let mut ncols = None;
        loop {
            let frame = self.io.read_frame().await.map_err(SqlError::io)?;
            let end = scanner.feed(&frame, expect).map_err(|e| SqlError::new(2027, "HY000", e.0))?;
            let p = &frame[4..];
            match end {
                Some(End::Err) => {
                    let (code, msg) = parse_err(p);
                    return Err(SqlError::new(code, "HY000", msg));
                }
                Some(End::Ok(st)) => {
                    self.status = st;
                    return Ok((out, scanner.prepared));
                }
                None if expect == Expect::Result => match ncols {
                    None => ncols = mysql_common::io::ParseBuf(p).checked_eat_lenenc_int().map(|n| n as usize),
                    Some(n) if out.columns.len() < n => out.columns.push(column_name(p).unwrap_or_default()),
                    Some(n) if p.first() != Some(&0xFE) => out.rows.extend(parse_text_row(p, n)),
                    Some(_) => {}
                },
                None => {}
            }
        }
    }

    /// A COM_QUERY the gateway issues itself.
    pub async fn query(&mut self, sql: &str) -> Result<Rows, SqlError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(0x03);
        p.extend_from_slice(sql.as_bytes());
        Ok(self.command(&p, Expect::Result).await?.0)
    }

    /// True if the peer has closed or sent something unasked: one read
    /// attempt that must find nothing to read yet.
    fn is_stale(&mut self) -> bool {
        if !self.io.drained() {
            return true;
        }
        let mut b = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut b);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        !tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.io.stream), &mut cx, &mut buf).is_pending()
    }
}

/// A backend: the primary or one replica.
pub struct Node {
    pub addr: SocketAddr,
    /// `primary` or `replica-N`, for metrics and errors.
    pub role: String,
    pub up: AtomicBool,
    /// A replica whose only fault is an IO thread reconnecting to the
    /// primary: up exactly while the primary is down.
    pub waiting: AtomicBool,
    /// Replication lag in seconds; -1 when not replicating or unknown.
    pub lag_s: AtomicI64,
    /// Applied GTID sequence per replication domain.
    gtid: Mutex<HashMap<u32, u64>>,
    idle: Mutex<HashMap<PoolKey, Vec<BackendConn>>>,
    pool_idle: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// `switchyard_sql_statements_total` for this node by class, resolved once.
    statements: [prometheus::IntCounter; 6],
    /// TLS to this backend (`[sql.backend_tls]`).
    tls: Option<super::tls::BackendTls>,
}

/// `switchyard_sql_statements_total{backend}` by class, `index` order.
pub fn statement_counters(backend: &str) -> [prometheus::IntCounter; 6] {
    switchyard_mysql::StatementClass::ALL.map(|c| metrics().sql_statements.with_label_values(&[backend, c.as_str()]))
}

/// A MariaDB GTID: domain-server-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl Gtid {
    /// Parse `0-1-42`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().splitn(3, '-');
        Some(Self { domain: it.next()?.parse().ok()?, server: it.next()?.parse().ok()?, seq: it.next()?.parse().ok()? })
    }
}

impl Gtid {
    /// From a row of three numeric columns (domain, server, sequence).
    pub fn from_parts(row: &[Option<String>]) -> Option<Self> {
        let num = |i: usize| row.get(i)?.as_deref()?.trim().parse::<u64>().ok();
        Some(Self { domain: u32::try_from(num(0)?).ok()?, server: u32::try_from(num(1)?).ok()?, seq: num(2)? })
    }
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl Node {
    pub fn new(addr: SocketAddr, role: String, pool_idle: usize, connect_timeout: Duration, command_timeout: Duration) -> Self {
        Self {
            addr,
            up: AtomicBool::new(true),
            waiting: AtomicBool::new(false),
            lag_s: AtomicI64::new(-1),
            gtid: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            pool_idle,
            connect_timeout,
            command_timeout,
            statements: statement_counters(&role),
            role,
            tls: None,
        }
    }

    /// Speak TLS to this backend.
    pub fn with_tls(mut self, tls: Option<super::tls::BackendTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Count a statement of class `c` sent here.
    pub fn count(&self, c: switchyard_mysql::StatementClass) {
        self.statements[c.index()].inc();
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Record a health verdict; a node going down drops its idle connections.
    pub fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::AcqRel);
        metrics().sql_backend_up.with_label_values(&[self.role.as_str()]).set(i64::from(up));
        if !up {
            self.idle.lock().clear();
            self.gauge_idle();
        }
        was != up
    }

    /// The replica has applied `g` (from a poll or a successful wait).
    pub fn note_applied(&self, g: Gtid) {
        let mut m = self.gtid.lock();
        let e = m.entry(g.domain).or_insert(0);
        *e = (*e).max(g.seq);
    }

    /// Known to have applied `g` already: no wait needed.
    pub fn has_applied(&self, g: Gtid) -> bool {
        self.gtid.lock().get(&g.domain).is_some_and(|&s| s >= g.seq)
    }

    /// A connection for `key`: a live pooled one, or a new login.
    pub async fn acquire(&self, key: &PoolKey, password: &str) -> Result<BackendConn, SqlError> {
        loop {
            let pooled = self.idle.lock().get_mut(key).and_then(Vec::pop);
            match pooled {
                Some(mut c) => {
                    if c.is_stale() {
                        continue;
                    }
                    self.gauge_idle();
                    return Ok(c);
                }
                None => break,
            }
        }
        let m = metrics();
        m.sql_backend_connects.with_label_values(&[self.role.as_str()]).inc();
        let fail = |what: String| SqlError::new(2003, "08S01", format!("cannot connect to {} {}: {what}", self.role, self.addr));
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| fail(format!("no answer within {} ms", self.connect_timeout.as_millis())))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut io = PacketIo::new(Box::new(stream) as super::tls::ClientStream);
        let caps = CapabilityFlags::from_bits_truncate(key.caps);
        let tls = self.tls.as_ref().map(|t| t as &dyn switchyard_mysql::auth::StartTls<super::tls::ClientStream>);
        let (caps, server_version, _, thread_id) = tokio::time::timeout(self.connect_timeout, login(&mut io, &key.user, password, caps, key.ext, key.collation, tls))
            .await
            .map_err(|_| fail("login timed out".into()))??;
        let mut conn = BackendConn {
            io,
            caps,
            key: key.clone(),
            applied: 0,
            dirty: false,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            server_version,
            thread_id,
            command_timeout: self.command_timeout,
        };
        self.track_gtid(&mut conn).await?;
        Ok(conn)
    }

    /// On the primary, have every OK report the session's `last_gtid`:
    /// a write's GTID then comes with its OK, with no statement of the
    /// gateway's own (MaxScale's causal reads do the same). A client
    /// without session tracking, or a server that refuses, leaves the
    /// gateway asking `SELECT @@last_gtid` instead.
    async fn track_gtid(&self, conn: &mut BackendConn) -> Result<(), SqlError> {
        if self.role != "primary" || !conn.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
            return Ok(());
        }
        match conn.query("SET SESSION session_track_system_variables = CONCAT(@@session_track_system_variables, ',last_gtid')").await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 2013 => Err(e),
            Err(e) => {
                tracing::debug!("the primary does not track last_gtid ({e}); the gateway asks for it");
                Ok(())
            }
        }
    }

    /// Return a connection after a client session: reset if its session
    /// state changed, dropped if a transaction is open or the pool is full.
    pub async fn release(&self, mut conn: BackendConn) {
        if conn.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) || !self.is_up() {
            return;
        }
        if conn.dirty {
            // COM_RESET_CONNECTION: drops variables, temporary tables, locks and statements.
            if conn.command(&[0x1F], Expect::Simple).await.is_err() || self.track_gtid(&mut conn).await.is_err() {
                return;
            }
            conn.dirty = false;
        }
        conn.applied = 0;
        let mut idle = self.idle.lock();
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < self.pool_idle {
            list.push(conn);
        }
        drop(idle);
        self.gauge_idle();
    }

    fn gauge_idle(&self) {
        let n: usize = self.idle.lock().values().map(Vec::len).sum();
        metrics().sql_pool_idle.with_label_values(&[self.role.as_str()]).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_parse_and_cover() {
        assert_eq!(Gtid::parse("0-1-42"), Some(Gtid { domain: 0, server: 1, seq: 42 }));
        assert_eq!(Gtid::parse(""), None);
        assert_eq!(Gtid::parse("x-1-2"), None);
        let n = Node::new("127.0.0.1:1".parse().unwrap(), "replica-0".into(), 1, Duration::from_millis(10), Duration::from_millis(10));
        let g = Gtid::parse("0-1-42").unwrap();
        assert!(!n.has_applied(g));
        n.note_applied(Gtid::parse("0-1-50").unwrap());
        assert!(n.has_applied(g));
        assert!(!n.has_applied(Gtid { domain: 1, ..g }));
    }

    /// A backend that takes the command and never answers fails it within
    /// the command timeout (a reset or a replay never hangs a session).
    #[tokio::test]
    async fn a_silent_backend_fails_a_gateway_command_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut conn = BackendConn {
            io: PacketIo::new(Box::new(stream) as super::super::tls::ClientStream),
            caps: CapabilityFlags::CLIENT_PROTOCOL_41,
            key: PoolKey { user: "u".into(), caps: 0, ext: 0, collation: 45 },
            applied: 0,
            dirty: true,
            status: StatusFlags::empty(),
            server_version: String::new(),
            thread_id: 1,
            command_timeout: Duration::from_millis(200),
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), conn.command(&[0x1F], Expect::Simple)).await.expect("the command hung");
        let e = answer.expect_err("no answer came");
        assert_eq!(e.code, 2013);
        assert!(e.message.contains("did not answer within 200 ms"), "{e}");
        drop(held);
    }
}
