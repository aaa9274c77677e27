//! `AppState`: what every handler shares, built once at start.

use std::ops::Deref;
use std::sync::Arc;

use crate::admission::Admission;
use crate::auth::Denials;
use crate::blobs::Blobs;
use crate::config::Config;
use crate::meta::Meta;
use crate::metrics::Metrics;
use crate::signing::Signer;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub blobs: Blobs,
    pub meta: Meta,
    pub signer: Arc<Signer>,
    pub metrics: Metrics,
    pub denials: Denials,
    pub admission: Admission,
    /// Quarantined digests, re-read from the store every few seconds.
    pub quarantine: crate::quarantine::QuarantineSet,
    /// Trusted issuers of CI ID tokens, and their keys.
    pub oidc: crate::oidc::Oidc,
    /// The transparency log: its key and checkpoints.
    pub log: Arc<crate::log::Log>,
    /// Resumable uploads: their bytes, and this replica's hash states.
    pub uploads: crate::uploads::Uploads,
    /// The runs (retention, reclaim, scrub, fsck) under way in this process.
    pub running: crate::progress::Running,
}

impl AppState {
    /// Opens every backend and loads the signing keys, so that a bad path or
    /// URL fails at start rather than on the first request.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let blobs = Blobs::open(&config.blobs, config.limits.min_free_space).await?;
        let meta = Meta::open(&config.meta, config.limits.min_free_space).await?;
        let signer = Arc::new(Signer::load(&meta, config.signing_key_file.as_deref()).await?);
        let (metrics, denials) = (Metrics::default(), Denials::default());
        let admission = Admission::new(&config.limits);
        let quarantine = crate::quarantine::QuarantineSet::default();
        quarantine.refresh(&meta).await?;
        let oidc = crate::oidc::Oidc::new(&config.oidc)?;
        let log = Arc::new(crate::log::Log::open(&meta, &config.log).await?);
        let uploads = crate::uploads::Uploads::new(match &blobs {
            Blobs::Fs(fs) => {
                crate::uploads::store::UploadStore::Fs(crate::uploads::store::fs::FsUploads::open(fs.clone()).await?)
            }
            Blobs::S3(s3) => {
                crate::uploads::store::UploadStore::S3(crate::uploads::store::s3::S3Uploads::new(s3.clone()))
            }
        });
        Ok(Self(Arc::new(Inner {
            config,
            blobs,
            meta,
            signer,
            metrics,
            denials,
            admission,
            quarantine,
            oidc,
            log,
            uploads,
            running: crate::progress::Running::default(),
        })))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
