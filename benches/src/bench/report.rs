//! Results of a scenario and how they are shown: the markdown table on
//! stdout, `results.json`, and `report.html` with its SVG plots (plotters)
//! inline.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One measurement: a plugin (or baseline) at one point of one group, in one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub plugin: String,
    /// Which part of the scenario (a profile, "per server", a timeline).
    pub group: String,
    /// The point on the x axis (a rate, a user count, a server number).
    pub x: f64,
    pub rep: usize,
    pub metrics: BTreeMap<String, f64>,
}

/// min / median / max of one metric over the repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

/// The aggregate of one (plugin, group, x).
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub plugin: String,
    pub group: String,
    pub x: f64,
    pub metrics: BTreeMap<String, Spread>,
}

/// Whether the paper's claim held.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// The claim, with its source.
    pub text: String,
    /// Some(true) holds, Some(false) does not hold, None: not checked (a policy it needs did not run).
    pub holds: Option<bool>,
    /// The measured numbers behind the verdict.
    pub evidence: String,
}

impl Claim {
    pub fn verdict(&self) -> &'static str {
        match self.holds {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "not checked",
        }
    }
}

/// A table: one line per (plugin, x) of `group`, one column per metric.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub title: String,
    pub group: String,
    pub x_label: String,
    /// (column header, metric)
    pub columns: Vec<(String, String)>,
}

/// A plot: `metric` against x for `group`, one line per plugin, bars from min to max.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    pub title: String,
    pub group: String,
    pub x_label: String,
    pub y_label: String,
    pub metric: String,
    pub log_y: bool,
    /// Categorical x (servers, failovers): x = 1, 2, ... names these, and
    /// the plot draws grouped bars instead of lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

/// The machine, versions and command behind a result.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: String,
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    /// /proc/loadavg when the run ended: other work on the machine shows here.
    pub load_avg: String,
    pub switchyard: String,
    pub git: String,
    pub command: String,
    pub unix_time: u64,
}

/// Everything a scenario measured and how to show it.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub scenario: String,
    pub summary: String,
    pub plugins: Vec<String>,
    pub reps: usize,
    /// (name, value): backends, load model, durations.
    pub params: Vec<(String, String)>,
    pub claim: Claim,
    pub rows: Vec<Row>,
    pub aggregates: Vec<Aggregate>,
    pub tables: Vec<Table>,
    pub plots: Vec<Plot>,
    pub notes: Vec<String>,
    pub machine: Option<Machine>,
}

impl Results {
    /// An empty result set for `scenario`.
    pub fn new(scenario: &str, summary: &str, plugins: &[String], reps: usize) -> Self {
        Self {
            scenario: scenario.into(),
            summary: summary.into(),
            plugins: plugins.to_vec(),
            reps,
            params: Vec::new(),
            claim: Claim { text: String::new(), holds: None, evidence: String::new() },
            rows: Vec::new(),
            aggregates: Vec::new(),
            tables: Vec::new(),
            plots: Vec::new(),
            notes: Vec::new(),
            machine: None,
        }
    }

    pub fn param(&mut self, name: &str, value: impl Into<String>) {
        self.params.push((name.into(), value.into()));
    }

    pub fn row(&mut self, plugin: &str, group: &str, x: f64, rep: usize, metrics: &[(&str, f64)]) {
        let metrics = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        self.rows.push(Row { plugin: plugin.into(), group: group.into(), x, rep, metrics });
    }

    pub fn table(&mut self, title: &str, group: &str, x_label: &str, columns: &[(&str, &str)]) {
        let columns = columns.iter().map(|(h, m)| (h.to_string(), m.to_string())).collect();
        self.tables.push(Table { title: title.into(), group: group.into(), x_label: x_label.into(), columns });
    }

    pub fn plot(&mut self, title: &str, group: &str, x_label: &str, (y_label, metric): (&str, &str), log_y: bool) {
        self.plots.push(Plot { title: title.into(), group: group.into(), x_label: x_label.into(), y_label: y_label.into(), metric: metric.into(), log_y, categories: Vec::new() });
    }

