//! `switchyard bench`: runs one scenario once per plugin, on the same
//! generated load and the same backends, and writes a report (issue 14).
//!
//! The command line and the scenario registry live here; `backend` holds
//! the capacity-model servers, `load` the load generators, `report` and
//! `plot` the outputs, `scenarios/` one file per family.

pub mod backend;
pub mod live;
pub mod load;
mod plot;
pub mod report;
pub mod scenarios;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use report::{Machine, Results};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_tests::Proc;

/// Compare strategies per plugin on a scenario that reproduces a paper's figure.
#[derive(Parser, Debug)]
#[command(name = "switchyard bench", bin_name = "switchyard bench", version, after_help = "Scenarios: `switchyard bench --list`. Docs: docs/bench.md.")]
pub struct Args {
    /// The scenario to run (see --list), or `live`.
    scenario: Option<String>,
    /// `live`: the plugin whose running canary is compared.
    target: Option<String>,
    /// `live`: the gateway's admin listener, http://HOST:PORT.
    #[arg(long)]
    admin: Option<String>,
    /// `live`: the admin token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `live`: seconds between two readings.
    #[arg(long, default_value_t = 1.0)]
    every: f64,
    /// List the scenarios, one line each.
    #[arg(long)]
    list: bool,
    /// Plugins to compare: shipped names (round-robin, session-sticky, ...) or paths to .wasm files.
    /// Default: the scenario's shipped plugins.
    #[arg(long, value_delimiter = ',')]
    plugins: Vec<String>,
    /// Where report.html and results.json go (default bench-out/SCENARIO).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repetitions of each run (at least 3 for a meaningful spread).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Seconds each load step runs (default per scenario).
    #[arg(long)]
    duration: Option<f64>,
    /// Short steps and fewer points: a smoke run of a few seconds per plugin.
    #[arg(long)]
    quick: bool,
    /// Seed of arrivals, keys and service times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of each gateway node the session scenarios start
    /// (their 3 nodes share this machine with the load, the backends and
    /// memcached: more threads than cores measure the kernel's switching).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    node_threads: u32,
}

/// What kind of plugin a scenario compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    Lb,
    Session,
    Access,
    Sql,
    /// High availability: the session strategies a failover is measured with.
    Ha,
}

impl Family {
    /// The shipped plugins of this family (names as in the README).
    pub fn shipped(self) -> &'static [&'static str] {
        match self {
            Self::Lb => &["round-robin", "weighted-round-robin", "least-connections", "fastest-response", "consistent-hash"],
            Self::Session => &["session-replicated", "session-centralized", "session-centralized-dynamic", "session-sticky", "session-o-session"],
            Self::Access => &["access-s-ucon", "access-rbac"],
            Self::Sql => &["rw-split", "primary-only"],
            Self::Ha => &["session-centralized", "session-replicated"],
        }
    }
}

/// One scenario of the registry.
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub family: Family,
    /// Run when `--plugins` is not given.
    pub defaults: &'static [&'static str],
    pub run: fn(&Ctx) -> Result<Results, String>,
}

/// A plugin to bench: its label in the report, its policy (file stem with
/// `-`, which picks scenario-specific config) and its file.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub label: String,
    pub kind: String,
    pub path: PathBuf,
}

/// What a scenario runs with.
pub struct Ctx {
    pub plugins: Vec<Plugin>,
    pub reps: usize,
    pub quick: bool,
    pub duration: Option<Duration>,
    pub seed: u64,
    /// `--node-threads`.
    pub node_threads: usize,
    bar: ProgressBar,
}

impl Ctx {
    /// `--duration`, else `quick` or `full` seconds.
    pub fn step(&self, quick: f64, full: f64) -> Duration {
        self.duration.unwrap_or_else(|| Duration::from_secs_f64(if self.quick { quick } else { full }))
    }

    /// `quick` under `--quick`, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Start the progress bar for `runs` runs.
    pub fn progress(&self, runs: usize) {
        self.bar.set_length(runs as u64);
    }

