//! Config file -> validated model. Parse errors and semantic errors both name
//! the key path and the line, and every error is reported, not just the first.

mod collect;
mod fleet;
mod log;
mod model;
mod tls;
mod validate;

pub use fleet::{FleetSpec, FleetTls};
pub use log::{default_fields, Field, LogFormat, LogSpec};
pub use model::*;
pub use tls::{CertSpec, Protocol, SqlBackendTls, TlsSpec, UpstreamTls};
pub use validate::{AccessSpec, AdminSpec, CentralSpec, ClusterSpec, RouteAccessSpec, DurableSpec, IoTimeouts, PluginSpec, RouteSpec, SessionSpec, SqlReplicaSpec, SqlSpec, UpstreamSpec, ValidConfig};

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `upstreams[0].backends[1].address`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All problems found in one config file.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The file they were found in.
    pub file: PathBuf,
    /// Every problem, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read, parse and validate a config file.
pub fn load(file: &Path) -> Result<ValidConfig, ConfigErrors> {
    check(file).config
}

/// Parse and validate config text; relative plugin paths resolve against `base`.
pub fn parse(text: &str, base: &Path) -> Result<ValidConfig, Vec<ConfigError>> {
    parse_keeping_plugins(text, base).map_err(|(errors, _)| errors)
}

/// As [`parse`]; on errors, also the plugins whose own sections are free
/// of them, so their configs can be checked in the same run.
fn parse_keeping_plugins(text: &str, base: &Path) -> Result<ValidConfig, (Vec<ConfigError>, Vec<PluginSpec>)> {
    let collect::Collected { raw, mut errors, cleaned, stand_ins } = collect::parse_all(text);
    let Some(raw) = raw else { return Err((errors, Vec::new())) };
    let (semantic, plugins) = match validate::validate(raw, &cleaned, base) {
        Ok(valid) if errors.is_empty() => return Ok(valid),
        Ok(valid) => (Vec::new(), valid.plugins),
        Err(failed) => failed,
    };
    // What the checks say about a stand-in for a missing key is a
    // consequence of an error already reported.
    let semantic = semantic.into_iter().filter(|e| !stand_ins.iter().any(|s| collect::is_under(&e.path, s)));
    errors.extend(collect::relocate(text, semantic.collect()));
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    let clean = |name: &str| !errors.iter().any(|e| collect::is_under(&e.path, &format!("plugins.{name}")));
    let plugins = plugins.into_values().filter(|p| clean(&p.name)).collect();
    Err((errors, plugins))
}

/// A config file as `check` sees it.
pub struct Checked {
    /// The file's text (plugin errors are located in it).
    pub text: String,
    /// The config, or every error in file order.
    pub config: Result<ValidConfig, ConfigErrors>,
    /// When the config has errors: the plugins whose own sections have
    /// none, to load and configure anyway.
    pub plugins: Vec<PluginSpec>,
}

/// Read, parse and validate a config file, keeping what `check` needs
/// when it has errors.
pub fn check(file: &Path) -> Checked {
    let fail = |errors| ConfigErrors { file: file.to_path_buf(), errors };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            let error = ConfigError { path: "(file)".into(), line: None, message: format!("cannot read: {e}") };
            return Checked { text: String::new(), config: Err(fail(vec![error])), plugins: Vec::new() };
        }
    };
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    match parse_keeping_plugins(&text, &base) {
        Ok(valid) => Checked { text, config: Ok(valid), plugins: Vec::new() },
        Err((errors, plugins)) => Checked { text, config: Err(fail(errors)), plugins },
    }
}

/// A plugin's rejection of its config (the text its `configure` returned)
/// as one error per problem, each at the line of the key it names in
/// `[plugins.NAME.config]` (`plugins.NAME.config.KEY`).
pub fn plugin_config_errors(text: &str, plugin: &str, said: &str) -> Vec<ConfigError> {
    collect::plugin_config_errors(text, plugin, said)
}

impl ValidConfig {
    /// Defaults worth knowing that the file does not spell out: which
    /// `on_error` a plugin without one got, and why.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for p in self.plugins.values().filter(|p| p.on_error_set.is_none()) {
            let used = |pred: &dyn Fn(&RouteSpec) -> bool| self.routes.iter().any(pred);
            let why = if used(&|r| r.session.as_deref() == Some(p.name.as_str())) {
                "the default for session plugins: a failed call answers 503, never a request without its session"
            } else if used(&|r| r.access.as_ref().is_some_and(|a| a.plugin == p.name)) {
                "access plugins always fail closed: a failed check denies"
            } else if self.sql.as_ref().is_some_and(|s| s.router.as_deref() == Some(p.name.as_str())) {
                "the default for SQL routers: a failed call is routed by the builtin read/write split"
            } else if self.upstreams.iter().any(|u| u.lb.as_deref() == Some(p.name.as_str()))
                || self.sql.as_ref().is_some_and(|s| s.replica_lb.as_deref() == Some(p.name.as_str()))
            {
                "the default for lb plugins: a failed call is served by the builtin round robin"
            } else {
                continue;
            };
            let on_error = match p.on_error {
                OnError::FailClosed => "fail-closed",
                OnError::Fallback => "fallback",
            };
            notes.push(format!("plugins.{}: on_error not set: {on_error} ({why})", p.name));
        }
        notes
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any file will do for `path`: nothing is loaded here.
    fn config(plugins: &str) -> ValidConfig {
        let text = format!(
            "[session]\nkeys = [\"{}\"]\n{plugins}\n[[upstreams]]\nname = \"web\"\nlb = \"wrr\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
             [[routes]]\nupstream = \"web\"\nsession = \"cart\"\n",
            "k".repeat(32)
        );
        parse(&text, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_session_plugin_fails_closed_unless_told_otherwise() {
        let cfg = config("[plugins.cart]\npath = \"Cargo.toml\"\n[plugins.wrr]\npath = \"Cargo.toml\"\n");
        assert_eq!(cfg.plugins["cart"].on_error, OnError::FailClosed);
        assert_eq!(cfg.plugins["wrr"].on_error, OnError::Fallback);
        let notes = cfg.notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("plugins.cart: on_error not set: fail-closed (the default for session plugins"), "{notes:?}");
        assert!(notes[1].starts_with("plugins.wrr: on_error not set: fallback (the default for lb plugins"), "{notes:?}");
        let cfg = config("[plugins.cart]\npath = \"Cargo.toml\"\non_error = \"fallback\"\n[plugins.wrr]\npath = \"Cargo.toml\"\non_error = \"fail-closed\"\n");
        assert_eq!(cfg.plugins["cart"].on_error, OnError::Fallback, "as written");
        assert!(cfg.notes().is_empty(), "{:?}", cfg.notes());
    }
}