    /// A grouped bar chart of categorical data: x = 1, 2, ... are `categories`.
    pub fn bars(&mut self, title: &str, group: &str, x_label: &str, (y_label, metric): (&str, &str), categories: &[&str]) {
        self.plot(title, group, x_label, (y_label, metric), false);
        if let Some(p) = self.plots.last_mut() {
            p.categories = categories.iter().map(|c| c.to_string()).collect();
        }
    }

    /// Fill `aggregates` from `rows`, in the order rows first appear.
    pub fn aggregate(&mut self) {
        let mut order: Vec<(String, String, u64)> = Vec::new();
        let mut values: BTreeMap<(String, String, u64), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for r in &self.rows {
            let key = (r.plugin.clone(), r.group.clone(), r.x.to_bits());
            if !values.contains_key(&key) {
                order.push(key.clone());
            }
            let m = values.entry(key).or_default();
            for (k, v) in &r.metrics {
                m.entry(k.clone()).or_default().push(*v);
            }
        }
        self.aggregates = order
            .into_iter()
            .map(|key| {
                let metrics = values[&key].iter().map(|(k, v)| (k.clone(), spread(v))).collect();
                Aggregate { plugin: key.0, group: key.1, x: f64::from_bits(key.2), metrics }
            })
            .collect();
    }

    /// The median of `metric` for (plugin, group, x), once aggregated.
    pub fn median(&self, plugin: &str, group: &str, x: f64, metric: &str) -> Option<f64> {
        self.aggregates
            .iter()
            .find(|a| a.plugin == plugin && a.group == group && a.x == x)
            .and_then(|a| a.metrics.get(metric))
            .map(|s| s.median)
    }

    fn in_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Aggregate> + 'a {
        self.aggregates.iter().filter(move |a| a.group == group)
    }

    fn series(&self, group: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for a in self.in_group(group) {
            if !names.contains(&a.plugin) {
                names.push(a.plugin.clone());
            }
        }
        names
    }

    /// The claim line, as printed and in the report.
    pub fn claim_line(&self) -> String {
        format!("**Claim** ({}): {} — **{}**: {}", self.scenario, self.claim.text, self.claim.verdict(), self.claim.evidence)
    }

    fn reps_note(&self) -> Option<String> {
        (self.reps < 3).then(|| format!("not enough repetitions: {} (at least 3 for a spread that means something)", self.reps))
    }

    /// Markdown: claim, each table, notes.
    pub fn markdown(&self) -> String {
        let mut s = format!("## {} — {}\n\n{}\n\n", self.scenario, self.summary, self.claim_line());
        for t in &self.tables {
            let _ = write!(s, "### {}\n\n{}\n", t.title, self.table_markdown(t));
        }
        if self.aggregates.iter().any(|a| a.metrics.values().any(|m| m.n > 1)) {
            s += "Cells: median [min–max] over the repetitions.\n";
        }
        for n in self.reps_note().iter().chain(&self.notes) {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    fn table_cells(&self, t: &Table) -> (Vec<String>, Vec<Vec<String>>) {
        let mut head = vec!["plugin".to_string(), t.x_label.clone()];
        head.extend(t.columns.iter().map(|(h, _)| h.clone()));
        let rows = self
            .in_group(&t.group)
            .map(|a| {
                let mut r = vec![a.plugin.clone(), if a.x.fract() == 0.0 { format!("{:.0}", a.x) } else { num(a.x) }];
                r.extend(t.columns.iter().map(|(_, m)| a.metrics.get(m).map_or("–".into(), |s| cell(s, self.reps))));
                r
            })
            .collect();
        (head, rows)
    }

    fn table_markdown(&self, t: &Table) -> String {
        let (head, rows) = self.table_cells(t);
        let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        for r in rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }

    /// The HTML report: claim, parameters, machine, tables, inline SVG plots.
    pub fn html(&self) -> String {
        let mut s = format!(
            "<!doctype html><meta charset=utf-8><title>switchyard bench {0}</title><style>{STYLE}</style><h1>switchyard bench {0}</h1><p>{1}</p>",
            esc(&self.scenario),
            esc(&self.summary)
        );
        let class = match self.claim.holds {
            Some(true) => "holds",
            Some(false) => "fails",
            None => "unchecked",
        };
        let _ = write!(s, "<p class={class}><b>Claim</b>: {} — <b>{}</b>: {}</p>", esc(&self.claim.text), self.claim.verdict(), esc(&self.claim.evidence));
        for n in self.reps_note().iter().chain(&self.notes) {
            let _ = write!(s, "<p class=note>{}</p>", esc(n));
        }
        s += &kv_table("Parameters", &self.params);
        if let Some(m) = &self.machine {
            s += &kv_table("Machine, versions, command", &machine_pairs(m));
        }
        for p in &self.plots {
            let _ = write!(s, "<h2>{}</h2>{}", esc(&p.title), self.svg(p));
        }
        for t in &self.tables {
            let (head, rows) = self.table_cells(t);
            let _ = write!(s, "<h2>{}</h2><table><tr>{}</tr>", esc(&t.title), head.iter().map(|h| format!("<th>{}", esc(h))).collect::<String>());
            for r in rows {
                let _ = write!(s, "<tr>{}</tr>", r.iter().map(|c| format!("<td>{}", esc(c))).collect::<String>());
            }
            s += "</table>";
        }
        s
    }

    /// One plot as an SVG string.
    pub fn svg(&self, p: &Plot) -> String {
        let series: Vec<(String, Vec<(f64, Spread)>)> = self
            .series(&p.group)
            .into_iter()
            .map(|name| {
                let pts = self.in_group(&p.group).filter(|a| a.plugin == name).filter_map(|a| Some((a.x, *a.metrics.get(&p.metric)?))).collect();
                (name, pts)
            })
            .collect();
        super::plot::svg(p, &series).unwrap_or_else(|e| format!("<p>plot failed: {}</p>", esc(&e)))
    }

    /// Write report.html and results.json into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.html"), self.html())?;
        std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(self).map_err(std::io::Error::other)?)
    }
}

