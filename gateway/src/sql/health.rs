//! Backend health for `[sql]`: the primary answers a ping; a replica must
//! run both replication threads and lag no more than `max_lag_s`, except
//! that while the primary is down a replica only waiting to reconnect to it
//! keeps serving reads (it cannot miss writes nobody can make). Replica GTID
//! positions (`Gtid_Slave_Pos`) are recorded so causal reads can skip waiting.

use super::backend::{BackendConn, Gtid, Node, PoolKey};
use super::wire::Expect;
use super::{SqlProxy, PRIMARY};
use crate::metrics::metrics;
use async_trait::async_trait;
use mysql_common::constants::CapabilityFlags;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Polls every SQL backend on `health_interval_ms`.
pub struct SqlHealth(pub Arc<SqlProxy>);

#[async_trait]
impl BackgroundService for SqlHealth {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks: Vec<_> = (0..self.0.nodes.len()).map(|i| tokio::spawn(poll_loop(self.0.clone(), i))).collect();
        let _ = shutdown.changed().await;
        tasks.iter().for_each(|t| t.abort());
    }
}

/// What one poll found.
#[derive(Debug, PartialEq)]
enum Verdict {
    Up { lag_s: i64 },
    /// A replica applying everything it received, only waiting to
    /// reconnect to the primary: it serves reads while the primary is down.
    Waiting,
    /// Why, and the lag when it is known (a replica past `max_lag_s`).
    Down(String, Option<i64>),
}

async fn poll_loop(proxy: Arc<SqlProxy>, i: usize) {
    let node = proxy.nodes[i].clone();
    let (user, password) = proxy.spec.monitor.clone();
    let key = PoolKey { user, caps: (CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_TRANSACTIONS).bits(), ext: 0, collation: 45 };
    let mut conn: Option<BackendConn> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(proxy.spec.health_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let deadline = Duration::from_millis(proxy.spec.health_interval_ms.max(proxy.spec.connect_timeout_ms));
        let verdict = match tokio::time::timeout(deadline, poll(&proxy, &node, i, &key, &password, &mut conn)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                conn = None;
                Verdict::Down(e.message, None)
            }
            Err(_) => {
                conn = None;
                Verdict::Down(format!("no answer within {} ms", deadline.as_millis()), None)
            }
        };
        apply(&proxy, i, verdict);
    }
}

async fn poll(proxy: &SqlProxy, node: &Node, i: usize, key: &PoolKey, password: &str, conn: &mut Option<BackendConn>) -> Result<Verdict, super::SqlError> {
    if conn.is_none() {
        *conn = Some(node.acquire(key, password).await?);
    }
    let c = conn.as_mut().expect("set above");
    if i == PRIMARY {
        c.command(&[0x0E], Expect::Simple).await?; // COM_PING
        let v = &c.server_version;
        let announced = if v.contains("MariaDB") && !v.starts_with("5.5.5-") { format!("5.5.5-{v}") } else { v.clone() };
        if **proxy.version.load() != announced {
            proxy.version.store(Arc::new(announced));
        }
        return Ok(Verdict::Up { lag_s: 0 });
    }
    let status = c.query("SHOW SLAVE STATUS").await?;
    if let Some(pos) = status.get("Gtid_Slave_Pos") {
        pos.split(',').filter_map(Gtid::parse).for_each(|g| node.note_applied(g));
    }
    Ok(replica_verdict(&status, proxy.spec.max_lag_s))
}

