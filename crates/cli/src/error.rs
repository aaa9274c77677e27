//! Errors, grouped by what the user should do about them; each group has its
//! own exit code so scripts can tell a bad token from a failed verification.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or local input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server refused the token (exit 3).
    #[error("{code}: {message} (HTTP {status})")]
    Auth { status: u16, code: String, message: String },
    /// Something did not verify: signature, repository, tag, digest (exit 4).
    #[error("verification failed: {0}")]
    Verify(String),
    /// The tag or manifest was retired: a signed tombstone says when and why
    /// (exit 6). `amber pull` verifies the tombstone before saying so.
    #[error("{message}")]
    Retired { message: String, tombstone: Option<Box<amber_core::dsse::Envelope>> },
    /// The change conflicts with what is stored: a tag bound to other
    /// content, an expired or held tag (exit 7; retrying will not help).
    #[error("{code}: {message} (HTTP {status})")]
    Conflict { status: u16, code: String, message: String, detail: Option<serde_json::Value> },
    /// The server answered with another error (exit 5).
    #[error("{code}: {message} (HTTP {status})")]
    Api { status: u16, code: String, message: String, detail: Option<serde_json::Value> },
    /// The server could not be reached, or broke off (exit 5).
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server's certificate was not trusted (exit 5; retrying will not help).
    #[error(
        "the server's TLS certificate is not trusted: {0}; give the CA that signed it with --ca-cert (AMBER_CA_CERT)"
    )]
    Tls(String),
    /// Local files (exit 1).
    #[error("{0}")]
    Io(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => 2,
            Self::Auth { .. } => 3,
            Self::Verify(_) => 4,
            Self::Api { .. } | Self::Transport(_) | Self::Tls(_) => 5,
            Self::Retired { .. } => 6,
            Self::Conflict { .. } => 7,
            Self::Io(_) => 1,
        })
    }

    /// True for errors worth retrying: the connection failed or the server had a 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            // A stalled body or a busy server, and server-side failures; not
            // a full disk (`507`), which retrying at once will not mend.
            Self::Api { status, .. } => matches!(*status, 408 | 429) || (*status >= 500 && *status != 507),
            _ => false,
        }
    }

    pub fn io(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Self::Io(format!("{context}: {err}"))
    }
}

impl From<reqwest::Error> for CliError {
    fn from(err: reqwest::Error) -> Self {
        // Hide the URL's query and any credentials: reqwest errors print the URL only.
        let err = err.without_url();
        // Each cause's words ("error sending request" alone says nothing).
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let said = cause.to_string();
            if !text.contains(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            source = cause.source();
        }
        if text.contains("invalid peer certificate") {
            return Self::Tls(text);
        }
        Self::Transport(text)
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::CliError;

    fn api(status: u16) -> CliError {
        CliError::Api { status, code: String::new(), message: String::new(), detail: None }
    }

    #[test]
    fn busy_and_failing_servers_are_retried_but_a_full_disk_is_not() {
        for status in [408, 429, 500, 503] {
            assert!(api(status).is_transient(), "{status}");
        }
        for status in [400, 404, 409, 413, 507] {
            assert!(!api(status).is_transient(), "{status}");
        }
    }
}
