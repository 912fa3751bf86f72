//! SQL router baseline: every statement runs on the primary (paper 001's
//! single-server setup), for comparing against `rw-split`.

use switchyard_sdk::sql::{Connection, Route, SqlRouter, Statement};
use switchyard_sdk::Config;

pub struct PrimaryOnly;

impl SqlRouter for PrimaryOnly {
    fn configure(config: &Config) -> Result<Self, String> {
        match config.raw().as_object() {
            Some(o) if !o.is_empty() => Err(format!("primary-only takes no settings, got {:?}", o.keys().collect::<Vec<_>>())),
            _ => Ok(Self),
        }
    }

    fn route(&mut self, _stmt: &Statement, _conn: &Connection) -> Route {
        Route::Primary
    }
}

switchyard_sdk::export_sql_router!(PrimaryOnly);
