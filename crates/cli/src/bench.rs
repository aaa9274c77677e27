//! `amber bench`: load against a running amberd, measured from a client fast
//! enough not to be the bottleneck. Reports throughput, latency percentiles
//! and, given the server's pid, its CPU time per operation and peak RSS.
//! Traffic goes only to the `--url` given; every phase is bounded in count.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amber_core::{Digest, RepoName};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use crate::client::Client;
use crate::error::{CliError, Result};

/// One measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub workload: String,
    pub phase: String,
    pub ops: usize,
    pub errors: usize,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU time per operation (µs), or per GiB for large transfers (s).
    pub server_cpu: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
}

/// The server process, for CPU and memory accounting (Linux /proc).
#[derive(Clone, Copy)]
pub struct Server(pub Option<u32>);

impl Server {
    fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0?)).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Resets the peak-RSS mark so a phase measures its own peak.
    fn reset_peak(self) {
        if let Some(pid) = self.0 {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    fn peak_rss_mib(self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0?)).ok()?;
        let kib: f64 =
            status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Starts timing a phase (public for workloads composed elsewhere).
pub fn start(server: Server) -> Timing {
    Timing::start(server)
}

pub struct Timing {
    server: Server,
    cpu_before: Option<f64>,
    started: Instant,
}

impl Timing {
    fn start(server: Server) -> Self {
        server.reset_peak();
        Self { server, cpu_before: server.cpu_seconds(), started: Instant::now() }
    }

    pub fn finish(
        self,
        workload: &str,
        phase: &str,
        mut latencies: Vec<Duration>,
        errors: usize,
        bytes: u64,
        per_gib: bool,
    ) -> Phase {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = match (self.cpu_before, self.server.cpu_seconds()) {
            (Some(before), Some(after)) => Some(after - before),
            _ => None,
        };
        latencies.sort();
        let ops = latencies.len();
        let server_cpu = cpu
            .map(|c| if per_gib { c * (1u64 << 30) as f64 / bytes.max(1) as f64 } else { c * 1e6 / ops.max(1) as f64 });
        Phase {
            workload: workload.into(),
            phase: phase.into(),
            ops,
            errors,
            seconds,
            ops_per_s: ops as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            server_cpu,
            server_peak_rss_mib: self.server.peak_rss_mib(),
        }
    }
}

/// Runs `op(i)` for i in 0..count on `concurrency` workers; returns latencies and errors.
async fn run_concurrently<F, Fut>(count: usize, concurrency: usize, op: F) -> (Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (op, next) = (op.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let started = Instant::now();
                match op(i).await {
                    Ok(()) => latencies.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let mut all = Vec::with_capacity(count);
    let mut errors = 0;
    for worker in futures_util::future::join_all(workers).await {
        let (latencies, e) = worker.expect("bench worker");
        all.extend(latencies);
        errors += e;
    }
    (all, errors)
}

/// Small blobs: push, HEAD and GET `count` random blobs of `size` bytes.
pub async fn small(
    client: &Client,
    repo: &RepoName,
    count: usize,
    size: usize,
    concurrency: usize,
    server: Server,
) -> Vec<Phase> {
    let blobs: Arc<Vec<(Digest, Bytes)>> = Arc::new(
        (0..count)
            .map(|_| {
                let bytes: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
                (Digest::of(&bytes), Bytes::from(bytes))
            })
            .collect(),
    );
    let bytes = (count * size) as u64;
    let mut phases = Vec::new();
    for phase in ["push", "head", "get"] {
        let (client, repo, blobs) = (client.clone(), repo.clone(), blobs.clone());
        let timing = Timing::start(server);
        let (latencies, errors) = run_concurrently(count, concurrency, move |i| {
            let (client, repo, blobs) = (client.clone(), repo.clone(), blobs.clone());
            async move {
                let (digest, body) = &blobs[i];
                match phase {
                    "push" => client.put_blob_bytes(&repo, digest, body.clone()).await,
                    "head" => client.head_blob(&repo, digest).await,
                    _ => client.get_blob(&repo, digest).await?.bytes().await.map(drop).map_err(CliError::from),
                }
            }
        })
        .await;
        phases.push(timing.finish("small", phase, latencies, errors, bytes, false));
    }
    phases
}

/// ID token exchanges: each of `id_tokens` sent once, `concurrency` at a
/// time. With `refused`, each is expected to be refused with `403` (a
/// valid ID token no publisher trusts: the verification without the
/// minting write) and counted when it is.
pub async fn exchanges(
    client: &Client,
    id_tokens: Vec<String>,
    concurrency: usize,
    refused: bool,
    server: Server,
) -> Phase {
    let (client, id_tokens) = (client.clone(), Arc::new(id_tokens));
    let count = id_tokens.len();
    let timing = Timing::start(server);
    let (latencies, errors) = run_concurrently(count, concurrency, move |i| {
        let (client, id_tokens) = (client.clone(), id_tokens.clone());
        async move {
            match (client.exchange_id_token(&id_tokens[i]).await, refused) {
                (Ok(_), false) | (Err(CliError::Auth { status: 403, .. }), true) => Ok(()),
                (Ok(_), true) => Err(CliError::Verify("an exchange expected to be refused minted".into())),
                (Err(err), _) => Err(err),
            }
        }
    })
    .await;
    timing.finish("oidc", if refused { "refused" } else { "exchange" }, latencies, errors, 0, false)
}

/// One large blob from `file`: upload, then download (verified by the server as it streams).
pub async fn large(client: &Client, repo: &RepoName, file: &Path, server: Server) -> Result<Vec<Phase>> {
    let size = std::fs::metadata(file).map_err(|e| CliError::io(file.display(), e))?.len();
    let digest = crate::tree::hash_file(file, size)?;
    let timing = Timing::start(server);
    let started = Instant::now();
    client.put_blob_file(repo, &digest, file, size, |_| {}).await?;
    let push = timing.finish("large", "push", vec![started.elapsed()], 0, size, true);
    let timing = Timing::start(server);
    let started = Instant::now();
    let mut stream = client.get_blob(repo, &digest).await?.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        received += chunk?.len() as u64;
    }
    if received != size {
        return Err(CliError::Verify(format!("downloaded {received} of {size} bytes")));
    }
    let get = timing.finish("large", "get", vec![started.elapsed()], 0, size, true);
    Ok(vec![push, get])
}

/// A CI-shaped tree: many small files, some medium, a few large.
pub fn make_tree(root: &Path, scale: usize) -> Result<u64> {
    let mut total = 0u64;
    let mut write = |path: PathBuf, len: usize| -> Result<()> {
        std::fs::create_dir_all(path.parent().expect("files are under root"))
            .map_err(|e| CliError::io(path.display(), e))?;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        std::fs::write(&path, bytes).map_err(|e| CliError::io(path.display(), e))?;
        total += len as u64;
        Ok(())
    };
    for i in 0..200 * scale {
        write(root.join(format!("lib/{}/file{i}.o", i % 20)), 16 << 10)?;
    }
    for i in 0..20 * scale {
        write(root.join(format!("assets/asset{i}.bin")), 1 << 20)?;
    }
    for i in 0..4 * scale {
        write(root.join(format!("dist/package{i}.tar")), 48 << 20)?;
    }
    Ok(total)
}
