//! Manifests through `/v2/`: stored byte-exact under the digest of their
//! bytes; a `PUT` by tag is also an Amber binding (signed, audited, logged:
//! `crate::push::publish`), once; tags listed, referrers served natively,
//! the catalog of what the caller may pull.

use std::collections::{BTreeMap, HashSet};

use amber_core::audit::Event;
use amber_core::manifest::{FileEntry, FilePath, ManifestPayload, OciRef, check_portable};
use amber_core::{Action, Digest, RepoName, Tag};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::OciCaller;
use super::blobs::{RepoPath, repo_of, resolve};
use super::digest::{Algorithm, OciDigest};
use super::error::{OciError, OciResult};
use super::media::{DOCKER_CONTENT_DIGEST, DOCKER_LIST, EMPTY_SHA256, OCI_INDEX, OCI_MANIFEST, header_value};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::json::JsonBody;
use crate::meta::{OciManifest, OciStore, TagStore};
use crate::push::publish::{self, Binding, Published};
use crate::state::AppState;

/// Largest manifest accepted (distribution's limit).
const MAX_MANIFEST: usize = 4 << 20;
/// Most descriptors one manifest may list.
const MAX_DESCRIPTORS: usize = 10_000;
/// Most referrers one answer lists.
const MAX_REFERRERS: usize = 1000;

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The fields of a manifest or index the store looks at; any other field is
/// kept (in the bytes) and ignored.
#[derive(Deserialize)]
struct Parsed {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

fn invalid(message: impl Into<String>) -> OciError {
    OciError::from(ApiError::ManifestInvalid(message.into()))
}

/// A layer that is not distributed through registries: never pushed, never checked.
fn non_distributable(media_type: &str) -> bool {
    media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
}

/// What a manifest reference names.
enum Reference {
    Tag(Tag),
    Digest(OciDigest),
}

fn reference(text: &str) -> OciResult<Reference> {
    if text.contains(':') {
        return Ok(Reference::Digest(OciDigest::parse(text)?));
    }
    text.parse()
        .map(Reference::Tag)
        .map_err(|e| OciError::with_code(ApiError::NameInvalid(format!("tag: {e}")), "TAG_INVALID"))
}

#[derive(Deserialize)]
pub struct ManifestPath {
    owner: String,
    name: String,
    reference: String,
}

/// The files of an OCI binding: one per distributable layer, named by its
/// title where that is a portable path, else `blobs/<algorithm>/<hex>`.
fn files_of(layers: &[(String, Option<String>, Digest, u64)]) -> Vec<FileEntry> {
    let by_digest = |oci: &str| -> FilePath {
        let (algorithm, hex) = oci.split_once(':').unwrap_or(("blob", oci));
        format!("blobs/{algorithm}/{hex}").parse().expect("a digest's path is portable")
    };
    let mut files: Vec<FileEntry> = Vec::new();
    let mut seen = HashSet::new();
    for (oci, title, b3, size) in layers {
        let path = title
            .as_deref()
            .and_then(|t| t.parse::<FilePath>().ok())
            .filter(|p| !seen.contains(&p.as_str().to_lowercase()));
        let path = path.unwrap_or_else(|| by_digest(oci));
        if seen.insert(path.as_str().to_lowercase()) {
            files.push(FileEntry { path, digest: *b3, size: *size });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if check_portable(&files).is_err() {
        // Titles that clash as directories: every layer by its digest.
        files = layers
            .iter()
            .map(|(oci, _, b3, size)| FileEntry { path: by_digest(oci), digest: *b3, size: *size })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
    }
    files
}

/// `PUT /v2/{name}/manifests/{reference}`.
pub async fn put_manifest(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<ManifestPath>,
    headers: HeaderMap,
    body: JsonBody,
) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Push, &repo)?;
    let reference = reference(&path.reference)?;
    if let Reference::Tag(tag) = &reference
        && (tag.as_str().starts_with("sha256-") || tag.as_str().starts_with("sha512-"))
    {
        return Err(OciError::with_code(
            ApiError::TagExists { repo: repo.clone(), tag: tag.clone(), digest: Digest::of(b"") },
            "DENIED",
        ));
    }
    // Read within the limit, its memory borrowed from the budget.
    let bytes = body.bytes_within(&state, MAX_MANIFEST).await.map_err(|e| match e {
        too @ ApiError::RequestTooLarge { .. } => OciError::with_code(too, "SIZE_INVALID"),
        other => other.into(),
    })?;
    let parsed: Parsed = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest body: {e}")))?;
    if parsed.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|v| !v.is_empty());
    let media_type = match (&content_type, &parsed.media_type) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!("Content-Type {header} differs from the manifest's mediaType {body}")));
        }
        (Some(header), _) => header.clone(),
        (None, Some(body)) => body.clone(),
        (None, None) if parsed.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm,
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = OciDigest::of(algorithm, &bytes);
    if let Reference::Digest(named) = &reference
        && *named != digest
    {
        return Err(OciError::with_code(
            ApiError::DigestInvalid(format!("the manifest's bytes hash to {digest}, not {named}")),
            "DIGEST_INVALID",
        ));
    }
    let is_index = parsed.manifests.is_some() || media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let mut missing = Vec::new();
    let mut keep: Vec<(Digest, u64)> = Vec::new();
    let mut layers = Vec::new();
    if is_index {
        let listed = parsed.manifests.as_deref().unwrap_or_default();
        if listed.len() > MAX_DESCRIPTORS {
            return Err(invalid(format!("at most {MAX_DESCRIPTORS} manifests per index")));
        }
        for child in listed {
            let child_digest = OciDigest::parse(&child.digest)?;
            match state.meta.oci_manifest(&repo, &child_digest.to_string()).await? {
                Some(found) if found.bytes.len() as u64 == child.size => keep.extend(found.blobs),
                found => missing.push(serde_json::json!({
                    "digest": child.digest, "size": child.size, "stored_size": found.map(|f| f.bytes.len()),
                })),
            }
        }
    } else {
        let config = parsed.config.as_ref().ok_or_else(|| invalid("an image manifest has a config"))?;
        let listed = parsed.layers.as_deref().unwrap_or_default();
        if listed.len() > MAX_DESCRIPTORS {
            return Err(invalid(format!("at most {MAX_DESCRIPTORS} layers per manifest")));
        }
        for (index, descriptor) in std::iter::once(config).chain(listed).enumerate() {
            // Not distributed through registries; or the empty config, the
            // same two bytes in every repository.
            if non_distributable(&descriptor.media_type) || (descriptor.digest == EMPTY_SHA256 && descriptor.size == 2)
            {
                continue;
            }
            let oci = OciDigest::parse(&descriptor.digest)?;
            let found = match resolve(&state, &repo, &oci).await? {
                Some(b3) if !state.quarantine.contains(&b3) => {
                    crate::meta::LinkStore::blob_size(&state.meta, &repo, &b3).await?.map(|size| (b3, size))
                }
                _ => None,
            };
            match found {
                Some((b3, size)) if size == descriptor.size => {
                    keep.push((b3, size));
                    if index > 0 {
                        let title = descriptor
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("org.opencontainers.image.title"))
                            .cloned();
                        layers.push((oci.to_string(), title, b3, size));
                    }
                }
                found => missing.push(serde_json::json!({
                    "digest": descriptor.digest, "size": descriptor.size, "stored_size": found.map(|f| f.1),
                })),
            }
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::ManifestBlobUnknown(missing).into());
    }
    let subject = match &parsed.subject {
        Some(subject) => Some(OciDigest::parse(&subject.digest)?.to_string()),
        None => None,
    };
    keep.sort();
    keep.dedup();
    let record = OciManifest {
        media_type: media_type.clone(),
        bytes: bytes.to_vec(),
        subject: subject.clone(),
        blobs: keep.clone(),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"),
        view_of: None,
    };
    // The descriptor the referrers API lists for it.
    let artifact_type = parsed
        .artifact_type
        .clone()
        .or_else(|| (!is_index).then(|| parsed.config.as_ref().map(|c| c.media_type.clone())).flatten());
    let mut descriptor =
        serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": bytes.len() });
    if let Some(artifact_type) = &artifact_type {
        descriptor["artifactType"] = serde_json::json!(artifact_type);
    }
    if let Some(annotations) = parsed.annotations.as_ref().filter(|a| !a.is_empty()) {
        descriptor["annotations"] = serde_json::json!(annotations);
    }
    let descriptor = serde_json::to_vec(&descriptor).expect("a descriptor serialises");
    let event = Event::OciManifestPushed {
        repository: repo.clone(),
        digest: digest.to_string(),
        media_type: media_type.clone(),
    };
    let draft = crate::audit::Draft::shared(&state.signer, caller.caller.actor(), vec![event]);
    // A referrer lives as long as its subject's binding (in retention).
    let keep_with = match &subject {
        Some(subject) => subject_binding(&state, &repo, subject).await?,
        None => None,
    };
    let keep_with = keep_with.as_ref().map(|(tag, bound)| (tag, bound));
    state.meta.put_oci_manifest(&repo, &digest.to_string(), &record, Some(&descriptor), keep_with, draft).await?;
    if let Reference::Tag(tag) = &reference {
        let binding = Binding {
            files: files_of(&layers),
            annotations: BTreeMap::new(),
            oci: Some(OciRef { digest: digest.to_string(), media_type: media_type.clone() }),
            keep,
        };
        let bound = match publish::bind(&state, &caller.caller, &repo, tag, &binding).await? {
            Published::Created(bound) | Published::Existing(bound) => bound,
        };
        state.meta.put_bound_tag(&repo, &digest.to_string(), tag).await?;
        // Its attestations as its referrers (again on a retry: made once).
        let payload: ManifestPayload =
            serde_json::from_slice(&bound.envelope.payload_bytes().map_err(ApiError::internal)?)
                .map_err(ApiError::internal)?;
        let binding = (tag, &bound.digest);
        super::view::attest(&state, &caller.caller, &repo, &digest, bytes.len(), binding, &payload).await?;
    }
    let mut response = StatusCode::CREATED.into_response();
    let out = response.headers_mut();
    out.insert(header::LOCATION, header_value(&format!("/v2/{repo}/manifests/{digest}")));
    out.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(subject) = &subject {
        out.insert(OCI_SUBJECT, header_value(subject));
    }
    Ok(response)
}

