//! Integration tests: each boots the real `amberd` on 127.0.0.1:0 and talks HTTP.

mod auth;
mod backends;
mod blobs;
mod cli;
mod conformance;
mod durability;
mod fake_issuer;
mod hardening;
mod harness;
mod log;
mod manifests;
mod oidc;
mod openapi;
mod proxy;
mod reclaim;
mod reclaim_store;
mod replicas;
mod repos;
mod retention;
mod retention_store;
mod schemathesis;
mod scrub;
mod tokens;
mod trust;
mod ui;
mod uploads;
