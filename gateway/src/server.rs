//! Assemble the Pingora server from a validated config: load plugins, build
//! upstreams and their policies, add the proxy, admin, health, plugin
//! watcher, fleet and demo services.

use crate::config::ValidConfig;
use crate::error::Error;
use crate::live::{Live, Routing};
use crate::proxy::Gateway;
use crate::seams::{ClassicSplit, LbPolicy, RoundRobin, SqlRouter};
use crate::upstream::HealthChecker;
use crate::sql::{SqlHealth, SqlProxy};
use crate::wasm::{Engine, LbUser, PluginSlot, PluginWatcher, Plugins, Slots, WasmLb, WasmSqlRouter};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::Arc;

/// Everything built from a config, before any socket is bound.
pub struct Built {
    /// Routes and upstreams: what a config reload replaces.
    pub live: Arc<Live>,
    pub plugins: Arc<Plugins>,
    pub engine: Engine,
    pub sql: Option<Arc<SqlProxy>>,
    /// This node of `[cluster]` (the replicated tier).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The session store tiers (the admin API's `/sessions`).
    pub stores: Arc<crate::session::Stores>,
    /// The HTTPS listener's certificates, when `[server.tls]` is on.
    pub tls: Option<Arc<crate::tls::TlsHub>>,
}