/// The live binding a subject shares its life with: the tag of a `/v1/`
/// tag's view, or the first tag bound to the OCI manifest; with the Amber
/// manifest that tag binds.
async fn subject_binding(state: &AppState, repo: &RepoName, subject: &str) -> OciResult<Option<(Tag, Digest)>> {
    let tag = match state.meta.oci_manifest(repo, subject).await?.and_then(|m| m.view_of) {
        Some(tag) => Some(tag),
        None => state.meta.bound_tag(repo, subject).await?,
    };
    let Some(tag) = tag else { return Ok(None) };
    match state.meta.tag(repo, &tag).await? {
        Some(record) if record.expiry.is_none() => Ok(Some((tag, record.digest))),
        _ => Ok(None),
    }
}

/// The OCI manifest a reference names in `repo`: its digest and record.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    reference: &str,
) -> OciResult<(String, OciManifest)> {
    let unknown = || OciError::from(ApiError::ManifestUnknown(Digest::of(b"")));
    let digest = match self::reference(reference)? {
        Reference::Digest(digest) => digest.to_string(),
        Reference::Tag(tag) => {
            let record = state.meta.tag(repo, &tag).await?.ok_or_else(unknown)?;
            publish::expired(repo, &tag, &record, false)?;
            let envelope = state.meta.manifest(repo, &record.digest).await?.ok_or_else(unknown)?;
            let payload: ManifestPayload =
                serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?)
                    .map_err(ApiError::internal)?;
            match payload.oci {
                Some(oci) => oci.digest,
                None => return super::view::artifact(state, caller, repo, &record.digest, &envelope, &payload).await,
            }
        }
    };
    let manifest = state.meta.oci_manifest(repo, &digest).await?.ok_or_else(unknown)?;
    Ok((digest, manifest))
}

