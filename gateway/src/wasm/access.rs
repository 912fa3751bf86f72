//! `AccessCheck` backed by a Wasm component: the generic pool (`seam.rs`)
//! plus the usage, decision and update records of the `access` world. A
//! fault is never answered by a builtin: the proxy denies (fail-closed).

use super::access_exports as wit;
use super::engine::LoadedPlugin;
use super::host::HostState;
use super::seam::{self, CallFuture, Hosted, Seam, SwapTarget};
use crate::error::Error;
use crate::seams::{AccessCheck, AccessDecision, AttrUpdate, Usage, UsageOutcome};
use std::sync::Arc;
use wasmtime::component::{Instance as WasmInstance, InstancePre};
use wasmtime::Store;

/// The access seam's exports.
pub struct AccessSeam;

impl Seam for AccessSeam {
    type Guest = wit::Guest;
    type Setup = ();
    type Local = ();
    const SEAM: &'static str = "access";
    const HOOKS: &'static [&'static str] = &["configure", "pre-decision", "ongoing-decision", "post-update"];
    const EXPORT: &'static str = "switchyard:policy/access@0.1.0";

    fn world_of(pre: &InstancePre<HostState>) -> Option<&'static str> {
        super::access_exports::GuestIndices::new(pre).ok().map(|_| "access-policy")
    }

    fn worlds_by_exports(names: &[&str]) -> Vec<&'static str> {
        if names.contains(&Self::EXPORT) { vec!["access-policy"] } else { Vec::new() }
    }

    fn load(pre: &InstancePre<HostState>, store: &mut Store<HostState>, instance: &WasmInstance) -> Result<Self::Guest, String> {
        let indices = wit::GuestIndices::new(pre)
            .map_err(|e| format!("does not export the access-policy world (switchyard:policy/access@0.1.0): {e:#}"))?;
        indices.load(store, instance).map_err(|e| format!("{e:#}"))
    }

    fn configure<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, config: &'a str) -> CallFuture<'a, Result<(), String>> {
        Box::pin(guest.call_configure(store, config))
    }
}

/// A Wasm access plugin serving one route.
pub struct WasmAccess {
    hosted: Hosted<AccessSeam>,
    route: String,
}

impl WasmAccess {
    pub async fn new(plugin: Arc<LoadedPlugin>, route: &str) -> Result<Self, Error> {
        Ok(Self { hosted: Hosted::new(plugin).await?, route: route.to_string() })
    }
}

fn to_wit(u: &Usage) -> wit::Usage {
    wit::Usage { subject: u.subject.clone(), object: u.object.clone(), right: u.right.clone(), context: u.context.clone() }
}

fn updates(list: Vec<wit::Update>) -> Vec<AttrUpdate> {
    list.into_iter().map(|u| AttrUpdate { name: u.name, delta: u.delta, min: u.min, max: u.max, reason: u.reason }).collect()
}

async fn pre(generation: &seam::Generation<AccessSeam>, arm: seam::Arm, usage: &Usage) -> Result<AccessDecision, Error> {
    let u = to_wit(usage);
    let call = seam::hint::<AccessSeam, (), _, _>(move |inst, ()| Box::pin(async move { inst.guest.call_pre_decision(&mut inst.store, &u).await }));
    generation
        .call("pre-decision", arm, call, |d| {
            Ok(match d {
                wit::Decision::Permit(p) => AccessDecision::Permit { pre_updates: updates(p.pre_updates), ongoing_every_ms: p.ongoing_every_ms },
                wit::Decision::Deny(r) => AccessDecision::Deny(r),
                wit::Decision::Obligation(o) => AccessDecision::Obligation { reason: o.reason, fulfil_at: o.fulfil_at },
            })
        })
        .await
}

#[async_trait::async_trait]
impl AccessCheck for WasmAccess {
    fn name(&self) -> &str {
        &self.hosted.name
    }

    async fn pre(&self, usage: &Usage) -> Result<AccessDecision, Error> {
        let (generation, canary) = self.hosted.pick_during(Some(&usage.subject));
        let out = pre(&generation, LoadedPlugin::arm, usage).await;
        match &out {
            Err(e) => super::faults::log_fault(&self.hosted.name, "pre-decision", e, false),
            Ok(d) if canary => generation.plugin.outcomes.add(&match d {
                AccessDecision::Permit { .. } => "permit".to_string(),
                AccessDecision::Deny(why) => format!("deny: {}", why.chars().take(120).collect::<String>()),
                AccessDecision::Obligation { .. } => "obligation".to_string(),
            }),
            Ok(_) => {}
        }
        out
    }

    async fn ongoing(&self, usage: &Usage, elapsed_ms: u64) -> Result<Result<(), String>, Error> {
        let u = to_wit(usage);
        let call = seam::hint::<AccessSeam, (), _, _>(move |inst, ()| Box::pin(async move { inst.guest.call_ongoing_decision(&mut inst.store, &u, elapsed_ms).await }));
        self.hosted.pick(Some(&usage.subject)).call("ongoing-decision", LoadedPlugin::arm, call, Ok).await
    }

    async fn post(&self, usage: &Usage, outcome: UsageOutcome) -> Result<Vec<AttrUpdate>, Error> {
        let u = to_wit(usage);
        let o = wit::Outcome { status: outcome.status, completed: outcome.completed, sent: outcome.sent, upstream_status: outcome.upstream_status };
        let call = seam::hint::<AccessSeam, (), _, _>(move |inst, ()| Box::pin(async move { inst.guest.call_post_update(&mut inst.store, &u, o).await }));
        self.hosted.pick(Some(&usage.subject)).call("post-update", LoadedPlugin::arm, call, |l| Ok(updates(l))).await
    }
}

#[async_trait::async_trait]
impl SwapTarget for WasmAccess {
    fn user(&self) -> String {
        format!("route {} (access)", self.route)
    }

    /// The next version, proven with one smoke `pre-decision` (an anonymous
    /// subject; any answer but a fault will do).
    async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<Box<dyn std::any::Any + Send>, Error> {
        let next = self.hosted.next(plugin).await?;
        let usage = Usage { subject: "{}".into(), object: "{}".into(), right: "read".into(), context: "{}".into() };
        pre(&next, LoadedPlugin::arm_setup, &usage).await?;
        Ok(Box::new(next))
    }

    fn commit(&self, prepared: Box<dyn std::any::Any + Send>) {
        seam::commit_any(&self.hosted, prepared);
    }

    fn canary(&self, op: seam::CanaryOp) {
        self.hosted.canary(op);
    }
}
