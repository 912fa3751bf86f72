//! `[log]`, the access log: format, destination, fields, sample rate and
//! queue, each checked with its key path and line.

use super::model::LogSection;
use super::validate::Checker;
use std::path::{Path, PathBuf};

/// The access log, validated.
#[derive(Debug, Clone)]
pub struct LogSpec {
    pub format: LogFormat,
    /// `None`: stdout.
    pub path: Option<PathBuf>,
    /// Fields of a JSON line, in order.
    pub fields: Vec<Field>,
    /// Share of requests logged, 0..=1.
    pub sample: f64,
    /// Lines waiting for the writer at most.
    pub queue: usize,
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    /// Apache/nginx combined, which log tools read as is.
    Combined,
}

/// One field of a JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    RequestId,
    Client,
    Method,
    Host,
    Path,
    Query,
    Protocol,
    Tls,
    Status,
    BytesIn,
    BytesOut,
    DurationMs,
    UpstreamMs,
    Route,
    Upstream,
    Backend,
    Retries,
    Session,
    Access,
    AccessReason,
    PluginFaults,
}

impl Field {
    /// Every field, in the default order.
    pub const ALL: [Field; 22] = [
        Field::Time,
        Field::RequestId,
        Field::Client,
        Field::Method,
        Field::Host,
        Field::Path,
        Field::Query,
        Field::Protocol,
        Field::Tls,
        Field::Status,
        Field::BytesIn,
        Field::BytesOut,
        Field::DurationMs,
        Field::UpstreamMs,
        Field::Route,
        Field::Upstream,
        Field::Backend,
        Field::Retries,
        Field::Session,
        Field::Access,
        Field::AccessReason,
        Field::PluginFaults,
    ];

    /// The JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::RequestId => "request_id",
            Field::Client => "client",
            Field::Method => "method",
            Field::Host => "host",
            Field::Path => "path",
            Field::Query => "query",
            Field::Protocol => "protocol",
            Field::Tls => "tls",
            Field::Status => "status",
            Field::BytesIn => "bytes_in",
            Field::BytesOut => "bytes_out",
            Field::DurationMs => "duration_ms",
            Field::UpstreamMs => "upstream_ms",
            Field::Route => "route",
            Field::Upstream => "upstream",
            Field::Backend => "backend",
            Field::Retries => "retries",
            Field::Session => "session",
            Field::Access => "access",
            Field::AccessReason => "access_reason",
            Field::PluginFaults => "plugin_faults",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The default JSON fields: all but `query` (query strings carry tokens).
pub fn default_fields() -> Vec<Field> {
    Field::ALL.into_iter().filter(|f| *f != Field::Query).collect()
}

pub(super) fn check_log(c: &mut Checker, l: &LogSection, base: &Path) -> Option<LogSpec> {
    let format = match l.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "json")) => LogFormat::Json,
        Some((_, "combined")) => LogFormat::Combined,
        Some((f, other)) => {
            c.err("log.format", f, format!("{other:?} is not json or combined"));
            LogFormat::Json
        }
    };
    let path = match l.path.as_ref() {
        None => None,
        Some(p) if p.get_ref() == "-" => None,
        Some(p) if p.get_ref().is_empty() => {
            c.err("log.path", p, "is empty: a file, or \"-\" for stdout");
            None
        }
        Some(p) => {
            let path = base.join(p.get_ref());
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() {
                c.err("log.path", p, format!("{} is not a directory: the log file's directory must exist", dir.display()));
            } else if path.is_dir() {
                c.err("log.path", p, format!("{} is a directory: name a file", path.display()));
            }
            Some(path)
        }
    };
    let fields = match &l.fields {
        None => default_fields(),
        Some(f) if format == LogFormat::Combined => {
            c.err("log.fields", f, "applies to the json format only: combined has its fixed fields");
            Vec::new()
        }
        Some(f) => {
            let mut out = Vec::new();
            for name in f.get_ref() {
                match Field::parse(name) {
                    Some(field) if out.contains(&field) => c.err("log.fields", f, format!("{name:?} is listed twice")),
                    Some(field) => out.push(field),
                    None => {
                        let all: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                        c.err("log.fields", f, format!("unknown field {name:?}, expected one of {}", all.join(", ")));
                    }
                }
            }
            if f.get_ref().is_empty() {
                c.err("log.fields", f, "is empty: list at least one field, or leave it out for the default set");
            }
            out
        }
    };
    let sample = match &l.sample {
        None => 1.0,
        Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            c.err("log.sample", s, format!("{} is not a share of requests: must be 0..=1", s.get_ref()));
            1.0
        }
    };
    let queue = match &l.queue {
        None => 8192,
        Some(q) if (1..=1_048_576).contains(q.get_ref()) => *q.get_ref() as usize,
        Some(q) => {
            c.err("log.queue", q, "must be 1..=1048576 (lines waiting for the writer)");
            1
        }
    };
    Some(LogSpec { format, path, fields, sample, queue })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use std::path::Path;

    const BASE: &str = "[[upstreams]]\nname = \"a\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n";

    fn errors(log: &str) -> Vec<String> {
        parse(&format!("{BASE}[log]\n{log}"), Path::new(".")).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_are_json_to_stdout_with_every_field_but_query() {
        let v = parse(&format!("{BASE}[log]\n"), Path::new(".")).unwrap();
        let log = v.log.unwrap();
        assert_eq!(log.format, super::LogFormat::Json);
        assert!(log.path.is_none());
        assert_eq!(log.fields.len(), super::Field::ALL.len() - 1);
        assert_eq!((log.sample, log.queue), (1.0, 8192));
        assert!(parse(BASE, Path::new(".")).unwrap().log.is_none(), "absent: off");
    }

    #[test]
    fn each_bad_key_is_named_with_its_line() {
        let e = errors("format = \"xml\"\nfields = [\"status\", \"colour\"]\nsample = 1.5\nqueue = 0\npath = \"/nonexistent-dir/x.log\"\n");
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].starts_with("line 7: log.format: \"xml\" is not json or combined"), "{e:?}");
        assert!(e[1].starts_with("line 8: log.fields: unknown field \"colour\""), "{e:?}");
        assert!(e[2].starts_with("line 9: log.sample"), "{e:?}");
        assert!(e[3].starts_with("line 10: log.queue: must be 1..=1048576"), "{e:?}");
        assert!(e[4].starts_with("line 11: log.path: /nonexistent-dir is not a directory"), "{e:?}");
        let e = errors("format = \"combined\"\nfields = [\"status\"]\n");
        assert!(e[0].starts_with("line 8: log.fields: applies to the json format only"), "{e:?}");
        let e = errors("fields = [\"status\", \"status\"]\n");
        assert!(e[0].contains("listed twice"), "{e:?}");
        let e = errors("sampel = 1\n");
        assert!(e[0].starts_with("line 7: log"), "{e:?}");
    }
}
