//! Verifying an ID token: its form, an algorithm from the short list, a key
//! from its issuer's key set only, the signature (by `jsonwebtoken`, pinned
//! to that one algorithm), and every claim the contract requires, checked
//! here too, by type, so that a claim of the wrong JSON type can never be
//! read as absent (CVE-2026-25537).

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{Issuer, Oidc, OidcError};

/// Clock skew allowed on every time claim, in seconds.
pub const LEEWAY: i64 = 60;
/// Longest ID token read (GitHub's are about 1.2 KiB).
const MAX_ID_TOKEN: usize = 16 << 10;
/// Header fields that would let a token choose its own key.
const KEY_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// An ID token whose signature and claims checked out.
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub kid: String,
    pub jti: String,
    /// `exp`, seconds since the epoch.
    pub exp: i64,
    pub claims: Claims,
}

/// An ID token's claims.
pub struct Claims(Map<String, Value>);

impl Claims {
    /// A claim as text: strings as they are, integers and booleans written
    /// out (issuers differ in how they type ids); anything else is absent.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

fn part(encoded: &str, what: &'static str) -> Result<Map<String, Value>, OidcError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| OidcError::invalid("format", format!("the {what} is not base64url")))?;
    // Duplicate names are refused: two JSON readers could take different ones.
    crate::json::parse(&bytes)
        .map_err(|e| OidcError::invalid("format", format!("the {what} is not a JSON object with unique names: {e}")))
}

pub async fn verify(oidc: &Oidc, id_token: &str, now: OffsetDateTime) -> Result<Verified, OidcError> {
    if id_token.len() > MAX_ID_TOKEN {
        return Err(OidcError::invalid("format", "the ID token is longer than 16 KiB"));
    }
    let parts: Vec<&str> = id_token.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(OidcError::invalid("format", "an ID token is a JWS in compact form: three base64url parts"));
    };
    let (header, payload) = (part(header, "header")?, part(payload, "payload")?);

    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        other => {
            let named = other.map_or_else(|| "none given".to_owned(), crate::error::bounded);
            return Err(OidcError::invalid("alg", format!("algorithm {named} is not accepted: RS256 or ES256 only")));
        }
    };
    if let Some(field) = KEY_HEADERS.iter().find(|f| header.contains_key(**f)) {
        return Err(OidcError::invalid(
            "header",
            format!("the header names a key of its own ({field}); keys come from the issuer only"),
        ));
    }
    if header.contains_key("crit") {
        return Err(OidcError::invalid(
            "header",
            "the header has critical extensions (crit), none of which is supported",
        ));
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ => return Err(OidcError::invalid("kid", "the header has no key id (kid)")),
    };

    // Which issuer, by exact `iss`: a publisher is trusted only for tokens
    // of the issuer it names, however alike two issuers' claims are.
    let iss = match payload.get("iss") {
        Some(Value::String(iss)) => iss.as_str(),
        _ => return Err(OidcError::invalid("iss", "the ID token has no iss claim")),
    };
    let issuer =
        oidc.by_url(iss).ok_or_else(|| OidcError::invalid("iss", "the ID token's issuer is not trusted here"))?;
    let key = issuer.keys.key(&kid).await?;
    if key.alg != alg {
        return Err(OidcError::invalid("alg", "the ID token's algorithm is not the one of its key"));
    }

    let config = &issuer.config;
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY as u64;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&[config.url.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    jsonwebtoken::decode::<Value>(id_token, &key.decoding, &validation).map_err(|e| library_refusal(e.kind()))?;

    // The same checks again, and those the library does not make, by type.
    let exp = time_claim(&payload, "exp")?.ok_or_else(|| OidcError::invalid("exp", "the ID token has no exp claim"))?;
    let iat = time_claim(&payload, "iat")?.ok_or_else(|| OidcError::invalid("iat", "the ID token has no iat claim"))?;
    let nbf = time_claim(&payload, "nbf")?;
    let now = now.unix_timestamp();
    if exp + LEEWAY <= now {
        return Err(OidcError::invalid("exp", "the ID token has expired"));
    }
    if iat > now + LEEWAY {
        return Err(OidcError::invalid("iat", "the ID token is issued in the future (iat)"));
    }
    if nbf.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(OidcError::invalid("nbf", "the ID token is not valid yet (nbf)"));
    }
    if exp < iat || exp - iat > config.max_id_token_lifetime as i64 {
        return Err(OidcError::invalid(
            "exp",
            format!("the ID token's lifetime (exp - iat) must be 0 to {} seconds", config.max_id_token_lifetime),
        ));
    }
    let audience_ok = match payload.get("aud") {
        Some(Value::String(aud)) => *aud == config.audience,
        Some(Value::Array(auds)) => matches!(&auds[..], [Value::String(aud)] if *aud == config.audience),
        _ => false,
    };
    if !audience_ok {
        return Err(OidcError::invalid(
            "aud",
            format!("the audience must be exactly {:?}: a string, or an array of that one string", config.audience),
        ));
    }
    let jti = match payload.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= 256 => jti.clone(),
        _ => return Err(OidcError::invalid("jti", "the ID token has no jti claim (1 to 256 characters)")),
    };
    Ok(Verified { issuer: issuer.clone(), kid, jti, exp, claims: Claims(payload) })
}

/// A time claim: absent, or a number of seconds; any other type is refused.
fn time_claim(payload: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, OidcError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)) {
            Some(seconds) => Ok(Some(seconds)),
            None => Err(OidcError::invalid(name, format!("claim {name} is out of range"))),
        },
        Some(_) => Err(OidcError::invalid(name, format!("claim {name} must be a number of seconds since the epoch"))),
    }
}

/// What the library's refusal means, in the contract's words.
fn library_refusal(kind: &ErrorKind) -> OidcError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey => {
            OidcError::invalid("signature", "the signature does not verify with the issuer's key")
        }
        ErrorKind::ExpiredSignature => OidcError::invalid("exp", "the ID token has expired"),
        ErrorKind::ImmatureSignature => OidcError::invalid("nbf", "the ID token is not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => OidcError::invalid("iss", "the ID token's issuer is not trusted here"),
        ErrorKind::InvalidAudience => OidcError::invalid("aud", "the ID token is not for this audience"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            OidcError::invalid("alg", "the algorithm is not accepted: RS256 or ES256 only")
        }
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => OidcError::invalid("exp", "the ID token has no exp claim"),
            "aud" => OidcError::invalid("aud", "the ID token has no aud claim"),
            _ => OidcError::invalid("iss", "the ID token has no iss claim"),
        },
        ErrorKind::InvalidClaimFormat(claim) => {
            OidcError::invalid("claims", format!("claim {} has the wrong type", crate::error::bounded(claim)))
        }
        other => OidcError::invalid("format", format!("the ID token is malformed: {other:?}")),
    }
}
