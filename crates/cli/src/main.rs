//! `amber`: push and pull verified builds, manage tokens, verify the audit log.
//!
//! Exit codes: 0 success, 1 local I/O, 2 usage, 3 authentication or
//! authorisation, 4 verification failed, 5 server or network error, 6 the
//! tag was retired (its tombstone verified), 7 conflict (a tag bound to other
//! content, expired or held).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use amber_cli::client::Client;
use amber_cli::error::{CliError, Result};
use amber_cli::push::{self, Progress};
use amber_cli::reference::Reference;
use amber_cli::{bench, keys, pull, transparency};
use amber_core::audit::ChainVerifier;
use amber_core::dsse::Envelope;
use amber_core::manifest::Expected;
use amber_core::wire::CreateTokenRequest;
use amber_core::{Action, Grant};
use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  export AMBER_URL=https://amber.example.com AMBER_TOKEN=amber_...
  amber push acme/web:1.4.2 dist/ --annotation git.commit=$GIT_SHA
  amber pull acme/web:1.4.2 -o ./release --key amber-keys.json
  amber pull acme/web@blake3:<hex> -o ./release --key amber-keys.json
  amber verify --key amber-keys.json envelope.json --dir ./release
  amber token create --name web-ci --pipeline acme/web --grant 'acme/web=push,pull' --expires-in 86400
  amber audit verify --key amber-keys.json
  amber log trust amber.example.com/log --key new-amber-keys.json   # after a confirmed log key change
  amber retention set 'acme/*' --keep-last 20 --keep-days 30 --keep-tags 'v*' --untagged-days 7
  amber retention plan acme/web
  amber tag hold acme/web:1.4.2 --reason 'audit 2026-Q4'
  amber tag expire acme/web:1.4.1 --reason 'CVE-2026-1234'
  amber publisher create publisher.json
  amber push acme/web:1.4.2 dist/   # in CI with no AMBER_TOKEN: exchanges the run's ID token

Exit codes: 0 ok, 1 local I/O, 2 usage, 3 auth, 4 verification failed, 5 server or network,
6 retired (tombstone verified), 7 conflict.";