/// Load every plugin and build every upstream. Returns every error found,
/// so `switchyard check` can report them all.
pub fn build(cfg: &ValidConfig) -> Result<Built, Vec<Error>> {
    crate::tls::install_provider();
    let cluster = cfg.cluster.as_ref().map(crate::cluster::Cluster::new);
    let stores = crate::session::Stores::new(&cfg.session, cluster.clone()).map_err(|e| vec![e])?;
    let engine = Engine::with_pool_threads(cfg.plugin_threads).map_err(|e| vec![e])?.with_stores(Arc::new(stores));
    let mut errors = Vec::new();
    let tls = cfg.tls.as_ref().and_then(|spec| match crate::tls::TlsHub::new(spec) {
        Ok(hub) => Some(hub),
        Err(es) => {
            errors.extend(es.into_iter().map(|e| Error::internal(format!("server.tls: {e}"))));
            None
        }
    });
    let mut slots = Slots::new();
    for spec in cfg.plugins.values() {
        match PluginSlot::load(&engine, spec) {
            Ok(slot) => {
                slots.insert(spec.name.clone(), slot);
            }
            Err(e) => errors.push(e),
        }
    }
    // Plugins are instantiated once here to surface config errors now.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| vec![Error::internal(e.to_string())])?;
    let routing = rt.block_on(Routing::build(cfg, &slots, engine.stores(), None));
    let plugins = Plugins::new(slots);
    let sql_tls = tls.as_deref().filter(|_| cfg.sql.as_ref().is_some_and(|s| s.tls));
    let sql = cfg.sql.as_ref().and_then(|spec| match rt.block_on(build_sql(spec, &plugins, sql_tls)) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(e);
            None
        }
    });
    match routing {
        Ok(routing) if errors.is_empty() => {
            let stores = engine.stores().clone();
            Ok(Built { live: Live::new(routing), plugins: Arc::new(plugins), engine, sql, cluster, stores, tls })
        }
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The SQL listener's shared state: its router plugin (or the builtin
/// split) and one replica lb policy per replica set.
async fn build_sql(spec: &crate::config::SqlSpec, plugins: &Plugins, tls: Option<&crate::tls::TlsHub>) -> Result<Arc<SqlProxy>, Error> {
    let slot = |name: &String| plugins.get(name).ok_or_else(|| Error::internal(format!("plugin {name:?} failed to load")));
    let router: Arc<dyn SqlRouter> = match &spec.router {
        None => Arc::new(ClassicSplit),
        Some(name) => {
            let slot = slot(name)?;
            let r = Arc::new(WasmSqlRouter::new(slot.current().plugin.clone()).await.map_err(|e| crate::live::locate(e, &slot.spec))?);
            slot.add_user(r.clone());
            r
        }
    };
    let mut lbs: Vec<Arc<dyn LbPolicy>> = Vec::new();
    let sets = 1 + spec.replicas.iter().filter_map(|r| r.group.as_ref()).collect::<std::collections::BTreeSet<_>>().len();
    let mut wasm_lbs = Vec::new();
    for _ in 0..sets {
        match &spec.replica_lb {
            None => lbs.push(Arc::new(RoundRobin::default())),
            Some(name) => {
                let lb = Arc::new(WasmLb::new(slot(name)?.current().plugin.clone()).await?);
                wasm_lbs.push(lb.clone());
                lbs.push(lb);
            }
        }
    }
    let mut it = lbs.into_iter();
    let proxy = Arc::new(SqlProxy::new(spec, router, || it.next().expect("one policy per replica set")).with_tls(tls));
    if let Some(name) = &spec.replica_lb {
        let slot = slot(name)?;
        for (set, lb) in proxy.replica_sets().zip(wasm_lbs) {
            slot.add_user(Arc::new(LbUser { upstream: set.upstream.clone(), lb }));
        }
    }
    Ok(proxy)
}

/// A ready-to-run Pingora server for the config read from `file` (`text`:
/// the file as read, the baseline of a reload).
pub fn server(cfg: &ValidConfig, file: &std::path::Path, text: String, built: Built, upgrade: bool) -> Result<Server, Error> {
    // SIGTERM: stop accepting, give in-flight requests the grace, then stop
    // the runtimes within 2 s more (Pingora would wait 300 s).
    let conf = ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(cfg.grace_ms.div_ceil(1000)),
        graceful_shutdown_timeout_seconds: Some(2),
        work_stealing: cfg.work_stealing,
        upgrade_sock: cfg.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    // With `upgrade`, bootstrap waits for the old process's listening
    // sockets; everything above (plugins, stores, cluster) is already up.
    let opt = Opt { upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let gateway = Gateway {
        live: built.live.clone(),
        request_id_header: crate::proxy::IdHeader::new(
            http::HeaderName::from_bytes(cfg.request_id_header.as_bytes()).map_err(|e| Error::internal(format!("server.request_id_header: {e}")))?,
        ),
        hsts: built.tls.as_ref().and_then(|t| t.hsts().map(|v| http::HeaderValue::from_str(v).expect("ascii"))),
        redirect_https: cfg.redirect_https.then(|| cfg.tls.as_ref().map(|t| t.listen.port())).flatten(),
        access_log: cfg.log.as_ref().map(crate::accesslog::AccessLog::start).transpose()?,
    };
    let mut http = pingora::proxy::http_proxy(&server.configuration, gateway);
    if cfg.h2c {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        http.server_options = Some(options);
    }
    let app = crate::proxy::Capped::new(http, cfg.max_connections);
    let mut proxy = pingora::services::listening::Service::new("switchyard".into(), app);
    proxy.add_listener(unbuffered_tcp(&cfg.listen.to_string()));
    if let (Some(spec), Some(hub)) = (&cfg.tls, &built.tls) {
        let settings = hub.settings().map_err(|e| Error::internal(format!("server.tls: {e}")))?;
        proxy.add_listener(unbuffered_tcp(&spec.listen.to_string()).tls(settings));
    }
    server.add_service(proxy);
    server.add_service(pingora::services::background::background_service(
        "health",
        HealthChecker { live: built.live.clone() },
    ));
    server.add_service(pingora::services::background::background_service(
        "plugin watcher",
        PluginWatcher { plugins: built.plugins.clone(), live: built.live.clone() },
    ));
    let config = crate::reload::ConfigReload::new(file.to_path_buf(), text, built.live.clone(), built.plugins.clone(), built.engine.clone(), built.stores.clone());
    let reloader = crate::reload::Reloader { plugins: built.plugins.clone(), tls: built.tls.clone(), config: Arc::new(config) };
    server.add_service(pingora::services::background::background_service("reload", reloader.clone()));
    if let Some(sql) = &built.sql {
        server.add_service(crate::sql::service(sql.clone()));
        server.add_service(pingora::services::background::background_service("sql health", SqlHealth(sql.clone())));
    }
    if let Some(cluster) = &built.cluster {
        server.add_service(pingora::services::background::background_service("cluster", crate::cluster::ClusterService(cluster.clone())));
    }
    let fleet = cfg.fleet.clone().map(|spec| crate::fleet::Fleet::new(spec, built.plugins.clone()));
    if let Some(fleet) = &fleet {
        server.add_service(pingora::services::background::background_service("fleet", crate::fleet::FleetService(fleet.clone())));
    }
    if let Some(spec) = &cfg.admin {
        let api = crate::admin::AdminApi {
            spec: spec.clone(),
            plugins: built.plugins.clone(),
            live: built.live.clone(),
            sql: built.sql.clone(),
            cluster: built.cluster.clone(),
            stores: built.stores.clone(),
            reloader,
            fleet,
        };
        server.add_service(crate::admin::service(api));
    }
    for (addr, name) in &cfg.demo {
        let backend = crate::demo::DemoBackend::new(name, Default::default(), 200);
        server.add_service(crate::demo::service(&addr.to_string(), backend));
    }
    Ok(server)
}

/// On SIGTERM or SIGINT, exit as soon as nothing is in flight (HTTP
/// requests, SQL commands) for 60 ms, instead of waiting out all of
/// `grace_ms`: an idle gateway stops at once. Pingora's own grace still
/// bounds a drain that never ends, and it has already stopped accepting.
/// A second SIGINT exits at once (130).
pub fn exit_when_drained(drain_delay: std::time::Duration) {
    let watcher = move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // `/healthz` says 503 while the gateway still serves (`Signals`
            // holds Pingora's shutdown back as long).
            DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(drain_delay) => {}
                _ = int.recv() => {
                    tracing::warn!("{name}, then SIGINT: exiting without waiting for what is in flight");
                    std::process::exit(130);
                }
            }
            let m = crate::metrics::metrics();
            let mut quiet = 0;
            while quiet < 3 {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                    // A second Ctrl-C (or SIGINT) does not wait for the drain.
                    _ = int.recv() => {
                        tracing::warn!("{name}, then SIGINT: exiting without waiting for what is in flight");
                        std::process::exit(130);
                    }
                }
                quiet = if m.active_requests.get() == 0 && m.sql_active_commands.get() == 0 { quiet + 1 } else { 0 };
            }
            tracing::info!("{name}: nothing in flight, exiting");
            std::process::exit(0);
        });
    };
    if let Err(e) = std::thread::Builder::new().name("switchyard-drain".into()).spawn(watcher) {
        tracing::warn!("no early exit on SIGTERM (the full grace applies): {e}");
    }
}