async fn read(state: AppState, caller: OciCaller, path: ManifestPath, head: bool) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Pull, &repo)?;
    let (digest, manifest) = find(&state, &caller.caller, &repo, &path.reference).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header_value(&manifest.media_type));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest));
    headers.insert(header::ETAG, header_value(&format!("\"{digest}\"")));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.bytes.len()));
    if head {
        return Ok((StatusCode::OK, headers).into_response());
    }
    Ok((StatusCode::OK, headers, manifest.bytes).into_response())
}

pub async fn get_manifest(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<ManifestPath>,
) -> OciResult<Response> {
    read(state, caller, path, false).await
}

pub async fn head_manifest(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<ManifestPath>,
) -> OciResult<Response> {
    read(state, caller, path, true).await
}

/// `DELETE` of a manifest or tag: refused, immutability is the product.
pub async fn delete_manifest(_caller: OciCaller) -> OciError {
    OciError::unsupported_delete()
}

#[derive(Deserialize)]
pub struct ListQuery {
    n: Option<String>,
    last: Option<String>,
}

fn page_size(n: Option<&str>, most: usize) -> OciResult<usize> {
    match n {
        None => Ok(most),
        Some(text) => text.parse::<usize>().map(|n| n.min(most)).map_err(|_| {
            OciError::with_code(ApiError::RequestInvalid("n must be a number".into()), "PAGINATION_NUMBER_INVALID")
        }),
    }
}

