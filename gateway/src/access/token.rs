//! Subject tokens (JWS compact JWTs): the header read here first, so every
//! refusal has one plain reason; the signature checked only by keys of the
//! token's own algorithm (the kid picks one); then the time, issuer and
//! audience claims, with no leeway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{crypto, Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// A key and the one algorithm it verifies.
pub struct TokenKey {
    /// `None` (a `jwt_keys` entry): tried for any token of its algorithm.
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Checks presented tokens against the configured keys and claims.
pub struct Verifier {
    keys: Vec<TokenKey>,
    audience: Option<String>,
    issuer: Option<String>,
}

/// What the header says: the algorithm and, when present, the key id.
#[derive(Debug, PartialEq)]
pub(super) struct JoseHeader {
    pub alg: String,
    pub kid: Option<String>,
}

impl Verifier {
    pub fn new(keys: Vec<TokenKey>, audience: Option<String>, issuer: Option<String>) -> Self {
        Self { keys, audience, issuer }
    }

    /// The claims of a token valid at `now` (Unix seconds), or why not.
    pub fn verify(&self, token: &str, now: u64) -> Result<Map<String, Value>, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [head, body, sig] = parts[..] else {
            return Err(format!("not a JWT (expected 3 dot-separated parts, found {})", parts.len()));
        };
        let header = header(head)?;
        let keys = self.keys_for(&header)?;
        if sig.is_empty() || URL_SAFE_NO_PAD.decode(sig).is_err() {
            return Err("not a JWT (the signature is not base64url)".into());
        }
        let message = &token[..head.len() + 1 + body.len()];
        // Each key verifies with its own algorithm, never the token's word.
        if !keys.iter().any(|k| crypto::verify(sig, message.as_bytes(), &k.key, k.alg).unwrap_or(false)) {
            return Err("signature does not verify".into());
        }
        let claims = json_object(body).ok_or("not a JWT (the claims are not a base64url JSON object)")?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// The keys that may verify a token with this header: those of its
    /// algorithm, narrowed to its kid when it names one.
    fn keys_for(&self, h: &JoseHeader) -> Result<Vec<&TokenKey>, String> {
        if h.alg.eq_ignore_ascii_case("none") {
            return Err(format!("alg {:?} is refused (unsigned token)", h.alg));
        }
        let of_alg: Vec<&TokenKey> = self.keys.iter().filter(|k| alg_name(k.alg) == h.alg).collect();
        if of_alg.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for name in self.keys.iter().map(|k| alg_name(k.alg)) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            return Err(format!("alg {:?} is not accepted (keys here: {})", h.alg, names.join(", ")));
        }
        let Some(kid) = &h.kid else { return Ok(of_alg) };
        if let Some(k) = self.keys.iter().find(|k| k.kid.as_ref() == Some(kid)) {
            if alg_name(k.alg) != h.alg {
                return Err(format!("key {kid:?} verifies {} tokens only, this one says {:?}", alg_name(k.alg), h.alg));
            }
            return Ok(vec![k]);
        }
        // A kid no keyed entry has: keys without a kid (`jwt_keys`) take
        // any token of their algorithm, as they always did.
        let unnamed: Vec<&TokenKey> = of_alg.into_iter().filter(|k| k.kid.is_none()).collect();
        if unnamed.is_empty() {
            return Err(format!("no key with kid {kid:?}"));
        }
        Ok(unnamed)
    }

