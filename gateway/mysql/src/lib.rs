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

    /// The ERR packet payload.
    pub fn payload(&self) -> Vec<u8> {
        wire::err_payload(self.code, &self.state, &self.message)
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}


#[cfg(test)]
mod tests {
    use super::StatementClass;

    #[test]
    fn class_index_is_its_place_in_all() {
        assert!(StatementClass::ALL.iter().enumerate().all(|(i, c)| c.index() == i));
    }
}
