//! The scenarios, one file per family: `lb`, `sessions`, `access`, `sql`, `ha`.

pub mod access;
pub mod ha;
pub mod lb;
pub mod sessions;
pub mod sql;

use super::{Ctx, Plugin};

/// Each repetition runs every plugin once, in turn: drift over the run
/// (thermal, other load) spreads over all plugins instead of biasing one.
pub fn runs(ctx: &Ctx) -> impl Iterator<Item = (usize, &Plugin)> + '_ {
    (0..ctx.reps).flat_map(move |rep| ctx.plugins.iter().map(move |p| (rep, p)))
}

/// Labels of the plugins, for [`super::report::Results::new`].
pub fn labels(ctx: &Ctx) -> Vec<String> {
    ctx.plugins.iter().map(|p| p.label.clone()).collect()
}

/// The label of the first plugin whose policy is `kind`, if it ran.
pub fn find<'a>(ctx: &'a Ctx, kind: &str) -> Option<&'a str> {
    ctx.plugins.iter().find(|p| p.kind == kind).map(|p| p.label.as_str())
}

/// Percent, for tables.
pub fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { 100.0 * part / whole } else { 0.0 }
}
