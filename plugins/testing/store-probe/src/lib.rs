//! Test plugin: runs one store call per request, named by request headers
//! (`x-op`: get, set, add, get-versioned, cas, retire, delete; `x-tier`,
//! `x-key`, `x-value`, `x-version`, `x-ttl`), and answers its result as
//! JSON without calling a backend. The end-to-end tests drive the store
//! tiers through the real host imports with it.

use switchyard_sdk::session::{reply, Action, Header, Request, Response, SessionStrategy};
use switchyard_sdk::store::{self, StoreError};
use switchyard_sdk::Config;

/// The probe.
pub struct StoreProbe;

fn answer(out: Result<serde_json::Value, StoreError>) -> Action {
    let body = match out {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(StoreError::Retired) => serde_json::json!({ "error": "retired" }),
        Err(e) => serde_json::json!({ "error": store::describe(&e) }),
    };
    let mut a = reply(200, "", Vec::new());
    if let Action::Reply(r) = &mut a {
        r.body = body.to_string().into_bytes();
    }
    a
}

fn text(v: Vec<u8>) -> serde_json::Value {
    String::from_utf8_lossy(&v).into_owned().into()
}

impl SessionStrategy for StoreProbe {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn before_request(&mut self, req: &Request) -> Action {
        let h = |n: &str| req.header(n).unwrap_or_default();
        let Ok(tier) = store::tier(&h("x-tier")) else { return reply(400, "x-tier", Vec::new()) };
        let (key, value) = (h("x-key"), h("x-value").into_bytes());
        let ttl: u32 = h("x-ttl").parse().unwrap_or(0);
        let version: u64 = h("x-version").parse().unwrap_or(0);
        answer(match h("x-op").as_str() {
            "get" => store::get(tier, &key).map(|v| v.map_or(serde_json::Value::Null, text)),
            "set" => store::set(tier, &key, &value, ttl).map(|()| true.into()),
            "add" => store::add(tier, &key, &value, ttl).map(Into::into),
            "cas" => store::cas(tier, &key, &value, ttl, version).map(Into::into),
            "retire" => store::retire(tier, &key, ttl).map(|()| true.into()),
            "delete" => store::delete(tier, &key).map(|()| true.into()),
            "get-versioned" => store::get_versioned(tier, &key)
                .map(|v| v.map_or(serde_json::Value::Null, |v| serde_json::json!({ "value": text(v.value), "version": v.version.to_string() }))),
            _ => return reply(400, "x-op", Vec::new()),
        })
    }

    fn after_response(&mut self, _context: Vec<u8>, _resp: &Response) -> Vec<Header> {
        Vec::new()
    }
}

switchyard_sdk::export_session!(StoreProbe);
