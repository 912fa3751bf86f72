//! Assemble the Pingora server from a validated config: load plugins, build
//! upstreams and their policies, add the proxy, health and demo services.

use crate::config::ValidConfig;
use crate::error::Error;
use crate::proxy::{Gateway, Router};
use crate::seams::{LbPolicy, RoundRobin};
use crate::upstream::{HealthChecker, Upstream};
use crate::wasm::{Engine, LoadedPlugin, WasmLb};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything built from a config, before any socket is bound.
pub struct Built {
    pub upstreams: Vec<Arc<Upstream>>,
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
}

/// Load every plugin and build every upstream. Returns every error found,
/// so `switchyard check` can report them all.
pub fn build(cfg: &ValidConfig) -> Result<Built, Vec<Error>> {
    let engine = Engine::new().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut plugins = BTreeMap::new();
    for spec in cfg.plugins.values() {
        match engine.load(spec) {
            Ok(p) => {
                plugins.insert(spec.name.clone(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    // Plugins are instantiated once here to surface config errors now.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| vec![Error::internal(e.to_string())])?;
    let mut upstreams = Vec::new();
    for u in &cfg.upstreams {
        let lb: Box<dyn LbPolicy> = match u.lb.as_ref().map(|name| plugins.get(name)) {
            None => Box::new(RoundRobin::default()),
            Some(None) => continue, // its plugin failed to load; already reported
            Some(Some(p)) => match rt.block_on(WasmLb::new(p.clone())) {
                Ok(lb) => Box::new(lb),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
        };
        upstreams.push(Arc::new(Upstream::new(u, lb)));
    }
    if errors.is_empty() {
        Ok(Built { upstreams, plugins })
    } else {
        Err(errors)
    }
}

/// A ready-to-run Pingora server.
pub fn server(cfg: &ValidConfig, built: Built) -> Result<Server, Error> {
    let conf = ServerConf { threads: cfg.threads, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let gateway = Gateway {
        router: Router::new(&cfg.routes, &built.upstreams),
        request_id_header: http::HeaderName::from_bytes(cfg.request_id_header.as_bytes())
            .map_err(|e| Error::internal(format!("server.request_id_header: {e}")))?,
    };
    let mut proxy = pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "switchyard");
    proxy.add_tcp(&cfg.listen.to_string());
    server.add_service(proxy);
    server.add_service(pingora::services::background::background_service(
        "health",
        HealthChecker { upstreams: built.upstreams.clone() },
    ));
    for (addr, name) in &cfg.demo {
        let backend = crate::demo::DemoBackend { name: name.clone(), delay: Default::default(), status: 200 };
        server.add_service(crate::demo::service(&addr.to_string(), backend));
    }
    Ok(server)
}
