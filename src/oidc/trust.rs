//! Publishers: validating one an admin creates, and matching a verified ID
//! token's claims against them. Numeric ids are bound, not only names (a
//! repository deleted and re-created under its name must not inherit
//! trust); `sub` is never parsed or wildcarded; the workflow is read from
//! the path of `workflow_ref`, never from a ref that may spell one.

use amber_core::oidc::{CiIdentity, GenericTrust, GithubTrust, GitlabTrust, Publisher, PublisherRequest};
use amber_core::{Action, Grant};
use time::OffsetDateTime;

use super::verify::{Claims, Verified};
use super::{IssuerKind, Oidc, OidcError};
use crate::error::{ApiError, ApiResult};

/// Default and longest lifetime of a minted token, in seconds.
pub const DEFAULT_TOKEN_LIFETIME: u64 = 900;
pub const MAX_TOKEN_LIFETIME: u64 = 3600;
/// Events refused unless a publisher allows them: they run with the
/// target's trust on code or input an outsider controls.
const RISKY_EVENTS: [&str; 2] = ["pull_request_target", "workflow_run"];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::RequestInvalid(message.into())
}

fn text(what: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(invalid(format!("{what} must be 1 to {max} printable characters")));
    }
    Ok(())
}

fn numeric_id(what: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{what} must be the numeric id, as a string of digits")));
    }
    Ok(())
}

/// `owner/name` (GitHub) or `group/…/project` (GitLab).
fn path(what: &str, value: &str, max_segments: usize) -> ApiResult<()> {
    text(what, value, 255)?;
    let segments: Vec<&str> = value.split('/').collect();
    if segments.len() < 2 || segments.len() > max_segments || segments.iter().any(|s| s.is_empty() || s.contains('@')) {
        return Err(invalid(format!("{what} must be a path like owner/name")));
    }
    Ok(())
}

/// `full_only`: every pattern names full refs (`refs/...`), as GitHub's
/// `ref` claim is; GitLab's may be short (`main`).
fn ref_patterns(refs: &Option<Vec<String>>, full_only: bool) -> ApiResult<()> {
    let Some(refs) = refs else { return Ok(()) };
    if refs.is_empty() {
        return Err(invalid("refs must name at least one ref (leave it out to allow any)"));
    }
    for pattern in refs {
        text("a ref pattern", pattern, 255)?;
        if pattern.trim_end_matches('*').contains('*') {
            return Err(invalid(format!("ref pattern {pattern:?}: * is allowed only at the end")));
        }
        let prefix = pattern.strip_suffix('*');
        let valid = match prefix {
            Some(prefix) => is_ref_prefix(prefix),
            None => is_ref_name(pattern),
        };
        if !valid || (full_only && !pattern.starts_with("refs/")) {
            return Err(invalid(format!(
                "ref pattern {pattern:?} is not a ref name{} (git check-ref-format: no '..', '//', '@{{', spaces or ~^:?[\\)",
                if full_only { " starting with refs/" } else { "" }
            )));
        }
    }
    Ok(())
}

/// Characters git never allows in a ref name (`git check-ref-format`).
fn bad_ref_char(c: char) -> bool {
    c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\') || !c.is_ascii()
}

/// A ref name git accepts (`git check-ref-format`): no component starting
/// with `.` or ending in `.lock`, no `..`, `//`, `@{`, control characters,
/// spaces or `~^:?*[\`, not `@`, not starting or ending with `/`, not ending
/// with `.`. (Non-ASCII is refused too: no CI platform sends it.)
pub fn is_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "@"
        && !name.chars().any(bad_ref_char)
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with('.')
        && name.split('/').all(|c| !c.starts_with('.') && !c.ends_with(".lock"))
}

/// The part of a pattern before its `*`: the start of a ref name git
/// accepts (it may end with `/` or mid-component).
fn is_ref_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && is_ref_name(&format!("{prefix}x"))
}

/// Lowercase hex of a git commit: 40 digits (SHA-1), or 64 (SHA-256).
fn is_commit(value: &str) -> bool {
    matches!(value.len(), 40 | 64) && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_number(value: &str) -> bool {
    !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit())
}

