//! The media types, headers and well-known content `/v2/` names.

use axum::http::{HeaderName, HeaderValue};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A header value of text the server made (a digest, a path): never fails.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The empty config (`application/vnd.oci.empty.v1+json`), `{}`: served in
/// every repository, two bytes anyone may know.
pub const EMPTY: &[u8] = b"{}";
pub const EMPTY_SHA256: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// What a `/v1/` tag's OCI view, and its referrers, are.
pub const ARTIFACT_TYPE: &str = "application/vnd.amber.manifest.v1+json";
pub const ENVELOPE_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const RECEIPT_TYPE: &str = "application/vnd.amber.tlog-proof";
/// An in-toto attestation (a DSSE envelope of a Statement), as a referrer.
pub const INTOTO_TYPE: &str = "application/vnd.in-toto+json";
