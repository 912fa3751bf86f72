//! One client connection: the command loop, routing held to the host's
//! guarantees, session-state replay, prepared statements mapped per
//! backend, and read-your-writes.

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
use pingora::protocols::Stream;
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
pub async fn serve(proxy: Arc<SqlProxy>, stream: Stream) {
    let mut client = PacketIo::new(stream);
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
async fn login(proxy: &SqlProxy, client: &mut PacketIo<Stream>) -> Option<Login> {
    let version = proxy.version.load_full();
    let autocommit = proxy.global_autocommit.load(std::sync::atomic::Ordering::Relaxed);
    let limit = std::time::Duration::from_millis(proxy.spec.login_timeout_ms);
    let accept = auth::accept(client, &proxy.spec.users, &version, proxy.next_conn_id(), autocommit);
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
    sql: String,
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
    client: PacketIo<Stream>,
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
    last_gtid: Option<Gtid>,
    /// A statement that may set user variables ran on the primary without
    /// being replayed: reads that use user variables follow it there.
    vars_on_primary: bool,
    /// Warnings the last response reported.
    warnings: u16,
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
    fn new(proxy: Arc<SqlProxy>, client: PacketIo<Stream>, login: Login) -> Self {
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
            last_gtid: None,
            vars_on_primary: false,
            warnings: 0,
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
                Some(cmd) => self.command(cmd, &payload).await,
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
            COM_FIELD_LIST => self.on_primary(payload, Expect::FieldList).await,
            COM_REFRESH | COM_DEBUG => self.on_primary(payload, Expect::Simple).await,
            COM_PROCESS_INFO => self.on_primary(payload, Expect::Result).await,
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

    // ---- routing -------------------------------------------------------

    /// Where a statement runs: the router's answer, then the guarantees.
    async fn route(&mut self, text: &str, c: Classified, prepare: bool) -> Result<usize, SqlError> {
        let stmt = Statement { text, class: c.class, prepare };
        let info = ConnInfo {
            user: &self.login.user,
            schema: self.schema.as_deref(),
            in_transaction: self.txn.is_some(),
            autocommit: self.autocommit,
            pinned: self.pinned,
            ms_since_last_write: self.last_write.map(|t| t.elapsed().as_millis() as u64),
        };
        let answer = self.proxy.router.route(&stmt, &info).await.unwrap_or_else(|e| Route::Reject(format!("the SQL router failed: {e}")));
        if let Route::Reject(msg) = answer {
            metrics().sql_statements.with_label_values(&["rejected", c.class.as_str()]).inc();
            return Err(SqlError::new(1105, "HY000", format!("rejected by the SQL router: {msg}")));
        }
        let node = match self.forced(c) {
            Some(n) => n,
            None => match answer {
                Route::Replica => self.replica(None, prepare).await?,
                Route::Group(g) => self.replica(Some(&g), prepare).await?,
                _ => PRIMARY,
            },
        };
        if !self.proxy.nodes[node].is_up() && self.conns[node].is_none() {
            return Err(self.down_error(node));
        }
        Ok(node)
    }

    /// Route, then connect: a replica that refuses a new connection (down
    /// since its last poll) is marked down and the statement routed again.
    /// Nothing was sent to it, so this is safe; the primary's refusal is final.
    async fn place(&mut self, text: &str, c: Classified, prepare: bool) -> Result<usize, SqlError> {
        let mut tries = self.proxy.nodes.len();
        loop {
            let node = self.route(text, c, prepare).await?;
            self.guard(node, c)?;
            let fresh = self.conns[node].is_none();
            match self.conn(node).await {
                Ok(_) => {
                    metrics().sql_statements.with_label_values(&[self.proxy.nodes[node].role.as_str(), c.class.as_str()]).inc();
                    return Ok(node);
                }
                Err(e) if e.code == 2003 && fresh && node != PRIMARY && tries > 1 => {
                    tracing::debug!("re-routing a read: {e}");
                    tries -= 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The host's guarantees, whatever the router said. Only statements
    /// the classifier marks `replica_ok` may leave the primary; following
    /// the previous statement never overrides that.
    fn forced(&self, c: Classified) -> Option<usize> {
        if let Some(n) = self.txn {
            return Some(n);
        }
        if !c.replica_ok || self.pinned || !self.autocommit || (c.user_var && self.vars_on_primary) {
            return Some(PRIMARY);
        }
        if c.diagnostics {
            return Some(self.diag_node.or(self.last_node).unwrap_or(PRIMARY));
        }
        if c.last_insert_id {
            // The id belongs to the connection that ran the write.
            return Some(self.write_node.or(self.last_node).unwrap_or(PRIMARY));
        }
        if c.follows_previous {
            return Some(self.last_node.unwrap_or(PRIMARY));
        }
        match c.class {
            StatementClass::Read => None,
            StatementClass::SessionState => Some(self.session_target()),
            _ => Some(PRIMARY),
        }
    }

    /// Where a session-state change runs first (it is replayed elsewhere):
    /// the last backend used, else the primary, else any live replica.
    fn session_target(&self) -> usize {
        let nodes = &self.proxy.nodes;
        self.last_node
            .filter(|&n| nodes[n].is_up())
            .or_else(|| nodes[PRIMARY].is_up().then_some(PRIMARY))
            .or_else(|| (1..nodes.len()).find(|&n| nodes[n].is_up()))
            .unwrap_or(PRIMARY)
    }

    /// The last line of defence: nothing but reads and replayed session
    /// settings is ever sent to a replica, whatever routed it there.
    fn guard(&self, node: usize, c: Classified) -> Result<(), SqlError> {
        if node == PRIMARY || c.replica_ok {
            return Ok(());
        }
        let role = &self.proxy.nodes[node].role;
        metrics().sql_replica_refusals.with_label_values(&[role.as_str(), c.class.as_str()]).inc();
        tracing::error!(backend = %role, class = c.class.as_str(), "refused to send a statement that may write to a replica");
        Err(SqlError::new(
            1105,
            "HY000",
            format!("refused: this {} statement may write, and it was about to run on {role}; the gateway sends only reads and session settings to replicas", c.class.as_str()),
        ))
    }

    fn down_error(&self, node: usize) -> SqlError {
        let n = &self.proxy.nodes[node];
        if node == PRIMARY {
            SqlError::new(2003, "HY000", format!("the primary ({}) is down: writes are refused until it is back; reads continue on replicas", n.addr))
        } else {
            SqlError::new(2003, "HY000", format!("{} ({}) is down", n.role, n.addr))
        }
    }

    /// A replica chosen by the lb policy, then held to read-your-writes.
    async fn replica(&mut self, group: Option<&str>, prepare: bool) -> Result<usize, SqlError> {
        let proxy = self.proxy.clone();
        let set = match group {
            None => &proxy.replicas,
            Some(g) => proxy.groups.get(g).ok_or_else(|| SqlError::new(1105, "HY000", format!("the SQL router chose replica group {g:?}, which no replica has")))?,
        };
        if set.nodes.is_empty() {
            return Ok(PRIMARY);
        }
        let node = match set.upstream.pick(&self.req, &[]).await {
            Ok(i) => set.nodes[i],
            // No healthy replica: the primary serves reads.
            Err(_) => return Ok(PRIMARY),
        };
        // A prepare is held to read-your-writes too: it must see the
        // tables the client's last DDL created. While the last write's
        // GTID is still unasked (it had warnings), a prepare goes to the
        // primary: asking now would clear those warnings, and a prepare
        // must not (the client may read them after it).
        if prepare && self.gtid_pending {
            return self.fallback_primary("the GTID of your last write is not known yet");
        }
        self.causal(node).await
    }

    /// Read-your-writes for a read about to run on replica `node`.
    async fn causal(&mut self, node: usize) -> Result<usize, SqlError> {
        if self.gtid_pending && self.txn.is_none() && self.proxy.spec.causal == CausalMode::Gtid {
            // Deferred after a write with warnings (see `after`).
            self.fetch_gtid().await;
        }
        let m = metrics();
        let spec = &self.proxy.spec;
        match spec.causal {
            CausalMode::Off => Ok(node),
            CausalMode::Pin => match self.last_write {
                Some(t) if t.elapsed().as_millis() < u128::from(spec.pin_window_ms) => {
                    m.sql_causal.with_label_values(&["pinned"]).inc();
                    self.fallback_primary("the read-your-writes window is open")
                }
                _ => Ok(node),
            },
            CausalMode::Gtid if self.gtid_pending => {
                m.sql_causal.with_label_values(&["fallback"]).inc();
                self.fallback_primary("the GTID of your last write is unknown")
            }
            CausalMode::Gtid => {
                let Some(g) = self.last_gtid else { return Ok(node) };
                if self.proxy.nodes[node].has_applied(g) {
                    m.sql_causal.with_label_values(&["covered"]).inc();
                    return Ok(node);
                }
                let timeout = spec.causal_timeout_ms;
                let sql = format!("SELECT MASTER_GTID_WAIT('{g}', {}.{:03})", timeout / 1000, timeout % 1000);
                let waited = match self.conn(node).await {
                    Ok(conn) => conn.query(&sql).await.map(|r| r.rows.first().and_then(|r| r.first().cloned()).flatten()),
                    Err(e) => Err(e),
                };
                match waited {
                    Ok(Some(v)) if v == "0" => {
                        self.proxy.nodes[node].note_applied(g);
                        m.sql_causal.with_label_values(&["waited"]).inc();
                        Ok(node)
                    }
                    other => {
                        if let Err(e) = &other {
                            tracing::debug!("GTID wait on {} failed: {e}", self.proxy.nodes[node].role);
                            self.drop_conn(node);
                        }
                        m.sql_causal.with_label_values(&["fallback"]).inc();
                        let why = format!("{} has not applied your last write (GTID {g}) within {timeout} ms", self.proxy.nodes[node].role);
                        self.fallback_primary(&why)
                    }
                }
            }
        }
    }

    fn fallback_primary(&self, why: &str) -> Result<usize, SqlError> {
        if self.proxy.nodes[PRIMARY].is_up() {
            Ok(PRIMARY)
        } else {
            Err(SqlError::new(2003, "HY000", format!("read-your-writes: {why}, and the primary is down")))
        }
    }

    // ---- backend connections --------------------------------------------

    /// This session's connection to `node`, with the session log replayed.
    async fn conn(&mut self, node: usize) -> Result<&mut BackendConn, SqlError> {
        let n = self.proxy.nodes[node].clone();
        if self.conns[node].is_none() {
            if !n.is_up() && node == PRIMARY {
                return Err(self.down_error(node));
            }
            let c = match n.acquire(&self.key, &self.login.password).await {
                Ok(c) => c,
                Err(e) if e.code == 2003 => {
                    if n.set_up(false) {
                        tracing::warn!(backend = %n.role, "SQL backend marked down: {}", e.message);
                        sync_replica_sets(&self.proxy);
                    }
                    let down = self.down_error(node);
                    return Err(SqlError::new(down.code, &down.state, format!("{} ({})", down.message, e.message)));
                }
                Err(e) => return Err(e),
            };
            metrics().sql_pool_in_use.with_label_values(&[n.role.as_str()]).inc();
            self.conns[node] = Some(c);
            self.publish();
        }
        loop {
            let conn = self.conns[node].as_mut().expect("set above");
            let Some(cmd) = self.log.get(conn.applied) else { break };
            conn.dirty = true;
            let expect = if cmd[0] == COM_QUERY { Expect::Result } else { Expect::Simple };
            let what = lossy(&cmd[1..]);
            match conn.command(cmd, expect).await {
                Ok(_) => conn.applied += 1,
                Err(e) => {
                    self.drop_conn(node);
                    return Err(SqlError::new(e.code, &e.state, format!("replaying `{what}` on {} failed: {}", n.role, e.message)));
                }
            }
        }
        Ok(self.conns[node].as_mut().expect("still held"))
    }

    /// Forget a connection that cannot be reused (closed, cut mid-result).
    fn drop_conn(&mut self, node: usize) {
        if self.conns[node].take().is_some() {
            self.forget(node);
        }
    }

    /// Bookkeeping for a lost connection to `node`: its transaction and
    /// the statements prepared on it are gone.
    fn forget(&mut self, node: usize) {
        metrics().sql_pool_in_use.with_label_values(&[self.proxy.nodes[node].role.as_str()]).dec();
        if self.txn == Some(node) {
            self.txn = None;
        }
        for ps in self.stmts.values_mut() {
            ps.on.retain(|e| e.0 != node);
        }
        self.publish();
    }

    /// Send `payload` to `node` and stream the response to the client.
    /// `rewrite_id` replaces the statement id in a prepare-OK.
    async fn forward(&mut self, node: usize, payload: &[u8], expect: Expect, rewrite_id: Option<u32>) -> Res<(End, Option<(u32, u16, u16)>)> {
        self.conn(node).await?;
        // Held outside `conns` while the response streams to the client.
        let mut conn = self.conns[node].take().expect("just connected");
        let result = self.stream_response(&mut conn, node, payload, expect, rewrite_id).await;
        match &result {
            Err(Fail::Close(_)) | Err(Fail::Client(SqlError { code: 2013 | 2027, .. })) => self.forget(node),
            _ => self.conns[node] = Some(conn),
        }
        result
    }

    async fn stream_response(
        &mut self,
        conn: &mut BackendConn,
        node: usize,
        payload: &[u8],
        expect: Expect,
        rewrite_id: Option<u32>,
    ) -> Res<(End, Option<(u32, u16, u16)>)> {
        let role = &self.proxy.nodes[node].role;
        let lost = |e: &dyn std::fmt::Display| SqlError::new(2013, "HY000", format!("lost connection to {role} during the statement: {e}"));
        conn.io.send(0, payload).await.map_err(|e| lost(&e))?;
        let mut scanner = Scanner::new(conn.caps, expect);
        let mut sent = false;
        loop {
            let failed = |e: SqlError| if sent { Fail::Close(e.message) } else { Fail::Client(e) };
            let mut frame = conn.io.read_frame().await.map_err(|e| failed(lost(&e)))?;
            let end = scanner
                .feed(&frame, expect)
                .map_err(|e| failed(SqlError::new(2027, "HY000", format!("malformed response from {role}: {e}"))))?;
            if let (Some(id), false, Some(0x00)) = (rewrite_id, sent, frame.get(4).copied()) {
                frame[5..9].copy_from_slice(&id.to_le_bytes());
            }
            self.client.push_raw(&frame);
            sent = true;
            if let Some(end) = end {
                // Flushed by `run` after `after`: a write is acknowledged
                // only once its GTID is known.
                self.warnings = scanner.warnings;
                return Ok((end, scanner.prepared));
            }
            self.client.flush_if_full().await.map_err(|e| Fail::Close(format!("client gone mid-result: {e}")))?;
        }
    }

    /// Track transaction, pin, session log and write state after a response.
    async fn after(&mut self, node: usize, end: End, c: Classified, payload: &[u8]) {
        self.last_node = Some(node);
        if c.resets_diagnostics || self.warnings > 0 || end == End::Err {
            self.diag_node = Some(node);
        }
        if !c.replica_ok {
            self.write_node = Some(node);
        }
        tracing::trace!(node, ?end, class = c.class.as_str(), "statement done");
        let End::Ok(status) = end else { return };
        if status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) {
            self.txn = Some(node);
        } else if self.txn == Some(node) {
            self.txn = None;
        }
        self.autocommit = status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        if let Some(conn) = self.conns[node].as_mut() {
            conn.status = status;
            conn.dirty |= c.pins || c.class == StatementClass::SessionState;
        }
        if c.pins {
            self.pinned = true;
        }
        if c.class == StatementClass::SessionState {
            if matches!(payload[0], COM_QUERY | COM_INIT_DB | COM_SET_OPTION) {
                self.log_session(node, payload);
            } else {
                // A prepared SET ran on the primary and cannot be replayed
                // elsewhere (its statement id is per backend): stay there.
                self.pinned = true;
            }
        }
        if c.sets_global && node == PRIMARY {
            self.learn_global_autocommit().await;
        }
        // A read that calls a stored function may have written too.
        if node == PRIMARY && !c.replica_ok {
            self.last_write = Some(Instant::now());
            self.gtid_pending = self.proxy.spec.causal == CausalMode::Gtid;
        }
        if c.sets_vars {
            self.vars_on_primary = true;
        }
        // Asking for the GTID now would clear the write's warnings before
        // the client reads them (SHOW WARNINGS); then it waits until a read
        // needs it.
        if self.gtid_pending && self.txn.is_none() && self.warnings == 0 {
            self.fetch_gtid().await;
        }
    }

    /// New clients are told the primary's global autocommit.
    async fn learn_global_autocommit(&mut self) {
        let Some(conn) = self.conns[PRIMARY].as_mut() else { return };
        if let Ok(rows) = conn.query("SELECT @@global.autocommit").await {
            if let Some(v) = rows.rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref()) {
                self.proxy.global_autocommit.store(v.trim() == "1", std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Remember a session-state command; it already ran on `node`.
    fn log_session(&mut self, node: usize, payload: &[u8]) {
        if !self.repeats_last(payload) {
            self.log.push(payload.to_vec());
        }
        if let Some(conn) = self.conns[node].as_mut() {
            conn.applied = self.log.len();
        }
        let text = lossy(&payload[1..]);
        let db = match payload[0] {
            COM_INIT_DB => Some(text),
            COM_QUERY => {
                let t = text.trim();
                t.get(..4).filter(|w| w.eq_ignore_ascii_case("use ")).map(|_| t[4..].trim().trim_end_matches(';').trim().trim_matches('`').to_string())
            }
            _ => None,
        };
        if let Some(db) = db {
            self.schema = Some(db);
        }
    }

    /// The same absolute session change as the last one logged (an ORM's
    /// `SET autocommit=1` per transaction): replaying it twice changes
    /// nothing, so it is logged once. Text that reads a variable (`@`) or
    /// calls a function may not be idempotent and is always logged.
    fn repeats_last(&self, payload: &[u8]) -> bool {
        self.log.last().is_some_and(|last| last == payload) && !payload.iter().any(|b| matches!(b, b'@' | b'('))
    }

    /// Refuse a session change the replay log has no room for, before it
    /// runs anywhere (a backend that ran it and a log without it would
    /// disagree).
    fn log_room(&self, c: Classified, payload: &[u8]) -> Result<(), Fail> {
        let max = self.proxy.spec.max_session_log;
        if c.class != StatementClass::SessionState || self.log.len() < max || self.repeats_last(payload) {
            return Ok(());
        }
        Err(Fail::Client(SqlError::new(
            1105,
            "HY000",
            format!("this connection changed its session state {max} times (SET, USE); the gateway replays at most sql.max_session_log = {max} on other backends: reconnect, or use COM_RESET_CONNECTION"),
        )))
    }

    /// The GTID of this client's last write, for causal reads.
    async fn fetch_gtid(&mut self) {
        let Some(conn) = self.conns[PRIMARY].as_mut() else { return };
        match conn.query(LAST_GTID_SQL).await {
            Ok(rows) => {
                if let Some(g) = rows.rows.first().and_then(|r| Gtid::from_parts(r)) {
                    self.last_gtid = Some(g);
                }
                self.gtid_pending = false;
            }
            Err(e) => {
                tracing::debug!("SELECT @@last_gtid failed: {e}");
                self.drop_conn(PRIMARY);
            }
        }
    }

    // ---- commands ---------------------------------------------------------

    fn classify(&self, text: &str) -> Classified {
        self.proxy.classes.classify(text)
    }

    async fn query(&mut self, payload: &[u8]) -> Res {
        let text = lossy(&payload[1..]);
        if let Some((id, query_only)) = parse_kill(&text) {
            return self.kill(id, query_only).await;
        }
        let c = self.classify(&text);
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

    async fn prepare(&mut self, payload: &[u8]) -> Res {
        let text = lossy(&payload[1..]);
        let max = self.proxy.spec.max_prepared;
        if self.stmts.len() >= max {
            self.last_prepared = None;
            let msg = format!("Can't create more than max_prepared_stmt_count statements (current value: {max}); the gateway's limit per connection is sql.max_prepared");
            return Err(Fail::Client(SqlError::new(1461, "42000", msg)));
        }
        let c = self.classify(&text);
        let node = self.place(&text, c, true).await?;
        let id = self.next_stmt;
        let (end, prepared) = self.forward(node, payload, Expect::Prepare, Some(id)).await?;
        if c.resets_diagnostics || end == End::Err {
            self.diag_node = Some(node);
        }
        self.last_prepared = None;
        if let (End::Ok(_), Some((backend_id, _, params))) = (end, prepared) {
            self.last_prepared = Some(id);
            self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
            self.stmts.insert(id, Prepared { sql: text, class: c, params, on: vec![(node, backend_id, false)], types: None, last_node: Some(node), long_data: false });
            if let Some(conn) = self.conns[node].as_mut() {
                conn.dirty = true;
            }
        }
        Ok(())
    }

    /// The statement id a command names; `0xFFFFFFFF` is the statement
    /// prepared last (MariaDB's direct execution sends the prepare and the
    /// execute together).
    fn stmt_id(&self, payload: &[u8], what: &str) -> Result<u32, Fail> {
        let id = payload.get(1..5).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| malformed(&format!("{what} without a statement id")))?;
        Ok(if id == u32::MAX { self.last_prepared.unwrap_or(id) } else { id })
    }

    fn unknown_stmt(id: u32, what: &str) -> Fail {
        Fail::Client(SqlError::new(1243, "HY000", format!("Unknown prepared statement handler ({id}) given to {what}")))
    }

    async fn execute(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_EXECUTE")?;
        let ps = self.stmts.get_mut(&id).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_execute"))?;
        // Layout: cmd, id(4), flags, iterations(4), null bitmap, new-params-bound, types.
        let n = usize::from(ps.params);
        let flag_at = 10 + n.div_ceil(8);
        if n > 0 {
            match payload.get(flag_at) {
                None => return Err(malformed("COM_STMT_EXECUTE is shorter than its parameter block")),
                Some(1) => {
                    let types = payload.get(flag_at + 1..flag_at + 1 + 2 * n).ok_or_else(|| malformed("COM_STMT_EXECUTE parameter types are cut off"))?;
                    ps.types = Some(types.to_vec());
                }
                Some(_) => {}
            }
        } else if payload.len() < 10 {
            return Err(malformed("COM_STMT_EXECUTE is too short"));
        }
        let (sql, c) = (ps.sql.clone(), ps.class);
        let node = match Self::long_data_node(ps) {
            Some(n) => n,
            // A prepared SET is not replayable: it runs on the primary.
            None if c.class == StatementClass::SessionState => PRIMARY,
            None => self.place(&sql, c, false).await?,
        };
        self.guard(node, c)?;
        let (backend_id, types_sent) = self.ensure_prepared(id, node).await?;
        let ps = self.stmts.get_mut(&id).expect("checked above");
        let mut pkt = payload.to_vec();
        pkt[1..5].copy_from_slice(&backend_id.to_le_bytes());
        if n > 0 {
            if pkt[flag_at] == 0 && !types_sent {
                if let Some(types) = &ps.types {
                    pkt[flag_at] = 1;
                    pkt.splice(flag_at + 1..flag_at + 1, types.iter().copied());
                }
            }
            if pkt[flag_at] == 1 {
                ps.on.iter_mut().filter(|e| e.0 == node).for_each(|e| e.2 = true);
            }
        }
        ps.last_node = Some(node);
        ps.long_data = false;
        let (end, _) = self.forward(node, &pkt, Expect::Execute, None).await?;
        self.after(node, end, c, payload).await;
        Ok(())
    }

    /// Where long data sent for `ps` waits: the primary if it holds the
    /// statement, else the backend that last ran it.
    fn long_data_node(ps: &Prepared) -> Option<usize> {
        if !ps.long_data || ps.on.is_empty() {
            return None;
        }
        let held = |n: usize| ps.on.iter().any(|e| e.0 == n);
        Some(if held(PRIMARY) { PRIMARY } else { ps.last_node.filter(|&n| held(n)).unwrap_or(ps.on[0].0) })
    }

    /// The statement's id on `node`, preparing it there first if needed;
    /// and whether parameter types were sent there.
    async fn ensure_prepared(&mut self, id: u32, node: usize) -> Result<(u32, bool), SqlError> {
        let ps = &self.stmts[&id];
        if let Some(&(_, bid, sent)) = ps.on.iter().find(|e| e.0 == node) {
            return Ok((bid, sent));
        }
        let pkt = [&[COM_STMT_PREPARE][..], ps.sql.as_bytes()].concat();
        let conn = self.conn(node).await?;
        conn.dirty = true;
        let (_, prepared) = conn.command(&pkt, Expect::Prepare).await?;
        let (bid, _, _) = prepared.ok_or_else(|| SqlError::new(2027, "HY000", "backend sent no statement id".into()))?;
        self.stmts.get_mut(&id).expect("checked above").on.push((node, bid, false));
        Ok((bid, false))
    }

    /// Send a no-reply statement command to every backend holding `id`.
    async fn to_each_backend(&mut self, payload: &[u8], on: &[(usize, u32, bool)]) {
        for &(node, bid, _) in on {
            if let Some(conn) = self.conns[node].as_mut() {
                let mut pkt = payload.to_vec();
                pkt[1..5].copy_from_slice(&bid.to_le_bytes());
                if conn.io.send(0, &pkt).await.is_err() {
                    self.drop_conn(node);
                }
            }
        }
    }

    async fn close_stmt(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_CLOSE")?;
        // No reply, even for an unknown id (as the server does).
        if let Some(ps) = self.stmts.remove(&id) {
            self.to_each_backend(payload, &ps.on).await;
        }
        Ok(())
    }

    async fn long_data(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_SEND_LONG_DATA")?;
        if let Some(ps) = self.stmts.get_mut(&id) {
            ps.long_data = true;
            let on = ps.on.clone();
            self.to_each_backend(payload, &on).await;
        }
        Ok(())
    }

    async fn reset_stmt(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_RESET")?;
        let on = self.stmts.get(&id).map(|p| p.on.clone()).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_reset"))?;
        for (node, bid, _) in on {
            if let Some(conn) = self.conns[node].as_mut() {
                let mut pkt = payload.to_vec();
                pkt[1..5].copy_from_slice(&bid.to_le_bytes());
                conn.command(&pkt, Expect::Simple).await?;
            }
        }
        self.reply_ok().await
    }

    async fn fetch(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_FETCH")?;
        let ps = self.stmts.get(&id).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_fetch"))?;
        let node = ps.last_node.unwrap_or(PRIMARY);
        let bid = ps.on.iter().find(|e| e.0 == node).map(|e| e.1).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_fetch"))?;
        let mut pkt = payload.to_vec();
        pkt[1..5].copy_from_slice(&bid.to_le_bytes());
        self.forward(node, &pkt, Expect::Rows, None).await?;
        Ok(())
    }

    async fn reset_connection(&mut self) -> Res {
        for node in 0..self.conns.len() {
            if let Some(conn) = self.conns[node].as_mut() {
                if conn.command(&[COM_RESET_CONNECTION], Expect::Simple).await.is_err() {
                    self.drop_conn(node);
                    continue;
                }
                conn.applied = 0;
                conn.dirty = false;
            }
        }
        // The server keeps the current schema across a reset; so does the log.
        self.log = self.schema.iter().map(|db| [&[COM_INIT_DB][..], db.as_bytes()].concat()).collect();
        self.stmts.clear();
        self.vars_on_primary = false;
        self.pinned = false;
        self.txn = None;
        self.autocommit = true;
        self.reply_ok().await
    }

    /// COM_CHANGE_USER: the gateway authenticates the new user, then the
    /// session starts over as it: backend connections go back to their
    /// pools (reset), and new ones log in as the new user.
    async fn change_user(&mut self, payload: &[u8]) -> Res {
        let login = match auth::change_user(&mut self.client, payload, &self.proxy.spec.users, &self.login).await {
            Ok(l) => l,
            Err(e) => return Err(Fail::Close(format!("COM_CHANGE_USER refused: {e}"))),
        };
        self.close().await;
        self.key = Self::pool_key(&login);
        self.req = Self::request_view(&login);
        self.log = Self::initial_log(&login);
        self.schema = login.schema.clone();
        self.login = login;
        self.stmts.clear();
        (self.txn, self.autocommit, self.pinned, self.vars_on_primary) = (None, true, false, false);
        (self.last_node, self.last_write, self.gtid_pending, self.last_gtid) = (None, None, false, None);
        Ok(())
    }

    /// COM_STMT_BULK_EXECUTE (MariaDB): like an execute, many rows at once.
    async fn bulk_execute(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_BULK_EXECUTE")?;
        let ps = self.stmts.get(&id).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_bulk_execute"))?;
        let (sql, c) = (ps.sql.clone(), ps.class);
        let node = self.place(&sql, c, false).await?;
        let (backend_id, _) = self.ensure_prepared(id, node).await?;
        let mut pkt = payload.to_vec();
        pkt[1..5].copy_from_slice(&backend_id.to_le_bytes());
        if let Some(ps) = self.stmts.get_mut(&id) {
            ps.last_node = Some(node);
        }
        let (end, _) = self.forward(node, &pkt, Expect::Result, None).await?;
        self.after(node, end, c, payload).await;
        Ok(())
    }

    fn u32_at(p: &[u8], at: usize) -> Option<u32> {
        p.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `KILL [QUERY] id` with the id a client sees: the gateway's. It
    /// kills what that session runs on every backend, and for a
    /// connection kill also closes that client connection.
    async fn kill(&mut self, id: u32, query_only: bool) -> Res {
        let target = self.proxy.sessions.lock().get(&id).cloned();
        let Some(target) = target else {
            return Err(Fail::Client(SqlError::new(1094, "HY000", format!("Unknown thread id: {id}"))));
        };
        if target.user != self.login.user {
            return Err(Fail::Client(SqlError::new(1095, "HY000", format!("You are not owner of thread {id}"))));
        }
        if id == self.login.conn_id {
            if query_only {
                return self.reply_ok().await;
            }
            return Err(Fail::Close("the client killed its own connection".into()));
        }
        let backends = target.backends.lock().clone();
        for (node, tid) in backends {
            let sql = if query_only { format!("KILL QUERY {tid}") } else { format!("KILL {tid}") };
            if let Err(e) = self.conn(node).await?.query(&sql).await {
                // Gone already: what the client asked for is done.
                tracing::debug!("{sql} on {}: {e}", self.proxy.nodes[node].role);
            }
        }
        if !query_only {
            target.killed.store(true, std::sync::atomic::Ordering::Relaxed);
            target.wake.notify_one();
        }
        self.reply_ok().await
    }

    /// Tell `KILL` which backend connections this session holds.
    fn publish(&self) {
        *self.handle.backends.lock() = self.conns.iter().enumerate().filter_map(|(n, c)| Some((n, c.as_ref()?.thread_id))).collect();
    }

    /// A command answered by the primary alone.
    async fn on_primary(&mut self, payload: &[u8], expect: Expect) -> Res {
        let node = self.txn.unwrap_or(PRIMARY);
        self.forward(node, payload, expect, None).await?;
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

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] [ID] n`: (n, query only). Other
/// forms (`KILL USER`, `KILL QUERY ID` of a query id) are not ids the
/// gateway handed out; they go to the primary as they are.
fn parse_kill(sql: &str) -> Option<(u32, bool)> {
    let lower = sql.trim().trim_end_matches(';').to_ascii_lowercase();
    let mut words = lower.split_whitespace().peekable();
    if words.next()? != "kill" {
        return None;
    }
    if matches!(words.peek(), Some(&"hard" | &"soft")) {
        words.next();
    }
    let query = match words.peek() {
        Some(&"query") => {
            words.next();
            if words.peek() == Some(&"id") {
                return None;
            }
            true
        }
        Some(&"connection") => {
            words.next();
            false
        }
        _ => false,
    };
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some((id, query))
}

#[cfg(test)]
mod tests {
    use super::parse_kill;

    #[test]
    fn kill_forms() {
        assert_eq!(parse_kill("KILL 12"), Some((12, false)));
        assert_eq!(parse_kill("kill connection 7;"), Some((7, false)));
        assert_eq!(parse_kill("KILL HARD QUERY 9"), Some((9, true)));
        assert_eq!(parse_kill("KILL QUERY ID 9"), None);
        assert_eq!(parse_kill("KILL USER app"), None);
        assert_eq!(parse_kill("SELECT 1"), None);
    }
}
