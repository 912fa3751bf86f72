//! Session store tiers and signed tokens, as configured in the gateway's
//! `[session]`: `local` (this gateway), `replicated` (every node of
//! `[cluster]`), `central` (memcached), `durable` (MariaDB). A call
//! suspends the plugin while the store answers; the wait does not count
//! against the hook's deadline.
//!
//! Keys are at most 250 bytes without spaces or control characters and
//! values at most 1 MiB, on every tier. For a value several requests
//! update at once (a counter, a guard), use [`add`] and [`cas`] (or
//! [`update`], the retry loop over them) instead of [`get`] then [`set`],
//! which loses one of two concurrent updates.

use crate::bindings::host::switchyard::policy as wit;
pub use wit::store::{Memo, StoreError, Tier, Versioned, WritePlan};

/// Attempts [`update`] makes before it gives up (each lost race means
/// another request's update went through).
const UPDATE_TRIES: usize = 64;

/// Read a value (refreshing its TTL in `central` and `durable`).
pub fn get(tier: Tier, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    wit::store::get(tier, key)
}

/// Write a value; `ttl_s` 0 uses the tier's default.
pub fn set(tier: Tier, key: &str, value: &[u8], ttl_s: u32) -> Result<(), StoreError> {
    wit::store::set(tier, key, value, ttl_s)
}

/// In a session hook, so the plugin does not hold its instance while a
/// store answers: `true` when `key` was read before this call, so a
/// [`get`] of it now answers at once (always on `local` and `replicated`).
/// `false` in `before-request`: the gateway reads it once this call
/// returns and calls `before-request` again with the value at hand; return
/// at once (what the call returns is discarded). Ask for every key the hook
/// reads, before any other effect, then return if any answered `false`.
pub fn read_ahead(tier: Tier, key: &str) -> bool {
    wit::store::read_ahead(tier, key)
}

/// In `after-response`: write `value` as [`set`] does once the hook has
/// returned, before the client gets the response; if the write fails, the
/// client gets `on_failure` (name, value pairs) instead of the headers the
/// hook returned. Elsewhere the write is made at once (a failure is logged).
pub fn set_deferred(tier: Tier, key: &str, value: &[u8], ttl_s: u32, on_failure: &[(String, String)]) {
    wit::store::set_deferred(tier, key, value, ttl_s, on_failure)
}

/// In `before-request`: let the gateway make this request's common write
/// itself, so it needs no `after-response` call. When the backend answers
/// with exactly one `x-switchyard-session-set` (and neither `-end` nor
/// `-renew`) that changes none of `plan.guard` (sets one to another JSON
/// value, or deletes one that is there; the value loaded set again is no
/// change: the same user logging in again), the gateway applies it to
/// `plan.base` (set, or delete on `null`; names in order, compact JSON, each
/// value as the backend sent it) and, if that changed anything and fits in
/// `plan.max_bytes`, writes it as [`set_deferred`] would, adding 1 to the
/// plugin counter `plan.counter`; `after-response` is then skipped. Any
/// other response reaches `after-response` as the forward's `after` says.
pub fn write_back(plan: &WritePlan) {
    wit::store::write_back(plan)
}

/// [`write_back`] for a session split over two keys: `plan` writes the
/// main part, and `other_part` is the other part as loaded (a JSON object,
/// or empty), which this write never touches. A name the response sets to
/// the very JSON text `other_part` holds for it (the same user logging in
/// again, where the user is in the static part) is left out, so the rest
/// is a plain update of the main part; any other set or delete of such a
/// name reaches `after-response`.
pub fn write_back_split(plan: &WritePlan, other_part: &[u8]) {
    wit::store::write_back_split(plan, other_part)
}

/// In `before-request`: let the gateway repeat this call's forward for the
/// session's next requests without calling the plugin, while they carry
/// the same `cookie` headers and `memo.inputs`, until `memo.until_ms`, and
/// the key this call read ([`get`]) still holds a JSON object with the same
/// `memo.principal` (a split session's second key: the same bytes). The
/// gateway puts each new read where this call put the one it read
/// (`memo.value_header`, base64, two reads merged; the context at
/// `memo.context_at`, length-prefixed), keeps this call's [`write_back`]
/// with the new read as its base, and makes its [`index`] call again. It
/// checks that it rebuilds this call's forward exactly, and remembers
/// nothing when it cannot, or when the call replied, locked or wrote.
/// A call that read no key (a sticky cookie's forward) leaves
/// `memo.value_header` and `memo.principal` empty and makes no
/// [`write_back`] or [`index`]; the forward is then repeated as it is.
/// Call it only for a decision that depends on nothing else.
pub fn remember(memo: &Memo) {
    wit::store::remember(memo)
}

