//! The tus 1.0.0 wire format (tus.io `protocol.md`): the headers Amber reads,
//! parsed strictly. A header that does not parse is refused with a message
//! naming it, never guessed at.

use std::collections::BTreeMap;

use base64::Engine;

pub const VERSION: &str = "1.0.0";
/// What `OPTIONS` announces in `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,expiration,termination,concatenation";
/// The content type of a `PATCH` body.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// At most this many `Upload-Metadata` pairs.
const MAX_PAIRS: usize = 32;
/// At most this long an `Upload-Metadata` header (it is kept with the
/// upload): room for 1024 chaining values and a few more pairs.
pub const MAX_METADATA: usize = 64 * 1024;
/// At most this many uploads named by one `Upload-Concat: final`.
pub const MAX_CONCAT: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TusError {
    /// `Tus-Resumable` absent or another version: `412` with `Tus-Version`.
    #[error("Tus-Resumable must be {VERSION}")]
    Version,
    #[error("{header} must be a number of bytes")]
    Number { header: &'static str },
    #[error("Upload-Metadata: {0}")]
    Metadata(String),
    #[error("Upload-Concat must be \"partial\" or \"final;\" followed by upload URLs separated by spaces: {0}")]
    Concat(String),
}

/// Checks `Tus-Resumable` (required on every request but `OPTIONS`).
pub fn check_resumable(value: Option<&str>) -> Result<(), TusError> {
    if value == Some(VERSION) { Ok(()) } else { Err(TusError::Version) }
}

/// `Upload-Length` or `Upload-Offset`: ASCII digits only (no sign, no space,
/// no leading `+`), at most 19 of them so that it fits.
pub fn parse_number(header: &'static str, value: &str) -> Result<u64, TusError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TusError::Number { header });
    }
    value.parse().map_err(|_| TusError::Number { header })
}

/// `Upload-Metadata`: comma-separated pairs of a key and, after one space,
/// its value in base64; a key alone has no value. Keys are non-empty ASCII
/// without spaces or commas, and unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<String, Option<Vec<u8>>>);

impl Metadata {
    pub fn parse(value: &str) -> Result<Self, TusError> {
        if value.len() > MAX_METADATA {
            return Err(TusError::Metadata(format!("at most {MAX_METADATA} bytes are taken")));
        }
        let mut pairs = BTreeMap::new();
        if value.trim().is_empty() {
            return Ok(Self(pairs));
        }
        for pair in value.split(',') {
            // Clients join pairs with "," or ", "; a trailing space is an
            // empty value.
            let pair = pair.trim_start();
            let (key, encoded) = match pair.split_once(' ') {
                Some((key, encoded)) => (key, Some(encoded)),
                None => (pair, None),
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TusError::Metadata(format!("a key must be printable ASCII without spaces: {key:?}")));
            }
            let decoded = match encoded {
                None => None,
                Some(encoded) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|_| TusError::Metadata(format!("the value of {key:?} is not base64")))?,
                ),
            };
            if pairs.insert(key.to_owned(), decoded).is_some() {
                return Err(TusError::Metadata(format!("{key:?} is given twice")));
            }
            if pairs.len() > MAX_PAIRS {
                return Err(TusError::Metadata(format!("at most {MAX_PAIRS} pairs are taken")));
            }
        }
        Ok(Self(pairs))
    }

    /// The value of `key` as UTF-8 text, if given with a value.
    pub fn text(&self, key: &str) -> Result<Option<&str>, TusError> {
        match self.0.get(key) {
            Some(Some(bytes)) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| TusError::Metadata(format!("the value of {key:?} is not UTF-8"))),
            _ => Ok(None),
        }
    }

    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).and_then(|v| v.as_deref())
    }

    /// The header form, for storing and echoing back.
    pub fn to_header(&self) -> String {
        let engine = &base64::engine::general_purpose::STANDARD;
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(key, value)| match value {
                Some(value) => format!("{key} {}", engine.encode(value)),
                None => key.clone(),
            })
            .collect();
        pairs.join(",")
    }
}

/// `Upload-Concat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concat {
    /// A part of a later final upload.
    Partial,
    /// The concatenation of these uploads, in order (their URLs as sent).
    Final(Vec<String>),
}

impl Concat {
    pub fn parse(value: &str) -> Result<Self, TusError> {
        if value == "partial" {
            return Ok(Self::Partial);
        }
        let Some(urls) = value.strip_prefix("final;") else {
            return Err(TusError::Concat(cut(value)));
        };
        let urls: Vec<String> = urls.split(' ').filter(|u| !u.is_empty()).map(str::to_owned).collect();
        if urls.is_empty() || urls.len() > MAX_CONCAT {
            return Err(TusError::Concat(format!("between 1 and {MAX_CONCAT} uploads are taken")));
        }
        Ok(Self::Final(urls))
    }
}