/// An event or pipeline source as the platforms write them: `push`,
/// `pull_request_target`, `merge_request_event`.
fn is_event(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| matches!(b, b'a'..=b'z' | b'_'))
}

/// `<path>@<ref>` with exactly one `@`, a path of clean segments (no empty,
/// `.` or `..` one) and a full ref name.
fn is_workflow_ref(value: &str, path_separator_ok: bool) -> bool {
    let Some((path, git_ref)) = value.split_once('@') else { return false };
    if git_ref.contains('@') || !git_ref.starts_with("refs/") || !is_ref_name(git_ref) {
        return false;
    }
    // GitLab's `host/group/project//file`: one `//` between project and file.
    let segments: Vec<&str> = match path.split_once("//") {
        Some((project, file)) if path_separator_ok => project.split('/').chain(file.split('/')).collect(),
        _ => path.split('/').collect(),
    };
    !path.chars().any(|c| c.is_control() || c == ' ')
        && segments.len() >= 3
        && segments.iter().all(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// Every claim a minted token copies into the signed `pushed_by.ci` has the
/// form its platform documents, or the exchange is refused naming the
/// claim: a signed record never carries a commit that is not a commit, a run
/// that is not a number, or a ref git would not accept.
pub fn check_forms(verified: &Verified) -> Result<(), OidcError> {
    let claims = &verified.claims;
    let check = |claim: &'static str, ok: fn(&str) -> bool, form: &str| -> Result<(), OidcError> {
        match claims.text(claim) {
            Some(value) if !ok(&value) => Err(OidcError::invalid(
                "claims",
                format!("claim {claim} is not {form}: {}", crate::error::bounded(&value)),
            )),
            _ => Ok(()),
        }
    };
    let commit = "a commit (40 or 64 lowercase hex digits)";
    let number = "a number";
    match verified.issuer.config.kind {
        IssuerKind::Github => {
            check("sha", is_commit, commit)?;
            for claim in ["run_id", "run_attempt", "run_number", "repository_id", "repository_owner_id"] {
                check(claim, is_number, number)?;
            }
            check("ref", |v| v.starts_with("refs/") && is_ref_name(v), "a full ref name (refs/...)")?;
            check("event_name", is_event, "an event name (lowercase letters and _)")?;
            check("workflow_ref", |v| is_workflow_ref(v, false), "owner/repo/path@refs/...")?;
            check("job_workflow_ref", |v| is_workflow_ref(v, false), "owner/repo/path@refs/...")?;
        }
        IssuerKind::Gitlab => {
            check("sha", is_commit, commit)?;
            for claim in ["pipeline_id", "job_id", "project_id", "namespace_id"] {
                check(claim, is_number, number)?;
            }
            check(
                "ref",
                |v| !v.starts_with("refs/") && is_ref_name(&format!("refs/heads/{v}")),
                "a branch or tag name",
            )?;
            check("ref_type", |v| v == "branch" || v == "tag", "branch or tag")?;
            check("pipeline_source", is_event, "a pipeline source (lowercase letters and _)")?;
            check("ci_config_ref_uri", |v| is_workflow_ref(v, true), "host/group/project//file@refs/...")?;
        }
        IssuerKind::Generic => {}
    }
    Ok(())
}

fn workflow_file(what: &str, value: &str) -> ApiResult<()> {
    text(what, value, 255)?;
    if value.contains('/') || value.contains('@') || !(value.ends_with(".yml") || value.ends_with(".yaml")) {
        return Err(invalid(format!("{what} must be a file name in .github/workflows, like release.yml")));
    }
    Ok(())
}

fn check_github(trust: &GithubTrust) -> ApiResult<()> {
    path("github.repository", &trust.repository, 2)?;
    numeric_id("github.repository_id", &trust.repository_id)?;
    numeric_id("github.repository_owner_id", &trust.repository_owner_id)?;
    workflow_file("github.workflow", &trust.workflow)?;
    if let Some(environment) = &trust.environment {
        text("github.environment", environment, 255)?;
    }
    ref_patterns(&trust.refs, true)?;
    if let Some(events) = &trust.allow_events {
        if events.is_empty() {
            return Err(invalid("allow_events must name at least one event (leave it out for the default)"));
        }
        for event in events {
            if !is_event(event) {
                return Err(invalid(format!(
                    "allow_events: {event:?} is not an event name as GitHub writes it (lowercase letters and _)"
                )));
            }
        }
    }
    if let Some(reusable) = &trust.reusable_workflow {
        let valid = reusable
            .split_once("/.github/workflows/")
            .is_some_and(|(repo, file)| path("", repo, 2).is_ok() && workflow_file("", file).is_ok());
        if !valid {
            return Err(invalid("github.reusable_workflow must be owner/repo/.github/workflows/file.yml"));
        }
    }
    Ok(())
}

fn check_gitlab(trust: &GitlabTrust) -> ApiResult<()> {
    path("gitlab.project_path", &trust.project_path, 32)?;
    numeric_id("gitlab.project_id", &trust.project_id)?;
    numeric_id("gitlab.namespace_id", &trust.namespace_id)?;
    if let Some(config) = &trust.ci_config_path {
        text("gitlab.ci_config_path", config, 255)?;
        if config.contains('@') || config.starts_with('/') {
            return Err(invalid("gitlab.ci_config_path must be a path in the project, like .gitlab-ci.yml"));
        }
    }
    if let Some(environment) = &trust.environment {
        text("gitlab.environment", environment, 255)?;
    }
    ref_patterns(&trust.refs, false)
}

fn check_generic(trust: &GenericTrust) -> ApiResult<()> {
    if trust.claims.is_empty() {
        return Err(invalid("generic.claims must name at least one claim"));
    }
    for (name, value) in &trust.claims {
        text("a claim name", name, 64)?;
        text(&format!("claim {name}"), value, 1024)?;
        // Checked for every token already; naming them here would suggest
        // a publisher could loosen them.
        if ["iss", "aud", "exp", "iat", "nbf", "jti"].contains(&name.as_str()) {
            return Err(invalid(format!("claim {name} is checked by the issuer's configuration, not by a publisher")));
        }
    }
    Ok(())
}

/// Validates an admin's request into a publisher.
pub fn new_publisher(oidc: &Oidc, request: PublisherRequest, now: OffsetDateTime) -> ApiResult<Publisher> {
    text("name", &request.name, 128)?;
    let Some(issuer) = oidc.by_name(&request.issuer) else {
        let names: Vec<&str> = oidc.names().collect();
        return Err(invalid(if names.is_empty() {
            "no OIDC issuer is configured on this server ([[oidc.issuers]] in its configuration file)".to_owned()
        } else {
            format!("no issuer named {:?} is configured; configured: {}", request.issuer, names.join(", "))
        }));
    };
    let kind = issuer.config.kind;
    match (kind, &request.github, &request.gitlab, &request.generic) {
        (IssuerKind::Github, Some(trust), None, None) => check_github(trust)?,
        (IssuerKind::Gitlab, None, Some(trust), None) => check_gitlab(trust)?,
        (IssuerKind::Generic, None, None, Some(trust)) => check_generic(trust)?,
        _ => {
            return Err(invalid(format!(
                "issuer {:?} is of kind {}: give \"{}\" and no other trust section",
                request.issuer,
                kind.as_str(),
                kind.as_str()
            )));
        }
    }
    let mut grants = request.grants;
    crate::auth::check_grants(&mut grants)?;
    if grants.iter().any(|g: &Grant| g.actions.contains(&Action::Admin)) {
        return Err(invalid("a publisher never grants admin"));
    }
    let token_lifetime = request.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    if !(1..=MAX_TOKEN_LIFETIME).contains(&token_lifetime) {
        return Err(invalid(format!("token_lifetime must be 1 to {MAX_TOKEN_LIFETIME} seconds")));
    }
    Ok(Publisher {
        id: amber_core::oidc::new_publisher_id(&mut rand::rngs::OsRng),
        name: request.name,
        issuer: request.issuer,
        github: request.github,
        gitlab: request.gitlab,
        generic: request.generic,
        grants,
        token_lifetime,
        created_at: now.replace_nanosecond(0).expect("0 is a valid nanosecond"),
    })
}

/// Where matching a publisher stopped: after how many checks, at which claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    passed: usize,
    pub claim: String,
}

