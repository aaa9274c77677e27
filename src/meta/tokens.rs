//! Tokens: records by id and by secret hash, use, revocation and rotation, and
//! the tokens minted by trusted publishing (with their replay record).

use std::future::Future;

use amber_core::TokenId;
use amber_core::wire::TokenInfo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError};

/// A token as the server keeps it: its public fields and the hash of its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub info: TokenInfo,
    /// `TokenSecret::hash` of the current secret, hex.
    pub secret_hash: String,
}

/// An ID token consumed by an exchange: `(issuer, jti)` is refused again
/// until `until` (its expiry plus the leeway, after which it is refused as
/// expired anyway), and forgotten after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub issuer: String,
    pub jti: String,
    pub until: OffsetDateTime,
}

/// The outcome of minting a token for an ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    Minted,
    /// This ID token was exchanged before: nothing was minted.
    Replayed,
    /// The publisher was deleted meanwhile: nothing was minted.
    PublisherGone,
}

/// The outcome of a rotation.
#[derive(Clone, Debug)]
pub enum Rotation {
    Rotated,
    Unknown,
    /// Revoked, expired or already rotated: nothing to rotate.
    Inactive(&'static str),
}

/// The outcome of a revocation.
#[derive(Clone, Debug)]
pub enum Revocation {
    Revoked(TokenRecord),
    /// Revoked before; unchanged.
    AlreadyRevoked(TokenRecord),
    Unknown,
}

pub trait TokenStore {
    /// Stores a new token and appends `audit` in the same transaction.
    fn insert_token(
        &self,
        record: &TokenRecord,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// [`Self::insert_token`] only if the store holds no token at all, as
    /// one step across replicas; `false`: it holds one, nothing was stored.
    fn insert_first_token(
        &self,
        record: &TokenRecord,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    fn token(&self, id: &TokenId) -> impl Future<Output = Result<Option<TokenRecord>, MetaError>> + Send;

    fn token_by_hash(&self, secret_hash: &str) -> impl Future<Output = Result<Option<TokenRecord>, MetaError>> + Send;

    /// Records use of a token; a hint, so it need not be durable at once.
    fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Tokens in id order, strictly after `after`.
    fn list_tokens(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TokenRecord>, MetaError>> + Send;

    /// Sets `revoked_at` and appends `audit` in the same transaction, once: a
    /// second revocation keeps the first time and records nothing.
    fn revoke_token(
        &self,
        id: &TokenId,
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Revocation, MetaError>> + Send;

    /// Atomically stores `new` (which names the old token in `rotated_from`) and
    /// makes the old token end at `old_expires_at`, unless the old token is
    /// revoked, expired or already rotated; appends `audit` if it rotated.
    fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Rotation, MetaError>> + Send;

    /// Records `replay` and stores `record`, minted for `publisher`, with
    /// `audit`, all in one transaction, unless `(issuer, jti)` is recorded
    /// already or the publisher is gone: of racing exchanges of one ID
    /// token, on any replica, exactly one mints. Forgets replays past their
    /// `until` on the way.
    fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Exchange, MetaError>> + Send;
}

impl TokenStore for Meta {
    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<(), MetaError> {
        dispatch!(self, s => s.insert_token(record, audit))
    }

    async fn insert_first_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.insert_first_token(record, audit))
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        dispatch!(self, s => s.token(id))
    }

    async fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> Result<Exchange, MetaError> {
        dispatch!(self, s => s.exchange_token(record, publisher, replay, audit))
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        dispatch!(self, s => s.token_by_hash(secret_hash))
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        dispatch!(self, s => s.touch_token(id, at))
    }

    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        dispatch!(self, s => s.list_tokens(after, limit))
    }

    async fn revoke_token(&self, id: &TokenId, at: OffsetDateTime, audit: AuditBuild) -> Result<Revocation, MetaError> {
        dispatch!(self, s => s.revoke_token(id, at, audit))
    }

    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Rotation, MetaError> {
        dispatch!(self, s => s.rotate_token(new, old_expires_at, audit))
    }
}
