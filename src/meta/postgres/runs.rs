//! Runs on PostgreSQL (`runs`, 0012): the unique index `runs_one_active`
//! lets one running run per kind exist, whichever replica inserts it.

use amber_core::wire::{RunInfo, RunKind, RunState};

use super::PostgresMeta;
use crate::meta::{MetaError, RUNS_KEPT, RunStore, RunnerLock, abandoned};

fn state_text(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Done => "done",
        RunState::Failed => "failed",
    }
}

/// The advisory lock of a kind's runs: (7352, this).
fn lock_number(kind: RunKind) -> i32 {
    RunKind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL") as i32
}

fn parse(json: &str) -> Result<RunInfo, MetaError> {
    Ok(serde_json::from_str(json)?)
}

impl RunStore for PostgresMeta {
    async fn start_run(&self, run: &RunInfo) -> Result<Result<RunnerLock, Option<RunInfo>>, MetaError> {
        // A session lock per kind on a connection of its own, out of the
        // pool: held while the run goes; a crash closes the connection,
        // which releases it.
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(7352, $1)")
            .bind(lock_number(run.kind))
            .fetch_one(&mut conn)
            .await?;
        let active: Option<(String,)> = sqlx::query_as("SELECT record FROM runs WHERE kind = $1 AND state = 'running'")
            .bind(run.kind.as_str())
            .fetch_optional(&mut conn)
            .await?;
        if !locked {
            return Ok(Err(active.map(|(json,)| parse(&json)).transpose()?));
        }
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        if let Some((json,)) = active {
            let gone = abandoned(parse(&json)?);
            sqlx::query("UPDATE runs SET state = 'failed', record = $2 WHERE id = $1")
                .bind(&gone.id)
                .bind(serde_json::to_string(&gone)?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO runs (id, kind, state, updated_at, record) VALUES ($1, $2, 'running', $3, $4)")
            .bind(&run.id)
            .bind(run.kind.as_str())
            .bind(run.updated_at)
            .bind(serde_json::to_string(run)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE kind = $1 AND state <> 'running' ORDER BY id DESC \
             OFFSET $2)",
        )
        .bind(run.kind.as_str())
        .bind(RUNS_KEPT as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(RunnerLock(Box::new(std::sync::Mutex::new(conn)))))
    }

    async fn save_run(&self, run: &RunInfo) -> Result<bool, MetaError> {
        let saved =
            sqlx::query("UPDATE runs SET state = $2, updated_at = $3, record = $4 WHERE id = $1 AND state = 'running'")
                .bind(&run.id)
                .bind(state_text(run.state))
                .bind(run.updated_at)
                .bind(serde_json::to_string(run)?)
                .execute(&self.pool)
                .await?;
        Ok(saved.rows_affected() == 1)
    }

    async fn run(&self, id: &str) -> Result<Option<RunInfo>, MetaError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT record FROM runs WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.map(|(json,)| parse(&json)).transpose()
    }

    async fn runs(&self, kind: Option<RunKind>, limit: usize) -> Result<Vec<RunInfo>, MetaError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT record FROM runs WHERE $1::text IS NULL OR kind = $1 ORDER BY id DESC LIMIT $2")
                .bind(kind.map(RunKind::as_str))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(json,)| parse(&json)).collect()
    }
}
