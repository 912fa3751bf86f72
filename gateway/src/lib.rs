//! Switchyard: a Pingora gateway whose policies are WebAssembly components.
#![forbid(unsafe_code)]

pub mod access;
pub mod accesslog;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod seams;
pub mod server;
pub mod session;
pub mod sql;
pub mod tls;
pub mod upstream;
pub mod wasm;
