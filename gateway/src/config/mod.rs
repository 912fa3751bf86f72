//! Config file -> validated model. Parse errors and semantic errors both name
//! the key path and the line, and every error is reported, not just the first.

mod collect;
mod model;
mod validate;

pub use model::*;
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
    let fail = |errors| ConfigErrors { file: file.to_path_buf(), errors };
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(vec![ConfigError { path: "(file)".into(), line: None, message: format!("cannot read: {e}") }])
    })?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base).map_err(fail)
}

/// Parse and validate config text; relative plugin paths resolve against `base`.
pub fn parse(text: &str, base: &Path) -> Result<ValidConfig, Vec<ConfigError>> {
    let (raw, mut errors, cleaned) = collect::parse_all(text);
    let Some(raw) = raw else { return Err(errors) };
    match validate::validate(raw, &cleaned, base) {
        Ok(valid) if errors.is_empty() => Ok(valid),
        Ok(_) => Err(errors),
        Err(semantic) => {
            // Also report what the remaining config gets wrong.
            errors.extend(if cleaned == text { semantic } else { collect::relocate(text, semantic) });
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(errors)
        }
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}
