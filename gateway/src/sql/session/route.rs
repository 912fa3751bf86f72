//! Where a statement runs: the router's answer, then the host's guarantees
//! (transactions, pins, session state, read-your-writes, replica health).

use super::*;

impl Session {
    /// Where a statement runs: the router's answer, then the guarantees.
    pub(super) async fn route(&mut self, text: &str, c: Classified, prepare: bool) -> Result<usize, SqlError> {
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
            self.proxy.rejected[c.class.index()].inc();
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
    pub(super) async fn place(&mut self, text: &str, c: Classified, prepare: bool) -> Result<usize, SqlError> {
        let mut tries = self.proxy.nodes.len();
        loop {
            let node = self.route(text, c, prepare).await?;
            self.guard(node, c)?;
            let fresh = self.conns[node].is_none();
            match self.conn(node).await {
                Ok(_) => {
                    self.proxy.nodes[node].count(c.class);
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

    /// Read-your-writes bookkeeping once `node` answered a statement:
    /// whatever ran on the primary without being proven a pure read
    /// (`replica_ok`) counts as a write, whatever it answered, since it may
    /// fail after writing (a `CALL`, a multi-statement). Its GTID is read
    /// from this connection (see `after`); until then the session's reads
    /// go to the primary. A statement whose connection was lost before it
    /// answered has no known outcome, for the client either: not counted.
    pub(super) fn ran(&mut self, node: usize, c: Classified) {
        if node == PRIMARY && !c.replica_ok {
            self.last_write = Some(Instant::now());
            self.gtid_pending = self.proxy.spec.causal == CausalMode::Gtid;
            self.gtid_conn = self.conns[PRIMARY].as_ref().map(|c| c.thread_id);
        }
    }

    /// The host's guarantees, whatever the router said. Only statements
    /// the classifier marks `replica_ok` may leave the primary; following
    /// the previous statement never overrides that.
    pub(super) fn forced(&self, c: Classified) -> Option<usize> {
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
    pub(super) fn session_target(&self) -> usize {
        let nodes = &self.proxy.nodes;
        self.last_node
            .filter(|&n| nodes[n].is_up())
            .or_else(|| nodes[PRIMARY].is_up().then_some(PRIMARY))
            .or_else(|| (1..nodes.len()).find(|&n| nodes[n].is_up()))
            .unwrap_or(PRIMARY)
    }

    /// The last line of defence: nothing but reads and replayed session
    /// settings is ever sent to a replica, whatever routed it there.
    pub(super) fn guard(&self, node: usize, c: Classified) -> Result<(), SqlError> {
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

    pub(super) fn down_error(&self, node: usize) -> SqlError {
        let n = &self.proxy.nodes[node];
        if node == PRIMARY {
            SqlError::new(2003, "HY000", format!("the primary ({}) is down: writes are refused until it is back; reads continue on replicas", n.addr))
        } else {
            SqlError::new(2003, "HY000", format!("{} ({}) is down", n.role, n.addr))
        }
    }

    /// A replica chosen by the lb policy, then held to read-your-writes.
    pub(super) async fn replica(&mut self, group: Option<&str>, prepare: bool) -> Result<usize, SqlError> {
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
    pub(super) async fn causal(&mut self, node: usize) -> Result<usize, SqlError> {
        if self.gtid_pending && self.txn.is_none() && self.proxy.spec.causal == CausalMode::Gtid {
            // Deferred after a write with warnings (see `after`).
            self.fetch_gtid().await;
        }
        let proxy = self.proxy.clone();
        let m = &proxy.causal_counters;
        let spec = &self.proxy.spec;
        match spec.causal {
            CausalMode::Off => Ok(node),
            CausalMode::Pin => match self.last_write {
                Some(t) if t.elapsed().as_millis() < u128::from(spec.pin_window_ms) => {
                    m.pinned.inc();
                    self.fallback_primary("the read-your-writes window is open")
                }
                _ => Ok(node),
            },
            CausalMode::Gtid if self.gtid_pending => {
                m.fallback.inc();
                self.fallback_primary("the GTID of your last write is unknown")
            }
            CausalMode::Gtid => {
                let Some(g) = self.last_gtid else { return Ok(node) };
                if self.proxy.nodes[node].has_applied(g) {
                    m.covered.inc();
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
                        m.waited.inc();
                        Ok(node)
                    }
                    other => {
                        if let Err(e) = &other {
                            tracing::debug!("GTID wait on {} failed: {e}", self.proxy.nodes[node].role);
                            self.drop_conn(node);
                        }
                        m.fallback.inc();
                        let why = format!("{} has not applied your last write (GTID {g}) within {timeout} ms", self.proxy.nodes[node].role);
                        self.fallback_primary(&why)
                    }
                }
            }
        }
    }

    pub(super) fn fallback_primary(&self, why: &str) -> Result<usize, SqlError> {
        if self.proxy.nodes[PRIMARY].is_up() {
            Ok(PRIMARY)
        } else {
            Err(SqlError::new(2003, "HY000", format!("read-your-writes: {why}, and the primary is down")))
        }
    }
}
