//! The `amber` client: a typed HTTP client for Amber's API ([`client`]) and the
//! workflows the command line runs on it: push a tree, pull and verify one,
//! verify offline, verify the audit log.

pub mod attest;
pub mod bench;
pub mod client;
pub mod error;
pub mod keys;
pub mod oidc;
pub mod pull;
pub mod push;
pub mod reference;
pub mod resumable;
pub mod transparency;
pub mod tree;

pub use client::Client;
pub use error::CliError;
