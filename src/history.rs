//! How a run is recorded: `dex_collector.runs` (one row per run) and
//! `dex_collector.run_results` (one row per company per run), written through SPI.
//! Results are inserted in batches from one JSON array, not one statement per company.

use std::time::Duration;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use dex_collector_core::endpoint::RunIdentity;
use dex_collector_core::summary::{
    CompanyResult, ResultStatus, RunStatus, RunSummary, ALREADY_RUNNING, SKIP_NO_CREDENTIALS,
};
use dex_collector_core::target::{LastCalls, Target};

// The statuses as the statements below write them (`'running'`, ...), from the typed enums.
const QUEUED: &str = RunStatus::Queued.as_str();
const RUNNING: &str = RunStatus::Running.as_str();
const RUN_SKIPPED: &str = RunStatus::Skipped.as_str();
const RUN_FAILED: &str = RunStatus::Failed.as_str();
const INTERRUPTED: &str = RunStatus::Interrupted.as_str();
const SUCCEEDED: &str = ResultStatus::Succeeded.as_str();
const FAILED: &str = ResultStatus::Failed.as_str();
const SKIPPED: &str = ResultStatus::Skipped.as_str();

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A direct SQL call; recorded as `pg_cron` when pg_cron's connection made it.
    Manual,
    /// The background worker's `dex_collector.interval`.
    Worker,
    /// `dex_collect_all_async()`, run by the worker.
    Async,
}

impl Trigger {
    const fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Worker => "worker",
            Trigger::Async => "async",
        }
    }
}

/// The `trigger` column's value: a manual call made by pg_cron's connection is `pg_cron`.
const TRIGGER_SQL: &str =
    "CASE WHEN $1 = 'manual' AND current_setting('application_name') = 'pg_cron'
                               THEN 'pg_cron' ELSE $1 END";

/// The history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("dex_collector could not record the run: {0}")]
    Spi(#[from] pgrx::spi::Error),
    /// An `INSERT ... RETURNING` that returned no row.
    #[error("dex_collector could not record the run: INSERT ... RETURNING gave no {0}")]
    NothingReturned(&'static str),
}

/// Runs a data-changing statement that returns one bigint (an id or a count).
fn update_returning(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
) -> Result<Option<i64>, HistoryError> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, None, args)?;
        // No row (an empty queue) is an answer, not an error.
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<i64>()
    })
    .map_err(HistoryError::Spi)
}

fn new_id(id: Option<i64>) -> Result<i64, HistoryError> {
    id.ok_or(HistoryError::NothingReturned("id"))
}

/// Runs a data-changing statement that returns a run's `id` and `run_key`.
fn run_returning(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
) -> Result<Option<RunIdentity>, HistoryError> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, None, args)?;
        if table.is_empty() {
            return Ok(None);
        }
        let (id, key) = table.first().get_two::<i64, String>()?;
        Ok(id.zip(key).map(|(id, key)| RunIdentity { id, key }))
    })
    .map_err(HistoryError::Spi)
}

/// Inserts the run's row as `running`.
pub fn start_run(trigger: Trigger, companies_total: usize) -> Result<RunIdentity, HistoryError> {
    let total = i32::try_from(companies_total).unwrap_or(i32::MAX);
    run_returning(
        &format!(
            "INSERT INTO dex_collector.runs (status, trigger, companies_total)
             VALUES ('{RUNNING}', {TRIGGER_SQL}, $2) RETURNING id, run_key::text"
        ),
        &[trigger.as_str().into(), total.into()],
    )?
    .ok_or(HistoryError::NothingReturned("run"))
}

