//! `ApiJson`: a JSON body in, a JSON body out. Bodies are parsed whatever
//! their `Content-Type` (so `curl -d` works); a body over the limit is `413
//! request_too_large`, one that stalls `408`, and anything that is not JSON
//! of the expected shape (duplicate keys included) `400 request_invalid`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| body_error(&e))?;
        parse(&bytes).map(Self).map_err(|e| ApiError::RequestInvalid(format!("invalid JSON body: {e}")))
    }
}

/// Why a JSON body could not be read.
pub fn body_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::RequestTooLarge { limit: super::JSON_BODY_LIMIT };
    }
    if std::error::Error::source(rejection).is_some_and(super::error_is_body_timeout) {
        return ApiError::RequestTimeout(0);
    }
    ApiError::RequestInvalid(format!("reading the body failed: {}", rejection.body_text()))
}

/// Parses JSON, refusing an object that names a key twice anywhere in the
/// document (serde keeps the last silently, so two readers could disagree).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    use serde::Deserializer as _;
    serde_json::Deserializer::from_slice(bytes).deserialize_any(unique_keys::Check)?;
    serde_json::from_slice(bytes)
}

mod unique_keys {
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Walks any JSON value, failing at the first repeated key of an object.
    pub struct Check;

    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Check {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                }
                map.next_value_seed(Check)?;
            }
            Ok(())
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::parse;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever serde_json accepts, this accepts too unless it repeats a
        /// key, and then it is refused; nothing panics.
        #[test]
        fn only_repeated_keys_are_refused_beyond_serde(json in "\\PC{0,80}|\\{(\"[ab]\": ?[0-9], ?){0,3}\"[ab]\": ?[0-9]\\}") {
            let plain = serde_json::from_str::<Value>(&json);
            let strict = parse::<Value>(json.as_bytes());
            if let Ok(Value::Object(map)) = &plain {
                let keys = json.matches("\":").count();
                prop_assert_eq!(strict.is_ok(), map.len() == keys || keys == 0);
            } else {
                prop_assert_eq!(strict.is_ok(), plain.is_ok());
            }
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse::<Value>(br#"{"a": 1, "b": {"c": [1, {"d": 2}]}}"#).is_ok());
        let err = parse::<Value>(br#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
        assert!(parse::<Value>(br#"{"x": [{"k": 1, "k": 1}]}"#).is_err());
        // Escapes name the same key.
        assert!(parse::<Value>(br#"{"k": 1, "\u006b": 2}"#).is_err());
        assert!(parse::<Value>(b"[1, 2").is_err());
    }
}
