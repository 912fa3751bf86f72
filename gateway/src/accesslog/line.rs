//! One access log line, JSON or Apache/nginx combined, from a [`Record`].
//! Whatever a client sends (path, host, user agent, a reason quoting it)
//! is escaped, so no request can break a line or forge another.

use crate::config::{Field, LogFormat};
use std::cell::RefCell;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one request did, borrowed from its session and context.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub request_id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    pub tls: bool,
    /// 499: the client went away before an answer (nginx's code).
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub duration: Duration,
    /// The last backend attempt, from its connect to the end.
    pub upstream_time: Option<Duration>,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub retries: usize,
    /// `new`, `loaded`, `renewed` or `store_error`.
    pub session: Option<&'static str>,
    /// `permit`, `deny` or `revoked`.
    pub access: Option<&'static str>,
    pub access_reason: Option<&'a str>,
    pub plugin_faults: u32,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// The line for `r`, newline included, as of `now`.
pub fn format(format: LogFormat, fields: &[Field], r: &Record, now: SystemTime) -> String {
    // A default JSON line is about 400 bytes: one allocation, no growth.
    let mut out = String::with_capacity(512);
    match format {
        LogFormat::Json => json(&mut out, fields, r, now),
        LogFormat::Combined => combined(&mut out, r, now),
    }
    out.push('\n');
    out
}

fn json(out: &mut String, fields: &[Field], r: &Record, now: SystemTime) {
    out.push('{');
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key(*f));
        let s = |out: &mut String, v: Option<&str>| match v {
            Some(v) => json_str(out, v),
            None => out.push_str("null"),
        };
        match f {
            Field::Time => {
                out.push('"');
                stamp(out, now, false);
                out.push('"');
            }
            Field::RequestId => json_str(out, r.request_id),
            Field::Client => match r.client {
                Some(ip) => {
                    out.push('"');
                    addr(out, ip);
                    out.push('"');
                }
                None => out.push_str("null"),
            },
            Field::Method => json_str(out, r.method),
            Field::Host => s(out, r.host),
            Field::Path => json_str(out, r.path),
            Field::Query => s(out, r.query),
            Field::Protocol => json_str(out, r.protocol),
            Field::Tls => out.push_str(if r.tls { "true" } else { "false" }),
            Field::Status => num(out, r.status as u64),
            Field::BytesIn => num(out, r.bytes_in as u64),
            Field::BytesOut => num(out, r.bytes_out as u64),
            Field::DurationMs => ms(out, r.duration),
            Field::UpstreamMs => match r.upstream_time {
                Some(d) => ms(out, d),
                None => out.push_str("null"),
            },
            Field::Route => s(out, r.route),
            Field::Upstream => s(out, r.upstream),
            Field::Backend => s(out, r.backend),
            Field::Retries => num(out, r.retries as u64),
            Field::Session => s(out, r.session),
            Field::Access => s(out, r.access),
            Field::AccessReason => s(out, r.access_reason),
            Field::PluginFaults => num(out, u64::from(r.plugin_faults)),
        }
    }
    out.push('}');
}

/// A field's `"name":`, written once.
fn key(f: Field) -> &'static str {
    static KEYS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| Field::ALL.iter().map(|f| format!("\"{}\":", f.name())).collect());
    &KEYS[f as usize]
}

/// `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`.
fn combined(out: &mut String, r: &Record, now: SystemTime) {
    match r.client {
        Some(ip) => addr(out, ip),
        None => out.push('-'),
    }
    out.push_str(" - - [");
    stamp(out, now, true);
    out.push_str("] \"");
    clf_escape(out, r.method.as_bytes());
    out.push(' ');
    clf_escape(out, r.path.as_bytes());
    if let Some(q) = r.query {
        out.push('?');
        clf_escape(out, q.as_bytes());
    }
    out.push(' ');
    out.push_str(r.protocol);
    out.push_str("\" ");
    num(out, r.status as u64);
    out.push(' ');
    match r.bytes_out {
        0 => out.push('-'),
        n => num(out, n as u64),
    }
    for h in [r.referer, r.user_agent] {
        out.push_str(" \"");
        match h {
            Some(v) => clf_escape(out, v),
            None => out.push('-'),
        }
        out.push('"');
    }
}

