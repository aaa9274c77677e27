//! The OCI front door: the distribution API v1.1 at `/v2/` (pull, push,
//! content discovery, referrers) over the same store, tokens, limits, audit
//! and transparency log as `/v1/` (`design/oci.md`). Tags stay create-only
//! and every OCI tag binding is an Amber binding (`crate::push::publish`);
//! deletes are refused as `UNSUPPORTED`.
//!
//! Here: the route table ([`routes`], merged into the one router by
//! `crate::server`), OCI errors (`error`), digests and the second hash
//! (`digest`), who calls (`auth`: Basic, Bearer, the Docker token flow),
//! blobs and upload sessions (`blobs`), manifests, tags, referrers and the
//! catalog (`manifests`), `/v1/` tags as OCI artifacts (`view`), and the
//! media types they name (`media`).

pub mod auth;
pub mod blobs;
pub mod digest;
pub mod error;
pub mod manifests;
pub mod media;
mod view;

use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use self::error::OciError;
use crate::error::ApiError;
use crate::state::AppState;

const BLOB: &str = "/v2/{owner}/{name}/blobs/{digest}";
const UPLOADS: &str = "/v2/{owner}/{name}/blobs/uploads/";
const UPLOAD: &str = "/v2/{owner}/{name}/blobs/uploads/{id}";
const MANIFEST: &str = "/v2/{owner}/{name}/manifests/{reference}";

/// Every `/v2/` route: method, path and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    use MethodFilter as M;
    vec![
        (Method::GET, "/v2/", on(M::GET, auth::base)),
        (Method::GET, "/v2/token", on(M::GET, auth::token)),
        (Method::GET, "/v2/_catalog", on(M::GET, manifests::catalog)),
        (Method::HEAD, BLOB, on(M::HEAD, blobs::head_blob)),
        (Method::GET, BLOB, on(M::GET, blobs::get_blob)),
        (Method::DELETE, BLOB, on(M::DELETE, blobs::delete_blob)),
        (Method::POST, UPLOADS, on(M::POST, blobs::start_upload)),
        (Method::POST, "/v2/{owner}/{name}/blobs/uploads", on(M::POST, blobs::start_upload)),
        (Method::PATCH, UPLOAD, on(M::PATCH, blobs::patch_upload)),
        (Method::PUT, UPLOAD, on(M::PUT, blobs::close_upload)),
        (Method::GET, UPLOAD, on(M::GET, blobs::upload_status)),
        (Method::DELETE, UPLOAD, on(M::DELETE, blobs::cancel_upload)),
        (Method::PUT, MANIFEST, on(M::PUT, manifests::put_manifest)),
        (Method::GET, MANIFEST, on(M::GET, manifests::get_manifest)),
        (Method::HEAD, MANIFEST, on(M::HEAD, manifests::head_manifest)),
        (Method::DELETE, MANIFEST, on(M::DELETE, manifests::delete_manifest)),
        (Method::GET, "/v2/{owner}/{name}/tags/list", on(M::GET, manifests::list_tags)),
        (Method::GET, "/v2/{owner}/{name}/referrers/{digest}", on(M::GET, manifests::referrers)),
    ]
}

/// `/v2/` as a door of the one router.
pub fn door() -> crate::http::Door {
    crate::http::Door { routes: routes(), fallback: other }
}

/// Any other `/v2/` path: a name of another shape than `owner/name` is
/// `NAME_INVALID`; anything else is not here.
fn other(uri: &Uri) -> Option<Response> {
    let path = uri.path();
    if !path.starts_with("/v2/") {
        return None;
    }
    let shaped = ["/blobs/", "/manifests/", "/tags/list", "/referrers/"].iter().any(|m| path.contains(m));
    let error = if shaped {
        OciError::from(ApiError::NameInvalid(
            "a repository name is OWNER/NAME: lowercase letters, digits, '.', '_' and '-'".into(),
        ))
    } else {
        OciError::from(ApiError::NotFound)
    };
    Some(error.into_response())
}
