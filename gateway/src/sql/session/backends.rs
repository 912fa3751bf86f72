//! This session's backend connections: acquired with the session log
//! replayed, forwarding and streaming results, and the state a finished
//! statement leaves (transaction, diagnostics, last write, GTID).

use super::*;

impl Session {
    /// This session's connection to `node`, with the session log replayed.
    pub(super) async fn conn(&mut self, node: usize) -> Result<&mut BackendConn, SqlError> {
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
    pub(super) fn drop_conn(&mut self, node: usize) {
        if self.conns[node].take().is_some() {
            self.forget(node);
        }
    }

    /// Bookkeeping for a lost connection to `node`: its transaction and
    /// the statements prepared on it are gone.
    pub(super) fn forget(&mut self, node: usize) {
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
    pub(super) async fn forward(&mut self, node: usize, payload: &[u8], expect: Expect, rewrite_id: Option<u32>) -> Res<(End, Option<(u32, u16, u16)>)> {
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

    pub(super) async fn stream_response(
        &mut self,
        conn: &mut BackendConn,
        node: usize,
        payload: &[u8],
        expect: Expect,
        rewrite_id: Option<u32>,
    ) -> Res<(End, Option<(u32, u16, u16)>)> {
        let proxy = self.proxy.clone();
        let role = &proxy.nodes[node].role;
        let lost = |e: &dyn std::fmt::Display| SqlError::new(2013, "HY000", format!("lost connection to {role} during the statement: {e}"));
        conn.io.send(0, payload).await.map_err(|e| lost(&e))?;
        let mut scanner = Scanner::new(conn.caps, expect);
        let mut sent = false;
        let limit = std::time::Duration::from_millis(self.proxy.spec.read_timeout_ms);
        loop {
            let failed = |e: SqlError| if sent { Fail::Close(e.message) } else { Fail::Client(e) };
            let silent = || lost(&format!("no answer within read_timeout_ms ({} ms)", limit.as_millis()));
            let mut frame = match tokio::time::timeout(limit, conn.io.read_frame()).await {
                Ok(read) => read.map_err(|e| failed(lost(&e)))?,
                Err(_) => return Err(failed(silent())),
            };
            let end = scanner
                .feed(&frame, expect)
                .map_err(|e| failed(SqlError::new(2027, "HY000", format!("malformed response from {role}: {e}"))))?;
            if scanner.file_request {
                self.relay_file(conn, node, &frame, payload).await.map_err(|e| match e {
                    Fail::Client(e) => Fail::Close(e.message),
                    close => close,
                })?;
                scanner.file_sent();
                sent = true;
                continue;
            }
            if let (Some(id), false, Some(0x00)) = (rewrite_id, sent, frame.get(4).copied()) {
                frame[5..9].copy_from_slice(&id.to_le_bytes());
            }
            self.client.push_raw(&frame);
            sent = true;
            if let Some(end) = end {
                // Flushed by `run` after `after`: a write is acknowledged
                // only once its GTID is known.
                self.warnings = scanner.warnings;
                self.rows = scanner.rows;
                self.ok_gtid = scanner.last_gtid.take();
                return Ok((end, scanner.prepared));
            }
            self.client.flush_if_full().await.map_err(|e| Fail::Close(format!("client gone mid-result: {e}")))?;
        }
    }

    /// LOAD DATA LOCAL INFILE: the server's file request goes to the
    /// client, and the client's file packets to the server, frame by frame
    /// as they arrive, until the empty packet that ends the file. A request
    /// for a file the statement did not name (a hostile or confused server
    /// answering a SELECT) gets an empty file and never reaches the client.
    async fn relay_file(&mut self, conn: &mut BackendConn, node: usize, request: &[u8], statement: &[u8]) -> Res<()> {
        let role = self.proxy.nodes[node].role.clone();
        let lost = |e: &dyn std::fmt::Display| Fail::Close(format!("lost connection to {role} during LOAD DATA LOCAL: {e}"));
        let text = String::from_utf8_lossy(statement.get(1..).unwrap_or_default());
        if !switchyard_mysql::classify::loads_local_file(&text) {
            tracing::warn!(backend = %role, "a SQL backend asked for a local file the statement did not name; it got an empty file");
            conn.io.send(request[3].wrapping_add(1), &[]).await.map_err(|e| lost(&e))?;
            return Ok(());
        }
        self.client.push_raw(request);
        self.client.flush().await.map_err(|e| Fail::Close(format!("client gone before sending its file: {e}")))?;
        let limit = std::time::Duration::from_millis(self.proxy.spec.read_timeout_ms);
        let mut continuing = false;
        loop {
            let frame = match tokio::time::timeout(limit, self.client.read_frame()).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(Fail::Close(format!("client gone while sending its file: {e}"))),
                Err(_) => return Err(Fail::Close(format!("the client sent no file data within read_timeout_ms ({} ms)", limit.as_millis()))),
            };
            let len = frame.len() - 4;
            conn.io.push_raw(&frame);
            if len == 0 && !continuing {
                return conn.io.flush().await.map_err(|e| lost(&e));
            }
            continuing = len == switchyard_mysql::wire::MAX_FRAME;
            conn.io.flush_if_full().await.map_err(|e| lost(&e))?;
        }
    }

    /// Track transaction, pin, session log and write state after a response.
    pub(super) async fn after(&mut self, node: usize, end: End, c: Classified, payload: &[u8]) {
        self.ran(node, c);
        self.last_node = Some(node);
        if c.resets_diagnostics || self.warnings > 0 || end == End::Err {
            self.diag_node = Some(node);
        }
        if !c.replica_ok {
            self.write_node = Some(node);
        }
        // Even a statement that failed may have set variables first.
        if c.sets_vars {
            self.vars_on_primary = true;
        }
        tracing::trace!(node, ?end, class = c.class.as_str(), "statement done");
        if let End::Ok(status) = end {
            self.track(node, status, c, payload).await;
        }
        // The write's GTID (`ran` marked it pending): from the OK itself
        // when the primary tracks `last_gtid` (no statement of the
        // gateway's own, which would reset ROW_COUNT(), FOUND_ROWS() and
        // the warnings the client may ask for next); else asked now. Asking
        // would clear the statement's warnings or error before the client
        // reads them (SHOW WARNINGS): then it waits until a read needs it.
        let reported = self.ok_gtid.take().filter(|_| node == PRIMARY).and_then(|g| Gtid::parse(&g));
        if self.gtid_pending && self.txn.is_none() && end != End::Err {
            if let Some(g) = reported {
                self.last_gtid = Some(g);
                self.gtid_pending = false;
            } else if self.warnings == 0 {
                self.fetch_gtid().await;
            }
        }
    }

    /// What a successful statement leaves: transaction, pin, session log.
    async fn track(&mut self, node: usize, status: StatusFlags, c: Classified, payload: &[u8]) {
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
    }

    /// New clients are told the primary's global autocommit.
    pub(super) async fn learn_global_autocommit(&mut self) {
        let Some(conn) = self.conns[PRIMARY].as_mut() else { return };
        if let Ok(rows) = conn.query("SELECT @@global.autocommit").await {
            if let Some(v) = rows.rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref()) {
                self.proxy.global_autocommit.store(v.trim() == "1", std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The GTID of this client's last write, for causal reads.
    pub(super) async fn fetch_gtid(&mut self) {
        let Some(conn) = self.conns[PRIMARY].as_mut() else { return };
        // Only the connection that ran the write knows its GTID. Once that
        // one is gone, the GTID stays pending (reads go to the primary)
        // until a later write's GTID, which covers it, is read.
        if Some(conn.thread_id) != self.gtid_conn {
            return;
        }
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
}
