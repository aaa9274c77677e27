//! `amberd`: serve the API, or administer a stopped server's data
//! (`token create`, `keys rotate`, `keys export`).

use std::sync::Arc;
use std::time::Duration;

use amber_core::audit::{Actor, Event};
use amber_core::wire::KeyPurpose;
use amber_core::{Action, Grant, RepoPattern};
use amber_server::audit;
use amber_server::auth::{TokenSpec, issue_token};
use amber_server::config::{Config, Options};
use amber_server::meta::{LogStore, Meta};
use amber_server::server;
use amber_server::signing::{self, Signer};
use amber_server::state::AppState;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Uploads arrive in ~400 KiB buffers, one per socket read. glibc's allocator
/// returns memory of that size to the kernel when it is freed, so every read
/// faulted in fresh zeroed pages (~70 000 faults per GiB uploaded, a tenth of
/// the server's CPU); jemalloc keeps freed pages a while for the next read.
/// Built with per-thread caches off (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Amber: a content-addressed, immutable artifact store.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  amberd --listen 127.0.0.1:7350 --data-dir ./amber-data\n  amberd token create --admin --name ops"
)]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Log format.
    #[arg(long, env = "AMBER_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage tokens on a stopped server's data.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage signing keys on a stopped server's data.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The transparency log's name, on a stopped server's data.
    #[command(subcommand)]
    Log(LogCommand),
    /// Check the stored blobs against the metadata: every link has its bytes,
    /// every stored object is linked or waiting for reclaim, nothing is
    /// quarantined. Exits 1 on any fault. On sled, the server must be stopped;
    /// on PostgreSQL and S3 it may run beside the replicas.
    Fsck {
        /// Also read back every linked blob and check that it hashes to its digest.
        #[arg(long)]
        verify: bool,
        /// Record stored objects nothing links as waiting for reclaim, and
        /// delete those past --reclaim-grace; never anything linked.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an admin token and print its secret (only) on stdout.
    Create {
        /// Grant admin (managing tokens and keys). Required: other tokens are made through the API.
        #[arg(long, required = true)]
        admin: bool,
        /// A name saying who holds the token.
        #[arg(long)]
        name: String,
        /// Lifetime in seconds [default: the server's default lifetime].
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new active signing key; earlier keys are retired but still verify.
    Rotate {
        /// Rotate the transparency log's key instead of the manifest key.
        /// Clients pin the log key: give them the new one first.
        #[arg(long)]
        log: bool,
    },
    /// Print the public keys (manifest and log keys) as JSON, the form
    /// `amber --key` pins.
    Export,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print the log's origin (fixed at the first start).
    Origin,
    /// Give the log another origin: only before its first checkpoint, which
    /// clients hold it by; refused after.
    Rename { origin: String },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("AMBER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = Config::resolve(cli.options)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Token(TokenCommand::Create { admin, name, expires_in }) => {
            debug_assert!(admin);
            let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
            let spec = TokenSpec {
                name,
                pipeline: None,
                grants: vec![Grant { repos: RepoPattern::Any, actions: vec![Action::Admin] }],
                lifetime: expires_in.map(Duration::from_secs),
            };
            let signer = Arc::new(Signer::load(&meta, config.signing_key_file.as_deref()).await?);
            let (info, secret) = issue_token(&meta, &config, &signer, Actor::operator(), spec)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(token = %info.id, expires_at = %info.expires_at, "admin token created");
            println!("{}", secret.expose());
            Ok(())
        }
        Command::Log(LogCommand::Origin) => {
            let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
            println!("{}", amber_server::log::resolve_origin(&meta, &config.log).await?);
            Ok(())
        }
        Command::Log(LogCommand::Rename { origin }) => {
            amber_server::config::check_origin(&origin, "the log origin")?;
            let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
            if let Some((size, note)) = meta.log_checkpoint().await? {
                let current = note.lines().next().unwrap_or_default().to_owned();
                anyhow::bail!(
                    "the log {current:?} has signed checkpoints ({size} entries); clients hold it by that name, \
                     so it is never renamed"
                );
            }
            if !meta.rename_log_origin(&origin).await? {
                anyhow::bail!("the log signed its first checkpoint meanwhile; it is never renamed");
            }
            tracing::info!(%origin, "the log's origin is set");
            println!("{origin}");
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate { log }) => {
            let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
            let purpose = if log { KeyPurpose::Log } else { KeyPurpose::Manifest };
            let keyid = signing::rotate(&meta, purpose).await?;
            let signer = Arc::new(Signer::load(&meta, config.signing_key_file.as_deref()).await?);
            audit::record(&meta, &signer, Actor::operator(), Event::KeyRotated { keyid: keyid.clone() }).await?;
            tracing::info!(%keyid, "new active signing key");
            println!("{keyid}");
            Ok(())
        }
        Command::Fsck { verify, repair } => {
            let state = AppState::open(config).await?;
            let report = amber_server::lifecycle::fsck::fsck(&state, verify, repair, &Default::default()).await?;
            for fault in &report.faults {
                println!("{fault}");
            }
            println!(
                "{} linked, {} stored, {} verified, {} waiting for reclaim, {} reclaimed, {} counter(s) repaired; {} \
                 fault(s)",
                report.linked,
                report.stored,
                report.verified,
                report.waiting,
                report.reclaimed,
                report.counters_repaired,
                report.faults.len()
            );
            if !report.faults.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Export) => {
            let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
            let signer = Arc::new(Signer::load(&meta, config.signing_key_file.as_deref()).await?);
            let origin = amber_server::log::resolve_origin(&meta, &config.log).await?;
            let log = Signer::load_log(&meta, &origin, config.log.key_file.as_deref()).await?;
            let mut keys = signer.key_list();
            keys.keys.extend(log.key_list().keys);
            let witnesses = &config.log.witnesses;
            if !witnesses.witnesses.is_empty() {
                keys.witness_policy = Some(amber_core::witness::policy_text(&witnesses.witnesses, witnesses.quorum));
            }
            println!("{}", serde_json::to_string_pretty(&keys)?);
            Ok(())
        }
    }
}

