//! The admin API's client side, for the `switchyard plugin`, `sessions`,
//! `reload` and `upstreams` commands.

use std::path::Path;

/// Where the admin API is and the token it takes.
pub struct AdminTarget {
    pub base: String,
    pub token: String,
}

impl AdminTarget {
    /// One request; the admin's answer on success, or an error naming the
    /// URL, the status and the admin's reason.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<String, String> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("PUT", Some(bytes)) => {
                let kind = if bytes.starts_with(b"\0asm") { "application/wasm" } else { "application/json" };
                agent.put(&url).header("Authorization", &auth).header("Content-Type", kind).send(bytes)
            }
            ("POST", _) => agent.post(&url).header("Authorization", &auth).send_empty(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut resp = sent.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().map_err(|e| format!("{url}: reading the answer: {e}"))?;
        if status.is_success() {
            Ok(if text.ends_with('\n') { text } else { text + "\n" })
        } else {
            Err(format!("{url}: {status}: {}", text.trim()))
        }
    }

    /// `PUT /plugins/{name}` with the file's bytes.
    pub fn push(&self, name: &str, file: &Path, config: Option<&Path>) -> Result<String, String> {
        self.canary(name, file, "", config)
    }

    /// `PUT /plugins/{name}?QUERY` with FILE's bytes (and a config table).
    pub fn canary(&self, name: &str, file: &Path, query: &str, config: Option<&Path>) -> Result<String, String> {
        let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let mut query = query.to_string();
        if let Some(c) = config {
            let sep = if query.is_empty() { "" } else { "&" };
            query += &format!("{sep}config={}", encode(&String::from_utf8_lossy(&table(c)?)));
        }
        let query = if query.is_empty() { query } else { format!("?{query}") };
        self.call("PUT", &format!("/plugins/{name}{query}"), Some(&bytes))
    }

    /// A body-less call (`POST`, `DELETE`).
    pub fn call_plain(&self, method: &str, path: &str) -> Result<String, String> {
        self.call(method, path, None)
    }

    /// `GET /plugins`.
    pub fn plugins(&self) -> Result<String, String> {
        self.call("GET", "/plugins", None)
    }

    /// `POST /plugins/{name}/rollback`.
    pub fn rollback(&self, name: &str) -> Result<String, String> {
        self.call("POST", &format!("/plugins/{name}/rollback"), None)
    }

    /// `GET /plugins/{name}/history`.
    pub fn history(&self, name: &str) -> Result<String, String> {
        self.call("GET", &format!("/plugins/{name}/history"), None)
    }

    /// `GET` (list) or `DELETE` (revoke) `/sessions?principal=U`.
    pub fn sessions(&self, method: &str, principal: &str) -> Result<String, String> {
        self.call(method, &format!("/sessions?principal={}", encode(principal)), None)
    }

    /// `PUT /plugins/{name}/config` with the file's JSON object.
    pub fn config(&self, name: &str, file: &Path) -> Result<String, String> {
        self.call("PUT", &format!("/plugins/{name}/config"), Some(&table(file)?))
    }

    /// `POST /reload`, or `POST /config/reload` for the config file alone.
    pub fn reload(&self, config_only: bool) -> Result<String, String> {
        self.call("POST", if config_only { "/config/reload" } else { "/reload" }, None)
    }

    /// `GET /upstreams`.
    pub fn upstreams(&self) -> Result<String, String> {
        self.call("GET", "/upstreams", None)
    }
}

/// A config table file: its bytes, once they are known to be a JSON object.
fn table(file: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&text).map_err(|e| format!("{}: not a JSON object: {e}", file.display()))?;
    Ok(text)
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
