//! The command line: `run`, `check`, `plugin inspect|list|push|rollback|history`,
//! `sessions list|revoke`, `upstreams`, `demo-backend`, and `bench` (handed to the `switchyard-bench` binary).

use crate::wasm::PluginSlot;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Switchyard: a gateway whose policies are WebAssembly components.
#[derive(Parser)]
#[command(name = "switchyard", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listening sockets of a running gateway with the
        /// same `[server] upgrade_sock` (send it SIGQUIT once this one says
        /// "Bootstrap starting"): a binary upgrade without a refused connection.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config and load every plugin; print each error and exit 1.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect a plugin component, or list, push, roll back plugins on a running gateway.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List a user's sessions on a running gateway, or end them all (every tier and node).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Reload a running gateway's config file, changed plugin files and TLS
    /// certificates, as SIGHUP does (admin `POST /reload`); with `--config-only`,
    /// the config file alone (`POST /config/reload`).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only the config file: routes, upstreams, plugins and their config tables.
        #[arg(long)]
        config_only: bool,
    },
    /// Show a running gateway's upstreams: health, weights, active requests, latency, errors.
    Upstreams {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run one demo HTTP backend (for tests, benches and demos).
    DemoBackend {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 200)]
        status: u16,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Where the cart app (`/cart`, `/exam`) keeps sessions: in the
        /// gateway's session headers, or in this process's memory.
        #[arg(long, value_enum, default_value = "header")]
        sessions: crate::demo::cart::Sessions,
        /// Serve HTTPS (h2 and http/1.1 by ALPN) with this certificate chain...
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// ...and this key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require a client certificate signed by this CA (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        client_ca: Option<PathBuf>,
        /// Accept cleartext HTTP/2 (prior knowledge) too.
        #[arg(long)]
        h2c: bool,
    },
    /// Compare plugins on a scenario (runs `switchyard-bench`; `switchyard bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Where the admin API is: `--admin` and `--token`, or the `[admin]`
/// section of the gateway's config file (`--config`).
#[derive(clap::Args)]
struct AdminArgs {
    /// The gateway's config file: the admin address and token come from its `[admin]`.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin API base URL, e.g. http://127.0.0.1:9901 (overrides --config).
    #[arg(long)]
    admin: Option<String>,
    /// Admin bearer token (overrides --config).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn target(self) -> Result<crate::admin::AdminTarget, String> {
        let from_config = match &self.config {
            Some(path) => {
                let cfg = crate::config::load(path).map_err(|e| e.to_string().trim_end().to_string())?;
                let admin = cfg.admin.ok_or_else(|| format!("{}: has no [admin] section", path.display()))?;
                Some((format!("http://{}", admin.listen), admin.token))
            }
            None => None,
        };
        let base = self.admin.or_else(|| from_config.as_ref().map(|c| c.0.clone()));
        let token = self.token.or_else(|| from_config.map(|c| c.1));
        match (base, token) {
            (Some(base), Some(token)) => Ok(crate::admin::AdminTarget { base, token }),
            (None, _) => Err("where is the admin API? give --config FILE or --admin URL".into()),
            (_, None) => Err("no admin token: give --config FILE, --token or SWITCHYARD_ADMIN_TOKEN".into()),
        }
    }
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show the Switchyard worlds a component exports, and its imports.
    Inspect { file: PathBuf },
    /// List a running gateway's plugins: version, origin, history, per-hook calls and faults.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hot-swap plugin NAME on a running gateway with FILE (admin `PUT /plugins/NAME`).
    Push {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        file: PathBuf,
        /// A JSON file with the new bytes' config table (else the running table stays).
        #[arg(long, value_name = "TABLE.json")]
        config_table: Option<PathBuf>,
    },
    /// Run FILE beside plugin NAME's running version for PERCENT % of the clients
    /// (admin `PUT /plugins/NAME?canary=P`); with --window, promoted or rolled back
    /// on its figures after that many calls.
    Canary {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        file: PathBuf,
        /// Share of the calls the canary serves, 1 to 99. The split is stable per key: the
        /// client address (lb, session), the subject (access), the SQL user.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=99))]
        percent: u32,
        /// Canary calls before the automatic verdict (off when absent).
        #[arg(long)]
        window: Option<u64>,
        /// A JSON file with the canary's config table (else the running table).
        #[arg(long, value_name = "TABLE.json")]
        config_table: Option<PathBuf>,
    },
    /// Make plugin NAME's canary the running version (admin `POST /plugins/NAME/canary/promote`).
    Promote {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
    },
    /// Stop plugin NAME's canary: every client on the running version (admin `DELETE /plugins/NAME/canary`).
    Abort {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
    },
    /// Step plugin NAME back to the version before the running one.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
    },
    /// The running version of plugin NAME and the versions a rollback reaches.
    History {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
    },
    /// Give plugin NAME a new config table, FILE holding it as a JSON object
    /// (admin `PUT /plugins/NAME/config`); the running bytes stay.
    Config {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// A user's sessions: id prefix, strategy, tier, created, last seen, node (admin `GET /sessions`).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// The user, as the sessions' principal attribute holds it.
        #[arg(long)]
        principal: String,
    },
    /// Sign a user out everywhere: end every session and cut their responses in flight
    /// (admin `DELETE /sessions`).
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        principal: String,
    },
}

