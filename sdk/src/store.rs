//! Session store tiers and signed tokens, as configured in the gateway's
//! `[session]`: `local` (this gateway), `replicated` (every node of
//! `[cluster]`), `central` (memcached), `durable` (MariaDB). A call suspends the plugin while the store answers; the wait
//! does not count against the hook's deadline.

use crate::bindings::host::switchyard::policy as wit;
pub use wit::store::{StoreError, Tier};

/// Read a value (refreshing its TTL in `central` and `durable`).
pub fn get(tier: Tier, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    wit::store::get(tier, key)
}

/// Write a value; `ttl_s` 0 uses the tier's default.
pub fn set(tier: Tier, key: &str, value: &[u8], ttl_s: u32) -> Result<(), StoreError> {
    wit::store::set(tier, key, value, ttl_s)
}

/// Remove a value.
pub fn delete(tier: Tier, key: &str) -> Result<(), StoreError> {
    wit::store::delete(tier, key)
}

/// Retire `key` for `ttl_s` seconds (0: the tier's default): it reads as
/// absent from now on and a [`set`] of it fails with
/// [`StoreError::Retired`], so no concurrent request can bring it back.
/// What a renewed session id does to its old key; see
/// [`crate::session::renew`].
pub fn retire(tier: Tier, key: &str, ttl_s: u32) -> Result<(), StoreError> {
    wit::store::retire(tier, key, ttl_s)
}

/// Take `key`'s lock, waiting up to the tier's lock timeout; `Ok(false)`
/// when another request kept it that long. The gateway frees every lock
/// when the request ends.
pub fn lock(tier: Tier, key: &str) -> Result<bool, StoreError> {
    wit::store::lock(tier, key)
}

/// Release a lock early.
pub fn unlock(tier: Tier, key: &str) -> Result<(), StoreError> {
    wit::store::unlock(tier, key)
}

/// Session `id`, stored in `parts` (the first is read to tell whether it
/// lives), belongs to `principal`: the gateway indexes it so an operator
/// can list and end the user's sessions everywhere (`GET`/`DELETE
/// /sessions?principal=U`), and marks this request as the principal's, so
/// ending their sessions also cuts its response. Call it on every request
/// that carries a session with a principal (the gateway rewrites its index
/// at most once a minute per session) and after a login or a renewal.
/// Best effort: the gateway logs a failure.
pub fn index(principal: &str, id: &str, parts: &[(Tier, String)], ttl_s: u32) {
    let parts: Vec<wit::store::Part> = parts.iter().map(|(tier, key)| wit::store::Part { tier: *tier, key: key.clone() }).collect();
    wit::store::index(principal, id, &parts, ttl_s)
}

/// Session `id` no longer belongs to `principal` (a logout, a renewal to
/// a new id): drop it from the index in `tier` (its first part's).
pub fn unindex(principal: &str, id: &str, tier: Tier) {
    wit::store::unindex(principal, id, tier)
}

/// A tier by its config name (`local`, `central`, `durable`).
pub fn tier(name: &str) -> Result<Tier, String> {
    match name {
        "local" => Ok(Tier::Local),
        "replicated" => Ok(Tier::Replicated),
        "central" => Ok(Tier::Central),
        "durable" => Ok(Tier::Durable),
        other => Err(format!("unknown store tier {other:?}: expected local, replicated, central or durable")),
    }
}

/// A store error as text for logs and answers.
pub fn describe(e: &StoreError) -> String {
    match e {
        StoreError::NotConfigured => "the store tier is not configured in [session]".into(),
        StoreError::Timeout => "the session store did not answer in time".into(),
        StoreError::Unavailable(m) => format!("the session store is unavailable: {m}"),
        StoreError::TooLarge => "the session is over the store's size limit".into(),
        StoreError::Retired => "the session id was renewed by another request".into(),
    }
}

/// Signed tokens (HMAC-SHA256 with the gateway's `[session]` keys).
pub mod tokens {
    use super::wit;

    /// Sign `payload` for `ttl_s` seconds; cookie- and URL-safe text.
    pub fn sign(payload: &[u8], ttl_s: u32) -> Result<String, String> {
        wit::tokens::sign(payload, ttl_s)
    }

    /// The payload of a valid token; `None` if forged, tampered, expired
    /// or malformed (the gateway counts each).
    pub fn verify(token: &str) -> Option<Vec<u8>> {
        wit::tokens::verify(token)
    }

    /// A fresh random 128-bit id (32 hex digits).
    pub fn new_id() -> String {
        wit::tokens::new_id()
    }
}
