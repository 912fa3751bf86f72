//! The MySQL protocol as Switchyard's SQL listener speaks it: packet
//! framing and the response scanner (`wire`), logins (`auth`) and statement
//! classification (`classify`). No gateway state lives here, so the fuzz
//! target and property tests exercise exactly the code a peer reaches.
#![forbid(unsafe_code)]

pub mod auth;
pub mod classify;
pub mod digest;
pub mod lexical;
pub mod wire;

/// The host's classification of one statement (see `sql::classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    Read,
    Write,
    LockingRead,
    Transaction,
    SessionState,
    Other,
}

impl StatementClass {
    /// Every class, in `index` order.
    pub const ALL: [Self; 6] = [Self::Read, Self::Write, Self::LockingRead, Self::Transaction, Self::SessionState, Self::Other];

    /// Position in `ALL`, for tables indexed by class.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::LockingRead => "locking-read",
            Self::Transaction => "transaction",
            Self::SessionState => "session-state",
            Self::Other => "other",
        }
    }
}

/// A MySQL error the gateway sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

impl SqlError {
    pub fn new(code: u16, state: &str, message: String) -> Self {
        Self { code, state: state.into(), message }
    }

    /// A lost connection (CR_SERVER_LOST).
    pub fn io(e: std::io::Error) -> Self {
        Self::new(2013, "HY000", format!("lost connection: {e}"))
    }

    /// The ERR packet payload. Codes 2000-2999 are client-library errors
    /// (CR_*): MariaDB's Connector/C reads one from a server as a
    /// malformed packet (the `mariadb` CLI printed "Received malformed
    /// packet" instead of "the primary is down"), so on the wire they
    /// become the server errors that mean the same to a client.
    pub fn payload(&self) -> Vec<u8> {
        wire::err_payload(self.wire_code(), &self.state, &self.message)
    }

    /// The code a client is sent for this error.
    pub fn wire_code(&self) -> u16 {
        match self.code {
            // CR_CONN_HOST_ERROR: ER_CONNECT_TO_FOREIGN_DATA_SOURCE ("Unable to
            // connect to foreign data source"), what FEDERATED and Spider say.
            2003 => 1429,
            // CR_SERVER_LOST: ER_NET_READ_ERROR.
            2013 => 1158,
            // CR_MALFORMED_PACKET: ER_NET_PACKETS_OUT_OF_ORDER.
            2027 => 1156,
            2000..=2999 => 1105,
            code => code,
        }
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}


#[cfg(test)]
mod tests {
    #[test]
    fn clients_are_never_sent_client_library_error_codes() {
        for code in 2000..=2999 {
            let w = super::SqlError::new(code, "HY000", String::new()).wire_code();
            assert!(!(2000..=2999).contains(&w), "{code} -> {w}");
        }
        assert_eq!(super::SqlError::new(3159, "08004", String::new()).wire_code(), 3159);
        assert_eq!(super::SqlError::new(1045, "28000", String::new()).wire_code(), 1045);
    }

    use super::StatementClass;

    #[test]
    fn class_index_is_its_place_in_all() {
        assert!(StatementClass::ALL.iter().enumerate().all(|(i, c)| c.index() == i));
    }
}