    /// One run done (or starting): shows `what`.
    pub fn tick(&self, what: &str) {
        self.bar.set_message(what.to_string());
        self.bar.inc(1);
    }

    /// The load generator's runtime.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("bench-load").enable_all().build().expect("runtime")
    }
}

/// Every scenario, in the order `--list` shows them.
pub fn registry() -> Vec<Scenario> {
    let mut all = scenarios::lb::scenarios();
    all.extend(scenarios::sessions::scenarios());
    all.extend(scenarios::access::scenarios());
    all.extend(scenarios::sql::scenarios());
    all.extend(scenarios::ha::scenarios());
    all
}

/// `switchyard-bench`'s main.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let registry = registry();
    if args.list {
        for s in &registry {
            println!("{:<18} {}", s.name, s.summary);
        }
        println!("{:<18} a running gateway's canary against its baseline (--admin URL NAME)", "live");
        return ExitCode::SUCCESS;
    }
    if args.scenario.as_deref() == Some("live") {
        return match live_args(&args) {
            Ok(l) => finish(live::run(&l), "live", args.out.clone().unwrap_or_else(|| Path::new("bench-out").join("live"))),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    match prepare(&args, &registry) {
        Ok((scenario, ctx)) => run(&args, scenario, &ctx),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn prepare<'a>(args: &Args, registry: &'a [Scenario]) -> Result<(&'a Scenario, Ctx), String> {
    let names = || registry.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
    let name = args.scenario.as_deref().ok_or_else(|| format!("which scenario? one of: {} (or --list)", names()))?;
    let scenario = registry.iter().find(|s| s.name == name).ok_or_else(|| format!("unknown scenario {name:?}; scenarios: {}", names()))?;
    if let Some(extra) = &args.target {
        return Err(format!("unexpected argument {extra:?}: a plugin name follows only `live`; {name} takes --plugins"));
    }
    let specs: Vec<String> = if args.plugins.is_empty() { scenario.defaults.iter().map(|s| s.to_string()).collect() } else { args.plugins.clone() };
    let mut plugins: Vec<Plugin> = Vec::new();
    for spec in specs.iter().filter(|s| !s.is_empty()) {
        let mut p = resolve(spec, scenario)?;
        let n = plugins.iter().filter(|q| q.label == p.label || q.label.starts_with(&format!("{}#", p.label))).count();
        if n > 0 {
            p.label = format!("{}#{}", p.label, n + 1);
        }
        plugins.push(p);
    }
    switchyard_tests::try_switchyard_bin()?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}").expect("template"),
    );
    let duration = match args.duration {
        Some(d) if !(d > 0.0 && d < 86_400.0) => return Err(format!("--duration {d}: must be more than 0 and less than a day")),
        d => d.map(Duration::from_secs_f64),
    };
    Ok((scenario, Ctx { plugins, reps: args.reps as usize, quick: args.quick, duration, seed: args.seed, node_threads: args.node_threads as usize, bar }))
}

/// A shipped name (in the plugin build directory) or a path to a `.wasm`.
fn resolve(spec: &str, scenario: &Scenario) -> Result<Plugin, String> {
    let is_path = spec.ends_with(".wasm") || spec.contains('/');
    let path = if is_path { PathBuf::from(spec) } else { find_shipped(spec, scenario)? };
    if !path.is_file() {
        return Err(format!("plugin file {} not found", path.display()));
    }
    // The gateway reads plugin paths relative to its config file, which is in a temp dir.
    let path = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let label = if is_path { stem.clone() } else { spec.to_string() };
    Ok(Plugin { label, kind: stem.replace('_', "-"), path })
}

fn find_shipped(name: &str, scenario: &Scenario) -> Result<PathBuf, String> {
    let all = [Family::Lb, Family::Session, Family::Access, Family::Sql, Family::Ha];
    if !all.iter().any(|f| f.shipped().contains(&name)) {
        return Err(format!(
            "unknown plugin {name:?}; {} takes {} or a path to a .wasm file",
            scenario.name,
            scenario.family.shipped().join(", ")
        ));
    }
    shipped_path(name)
}

