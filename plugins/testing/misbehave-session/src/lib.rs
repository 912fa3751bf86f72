//! A session strategy that fails on purpose (`mode = "trap"`: it panics
//! before every request), to test what a session plugin's fault does when
//! `on_error` is not set: the request is refused (503), never served
//! without its session.

use switchyard_sdk::session::{Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
}

/// The misbehaving strategy.
pub struct Misbehave;

impl SessionStrategy for Misbehave {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        match s.mode.as_str() {
            "trap" => Ok(Self),
            other => Err(format!("mode: {other:?} is not \"trap\"")),
        }
    }

    fn before_request(&mut self, _req: &Request) -> Action {
        panic!("misbehave-session: trapping on purpose");
    }

    fn after_response(&mut self, _context: Vec<u8>, _resp: &Response) -> Vec<Header> {
        Vec::new()
    }
}

switchyard_sdk::export_session!(Misbehave);