    fn check_claims(&self, c: &Map<String, Value>, now: u64) -> Result<(), String> {
        let now_f = now as f64;
        let exp = time_claim(c, "exp")?.ok_or("missing claim \"exp\"")?;
        if exp <= now_f {
            return Err(format!("expired (exp {exp}, now {now})"));
        }
        if let Some(nbf) = time_claim(c, "nbf")?.filter(|nbf| *nbf > now_f) {
            return Err(format!("not valid yet (nbf {nbf}, now {now})"));
        }
        if let Some(iat) = time_claim(c, "iat")?.filter(|iat| *iat > now_f) {
            return Err(format!("issued in the future (iat {iat}, now {now})"));
        }
        match c.get("sub") {
            Some(Value::String(_)) => {}
            Some(_) => return Err("claim \"sub\" is not a string".into()),
            None => return Err("missing claim \"sub\"".into()),
        }
        if let Some(want) = &self.issuer {
            match c.get("iss") {
                None => return Err("missing claim \"iss\"".into()),
                Some(got) if got.as_str() != Some(want) => return Err(format!("claim \"iss\" is not {want:?}")),
                Some(_) => {}
            }
        }
        self.check_audience(c.get("aud"))
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), String> {
        let Some(want) = &self.audience else {
            // RFC 7519 4.1.3: a token for named audiences is not for a
            // recipient that cannot say it is one of them.
            return match aud {
                None => Ok(()),
                Some(_) => Err("claim \"aud\" is set, and this gateway has no [access] audience to match it".into()),
            };
        };
        let names = match aud {
            None => return Err("missing claim \"aud\"".into()),
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            Some(_) => return Err("claim \"aud\" is not a string or a list of strings".into()),
        };
        if names {
            Ok(())
        } else {
            Err(format!("claim \"aud\" does not include {want:?}"))
        }
    }
}