fn num(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `n` as exactly three digits (`n < 1000`).
fn three(out: &mut String, n: u32) {
    for d in [n / 100, n / 10 % 10, n % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

/// Milliseconds with microsecond precision.
fn ms(out: &mut String, d: Duration) {
    let us = d.as_micros() as u64;
    num(out, us / 1000);
    out.push('.');
    three(out, (us % 1000) as u32);
}

/// The client's address; an IPv4 one without the formatting machinery.
pub(crate) fn addr(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(out, u64::from(o));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// The bytes a JSON string escapes: quotes, backslashes, control characters.
const JSON_ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
};

/// A JSON string: quotes, backslashes and every control character escaped.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if !JSON_ESCAPED[b as usize] {
            continue;
        }
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        out.push_str(&s[start..i]);
        match esc {
            "" => {
                let _ = write!(out, "\\u{b:04x}");
            }
            e => out.push_str(e),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// nginx's escaping for its text logs: `"`, `\`, control and non-ASCII
/// bytes as `\xHH`.
fn clf_escape(out: &mut String, v: &[u8]) {
    for &b in v {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\x{b:02X}");
            }
            _ => out.push(b as char),
        }
    }
}

/// The time in UTC: RFC 3339 with milliseconds (`2026-05-01T12:00:00.123Z`)
/// or the common log format's (`01/May/2026:12:00:00 +0000`). The
/// calendar part is computed once a second per thread.
fn stamp(out: &mut String, now: SystemTime, clf: bool) {
    thread_local! {
        static CACHE: RefCell<(u64, String, String)> = const { RefCell::new((u64::MAX, String::new(), String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    CACHE.with_borrow_mut(|(at, iso, common)| {
        if *at != secs {
            let t = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            *at = secs;
            *iso = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            *common = t.format("%d/%b/%Y:%H:%M:%S +0000").to_string();
        }
        if clf {
            out.push_str(common);
        } else {
            out.push_str(iso);
            out.push('.');
            three(out, since.subsec_millis());
            out.push('Z');
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_fields;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_777_636_800_123) // 2026-05-01T12:00:00.123Z
    }

    fn record() -> Record<'static> {
        Record {
            request_id: "abc-1",
            client: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            host: Some("example.com"),
            path: "/a",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            upstream_time: Some(Duration::from_micros(900)),
            route: Some("/"),
            upstream: Some("web"),
            backend: Some("127.0.0.1:9001"),
            ..Record::default()
        }
    }

    #[test]
    fn a_json_line_parses_and_carries_the_fields() {
        let line = format(LogFormat::Json, &default_fields(), &record(), at());
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-05-01T12:00:00.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], 0.9);
        assert_eq!(v["backend"], "127.0.0.1:9001");
        assert_eq!(v["session"], serde_json::Value::Null);
        assert_eq!(v["tls"], false);
        assert!(v.get("query").is_none(), "not a default field");
        let only = format(LogFormat::Json, &[Field::Status, Field::Path], &record(), at());
        assert_eq!(only, "{\"status\":200,\"path\":\"/a\"}\n");
    }

    #[test]
    fn the_combined_line_is_apaches() {
        let mut r = record();
        r.query = Some("x=1");
        r.user_agent = Some(b"curl/8.0");
        let line = format(LogFormat::Combined, &[], &r, at());
        assert_eq!(line, "127.0.0.1 - - [01/May/2026:12:00:00 +0000] \"GET /a?x=1 HTTP/1.1\" 200 12 \"-\" \"curl/8.0\"\n");
        r.bytes_out = 0;
        assert!(format(LogFormat::Combined, &[], &r, at()).contains(" 200 - "), "no body: -");
    }

    #[test]
    fn every_field_has_its_key() {
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i, "Field::ALL is in declaration order");
            assert_eq!(key(f), format!("\"{}\":", f.name()));
        }
    }

    #[test]
    fn addresses_and_durations_are_written_in_full() {
        let mut r = record();
        r.client = Some("10.0.0.255".parse().unwrap());
        r.duration = Duration::from_micros(5);
        r.upstream_time = Some(Duration::from_micros(12_345_678));
        let v: serde_json::Value = serde_json::from_str(&format(LogFormat::Json, &default_fields(), &r, at())).unwrap();
        assert_eq!((v["client"].as_str(), v["duration_ms"].as_f64(), v["upstream_ms"].as_f64()), (Some("10.0.0.255"), Some(0.005), Some(12345.678)));
        r.client = Some("2001:db8::1".parse().unwrap());
        assert!(format(LogFormat::Combined, &[], &r, at()).starts_with("2001:db8::1 - - [01/May/2026:12:00:00 +0000]"));
        let late = UNIX_EPOCH + Duration::from_millis(1_777_636_800_007);
        assert!(format(LogFormat::Json, &[Field::Time], &r, late).contains("12:00:00.007Z"));
    }

    /// A request that tries to end its line and forge another is escaped.
    #[test]
    fn quotes_and_newlines_cannot_break_a_line() {
        let mut r = record();
        r.path = "/x\"}\n{\"status\":500";
        r.host = Some("a\\b\u{1}");
        r.access_reason = Some("token \"forged\"\r\n");
        r.user_agent = Some(b"evil\" 200 -\n127.0.0.2 - - \xff");
        let line = format(LogFormat::Json, &default_fields(), &r, at());
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/x\"}\n{\"status\":500");
        assert_eq!(v["host"], "a\\b\u{1}");
        assert_eq!(v["access_reason"], "token \"forged\"\r\n");
        assert_eq!(v["status"], 200);
        let line = format(LogFormat::Combined, &[], &r, at());
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains("\"GET /x\\x22}\\x0A{\\x22status\\x22:500 HTTP/1.1\""), "{line}");
        assert!(line.ends_with("\"evil\\x22 200 -\\x0A127.0.0.2 - - \\xFF\"\n"), "{line}");
    }
}
