//! SLSA Provenance v1 of a push made with a token minted by trusted
//! publishing, in the build types the CI systems publish: GitHub Actions
//! (`https://actions.github.io/buildtypes/workflow/v1`) and GitLab CI (its
//! SLSA provenance specification). Every value is a claim of the ID token
//! the server verified, kept with the token (`CiIdentity`), copied as the
//! issuer wrote it; a claim the issuer did not send is left out. Nothing
//! comes from the client.

use amber_core::token::CiIdentity;
use serde_json::{Map, Value, json};

pub const GITHUB_BUILD_TYPE: &str = "https://actions.github.io/buildtypes/workflow/v1";
pub const GITLAB_BUILD_TYPE: &str = "https://docs.gitlab.com/ci/pipeline_security/slsa/provenance_v1";

/// Which CI system's claims these are, from their shape: GitHub's ID tokens
/// carry `run_attempt` and `job_workflow_ref`, GitLab's a `job_id`. A
/// generic issuer's claims make no provenance (there is no build type to
/// write them in): its pushes get the VSA alone.
enum System {
    Github,
    Gitlab,
}

fn system(ci: &CiIdentity) -> Option<System> {
    if ci.job_workflow_ref.is_some() || ci.run_attempt.is_some() {
        Some(System::Github)
    } else if ci.job_id.is_some() {
        Some(System::Gitlab)
    } else {
        None
    }
}

/// The web server of the CI system: GitHub's issuer for github.com is
/// `token.actions.githubusercontent.com`, GitHub Enterprise Server's is
/// `https://HOST/_services/token`; GitLab's issuer is the instance itself.
fn server(ci: &CiIdentity, system: &System) -> String {
    let Ok(issuer) = url::Url::parse(&ci.issuer) else { return ci.issuer.trim_end_matches('/').to_owned() };
    let host = issuer.host_str().unwrap_or_default();
    let origin = match issuer.port() {
        Some(port) => format!("{}://{host}:{port}", issuer.scheme()),
        None => format!("{}://{host}", issuer.scheme()),
    };
    match system {
        System::Github if host == "token.actions.githubusercontent.com" => "https://github.com".into(),
        System::Github => origin,
        System::Gitlab => {
            let path = issuer.path().trim_end_matches('/');
            format!("{origin}{path}")
        }
    }
}

/// An object of the claims that were sent.
fn present(pairs: &[(&str, &Option<String>)]) -> Value {
    let mut map = Map::new();
    for (key, value) in pairs {
        if let Some(value) = value {
            map.insert((*key).to_owned(), Value::String(value.clone()));
        }
    }
    Value::Object(map)
}

/// `git+URL@REF` with the commit, when both are known.
fn source(url: &str, ci: &CiIdentity) -> Vec<Value> {
    let Some(sha) = &ci.sha else { return Vec::new() };
    let uri = match &ci.git_ref {
        Some(git_ref) => format!("git+{url}@{git_ref}"),
        None => format!("git+{url}"),
    };
    vec![json!({"uri": uri, "digest": {"gitCommit": sha}})]
}

/// The provenance predicate of a push by `ci`, if its CI system has a build type.
pub fn of(ci: &CiIdentity) -> Option<Value> {
    let system = system(ci)?;
    let server = server(ci, &system);
    Some(match system {
        System::Github => github(ci, &server),
        System::Gitlab => gitlab(ci, &server),
    })
}

fn github(ci: &CiIdentity, server: &str) -> Value {
    let repository_url = ci.repository.as_ref().map(|r| format!("{server}/{r}"));
    // `workflow_ref` is `owner/name/PATH@REF`: the workflow file's path.
    let path = ci.workflow_ref.as_ref().and_then(|w| {
        let (file, _) = w.rsplit_once('@')?;
        let prefix = format!("{}/", ci.repository.as_deref()?);
        file.strip_prefix(&prefix).map(str::to_owned)
    });
    let workflow = present(&[("ref", &ci.git_ref), ("repository", &repository_url), ("path", &path)]);
    let internal = present(&[
        ("event_name", &ci.event_name),
        ("repository_id", &ci.repository_id),
        ("repository_owner_id", &ci.repository_owner_id),
        ("environment", &ci.environment),
    ]);
    let invocation = match (&repository_url, &ci.run_id, &ci.run_attempt) {
        (Some(url), Some(run), Some(attempt)) => Some(format!("{url}/actions/runs/{run}/attempts/{attempt}")),
        (Some(url), Some(run), None) => Some(format!("{url}/actions/runs/{run}")),
        _ => None,
    };
    let builder = ci.job_workflow_ref.as_ref().or(ci.workflow_ref.as_ref()).map(|w| format!("{server}/{w}"));
    provenance(
        GITHUB_BUILD_TYPE,
        json!({"workflow": workflow}),
        json!({"github": internal}),
        repository_url.as_deref().map(|url| source(url, ci)).unwrap_or_default(),
        builder,
        invocation,
    )
}