/// The checks of one publisher, in order, counting those passed.
struct Checks<'a> {
    claims: &'a Claims,
    passed: usize,
}

impl Checks<'_> {
    fn require(&mut self, claim: &'static str, ok: impl FnOnce(Option<&str>) -> bool) -> Result<(), Mismatch> {
        let value = self.claims.text(claim);
        if ok(value.as_deref()) {
            self.passed += 1;
            Ok(())
        } else {
            Err(Mismatch { passed: self.passed, claim: claim.to_owned() })
        }
    }
}

fn ref_matches(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == p,
    })
}

/// `owner/repo/<rest>@ref` is `repository` (any case) and `rest` exactly,
/// read up to the first `@` so that a ref cannot supply the path.
fn workflow_path_is(reference: Option<&str>, repository: &str, rest: &str) -> bool {
    let Some((path, git_ref)) = reference.and_then(|r| r.split_once('@')) else { return false };
    if git_ref.contains('@') {
        return false;
    }
    let mut segments = path.splitn(3, '/');
    let (Some(owner), Some(name), Some(tail)) = (segments.next(), segments.next(), segments.next()) else {
        return false;
    };
    format!("{owner}/{name}").eq_ignore_ascii_case(repository) && tail == rest
}

fn eq_case(expected: &str) -> impl FnOnce(Option<&str>) -> bool + '_ {
    move |v| v.is_some_and(|v| v.eq_ignore_ascii_case(expected))
}

