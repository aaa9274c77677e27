//! The hashes other than BLAKE3 that clients name content by (sha256, and
//! sha512 when asked), computed as the bytes arrive, in the same pass that
//! the blob store hashes them with BLAKE3 and writes them: one read of the
//! bytes, two hashers. Small bodies are hashed as they pass; from
//! [`THREAD_FROM`] on, a batch at a time on the blocking pool, fed through a
//! bounded channel, beside the blob store's thread; waiting for the client
//! holds no thread.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest as _;

use crate::blobs::BodyStream;

/// The finished hashes of a body, in lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sums {
    pub sha256: String,
    pub sha512: Option<String>,
}

#[derive(Default)]
struct Hashers {
    sha256: sha2::Sha256,
    sha512: Option<sha2::Sha512>,
}

impl Hashers {
    fn new(sha512: bool) -> Self {
        Self { sha256: sha2::Sha256::new(), sha512: sha512.then(sha2::Sha512::new) }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        if let Some(sha512) = self.sha512.as_mut() {
            sha512.update(chunk);
        }
    }

    fn finish(self) -> Sums {
        Sums {
            sha256: format!("{:x}", self.sha256.finalize()),
            sha512: self.sha512.map(|h| format!("{:x}", h.finalize())),
        }
    }
}

/// Bodies at least this long are hashed beside the blob store's BLAKE3 and
/// writes, on the blocking pool a batch at a time; smaller ones as they pass.
const THREAD_FROM: u64 = 1 << 20;
/// Chunks in flight to the hasher; past it the body waits (no memory grows).
const IN_FLIGHT: usize = 16;
/// Bytes hashed per trip to the blocking pool.
const BATCH: usize = 1 << 20;

/// A tapped body's hashes, being computed.
pub struct Tap(Where);

/// Where they are computed.
enum Where {
    Inline(Arc<Mutex<Hashers>>),
    Thread(tokio::task::JoinHandle<Sums>),
}

/// Wraps `body` so that every chunk also feeds sha256 (and sha512 if
/// asked). `announced`: the body's length as the client announced it,
/// which picks where the hashes run.
pub fn tap(body: BodyStream, sha512: bool, announced: Option<u64>) -> (BodyStream, Tap) {
    if announced.is_some_and(|n| n < THREAD_FROM) {
        let hashers = Arc::new(Mutex::new(Hashers::new(sha512)));
        let feeding = hashers.clone();
        let body = body.inspect_ok(move |chunk| feeding.lock().unwrap_or_else(PoisonError::into_inner).update(chunk));
        return (Box::pin(body), Tap(Where::Inline(hashers)));
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    // An async task that waits for chunks holding no thread (a client that
    // stalls its upload must not hold one), and hashes each batch on the
    // blocking pool, beside the blob store's own work.
    let hashing = tokio::spawn(hash_batches(receiver, Hashers::new(sha512)));
    let body = body.then(move |item| {
        let sender = sender.clone();
        async move {
            if let Ok(chunk) = &item {
                // The hasher ends only when every sender is gone: it is alive here.
                let _ = sender.send(chunk.clone()).await;
            }
            item
        }
    });
    (Box::pin(body), Tap(Where::Thread(hashing)))
}

async fn hash_batches(mut receiver: tokio::sync::mpsc::Receiver<Bytes>, mut hashers: Hashers) -> Sums {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let mut bytes = batch[0].len();
        while bytes < BATCH {
            match receiver.try_recv() {
                Ok(chunk) => {
                    bytes += chunk.len();
                    batch.push(chunk);
                }
                Err(_) => break,
            }
        }
        hashers = tokio::task::spawn_blocking(move || {
            for chunk in &batch {
                hashers.update(chunk);
            }
            hashers
        })
        .await
        .expect("hashing does not panic");
    }
    hashers.finish()
}

/// The hashes of everything the tap saw; the body (and so every sender) must
/// be dropped first.
pub async fn finish(tap: Tap) -> Sums {
    match tap.0 {
        Where::Inline(hashers) => std::mem::take(&mut *hashers.lock().unwrap_or_else(PoisonError::into_inner)).finish(),
        Where::Thread(hashing) => hashing.await.expect("the hashing thread does not panic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ways_hash_what_passed() {
        for announced in [Some(3), None] {
            let body: BodyStream =
                Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"c"))]));
            let (body, tap) = tap(body, true, announced);
            let passed: Vec<Bytes> = body.try_collect().await.unwrap();
            assert_eq!(passed.concat(), b"abc");
            let sums = finish(tap).await;
            assert_eq!(sums.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
            assert!(sums.sha512.unwrap().starts_with("ddaf35a193617aba"));
        }
    }
}
