//! Asking the log's witnesses to cosign its checkpoints (C2SP tlog-witness
//! `add-checkpoint`), off the request path: each witness is followed on its
//! own (polled together), so one that is slow or down delays no other and
//! no push; on several replicas, only the one holding the witness lock
//! submits. A witness that holds another size (`409`) is re-proved from it;
//! one that says the
//! history is inconsistent (`422`) raises an alarm (logged, counted, and an
//! audit entry) and is asked nothing more
//! until the server restarts (an operator looks first); an outage or a bad
//! answer is retried with backoff. Once a quorum has cosigned one
//! checkpoint, it is stored with their cosignature lines
//! (`LogStore::put_cosigned_checkpoint`), which `GET /v1/log/checkpoint`
//! and receipts serve.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use amber_core::log::ProofRequest;
use amber_core::witness::{Witness, split_note};

use super::Log;
use crate::config::witnesses::WitnessConfig;
use crate::meta::{LogStore, Meta};

/// Longest wait for one witness's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failed submission: doubled each time up to the most.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MOST: Duration = Duration::from_secs(300);
/// How often a replica that does not submit asks for the witness lock.
const LOCK_RETRY: Duration = Duration::from_secs(5);
/// Re-proofs after `409`s in a row before backing off.
const CONFLICTS: usize = 3;
/// Bytes of a witness's answer read at most.
const ANSWER_LIMIT: usize = 64 << 10;

/// What is known of one witness.
#[derive(Clone, Debug, Default)]
pub struct Standing {
    pub name: String,
    /// The size of the newest checkpoint it cosigned for this log, as learned.
    pub holds: Option<u64>,
    /// Its cosignature line of the checkpoint of that size.
    pub cosignature: Option<(u64, String)>,
    /// Why it is no longer asked (it saw an inconsistent history).
    pub alarm: Option<String>,
    /// The last failure, while failing.
    pub failing: Option<String>,
}

/// The witnesses and what each has cosigned.
pub struct Witnesses {
    config: WitnessConfig,
    http: reqwest::Client,
    standing: Mutex<Vec<Standing>>,
    /// True on the replica that holds the witness lock.
    submitting: std::sync::atomic::AtomicBool,
}

enum Outcome {
    Cosigned(String),
    /// `409`: it holds this size.
    Holds(u64),
    Alarm(String),
    Failed(String),
}

impl Witnesses {
    pub fn new(config: WitnessConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let standing =
            config.witnesses.iter().map(|w| Standing { name: w.name.clone(), ..Standing::default() }).collect();
        Ok(Self { config, http, standing: Mutex::new(standing), submitting: Default::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.config.witnesses.is_empty()
    }

    pub fn quorum(&self) -> usize {
        self.config.quorum
    }

    pub fn list(&self) -> &[Witness] {
        &self.config.witnesses
    }

    /// What is known of each witness now.
    pub fn standing(&self) -> Vec<Standing> {
        self.standing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Standing)) -> Standing {
        let mut standing = self.standing.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut standing[index]);
        standing[index].clone()
    }

