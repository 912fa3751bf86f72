//! Connection ids through the SQL listener: the greeting carries the
//! gateway's id, which `KILL` takes; `CONNECTION_ID()` is the backend's
//! own thread id; `GET /sql` maps one to the other, and a `KILL` of a
//! backend thread id says so instead of killing another client.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use switchyard_tests::mariadb::{Cluster, SqlGateway, APP_PASSWORD, APP_USER};
use switchyard_tests::{bearer, get};

#[test]
fn kill_takes_the_gateway_id_and_get_sql_maps_backend_thread_ids() {
    let cluster = Cluster::start(0);
    let gw = SqlGateway::start(&cluster, None, "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = gw.url(APP_USER, APP_PASSWORD, None);
        let mut victim = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
        let mut admin = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
        let gateway_id = victim.id();
        let thread_id: u32 = victim.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();

        let (k, v) = bearer();
        let view: serde_json::Value = serde_json::from_str(&get(gw.admin, "/sql", &[(k, v.as_str())]).body).unwrap();
        let session = view["sessions"].as_array().unwrap().iter().find(|s| s["id"] == gateway_id).unwrap_or_else(|| panic!("{view}"));
        assert_eq!(session["user"], APP_USER);
        assert!(session["backends"].as_array().unwrap().iter().any(|b| b["backend"] == "primary" && b["thread_id"] == thread_id), "{view}");

        if thread_id != gateway_id {
            let err = admin.query_drop(format!("KILL {thread_id}")).await.unwrap_err().to_string();
            assert!(err.contains("1094") && err.contains("GET /sql"), "a backend thread id is not a gateway id: {err}");
            let alive: u32 = victim.query_first("SELECT 1").await.unwrap().unwrap();
            assert_eq!(alive, 1, "no other client was killed");
        }
        admin.query_drop(format!("KILL {gateway_id}")).await.unwrap();
        assert!(victim.query_drop("SELECT 1").await.is_err(), "KILL with the gateway's id ends that client's connection");
    });
}
