//! The HTTP bench's baseline: stock Pingora's `ProxyHttp` with an atomic
//! round robin and nothing else, driven as Switchyard drives it (same
//! thread count, same runtime flavour), so a run shows which part of a gap
//! to nginx is Switchyard's and which is Pingora's.
//!
//! `bare_pingora LISTEN THREADS WORK_STEALING(true|false) BACKEND...`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Bare {
    backends: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(self.backends[i].as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 4, "usage: bare_pingora LISTEN THREADS WORK_STEALING BACKEND...");
    let conf = ServerConf {
        threads: args[1].parse().expect("THREADS"),
        work_stealing: args[2].parse().expect("WORK_STEALING: true or false"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare { backends: args[3..].to_vec(), next: AtomicUsize::new(0) };
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, bare);
    svc.add_tcp(&args[0]);
    server.add_service(svc);
    server.run_forever();
}
