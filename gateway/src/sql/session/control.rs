//! Connection control: `COM_RESET_CONNECTION`, `COM_CHANGE_USER` and
//! `KILL` of the gateway's own connection ids.

use super::*;

impl Session {
    pub(super) async fn reset_connection(&mut self) -> Res {
        // The reset forgets the last write's GTID on the primary; the
        // client's next reads must still see that write.
        self.settle_gtid().await;
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
    pub(super) async fn change_user(&mut self, payload: &[u8]) -> Res {
        let login = match auth::change_user(&mut self.client, payload, &self.proxy.spec.users, &self.login).await {
            Ok(l) => l,
            Err(e) => return Err(Fail::Close(format!("COM_CHANGE_USER refused: {e}"))),
        };
        // Read-your-writes is the client connection's, whoever it logs in
        // as: the last write's GTID is read before its backend connection
        // goes, and kept.
        self.settle_gtid().await;
        self.close().await;
        self.key = Self::pool_key(&login);
        self.req = Self::request_view(&login);
        self.log = Self::initial_log(&login);
        self.schema = login.schema.clone();
        self.login = login;
        self.stmts.clear();
        (self.txn, self.autocommit, self.pinned, self.vars_on_primary) = (None, true, false, false);
        self.last_node = None;
        Ok(())
    }

    /// Read a pending write's GTID now, before the primary connection that
    /// knows it is reset or released. If that fails the GTID stays pending
    /// and reads fall back to the primary.
    async fn settle_gtid(&mut self) {
        if self.gtid_pending {
            self.fetch_gtid().await;
        }
    }

    /// `KILL [QUERY] id` with the id a client sees: the gateway's. It
    /// kills what that session runs on every backend, and for a
    /// connection kill also closes that client connection.
    pub(super) async fn kill(&mut self, id: u32, query_only: bool) -> Res {
        let target = self.proxy.sessions.lock().get(&id).cloned();
        let Some(target) = target else {
            let why = format!(
                "Unknown thread id: {id}. Through the gateway, KILL takes the id the gateway gave the connection; \
                 CONNECTION_ID() and SHOW PROCESSLIST show a backend's own thread ids (the admin API's GET /sql maps one to the other)"
            );
            return Err(Fail::Client(SqlError::new(1094, "HY000", why)));
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
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] [ID] n`: (n, query only). Other
/// forms (`KILL USER`, `KILL QUERY ID` of a query id) are not ids the
/// gateway handed out; they go to the primary as they are.
pub(super) fn parse_kill(sql: &str) -> Option<(u32, bool)> {
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