/// When each target was last called and last collected, as run ids, in the targets' order: one
/// probe of `companies` per company.
pub fn last_calls(targets: &[Target]) -> Result<Vec<LastCalls>, HistoryError> {
    let ids: Vec<String> = targets.iter().map(|t| t.company_id.clone()).collect();
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT c.last_called_run_id, c.last_success_run_id
               FROM unnest($1::text[]::uuid[]) WITH ORDINALITY AS t(id, n)
               LEFT JOIN dex_collector.companies c ON c.company_id = t.id
              ORDER BY t.n",
            None,
            &[ids.into()],
        )?;
        rows.into_iter()
            .map(|row| {
                Ok(LastCalls {
                    called: row.get::<i64>(1)?,
                    succeeded: row.get::<i64>(2)?,
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(HistoryError::Spi)
}

/// When a company's failures become an episode worth a `failing` event.
#[derive(Debug, Clone, Copy)]
pub struct AlertPolicy {
    /// After this many failures in a row (skips neither count nor break the streak).
    pub after_failures: i32,
    /// Or this long after the first failure since the last success; `None`: failures alone.
    pub after: Option<Duration>,
}

/// Records results, in one statement: a `run_results` row each, each company's state in
/// `companies`, and an event (sent with NOTIFY at commit) for each change of state.
pub fn record_results(
    run_id: i64,
    results: &[CompanyResult],
    alerts: AlertPolicy,
) -> Result<(), HistoryError> {
    if results.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(results.iter().map(CompanyResult::history_row).collect());
    let alert_after_ms = alerts
        .after
        .map(|after| i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
    Spi::connect_mut(|client| {
        client.update(
            RECORD_RESULTS,
            None,
            &[
                run_id.into(),
                JsonB(rows).into(),
                alerts.after_failures.into(),
                alert_after_ms.into(),
                SKIP_NO_CREDENTIALS.into(),
            ],
        )?;
        Ok(())
    })
    .map_err(HistoryError::Spi)
}

/// $1 the run, $2 its results as a JSON array, $3 and $4 the [`AlertPolicy`] (failures, and
/// milliseconds or NULL), $5 the skip of a company without credentials. A company's new state
/// follows from its old one and the result: failures count up (skips leave them be) until a
/// success; an episode opens when they reach $3, or $4 has passed since the first of them, and
/// only a success closes it. A company is `skipped` for want of credentials only: one the run
/// did not reach (its deadline, a cancel, a refused key) keeps its state.
const RECORD_RESULTS: &str = "
WITH stored AS (
    INSERT INTO dex_collector.run_results
           (run_id, company_id, company_name, status, http_status, pages, attempts,
            records_collected, machines_updated, duration_ms, more_pending, error)
    SELECT $1, r.company_id, r.company_name, r.status, r.http_status, r.pages, r.attempts,
           r.records_collected, r.machines_updated, r.duration_ms, r.more_pending, r.error
      FROM jsonb_to_recordset($2) AS r(company_id uuid, company_name text, status text,
           http_status integer, pages integer, attempts integer, records_collected bigint,
           machines_updated bigint, duration_ms bigint, more_pending boolean, error text)
    RETURNING company_id, company_name, status, http_status, error, recorded_at
), counted AS (
    SELECT s.*, p.state AS was_state, p.state_since AS was_state_since,
           coalesce(p.alerted, false) AS was_alerted,
           CASE s.status WHEN 'succeeded' THEN 0
                         WHEN 'failed' THEN coalesce(p.consecutive_failures, 0) + 1
                         ELSE coalesce(p.consecutive_failures, 0) END AS failures,
           CASE s.status WHEN 'succeeded' THEN NULL
                         WHEN 'failed' THEN coalesce(p.failing_since, s.recorded_at)
                         ELSE p.failing_since END AS failing_since,
           CASE WHEN s.status = 'succeeded' THEN s.recorded_at ELSE p.last_success_at END AS last_success_at,
           CASE WHEN s.status = 'failed' THEN s.error ELSE p.last_error END AS last_error,
           CASE WHEN s.status <> 'skipped' THEN $1 ELSE p.last_called_run_id END AS last_called_run_id,
           CASE WHEN s.status = 'succeeded' THEN $1 ELSE p.last_success_run_id END AS last_success_run_id
      FROM stored s LEFT JOIN dex_collector.companies p ON p.company_id = s.company_id
), judged AS (
    SELECT c.*,
           (c.was_alerted AND c.status <> 'succeeded')
           OR (c.status = 'failed'
               AND (c.failures >= $3
                    OR coalesce(c.recorded_at - c.failing_since
                                    >= make_interval(secs => $4::bigint / 1000.0), false)))
               AS alerted
      FROM counted c
), stated AS (
    SELECT j.*,
           CASE WHEN j.status = 'skipped' AND j.error = $5 THEN 'skipped'
                -- Skipped for the run's sake (deadline, cancel, a refused key): unchanged.
                WHEN j.status = 'skipped' AND j.was_state IS NOT NULL THEN j.was_state
                WHEN j.alerted THEN 'failing'
                WHEN j.last_success_at IS NOT NULL THEN 'ok'
                ELSE 'never_collected' END AS state
      FROM judged j
), upserted AS (
    INSERT INTO dex_collector.companies AS c
           (company_id, company_name, state, state_since, last_attempt_at, last_status, last_run_id,
            last_http_status, last_error, last_success_at, consecutive_failures, failing_since,
            alerted, last_called_run_id, last_success_run_id)
    SELECT company_id, company_name, state,
           CASE WHEN state IS DISTINCT FROM was_state THEN recorded_at ELSE was_state_since END,
           recorded_at, status, $1, http_status, last_error, last_success_at, failures,
           failing_since, alerted, last_called_run_id, last_success_run_id
      FROM stated
        ON CONFLICT (company_id) DO UPDATE
       SET company_name = excluded.company_name, state = excluded.state,
           state_since = excluded.state_since, last_attempt_at = excluded.last_attempt_at,
           last_status = excluded.last_status, last_run_id = excluded.last_run_id,
           last_http_status = excluded.last_http_status, last_error = excluded.last_error,
           last_success_at = excluded.last_success_at,
           consecutive_failures = excluded.consecutive_failures,
           failing_since = excluded.failing_since, alerted = excluded.alerted,
           last_called_run_id = excluded.last_called_run_id,
           last_success_run_id = excluded.last_success_run_id
), changes AS (
    -- Skipped for want of credentials, or collectable again; an episode announced, or ended.
    SELECT s.*, k.kind, k.n
      FROM stated s,
           LATERAL (VALUES
               (1, CASE WHEN s.state = 'skipped' AND s.was_state IS DISTINCT FROM 'skipped' THEN 'skipped'
                        WHEN s.was_state = 'skipped' AND s.state <> 'skipped' THEN 'collectable' END),
               (2, CASE WHEN s.alerted AND NOT s.was_alerted THEN 'failing'
                        WHEN s.was_alerted AND NOT s.alerted THEN 'recovered' END)) AS k(n, kind)
     WHERE k.kind IS NOT NULL
), events AS (
    INSERT INTO dex_collector.events (kind, company_id, company_name, run_id, details)
    SELECT kind, company_id, left(company_name, 200), $1,
           jsonb_build_object(
               'state', state, 'consecutive_failures', failures, 'failing_since', failing_since,
               'last_success_at', last_success_at, 'http_status', http_status,
               -- Bounded, so that the event fits in a NOTIFY payload.
               'error', CASE WHEN status = 'succeeded' THEN NULL ELSE left(coalesce(error, last_error), 1000) END)
      FROM changes
     ORDER BY company_id, n
    RETURNING *
)
-- Sent when the transaction commits (or not at all).
SELECT pg_notify('dex_collector', dex_collector.event_payload(e)) FROM events e ORDER BY e.id";

/// Completes the run's row with its counts and final status.
pub fn finish_run(summary: &RunSummary, status: RunStatus) -> Result<(), HistoryError> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE dex_collector.runs
                SET finished_at = clock_timestamp(), status = $2,
                    companies_processed = $3, companies_succeeded = $4, companies_failed = $5,
                    companies_skipped = $6, records_collected = $7, machines_updated = $8,
                    duration_ms = $9, error = $10, companies_not_reached = $11
              WHERE id = $1",
            None,
            &[
                summary.run_id.into(),
                status.as_str().into(),
                count(summary.companies_processed()).into(),
                count(summary.companies_succeeded()).into(),
                count(summary.companies_failed()).into(),
                count(summary.companies_skipped()).into(),
                summary.total_records().into(),
                summary.total_machines().into(),
                summary.duration_ms().into(),
                summary.run_error.clone().into(),
                count(summary.companies_not_reached()).into(),
            ],
        )?;
        Ok(())
    })
    .map_err(HistoryError::Spi)
}

