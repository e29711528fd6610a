//! How a run is recorded: `dex_collector.runs` (one row per run), and its results through the
//! statements of the core's `history_sql` (`run_results` as `history_detail` says, the company
//! states, the daily rollups, the events), written through SPI. Results are recorded in batches
//! from one JSON array, not one statement per company.

use std::time::Duration;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use dex_collector_core::endpoint::RunIdentity;
use dex_collector_core::flow::RESUME_RUNS;
use dex_collector_core::history_sql::{HistoryDetail, DELETE_OLD_HISTORY, RECORD_RESULTS};
pub use dex_collector_core::history_sql::{RETENTION_ROWS_BATCH, RETENTION_RUNS_BATCH};
use dex_collector_core::summary::{
    CompanyResult, RunStatus, RunSummary, ALREADY_RUNNING, SKIP_NO_CREDENTIALS,
};
use dex_collector_core::target::{LastCalls, Target};

// The statuses as the statements below write them (`'running'`, ...), from the typed enums.
const QUEUED: &str = RunStatus::Queued.as_str();
const RUNNING: &str = RunStatus::Running.as_str();
const RUN_SKIPPED: &str = RunStatus::Skipped.as_str();
const RUN_FAILED: &str = RunStatus::Failed.as_str();
const INTERRUPTED: &str = RunStatus::Interrupted.as_str();

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

/// The `trigger` column's value: a manual call made by pg_cron is `pg_cron`, whether pg_cron ran
/// it over a connection of its own (its `application_name`) or in a background worker
/// (`cron.use_background_workers`: its `backend_type`, with no `application_name`).
const TRIGGER_SQL: &str =
    "CASE WHEN $1 = 'manual'
               AND (current_setting('application_name') = 'pg_cron'
                    OR (SELECT a.backend_type FROM pg_catalog.pg_stat_get_activity(pg_backend_pid()) a)
                       = 'pg_cron')
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

/// Inserts the run's row as `running`; `company` for a run of that one company.
pub fn start_run(
    trigger: Trigger,
    company: Option<&str>,
    companies_total: usize,
) -> Result<RunIdentity, HistoryError> {
    let total = i32::try_from(companies_total).unwrap_or(i32::MAX);
    run_returning(
        &format!(
            "INSERT INTO dex_collector.runs (status, trigger, company_id, companies_total)
             VALUES ('{RUNNING}', {TRIGGER_SQL}, $2::uuid, $3) RETURNING id, run_key::text"
        ),
        &[trigger.as_str().into(), company.into(), total.into()],
    )?
    .ok_or(HistoryError::NothingReturned("run"))
}

/// When each target was last called and last collected, as run ids, in the targets' order: one
/// probe of `companies` per company.
pub fn last_calls(targets: &[Target]) -> Result<Vec<LastCalls>, HistoryError> {
    let ids = ids_of(targets);
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

/// Forgets the state (`dex_collector.companies`) of the companies that are no longer targets and
/// have had no result for [`FORGET_AFTER`]: a company whose machines were all deactivated, or that
/// `targets_query` now leaves out. Failing when it left, it would keep `health` unhealthy for good,
/// with nothing to end its episode; its history stays, and if it comes back it starts as never
/// collected. The wait keeps the state of a company that callers with different targets (another
/// role's settings, a hosted database's row security) still collect, and of one whose machines are
/// off for an hour. Nothing is forgotten when there are no targets at all: a query that finds no
/// company is likelier broken than right.
pub fn forget_companies_not_among(targets: &[Target]) -> Result<(), HistoryError> {
    if targets.is_empty() {
        return Ok(());
    }
    update(
        "DELETE FROM dex_collector.companies c
          WHERE c.last_attempt_at < clock_timestamp() - make_interval(secs => $2)
            AND NOT EXISTS (SELECT 1 FROM unnest($1::text[]::uuid[]) AS t(id)
                             WHERE t.id = c.company_id)",
        &[ids_of(targets).into(), FORGET_AFTER.as_secs_f64().into()],
    )
}

/// How long a company that is no longer a target keeps its state: see
/// [`forget_companies_not_among`].
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

fn ids_of(targets: &[Target]) -> Vec<String> {
    targets.iter().map(|t| t.company_id.clone()).collect()
}

/// When a company's failures become an episode worth a `failing` event.
#[derive(Debug, Clone, Copy)]
pub struct AlertPolicy {
    /// After this many failures in a row (skips neither count nor break the streak).
    pub after_failures: i32,
    /// Or this long after the first failure since the last success; `None`: failures alone.
    pub after: Option<Duration>,
}

/// How results are recorded: when failures become an alert, and which get a `run_results` row.
#[derive(Debug, Clone, Copy)]
pub struct Recording {
    pub alerts: AlertPolicy,
    pub detail: HistoryDetail,
}

/// Records results, in one statement (`history_sql::RECORD_RESULTS`): `run_results` rows as
/// `recording.detail` says, the run's counts, each company's state in `companies` and its day in
/// `daily_rollups`, and an event (sent with NOTIFY at commit) for each change of state.
pub fn record_results(
    run_id: i64,
    results: &[CompanyResult],
    recording: Recording,
) -> Result<(), HistoryError> {
    let Recording { alerts, detail } = recording;
    if results.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(results.iter().map(CompanyResult::history_row).collect());
    let alert_after_ms = alerts
        .after
        .map(|after| i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
    let now_by_the_clock: Option<TimestampWithTimeZone> = None;
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
                detail.as_str().into(),
                now_by_the_clock.into(),
            ],
        )?;
        Ok(())
    })
    .map_err(HistoryError::Spi)
}

