//! `switchyard bench live --admin URL NAME`: the canary of plugin NAME on a
//! running gateway, compared from the gateway's own per-version figures
//! (`GET /plugins/NAME/canary`), written in the report format of the other
//! scenarios: both versions over time, their latency distributions, the
//! outcome shares, and the decision with its thresholds.

use super::report::{Claim, Results};
use serde_json::Value;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Where the gateway is and what to watch.
pub struct Live {
    pub admin: SocketAddr,
    pub token: String,
    pub name: String,
    /// How long to watch (it stops earlier when the canary is decided).
    pub duration: Duration,
    /// Time between two readings.
    pub every: Duration,
}

impl Live {
    /// `URL` is `http://HOST:PORT` or `HOST:PORT`.
    pub fn new(url: &str, token: String, name: String, duration: Duration, every: Duration) -> Result<Self, String> {
        let hostport = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        if url.starts_with("https://") || hostport.contains('/') {
            return Err(format!("--admin {url:?}: give the admin listener as http://HOST:PORT"));
        }
        let admin = hostport.to_socket_addrs().map_err(|e| format!("--admin {url:?}: {e}"))?.next().ok_or_else(|| format!("--admin {url:?}: no address"))?;
        if token.is_empty() {
            return Err("the admin token: pass --token or set SWITCHYARD_ADMIN_TOKEN".into());
        }
        Ok(Self { admin, token, name, duration, every })
    }

    fn read(&self) -> Result<Value, String> {
        let auth = format!("Bearer {}", self.token);
        let r = switchyard_tests::get(self.admin, &format!("/plugins/{}/canary", self.name), &[("authorization", auth.as_str())]);
        if r.status != 200 {
            return Err(format!("GET /plugins/{}/canary on {}: {} {}", self.name, self.admin, r.status, r.body.trim()));
        }
        serde_json::from_str(&r.body).map_err(|e| format!("GET /plugins/{}/canary: not JSON: {e}", self.name))
    }
}

