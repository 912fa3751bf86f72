//! One trait per seam; each has a native builtin, a Wasm adapter and a mock.

pub mod lb;
pub mod request;

pub use lb::{LbError, LbPolicy, RoundRobin};
pub use request::RequestView;