    /// Asks each witness to cosign the newest checkpoint, each in a task of
    /// its own, until the server stops.
    /// On several replicas (PostgreSQL), one submits at a time: the one
    /// holding the witness lock; the others wait for it (a replica that
    /// stops or crashes lets the next in) and serve what it stored.
    pub async fn run(&self, log: &Log, meta: &Meta, signer: &std::sync::Arc<crate::signing::Signer>) {
        let _lock = loop {
            match meta.witness_lock().await {
                Ok(Some(lock)) => break lock,
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "could not ask for the witness lock"),
            }
            tokio::time::sleep(LOCK_RETRY).await;
        };
        self.submitting.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(witnesses = self.config.witnesses.len(), "submitting checkpoints to the witnesses");
        // Polled together: one waiting on its witness holds up no other.
        let follow = (0..self.config.witnesses.len()).map(|index| self.follow(index, log, meta, signer));
        futures_util::future::join_all(follow).await;
    }

    /// Whether this replica is the one submitting.
    pub fn submitting(&self) -> bool {
        self.submitting.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn follow(&self, index: usize, log: &Log, meta: &Meta, signer: &std::sync::Arc<crate::signing::Signer>) {
        let witness = self.config.witnesses[index].clone();
        let mut backoff = BACKOFF_FIRST;
        let mut conflicts = 0;
        loop {
            let standing = self.standing()[index].clone();
            if let Some(alarm) = &standing.alarm {
                tracing::error!(witness = %witness.name, %alarm, "not asking a witness that saw an inconsistent history");
                return;
            }
            let Ok(Some((size, note))) = meta.log_checkpoint().await else {
                tokio::time::sleep(log.interval).await;
                continue;
            };
            if standing.cosignature.as_ref().is_some_and(|(cosigned, _)| *cosigned >= size) {
                tokio::time::sleep(log.interval).await;
                continue;
            }
            let old = standing.holds.filter(|held| *held <= size).unwrap_or(0);
            match self.submit(&witness, log, meta, old, size, &note).await {
                Outcome::Cosigned(line) => {
                    backoff = BACKOFF_FIRST;
                    conflicts = 0;
                    let was_failing = standing.failing.is_some();
                    self.update(index, |s| {
                        s.holds = Some(size);
                        s.cosignature = Some((size, line));
                        s.failing = None;
                    });
                    if was_failing {
                        tracing::info!(witness = %witness.name, size, "a witness cosigns again");
                    }
                    self.store_if_quorum(meta, size, &note).await;
                }
                Outcome::Holds(held) if held > size => {
                    let alarm = format!("it holds a checkpoint of {held} entries, larger than this log's {size}");
                    tracing::error!(witness = %witness.name, %alarm, "ALARM: a witness has seen a larger tree of this log");
                    self.alarm(index, &witness, alarm, meta, signer).await;
                }
                Outcome::Holds(held) => {
                    self.update(index, |s| s.holds = Some(held));
                    conflicts += 1;
                    if conflicts >= CONFLICTS {
                        conflicts = 0;
                        self.fail(index, &witness, format!("it answered 409 {CONFLICTS} times in a row"), &mut backoff)
                            .await;
                    }
                }
                Outcome::Alarm(alarm) => {
                    tracing::error!(witness = %witness.name, %alarm, "ALARM: a witness refused this log's history as inconsistent");
                    self.alarm(index, &witness, alarm, meta, signer).await;
                }
                Outcome::Failed(why) => self.fail(index, &witness, why, &mut backoff).await,
            }
        }
    }

    /// Raises an alarm: kept (the witness is asked nothing more), counted,
    /// and recorded in the audit log (and so the transparency log).
    async fn alarm(
        &self,
        index: usize,
        witness: &Witness,
        reason: String,
        meta: &Meta,
        signer: &std::sync::Arc<crate::signing::Signer>,
    ) {
        self.update(index, |s| s.alarm = Some(reason.clone()));
        let actor = amber_core::audit::Actor { token_id: None, token_name: Some("amberd (witness submitter)".into()) };
        let event = amber_core::audit::Event::WitnessAlarm { witness: witness.name.clone(), reason };
        if let Err(err) = crate::audit::record(meta, signer, actor, event).await {
            tracing::error!(error = %err, "could not record a witness alarm in the audit log");
        }
    }

    async fn fail(&self, index: usize, witness: &Witness, why: String, backoff: &mut Duration) {
        let before = self.update(index, |s| s.failing = Some(why.clone()));
        if before.failing.as_deref() == Some(why.as_str()) {
            tracing::debug!(witness = %witness.name, %why, "a witness is still failing");
        } else {
            tracing::warn!(witness = %witness.name, %why, retry_in = ?backoff, "a witness did not cosign; retrying");
        }
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(BACKOFF_MOST);
    }

    async fn submit(&self, witness: &Witness, log: &Log, meta: &Meta, old: u64, size: u64, note: &str) -> Outcome {
        let mut body = format!("old {old}\n");
        if old > 0 && old < size {
            match log.proof(meta, ProofRequest::Consistency { old, size }).await {
                Ok(proof) => {
                    for hash in proof {
                        body.push_str(&amber_core::log::hash_b64(&hash));
                        body.push('\n');
                    }
                }
                Err(err) => return Outcome::Failed(format!("the consistency proof from {old}: {err}")),
            }
        }
        body.push('\n');
        body.push_str(note);
        let url = format!("{}/add-checkpoint", witness.url.as_deref().unwrap_or_default());
        let response = match self.http.post(&url).body(body).send().await {
            Ok(response) => response,
            Err(err) => return Outcome::Failed(format!("POST {url}: {err}")),
        };
        let status = response.status();
        let text = match read_limited(response).await {
            Ok(text) => text,
            Err(why) => return Outcome::Failed(why),
        };
        match status.as_u16() {
            200 => {
                let Some((checkpoint_body, _)) = split_note(note) else {
                    return Outcome::Failed("the log's checkpoint is not a signed note".into());
                };
                match text.lines().find(|line| witness.verify_line(checkpoint_body, line).is_some()) {
                    Some(line) => Outcome::Cosigned(line.to_owned()),
                    None => Outcome::Failed("200 without a valid cosignature by its key".into()),
                }
            }
            409 => match text.trim().parse::<u64>() {
                Ok(held) => Outcome::Holds(held),
                Err(_) => Outcome::Failed(format!("409 without a size: {:?}", crate::error::bounded(&text))),
            },
            422 => Outcome::Alarm(format!("422: {}", crate::error::bounded(text.trim()))),
            other => Outcome::Failed(format!("{other}: {}", crate::error::bounded(text.trim()))),
        }
    }

    /// Stores the checkpoint of `size` with the cosignatures of every
    /// witness that cosigned it, once they are a quorum.
    async fn store_if_quorum(&self, meta: &Meta, size: u64, note: &str) {
        let lines: Vec<String> = self
            .standing()
            .into_iter()
            .filter_map(|s| s.cosignature.filter(|(cosigned, _)| *cosigned == size).map(|(_, line)| line))
            .collect();
        if lines.len() < self.config.quorum {
            return;
        }
        let mut cosigned = note.to_owned();
        if !cosigned.ends_with('\n') {
            cosigned.push('\n');
        }
        for line in &lines {
            cosigned.push_str(line);
            cosigned.push('\n');
        }
        match meta.put_cosigned_checkpoint(size, &cosigned).await {
            Ok(true) => tracing::debug!(size, witnesses = lines.len(), "a checkpoint is cosigned by a quorum"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "could not keep a cosigned checkpoint"),
        }
    }
}