/// min / median / max of `v` (not empty).
pub fn spread(v: &[f64]) -> Spread {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Spread { min: v[0], median, max: v[n - 1], n }
}

/// A number with as many decimals as its size needs.
pub fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 || a == 0.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

fn cell(s: &Spread, reps: usize) -> String {
    if reps > 1 && s.n > 1 {
        format!("{} [{}–{}]", num(s.median), num(s.min), num(s.max))
    } else {
        num(s.median)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn kv_table(title: &str, pairs: &[(String, String)]) -> String {
    let rows: String = pairs.iter().map(|(k, v)| format!("<tr><th>{}<td>{}</tr>", esc(k), esc(v))).collect();
    format!("<h2>{}</h2><table class=kv>{rows}</table>", esc(title))
}

fn machine_pairs(m: &Machine) -> Vec<(String, String)> {
    [
        ("hostname", m.hostname.clone()),
        ("cores (nproc)", m.nproc.to_string()),
        ("CPU", m.cpu.clone()),
        ("kernel", m.kernel.clone()),
        ("load average at the end (1/5/15 min)", m.load_avg.clone()),
        ("switchyard", m.switchyard.clone()),
        ("git", m.git.clone()),
        ("command", m.command.clone()),
        ("unix time", m.unix_time.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:90%}.holds{background:#e6f4ea;padding:.5em}\
.fails{background:#fce8e6;padding:.5em}.unchecked{background:#f1f3f4;padding:.5em}.note{color:#a50}svg{max-width:100%;height:auto}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_show_the_spread_of_repetitions() {
        let mut r = Results::new("s", "sum", &["a".into()], 3);
        for (rep, v) in [3.0, 1.0, 2.0].into_iter().enumerate() {
            r.row("a", "g", 10.0, rep, &[("p50", v)]);
        }
        r.table("t", "g", "rate", &[("p50 ms", "p50")]);
        r.plot("p", "g", "rate", ("ms", "p50"), false);
        r.aggregate();
        assert_eq!(r.median("a", "g", 10.0, "p50"), Some(2.0));
        assert!(r.markdown().contains("| a | 10 | 2.00 [1.00–3.00] |"), "{}", r.markdown());
        assert!(r.html().contains("<svg"), "{}", r.html());
    }
}
