//! How long the transparency log takes to answer at scale: appends N audit
//! entries (default 1,000,000) through the metadata store, as amberd does,
//! then times inclusion proofs, consistency proofs, hash tiles and signing a
//! checkpoint, each from the store.
//!
//!   cargo run --release --example log-proofs -- [ENTRIES] [postgres://...]
//!
//! Without a URL the store is sled in a temporary directory; with one, a
//! fresh PostgreSQL database is made on that server (and dropped after).

use std::sync::Arc;
use std::time::{Duration, Instant};

use amber_core::audit::{Actor, Event};
use amber_core::log::{self as tlog, ProofRequest};
use amber_server::audit::Draft;
use amber_server::config::{FreeSpace, LogConfig, MetaConfig};
use amber_server::log::Log;
use amber_server::meta::Meta;
use amber_server::meta::{AuditStore, LogStore};
use amber_server::signing::Signer;

const SAMPLES: usize = 1000;

fn quantiles(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    format!("p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", at(0.5), at(0.99), at(1.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let postgres = args.next();
    let dir = tempfile::tempdir()?;
    let (config, database) = match &postgres {
        Some(url) => {
            let name = format!("amber_log_bench_{}", std::process::id());
            let admin = sqlx::PgPool::connect(url).await?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
            let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
            (MetaConfig::Postgres(format!("{base}/{name}")), Some((admin, name)))
        }
        None => (MetaConfig::Sled(dir.path().join("meta")), None),
    };
    let meta = Meta::open(&config, FreeSpace::Bytes(0)).await?;
    let signer = Arc::new(Signer::load(&meta, None).await?);
    let started = Instant::now();
    let mut size = 0u64;
    while size < entries {
        let n = (entries - size).min(2000);
        let events = (0..n).map(|i| Event::KeyRotated { keyid: format!("key-{}", size + i) }).collect();
        meta.append_audit(Draft::shared(&signer, Actor::operator(), events)).await?;
        size += n;
    }
    let appended = started.elapsed();
    println!(
        "appended {entries} entries in {:.1} s ({:.0} entries/s, in batches of 2000)",
        appended.as_secs_f64(),
        entries as f64 / appended.as_secs_f64()
    );
    let log_config = LogConfig {
        origin: None,
        origin_explicit: false,
        interval: Duration::from_millis(500),
        key_file: None,
        witnesses: Default::default(),
    };
    let log = Log::open(&meta, &log_config).await?;

    let mut rng = rand::random::<u64>() | 1;
    let mut next = move |below: u64| {
        // xorshift: the sample indexes, spread over the whole tree.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let mut inclusion = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let index = next(entries);
        let t = Instant::now();
        let proof = log.proof(&meta, ProofRequest::Inclusion { index, size: entries }).await?;
        inclusion.push(t.elapsed());
        assert!(!proof.is_empty());
    }
    println!("inclusion proof at size {entries}: {}", quantiles(inclusion));
    let mut consistency = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let old = 1 + next(entries - 1);
        let t = Instant::now();
        log.proof(&meta, ProofRequest::Consistency { old, size: entries }).await?;
        consistency.push(t.elapsed());
    }
    println!("consistency proof to size {entries}: {}", quantiles(consistency));
    let mut tiles = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let index = next(entries / tlog::TILE_WIDTH);
        let t = Instant::now();
        meta.log_hashes(tlog::tile_hash_indexes(0, index, 256)).await?;
        tiles.push(t.elapsed());
    }
    println!("full level-0 hash tile: {}", quantiles(tiles));
    let t = Instant::now();
    let tree = meta.log_tree().await?;
    let note = tlog::sign_checkpoint(log.origin(), tree.size(), &tree.root(), &log.signer().active_key());
    println!(
        "durable tree head and checkpoint signature: {:.3} ms ({} bytes)",
        t.elapsed().as_secs_f64() * 1e3,
        note.len()
    );
    drop(meta);
    if let Some((admin, name)) = database {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await?;
    }
    Ok(())
}
