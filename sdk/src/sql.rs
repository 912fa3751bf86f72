//! The SQL routing seam: implement [`SqlRouter`] and call
//! [`export_sql_router!`](crate::export_sql_router). Enable the SDK's `sql`
//! feature (and turn off the default `lb` one).

pub use crate::bindings::sql::exports::switchyard::policy::sql_router::{Connection, Statement, StatementClass, Target as Route};
use crate::Config;

/// A SQL routing policy. The host classifies each statement and enforces
/// its guarantees afterwards (transactions stay on one backend, writes and
/// locking reads go to the primary, reads stay causal after a write), so a
/// router only decides where the statements it may move should run.
pub trait SqlRouter: Sized + 'static {
    /// Build the router from the plugin's `config` table. An error fails
    /// the load and is shown to the user.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Decide where one statement runs.
    fn route(&mut self, stmt: &Statement, conn: &Connection) -> Route;
}

/// The classic read/write split: reads to a replica, everything else to
/// the primary.
pub fn classic(stmt: &Statement) -> Route {
    match stmt.class {
        StatementClass::Read => Route::Replica,
        _ => Route::Primary,
    }
}

#[doc(hidden)]
pub struct Runner<T> {
    router: Option<T>,
}

#[doc(hidden)]
impl<T: SqlRouter> Runner<T> {
    pub const fn new() -> Self {
        Self { router: None }
    }

    pub fn configure(&mut self, config: String) -> Result<(), String> {
        crate::host::install_panic_hook();
        let config = Config::from_json(&config)?;
        self.router = Some(T::configure(&config)?);
        Ok(())
    }

    pub fn route(&mut self, stmt: &Statement, conn: &Connection) -> Route {
        match self.router.as_mut() {
            Some(r) => r.route(stmt, conn),
            None => Route::Reject("route before configure".into()),
        }
    }
}

/// Export a [`SqlRouter`] type as the component's `sql-router` interface.
#[macro_export]
macro_rules! export_sql_router {
    ($router:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::sql::exports::switchyard::policy::sql_router as __wit;
            struct __SwitchyardSql;
            ::std::thread_local! {
                static RUNNER: ::core::cell::RefCell<$crate::sql::Runner<$router>> =
                    const { ::core::cell::RefCell::new($crate::sql::Runner::new()) };
            }
            impl __wit::Guest for __SwitchyardSql {
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().configure(config))
                }
                fn route(stmt: __wit::Statement, conn: __wit::Connection) -> __wit::Target {
                    RUNNER.with(|r| r.borrow_mut().route(&stmt, &conn))
                }
            }
            $crate::bindings::sql::__export_sql_router!(__SwitchyardSql with_types_in $crate::bindings::sql);
        };
    };
}
