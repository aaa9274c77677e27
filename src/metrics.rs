//! `GET /metrics`: counters in the Prometheus text format. Kept in memory per
//! replica; a scraper sums replicas. Labels are route templates, never
//! concrete paths, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What happened to connections, for `/metrics`.
#[derive(Default)]
pub struct ConnectionCounters {
    /// Open now.
    pub open: AtomicU64,
    /// Refused at accept: every open connection was busy.
    pub refused: AtomicU64,
    /// Closed while idle to make room for a new one.
    pub shed: AtomicU64,
    /// Closed by the header or the idle timeout.
    pub timed_out: AtomicU64,
}

/// Method, route template, status.
type Series = (String, String, u16);

#[derive(Default)]
pub struct Metrics {
    /// Requests and total seconds per series.
    requests: Mutex<BTreeMap<Series, (u64, f64)>>,
    pub blobs_stored: AtomicU64,
    pub blob_bytes_stored: AtomicU64,
    pub connections: Arc<ConnectionCounters>,
    /// Uploads refused with `429` (too many in flight, or no upload memory).
    pub uploads_throttled: AtomicU64,
    /// Resumable uploads that became blobs.
    pub uploads_completed: AtomicU64,
    /// Uploads refused with `507` (free space below the reserve).
    pub uploads_refused_no_space: AtomicU64,
    /// Tags expired, by policy or by an operator.
    pub retention_expired: AtomicU64,
    /// Blob links removed by retention.
    pub links_removed: AtomicU64,
    /// Bytes deleted by reclaim runs.
    pub reclaimed_bytes: AtomicU64,
    /// Bytes waiting for reclaim, as the last run found them.
    pub reclaim_pending_bytes: AtomicU64,
    /// Bytes the scrub read back and verified.
    pub scrub_verified_bytes: AtomicU64,
    /// ID token exchanges, by outcome (`minted` or the error code).
    oidc_exchanges: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one request of `series`, which took `seconds`.
    pub fn count_request(&self, method: String, route: String, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let entry = requests.entry((method, route, status)).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    pub fn oidc_exchange(&self, outcome: &'static str) {
        *self.oidc_exchanges.lock().unwrap_or_else(|e| e.into_inner()).entry(outcome).or_default() += 1;
    }

    pub fn render(&self, corrupt: usize) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let name = "amber_http_requests_total";
        counter_header(&mut out, name, "HTTP requests answered, by route and status.");
        for (series, (count, _)) in requests.iter() {
            let _ = writeln!(out, "{name}{} {count}", labels(series));
        }
        let name = "amber_http_request_seconds_total";
        counter_header(&mut out, name, "Time spent answering, by route and status.");
        for (series, (_, seconds)) in requests.iter() {
            let _ = writeln!(out, "{name}{} {seconds:.6}", labels(series));
        }
        for (name, help, value) in [
            ("amber_blobs_stored_total", "Blobs made visible in a repository.", &self.blobs_stored),
            (
                "amber_blob_bytes_stored_total",
                "Bytes of the blobs made visible in a repository.",
                &self.blob_bytes_stored,
            ),
            (
                "amber_connections_refused_total",
                "Connections refused: every open one was busy.",
                &self.connections.refused,
            ),
            ("amber_connections_shed_total", "Idle connections closed to make room.", &self.connections.shed),
            (
                "amber_connections_timed_out_total",
                "Connections closed by the header or idle timeout.",
                &self.connections.timed_out,
            ),
            ("amber_uploads_throttled_total", "Uploads refused with 429.", &self.uploads_throttled),
            (
                "amber_resumable_uploads_completed_total",
                "Resumable uploads that became blobs.",
                &self.uploads_completed,
            ),
            ("amber_uploads_no_space_total", "Uploads refused with 507.", &self.uploads_refused_no_space),
            (
                "amber_retention_expired_total",
                "Tags expired by this replica, by policy or by an operator.",
                &self.retention_expired,
            ),
            ("amber_links_removed_total", "Blob links removed by this replica's retention runs.", &self.links_removed),
            (
                "amber_reclaimed_bytes_total",
                "Stored bytes deleted by this replica's reclaim runs.",
                &self.reclaimed_bytes,
            ),
            (
                "amber_scrub_verified_bytes_total",
                "Stored bytes this replica's scrub read back and verified.",
                &self.scrub_verified_bytes,
            ),
        ] {
            counter_header(&mut out, name, help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let name = "amber_oidc_exchanges_total";
        counter_header(&mut out, name, "ID token exchanges, by outcome: minted, or the error code.");
        for (outcome, count) in self.oidc_exchanges.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
        }
        let name = "amber_blobs_corrupt";
        let _ = writeln!(
            out,
            "# HELP {name} Stored blobs quarantined: they do not hash to their digest, or are gone.\n# TYPE {name} gauge"
        );
        let _ = writeln!(out, "{name} {corrupt}");
        let name = "amber_reclaim_pending_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Bytes no repository links, waiting for the grace (as of the last reclaim run here).\n# TYPE {name} gauge"
        );
        let _ = writeln!(out, "{name} {}", self.reclaim_pending_bytes.load(Ordering::Relaxed));
        let name = "amber_connections_open";
        let _ = writeln!(out, "# HELP {name} Connections open now.\n# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.connections.open.load(Ordering::Relaxed));
        out
    }
}

fn counter_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

fn labels((method, route, status): &Series) -> String {
    format!("{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}")
}
