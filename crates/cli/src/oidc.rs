//! Trusted publishing from the client's side: finding the CI platform's ID
//! token for this run, to exchange it for a short-lived token. On GitHub
//! Actions (with `permissions: id-token: write`) the runner hands one out
//! for the audience asked; elsewhere, `AMBER_ID_TOKEN` holds it (GitLab's
//! `id_tokens:`).

use std::time::Duration;

use crate::error::{CliError, Result};

/// The audience asked of GitHub; the server's default.
pub const DEFAULT_AUDIENCE: &str = "amber";

/// This run's ID token, if the environment offers one.
pub async fn id_token_from_env() -> Result<Option<String>> {
    let audience = std::env::var("AMBER_OIDC_AUDIENCE").unwrap_or_else(|_| DEFAULT_AUDIENCE.to_owned());
    if let (Ok(url), Ok(bearer)) =
        (std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"), std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
    {
        return github_id_token(&url, &bearer, &audience).await.map(Some);
    }
    match std::env::var("AMBER_ID_TOKEN") {
        Ok(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
        _ => Ok(None),
    }
}

/// Asks the Actions runtime for an ID token with `audience`.
async fn github_id_token(url: &str, bearer: &str, audience: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(url)
        .map_err(|e| CliError::Usage(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let response = http.get(url).bearer_auth(bearer).send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(CliError::Auth {
            status: status.as_u16(),
            code: "id_token_request_failed".into(),
            message: format!(
                "the Actions runtime refused an ID token (HTTP {status}); does the job have `permissions: id-token: write`?"
            ),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        value: String,
    }
    let answer: Answer = response.json().await?;
    Ok(answer.value)
}