fn eq(expected: &str) -> impl FnOnce(Option<&str>) -> bool + '_ {
    move |v| v == Some(expected)
}

fn match_github(trust: &GithubTrust, checks: &mut Checks) -> Result<(), Mismatch> {
    checks.require("repository_owner_id", eq(&trust.repository_owner_id))?;
    checks.require("repository_id", eq(&trust.repository_id))?;
    checks.require("repository", eq_case(&trust.repository))?;
    let workflow = format!(".github/workflows/{}", trust.workflow);
    checks.require("workflow_ref", |v| workflow_path_is(v, &trust.repository, &workflow))?;
    if let Some(reusable) = &trust.reusable_workflow {
        let (repo, file) = reusable.split_once("/.github/workflows/").unwrap_or((reusable, ""));
        let rest = format!(".github/workflows/{file}");
        checks.require("job_workflow_ref", |v| workflow_path_is(v, repo, &rest))?;
    }
    if let Some(environment) = &trust.environment {
        checks.require("environment", eq_case(environment))?;
    }
    if let Some(refs) = &trust.refs {
        checks.require("ref", |v| v.is_some_and(|v| ref_matches(refs, v)))?;
    }
    checks.require("event_name", |v| {
        v.is_some_and(|event| match &trust.allow_events {
            Some(allowed) => allowed.iter().any(|a| a == event),
            None => !RISKY_EVENTS.contains(&event),
        })
    })
}

/// GitLab's `ref` is short (`main`); its full name comes from `ref_type`.
fn gitlab_full_ref(claims: &Claims) -> Option<String> {
    let short = claims.text("ref")?;
    match claims.text("ref_type")?.as_str() {
        "branch" => Some(format!("refs/heads/{short}")),
        "tag" => Some(format!("refs/tags/{short}")),
        _ => None,
    }
}

fn match_gitlab(trust: &GitlabTrust, host: &str, checks: &mut Checks) -> Result<(), Mismatch> {
    checks.require("namespace_id", eq(&trust.namespace_id))?;
    checks.require("project_id", eq(&trust.project_id))?;
    checks.require("project_path", eq_case(&trust.project_path))?;
    if let Some(config) = &trust.ci_config_path {
        // `host/group/project//path@ref`: the pipeline's top configuration,
        // which may live in another project.
        checks.require("ci_config_ref_uri", |v| {
            v.and_then(|v| v.split_once('@'))
                .filter(|(_, git_ref)| !git_ref.contains('@'))
                .and_then(|(path, _)| path.split_once("//"))
                .is_some_and(|(project, file)| {
                    project.eq_ignore_ascii_case(&format!("{host}/{}", trust.project_path)) && file == config
                })
        })?;
    }
    if let Some(environment) = &trust.environment {
        checks.require("environment", eq(environment))?;
    }
    if let Some(refs) = &trust.refs {
        let full = gitlab_full_ref(checks.claims);
        checks.require("ref", |short| {
            refs.iter().any(|p| {
                let value = if p.starts_with("refs/") { full.as_deref() } else { short };
                value.is_some_and(|v| ref_matches(std::slice::from_ref(p), v))
            })
        })?;
    }
    if !trust.allow_unprotected_refs {
        checks.require("ref_protected", eq("true"))?;
    }
    Ok(())
}

