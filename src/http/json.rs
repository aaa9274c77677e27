//! JSON bodies. `ApiJson` is a JSON answer; `JsonBody` a request body that
//! is read only when the handler asks, after it checked the caller's grant,
//! so a token without the grant cannot make the server buffer anything.
//! Bodies are parsed whatever their `Content-Type` (so `curl -d` works); a
//! body announced or found over the limit is `413 request_too_large`, one
//! that stalls `408`, and anything that is not JSON of the expected shape
//! (duplicate keys included) `400 request_invalid`. The bytes being read are
//! borrowed from the upload memory budget, so many large bodies at once wait
//! or get `429` rather than exhaust memory.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::JSON_BODY_LIMIT;
use crate::error::ApiError;
use crate::state::AppState;

pub struct ApiJson<T>(pub T);

/// A request body, unread.
pub struct JsonBody(Body);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    /// Refuses a body announced over the limit at once; reads nothing.
    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let announced =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > JSON_BODY_LIMIT as u64) {
            return Err(ApiError::RequestTooLarge { limit: JSON_BODY_LIMIT });
        }
        Ok(Self(request.into_body()))
    }
}

impl JsonBody {
    /// Reads the whole body, at most [`JSON_BODY_LIMIT`] bytes.
    pub async fn bytes(self, state: &AppState) -> Result<Bytes, ApiError> {
        self.bytes_within(state, JSON_BODY_LIMIT).await
    }

    /// Reads the whole body, at most `limit` bytes (routes anyone may call
    /// keep theirs small).
    pub async fn bytes_within(self, state: &AppState, limit: usize) -> Result<Bytes, ApiError> {
        let mut stream = self.0.into_data_stream();
        let (mut buffer, mut lent) = (BytesMut::new(), crate::admission::Lent::default());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if super::body_timed_out(&e) {
                    ApiError::RequestTimeout(state.config.limits.body_idle_timeout.as_secs())
                } else {
                    ApiError::RequestInvalid(format!("reading the body failed: {e}"))
                }
            })?;
            if buffer.len() + chunk.len() > limit {
                return Err(ApiError::RequestTooLarge { limit });
            }
            let more = state.admission.memory.borrow(chunk.len()).await;
            lent.merge(
                more.ok_or(ApiError::TooManyRequests { reason: "request memory is exhausted", retry_after: 1 })?,
            );
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    /// Reads and parses the body.
    pub async fn json<T: DeserializeOwned>(self, state: &AppState) -> Result<T, ApiError> {
        self.json_within(state, JSON_BODY_LIMIT).await
    }

    /// Reads and parses a body of at most `limit` bytes.
    pub async fn json_within<T: DeserializeOwned>(self, state: &AppState, limit: usize) -> Result<T, ApiError> {
        let bytes = self.bytes_within(state, limit).await?;
        parse(&bytes).map_err(|e| ApiError::RequestInvalid(format!("invalid JSON body: {e}")))
    }
}

/// Parses a JSON object, refusing an object that names a key twice anywhere
/// in the document (serde keeps the last silently, so two readers could
/// disagree) and any other top-level value: every request body of this API is
/// an object, and serde would read a struct from an array too (`[]` as `{}`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    use serde::Deserializer as _;
    use serde::de::Error as _;
    serde_json::Deserializer::from_slice(bytes).deserialize_any(unique_keys::Check)?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(serde_json::Error::custom("the body must be a JSON object"));
    }
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
                prop_assert!(strict.is_err(), "only objects are bodies");
            }
        }
    }

    #[test]
    fn only_objects_are_bodies() {
        for not_an_object in ["[]", "1", "\"x\"", "null", " [ ] ", ""] {
            assert!(parse::<Value>(not_an_object.as_bytes()).is_err(), "{not_an_object:?}");
        }
        assert!(parse::<Value>(b" \n{}").is_ok());
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
