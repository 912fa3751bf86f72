//! One client connection: its login, the command loop and the simple
//! commands. The rest is split by responsibility: `route` (where a
//! statement runs), `backends` (connections, forwarding, what a statement
//! leaves behind), `replay` (the session-state log), `prepared` (statement
//! ids per backend) and `control` (reset, change user, KILL).

mod backends;
mod control;
mod prepared;
mod replay;
mod route;

use control::parse_kill;
use super::auth::{self, Login};
use super::backend::{BackendConn, Gtid, PoolKey};
use super::classify::Classified;
use super::health::sync_replica_sets;
use super::wire::{ok_payload, End, Expect, PacketIo, Scanner, MAX_COMMAND};
use super::{SessionHandle, SqlError, SqlProxy, PRIMARY};
use crate::config::CausalMode;
use crate::metrics::metrics;
use crate::seams::{ConnInfo, RequestView, Route, Statement, StatementClass};
use mysql_common::constants::StatusFlags;
use super::tls::{ClientStream, SqlTls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_REFRESH: u8 = 0x07;
const COM_SHUTDOWN: u8 = 0x08;
const COM_PROCESS_INFO: u8 = 0x0A;
const COM_PROCESS_KILL: u8 = 0x0C;
const COM_DEBUG: u8 = 0x0D;
const COM_STATISTICS: u8 = 0x09;
const COM_PING: u8 = 0x0E;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1A;
const COM_SET_OPTION: u8 = 0x1B;
const COM_STMT_FETCH: u8 = 0x1C;
const COM_RESET_CONNECTION: u8 = 0x1F;
const COM_STMT_BULK_EXECUTE: u8 = 0xFA;

/// The client's last GTID as three numbers: numeric columns are not
/// converted to the client's `character_set_results` (utf16, filename...).
const LAST_GTID_SQL: &str = "SELECT IF(@@last_gtid = '', NULL, CAST(SUBSTRING_INDEX(@@last_gtid, '-', 1) AS UNSIGNED)), \
     IF(@@last_gtid = '', NULL, CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(@@last_gtid, '-', 2), '-', -1) AS UNSIGNED)), \
     IF(@@last_gtid = '', NULL, CAST(SUBSTRING_INDEX(@@last_gtid, '-', -1) AS UNSIGNED))";

/// Serve one client connection until it quits or fails.
pub async fn serve(proxy: Arc<SqlProxy>, stream: pingora::protocols::Stream) {
    let mut client = PacketIo::new(Box::new(stream) as ClientStream);
    let Some(_slot) = proxy.client_slot() else {
        metrics().sql_clients.with_label_values(&["too_many"]).inc();
        let e = SqlError::new(1040, "08004", format!("Too many connections (the gateway serves at most {})", proxy.spec.max_connections));
        let _ = client.send(0, &e.payload()).await;
        return;
    };
    let Some(login) = login(&proxy, &mut client).await else { return };
    metrics().sql_clients.with_label_values(&["accepted"]).inc();
    let mut session = Session::new(proxy, client, login);
    session.run().await;
    session.close().await;
    session.proxy.sessions.lock().remove(&session.login.conn_id);
}

/// The client's login within `login_timeout_ms`; `None` once it was
/// refused (and told why) or timed out.
async fn login(proxy: &SqlProxy, client: &mut PacketIo<ClientStream>) -> Option<Login> {
    let version = proxy.version.load_full();
    let autocommit = proxy.global_autocommit.load(std::sync::atomic::Ordering::Relaxed);
    let limit = std::time::Duration::from_millis(proxy.spec.login_timeout_ms);
    let tls = proxy.tls.as_ref().map(|t| auth::TlsOffer { start: t as &SqlTls, required: proxy.spec.require_tls });
    let accept = auth::accept(client, &proxy.spec.users, &version, proxy.next_conn_id(), autocommit, tls);
    let outcome = match tokio::time::timeout(limit, accept).await {
        Ok(Ok(l)) => return Some(l),
        Err(_) => {
            tracing::info!("SQL client did not log in within {} ms", limit.as_millis());
            "login_timeout"
        }
        // A peer that hangs up before logging in (a port probe) is not news.
        Ok(Err(e)) if e.code == 2013 => {
            tracing::debug!("SQL client left before logging in: {e}");
            "closed_before_login"
        }
        Ok(Err(e)) if e.code == 2026 => {
            tracing::info!("SQL client's TLS handshake failed: {e}");
            "tls_failed"
        }
        Ok(Err(e)) if e.code == 3159 => {
            tracing::info!("SQL client refused: {e}");
            "tls_required"
        }
        Ok(Err(e)) => {
            tracing::info!("SQL login refused: {e}");
            "auth_failed"
        }
    };
    metrics().sql_clients.with_label_values(&[outcome]).inc();
    None
}

/// Why a command failed.
enum Fail {
    /// Tell the client (ERR packet) and carry on.
    Client(SqlError),
    /// The connection cannot continue (client gone, result cut off).
    Close(String),
}

impl From<SqlError> for Fail {
    fn from(e: SqlError) -> Self {
        Fail::Client(e)
    }
}

type Res<T = ()> = Result<T, Fail>;

/// A statement the client prepared, and where it is prepared.
struct Prepared {
    /// The text as UTF-8, for the router.
    sql: String,
    /// The text as the client sent it (in its character set): what other
    /// backends prepare.
    bytes: Vec<u8>,
    class: Classified,
    params: u16,
    /// (node, backend statement id, parameter types sent there).
    on: Vec<(usize, u32, bool)>,
    /// The last parameter types the client bound, for backends that have
    /// not seen them.
    types: Option<Vec<u8>>,
    last_node: Option<usize>,
    /// Long data was sent since the last execute: the execute must run
    /// where that data is (a backend in `on`).
    long_data: bool,
}

struct Session {
    proxy: Arc<SqlProxy>,
    handle: Arc<SessionHandle>,
    client: PacketIo<ClientStream>,
    login: Login,
    key: PoolKey,
    req: Arc<RequestView>,
    /// Held backend connections, by node.
    conns: Vec<Option<BackendConn>>,
    /// Session-state commands (raw payloads) to replay on every backend.
    log: Vec<Vec<u8>>,
    schema: Option<String>,
    /// Node holding an open transaction.
    txn: Option<usize>,
    autocommit: bool,
    pinned: bool,
    last_node: Option<usize>,
    last_write: Option<Instant>,
    /// A write ran whose GTID is not known yet.
    gtid_pending: bool,
    /// The primary connection (backend thread id) that ran that write.
    gtid_conn: Option<u32>,
    /// The `last_gtid` the last statement's OK reported, if any.
    ok_gtid: Option<String>,
    last_gtid: Option<Gtid>,
    /// A statement that may set user variables ran on the primary without
    /// being replayed: reads that use user variables follow it there.
    vars_on_primary: bool,
    /// Warnings the last response reported.
    warnings: u16,
    /// Rows the last response carried (or affected).
    rows: u64,
    /// Where the statement that last set the diagnostics ran.
    diag_node: Option<usize>,
    /// Where the client's last statement that may write ran.
    write_node: Option<usize>,
    /// The client's id of the statement prepared last.
    last_prepared: Option<u32>,
    stmts: HashMap<u32, Prepared>,
    next_stmt: u32,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn malformed(what: &str) -> Fail {
    Fail::Client(SqlError::new(1835, "08S01", format!("malformed packet: {what}")))
}

impl Session {
    fn new(proxy: Arc<SqlProxy>, client: PacketIo<ClientStream>, login: Login) -> Self {
        let handle = Arc::new(SessionHandle {
            user: login.user.clone(),
            backends: parking_lot::Mutex::new(Vec::new()),
            killed: false.into(),
            wake: tokio::sync::Notify::new(),
        });
        proxy.sessions.lock().insert(login.conn_id, handle.clone());
        let autocommit = proxy.global_autocommit.load(std::sync::atomic::Ordering::Relaxed);
        Self {
            handle,
            conns: (0..proxy.nodes.len()).map(|_| None).collect(),
            proxy,
            client,
            schema: login.schema.clone(),
            key: Self::pool_key(&login),
            req: Self::request_view(&login),
            log: Self::initial_log(&login),
            login,
            txn: None,
            autocommit,
            pinned: false,
            last_node: None,
            last_write: None,
            gtid_pending: false,
            gtid_conn: None,
            ok_gtid: None,
            last_gtid: None,
            vars_on_primary: false,
            warnings: 0,
            rows: 0,
            diag_node: None,
            write_node: None,
            last_prepared: None,
            stmts: HashMap::new(),
            next_stmt: 1,
        }
    }

    fn pool_key(login: &Login) -> PoolKey {
        PoolKey { user: login.user.clone(), caps: login.caps.bits(), ext: login.ext_caps, collation: login.collation }
    }

    fn request_view(login: &Login) -> Arc<RequestView> {
        let mut req = RequestView { method: "SQL".into(), path: format!("/{}", login.schema.as_deref().unwrap_or("")), ..Default::default() };
        if let Ok(v) = http::HeaderValue::from_str(&login.user) {
            req.headers.insert("x-sql-user", v);
        }
        Arc::new(req)
    }

    fn initial_log(login: &Login) -> Vec<Vec<u8>> {
        login.schema.iter().map(|db| [&[COM_INIT_DB][..], db.as_bytes()].concat()).collect()
    }

    async fn run(&mut self) {
        loop {
            let idle = std::time::Duration::from_millis(self.proxy.spec.idle_timeout_ms);
            let read = tokio::select! {
                r = tokio::time::timeout(idle, self.client.read_packet(MAX_COMMAND)) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::info!(user = %self.login.user, "closing SQL client connection idle for {} ms", idle.as_millis());
                        metrics().sql_clients.with_label_values(&["idle_timeout"]).inc();
                        return;
                    }
                },
                () = self.handle.wake.notified() => return,
            };
            if self.handle.killed.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let payload = match read {
                Ok((_, p)) => p,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let err = SqlError::new(1153, "08S01", format!("Got a packet bigger than 'max_allowed_packet' bytes ({MAX_COMMAND})"));
                    let _ = self.client.send(1, &err.payload()).await;
                    return;
                }
                Err(_) => return,
            };
            let outcome = match payload.first().copied() {
                None => Err(malformed("empty command packet")),
                Some(COM_QUIT) => return,
                Some(cmd) => {
                    let active = &metrics().sql_active_commands;
                    active.inc();
                    let started = Instant::now();
                    let out = self.command(cmd, &payload).await;
                    active.dec();
                    self.slow(cmd, &payload, started);
                    out
                }
            };
            match outcome {
                Ok(()) => {
                    if self.client.flush().await.is_err() {
                        return;
                    }
                }
                Err(Fail::Client(e)) => {
                    tracing::debug!(user = %self.login.user, "statement failed: {e}");
                    if self.client.send(1, &e.payload()).await.is_err() {
                        return;
                    }
                }
                Err(Fail::Close(why)) => {
                    tracing::info!(user = %self.login.user, "closing SQL client connection: {why}");
                    metrics().sql_clients.with_label_values(&["closed_mid_command"]).inc();
                    return;
                }
            }
        }
    }

    /// `[sql] slow_ms`: a statement (query or execute) that took longer
    /// is logged at warn with its digest, where it ran, rows and time.
    fn slow(&self, cmd: u8, payload: &[u8], started: Instant) {
        let limit = self.proxy.spec.slow_ms;
        let took = started.elapsed();
        if limit == 0 || took.as_millis() < u128::from(limit) {
            return;
        }
        let text = match cmd {
            COM_QUERY => lossy(&payload[1..]),
            COM_STMT_EXECUTE => match Self::u32_at(payload, 1).and_then(|id| self.stmts.get(&id)) {
                Some(ps) => ps.sql.clone(),
                None => return,
            },
            _ => return,
        };
        let digest = switchyard_mysql::digest::digest(&text).unwrap_or_else(|| "(not digestible)".into());
        let destination = self.last_node.map_or("-", |n| self.proxy.nodes[n].role.as_str());
        tracing::warn!(target: "switchyard::sql::slow", digest = %digest, destination, rows = self.rows, ms = took.as_millis() as u64, user = %self.login.user, "slow statement");
    }

    async fn command(&mut self, cmd: u8, payload: &[u8]) -> Res {
        match cmd {
            COM_QUERY => self.query(payload).await,
            COM_PING => self.reply_ok().await,
            COM_INIT_DB | COM_SET_OPTION => self.session_command(payload).await,
            COM_STMT_PREPARE => self.prepare(payload).await,
            COM_STMT_EXECUTE => self.execute(payload).await,
            COM_STMT_CLOSE => self.close_stmt(payload).await,
            COM_STMT_RESET => self.reset_stmt(payload).await,
            COM_STMT_SEND_LONG_DATA => self.long_data(payload).await,
            COM_STMT_FETCH => self.fetch(payload).await,
            COM_RESET_CONNECTION => self.reset_connection().await,
            COM_STATISTICS => self.statistics(payload).await,
            // Metadata and server-wide commands run on the primary: it has
            // every table, and a refresh or debug dump is about the server.
            COM_FIELD_LIST => self.on_primary(payload, Expect::FieldList, false).await,
            // A refresh (FLUSH) is written to the binary log: a write.
            COM_REFRESH => self.on_primary(payload, Expect::Simple, true).await,
            COM_DEBUG => self.on_primary(payload, Expect::Simple, false).await,
            COM_PROCESS_INFO => self.on_primary(payload, Expect::Result, false).await,
            COM_PROCESS_KILL => {
                let id = Self::u32_at(payload, 1).ok_or_else(|| malformed("COM_PROCESS_KILL without an id"))?;
                self.kill(id, false).await
            }
            COM_SHUTDOWN => Err(Fail::Client(SqlError::new(1227, "42000", "COM_SHUTDOWN is refused by the gateway: stop the server on its host".into()))),
            COM_CHANGE_USER => self.change_user(payload).await,
            COM_STMT_BULK_EXECUTE => self.bulk_execute(payload).await,
            other => Err(Fail::Client(SqlError::new(1047, "08S01", format!("Unknown command 0x{other:02x}")))),
        }
    }

    async fn reply_ok(&mut self) -> Res {
        let mut status = StatusFlags::empty();
        status.set(StatusFlags::SERVER_STATUS_AUTOCOMMIT, self.autocommit);
        status.set(StatusFlags::SERVER_STATUS_IN_TRANS, self.txn.is_some());
        self.client.send(1, &ok_payload(status)).await.map_err(|e| Fail::Close(e.to_string()))?;
        Ok(())
    }


    /// The class of a statement: `bytes` as the client sent them, `text`
    /// their UTF-8 reading.
    fn classify(&self, bytes: &[u8], text: &str) -> Classified {
        use switchyard_mysql::digest::Lookup;
        let (c, how) = if switchyard_mysql::classify::misreadable(bytes) {
            (Classified::unproven(), Lookup::Uncached)
        } else {
            self.proxy.classes.lookup(text)
        };
        let i = match how {
            Lookup::Hit => 0,
            Lookup::Miss => 1,
            Lookup::Uncached => 2,
        };
        self.proxy.classify_counters[i].inc();
        c
    }

    async fn query(&mut self, payload: &[u8]) -> Res {
        let text = lossy(&payload[1..]);
        if let Some((id, query_only)) = parse_kill(&text) {
            return self.kill(id, query_only).await;
        }
        let c = self.classify(&payload[1..], &text);
        self.log_room(c, payload)?;
        let node = self.place(&text, c, false).await?;
        let (end, _) = self.forward(node, payload, Expect::Result, None).await?;
        self.after(node, end, c, payload).await;
        Ok(())
    }

    /// COM_INIT_DB and COM_SET_OPTION: run once, replay everywhere.
    async fn session_command(&mut self, payload: &[u8]) -> Res {
        let c = Classified::session_command();
        self.log_room(c, payload)?;
        let node = self.forced(c).unwrap_or(PRIMARY);
        let (end, _) = self.forward(node, payload, Expect::Simple, None).await?;
        self.after(node, end, c, payload).await;
        Ok(())
    }

    /// Tell `KILL` which backend connections this session holds.
    fn publish(&self) {
        *self.handle.backends.lock() = self.conns.iter().enumerate().filter_map(|(n, c)| Some((n, c.as_ref()?.thread_id))).collect();
    }

    /// A command answered by the primary alone; `writes` if it may write.
    async fn on_primary(&mut self, payload: &[u8], expect: Expect, writes: bool) -> Res {
        let node = self.txn.unwrap_or(PRIMARY);
        self.forward(node, payload, expect, None).await?;
        if writes {
            self.ran(node, Classified::unproven());
        }
        Ok(())
    }

    /// COM_STATISTICS answers with one plain text packet.
    async fn statistics(&mut self, payload: &[u8]) -> Res {
        let node = self.session_target();
        let conn = self.conn(node).await?;
        conn.io.send(0, payload).await.map_err(SqlError::io)?;
        let frame = conn.io.read_frame().await.map_err(SqlError::io)?;
        self.client.push_raw(&frame);
        Ok(())
    }

    /// Return every held connection to its pool (or drop it).
    async fn close(&mut self) {
        for node in 0..self.conns.len() {
            if let Some(conn) = self.conns[node].take() {
                let n = &self.proxy.nodes[node];
                metrics().sql_pool_in_use.with_label_values(&[n.role.as_str()]).dec();
                n.release(conn).await;
            }
        }
    }
}
