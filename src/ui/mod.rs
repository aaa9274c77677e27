//! The operator console (`design/console.md`): the
//! static files of `ui/`, built into `amberd` (no CDN, nothing fetched from
//! elsewhere), served at `/ui/` with strict headers: a `Content-Security-
//! Policy` of `default-src 'self'` with no inline script, no framing, no
//! referrer. The page talks to the JSON API with the token it was given.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

/// Each file under `ui/`: its path under `/ui/` and its bytes (`build.rs`
/// writes the table).
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_files.rs"));

/// The content type of a file, by its extension; a file of another kind is
/// not served.
fn content_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => return None,
    })
}

const SECURITY: &[(HeaderName, &str)] = &[
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // The files change with amberd: always asked again, never stale.
    (header::CACHE_CONTROL, "no-cache"),
];

fn serve(name: &str) -> Response {
    let found = FILES.iter().find(|(file, _)| *file == name);
    let Some((content_type, bytes)) = found.and_then(|(file, bytes)| Some((content_type(file)?, *bytes))) else {
        return ApiError::NotFound.into_response();
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in SECURITY {
        headers.insert(name.clone(), HeaderValue::from_static(value));
    }
    response
}

/// `GET /ui/`.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{*file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// `GET /ui`: to `/ui/`, where the page's relative links resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}