fn match_generic(trust: &GenericTrust, checks: &mut Checks) -> Result<(), Mismatch> {
    for (name, value) in &trust.claims {
        if checks.claims.text(name).as_deref() == Some(value.as_str()) {
            checks.passed += 1;
        } else {
            return Err(Mismatch { passed: checks.passed, claim: name.clone() });
        }
    }
    Ok(())
}

/// Whether `publisher` trusts the verified token.
pub fn matches(publisher: &Publisher, verified: &Verified) -> Result<(), Mismatch> {
    let mut checks = Checks { claims: &verified.claims, passed: 0 };
    if let Some(trust) = &publisher.github {
        match_github(trust, &mut checks)
    } else if let Some(trust) = &publisher.gitlab {
        match_gitlab(trust, &verified.issuer.host, &mut checks)
    } else if let Some(trust) = &publisher.generic {
        match_generic(trust, &mut checks)
    } else {
        Err(Mismatch { passed: 0, claim: "issuer".into() })
    }
}

/// The first publisher of the token's issuer that trusts it; else which
/// claim differed from the closest one (the one that matched longest).
pub fn choose<'a>(publishers: &'a [Publisher], verified: &Verified) -> Result<&'a Publisher, OidcError> {
    let issuer = &verified.issuer.config.name;
    let mut closest: Option<Mismatch> = None;
    for publisher in publishers.iter().filter(|p| p.issuer == *issuer) {
        match matches(publisher, verified) {
            Ok(()) => return Ok(publisher),
            Err(mismatch) if closest.as_ref().is_none_or(|c| mismatch.passed > c.passed) => closest = Some(mismatch),
            Err(_) => {}
        }
    }
    let repository = verified.claims.text("repository").or_else(|| verified.claims.text("project_path"));
    let message = match closest {
        Some(mismatch) => {
            format!("no publisher of issuer {issuer} trusts this ID token: the closest differs in {}", mismatch.claim)
        }
        None => format!("no publisher trusts issuer {issuer}"),
    };
    Err(OidcError::NoPublisher { message, repository })
}

/// The verified claims a minted token keeps, and its manifests carry.
pub fn identity(publisher: &Publisher, verified: &Verified) -> CiIdentity {
    let c = &verified.claims;
    let base = CiIdentity {
        issuer: verified.issuer.config.url.clone(),
        publisher: publisher.id.clone(),
        ..CiIdentity::default()
    };
    match verified.issuer.config.kind {
        IssuerKind::Github => CiIdentity {
            repository: c.text("repository"),
            repository_id: c.text("repository_id"),
            repository_owner_id: c.text("repository_owner_id"),
            git_ref: c.text("ref"),
            sha: c.text("sha"),
            workflow_ref: c.text("workflow_ref"),
            job_workflow_ref: c.text("job_workflow_ref"),
            environment: c.text("environment"),
            event_name: c.text("event_name"),
            run_id: c.text("run_id"),
            run_attempt: c.text("run_attempt"),
            ..base
        },
        IssuerKind::Gitlab => CiIdentity {
            repository: c.text("project_path"),
            repository_id: c.text("project_id"),
            repository_owner_id: c.text("namespace_id"),
            git_ref: gitlab_full_ref(c).or_else(|| c.text("ref")),
            sha: c.text("sha"),
            workflow_ref: c.text("ci_config_ref_uri"),
            environment: c.text("environment"),
            event_name: c.text("pipeline_source"),
            run_id: c.text("pipeline_id"),
            job_id: c.text("job_id"),
            ..base
        },
        IssuerKind::Generic => CiIdentity { subject: c.text("sub"), ..base },
    }
}