/// Store `value` only if `key` holds nothing (absent or expired), as
/// memcached's `add`: `Ok(true)` if stored, `Ok(false)` if the key holds a
/// value; a retired key answers [`StoreError::Retired`]. Atomic on
/// `local`, `central` (decided on the key's primary server) and `durable`.
/// On `replicated` it is atomic on this node only: two nodes may both add
/// before they hear of each other, and the later write wins on every node.
pub fn add(tier: Tier, key: &str, value: &[u8], ttl_s: u32) -> Result<bool, StoreError> {
    wit::store::add(tier, key, value, ttl_s)
}

/// Read a value with its version, for [`cas`]; `None` when absent (or
/// retired). Refreshes the TTL as [`get`] does, which is not a write: the
/// version stays. The version is opaque: compare it only through [`cas`]
/// (on `durable` it is a digest of the value, so a write that puts back the
/// same bytes is no change there).
pub fn get_versioned(tier: Tier, key: &str) -> Result<Option<Versioned>, StoreError> {
    wit::store::get_versioned(tier, key)
}

/// Compare-and-set: write `value` only if `key` still holds the `version`
/// that [`get_versioned`] returned. `Ok(false)`: it changed (or was deleted
/// or expired, or on `central` moved to another server) since; read it
/// again and retry. A retired key answers
/// [`StoreError::Retired`]. Atomic as [`add`] is (on `replicated`, on this
/// node only).
pub fn cas(tier: Tier, key: &str, value: &[u8], ttl_s: u32, version: u64) -> Result<bool, StoreError> {
    wit::store::cas(tier, key, value, ttl_s, version)
}

/// Read-modify-write `key` without losing a concurrent update: `f` gets
/// the current value (`None`: absent) and returns the new one, or `None`
/// to leave the key as it is (a limit reached, say). Written with [`add`]
/// or [`cas`], and `f` runs again on the fresh value after a lost race, so
/// keep it free of side effects. `Ok(Some(new))`: written;
/// `Ok(None)`: `f` declined.
///
/// ```no_run
/// # use switchyard_sdk::store::{self, Tier};
/// // A per-user daily counter that stops at 100.
/// let n = store::update(Tier::Central, "uses:alice:2026-12-05", 86_400, |cur| {
///     let n: u64 = cur.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
///     (n < 100).then(|| (n + 1).to_string().into_bytes())
/// });
/// ```
pub fn update(tier: Tier, key: &str, ttl_s: u32, mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>) -> Result<Option<Vec<u8>>, StoreError> {
    for _ in 0..UPDATE_TRIES {
        let current = get_versioned(tier, key)?;
        let Some(next) = f(current.as_ref().map(|c| c.value.as_slice())) else { return Ok(None) };
        let written = match &current {
            None => add(tier, key, &next, ttl_s)?,
            Some(c) => cas(tier, key, &next, ttl_s, c.version)?,
        };
        if written {
            return Ok(Some(next));
        }
    }
    Err(StoreError::Unavailable(format!("{key} kept changing under {UPDATE_TRIES} compare-and-set attempts")))
}

/// Remove a value.
pub fn delete(tier: Tier, key: &str) -> Result<(), StoreError> {
    wit::store::delete(tier, key)
}

/// Retire `key` for `ttl_s` seconds (0: the tier's default): it reads as
/// absent from now on and a [`set`] of it fails with
/// [`StoreError::Retired`], so no concurrent request can bring it back.
/// What a renewed session id does to its old key; see
/// `session::renew` (the `session` seam).
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

/// [`index`] with the parts as the gateway takes them (no copies).
#[cfg(feature = "session")]
pub(crate) fn index_parts(principal: &str, id: &str, parts: &[IndexPart], ttl_s: u32) {
    wit::store::index(principal, id, parts, ttl_s)
}

/// A stored part of a session, as `index_parts` takes it.
#[cfg(feature = "session")]
pub(crate) use wit::store::Part as IndexPart;

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

    /// When a token expires, in Unix seconds: its `EXPIRY` field (a token
    /// is `v1.EXPIRY.PAYLOAD.MAC`). Read it only from a token [`verify`]
    /// accepted: this checks no signature. It was signed `ttl_s` before.
    pub fn expires_at(token: &str) -> Option<u64> {
        let mut parts = token.split('.');
        match (parts.next(), parts.next()) {
            (Some("v1"), Some(exp)) => exp.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tokens_expiry_is_its_second_field() {
        assert_eq!(super::tokens::expires_at("v1.1700000000.cGF5bG9hZA.bWFj"), Some(1_700_000_000));
        assert_eq!(super::tokens::expires_at("v2.1700000000.cGF5bG9hZA.bWFj"), None);
        assert_eq!(super::tokens::expires_at("v1.soon.cGF5bG9hZA.bWFj"), None);
        assert_eq!(super::tokens::expires_at("v1"), None);
    }
}
