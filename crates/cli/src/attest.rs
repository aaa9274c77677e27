//! Attestations on the client: fetched with `amber pull --attestations`,
//! checked offline with `amber verify --attestation`. Each is verified with
//! the pinned keys (the signature over the DSSE PAE) and read as an in-toto
//! Statement; against a manifest, every file must be a subject with its
//! BLAKE3, and the manifest itself the last subject.

use std::path::Path;

use amber_core::attestation::{self, PROVENANCE_V1, Statement, VSA_V1};
use amber_core::dsse::Envelope;
use amber_core::manifest::VerifiedManifest;
use amber_core::{RepoName, Tag};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::client::Client;
use crate::error::{CliError, Result};

/// What a checked attestation says, for people and for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub predicate_type: String,
    pub subjects: Vec<String>,
    pub lines: Vec<String>,
}

/// The envelopes a file holds: one DSSE envelope, a Sigstore bundle, a
/// JSON list of either, or one of them per line (`.intoto.jsonl`).
pub fn parse(text: &str) -> std::result::Result<Vec<Envelope>, String> {
    let one = |value: serde_json::Value| -> std::result::Result<Envelope, String> {
        if value.get("dsseEnvelope").is_some() {
            return attestation::envelope_of_bundle(&value).ok_or_else(|| "not a Sigstore bundle v0.3".to_owned());
        }
        serde_json::from_value(value).map_err(|e| format!("not a DSSE envelope: {e}"))
    };
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
        return match value {
            serde_json::Value::Array(items) => items.into_iter().map(one).collect(),
            value => Ok(vec![one(value)?]),
        };
    }
    trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| one(serde_json::from_str(l).map_err(|e| format!("a line is not JSON: {e}"))?))
        .collect()
}

/// Verifies `envelope` with the pinned keys and summarises what it states.
pub fn check(envelope: &Envelope, keys: &[VerifyingKey]) -> Result<(Statement, Summary)> {
    let statement = attestation::verify(envelope, keys).map_err(|e| CliError::Verify(e.to_string()))?;
    let subjects = statement
        .subject
        .iter()
        .map(|s| match &s.digest.sha256 {
            Some(sha256) => format!("{} sha256:{sha256} blake3:{}", s.name, s.digest.blake3),
            None => format!("{} blake3:{}", s.name, s.digest.blake3),
        })
        .collect();
    let p = &statement.predicate;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let lines = match statement.predicate_type.as_str() {
        PROVENANCE_V1 => {
            let d = &p["buildDefinition"];
            let source = &d["resolvedDependencies"][0];
            vec![
                format!("built by {} ({})", text(&p["runDetails"]["builder"]["id"]), text(&d["buildType"])),
                format!("from {} at commit {}", text(&source["uri"]), text(&source["digest"]["gitCommit"])),
                format!("run {}", text(&p["runDetails"]["metadata"]["invocationId"])),
            ]
        }
        VSA_V1 => vec![
            format!(
                "verified {} by {}: {}",
                text(&p["resourceUri"]),
                text(&p["verifier"]["id"]),
                text(&p["verificationResult"])
            ),
            format!("at {} under policy {}", text(&p["timeVerified"]), text(&p["policy"]["uri"])),
        ],
        other => vec![format!("predicate {other}")],
    };
    Ok((statement.clone(), Summary { predicate_type: statement.predicate_type, subjects, lines }))
}

/// Problems of `statement` against a verified manifest: each file a subject
/// with its BLAKE3, the manifest the last subject.
pub fn against(statement: &Statement, manifest: &VerifiedManifest) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.payload.files {
        let found =
            statement.subject.iter().any(|s| s.name == file.path.as_str() && s.digest.blake3 == file.digest.hex());
        if !found {
            problems.push(format!("{} ({}) is not a subject", file.path, file.digest));
        }
    }
    let name = format!("{}:{}", manifest.payload.repository, manifest.payload.tag);
    match statement.subject.last() {
        Some(last) if last.name == name && last.digest.blake3 == manifest.digest.hex() => {}
        _ => problems.push(format!("the manifest {name} ({}) is not the last subject", manifest.digest)),
    }
    problems
}

/// Problems of `statement` against files in `dir`: each subject but the
/// last (the manifest) must be a file there with both digests. Files are
/// hashed as they are read (`tree::hash_file` for BLAKE3), never held whole.
pub fn against_dir(statement: &Statement, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let files = &statement.subject[..statement.subject.len().saturating_sub(1)];
    for subject in files {
        let path = dir.join(&subject.name);
        let Some(meta) = std::fs::metadata(&path).ok().filter(|m| m.is_file()) else {
            problems.push(format!("{}: missing", subject.name));
            continue;
        };
        match crate::tree::hash_file(&path, meta.len()) {
            Ok(digest) if digest.hex() == subject.digest.blake3 => {}
            Ok(_) => problems.push(format!("{}: BLAKE3 differs", subject.name)),
            Err(e) => problems.push(e.to_string()),
        }
        if let Some(sha256) = &subject.digest.sha256 {
            match sha256_file(&path) {
                Ok(actual) if actual == *sha256 => {}
                Ok(_) => problems.push(format!("{}: sha256 differs", subject.name)),
                Err(e) => problems.push(format!("{}: {e}", subject.name)),
            }
        }
    }
    problems
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Fetches the binding's attestations, checks each against the pinned keys
/// and the verified manifest, and saves them in `dir`: `TAG.intoto.jsonl`
/// (as served), and each as `TAG.KIND.dsse.json` and `TAG.KIND.sigstore.json`.
pub async fn fetch(
    client: &Client,
    repo: &RepoName,
    tag: &Tag,
    manifest: &VerifiedManifest,
    keys: &[VerifyingKey],
    dir: &Path,
) -> Result<Vec<Summary>> {
    let lines = client.tag_attestations(repo, tag).await?;
    let envelopes = parse(&lines).map_err(|e| CliError::Verify(format!("the attestations: {e}")))?;
    if envelopes.is_empty() {
        return Err(CliError::Verify("the server sent no attestation".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    let mut summaries = Vec::new();
    for envelope in &envelopes {
        let (statement, summary) = check(envelope, keys)?;
        let problems = against(&statement, manifest);
        if !problems.is_empty() {
            return Err(CliError::Verify(format!(
                "an attestation does not match the manifest: {}",
                problems.join("; ")
            )));
        }
        let kind = if statement.predicate_type == PROVENANCE_V1 { "provenance" } else { "vsa" };
        let write = |name: String, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| CliError::io(format!("writing {}", path.display()), e))
        };
        write(format!("{tag}.{kind}.dsse.json"), serde_json::to_string(envelope).expect("an envelope serialises"))?;
        write(format!("{tag}.{kind}.sigstore.json"), attestation::bundle(envelope).to_string())?;
        summaries.push(summary);
    }
    let path = dir.join(format!("{tag}.intoto.jsonl"));
    std::fs::write(&path, &lines).map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
    Ok(summaries)
}