/// Parse the arguments and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Plugin(cmd) => plugin(cmd),
        Command::Sessions(SessionsCommand::List { admin, principal }) => report(admin.target().and_then(|t| t.sessions("GET", &principal))),
        Command::Sessions(SessionsCommand::Revoke { admin, principal }) => report(admin.target().and_then(|t| t.sessions("DELETE", &principal))),
        Command::Upstreams { admin } => report(admin.target().and_then(|t| t.upstreams())),
        Command::Reload { admin, config_only } => report(admin.target().and_then(|t| t.reload(config_only))),
        Command::DemoBackend { listen, name, delay_ms, status, threads, sessions, tls_cert, tls_key, client_ca, h2c } => {
            let conf = pingora::server::configuration::ServerConf { threads, ..Default::default() };
            let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let mut backend = crate::demo::DemoBackend::new(&name, std::time::Duration::from_millis(delay_ms), status);
            backend.cart = crate::demo::cart::Cart::new(sessions);
            let tls = match demo_tls(&listen, tls_cert, tls_key, client_ca) {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("demo-backend: {e}");
                    return ExitCode::from(2);
                }
            };
            server.add_service(crate::demo::service_over(&listen, backend, tls, h2c));
            server.run_forever()
        }
        Command::Bench { args } => bench(&args),
    }
}

/// The demo backend's TLS settings, on the gateway's own TLS code.
fn demo_tls(listen: &str, cert: Option<PathBuf>, key: Option<PathBuf>, client_ca: Option<PathBuf>) -> Result<Option<pingora::listeners::tls::TlsSettings>, String> {
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    let spec = crate::config::TlsSpec {
        listen: listen.parse().map_err(|e| format!("--listen {listen}: {e}"))?,
        certs: vec![crate::config::CertSpec { cert, key, names: Vec::new() }],
        h2: true,
        client_ca,
        client_required: true,
        hsts_max_age_s: 0,
        hsts_include_subdomains: false,
        watch_ms: 0,
    };
    let hub = crate::tls::TlsHub::new(&spec).map_err(|e| e.join("; "))?;
    hub.settings().map(Some)
}

/// Run `switchyard-bench` (next to this binary, else on PATH) with `args`:
/// the bench tool and its dependencies stay out of the gateway binary.
fn bench(args: &[String]) -> ExitCode {
    const NAME: &str = "switchyard-bench";
    let beside = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join(NAME))).filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(NAME));
    match std::process::Command::new(&program).args(args).status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("error: switchyard bench needs the {NAME} binary next to switchyard: build it with `cargo build --release -p switchyard-benches`");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", program.display());
            ExitCode::from(1)
        }
    }
}

/// The config, the server built from it and the text it was read from;
/// otherwise every problem is printed, each at its key path and line, in
/// file order, and the exit code is 1.
fn load(path: &std::path::Path) -> Result<(crate::config::ValidConfig, crate::server::Built, String), ExitCode> {
    let checked = crate::config::check(path);
    let cfg = match checked.config {
        Ok(cfg) => cfg,
        Err(mut errors) => {
            // The plugins whose own sections are sound are still loaded and
            // configured: their errors belong in this run too.
            let (located, other) = plugin_problems(&checked.text, prove_plugins(&checked.plugins));
            errors.errors.extend(located);
            return Err(report_errors(path, errors, other));
        }
    };
    let built = crate::server::build(&cfg).map_err(|failed| {
        let named = failed.into_iter().map(|e| (cfg.plugins.keys().find(|n| PluginSlot::config_rejection(&e, n).is_some()).cloned(), e)).collect();
        let (located, other) = plugin_problems(&checked.text, named);
        report_errors(path, crate::config::ConfigErrors { file: path.to_path_buf(), errors: located }, other)
    })?;
    Ok((cfg, built, checked.text))
}

