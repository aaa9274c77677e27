//! The console's static files at `/ui/` (issue 19, being built): served from
//! the binary with strict headers, no token needed, and off with `--no-ui`.

use reqwest::StatusCode;

use crate::harness::TestServer;

#[tokio::test]
async fn the_console_is_served_with_strict_headers_and_can_be_turned_off() {
    let server = TestServer::start().await;
    let page = server.http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    // No inline script: every script element names its file.
    for script in html.split("<script").skip(1) {
        assert!(script.split('>').next().unwrap().contains("src="), "inline script in {html}");
    }
    for (file, kind) in [("app.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8")] {
        let response = server.http.get(server.url(&format!("/ui/{file}"))).send().await.unwrap();
        assert_eq!((response.status(), response.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, kind));
    }
    let missing = server.http.get(server.url("/ui/../v1/keys")).send().await.unwrap();
    assert_ne!(missing.headers().get("content-type").map(|v| v.to_str().unwrap()), Some("text/html; charset=utf-8"));
    let missing = server.http.get(server.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = bare.get(server.url("/ui")).send().await.unwrap();
    assert_eq!(
        (redirect.status(), redirect.headers()["location"].to_str().unwrap()),
        (StatusCode::PERMANENT_REDIRECT, "/ui/")
    );

    let off = TestServer::builder().arg("--no-ui").start().await;
    assert_eq!(off.http.get(off.url("/ui/")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}