/// Set on SIGTERM or SIGINT, before anything stops: `/healthz` answers 503.
pub static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Shutdown signals: SIGTERM (a service manager's stop) and SIGINT (Ctrl-C)
/// both drain, as `exit_when_drained` and `grace_ms` describe, after
/// `drain_delay_ms` of answering `/healthz` with 503; Pingora's own watcher
/// would make SIGINT drop what is in flight. SIGQUIT keeps its Pingora
/// meaning (graceful upgrade).
pub struct Signals {
    pub drain_delay: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for Signals {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        use pingora::server::ShutdownSignal;
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot watch shutdown signals; stop the gateway with SIGKILL");
            return std::future::pending().await;
        };
        let signal = tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
        };
        DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.drain_delay).await;
        signal
    }
}

/// Serve until a shutdown signal has drained the gateway, then exit.
pub fn run(server: Server, drain_delay: std::time::Duration) -> ! {
    server.run(pingora::server::RunArgs { shutdown_signal: Box::new(Signals { drain_delay }) });
    std::process::exit(0)
}

/// A plain TCP listener without Pingora's 64 KiB per-connection read
/// buffer: HTTP/1 and the MySQL protocol read into buffers of their own,
/// so it only cost a copy and 64 KiB per idle connection (the hostile
/// bench: 10,000 idle connections held 893 MiB with it).
pub fn unbuffered_tcp(addr: &str) -> pingora::listeners::ListenerConfig {
    use pingora::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
    pingora::listeners::ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}
