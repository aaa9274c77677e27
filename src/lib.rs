//! amberd: the Amber server. See ARCHITECTURE.md for the map.
//!
//! The floors, bottom up (a module imports only from its floor or below):
//! ground (`config`, `error`, `json`, `space`, `failpoint`, `admission`);
//! stores (`blobs`, `meta`); the parts `AppState` holds (`signing`, `audit`,
//! `log`, `metrics`, `quarantine`, `auth`, `oidc`, `uploads`); `state`; the
//! services that take it (`push`, `lifecycle`); the doors (`http`, `oci`,
//! `ui`, `server`).

pub mod admission;
pub mod attest;
pub mod audit;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod json;
pub mod lifecycle;
pub mod log;
pub mod meta;
pub mod metrics;
pub mod oci;
pub mod oidc;
pub mod progress;
pub mod push;
pub mod quarantine;
pub mod runs;
pub mod server;
pub mod signing;
pub mod space;
pub mod state;
pub mod ui;
pub mod uploads;