/// `GET /v2/{name}/tags/list?n=&last=`: live tags in name order.
pub async fn list_tags(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<RepoPath>,
    Query(query): Query<ListQuery>,
) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Pull, &repo)?;
    let n = page_size(query.n.as_deref(), 10_000)?;
    let mut tags: Vec<String> = Vec::new();
    let mut after = query.last.clone();
    let mut more = false;
    'scan: while n > 0 && !more {
        let page = state.meta.list_tags(&repo, after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.tag.to_string());
        for entry in page {
            if entry.state == amber_core::wire::TagState::Live {
                if tags.len() == n {
                    more = true;
                    break 'scan;
                }
                tags.push(entry.tag.to_string());
            }
        }
    }
    let body = serde_json::json!({ "name": repo.to_string(), "tags": tags });
    let mut response = axum::Json(body).into_response();
    if more && let Some(last) = tags.last() {
        let link = format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\"");
        response.headers_mut().insert(header::LINK, header_value(&link));
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct SubjectPath {
    owner: String,
    name: String,
    digest: String,
}

#[derive(Deserialize)]
pub struct ReferrersQuery {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

/// `GET /v2/{name}/referrers/{digest}[?artifactType=]`: an image index of
/// the manifests whose `subject` is `digest` (empty when there are none).
pub async fn referrers(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<SubjectPath>,
    Query(query): Query<ReferrersQuery>,
) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Pull, &repo)?;
    let subject = OciDigest::parse(&path.digest)?.to_string();
    let mut found = state.meta.referrers(&repo, &subject, None, MAX_REFERRERS).await?;
    if super::view::add_receipt(&state, &caller.caller, &repo, &subject, &found).await? {
        found = state.meta.referrers(&repo, &subject, None, MAX_REFERRERS).await?;
    }
    let mut manifests = Vec::with_capacity(found.len());
    for referrer in found {
        let descriptor: serde_json::Value = serde_json::from_slice(&referrer.descriptor).map_err(ApiError::internal)?;
        if let Some(wanted) = &query.artifact_type
            && descriptor.get("artifactType").and_then(|a| a.as_str()) != Some(wanted.as_str())
        {
            continue;
        }
        manifests.push(descriptor);
    }
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response =
        ([(header::CONTENT_TYPE, OCI_INDEX)], serde_json::to_vec(&body).expect("an index serialises")).into_response();
    if query.artifact_type.is_some() {
        response.headers_mut().insert(OCI_FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}

/// `GET /v2/_catalog?n=&last=`: the repositories the caller may pull.
pub async fn catalog(
    State(state): State<AppState>,
    caller: OciCaller,
    Query(query): Query<ListQuery>,
) -> OciResult<Response> {
    let n = page_size(query.n.as_deref(), 1000)?;
    let mut after: Option<RepoName> = match query.last.as_deref() {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| ApiError::RequestInvalid("last: not a repository name".into()))?),
    };
    let admin = caller.caller.require_admin().is_ok();
    let mut names: Vec<String> = Vec::new();
    let mut more = false;
    'scan: while n > 0 && !more {
        let scanned = state.meta.repositories(after.as_ref(), 1000).await?;
        let Some(last) = scanned.last().cloned() else { break };
        for repo in scanned {
            if admin || caller.caller.require(Action::Pull, &repo).is_ok() {
                if names.len() == n {
                    more = true;
                    break 'scan;
                }
                names.push(repo.to_string());
            }
        }
        after = Some(last);
    }
    let body = serde_json::json!({ "repositories": names });
    let mut response = axum::Json(body).into_response();
    if more && let Some(last) = names.last() {
        let link = format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"");
        response.headers_mut().insert(header::LINK, header_value(&link));
    }
    Ok(response)
}