/// Load and configure each plugin on its own (no server): the errors,
/// each with the plugin it is about.
fn prove_plugins(specs: &[crate::config::PluginSpec]) -> Vec<(Option<String>, crate::error::Error)> {
    if specs.is_empty() {
        return Vec::new();
    }
    let engine = crate::wasm::Engine::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let (engine, rt) = match (engine, rt) {
        (Ok(engine), Ok(rt)) => (engine, rt),
        (Err(e), _) => return vec![(None, e)],
        (_, Err(e)) => return vec![(None, crate::error::Error::internal(format!("runtime: {e}")))],
    };
    specs.iter().filter_map(|spec| rt.block_on(PluginSlot::prove(&engine, spec)).err().map(|e| (Some(spec.name.clone()), e))).collect()
}

/// A plugin's rejection of its config becomes one error per problem at
/// the line of its key; every other error stays as it is.
fn plugin_problems(text: &str, errors: Vec<(Option<String>, crate::error::Error)>) -> (Vec<crate::config::ConfigError>, Vec<crate::error::Error>) {
    let mut located = Vec::new();
    let mut other = Vec::new();
    for (plugin, e) in errors {
        match plugin.as_deref().and_then(|n| Some((n, PluginSlot::config_rejection(&e, n)?))) {
            Some((name, said)) => located.extend(crate::config::plugin_config_errors(text, name, said)),
            None => other.push(e),
        }
    }
    (located, other)
}

/// Print every problem once (a plugin used twice is configured twice),
/// those with a line in file order; the exit code.
fn report_errors(path: &std::path::Path, mut errors: crate::config::ConfigErrors, other: Vec<crate::error::Error>) -> ExitCode {
    errors.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    let mut once: Vec<crate::config::ConfigError> = Vec::new();
    for e in errors.errors.drain(..) {
        if !once.contains(&e) {
            once.push(e);
        }
    }
    errors.errors = once;
    eprint!("{errors}");
    let mut printed = Vec::new();
    for e in other.into_iter().map(|e| e.to_string()) {
        if !printed.contains(&e) {
            eprintln!("{}: {e}", path.display());
            printed.push(e);
        }
    }
    ExitCode::from(1)
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok((cfg, built, _)) => {
            println!(
                "{}: ok ({} plugins, {} upstreams, {} routes)",
                path.display(),
                built.plugins.len(),
                built.live.routing().upstreams.len(),
                cfg.routes.len()
            );
            // Not errors: the defaults the file leaves implicit.
            for note in cfg.notes() {
                println!("{}: note: {note}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &std::path::Path, upgrade: bool) -> ExitCode {
    // Before anything slow: a SIGHUP during start-up is a reload, not the end.
    crate::reload::Hangups::catch();
    let (cfg, built, text) = match load(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    tracing::info!(listen = %cfg.listen, upstreams = built.live.routing().upstreams.len(), plugins = built.plugins.len(), "switchyard serving");
    match crate::server::server(&cfg, path, text, built, upgrade) {
        Ok(server) => {
            let delay = std::time::Duration::from_millis(cfg.drain_delay_ms);
            crate::server::exit_when_drained(delay);
            crate::server::run(server, delay)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn plugin(cmd: PluginCommand) -> ExitCode {
    report(match cmd {
        PluginCommand::Inspect { file } => std::fs::read(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|bytes| {
                let engine = crate::wasm::Engine::new().map_err(|e| e.to_string())?;
                crate::wasm::inspect(&engine, &bytes).map_err(|e| format!("{}: {e}", file.display()))
            }),
        PluginCommand::List { admin } => admin.target().and_then(|t| t.plugins()),
        PluginCommand::Push { admin, name, file, config_table } => admin.target().and_then(|t| t.push(&name, &file, config_table.as_deref())),
        PluginCommand::Canary { admin, name, file, percent, window, config_table } => {
            let mut query = format!("canary={percent}");
            if let Some(w) = window {
                query += &format!("&window={w}");
            }
            admin.target().and_then(|t| t.canary(&name, &file, &query, config_table.as_deref()))
        }
        PluginCommand::Promote { admin, name } => admin.target().and_then(|t| t.call_plain("POST", &format!("/plugins/{name}/canary/promote"))),
        PluginCommand::Abort { admin, name } => admin.target().and_then(|t| t.call_plain("DELETE", &format!("/plugins/{name}/canary"))),
        PluginCommand::Rollback { admin, name } => admin.target().and_then(|t| t.rollback(&name)),
        PluginCommand::History { admin, name } => admin.target().and_then(|t| t.history(&name)),
        PluginCommand::Config { admin, name, file } => admin.target().and_then(|t| t.config(&name, &file)),
    })
}

/// Print a command's answer, or its error, and exit accordingly.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