/// The JOSE header, read without the library so a refusal can say why in
/// words (its errors list every algorithm it knows, accepted or not).
pub(super) fn header(part: &str) -> Result<JoseHeader, String> {
    let h = json_object(part).ok_or("not a JWT (the header is not a base64url JSON object)")?;
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err("not a JWT (the header's \"alg\" is not a string)".into()),
        None => return Err("not a JWT (the header has no \"alg\")".into()),
    };
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("not a JWT (the header's \"kid\" is not a string)".into()),
    };
    // RFC 7515 4.1.11: extensions marked critical must be understood; none are.
    if h.contains_key("crit") {
        return Err("the header lists \"crit\" extensions, none of which are supported".into());
    }
    Ok(JoseHeader { alg, kid })
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A NumericDate claim, if present.
fn time_claim(c: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match c.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("claim {name:?} is not a number (seconds since 1970)")),
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        // The config offers only the three above.
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn hs(kid: Option<&str>, secret: &[u8]) -> TokenKey {
        TokenKey { kid: kid.map(str::to_string), alg: Algorithm::HS256, key: DecodingKey::from_secret(secret) }
    }

    fn sign(kid: Option<&str>, secret: &[u8], claims: Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_string);
        encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut c = serde_json::json!({ "sub": "alice", "exp": NOW + 60 });
        c.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        c
    }

    #[test]
    fn the_header_is_read_in_words() {
        assert_eq!(header(&b64(r#"{"alg":"HS256","kid":"k1"}"#)), Ok(JoseHeader { alg: "HS256".into(), kid: Some("k1".into()) }));
        assert_eq!(header(&b64(r#"{"alg":"none"}"#)), Ok(JoseHeader { alg: "none".into(), kid: None }));
        assert_eq!(header("x"), Err("not a JWT (the header is not a base64url JSON object)".into()));
        assert_eq!(header(&b64("[1]")), Err("not a JWT (the header is not a base64url JSON object)".into()));
        assert_eq!(header(&b64(r#"{"typ":"JWT"}"#)), Err("not a JWT (the header has no \"alg\")".into()));
        assert_eq!(header(&b64(r#"{"alg":7}"#)), Err("not a JWT (the header's \"alg\" is not a string)".into()));
        assert_eq!(header(&b64(r#"{"alg":"HS256","kid":[1]}"#)), Err("not a JWT (the header's \"kid\" is not a string)".into()));
        assert!(header(&b64(r#"{"alg":"HS256","crit":["b64"]}"#)).unwrap_err().contains("crit"));
    }

    #[test]
    fn each_refusal_has_one_plain_reason() {
        let v = Verifier::new(vec![hs(None, SECRET)], None, None);
        let body = b64(&claims(Value::Null).to_string());
        let cases = [
            (format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#)), "alg \"none\" is refused (unsigned token)".to_string()),
            (format!("{}.{body}.", b64(r#"{"alg":"None"}"#)), "alg \"None\" is refused (unsigned token)".to_string()),
            (format!("{}.{body}.c2ln", b64(r#"{"alg":"HS384"}"#)), "alg \"HS384\" is not accepted (keys here: HS256)".to_string()),
            ("a.b".to_string(), "not a JWT (expected 3 dot-separated parts, found 2)".to_string()),
            (sign(None, b"another-secret-0123456789abcdefghij", claims(Value::Null)), "signature does not verify".to_string()),
            (sign(None, SECRET, claims(serde_json::json!({ "exp": NOW }))), format!("expired (exp {NOW}, now {NOW})")),
            (sign(None, SECRET, claims(serde_json::json!({ "nbf": NOW + 1 }))), format!("not valid yet (nbf {}, now {NOW})", NOW + 1)),
            (sign(None, SECRET, claims(serde_json::json!({ "iat": NOW + 1 }))), format!("issued in the future (iat {}, now {NOW})", NOW + 1)),
            (sign(None, SECRET, serde_json::json!({ "sub": "a" })), "missing claim \"exp\"".to_string()),
            (sign(None, SECRET, serde_json::json!({ "exp": NOW + 9 })), "missing claim \"sub\"".to_string()),
            (sign(None, SECRET, claims(serde_json::json!({ "exp": "soon" }))), "claim \"exp\" is not a number (seconds since 1970)".to_string()),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, NOW), Err(want));
        }
        let ok = sign(None, SECRET, claims(serde_json::json!({ "nbf": NOW, "iat": NOW })));
        assert_eq!(v.verify(&ok, NOW).unwrap()["sub"], "alice");
    }

    #[test]
    fn the_kid_selects_the_key() {
        let (a, b) = (b"key-a-0123456789abcdefghijklmnopqrstu".as_slice(), b"key-b-0123456789abcdefghijklmnopqrstu".as_slice());
        let v = Verifier::new(vec![hs(Some("a"), a), hs(Some("b"), b)], None, None);
        assert!(v.verify(&sign(Some("a"), a, claims(Value::Null)), NOW).is_ok());
        assert!(v.verify(&sign(Some("b"), b, claims(Value::Null)), NOW).is_ok());
        assert!(v.verify(&sign(None, b, claims(Value::Null)), NOW).is_ok(), "without a kid every key is tried");
        assert_eq!(v.verify(&sign(Some("a"), b, claims(Value::Null)), NOW), Err("signature does not verify".into()));
        assert_eq!(v.verify(&sign(Some("c"), b, claims(Value::Null)), NOW), Err("no key with kid \"c\"".into()));
        // Keys without a kid (jwt_keys) still take tokens whose kid is unknown.
        let legacy = Verifier::new(vec![hs(None, a), hs(Some("b"), b)], None, None);
        assert!(legacy.verify(&sign(Some("c"), a, claims(Value::Null)), NOW).is_ok());
        assert_eq!(legacy.verify(&sign(Some("b"), a, claims(Value::Null)), NOW), Err("signature does not verify".into()));
    }

    #[test]
    fn issuer_and_audience_are_named() {
        let v = Verifier::new(vec![hs(None, SECRET)], Some("api".into()), Some("https://idp".into()));
        let with = |extra: Value| v.verify(&sign(None, SECRET, claims(extra)), NOW);
        assert!(with(serde_json::json!({ "iss": "https://idp", "aud": "api" })).is_ok());
        assert!(with(serde_json::json!({ "iss": "https://idp", "aud": ["other", "api"] })).is_ok());
        assert_eq!(with(serde_json::json!({ "aud": "api" })), Err("missing claim \"iss\"".into()));
        assert_eq!(with(serde_json::json!({ "iss": "https://evil", "aud": "api" })), Err("claim \"iss\" is not \"https://idp\"".into()));
        assert_eq!(with(serde_json::json!({ "iss": "https://idp" })), Err("missing claim \"aud\"".into()));
        assert_eq!(with(serde_json::json!({ "iss": "https://idp", "aud": ["other"] })), Err("claim \"aud\" does not include \"api\"".into()));
        let open = Verifier::new(vec![hs(None, SECRET)], None, None);
        assert!(open.verify(&sign(None, SECRET, claims(serde_json::json!({ "iss": "anyone" }))), NOW).is_ok(), "no issuer set: any iss");
        assert_eq!(
            open.verify(&sign(None, SECRET, claims(serde_json::json!({ "aud": "api" }))), NOW),
            Err("claim \"aud\" is set, and this gateway has no [access] audience to match it".into()),
            "no audience set: a token for an audience is not for us"
        );
    }
}
