//! Tokens on sled.

use std::sync::PoisonError;

use amber_core::TokenId;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use time::OffsetDateTime;

use super::{SledMeta, append_audit_in, forget_replays, token_json, transaction_error};
use crate::meta::TokenStore;
use crate::meta::{AuditBuild, Exchange, MetaError, Replay, Revocation, Rotation, TokenRecord};
use crate::space::Purpose;

impl TokenStore for SledMeta {
    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<(), MetaError> {
        let id = record.info.id.as_str().as_bytes().to_vec();
        let secret_hash = record.secret_hash.clone();
        let json = serde_json::to_vec(record)?;
        let record = record.clone();
        self.write("insert_token", move |t| {
            let inserted = (&t.tokens, &t.secrets, &t.audit, &t.audit_head)
                .transaction(|(tokens, secrets, audit_tree, head)| {
                    if tokens.get(&id)?.is_some() || secrets.get(secret_hash.as_bytes())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("token".into())));
                    }
                    tokens.insert(id.as_slice(), json.as_slice())?;
                    secrets.insert(secret_hash.as_bytes(), id.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error);
            if inserted.is_ok() {
                t.remember(record);
            }
            inserted
        })
        .await
    }

    async fn insert_first_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<bool, MetaError> {
        let id = record.info.id.as_str().as_bytes().to_vec();
        let secret_hash = record.secret_hash.clone();
        let json = serde_json::to_vec(record)?;
        let record = record.clone();
        // Tokens are never deleted: a store that holds one is seen so with a
        // read, and every later start writes nothing.
        if self.read("any_token", |t| Ok(!t.tokens.is_empty())).await? {
            return Ok(false);
        }
        // Writes go one at a time through the writer and one process holds
        // the store: nothing inserts a token between the look and the insert.
        self.write("insert_first_token", move |t| {
            if !t.tokens.is_empty() {
                return Ok(false);
            }
            (&t.tokens, &t.secrets, &t.audit, &t.audit_head)
                .transaction(|(tokens, secrets, audit_tree, head)| {
                    tokens.insert(id.as_slice(), json.as_slice())?;
                    secrets.insert(secret_hash.as_bytes(), id.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            t.remember(record);
            Ok(true)
        })
        .await
    }

    async fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> Result<Exchange, MetaError> {
        let id = record.info.id.as_str().as_bytes().to_vec();
        let secret_hash = record.secret_hash.clone();
        let json = serde_json::to_vec(record)?;
        let record = record.clone();
        let publisher = publisher.as_bytes().to_vec();
        let mut key = replay.issuer.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(replay.jti.as_bytes());
        let until = replay.until.unix_timestamp().to_be_bytes();
        let mut by_time = until.to_vec();
        by_time.extend_from_slice(&key);
        self.write("exchange_token", move |t| {
            forget_replays(t, OffsetDateTime::now_utc())?;
            let trees = (&t.tokens, &t.secrets, &t.publishers, &t.replays, &t.replays_by_time, &t.audit, &t.audit_head);
            let outcome = trees
                .transaction(|(tokens, secrets, publishers, replays, replays_by_time, audit_tree, head)| {
                    if replays.get(&key)?.is_some() {
                        return Ok(Exchange::Replayed);
                    }
                    if publishers.get(&publisher)?.is_none() {
                        return Ok(Exchange::PublisherGone);
                    }
                    if tokens.get(&id)?.is_some() || secrets.get(secret_hash.as_bytes())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("token".into())));
                    }
                    replays.insert(key.as_slice(), &until[..])?;
                    replays_by_time.insert(by_time.as_slice(), &[][..])?;
                    tokens.insert(id.as_slice(), json.as_slice())?;
                    secrets.insert(secret_hash.as_bytes(), id.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Exchange::Minted)
                })
                .map_err(transaction_error)?;
            if outcome == Exchange::Minted {
                t.remember(record);
            }
            Ok(outcome)
        })
        .await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        let id = id.as_str().to_owned();
        self.read("token", move |t| token_json(&t.tokens, id)).await
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        Ok(self.trees.by_secret.read().unwrap_or_else(PoisonError::into_inner).get(secret_hash).cloned())
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        let id = id.as_str().to_owned();
        // A hint, not flushed at once; but it is a write, so it keeps the
        // reserve like any other.
        let space = self.space.clone();
        self.read("touch_token", move |t| {
            space.check(Purpose::Metadata).map_err(|low| MetaError::NoSpace(low.to_string()))?;
            // Read-modify-write retried on conflict, so a concurrent change to
            // the token (a revocation, say) is never overwritten by a stale copy.
            let touched = |old: Option<&[u8]>| {
                let mut record: TokenRecord = serde_json::from_slice(old?).ok()?;
                record.info.last_used_at = Some(at);
                Some(record)
            };
            let previous =
                t.tokens.fetch_and_update(id, |old| touched(old).and_then(|r| serde_json::to_vec(&r).ok()))?;
            if let Some(record) = touched(previous.as_deref()) {
                t.remember(record);
            }
            Ok(())
        })
        .await
    }

    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        let start = after.map_or_else(Vec::new, |a| format!("{a}\0").into_bytes());
        self.read("list_tokens", move |t| {
            let mut records = Vec::new();
            for item in t.tokens.range(start..).take(limit) {
                let (_, json) = item?;
                records.push(serde_json::from_slice(&json)?);
            }
            Ok(records)
        })
        .await
    }

    async fn revoke_token(&self, id: &TokenId, at: OffsetDateTime, audit: AuditBuild) -> Result<Revocation, MetaError> {
        let id = id.as_str().to_owned();
        self.write("revoke_token", move |t| {
            let abort = |e: serde_json::Error| ConflictableTransactionError::Abort(MetaError::from(e));
            (&t.tokens, &t.audit, &t.audit_head)
                .transaction(|(tokens, audit_tree, head)| {
                    let Some(json) = tokens.get(id.as_str())? else { return Ok(Revocation::Unknown) };
                    let mut record: TokenRecord = serde_json::from_slice(&json).map_err(abort)?;
                    if record.info.revoked_at.is_some() {
                        return Ok(Revocation::AlreadyRevoked(record));
                    }
                    record.info.revoked_at = Some(at);
                    tokens.insert(id.as_str(), serde_json::to_vec(&record).map_err(abort)?)?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Revocation::Revoked(record))
                })
                .map_err(transaction_error)
                .inspect(|outcome| {
                    if let Revocation::Revoked(record) = outcome {
                        t.remember(record.clone());
                    }
                })
        })
        .await
    }

    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Rotation, MetaError> {
        let old_id = new
            .info
            .rotated_from
            .as_ref()
            .ok_or_else(|| MetaError::Corrupt("rotation without rotated_from".into()))?
            .as_str()
            .to_owned();
        let new_json = serde_json::to_vec(new)?;
        let (new_id, new_hash) = (new.info.id.clone(), new.secret_hash.clone());
        let new = new.clone();
        self.write("rotate_token", move |t| {
            let abort = |e: serde_json::Error| ConflictableTransactionError::Abort(MetaError::from(e));
            let outcome = (&t.tokens, &t.secrets, &t.audit, &t.audit_head)
                .transaction(|(tokens, secrets, audit_tree, head)| {
                    let Some(json) = tokens.get(old_id.as_str())? else { return Ok((Rotation::Unknown, None)) };
                    let mut old: TokenRecord = serde_json::from_slice(&json).map_err(abort)?;
                    let now = OffsetDateTime::now_utc();
                    if old.info.revoked_at.is_some() {
                        return Ok((Rotation::Inactive("the token is revoked"), None));
                    }
                    if old.info.expires_at <= now {
                        return Ok((Rotation::Inactive("the token has expired"), None));
                    }
                    if old.info.rotated_to.is_some() {
                        return Ok((Rotation::Inactive("the token was already rotated; rotate its replacement"), None));
                    }
                    old.info.rotated_to = Some(new_id.clone());
                    old.info.expires_at = old.info.expires_at.min(old_expires_at);
                    tokens.insert(old_id.as_str(), serde_json::to_vec(&old).map_err(abort)?)?;
                    tokens.insert(new_id.as_str(), new_json.as_slice())?;
                    secrets.insert(new_hash.as_bytes(), new_id.as_str())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok((Rotation::Rotated, Some(old)))
                })
                .map_err(transaction_error)?;
            if let (Rotation::Rotated, Some(old)) = &outcome {
                t.remember(old.clone());
                t.remember(new);
            }
            Ok(outcome.0)
        })
        .await
    }
}
