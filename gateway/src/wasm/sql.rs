//! `SqlRouter` backed by a Wasm component: the generic pool (`seam.rs`)
//! plus the statement and connection records of the `sql-router` world.

use super::engine::LoadedPlugin;
use super::host::HostState;
use super::seam::{self, Arm, CallFuture, Hosted, Seam, SwapTarget};
use super::sql_exports as wit;
use crate::error::Error;
use crate::seams::{ClassicSplit, ConnInfo, Route, SqlRouter, Statement, StatementClass};
use std::sync::Arc;
use wasmtime::component::{Instance as WasmInstance, InstancePre};
use wasmtime::Store;

/// The sql seam's exports.
pub struct SqlSeam;

impl Seam for SqlSeam {
    type Guest = wit::Guest;
    type Setup = ();
    type Local = ();
    const SEAM: &'static str = "sql";
    const HOOKS: &'static [&'static str] = &["configure", "route"];
    const EXPORT: &'static str = "switchyard:policy/sql-router@0.1.0";

    fn world_of(pre: &InstancePre<HostState>) -> Option<&'static str> {
        super::sql_exports::GuestIndices::new(pre).ok().map(|_| "sql-router-policy")
    }

    fn worlds_by_exports(names: &[&str]) -> Vec<&'static str> {
        if names.contains(&Self::EXPORT) { vec!["sql-router-policy"] } else { Vec::new() }
    }

    fn load(pre: &InstancePre<HostState>, store: &mut Store<HostState>, instance: &WasmInstance) -> Result<Self::Guest, String> {
        let indices = wit::GuestIndices::new(pre)
            .map_err(|e| format!("does not export the sql-router-policy world (switchyard:policy/sql-router@0.1.0): {e:#}"))?;
        indices.load(store, instance).map_err(|e| format!("{e:#}"))
    }

    fn configure<'a>(guest: &'a Self::Guest, store: &'a mut Store<HostState>, config: &'a str) -> CallFuture<'a, Result<(), String>> {
        Box::pin(guest.call_configure(store, config))
    }
}

/// A Wasm `sql-router` plugin.
pub struct WasmSqlRouter {
    hosted: Hosted<SqlSeam>,
}

impl WasmSqlRouter {
    /// Instantiate and configure one instance now, so a wrong world or a
    /// rejected config fails the load with the plugin's own message.
    pub async fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Error> {
        Ok(Self { hosted: Hosted::new(plugin).await? })
    }
}

async fn route(generation: &seam::Generation<SqlSeam>, arm: Arm, stmt: &Statement<'_>, conn: &ConnInfo<'_>) -> Result<Route, Error> {
    let s = wit::Statement { text: stmt.text.to_string(), class: to_wit(stmt.class), prepare: stmt.prepare };
    let c = wit::Connection {
        user: conn.user.to_string(),
        schema: conn.schema.map(str::to_string),
        in_transaction: conn.in_transaction,
        autocommit: conn.autocommit,
        pinned: conn.pinned,
        ms_since_last_write: conn.ms_since_last_write,
    };
    let call = seam::hint::<SqlSeam, (), _, _>(move |inst, ()| Box::pin(async move { inst.guest.call_route(&mut inst.store, &s, &c).await }));
    generation
        .call("route", arm, call, |t| {
            Ok(match t {
                wit::Target::Primary => Route::Primary,
                wit::Target::Replica => Route::Replica,
                wit::Target::Group(g) => Route::Group(g),
                wit::Target::Reject(m) => Route::Reject(m),
            })
        })
        .await
}

fn to_wit(c: StatementClass) -> wit::StatementClass {
    match c {
        StatementClass::Read => wit::StatementClass::Read,
        StatementClass::Write => wit::StatementClass::Write,
        StatementClass::LockingRead => wit::StatementClass::LockingRead,
        StatementClass::Transaction => wit::StatementClass::Transaction,
        StatementClass::SessionState => wit::StatementClass::SessionState,
        StatementClass::Other => wit::StatementClass::Other,
    }
}

#[async_trait::async_trait]
impl SqlRouter for WasmSqlRouter {
    fn name(&self) -> &str {
        &self.hosted.name
    }

    async fn route(&self, stmt: &Statement<'_>, conn: &ConnInfo<'_>) -> Result<Route, Error> {
        let (generation, canary) = self.hosted.pick_during(Some(conn.user));
        match route(&generation, LoadedPlugin::arm, stmt, conn).await {
            Ok(r) => {
                if canary {
                    generation.plugin.outcomes.add(&match &r {
                        Route::Primary => "primary".to_string(),
                        Route::Replica => "replica".to_string(),
                        Route::Group(g) => format!("group {g}"),
                        Route::Reject(_) => "reject".to_string(),
                    });
                }
                Ok(r)
            }
            Err(e) if self.hosted.fell_back("route", &e) => Ok(ClassicSplit::decide(stmt)),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl SwapTarget for WasmSqlRouter {
    fn user(&self) -> String {
        "sql".into()
    }

    /// The next version, proven with one smoke `route`.
    async fn prepare(&self, plugin: Arc<LoadedPlugin>) -> Result<Box<dyn std::any::Any + Send>, Error> {
        let next = self.hosted.next(plugin).await?;
        let stmt = Statement { text: "SELECT 1", class: StatementClass::Read, prepare: false };
        let conn = ConnInfo { user: "switchyard-smoke", schema: None, in_transaction: false, autocommit: true, pinned: false, ms_since_last_write: None };
        route(&next, LoadedPlugin::arm_setup, &stmt, &conn).await?;
        Ok(Box::new(next))
    }

    fn commit(&self, prepared: Box<dyn std::any::Any + Send>) {
        seam::commit_any(&self.hosted, prepared);
    }

    fn canary(&self, op: seam::CanaryOp) {
        self.hosted.canary(op);
    }
}