fn replica_verdict(status: &super::backend::Rows, max_lag_s: u64) -> Verdict {
    if status.rows.is_empty() {
        return Verdict::Down("not a replica (SHOW SLAVE STATUS is empty)".into(), None);
    }
    let io = status.get("Slave_IO_Running").unwrap_or("No");
    let sql = status.get("Slave_SQL_Running").unwrap_or("No");
    if sql == "Yes" && io == "Connecting" {
        return Verdict::Waiting;
    }
    if io != "Yes" || sql != "Yes" {
        return Verdict::Down(format!("not replicating (IO thread: {io}, SQL thread: {sql})"), None);
    }
    match status.get("Seconds_Behind_Master").and_then(|s| s.parse::<i64>().ok()) {
        Some(lag) if lag <= max_lag_s as i64 => Verdict::Up { lag_s: lag },
        Some(lag) => Verdict::Down(format!("lagging {lag} s behind the primary (max_lag_s = {max_lag_s})"), Some(lag)),
        None => Verdict::Down("replication lag unknown".into(), None),
    }
}

fn apply(proxy: &SqlProxy, i: usize, verdict: Verdict) {
    let node = &proxy.nodes[i];
    let lag = match &verdict {
        Verdict::Up { lag_s } => *lag_s,
        Verdict::Waiting => -1,
        Verdict::Down(_, lag) => lag.unwrap_or(-1),
    };
    node.lag_s.store(lag, Ordering::Relaxed);
    if i != PRIMARY {
        metrics().sql_replica_lag.with_label_values(&[node.role.as_str()]).set(lag as f64);
    }
    // A waiting replica's up/down follows the primary: `sync_replica_sets` sets it.
    node.waiting.store(verdict == Verdict::Waiting, Ordering::Release);
    match &verdict {
        Verdict::Up { .. } if node.set_up(true) => tracing::info!(backend = %node.role, addr = %node.addr, "SQL backend is up"),
        Verdict::Down(why, _) if node.set_up(false) => tracing::warn!(backend = %node.role, addr = %node.addr, "SQL backend is down: {why}"),
        _ => {}
    }
    sync_replica_sets(proxy);
}

/// Mirror node health into the replica sets the lb policies see. Replicas
/// waiting on the primary follow it at once: in while it is down, out when
/// it is back (until they reconnect and report their lag).
pub(super) fn sync_replica_sets(proxy: &SqlProxy) {
    let primary_up = proxy.nodes[PRIMARY].is_up();
    for node in proxy.nodes.iter().skip(1).filter(|n| n.waiting.load(Ordering::Acquire)) {
        if node.set_up(!primary_up) {
            tracing::warn!(backend = %node.role, primary_up, "SQL replica waiting on the primary: serves reads only while the primary is down");
        }
    }
    for set in proxy.replica_sets() {
        let mut changed = false;
        for (b, &n) in set.upstream.backends().iter().zip(&set.nodes) {
            changed |= b.stats.set_active_up(proxy.nodes[n].is_up());
        }
        if changed {
            set.upstream.bump_version();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::backend::Rows;

    fn status(io: &str, sql: &str, lag: Option<&str>) -> Rows {
        Rows {
            columns: vec!["Slave_IO_Running".into(), "Slave_SQL_Running".into(), "Seconds_Behind_Master".into()],
            rows: vec![vec![Some(io.into()), Some(sql.into()), lag.map(String::from)]],
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(replica_verdict(&status("Yes", "Yes", Some("0")), 5), Verdict::Up { lag_s: 0 });
        assert!(matches!(replica_verdict(&status("Yes", "No", None), 5), Verdict::Down(m, None) if m.contains("SQL thread: No")));
        assert!(matches!(replica_verdict(&status("Yes", "Yes", Some("9")), 5), Verdict::Down(m, Some(9)) if m.contains("lagging 9 s")));
        assert!(matches!(replica_verdict(&Rows::default(), 5), Verdict::Down(m, None) if m.contains("not a replica")));
        assert_eq!(replica_verdict(&status("Connecting", "Yes", None), 5), Verdict::Waiting);
        assert!(matches!(replica_verdict(&status("No", "Yes", None), 5), Verdict::Down(..)));
        assert!(matches!(replica_verdict(&status("Connecting", "No", None), 5), Verdict::Down(..)));
    }
}