/// amber: the client for Amber, the content-addressed artifact store.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    /// Server URL.
    #[arg(long, env = "AMBER_URL", default_value = "http://127.0.0.1:7350", global = true)]
    url: String,
    /// Token secret (prefer the environment variable, so it stays out of process lists).
    /// Unset in CI, `push` and `pull` exchange the run's ID token for one
    /// (GitHub Actions with `id-token: write`, or AMBER_ID_TOKEN).
    #[arg(long, env = "AMBER_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Also trust the certificates of this PEM file (a private CA) besides
    /// the system's roots.
    #[arg(long, env = "AMBER_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Do not check the server's certificate at all (warns on every call).
    /// Anyone on the path can then read the token and change the bytes.
    #[arg(long, env = "AMBER_INSECURE_SKIP_TLS_VERIFY", global = true)]
    insecure_skip_tls_verify: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload what is missing of PATH... and bind OWNER/NAME:TAG; prints the manifest digest.
    Push {
        /// OWNER/NAME:TAG
        reference: String,
        /// Files and directories (a directory contributes its contents).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// KEY=VALUE, recorded in the signed manifest (repeatable).
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        /// Print a JSON report instead of the digest.
        #[arg(long)]
        json: bool,
        /// Files larger than this many bytes go up as resumable uploads in
        /// parts of this size (a power of two of at least 1 MiB), each checked
        /// by the server as it arrives.
        #[arg(long, default_value_t = 64 << 20, value_parser = part_size)]
        part_size: u64,
        /// Parts of one file uploaded at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
    },
    /// Fetch OWNER/NAME:TAG or OWNER/NAME@DIGEST into DIR, verifying everything first.
    Pull {
        reference: String,
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        dir: PathBuf,
        /// Pinned public keys (the JSON of `amberd keys export`, or base64 keys
        /// one per line). When they include the log key, the tag's receipt is
        /// checked too.
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Where the newest verified checkpoint of each log is kept
        /// [default: ~/.config/amber/log-state.json].
        #[arg(long, value_name = "FILE", env = "AMBER_LOG_STATE")]
        log_state: Option<PathBuf>,
        /// Save the tag's receipt here, for `amber verify --receipt`.
        #[arg(long, value_name = "FILE")]
        save_receipt: Option<PathBuf>,
        /// Require the receipt's checkpoint to carry the cosignatures this
        /// policy asks for (`log`, `witness NAME VKEY [URL]`, `group NAME
        /// all|any|K MEMBER...`, `quorum NAME|none`); default: the policy a
        /// --key file carries, if any.
        #[arg(long, value_name = "FILE")]
        witness_policy: Option<PathBuf>,
        /// Fetch the binding's attestations (in-toto statements: the VSA, and
        /// SLSA provenance for a trusted-publishing push), check them with the
        /// pinned keys against the manifest, and save them in DIR.
        #[arg(long, value_name = "DIR")]
        attestations: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Check a saved envelope offline, and optionally a directory against it;
    /// or, with --attestation, a saved attestation.
    Verify {
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// The envelope JSON, as the server answered it.
        #[arg(required_unless_present = "attestation", conflicts_with = "attestation")]
        envelope: Option<PathBuf>,
        /// An attestation to check instead: a DSSE envelope, a Sigstore
        /// bundle, or an `.intoto.jsonl` file (`amber pull --attestations`).
        /// Prints who built what; with --dir, checks the files' digests.
        #[arg(long, value_name = "FILE")]
        attestation: Option<PathBuf>,
        /// Expect this repository and tag (or digest): OWNER/NAME:TAG or OWNER/NAME@DIGEST.
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// Check that DIR holds the manifest's files with their digests.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Check this receipt (from `amber pull --save-receipt`) too: signed by
        /// the pinned log key, and proving the envelope's binding is logged.
        #[arg(long, value_name = "FILE")]
        receipt: Option<PathBuf>,
        /// Require the receipt's checkpoint to meet this witness policy
        /// (default: the one a --key file carries, if any).
        #[arg(long, value_name = "FILE")]
        witness_policy: Option<PathBuf>,
    },
    /// Show the token in use: id, name, pipeline, grants, expiry.
    Whoami,
    /// Exit 0 if the server answers /healthz.
    Health,
    /// Manage tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The transparency logs this client holds: which key each is held
    /// under, and the newest checkpoint seen (local; no server is asked).
    #[command(subcommand)]
    Log(LogCommand),
    /// Retention policies: which tags expire, which untagged blobs are unlinked (admin).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// List a repository's tags; hold, release or expire one (admin).
    #[command(subcommand)]
    Tag(TagCommand),
    /// Delete stored bytes no repository has linked for the grace (admin).
    #[command(subcommand)]
    Reclaim(ReclaimCommand),
    /// Runs of retention, reclaim, a scrub pass or fsck: start one and wait
    /// for its end, follow one, list them (admin).
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Trusted publishing: exchange this CI run's ID token for a token.
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Publishers: which CI runs may exchange ID tokens, for what (admin).
    #[command(subcommand)]
    Publisher(PublisherCommand),
    /// Measure a running amberd on this machine (loopback only).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Push, HEAD and GET many small random blobs at a given concurrency.
    Small {
        #[arg(long, default_value = "bench/blobs")]
        repo: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// amberd's pid, to report its CPU per operation and peak RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Upload then download one large random blob.
    Large {
        #[arg(long, default_value = "bench/blobs")]
        repo: String,
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Exchange ID tokens (one per line of FILE, each sent once) for tokens.
    Exchange {
        #[arg(long = "id-tokens", value_name = "FILE")]
        id_tokens: PathBuf,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// The ID tokens are valid but no publisher trusts them: count `403`s.
        #[arg(long)]
        refused: bool,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Push then pull a CI-shaped tree of mixed sizes with `amber push` and `amber pull`.
    Tree {
        #[arg(long, default_value = "bench/tree")]
        repo: String,
        /// Multiplies the tree (scale 1: 224 files, 232 MiB).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints the secret (once) on stdout.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        pipeline: Option<String>,
        /// PATTERN=ACTIONS, e.g. 'acme/web=push,pull' or 'acme/*=pull' (repeatable).
        #[arg(long = "grant", value_name = "PATTERN=ACTIONS", required = true)]
        grants: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Show one token.
    Show { id: String },
    /// New secret, same grants; the old one works for the grace period. Prints the new secret.
    Rotate {
        id: String,
        /// Seconds the old secret keeps working (default 3600; 0 ends it now).
        #[arg(long)]
        grace: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token now.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Set the policy of OWNER/NAME, or of OWNER/* (the owner's default);
    /// prints it with what a run would do now. With no --keep-* rule, every
    /// tag is kept and only untagged blob links are cleaned.
    Set {
        /// OWNER/NAME or OWNER/*
        scope: String,
        /// Keep the N most recently bound live tags.
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep tags bound less than N days ago.
        #[arg(long)]
        keep_days: Option<u32>,
        /// Keep tags whose whole name matches GLOB (`*` matches any run); repeatable.
        #[arg(long = "keep-tags", value_name = "GLOB")]
        keep_tags: Vec<String>,
        /// Unlink blobs no live tag references after N days (default 7; 0: at the next run).
        #[arg(long)]
        untagged_days: Option<u32>,
    },
    /// Show the policy in effect for OWNER/NAME (or OWNER/*); every policy without one.
    Show { scope: Option<String> },
    /// What a run would do now in OWNER/NAME (or every repository OWNER/* governs).
    Plan { scope: String },
    /// Run every policy now; prints what was done.
    Run,
    /// Remove the policy of OWNER/NAME or OWNER/*.
    Delete { scope: String },
}

#[derive(Subcommand)]
enum OidcCommand {
    /// Exchange this run's ID token (from the GitHub Actions runtime, with
    /// the audience AMBER_OIDC_AUDIENCE, default `amber`; else AMBER_ID_TOKEN)
    /// and print the minted token's secret.
    Token {
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PublisherCommand {
    /// Create a publisher from its JSON (a file, or - for stdin); prints it with its id.
    Create { file: PathBuf },
    /// List every publisher.
    List,
    /// Show one publisher.
    Show { id: String },
    /// Delete a publisher; tokens it minted live out their short lives.
    Delete { id: String },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The most recent runs, newest first.
    List,
    /// One run: its state, progress and report.
    Show { id: String },
    /// Start a run (retention, reclaim, scrub, fsck), or follow the one of
    /// its kind under way, and wait for its end; prints its report.
    Start {
        kind: amber_core::wire::RunKind,
        /// fsck: also read back every linked blob and check its hash.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand)]
enum ReclaimCommand {
    /// Run reclaim now; prints what it deleted and what still waits.
    Run,
}

#[derive(Subcommand)]
enum TagCommand {
    /// Every tag of OWNER/NAME with its state (live, expired) and hold.
    List { repository: String },
    /// Hold OWNER/NAME:TAG: no policy or operator can expire it until released.
    Hold {
        reference: String,
        #[arg(long)]
        reason: String,
    },
    /// Release the hold on OWNER/NAME:TAG.
    Release { reference: String },
    /// Expire OWNER/NAME:TAG now, for good (a yanked release); prints the signed tombstone.
    Expire {
        reference: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Every log held: origin, key and checkpoint size.
    List {
        #[arg(long, value_name = "FILE", env = "AMBER_LOG_STATE")]
        log_state: Option<PathBuf>,
    },
    /// Hold ORIGIN under the log key in FILE from now on (after its operator
    /// confirmed that the store's log key really changed). The checkpoint
    /// held stays: the next pull must still extend it.
    Trust {
        /// The log's origin, as the refusal named it.
        origin: String,
        /// The store's new key file (`amberd keys export`, or `GET /v1/keys`).
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, value_name = "FILE", env = "AMBER_LOG_STATE")]
        log_state: Option<PathBuf>,
    },
    /// Stop holding ORIGIN: the next pull holds the first checkpoint it is
    /// shown (for a store that really started over).
    Forget {
        origin: String,
        #[arg(long, value_name = "FILE", env = "AMBER_LOG_STATE")]
        log_state: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain and check every link and the signed checkpoint.
    Verify {
        /// Pinned keys for the checkpoint signature (default: the server's /v1/keys).
        #[arg(long = "key", value_name = "FILE")]
        keys: Vec<PathBuf>,
    },
}

async fn publisher_command(client: &Client, command: PublisherCommand) -> Result<()> {
    match command {
        PublisherCommand::Create { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::io("reading stdin", e))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| CliError::io(format!("reading {}", file.display()), e))?
            };
            let request: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", file.display())))?;
            let publisher = client.create_publisher(&request).await?;
            eprintln!("created publisher {} ({})", publisher.id, publisher.name);
            print_json(&publisher)
        }
        PublisherCommand::List => print_json(&client.list_publishers().await?.publishers),
        PublisherCommand::Show { id } => print_json(&client.show_publisher(&id).await?),
        PublisherCommand::Delete { id } => {
            let publisher = client.delete_publisher(&id).await?;
            eprintln!("deleted publisher {} ({})", publisher.id, publisher.name);
            Ok(())
        }
    }
}

/// `--log-state`, else the default place.
fn state_path(given: Option<PathBuf>) -> Result<PathBuf> {
    given
        .or_else(transparency::default_state_path)
        .ok_or_else(|| CliError::Usage("no home directory for the log state: pass --log-state FILE".into()))
}

async fn log_command(command: LogCommand) -> Result<()> {
    match command {
        LogCommand::List { log_state } => {
            let path = state_path(log_state)?;
            let locked = transparency::Locked::open(&path).await?;
            let logs: Vec<serde_json::Value> = locked
                .state
                .logs
                .iter()
                .map(|(origin, held)| serde_json::json!({ "origin": origin, "vkey": held.vkey, "size": held.size }))
                .collect();
            print_json(&logs)
        }
        LogCommand::Trust { origin, keys: key_files, log_state } => {
            let vkeys = keys::load_log(&key_files)?;
            let path = state_path(log_state)?;
            let (before, now) = transparency::trust(&path, &origin, &vkeys).await?;
            match before {
                Some(old) if old == now => eprintln!("{origin} was already held under {old}"),
                Some(old) => eprintln!(
                    "{origin} is now held under {now}; was {old}. The checkpoint held stays: the next pull must extend it"
                ),
                None => eprintln!("{origin} is now held under {now}"),
            }
            Ok(())
        }
        LogCommand::Forget { origin, log_state } => {
            let path = state_path(log_state)?;
            match transparency::forget(&path, &origin).await? {
                Some(held) => {
                    eprintln!("forgot {origin} (held under {} at {} entries)", held.vkey, held.size);
                    Ok(())
                }
                None => Err(CliError::Usage(format!("{origin} is not held in {}", path.display()))),
            }
        }
    }
}

fn parse_grant(text: &str) -> Result<Grant> {
    let (repos, actions) =
        text.split_once('=').ok_or_else(|| CliError::Usage(format!("grant {text:?} is not PATTERN=ACTIONS")))?;
    let repos = repos.parse().map_err(|e| CliError::Usage(format!("grant {text:?}: {e}")))?;
    let actions = actions
        .split(',')
        .map(|a| match a.trim() {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "admin" => Ok(Action::Admin),
            other => Err(CliError::Usage(format!("unknown action {other:?}: use pull, push or admin"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Grant { repos, actions })
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))?);
    Ok(())
}

fn reference(text: &str) -> Result<Reference> {
    text.parse().map_err(CliError::Usage)
}

/// The token to use: `AMBER_TOKEN`, or, for a push or pull in CI without
/// one, a token minted from this run's ID token.
async fn token_for(cli: &Cli) -> Result<Option<String>> {
    if cli.token.is_some() || !matches!(cli.command, Command::Push { .. } | Command::Pull { .. }) {
        return Ok(cli.token.clone());
    }
    let Some(id_token) = amber_cli::oidc::id_token_from_env().await? else { return Ok(None) };
    let minted = Client::new(&cli.url, None, &trust(cli))?.exchange_id_token(&id_token).await?;
    eprintln!(
        "amber: exchanged this run's ID token for token {} (publisher {}, until {})",
        minted.info.id,
        minted.publisher,
        rfc3339(minted.info.expires_at)
    );
    Ok(Some(minted.token))
}

fn trust(cli: &Cli) -> amber_cli::client::Trust {
    amber_cli::client::Trust { ca_cert: cli.ca_cert.clone(), insecure: cli.insecure_skip_tls_verify }
}

async fn run(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.url, token_for(&cli).await?, &trust(&cli))?;
    match cli.command {
        Command::Push { reference: text, paths, annotations, json, part_size, parallel } => {
            let reference = reference(&text)?;
            let tag = reference.tag().cloned().ok_or_else(|| CliError::Usage("push needs OWNER/NAME:TAG".into()))?;
            let annotations = annotations
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| CliError::Usage(format!("annotation {a:?} is not KEY=VALUE")))
                })
                .collect::<Result<BTreeMap<_, _>>>()?;
            let progress = if json {
                Progress::Quiet
            } else if std::io::stderr().is_terminal() {
                Progress::Bar
            } else {
                Progress::Lines
            };
            let parts = push::Parts { part_size, parallel: usize::from(parallel) };
            let report = push::push(&client, &reference.repo, &tag, &paths, annotations, progress, parts).await?;
            if json {
                print_json(&report)?;
            } else {
                if progress == Progress::Lines {
                    let how = if report.created { "bound" } else { "already bound to this content" };
                    eprintln!(
                        "{}:{} {how}; uploaded {} of {} files",
                        report.repository, report.tag, report.uploaded, report.files
                    );
                }
                println!("{}", report.digest);
            }
        }
        Command::Pull {
            reference: text,
            dir,
            keys: key_files,
            log_state,
            save_receipt,
            witness_policy,
            attestations,
            json,
        } => {
            let reference = reference(&text)?;
            let keys = keys::load(&key_files)?;
            let vkeys = keys::load_log(&key_files)?;
            let witness_policy = keys::load_witness_policy(witness_policy.as_deref(), &key_files)?;
            let log = if vkeys.is_empty() {
                if save_receipt.is_some() || witness_policy.is_some() {
                    return Err(CliError::Usage(
                        "--save-receipt and a witness policy need the log key in a --key file".into(),
                    ));
                }
                None
            } else {
                Some(pull::LogCheck { vkeys, state: state_path(log_state)?, save_receipt, witness_policy })
            };
            let mut report = pull::pull(&client, &reference, &keys, &dir, json, log.as_ref()).await?;
            if let Some(into) = &attestations {
                let (repo, tag) = (&report.verified.payload.repository, &report.verified.payload.tag);
                report.attestations =
                    amber_cli::attest::fetch(&client, repo, tag, &report.verified, &keys, into).await?;
            }
            if json {
                print_json(&report)?;
            } else {
                eprintln!("verified {} files ({} bytes) signed by key {}", report.files, report.bytes, report.keyid);
                if let Some(log) = &report.log {
                    let since = log.extends.map_or_else(
                        || "first checkpoint held of this log".to_owned(),
                        |n| format!("consistent with the {n} entries held before"),
                    );
                    eprintln!("logged as entry {} of {} ({}; {since})", log.index, log.tree_size, log.origin);
                    if !log.cosigned_by.is_empty() {
                        eprintln!("cosigned by witnesses {}", log.cosigned_by.join(", "));
                    }
                }
                if let Some(ci) = &report.pushed_by.ci {
                    eprintln!(
                        "pushed by CI run {} at commit {}",
                        report.pushed_by.pipeline.as_deref().unwrap_or("?"),
                        ci.sha.as_deref().unwrap_or("?")
                    );
                }
                for summary in &report.attestations {
                    eprintln!("attestation {} verified:", summary.predicate_type);
                    for line in &summary.lines {
                        eprintln!("  {line}");
                    }
                }
                println!("{}", report.digest);
            }
        }
        Command::Verify { keys: key_files, attestation: Some(file), dir, .. } => {
            let keys = keys::load(&key_files)?;
            let text =
                std::fs::read_to_string(&file).map_err(|e| CliError::io(format!("reading {}", file.display()), e))?;
            let envelopes =
                amber_cli::attest::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            if envelopes.is_empty() {
                return Err(CliError::Usage(format!("{}: no attestation in it", file.display())));
            }
            for envelope in &envelopes {
                let (statement, summary) = amber_cli::attest::check(envelope, &keys)?;
                eprintln!("signature ok: {}", summary.predicate_type);
                for line in summary.lines.iter().chain(&summary.subjects) {
                    eprintln!("  {line}");
                }
                if let Some(dir) = &dir {
                    let problems = amber_cli::attest::against_dir(&statement, dir);
                    if !problems.is_empty() {
                        return Err(CliError::Verify(problems.join("; ")));
                    }
                    eprintln!("  the files in {} are its subjects", dir.display());
                }
            }
        }
        Command::Verify { keys: key_files, envelope, reference: expected, dir, receipt, witness_policy, .. } => {
            let envelope =
                envelope.ok_or_else(|| CliError::Usage("verify needs an ENVELOPE or --attestation".into()))?;
            if witness_policy.is_some() && receipt.is_none() {
                return Err(CliError::Usage("--witness-policy checks a --receipt's checkpoint: pass --receipt".into()));
            }
            let keys = keys::load(&key_files)?;
            let text = std::fs::read_to_string(&envelope)
                .map_err(|e| CliError::io(format!("reading {}", envelope.display()), e))?;
            let parsed: Envelope = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{}: not an envelope: {e}", envelope.display())))?;
            let verified = match expected {
                Some(text) => {
                    let reference = reference(&text)?;
                    pull::verify_envelope(&parsed, &keys, &reference.repo, &reference.target)?
                }
                None => {
                    // Without an expected reference, trust the payload's own repository and tag
                    // but still require a valid signature.
                    let bytes = parsed
                        .verify(amber_core::manifest::PAYLOAD_TYPE, &keys)
                        .map_err(|e| CliError::Verify(e.to_string()))?;
                    let payload: amber_core::manifest::ManifestPayload =
                        serde_json::from_slice(&bytes).map_err(|e| CliError::Verify(e.to_string()))?;
                    pull::verify_envelope(&parsed, &keys, &payload.repository, &Expected::Tag(payload.tag))?
                }
            };
            eprintln!(
                "signature ok: {}:{} ({} files, created {})",
                verified.payload.repository,
                verified.payload.tag,
                verified.payload.files.len(),
                rfc3339(verified.payload.created_at)
            );
            if let Some(path) = receipt {
                let vkeys = keys::load_log(&key_files)?;
                if vkeys.is_empty() {
                    return Err(CliError::Usage("--receipt needs the log key in a --key file".into()));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
                let payload = &verified.payload;
                let (checkpoint, _) = amber_cli::transparency::check_receipt(
                    &vkeys,
                    &text,
                    &payload.repository,
                    &payload.tag,
                    &verified.digest,
                )?;
                eprintln!("receipt ok: the binding is in log {} of {} entries", checkpoint.origin, checkpoint.size);
                if let Some(policy) = keys::load_witness_policy(witness_policy.as_deref(), &key_files)? {
                    let cosigned = policy.check(&checkpoint.note).map_err(|e| CliError::Verify(e.to_string()))?;
                    let names: Vec<String> = cosigned.into_iter().collect();
                    eprintln!("witness policy met: cosigned by {}", names.join(", "));
                }
            }
            if let Some(dir) = dir {
                let problems = pull::check_dir(&verified, &dir);
                if !problems.is_empty() {
                    return Err(CliError::Verify(problems.join("; ")));
                }
                eprintln!("{} matches the manifest", dir.display());
            }
            println!("{}", verified.digest);
        }
        Command::Whoami => print_json(&client.whoami().await?)?,
        Command::Health => client.healthz().await?,
        Command::Token(command) => token_command(&client, command).await?,
        Command::Retention(command) => retention_command(&client, command).await?,
        Command::Tag(command) => tag_command(&client, command).await?,
        Command::Reclaim(ReclaimCommand::Run) => {
            let report = client.run_reclaim().await?;
            if report.ran {
                eprintln!(
                    "deleted {} blob(s), {} bytes; {} ({} bytes) wait for the grace",
                    report.deleted, report.bytes_freed, report.pending, report.pending_bytes
                );
            } else {
                eprintln!("another reclaim run is under way; nothing done");
            }
            print_json(&report)?;
        }
        Command::Runs(RunsCommand::List) => {
            let list = client.list_runs().await?;
            for run in &list.runs {
                let p = &run.progress;
                let of = p.planned.map(|n| format!("/{n}")).unwrap_or_default();
                eprintln!(
                    "{} {:9} {:7?} {}{of} {} started {} by {}",
                    run.id,
                    run.kind.as_str(),
                    run.state,
                    p.done,
                    p.unit,
                    rfc3339(run.started_at),
                    run.started_by
                );
            }
            print_json(&list)?;
        }
        Command::Runs(RunsCommand::Show { id }) => print_json(&client.show_run(&id).await?)?,
        Command::Runs(RunsCommand::Start { kind, verify }) => {
            let path = match kind {
                amber_core::wire::RunKind::Fsck if verify => "/v1/fsck/run?verify=true".to_owned(),
                other => format!("/v1/{}/run", other.as_str()),
            };
            let run = client.run_to_end(&path).await?;
            eprintln!("{} run {}: {:?}", run.kind, run.id, run.state);
            print_json(&run)?;
            if run.state != amber_core::wire::RunState::Done {
                return Err(CliError::Api {
                    status: 200,
                    code: "run_failed".into(),
                    message: run.error.unwrap_or_default(),
                    detail: None,
                });
            }
        }
        Command::Bench(command) => bench_command(&client, &cli.url, command).await?,
        Command::Oidc(OidcCommand::Token { json }) => {
            let id_token = amber_cli::oidc::id_token_from_env().await?.ok_or_else(|| {
                CliError::Usage(
                    "no ID token: on GitHub Actions give the job `permissions: id-token: write`; elsewhere set AMBER_ID_TOKEN"
                        .into(),
                )
            })?;
            let minted = client.exchange_id_token(&id_token).await?;
            if json {
                print_json(&minted)?;
            } else {
                eprintln!(
                    "token {} of publisher {}, until {}",
                    minted.info.id,
                    minted.publisher,
                    rfc3339(minted.info.expires_at)
                );
                println!("{}", minted.token);
            }
        }
        Command::Publisher(command) => publisher_command(&client, command).await?,
        Command::Log(command) => log_command(command).await?,
        Command::Audit(AuditCommand::Verify { keys: key_files }) => {
            let (keys, vkeys) = if key_files.is_empty() {
                let list = client.keys().await?;
                (list.verifying_keys().map_err(CliError::Verify)?, list.log_vkeys())
            } else {
                (keys::load(&key_files)?, keys::load_log(&key_files)?)
            };
            // Read before the entries: entries appended meanwhile only extend the tree.
            let log_checkpoint = match vkeys.is_empty() {
                true => None,
                false => Some(amber_cli::transparency::open_checkpoint(&vkeys, &client.log_checkpoint().await?)?),
            };
            let mut tree = amber_cli::transparency::Rebuild::new(log_checkpoint.as_ref().map_or(0, |c| c.size));
            let mut verifier = ChainVerifier::default();
            let mut after = 0;
            let checkpoint = loop {
                let page = client.audit_page(after).await?;
                for entry in &page.entries {
                    verifier.push(entry).map_err(|e| CliError::Verify(format!("audit log broken at {e}")))?;
                    tree.push(entry.entry.as_bytes());
                }
                match page.next {
                    Some(next) => after = next,
                    None => break page.checkpoint,
                }
            };
            let summary = verifier
                .finish(checkpoint.as_ref(), &keys)
                .map_err(|e| CliError::Verify(format!("audit log broken at {e}")))?;
            eprintln!("audit log intact: {} entries, head {}", summary.entries, summary.head);
            if let Some(checkpoint) = &log_checkpoint {
                tree.check(&client, checkpoint).await?;
                eprintln!(
                    "log tree rebuilt from the entries matches the signed checkpoint of {} ({} entries)",
                    checkpoint.origin, checkpoint.size
                );
            }
        }
    }
    Ok(())
}

fn print_phases(phases: &[bench::Phase], json: bool) -> Result<()> {
    if json {
        for phase in phases {
            println!("{}", serde_json::to_string(phase).map_err(|e| CliError::Io(e.to_string()))?);
        }
        return Ok(());
    }
    println!(
        "{:<8} {:<6} {:>7} {:>6} {:>10} {:>10} {:>9} {:>9} {:>12} {:>10}",
        "workload", "phase", "ops", "errors", "ops/s", "MB/s", "p50 ms", "p99 ms", "server cpu", "peak MiB"
    );
    for p in phases {
        let cpu = p.server_cpu.map_or("-".to_owned(), |c| {
            if p.workload == "small" { format!("{c:.0} us/op") } else { format!("{c:.2} s/GiB") }
        });
        let rss = p.server_peak_rss_mib.map_or("-".to_owned(), |r| format!("{r:.1}"));
        println!(
            "{:<8} {:<6} {:>7} {:>6} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>12} {:>10}",
            p.workload, p.phase, p.ops, p.errors, p.ops_per_s, p.mb_per_s, p.p50_ms, p.p99_ms, cpu, rss
        );
    }
    Ok(())
}

async fn bench_command(client: &Client, url: &str, command: BenchCommand) -> Result<()> {
    let host = url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
    let host = if url.contains("://[::1]") { "::1" } else { host };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return Err(CliError::Usage(format!("amber bench only targets this machine (127.0.0.1), not {url}")));
    }
    let repo = |r: &str| r.parse::<amber_core::RepoName>().map_err(|e| CliError::Usage(e.to_string()));
    match command {
        BenchCommand::Small { repo: r, count, size, concurrency, server_pid, json } => {
            let phases =
                bench::small(client, &repo(&r)?, count, size, concurrency.max(1), bench::Server(server_pid)).await;
            print_phases(&phases, json)
        }
        BenchCommand::Exchange { id_tokens, concurrency, refused, server_pid, json } => {
            let text = std::fs::read_to_string(&id_tokens)
                .map_err(|e| CliError::io(format!("reading {}", id_tokens.display()), e))?;
            let tokens: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
            let phase = bench::exchanges(client, tokens, concurrency.max(1), refused, bench::Server(server_pid)).await;
            print_phases(&[phase], json)
        }
        BenchCommand::Large { repo: r, size_mib, server_pid, json } => {
            let dir = tempfile::tempdir().map_err(|e| CliError::io("temp dir", e))?;
            let file = dir.path().join("blob");
            {
                use std::io::Write;
                let mut out =
                    std::io::BufWriter::new(std::fs::File::create(&file).map_err(|e| CliError::io("temp file", e))?);
                let mut block = vec![0u8; 1 << 20];
                for _ in 0..size_mib {
                    block.iter_mut().for_each(|b| *b = rand::random());
                    out.write_all(&block).map_err(|e| CliError::io("temp file", e))?;
                }
                out.flush().map_err(|e| CliError::io("temp file", e))?;
            }
            let phases = bench::large(client, &repo(&r)?, &file, bench::Server(server_pid)).await?;
            print_phases(&phases, json)
        }
        BenchCommand::Tree { repo: r, scale, server_pid, json } => {
            let repo = repo(&r)?;
            let dir = tempfile::tempdir().map_err(|e| CliError::io("temp dir", e))?;
            let tree = dir.path().join("tree");
            let bytes = bench::make_tree(&tree, scale.max(1))?;
            let tag: amber_core::Tag = format!("bench-{:08x}", rand::random::<u32>()).parse().expect("valid tag");
            let server = bench::Server(server_pid);
            let timing = bench::start(server);
            let started = std::time::Instant::now();
            let (tree, quiet) = (std::slice::from_ref(&tree), Progress::Quiet);
            push::push(client, &repo, &tag, tree, BTreeMap::new(), quiet, push::Parts::default()).await?;
            let push_phase = timing.finish("tree", "push", vec![started.elapsed()], 0, bytes, true);
            let keys = client.keys().await?.verifying_keys().map_err(CliError::Verify)?;
            let reference = Reference { repo, target: Expected::Tag(tag) };
            let timing = bench::start(server);
            let started = std::time::Instant::now();
            pull::pull(client, &reference, &keys, &dir.path().join("pulled"), true, None).await?;
            let pull_phase = timing.finish("tree", "pull", vec![started.elapsed()], 0, bytes, true);
            print_phases(&[push_phase, pull_phase], json)
        }
    }
}

fn tag_reference(text: &str) -> Result<(amber_core::RepoName, amber_core::Tag)> {
    let reference = reference(text)?;
    let tag = reference.tag().cloned().ok_or_else(|| CliError::Usage(format!("{text:?} is not OWNER/NAME:TAG")))?;
    Ok((reference.repo, tag))
}

/// `OWNER/NAME` or `OWNER/*`, checked before anything is sent.
fn scope(text: &str) -> Result<String> {
    match text.parse::<amber_core::RepoPattern>() {
        Ok(amber_core::RepoPattern::Exact(_) | amber_core::RepoPattern::Owner(_)) => Ok(text.to_owned()),
        _ => Err(CliError::Usage(format!("{text:?} is neither OWNER/NAME nor OWNER/*"))),
    }
}

fn print_plan(plan: &amber_core::wire::RetentionPlan, done: bool) {
    let (expire, unlink) = if done { ("expired", "unlinked") } else { ("would expire", "would unlink") };
    for e in &plan.expire {
        eprintln!("{expire} {}:{} (bound {}, manifest {})", e.repository, e.tag, rfc3339(e.bound_at), e.manifest);
    }
    for u in &plan.unlink {
        eprintln!("{unlink} {} in {} ({} bytes)", u.digest, u.repository, u.size);
    }
    eprintln!("{}: {} tag(s), {unlink}: {} blob link(s)", expire, plan.expire.len(), plan.unlink.len());
}

async fn retention_command(client: &Client, command: RetentionCommand) -> Result<()> {
    match command {
        RetentionCommand::Set { scope: text, keep_last, keep_days, keep_tags, untagged_days } => {
            let policy = amber_core::wire::RetentionPolicy {
                keep_days,
                keep_last,
                keep_tags: (!keep_tags.is_empty()).then_some(keep_tags),
                untagged_days,
            };
            print_json(&client.put_policy(&scope(&text)?, &policy).await?)?;
        }
        RetentionCommand::Show { scope: text } => {
            let scope = text.as_deref().map(scope).transpose()?;
            print_json(&client.get_policy(scope.as_deref()).await?)?;
        }
        RetentionCommand::Plan { scope: text } => {
            let plan = client.plan_retention(&scope(&text)?).await?;
            print_plan(&plan, false);
            print_json(&plan)?;
        }
        RetentionCommand::Run => {
            let report = client.run_retention().await?;
            print_plan(&report, true);
            print_json(&report)?;
        }
        RetentionCommand::Delete { scope: text } => print_json(&client.delete_policy(&scope(&text)?).await?)?,
    }
    Ok(())
}

async fn tag_command(client: &Client, command: TagCommand) -> Result<()> {
    match command {
        TagCommand::List { repository } => {
            let repo = repository.parse::<amber_core::RepoName>().map_err(|e| CliError::Usage(e.to_string()))?;
            for t in client.list_tags(&repo).await? {
                let state = match t.state {
                    amber_core::wire::TagState::Live => "live",
                    amber_core::wire::TagState::Expired => "expired",
                };
                let held = if t.held { " held" } else { "" };
                println!("{}\t{}\t{state}{held}\t{}", t.tag, t.digest, rfc3339(t.created_at));
            }
        }
        TagCommand::Hold { reference: text, reason } => {
            let (repo, tag) = tag_reference(&text)?;
            print_json(&client.hold_tag(&repo, &tag, &reason).await?)?;
        }
        TagCommand::Release { reference: text } => {
            let (repo, tag) = tag_reference(&text)?;
            print_json(&client.release_tag(&repo, &tag).await?)?;
        }
        TagCommand::Expire { reference: text, reason } => {
            let (repo, tag) = tag_reference(&text)?;
            let tombstone = client.expire_tag(&repo, &tag, &reason).await?;
            eprintln!("{repo}:{tag} expired; its name is never bound again");
            print_json(&tombstone)?;
        }
    }
    Ok(())
}

async fn token_command(client: &Client, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { name, pipeline, grants, expires_in, json } => {
            let grants = grants.iter().map(|g| parse_grant(g)).collect::<Result<Vec<_>>>()?;
            let created = client.create_token(&CreateTokenRequest { name, pipeline, grants, expires_in }).await?;
            if json {
                print_json(&created)?;
            } else {
                eprintln!(
                    "created {} ({}), expires {}",
                    created.info.id,
                    created.info.name,
                    rfc3339(created.info.expires_at)
                );
                println!("{}", created.token);
            }
        }
        TokenCommand::List => print_json(&client.list_tokens().await?)?,
        TokenCommand::Show { id } => print_json(&client.show_token(&id).await?)?,
        TokenCommand::Rotate { id, grace, json } => {
            let created = client.rotate_token(&id, grace).await?;
            if json {
                print_json(&created)?;
            } else {
                eprintln!("rotated {id} into {}, expires {}", created.info.id, rfc3339(created.info.expires_at));
                println!("{}", created.token);
            }
        }
        TokenCommand::Revoke { id } => {
            let info = client.revoke_token(&id).await?;
            eprintln!("revoked {}", info.id);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("amber: {err}");
            err.exit_code()
        }
    }
}

/// `--part-size`: a power of two of at least 1 MiB.
fn part_size(text: &str) -> std::result::Result<u64, String> {
    let size: u64 = text.parse().map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if size >= amber_core::parts::MIN_PART_SIZE && size.is_power_of_two() {
        Ok(size)
    } else {
        Err(format!("{size} is not a power of two of at least 1048576 (1 MiB)"))
    }
}
