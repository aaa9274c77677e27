//! Amber's domain types, shared by the server and the `amber` client: digests,
//! validated names, the token secret format, manifests with DSSE signing and
//! offline verification, and the HTTP API's wire types. No I/O lives here.

pub mod attestation;
pub mod audit;
pub mod digest;
pub mod dsse;
pub mod log;
pub mod manifest;
pub mod name;
pub mod oidc;
pub mod parts;
pub mod token;
pub mod tombstone;
pub mod wire;
pub mod witness;

pub use digest::Digest;
pub use name::{RepoName, RepoPattern, Tag};
pub use token::{Action, Grant, TokenId, TokenSecret};
