//! Publishers and the exchange: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::oidc::{GenericTrust, Publisher};
use amber_server::meta::{Exchange, Meta, PublisherStore, Replay, TokenStore};

use super::{audit_of, event, now, signer, token};

/// Publishers, and the exchange that mints a token for one of them once per
/// ID token, never for a publisher deleted.
async fn publishers(meta: Arc<Meta>) {
    let s = signer();
    let publisher = Publisher {
        id: amber_core::oidc::new_publisher_id(&mut rand::rngs::OsRng),
        name: "ci".into(),
        issuer: "generic".into(),
        github: None,
        gitlab: None,
        generic: Some(GenericTrust { claims: [("sub".to_owned(), "x".to_owned())].into() }),
        grants: vec![],
        token_lifetime: 900,
        created_at: now(),
    };
    meta.insert_publisher(&publisher, audit_of(&s, event())).await.unwrap();
    assert_eq!(meta.publishers().await.unwrap(), vec![publisher.clone()]);
    let replay =
        Replay { issuer: "https://issuer.example".into(), jti: "j1".into(), until: now() + time::Duration::hours(1) };
    let minted = token(51, "hash-51");
    assert_eq!(
        meta.exchange_token(&minted, &publisher.id, &replay, audit_of(&s, event())).await.unwrap(),
        Exchange::Minted
    );
    assert_eq!(meta.token(&minted.info.id).await.unwrap().unwrap().info.id, minted.info.id);
    let again = token(52, "hash-52");
    assert_eq!(
        meta.exchange_token(&again, &publisher.id, &replay, audit_of(&s, event())).await.unwrap(),
        Exchange::Replayed
    );
    assert!(meta.token(&again.info.id).await.unwrap().is_none(), "a replay mints nothing");
    assert!(meta.delete_publisher(&publisher.id, audit_of(&s, event())).await.unwrap());
    assert!(!meta.delete_publisher(&publisher.id, audit_of(&s, event())).await.unwrap());
    assert!(meta.publishers().await.unwrap().is_empty());
    let other = Replay { jti: "j2".into(), ..replay };
    let late = token(53, "hash-53");
    assert_eq!(
        meta.exchange_token(&late, &publisher.id, &other, audit_of(&s, event())).await.unwrap(),
        Exchange::PublisherGone
    );
}

on_both_stores!(publishers);
