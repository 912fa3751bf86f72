//! `switchyard plugin push`: drive the admin API from the command line.

use std::path::Path;

/// `PUT /plugins/{name}` with the file's bytes; the admin's JSON answer on
/// success, or an error naming the status and reason.
pub fn push(admin: &str, token: &str, name: &str, file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let url = format!("{}/plugins/{name}", admin.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .put(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/wasm")
        .send(&bytes[..])
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.body_mut().read_to_string().map_err(|e| format!("{url}: reading the answer: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status}: {}", body.trim()))
    }
}