/// Has jemalloc return freed memory to the kernel from a background thread:
/// otherwise pages freed after a load are only purged on later allocations,
/// and an idle server kept the RSS of its busiest minute.
fn return_memory_when_idle() {
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %err, "could not start jemalloc's background purging");
    }
}

/// Pending connections the kernel queues for `accept`. A burst of connects
/// beyond a short queue had its SYNs dropped and retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    return_memory_when_idle();
    let (listen, metrics_listen) = (config.listen, config.metrics_listen);
    let grace = config.limits.shutdown_grace;
    // Before anything answers: a SIGTERM from now on is a clean stop.
    let signal = server::shutdown_signal();
    let tls = config.tls.clone().map(server::tls::Certificates::load).transpose()?;
    let state = AppState::open(config).await?;
    amber_server::auth::initial::ensure(&state.meta, &state.config, &state.signer).await?;
    let listener = bind(listen)?;
    let metrics_listener = match metrics_listen {
        Some(addr) => {
            let listener = bind(addr)?;
            tracing::info!(addr = %listener.local_addr()?, "amberd metrics listening");
            Some(listener)
        }
        None => None,
    };
    if tls.is_some() {
        tracing::info!("serving HTTPS: TLS 1.2 and 1.3, h2 and http/1.1 by ALPN");
    }
    tracing::info!(addr = %listener.local_addr()?, "amberd listening");
    let shutdown = async move {
        signal.await;
        // Whatever the backends are doing, the process ends within the grace.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            tracing::error!("shutdown grace of {}s ended; exiting now", grace.as_secs());
            std::process::exit(1);
        });
    };
    server::serve(listener, metrics_listener, tls, state, shutdown).await?;
    tracing::info!("stopped");
    // Not a return: dropping the runtime would wait for blocking calls that
    // may never end (a stuck store); everything acknowledged is durable.
    std::process::exit(0)
}
