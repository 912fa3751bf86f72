//! The session-state log (`SET`, `USE`, `COM_INIT_DB`) replayed on each
//! backend the session uses, bounded by `max_session_log`.

use super::*;

impl Session {
    /// Remember a session-state command; it already ran on `node`.
    pub(super) fn log_session(&mut self, node: usize, payload: &[u8]) {
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
    pub(super) fn repeats_last(&self, payload: &[u8]) -> bool {
        self.log.last().is_some_and(|last| last == payload) && !payload.iter().any(|b| matches!(b, b'@' | b'('))
    }

    /// Refuse a session change the replay log has no room for, before it
    /// runs anywhere (a backend that ran it and a log without it would
    /// disagree).
    pub(super) fn log_room(&self, c: Classified, payload: &[u8]) -> Result<(), Fail> {
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
}
