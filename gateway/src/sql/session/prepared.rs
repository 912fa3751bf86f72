//! Prepared statements: one client id mapped to a statement id on each
//! backend it was prepared on, long data, cursors and bulk execution.

use super::*;

impl Session {
    pub(super) async fn prepare(&mut self, payload: &[u8]) -> Res {
        let text = lossy(&payload[1..]);
        let max = self.proxy.spec.max_prepared;
        if self.stmts.len() >= max {
            self.last_prepared = None;
            let msg = format!("Can't create more than max_prepared_stmt_count statements (current value: {max}); the gateway's limit per connection is sql.max_prepared");
            return Err(Fail::Client(SqlError::new(1461, "42000", msg)));
        }
        let c = self.classify(&payload[1..], &text);
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
            self.stmts.insert(id, Prepared { sql: text, bytes: payload[1..].to_vec(), class: c, params, on: vec![(node, backend_id, false)], types: None, last_node: Some(node), long_data: false });
            if let Some(conn) = self.conns[node].as_mut() {
                conn.dirty = true;
            }
        }
        Ok(())
    }

    /// The statement id a command names; `0xFFFFFFFF` is the statement
    /// prepared last (MariaDB's direct execution sends the prepare and the
    /// execute together).
    pub(super) fn stmt_id(&self, payload: &[u8], what: &str) -> Result<u32, Fail> {
        let id = payload.get(1..5).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| malformed(&format!("{what} without a statement id")))?;
        Ok(if id == u32::MAX { self.last_prepared.unwrap_or(id) } else { id })
    }

    pub(super) fn unknown_stmt(id: u32, what: &str) -> Fail {
        Fail::Client(SqlError::new(1243, "HY000", format!("Unknown prepared statement handler ({id}) given to {what}")))
    }

    pub(super) async fn execute(&mut self, payload: &[u8]) -> Res {
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
    pub(super) fn long_data_node(ps: &Prepared) -> Option<usize> {
        if !ps.long_data || ps.on.is_empty() {
            return None;
        }
        let held = |n: usize| ps.on.iter().any(|e| e.0 == n);
        Some(if held(PRIMARY) { PRIMARY } else { ps.last_node.filter(|&n| held(n)).unwrap_or(ps.on[0].0) })
    }

    /// The statement's id on `node`, preparing it there first if needed;
    /// and whether parameter types were sent there.
    pub(super) async fn ensure_prepared(&mut self, id: u32, node: usize) -> Result<(u32, bool), SqlError> {
        let ps = &self.stmts[&id];
        if let Some(&(_, bid, sent)) = ps.on.iter().find(|e| e.0 == node) {
            return Ok((bid, sent));
        }
        let pkt = [&[COM_STMT_PREPARE][..], &ps.bytes[..]].concat();
        let conn = self.conn(node).await?;
        conn.dirty = true;
        let (_, prepared) = conn.command(&pkt, Expect::Prepare).await?;
        let (bid, _, _) = prepared.ok_or_else(|| SqlError::new(2027, "HY000", "backend sent no statement id".into()))?;
        self.stmts.get_mut(&id).expect("checked above").on.push((node, bid, false));
        Ok((bid, false))
    }

    /// Send a no-reply statement command to every backend holding `id`.
    pub(super) async fn to_each_backend(&mut self, payload: &[u8], on: &[(usize, u32, bool)]) {
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

    pub(super) async fn close_stmt(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_CLOSE")?;
        // No reply, even for an unknown id (as the server does).
        if let Some(ps) = self.stmts.remove(&id) {
            self.to_each_backend(payload, &ps.on).await;
        }
        Ok(())
    }

    pub(super) async fn long_data(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_SEND_LONG_DATA")?;
        if let Some(ps) = self.stmts.get_mut(&id) {
            ps.long_data = true;
            let on = ps.on.clone();
            self.to_each_backend(payload, &on).await;
        }
        Ok(())
    }

    pub(super) async fn reset_stmt(&mut self, payload: &[u8]) -> Res {
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

    pub(super) async fn fetch(&mut self, payload: &[u8]) -> Res {
        let id = self.stmt_id(payload, "COM_STMT_FETCH")?;
        let ps = self.stmts.get(&id).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_fetch"))?;
        let node = ps.last_node.unwrap_or(PRIMARY);
        let bid = ps.on.iter().find(|e| e.0 == node).map(|e| e.1).ok_or_else(|| Self::unknown_stmt(id, "mysqld_stmt_fetch"))?;
        let mut pkt = payload.to_vec();
        pkt[1..5].copy_from_slice(&bid.to_le_bytes());
        self.forward(node, &pkt, Expect::Rows, None).await?;
        Ok(())
    }

    /// COM_STMT_BULK_EXECUTE (MariaDB): like an execute, many rows at once.
    pub(super) async fn bulk_execute(&mut self, payload: &[u8]) -> Res {
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

    pub(super) fn u32_at(p: &[u8], at: usize) -> Option<u32> {
        p.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
