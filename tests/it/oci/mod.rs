//! The OCI front door (`design/oci.md`) against a real `amberd`: the OCI
//! conformance suite on both backends (`conformance`), the protocol's own
//! rules where Amber differs from a plain registry (`protocol`), and
//! unmodified OCI clients (`clients`). The Go tools come from
//! `../shared/tools/go-tools.sh` (pinned), found through `AMBER_GO_TOOLS_BIN`
//! or its default directory; a missing tool fails the test.

mod authz;
mod clients;
mod conformance;
mod differential;
mod limits;
mod protocol;
mod replicas;

use std::path::PathBuf;

/// A pinned Go tool built by `go-tools.sh`.
pub fn go_tool(name: &str) -> PathBuf {
    let dir = std::env::var("AMBER_GO_TOOLS_BIN").unwrap_or_else(|_| "/var/cache/amber-go-tools/bin".into());
    let path = PathBuf::from(dir).join(name);
    assert!(path.exists(), "{} is missing: run ../shared/tools/go-tools.sh {name}", path.display());
    path
}
