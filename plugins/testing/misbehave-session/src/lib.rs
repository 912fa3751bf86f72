//! A session strategy that misbehaves on purpose, or shows what it got:
//! - `mode = "trap"` panics before every request, to test what a session
//!   plugin's fault does when `on_error` is not set: the request is refused
//!   (503), never served without its session;
//! - `mode = "echo"` forwards every request and answers the client the
//!   names of the backend response headers `after-response` got, sorted,
//!   in `x-saw`; `response_headers` is what it declares it reads (absent:
//!   all), to test that the gateway passes only those.

use switchyard_sdk::session::{header, Action, After, Forward, Header, Request, Response, SessionStrategy};
use switchyard_sdk::Config;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default)]
    response_headers: Option<Vec<String>>,
}

/// The misbehaving strategy.
pub struct Misbehave {
    echo: bool,
    response_headers: Option<Vec<String>>,
}

impl SessionStrategy for Misbehave {
    fn configure(config: &Config) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        let echo = match s.mode.as_str() {
            "trap" => false,
            "echo" => true,
            other => return Err(format!("mode: {other:?} is not \"trap\" or \"echo\"")),
        };
        Ok(Self { echo, response_headers: s.response_headers })
    }

    fn before_request(&mut self, _req: &Request) -> Action {
        if !self.echo {
            panic!("misbehave-session: trapping on purpose");
        }
        Action::Forward(Forward { pin: None, headers: Vec::new(), context: Vec::new(), after: After::Always })
    }

    fn after_response(&mut self, _context: Vec<u8>, resp: &Response) -> Vec<Header> {
        let mut names: Vec<String> = resp.headers.iter().map(|h| h.name.to_ascii_lowercase()).collect();
        names.sort();
        vec![header("x-saw", &names.join(","))]
    }

    fn response_headers(&self) -> Option<Vec<String>> {
        self.response_headers.clone()
    }
}

switchyard_sdk::export_session!(Misbehave);