impl Witnesses {
    /// Each witness's state as Prometheus gauges: the size it cosigned, how
    /// many entries it is behind `newest`, whether it is failing or alarmed.
    pub fn render_metrics(&self, newest: u64) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // Another replica submits: what it knows is not here.
        if self.is_empty() || !self.submitting() {
            return out;
        }
        let gauges = [
            ("amber_witness_cosigned_size", "The size of the newest checkpoint the witness cosigned."),
            ("amber_witness_behind_entries", "Entries of the newest checkpoint the witness has not cosigned."),
            ("amber_witness_failing", "1 while submissions to the witness fail."),
            ("amber_witness_alarm", "1 once the witness refused the log's history as inconsistent."),
        ];
        for (name, help) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in self.standing() {
                let cosigned = s.cosignature.as_ref().map_or(0, |(size, _)| *size);
                let value = match name {
                    "amber_witness_cosigned_size" => cosigned,
                    "amber_witness_behind_entries" => newest.saturating_sub(cosigned),
                    "amber_witness_failing" => u64::from(s.failing.is_some()),
                    _ => u64::from(s.alarm.is_some()),
                };
                let _ = writeln!(out, "{name}{{witness=\"{}\"}} {value}", s.name.replace(['"', '\\', '\n'], "_"));
            }
        }
        out
    }

    /// A line for each witness behind `newest`, saying why (for `/readyz`).
    pub fn lagging(&self, newest: u64) -> Vec<String> {
        if !self.submitting() {
            return Vec::new();
        }
        self.standing()
            .into_iter()
            .filter(|s| s.cosignature.as_ref().is_none_or(|(size, _)| *size < newest))
            .map(|s| {
                let cosigned = s.cosignature.as_ref().map_or(0, |(size, _)| *size);
                let why = s.alarm.or(s.failing).unwrap_or_else(|| "not answered yet".into());
                format!("witness {} behind: cosigned {cosigned} of {newest} entries ({why})", s.name)
            })
            .collect()
    }
}

/// A witness's answer, at most [`ANSWER_LIMIT`] bytes of UTF-8.
async fn read_limited(mut response: reqwest::Response) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the answer: {e}"))? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > ANSWER_LIMIT {
            return Err(format!("an answer of more than {ANSWER_LIMIT} bytes"));
        }
    }
    String::from_utf8(bytes).map_err(|_| "an answer that is not UTF-8".into())
}
