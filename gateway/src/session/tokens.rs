//! Signed tokens: `v1.EXPIRY.PAYLOAD.MAC`, base64url, MAC = HMAC-SHA256
//! over `v1.EXPIRY.PAYLOAD` (hmac + sha2). The first key signs, every key
//! verifies, so a rotation lists the new key first and drops the old one
//! once every token it signed has expired.

use crate::metrics::metrics;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted (a cookie is at most 4 KiB).
pub const MAX_TOKEN: usize = 4096;

/// The signing keys, each as an HMAC already keyed: keying hashes two
/// blocks, so it is done once here and each MAC starts from a copy.
pub struct Tokens {
    keys: Vec<HmacSha256>,
}

/// Why a token was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    BadSignature,
    Expired,
}

impl Rejected {
    fn as_str(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::BadSignature => "bad_signature",
            Rejected::Expired => "expired",
        }
    }
}

impl Tokens {
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self { keys: keys.iter().map(|k| HmacSha256::new_from_slice(k).expect("HMAC takes a key of any length")).collect() }
    }

    /// Sign `payload` for `ttl_s` seconds from now.
    pub fn sign(&self, payload: &[u8], ttl_s: u32) -> Result<String, String> {
        self.sign_at(payload, now_s() + u64::from(ttl_s))
    }

    fn sign_at(&self, payload: &[u8], expires: u64) -> Result<String, String> {
        let key = self.keys.first().ok_or("no signing key: set [session] keys")?;
        let body = format!("v1.{expires}.{}", B64.encode(payload));
        let mac = mac(key, &body).finalize().into_bytes();
        Ok(format!("{body}.{}", B64.encode(mac)))
    }

    /// The payload, if the token is well-formed, signed by one of the keys
    /// and not expired; a refusal is counted by reason.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        match self.check(token, now_s()) {
            Ok(p) => Some(p),
            Err(why) => {
                metrics().session_tokens_rejected.with_label_values(&[why.as_str()]).inc();
                None
            }
        }
    }

    fn check(&self, token: &str, now: u64) -> Result<Vec<u8>, Rejected> {
        if token.len() > MAX_TOKEN {
            return Err(Rejected::Malformed);
        }
        let (body, sig) = token.rsplit_once('.').ok_or(Rejected::Malformed)?;
        let mut parts = body.splitn(3, '.');
        let (Some("v1"), Some(exp), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Rejected::Malformed);
        };
        let sig = B64.decode(sig).map_err(|_| Rejected::Malformed)?;
        // Verify before looking at the content: constant-time, every key.
        if !self.keys.iter().any(|k| mac(k, body).verify_slice(&sig).is_ok()) {
            return Err(Rejected::BadSignature);
        }
        let exp: u64 = exp.parse().map_err(|_| Rejected::Malformed)?;
        if exp <= now {
            return Err(Rejected::Expired);
        }
        B64.decode(payload).map_err(|_| Rejected::Malformed)
    }
}

fn mac(key: &HmacSha256, body: &str) -> HmacSha256 {
    let mut m = key.clone();
    m.update(body.as_bytes());
    m
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 128 random bits from the OS as 32 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(k: &[&str]) -> Tokens {
        Tokens::new(k.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    const A: &str = "a-key-that-is-at-least-32-bytes-long!!";
    const B: &str = "b-key-that-is-at-least-32-bytes-long!!";

    #[test]
    fn round_trip_and_rotation() {
        let old = keys(&[A]);
        let t = old.sign(b"backend-1", 60).unwrap();
        assert_eq!(old.verify(&t).as_deref(), Some(&b"backend-1"[..]));
        // During a rotation both keys verify; the new one signs.
        let rotating = keys(&[B, A]);
        assert_eq!(rotating.verify(&t).as_deref(), Some(&b"backend-1"[..]));
        let t2 = rotating.sign(b"x", 60).unwrap();
        assert_eq!(keys(&[B]).check(&t2, now_s()), Ok(b"x".to_vec()));
        // After it, the old key's tokens are refused.
        assert_eq!(keys(&[B]).check(&t, now_s()), Err(Rejected::BadSignature));
    }

    #[test]
    fn expired_forged_and_tampered_are_refused() {
        let k = keys(&[A]);
        let t = k.sign_at(b"p", 100).unwrap();
        assert_eq!(k.check(&t, 100), Err(Rejected::Expired));
        assert_eq!(k.check(&t, 99), Ok(b"p".to_vec()));
        let forged = keys(&[B]).sign_at(b"p", 200).unwrap();
        assert_eq!(k.check(&forged, 99), Err(Rejected::BadSignature));
        // A later expiry with the old signature is tampering.
        let tampered = t.replacen("v1.100.", "v1.999.", 1);
        assert_eq!(k.check(&tampered, 99), Err(Rejected::BadSignature));
        assert_eq!(k.check("garbage", 0), Err(Rejected::Malformed));
        assert!(keys(&[]).sign(b"p", 1).is_err());
    }

    proptest! {
        #[test]
        fn any_change_to_a_token_is_refused(payload in proptest::collection::vec(any::<u8>(), 0..64), pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9._-]") {
            let k = keys(&[A]);
            let t = k.sign_at(&payload, u64::MAX / 2).unwrap();
            let i = pos.index(t.len());
            let mut changed = t.clone();
            changed.replace_range(i..=i, &c);
            prop_assume!(changed != t);
            prop_assert!(k.check(&changed, 0).is_err(), "{changed} was accepted");
        }
    }
}