/// The built file of a shipped plugin (`session-o-session` ->
/// `session_o_session.wasm` in the plugin build directory).
pub fn shipped_path(name: &str) -> Result<PathBuf, String> {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let mut dirs = vec![switchyard_tests::plugin_dir()];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("plugins/wasm32-wasip2/release"));
    }
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()).ok_or_else(|| {
        format!("plugin {name:?} is not built (looked for {file} in {}): build the plugins with `bash -c '. scripts/common.sh; build_plugins'` or set SWITCHYARD_PLUGIN_DIR", dirs[0].display())
    })
}

/// `live`'s command line: `--admin URL NAME`, the token, the times.
fn live_args(args: &Args) -> Result<live::Live, String> {
    let name = args.target.clone().ok_or("live: which plugin? switchyard bench live --admin http://HOST:PORT NAME")?;
    let admin = args.admin.as_deref().ok_or("live: --admin http://HOST:PORT is required")?;
    let secs = |what: &str, v: f64| if v > 0.0 && v < 86_400.0 { Ok(Duration::from_secs_f64(v)) } else { Err(format!("--{what} {v}: must be more than 0 and less than a day")) };
    let duration = secs("duration", args.duration.unwrap_or(30.0))?;
    live::Live::new(admin, args.token.clone().unwrap_or_default(), name, duration, secs("every", args.every)?)
}

fn run(args: &Args, scenario: &Scenario, ctx: &Ctx) -> ExitCode {
    let out = args.out.clone().unwrap_or_else(|| Path::new("bench-out").join(scenario.name));
    let result = (scenario.run)(ctx);
    ctx.bar.finish_and_clear();
    finish(result, scenario.name, out)
}

/// Print and write a run's results, with the machine it ran on.
fn finish(result: Result<Results, String>, name: &str, out: PathBuf) -> ExitCode {
    let mut results = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {name}: {e}");
            return ExitCode::from(1);
        }
    };
    let machine = machine();
    if machine.switchyard.contains("/debug/") {
        results.notes.push("the gateway is a debug build: its CPU per request and latency are far above a release build's".into());
    }
    results.machine = Some(machine);
    print!("{}", results.markdown());
    match results.write(&out) {
        Ok(()) => {
            println!("\nreport: {}  data: {}", out.join("report.html").display(), out.join("results.json").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}

/// The machine, the versions and the exact command.
fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let cpu = read("/proc/cpuinfo").lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    let output = |cmd: &mut std::process::Command| {
        cmd.output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "unknown".into())
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let gateway = switchyard_tests::try_switchyard_bin().unwrap_or_default();
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: cpu.unwrap_or_else(|| "unknown".into()),
        kernel: read("/proc/sys/kernel/osrelease"),
        load_avg: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        switchyard: format!("{} ({})", output(std::process::Command::new(&gateway).arg("--version")), gateway.display()),
        git: output(std::process::Command::new("git").arg("-C").arg(&repo).args(["describe", "--always", "--dirty", "--tags"])),
        command: std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" "),
        unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }
}

/// Have `switchyard check` load `config` (`{listen}` still to fill in): a
/// plugin of the wrong world, or a config the gateway rejects, comes back
/// as the gateway's own error instead of a gateway that never listens.
pub fn check_config(config: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("switchyard.toml");
    let listen = format!("127.0.0.1:{}", switchyard_tests::free_port());
    std::fs::write(&path, config.replace("{listen}", &listen)).map_err(|e| e.to_string())?;
    match switchyard_tests::check(&path) {
        (true, _) => Ok(()),
        (false, text) => Err(format!("the gateway rejected the config:\n{}", text.trim_end())),
    }
}

/// [`check_config`], then start the gateway.
pub fn start_gateway(config: &str) -> Result<Proc, String> {
    check_config(config)?;
    Ok(switchyard_tests::gateway(config))
}
