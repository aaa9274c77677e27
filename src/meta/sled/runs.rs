//! Runs on sled: `runs` holds `r` id -> RunInfo (JSON), `k` kind \0 id -> ()
//! (a kind's runs in order) and `a` kind -> the id of the kind's active run. A kind's lock is in memory (only this
//! process opens the store): a run recorded as running whose lock is free
//! belonged to a task or a process that is gone, and is recorded as
//! abandoned when the next starts, or at open (`abandon_at_open`).

use amber_core::wire::{RunInfo, RunKind, RunState};
use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{SledMeta, transaction_error};
use crate::meta::{MetaError, RUNS_KEPT, RunStore, RunnerLock, abandoned};

fn run_key(id: &str) -> Vec<u8> {
    [b"r".as_slice(), id.as_bytes()].concat()
}

fn active_key(kind: RunKind) -> Vec<u8> {
    [b"a".as_slice(), kind.as_str().as_bytes()].concat()
}

fn kind_key(kind: RunKind, id: &str) -> Vec<u8> {
    [b"k".as_slice(), kind.as_str().as_bytes(), b"\0", id.as_bytes()].concat()
}

fn abort(err: serde_json::Error) -> ConflictableTransactionError<MetaError> {
    ConflictableTransactionError::Abort(MetaError::from(err))
}

fn get_in(tree: &TransactionalTree, id: &[u8]) -> Result<Option<RunInfo>, ConflictableTransactionError<MetaError>> {
    match tree.get([b"r".as_slice(), id].concat())? {
        Some(json) => Ok(Some(serde_json::from_slice(&json).map_err(abort)?)),
        None => Ok(None),
    }
}

/// Records every run still active as abandoned (at open: its process is gone).
pub(super) fn abandon_at_open(runs: &Tree) -> Result<(), MetaError> {
    for item in runs.scan_prefix(b"a") {
        let (key, id) = item?;
        let run_key = [b"r".as_slice(), &id].concat();
        if let Some(json) = runs.get(&run_key)? {
            let run: RunInfo = serde_json::from_slice(&json)?;
            if run.state == RunState::Running {
                runs.insert(run_key, serde_json::to_vec(&abandoned(run))?)?;
            }
        }
        runs.remove(key)?;
    }
    Ok(())
}

/// The place of a kind's lock in `Trees::run_locks`.
pub(super) fn lock_index(kind: RunKind) -> usize {
    RunKind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL")
}

impl SledMeta {
    async fn active_run(&self, kind: RunKind) -> Result<Option<RunInfo>, MetaError> {
        self.read("active_run", move |t| {
            let Some(id) = t.runs.get(active_key(kind))? else { return Ok(None) };
            match t.runs.get([b"r".as_slice(), &id].concat())? {
                Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
                None => Ok(None),
            }
        })
        .await
    }
}

impl RunStore for SledMeta {
    async fn start_run(&self, run: &RunInfo) -> Result<Result<RunnerLock, Option<RunInfo>>, MetaError> {
        let lock = self.trees.run_locks[lock_index(run.kind)].clone().try_lock_owned().ok();
        let Some(lock) = lock else {
            return Ok(Err(self.active_run(run.kind).await?));
        };
        let run = run.clone();
        self.write("start_run", move |t| {
            let json = serde_json::to_vec(&run)?;
            t.runs
                .transaction(|tree| {
                    // Recorded as running, its lock free: its task is gone.
                    if let Some(id) = tree.get(active_key(run.kind))?
                        && let Some(active) = get_in(tree, &id)?
                        && active.state == RunState::Running
                    {
                        let json = serde_json::to_vec(&abandoned(active)).map_err(abort)?;
                        tree.insert([b"r".as_slice(), &id].concat(), json)?;
                    }
                    tree.insert(active_key(run.kind), run.id.as_bytes())?;
                    tree.insert(run_key(&run.id), json.as_slice())?;
                    tree.insert(kind_key(run.kind, &run.id), &[][..])?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            // The oldest finished runs beyond what is kept (ids sort by time).
            // The oldest finished runs of the kind beyond what is kept (ids sort by time).
            let of_kind = kind_key(run.kind, "");
            let mut excess = t.runs.scan_prefix(&of_kind).count().saturating_sub(RUNS_KEPT);
            for item in t.runs.scan_prefix(&of_kind) {
                if excess == 0 {
                    break;
                }
                let (key, _) = item?;
                let id = &key[of_kind.len()..];
                let old = [b"r".as_slice(), id].concat();
                let finished = match t.runs.get(&old)? {
                    Some(json) => serde_json::from_slice::<RunInfo>(&json)?.state != RunState::Running,
                    None => true,
                };
                if finished {
                    t.runs.remove(&old)?;
                    t.runs.remove(key)?;
                    excess -= 1;
                }
            }
            Ok(())
        })
        .await?;
        Ok(Ok(RunnerLock(Box::new(lock))))
    }

    async fn save_run(&self, run: &RunInfo) -> Result<bool, MetaError> {
        let run = run.clone();
        self.write("save_run", move |t| {
            let json = serde_json::to_vec(&run)?;
            t.runs
                .transaction(|tree| {
                    let active = tree.get(active_key(run.kind))?;
                    if active.as_deref() != Some(run.id.as_bytes()) {
                        return Ok(false);
                    }
                    if run.state != RunState::Running {
                        tree.remove(active_key(run.kind))?;
                    }
                    tree.insert(run_key(&run.id), json.as_slice())?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunInfo>, MetaError> {
        let key = run_key(id);
        self.read("run", move |t| match t.runs.get(key)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }

    async fn runs(&self, kind: Option<RunKind>, limit: usize) -> Result<Vec<RunInfo>, MetaError> {
        self.read("runs", move |t| {
            let mut found = Vec::new();
            for item in t.runs.scan_prefix(b"r").rev() {
                let (_, json) = item?;
                let run: RunInfo = serde_json::from_slice(&json)?;
                if kind.is_none_or(|k| k == run.kind) {
                    found.push(run);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }
}