/// The minted token's `pipeline`: which run, readable in lists and logs.
pub fn pipeline(publisher: &Publisher, identity: &CiIdentity, issuer: &str) -> String {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let text = match (&publisher.github, &publisher.gitlab) {
        (Some(trust), _) => format!(
            "github:{}/{}@{} run {}.{}",
            or(&identity.repository),
            trust.workflow,
            or(&identity.git_ref),
            or(&identity.run_id),
            or(&identity.run_attempt)
        ),
        (_, Some(_)) => format!(
            "gitlab:{}@{} pipeline {} job {}",
            or(&identity.repository),
            or(&identity.git_ref),
            or(&identity.run_id),
            or(&identity.job_id)
        ),
        _ => format!("{issuer}:{}", or(&identity.subject)),
    };
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    let mut end = clean.len().min(128);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_is_read_from_the_path_never_from_the_ref() {
        let rest = ".github/workflows/release.yml";
        assert!(workflow_path_is(Some("acme/web/.github/workflows/release.yml@refs/heads/main"), "acme/web", rest));
        assert!(workflow_path_is(Some("ACME/Web/.github/workflows/release.yml@refs/tags/v1"), "acme/web", rest));
        for smuggled in [
            "acme/web/.github/workflows/other.yml@refs/heads/x/.github/workflows/release.yml",
            "acme/web/.github/workflows/Release.yml@refs/heads/main",
            "acme/web-evil/.github/workflows/release.yml@refs/heads/main",
            "acme/web/.github/workflows/release.yml",
            "acme/web/sub/.github/workflows/release.yml@refs/heads/main",
        ] {
            assert!(!workflow_path_is(Some(smuggled), "acme/web", rest), "{smuggled}");
        }
        assert!(!workflow_path_is(None, "acme/web", rest));
    }

    #[test]
    fn refs_are_what_git_accepts() {
        for good in ["refs/heads/main", "refs/tags/v1.2.3", "refs/pull/12/merge", "refs/heads/feature/a-b_c"] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in [
            "refs/heads/../tags/v1",
            "refs/heads/a..b",
            "refs//heads/main",
            "refs/heads/main/",
            "/refs/heads/main",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/x.",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/a@{1}",
            "refs/heads/\u{0}",
            "@",
            "",
        ] {
            assert!(!is_ref_name(bad), "{bad:?}");
        }
        assert!(is_ref_prefix("refs/tags/v") && is_ref_prefix("refs/heads/"));
        assert!(!is_ref_prefix("refs/tags/..") && !is_ref_prefix("refs/heads//"));
    }

    #[test]
    fn workflow_refs_have_one_at_and_a_clean_path() {
        assert!(is_workflow_ref("acme/web/.github/workflows/release.yml@refs/heads/main", false));
        assert!(is_workflow_ref("gitlab.example.com/acme/web//.gitlab-ci.yml@refs/heads/main", true));
        for bad in [
            "acme/web/.github/workflows/release.yml@refs/heads/main@x",
            "acme/web/.github/workflows/release.yml@@refs/heads/main",
            "acme/web/../evil/.github/workflows/release.yml@refs/heads/main",
            "acme/web/.github/workflows/release.yml@main",
            "acme/web/.github/workflows/release.yml@refs/heads/a..b",
            "acme/web/.github/workflows/release.yml",
            "acme//.github/workflows/release.yml@refs/heads/main",
        ] {
            assert!(!is_workflow_ref(bad, false), "{bad}");
        }
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("0123456789ABCDEF0123456789abcdef01234567") && !is_commit("abc"));
        assert!(is_event("pull_request_target") && !is_event("Pull_Request_Target") && !is_event("push "));
    }

    #[test]
    fn ref_patterns_are_exact_or_a_prefix() {
        let patterns = vec!["refs/heads/main".to_owned(), "refs/tags/v*".to_owned()];
        assert!(ref_matches(&patterns, "refs/heads/main"));
        assert!(ref_matches(&patterns, "refs/tags/v1.2"));
        assert!(!ref_matches(&patterns, "refs/heads/main2"));
        assert!(!ref_matches(&patterns, "refs/heads/mai"));
        assert!(!ref_matches(&patterns, "refs/tags/x1"));
    }
}