/// Completes the run's row with its flow and its final status. Its counts are those of the
/// results recorded, kept as each batch was ([`record_results`]), not the summary's: a worker run
/// whose results could not all be recorded counted results that no table holds.
pub fn finish_run(summary: &RunSummary, status: RunStatus) -> Result<(), HistoryError> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let count_u64 = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let flow = &summary.flow;
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE dex_collector.runs
                SET finished_at = clock_timestamp(), status = $2, duration_ms = $3, error = $4,
                    companies_not_reached = $5, concurrency_adaptive = $6, concurrency_limit = $7,
                    overloaded_answers = $8, retries = $9, retries_refused = $10,
                    answer_spread = $11
              WHERE id = $1",
            None,
            &[
                summary.run_id.into(),
                status.as_str().into(),
                summary.duration_ms().into(),
                summary.run_error.clone().into(),
                count(summary.companies_not_reached()).into(),
                flow.adaptive_max.is_some().into(),
                flow.end_limit.map(count).into(),
                count_u64(flow.overloaded_answers).into(),
                count_u64(flow.retries).into(),
                count_u64(flow.retries_refused).into(),
                flow.spread.map(|spread| spread as f32).into(),
            ],
        )?;
        Ok(())
    })
    .map_err(HistoryError::Spi)
}

/// Where the latest adaptive runs that succeeded settled, the latest first (as many as the next
/// one starts from: [`RESUME_RUNS`]), and how widely the latest one's answer times spread, if it
/// measured that (the next one's first windows take it). A run that failed (its key refused, the
/// worker's run cancelled) or was interrupted may have ended before its limit found anything.
pub fn recent_adaptive_runs() -> Result<SettledRuns, HistoryError> {
    // Aggregates: one row whether or not there are such runs.
    let (limits, spread) = Spi::get_two_with_args::<Vec<Option<i32>>, f32>(
        "SELECT array_agg(concurrency_limit ORDER BY id DESC),
                (array_agg(answer_spread ORDER BY id DESC))[1]
           FROM (SELECT id, concurrency_limit, answer_spread FROM dex_collector.runs
                  WHERE concurrency_adaptive AND concurrency_limit IS NOT NULL
                    AND status = 'succeeded'
                  ORDER BY id DESC LIMIT $1) AS recent",
        &[(RESUME_RUNS as i32).into()],
    )
    .map_err(HistoryError::Spi)?;
    Ok(SettledRuns {
        limits: limits
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .filter_map(|limit| usize::try_from(limit).ok())
            .collect(),
        spread: spread.map(f64::from),
    })
}

/// What the latest adaptive runs left for the next: see [`recent_adaptive_runs`].
pub struct SettledRuns {
    /// Where each settled, the latest first.
    pub limits: Vec<usize>,
    pub spread: Option<f64>,
}