fn gitlab(ci: &CiIdentity, server: &str) -> Value {
    let project_url = ci.repository.as_ref().map(|p| format!("{server}/{p}"));
    // `ci_config_ref_uri` is `HOST/PROJECT//PATH@REF`: the pipeline file.
    let entry_point = ci.workflow_ref.as_ref().and_then(|w| {
        let (file, _) = w.rsplit_once('@')?;
        file.split_once("//").map(|(_, path)| path.to_owned())
    });
    let external = present(&[("source", &project_url), ("entryPoint", &entry_point), ("ref", &ci.git_ref)]);
    let internal = present(&[
        ("job", &ci.job_id),
        ("pipeline_id", &ci.run_id),
        ("pipeline_source", &ci.event_name),
        ("project_id", &ci.repository_id),
        ("namespace_id", &ci.repository_owner_id),
        ("environment", &ci.environment),
    ]);
    let invocation = match (&project_url, &ci.job_id) {
        (Some(url), Some(job)) => Some(format!("{url}/-/jobs/{job}")),
        _ => None,
    };
    let scheme = server.split_once("://").map_or("https", |(scheme, _)| scheme);
    let builder = ci.workflow_ref.as_ref().map(|w| format!("{scheme}://{w}"));
    provenance(
        GITLAB_BUILD_TYPE,
        external,
        internal,
        project_url.as_deref().map(|url| source(url, ci)).unwrap_or_default(),
        builder,
        invocation,
    )
}

fn provenance(
    build_type: &str,
    external: Value,
    internal: Value,
    dependencies: Vec<Value>,
    builder: Option<String>,
    invocation: Option<String>,
) -> Value {
    let mut definition = Map::new();
    definition.insert("buildType".into(), Value::String(build_type.into()));
    definition.insert("externalParameters".into(), external);
    if internal.as_object().is_some_and(|o| !o.is_empty()) {
        definition.insert("internalParameters".into(), internal);
    }
    if !dependencies.is_empty() {
        definition.insert("resolvedDependencies".into(), Value::Array(dependencies));
    }
    // `builder.id` is required: the pipeline definition at its ref, else the issuer.
    let mut run = json!({"builder": {"id": builder.unwrap_or_default()}});
    if let Some(invocation) = invocation {
        run["metadata"] = json!({"invocationId": invocation});
    }
    json!({"buildDefinition": definition, "runDetails": run})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github_identity() -> CiIdentity {
        CiIdentity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            publisher: "p".into(),
            repository: Some("acme/web".into()),
            repository_id: Some("42".into()),
            repository_owner_id: Some("7".into()),
            git_ref: Some("refs/heads/main".into()),
            sha: Some("a".repeat(40)),
            workflow_ref: Some("acme/web/.github/workflows/release.yml@refs/heads/main".into()),
            job_workflow_ref: Some("acme/web/.github/workflows/release.yml@refs/heads/main".into()),
            event_name: Some("push".into()),
            run_id: Some("1001".into()),
            run_attempt: Some("2".into()),
            ..CiIdentity::default()
        }
    }

    #[test]
    fn github_claims_land_where_the_build_type_puts_them() {
        let p = of(&github_identity()).unwrap();
        let d = &p["buildDefinition"];
        assert_eq!(d["buildType"], GITHUB_BUILD_TYPE);
        assert_eq!(d["externalParameters"]["workflow"]["repository"], "https://github.com/acme/web");
        assert_eq!(d["externalParameters"]["workflow"]["path"], ".github/workflows/release.yml");
        assert_eq!(d["resolvedDependencies"][0]["uri"], "git+https://github.com/acme/web@refs/heads/main");
        assert_eq!(d["resolvedDependencies"][0]["digest"]["gitCommit"], "a".repeat(40));
        assert_eq!(
            p["runDetails"]["metadata"]["invocationId"],
            "https://github.com/acme/web/actions/runs/1001/attempts/2"
        );
    }

    #[test]
    fn a_generic_issuer_makes_none() {
        let ci = CiIdentity { issuer: "https://ci.example".into(), subject: Some("x".into()), ..CiIdentity::default() };
        assert!(of(&ci).is_none());
    }
}
