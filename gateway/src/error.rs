//! The gateway's one error type: which side failed and whether a retry helps.

use std::fmt;

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong.
    Downstream,
    /// A backend failed.
    Upstream,
    /// The gateway itself.
    Internal,
    /// A Wasm plugin failed (trap, deadline, memory cap, bad return).
    Plugin,
}

/// What went wrong inside a plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFault {
    /// The component could not be loaded or does not export the seam's world.
    Load,
    /// `configure` rejected the config.
    Config,
    /// The guest trapped (panic, unreachable, out-of-bounds).
    Trap,
    /// The call ran past its epoch deadline.
    Deadline,
    /// Linear memory would grow past the configured cap.
    MemoryCap,
    /// The guest returned something the host cannot use (e.g. an index out of range).
    BadReturn,
}

impl PluginFault {
    /// Label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Config => "config",
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::MemoryCap => "memory-cap",
            Self::BadReturn => "bad-return",
        }
    }
}

/// An error with its side and retry hint.
#[derive(Debug, Clone)]
pub struct Error {
    pub side: Side,
    /// A retry (on another backend, or later) may succeed.
    pub retry: bool,
    /// Set for plugin failures.
    pub fault: Option<PluginFault>,
    pub message: String,
}

impl Error {
    /// A plugin failure.
    pub fn plugin(fault: PluginFault, plugin: &str, message: impl fmt::Display) -> Self {
        Self {
            side: Side::Plugin,
            retry: matches!(fault, PluginFault::Deadline),
            fault: Some(fault),
            message: format!("plugin {plugin:?}: {}: {message}", fault.as_str()),
        }
    }

    /// A failure of the gateway itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { side: Side::Internal, retry: false, fault: None, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