/// The two sides of a canary reading: (label, figures).
fn sides(state: &Value) -> [(String, &Value); 2] {
    [
        (format!("baseline v{}", state["baseline_version"]), &state["baseline"]),
        (format!("canary v{}", state["version"]), &state["canary"]),
    ]
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// One version's figures as report metrics.
fn figures(s: &Value) -> [(&'static str, f64); 6] {
    let routed = &s["routed"];
    [
        ("calls", f(&s["calls"])),
        ("fault_pct", 100.0 * f(&s["fault_rate"])),
        ("p99_us", f(&s["p99_us_at_most"])),
        ("routed", f(&routed["requests"])),
        ("failed_pct", 100.0 * f(&routed["failure_rate"])),
        ("upstream_p99_us", f(&routed["p99_us_at_most"])),
    ]
}

/// Watch until the canary is decided or `duration` passed; the report.
pub fn run(live: &Live) -> Result<Results, String> {
    let first = live.read()?;
    if first["state"] == "none" {
        return Err(format!("plugin {:?} has no canary to compare: start one with PUT /plugins/{}?canary=PERCENT", live.name, live.name));
    }
    let labels: Vec<String> = sides(&first).into_iter().map(|(l, _)| l).collect();
    let mut r = Results::new("live", "a running gateway's canary against its baseline, from the gateway's per-version figures", &labels, 1);
    r.param("gateway", format!("admin {}, plugin {:?}", live.admin, live.name));
    r.param("readings", format!("every {:.1} s for up to {:.0} s (stops when the canary is decided)", live.every.as_secs_f64(), live.duration.as_secs_f64()));
    let start = Instant::now();
    let mut last = first;
    loop {
        let t = start.elapsed().as_secs_f64();
        for (label, s) in sides(&last) {
            r.row(&label, "timeline", t, 0, &figures(s));
        }
        if last["state"] != "running" || start.elapsed() + live.every > live.duration {
            break;
        }
        std::thread::sleep(live.every);
        last = live.read()?;
    }
    distributions(&mut r, &last);
    r.table("Both versions at the last reading", "final", "reading", &[("calls", "calls"), ("faults %", "fault_pct"), ("p99 µs ≤", "p99_us"), ("requests routed", "routed"), ("failed %", "failed_pct"), ("upstream p99 µs ≤", "upstream_p99_us")]);
    r.plot("Calls per version over time", "timeline", "seconds", ("calls", "calls"), false);
    r.plot("Fault rate per version over time", "timeline", "seconds", ("% of calls", "fault_pct"), false);
    r.claim = claim(&last);
    r.aggregate();
    Ok(r)
}

/// The last reading's latency distributions and outcome shares, as bars.
fn distributions(r: &mut Results, last: &Value) {
    for (label, s) in sides(last) {
        r.row(&label, "final", 0.0, 0, &figures(s));
    }
    let buckets = |s: &Value| s["latency_buckets"].as_array().cloned().unwrap_or_default();
    let charts: [(&str, &str, fn(&Value) -> Value); 2] = [
        ("call latency", "Call latency per version (share of its calls)", |s| s.clone()),
        ("upstream time", "Upstream time of the requests each version routed (share of its requests)", |s| s["routed"].clone()),
    ];
    for (group, title, part) in charts {
        let [(_, base), _] = sides(last);
        let names: Vec<String> = buckets(&part(base)).iter().map(|b| b["le_us"].as_u64().map_or("more".to_string(), |us| format!("≤ {us} µs"))).collect();
        let counted = |s: &Value| buckets(&part(s)).iter().map(|x| f(&x["n"])).sum::<f64>();
        if names.is_empty() || sides(last).iter().all(|(_, s)| counted(s) == 0.0) {
            continue;
        }
        for (label, s) in sides(last) {
            let total = counted(s);
            for (i, x) in buckets(&part(s)).iter().enumerate() {
                r.row(&label, group, (i + 1) as f64, 0, &[("share", if total > 0.0 { 100.0 * f(&x["n"]) / total } else { 0.0 })]);
            }
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        r.bars(title, group, "latency", ("% of the version's", "share"), &names);
    }
    let mut kinds: Vec<String> = sides(last).iter().flat_map(|(_, s)| s["outcomes"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()).collect();
    kinds.sort();
    kinds.dedup();
    if !kinds.is_empty() {
        for (label, s) in sides(last) {
            let total: f64 = kinds.iter().map(|k| f(&s["outcomes"][k]).max(0.0)).sum();
            for (i, k) in kinds.iter().enumerate() {
                let n = s["outcomes"][k].as_f64().unwrap_or(0.0);
                r.row(&label, "outcomes", (i + 1) as f64, 0, &[("share", if total > 0.0 { 100.0 * n / total } else { 0.0 })]);
            }
        }
        let names: Vec<&str> = kinds.iter().map(String::as_str).collect();
        r.bars("What each version decided (share of its decisions)", "outcomes", "outcome", ("% of the version's", "share"), &names);
    }
}

/// The decision and its thresholds.
fn claim(last: &Value) -> Claim {
    let auto = &last["auto"];
    let thresholds = if auto.is_null() {
        "decided by hand (no automatic verdict)".to_string()
    } else {
        format!(
            "judged after {} canary calls: at most +{} points of faults, +{} points of failed requests, {}x p99",
            auto["window"], auto["max_fault_points"], auto["max_error_points"], auto["max_p99_ratio"]
        )
    };
    let (holds, evidence) = match last["state"].as_str() {
        Some("promoted") => (Some(true), format!("promoted by {}: {}", last["by"].as_str().unwrap_or("?"), last["evidence"].as_str().unwrap_or(""))),
        Some("rolled-back") => (Some(false), format!("rolled back by {}: {}", last["by"].as_str().unwrap_or("?"), last["evidence"].as_str().unwrap_or(""))),
        _ => (None, "still running at the last reading".to_string()),
    };
    Claim { text: format!("the canary is no worse than the baseline on live traffic ({thresholds})"), holds, evidence }
}
