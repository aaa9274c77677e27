//! Resumable, parallel uploads (issue 18; being built): tus 1.0.0 under
//! `/v1/repos/{owner}/{name}/uploads`.
//!
//! So far: the wire format (`tus`). Decided for what follows: an upload is
//! bound to the token that created it (any other gets `404`); its offset is
//! recorded only after the bytes below it are durable; the parts of a
//! parallel upload that carry a chaining-value plan (`amber_core::parts`) name
//! the blob's `digest`, `part_size`, every part's value (`cvs`) and their own
//! index (`part`) in their metadata, since a part's BLAKE3 value depends on
//! where it lies in the blob; the plan is checked when each part is created
//! (before any data) and each part when its last byte arrives. Uploads from
//! other tus clients are hashed whole at completion.

pub mod tus;
