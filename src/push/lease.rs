//! An upload's lease on its digest, from the blob store's gate (its bytes
//! hashed right) until it is linked: reclaim never marks a leased digest, and
//! an upload waits while a marked one's bytes are being deleted (the protocol
//! is `crate::lifecycle::reclaim`'s). An upload that replaced quarantined
//! bytes heals them once linked.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amber_core::Digest;
use amber_core::audit::{Actor, Event};

use crate::audit::Draft;
use crate::blobs::{BlobError, Entered, Gate};
use crate::meta::{Lease, LinkStore, MetaError, ScrubStore};
use crate::state::AppState;

/// How long an upload waits for the deletion of its digest's bytes to end.
const MARKED_WAIT: Duration = Duration::from_secs(10);

/// The lease an upload holds from the gate until it is linked.
pub struct UploadLease {
    state: AppState,
    lease: Mutex<Option<Lease>>,
    /// The gate told the store to replace quarantined bytes.
    replacing: std::sync::atomic::AtomicBool,
}

impl UploadLease {
    pub fn new(state: &AppState) -> Arc<Self> {
        Arc::new(Self { state: state.clone(), lease: Mutex::new(None), replacing: Default::default() })
    }

    /// True when this upload replaced quarantined bytes: once linked, it heals them.
    pub fn replaced(&self) -> bool {
        self.replacing.load(Ordering::Relaxed)
    }

    /// The lease taken at the gate, for the link to end.
    pub fn take(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Holds `lease` for the link to end.
    fn granted(&self, digest: Digest, lease: Lease) -> Entered {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
        // Quarantined bytes are replaced by these, which hashed right.
        let replace = self.state.quarantine.contains(&digest);
        self.replacing.store(replace, Ordering::Relaxed);
        Entered { replace }
    }

    /// Ends the lease of an upload that failed after the gate.
    pub async fn abandon(&self) {
        if let Some(lease) = self.take()
            && let Err(err) = self.state.meta.end_promote(&lease).await
        {
            tracing::warn!(error = %err, "ending an upload's lease failed; it expires on its own");
        }
    }
}

impl Gate for UploadLease {
    /// Only a lease granted at once is taken here; a digest marked for
    /// reclaim waits in `enter`.
    fn enter_now(&self, digest: Digest) -> Option<Result<Entered, BlobError>> {
        match self.state.meta.promote_now(&digest) {
            Some(Some(lease)) => Some(Ok(self.granted(digest, lease))),
            Some(None) | None => None,
        }
    }

    fn enter(&self, digest: Digest) -> std::pin::Pin<Box<dyn Future<Output = Result<Entered, BlobError>> + Send + '_>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + MARKED_WAIT;
            loop {
                match self.state.meta.begin_promote(&digest).await {
                    Ok(Some(lease)) => return Ok(self.granted(digest, lease)),
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(None) => {
                        return Err(BlobError::Unavailable(format!("the bytes of {digest} are still being reclaimed")));
                    }
                    Err(err) => return Err(BlobError::Unavailable(err.to_string())),
                }
            }
        })
    }
}

/// Lifts the quarantine once an upload replaced the bytes with ones that
/// hash right.
pub async fn healed(state: &AppState, digest: Digest, actor: Actor) -> Result<(), MetaError> {
    let event = Event::BlobRepaired { digest };
    if state.meta.heal(&digest, Draft::shared(&state.signer, actor, vec![event])).await? {
        tracing::info!(%digest, "quarantined blob healed by an upload");
    }
    state.quarantine.set(digest, false);
    Ok(())
}