fn update(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Result<(), HistoryError> {
    Spi::connect_mut(|client| client.update(sql, None, args).map(|_| ())).map_err(HistoryError::Spi)
}

/// Records a run that did not start because `running` (if known) was in progress.
pub fn record_skipped_run(trigger: Trigger, running: Option<i64>) -> Result<i64, HistoryError> {
    let error = match running {
        Some(run_id) => format!("{ALREADY_RUNNING} (run {run_id})"),
        None => ALREADY_RUNNING.to_string(),
    };
    new_id(update_returning(
        &format!(
            "INSERT INTO dex_collector.runs (status, trigger, finished_at, duration_ms, error)
             VALUES ('{RUN_SKIPPED}', {TRIGGER_SQL}, clock_timestamp(), 0, $2) RETURNING id"
        ),
        &[trigger.as_str().into(), error.into()],
    )?)
}

/// Marks a queued run skipped because another run holds the lock.
pub fn skip_queued_run(run_id: i64, running: Option<i64>) -> Result<(), HistoryError> {
    let error = match running {
        Some(other) => format!("{ALREADY_RUNNING} (run {other})"),
        None => ALREADY_RUNNING.to_string(),
    };
    update(
        &format!(
            "UPDATE dex_collector.runs SET status = '{RUN_SKIPPED}', finished_at = clock_timestamp(), error = $2
              WHERE id = $1"
        ),
        &[run_id.into(), error.into()],
    )
}

/// Queues a run for the worker; returns its id.
pub fn queue_run() -> Result<i64, HistoryError> {
    new_id(update_returning(
        &format!(
            "INSERT INTO dex_collector.runs (status, trigger) VALUES ('{QUEUED}', $1) RETURNING id"
        ),
        &[Trigger::Async.as_str().into()],
    )?)
}

/// The oldest queued run, now marked `running` (its start time reset to now).
pub fn claim_queued_run() -> Result<Option<RunIdentity>, HistoryError> {
    run_returning(
        &format!(
            "UPDATE dex_collector.runs SET status = '{RUNNING}', started_at = clock_timestamp()
              WHERE id = (SELECT id FROM dex_collector.runs WHERE status = '{QUEUED}'
                           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING id, run_key::text"
        ),
        &[],
    )
}

/// Sets a started run's target count once the targets are known.
pub fn set_companies_total(run_id: i64, companies_total: usize) -> Result<(), HistoryError> {
    let total = i32::try_from(companies_total).unwrap_or(i32::MAX);
    update(
        "UPDATE dex_collector.runs SET companies_total = $2 WHERE id = $1",
        &[run_id.into(), total.into()],
    )
}

/// Ends a run that failed as a whole before or while collecting.
pub fn fail_run(run_id: i64, error: &str) -> Result<(), HistoryError> {
    update(
        &format!("UPDATE dex_collector.runs SET status = '{RUN_FAILED}', finished_at = clock_timestamp(),
                duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint, error = $2
          WHERE id = $1"),
        &[run_id.into(), error.into()],
    )
}

/// At worker start: runs left `running` by a crash or restart can never finish. Their counts
/// and duration are those of the results they recorded before they were cut short.
pub fn mark_interrupted_runs() -> Result<i64, HistoryError> {
    update_returning(
        &format!(
            "WITH cut AS (
           UPDATE dex_collector.runs r
              SET status = '{INTERRUPTED}', finished_at = clock_timestamp(),
                  error = coalesce(r.error, 'cut short by a server restart or crash'),
                  (companies_processed, companies_succeeded, companies_failed, companies_skipped,
                   records_collected, machines_updated, duration_ms) =
                  (SELECT count(*) FILTER (WHERE rr.status <> '{SKIPPED}'),
                          count(*) FILTER (WHERE rr.status = '{SUCCEEDED}'),
                          count(*) FILTER (WHERE rr.status = '{FAILED}'),
                          count(*) FILTER (WHERE rr.status = '{SKIPPED}'),
                          coalesce(sum(rr.records_collected), 0),
                          coalesce(sum(rr.machines_updated), 0),
                          (extract(epoch FROM coalesce(max(rr.recorded_at), r.started_at) - r.started_at)
                             * 1000)::bigint
                     FROM dex_collector.run_results rr WHERE rr.run_id = r.id)
            WHERE r.status = '{RUNNING}' RETURNING 1)
         SELECT count(*) FROM cut"
        ),
        &[],
    )
    .map(|count| count.unwrap_or(0))
}

/// Deletes up to `batch` runs (and their results) that started before `retention` ago, and up to
/// `batch` events from before then; returns how many rows in all. Called repeatedly, one small
/// transaction each, so no lock is held for long.
pub fn delete_old_history(retention_seconds: i64, batch: i64) -> Result<i64, HistoryError> {
    update_returning(
        &format!(
            "WITH old AS (
           DELETE FROM dex_collector.runs
            WHERE id IN (SELECT id FROM dex_collector.runs
                          WHERE started_at < clock_timestamp() - make_interval(secs => $1)
                            AND status NOT IN ('{QUEUED}', '{RUNNING}')
                          ORDER BY id LIMIT $2)
           RETURNING 1),
         old_events AS (
           DELETE FROM dex_collector.events
            WHERE id IN (SELECT id FROM dex_collector.events
                          WHERE created_at < clock_timestamp() - make_interval(secs => $1)
                          ORDER BY id LIMIT $2)
           RETURNING 1)
         SELECT (SELECT count(*) FROM old) + (SELECT count(*) FROM old_events)"
        ),
        &[(retention_seconds as f64).into(), batch.into()],
    )
    .map(|count| count.unwrap_or(0))
}
