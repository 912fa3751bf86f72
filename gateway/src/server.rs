//! Assemble the Pingora server from a validated config: load plugins, build
//! upstreams and their policies, add the proxy, admin, health, plugin
//! watcher and demo services.

use crate::config::ValidConfig;
use crate::error::Error;
use crate::proxy::{Gateway, Router};
use crate::seams::{LbPolicy, RoundRobin};
use crate::upstream::{HealthChecker, Upstream};
use crate::wasm::{Engine, PluginSlot, PluginWatcher, Plugins, WasmLb};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::Arc;

/// Everything built from a config, before any socket is bound.
pub struct Built {
    pub upstreams: Vec<Arc<Upstream>>,
    pub plugins: Arc<Plugins>,
}

/// Load every plugin and build every upstream. Returns every error found,
/// so `switchyard check` can report them all.
pub fn build(cfg: &ValidConfig) -> Result<Built, Vec<Error>> {
    let engine = Engine::new().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut plugins = Plugins::default();
    for spec in cfg.plugins.values() {
        match PluginSlot::load(&engine, spec) {
            Ok(slot) => plugins.insert(slot),
            Err(e) => errors.push(e),
        }
    }
    // Plugins are instantiated once here to surface config errors now.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| vec![Error::internal(e.to_string())])?;
    let mut upstreams = Vec::new();
    for u in &cfg.upstreams {
        let (lb, slot): (Arc<dyn LbPolicy>, _) = match u.lb.as_ref().map(|name| plugins.get(name)) {
            None => (Arc::new(RoundRobin::default()), None),
            Some(None) => continue, // its plugin failed to load; already reported
            Some(Some(slot)) => match rt.block_on(WasmLb::new(slot.current().plugin.clone())) {
                Ok(lb) => {
                    let lb = Arc::new(lb);
                    (lb.clone() as Arc<dyn LbPolicy>, Some((slot.clone(), lb)))
                }
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
        };
        let upstream = Arc::new(Upstream::new(u, lb));
        if let Some((slot, lb)) = slot {
            slot.add_user(upstream.clone(), lb);
        }
        upstreams.push(upstream);
    }
    if errors.is_empty() {
        Ok(Built { upstreams, plugins: Arc::new(plugins) })
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
    server.add_service(pingora::services::background::background_service(
        "plugin watcher",
        PluginWatcher { plugins: built.plugins.clone() },
    ));
    if let Some(spec) = &cfg.admin {
        let api = crate::admin::AdminApi { spec: spec.clone(), plugins: built.plugins.clone(), upstreams: built.upstreams.clone() };
        server.add_service(crate::admin::service(api));
    }
    for (addr, name) in &cfg.demo {
        let backend = crate::demo::DemoBackend { name: name.clone(), delay: Default::default(), status: 200 };
        server.add_service(crate::demo::service(&addr.to_string(), backend));
    }
    Ok(server)
}
