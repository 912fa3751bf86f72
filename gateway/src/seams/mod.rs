//! One trait per seam; each has a native builtin and a Wasm adapter, and a
//! mock where unit tests need one.

pub mod access;
pub mod lb;
pub mod request;
pub mod session;
pub mod sql;

pub use access::{AccessCheck, AccessDecision, AttrUpdate, Usage, UsageOutcome};
pub use lb::{LbError, LbPolicy, RoundRobin};
pub use request::RequestView;
pub use session::{Forward, NoSession, Outcome, Reply, SessionAction, SessionOutcome, SessionPolicy, SessionRun};
pub use sql::{ClassicSplit, ConnInfo, Route, SqlRouter, Statement, StatementClass};