/// Where the latest adaptive run that met a 429 or 503 settled, if it ended within
/// [`CEILING_KEPT`]: the next runs grow no higher at first, and probe above it only after that.
pub fn recent_adaptive_ceiling() -> Result<Option<usize>, HistoryError> {
    let limit = Spi::get_one_with_args::<i32>(
        "SELECT (SELECT concurrency_limit FROM dex_collector.runs
                  WHERE concurrency_adaptive AND overloaded_answers > 0
                    AND concurrency_limit IS NOT NULL
                    AND finished_at > clock_timestamp() - make_interval(secs => $1)
                    -- A run lasts at most run_deadline's 24 hours, and then writes its end. A
                    -- subquery, computed once, so that the bound is an index condition.
                    AND started_at > (SELECT clock_timestamp() - make_interval(secs => $1)
                                             - interval '25 hours')
                  ORDER BY started_at DESC, id DESC LIMIT 1)",
        &[CEILING_KEPT.as_secs_f64().into()],
    )
    .map_err(HistoryError::Spi)?;
    Ok(limit.and_then(|limit| usize::try_from(limit).ok()))
}

/// How long the level at which the endpoint refused an adaptive run caps the runs after it.
pub const CEILING_KEPT: Duration = Duration::from_secs(3600);

fn update(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Result<(), HistoryError> {
    Spi::connect_mut(|client| client.update(sql, None, args).map(|_| ())).map_err(HistoryError::Spi)
}

/// Records a run (of `company` alone, if given) that did not start because `running` (if known)
/// was in progress.
pub fn record_skipped_run(
    trigger: Trigger,
    company: Option<&str>,
    running: Option<i64>,
) -> Result<i64, HistoryError> {
    let error = match running {
        Some(run_id) => format!("{ALREADY_RUNNING} (run {run_id})"),
        None => ALREADY_RUNNING.to_string(),
    };
    new_id(update_returning(
        &format!(
            "INSERT INTO dex_collector.runs
                    (status, trigger, company_id, finished_at, duration_ms, error)
             VALUES ('{RUN_SKIPPED}', {TRIGGER_SQL}, $2::uuid, clock_timestamp(), 0, $3)
             RETURNING id"
        ),
        &[trigger.as_str().into(), company.into(), error.into()],
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
/// and duration are those of the results they recorded before they were cut short (kept in the
/// run's row as they came).
pub fn mark_interrupted_runs() -> Result<i64, HistoryError> {
    update_returning(
        &format!(
            "WITH cut AS (
           UPDATE dex_collector.runs
              SET status = '{INTERRUPTED}', finished_at = clock_timestamp(),
                  error = coalesce(error, 'cut short by a server restart or crash'),
                  duration_ms = coalesce(duration_ms, 0)
            WHERE status = '{RUNNING}' RETURNING 1)
         SELECT count(*) FROM cut"
        ),
        &[],
    )
    .map(|count| count.unwrap_or(0))
}

/// How long each kind of history is kept; `None`: for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs, with their results (`dex_collector.history_retention`).
    pub runs: Option<Duration>,
    /// Events (`dex_collector.event_retention`).
    pub events: Option<Duration>,
    /// Daily rollups (`dex_collector.rollup_retention`).
    pub rollups: Option<Duration>,
}

impl Retention {
    pub fn keeps_everything(&self) -> bool {
        self.runs.is_none() && self.events.is_none() && self.rollups.is_none()
    }
}

/// Deletes, in the caller's transaction, up to `runs_batch` runs (each with its results) and
/// `rows_batch` events and rollups older than their retention; returns how many rows in all.
/// Called repeatedly, one small transaction each, so no lock is held for long.
pub fn delete_old_history(
    retention: Retention,
    runs_batch: i64,
    rows_batch: i64,
) -> Result<i64, HistoryError> {
    let seconds = |kept: Option<Duration>| kept.map(|kept| kept.as_secs_f64());
    let now_by_the_clock: Option<TimestampWithTimeZone> = None;
    update_returning(
        DELETE_OLD_HISTORY,
        &[
            seconds(retention.runs).into(),
            runs_batch.into(),
            seconds(retention.events).into(),
            seconds(retention.rollups).into(),
            now_by_the_clock.into(),
            rows_batch.into(),
        ],
    )
    .map(|count| count.unwrap_or(0))
}