/// The upload a URL of a final upload names: its last path segment, when
/// the URL's path is `base/ID` (`base` the uploads path of the repository,
/// such as `/v1/repos/acme/web/uploads`). A URL is a path, or an absolute
/// http(s) URL whose authority is one this server answers at (`hosts`: the
/// request's `Host`, the public URL's): a final never names another
/// server's upload, even one whose id happens to match.
pub fn upload_in<'u>(url: &'u str, base: &str, hosts: &[String]) -> Option<&'u str> {
    let path = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return None;
            }
            let slash = rest.find('/')?;
            let authority = &rest[..slash];
            if authority.is_empty() || !hosts.iter().any(|h| h.eq_ignore_ascii_case(authority)) {
                return None;
            }
            &rest[slash..]
        }
        None => url,
    };
    let id = path.strip_prefix(base)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn cut(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_digits_only() {
        assert_eq!(parse_number("Upload-Length", "0"), Ok(0));
        assert_eq!(parse_number("Upload-Length", "18446744073709551"), Ok(18_446_744_073_709_551));
        for bad in ["", "-1", "+1", " 1", "1 ", "0x10", "1e3", "99999999999999999999", "١"] {
            assert!(parse_number("Upload-Offset", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_as_tus_clients_send_it() {
        // tus-js-client and tuspy: `key base64` pairs joined by commas.
        let m = Metadata::parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential").unwrap();
        assert_eq!(m.text("filename").unwrap(), Some("world_domination_plan.pdf"));
        assert_eq!(m.bytes("is_confidential"), None);
        assert_eq!(Metadata::parse(&m.to_header()).unwrap(), m);
        assert_eq!(Metadata::parse("").unwrap(), Metadata::default());
        for bad in ["a b c", "a !!!", "a YQ==,a YQ==", "a YQ==,", "é YQ=="] {
            assert!(Metadata::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn concat_and_the_uploads_it_names() {
        assert_eq!(Concat::parse("partial"), Ok(Concat::Partial));
        let base = "/v1/repos/acme/web/uploads";
        let Concat::Final(urls) =
            Concat::parse("final;/v1/repos/acme/web/uploads/ab12 http://h:1/v1/repos/acme/web/uploads/cd34").unwrap()
        else {
            panic!("final")
        };
        let hosts = ["h:1".to_owned()];
        let ids: Vec<_> = urls.iter().map(|u| upload_in(u, base, &hosts)).collect();
        assert_eq!(ids, [Some("ab12"), Some("cd34")]);
        assert_eq!(upload_in("/v1/repos/acme/other/uploads/ab12", base, &hosts), None, "another repository's path");
        assert_eq!(upload_in("/v1/repos/acme/web/uploads/ab/12", base, &hosts), None);
        assert_eq!(upload_in("/v1/repos/acme/web/uploads/", base, &hosts), None);
        for foreign in [
            "http://evil.example/v1/repos/acme/web/uploads/ab12",
            "http://h:2/v1/repos/acme/web/uploads/ab12",
            "http://h/v1/repos/acme/web/uploads/ab12",
            "ftp://h:1/v1/repos/acme/web/uploads/ab12",
            "http:///v1/repos/acme/web/uploads/ab12",
        ] {
            assert_eq!(upload_in(foreign, base, &hosts), None, "{foreign}");
        }
        assert_eq!(upload_in("HTTPS://H:1/v1/repos/acme/web/uploads/ab12", base, &hosts), Some("ab12"));
        for bad in ["final;", "final", "partial;", "Final;/x", "", "final; "] {
            assert!(Concat::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any metadata a client can hold goes to the header and back unchanged.
        #[test]
        fn metadata_round_trips(pairs in prop::collection::btree_map("[!-+--~]{1,12}", prop::option::of(prop::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let m = Metadata(pairs.into_iter().collect());
            prop_assert_eq!(Metadata::parse(&m.to_header()).unwrap(), m);
        }

        /// No input makes a parser panic.
        #[test]
        fn parsers_never_panic(value in ".{0,200}") {
            let _ = Metadata::parse(&value);
            let _ = Concat::parse(&value);
            let _ = parse_number("Upload-Length", &value);
            let _ = upload_in(&value, "/v1/repos/a/b/uploads", &["h".to_owned()]);
        }
    }
}
