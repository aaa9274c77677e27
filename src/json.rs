//! Strict JSON: an object whose keys are each named once, at any depth.
//! Below every room that reads JSON from outside (request bodies, ID
//! tokens), so that none of them has to reach up into `http/` for it.

use serde::de::DeserializeOwned;

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
