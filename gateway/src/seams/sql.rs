//! The SQL routing seam: `SqlRouter`, the classic builtin split and a mock.

use crate::error::Error;

pub use switchyard_mysql::StatementClass;

/// One statement as a router sees it.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub text: &'a str,
    pub class: StatementClass,
    /// COM_STMT_PREPARE rather than a query.
    pub prepare: bool,
}

/// The client connection as a router sees it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo<'a> {
    pub user: &'a str,
    pub schema: Option<&'a str>,
    pub in_transaction: bool,
    pub autocommit: bool,
    pub pinned: bool,
    pub ms_since_last_write: Option<u64>,
}

/// A router's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    Group(String),
    Reject(String),
}

/// Decides where a statement runs. The session enforces the host's
/// guarantees afterwards (transactions, locking reads, pins, causality).
#[async_trait::async_trait]
pub trait SqlRouter: Send + Sync {
    /// Name for logs and metrics.
    fn name(&self) -> &str;
    /// Route one statement. An `Err` is a plugin fault with `fail-closed`.
    async fn route(&self, stmt: &Statement<'_>, conn: &ConnInfo<'_>) -> Result<Route, Error>;
}

/// The builtin and every plugin's fallback: reads to replicas, everything
/// else to the primary.
#[derive(Debug, Default)]
pub struct ClassicSplit;

impl ClassicSplit {
    /// The decision, synchronously.
    pub fn decide(stmt: &Statement<'_>) -> Route {
        match stmt.class {
            StatementClass::Read => Route::Replica,
            _ => Route::Primary,
        }
    }
}

#[async_trait::async_trait]
impl SqlRouter for ClassicSplit {
    fn name(&self) -> &str {
        "builtin:rw-split"
    }

    async fn route(&self, stmt: &Statement<'_>, _conn: &ConnInfo<'_>) -> Result<Route, Error> {
        Ok(Self::decide(stmt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_split_sends_only_reads_to_replicas() {
        let stmt = |class| Statement { text: "", class, prepare: false };
        assert_eq!(ClassicSplit::decide(&stmt(StatementClass::Read)), Route::Replica);
        for class in [StatementClass::Write, StatementClass::LockingRead, StatementClass::Transaction, StatementClass::SessionState, StatementClass::Other] {
            assert_eq!(ClassicSplit::decide(&stmt(class)), Route::Primary, "{class:?}");
        }
    }
}
