//! How a run goes from start to end, whoever starts it: take the run lock (or record the call as
//! skipped), create or claim the run's row, plan, call the endpoint, record the results, finish
//! the row, release the lock. Results are written as they come, a batch at a time
//! (`batch::ResultBatch`), so a run holds its counts and one batch whatever the number of
//! companies. One lifecycle, two ways of recording it:
//! - a SQL call writes each batch in the caller's transaction (a cancelled call leaves no
//!   history), and its locks end with that transaction ([`collect_in_transaction`]);
//! - the worker commits the run's row before the first request and each batch once it is full
//!   or a second old, so a crash loses at most the companies in flight and the last second's
//!   results; its session locks are released by a guard however the run ends
//!   ([`collect_in_worker`]).
//!
//! A run whose results cannot be recorded stops calling the endpoint.

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use serde::Serialize;

use crate::error::{warn_with_hint, CollectError};
use crate::history::{self, Trigger};
use crate::lock::{self, SessionLocks};
use crate::pg;
use crate::run::{self, Interrupts, Plan, ResultSink, Scope};
use crate::settings::{self, worker_database};
use crate::version;
use dex_collector_core::batch::ResultBatch;
use dex_collector_core::endpoint::RunIdentity;
use dex_collector_core::summary::{RunStatus, ALREADY_RUNNING};

/// The worker commits a batch of results once its oldest has waited this long, however few it
/// holds: what a crash can lose.
const WORKER_BATCH_WAIT: Duration = Duration::from_secs(1);

/// A collection from SQL: skipped at once when another is running, otherwise run to the end and
/// recorded with the caller's transaction; returns the summary as a `jsonb` datum's bytes.
/// Raises only for configuration errors.
pub fn collect_in_transaction(scope: Scope, trigger: Trigger) -> Result<Vec<u8>, CollectError> {
    refuse_during_recovery()?;
    let started = Instant::now();
    let company = scope.company_id().map(str::to_string);
    if !lock::try_acquire_for_transaction() {
        let running = lock::running_run_id()?;
        let recorded_as = history::record_skipped_run(trigger, company.as_deref(), running)?;
        return to_jsonb(&serde_json::json!({
            "success": false,
            "skipped": true,
            "reason": ALREADY_RUNNING,
            "run_id": running,
            "recorded_as": recorded_as,
        }));
    }
    let mut plan = run::plan(scope, || Ok(()))?;
    plan.stop_before_call_timeout(started)?;
    let run = history::start_run(trigger, company.as_deref(), plan.targets.len())?;
    lock::publish_for_transaction(run.id);
    let recording = plan.settings.recording;
    let mut write = |due: Vec<_>| Ok(history::record_results(run.id, &due, recording)?);
    let mut sink = ResultSink {
        batch: ResultBatch::new(None),
        write: &mut write,
    };
    let executed = run::execute(&plan, &run, started, Interrupts::Raise, true, &mut sink)?;
    // From pg_cron too, it reaches the server log with each call, as the call's other messages.
    if let Some((message, hint)) = run::deadline_reached(&executed.summary, &plan) {
        warn_with_hint(message, hint);
    }
    history::record_results(run.id, &sink.batch.take(), recording)?;
    history::finish_run(&executed.summary, executed.summary.final_status())?;
    // Where no worker deletes old history, each call deletes a batch of it: more than one run
    // adds, so the history stays within its retention whatever the schedule. Also where one
    // should but is not running (it could not start: `max_worker_processes` used up, say).
    if !worker_serves_this_database()? || !pg::worker_running() {
        delete_old_history_after_the_run();
    }
    // The worker sends what the run leaves to send (events, the heartbeat) once it commits.
    pg::wake_worker_at_commit();
    to_jsonb(&executed.summary)
}

/// A SQL call's batch of old history, once its run is recorded: in a subtransaction, so that a
/// batch that fails (a row lock waited for past `lock_timeout`, say) takes only itself, not the
/// run's history with it; and within half of what the call's timeout leaves, so that the call
/// still ends in time. Either is a WARNING, and the next call tries again. A cancel is the
/// caller's: raised on.
fn delete_old_history_after_the_run() {
    let limit = match settings::call_timeout() {
        Ok(timeout) => timeout.map(|timeout| (timeout.left / 2, timeout.setting)),
        Err(error) => return warn_old_history_kept(&error.to_string()),
    };
    let pg::RolledBack { outcome, timed_out } =
        pg::in_subtransaction_kept_if_done(limit.as_ref().map(|(left, _)| *left), || {
            history::delete_old_history(
                settings::retention(),
                history::RETENTION_RUNS_BATCH,
                history::RETENTION_ROWS_BATCH,
            )
        });
    let failure = match (outcome, limit) {
        (_, Some((left, setting))) if timed_out => format!(
            "it did not finish within {} ms, half of what {setting} left the call",
            left.as_millis()
        ),
        (Ok(Ok(_)), _) => return,
        (Ok(Err(error)), _) => error.to_string(),
        (Err(caught), _) => {
            let report = pg::caught_report(&caught);
            if report.sql_error_code() == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                caught.rethrow()
            }
            report.message().to_string()
        }
    };
    warn_old_history_kept(&failure);
}

fn warn_old_history_kept(failure: &str) {
    warning!(
        "dex_collector: old history was not deleted after this run ({failure}); the run is recorded, and the next call tries again"
    );
}

fn to_jsonb(value: &impl Serialize) -> Result<Vec<u8>, CollectError> {
    jsonb_binary::to_jsonb(value).map_err(|error| CollectError::Runtime {
        message: format!("the run's summary could not be returned: {error}"),
    })
}

/// Queues a run for the worker and wakes it when the caller's transaction commits. Refused when
/// no worker serves this database, since the run would stay queued forever.
pub fn queue_for_worker() -> Result<i64, CollectError> {
    refuse_during_recovery()?;
    if !pg::preloaded() {
        return Err(CollectError::NoWorkerForDatabase {
            worker_database: None,
        });
    }
    if !worker_serves_this_database()? {
        return Err(CollectError::NoWorkerForDatabase {
            worker_database: Some(worker_database()),
        });
    }
    version::check_installed_version()?;
    let run_id = history::queue_run()?;
    pg::wake_worker_at_commit();
    Ok(run_id)
}

/// The library is preloaded, so a worker runs, and `dex_collector.database` is this database.
fn worker_serves_this_database() -> Result<bool, CollectError> {
    if !pg::preloaded() {
        return Ok(false);
    }
    let served = Spi::get_one_with_args::<bool>(
        "SELECT current_database() = $1",
        &[worker_database().as_str().into()],
    )
    .map_err(|error| CollectError::Transaction {
        message: error.to_string(),
    })?;
    Ok(served == Some(true))
}

/// `work` in a transaction of its own (the worker's way); an ERROR inside becomes its message.
pub fn in_own_transaction<T, E: Into<CollectError>>(
    work: impl FnOnce() -> Result<T, E> + std::panic::UnwindSafe,
) -> Result<T, CollectError> {
    match pg::in_transaction(work) {
        Ok(done) => done.map_err(Into::into),
        Err(message) => Err(CollectError::Transaction { message }),
    }
}

/// [`in_own_transaction`], for the worker's writes of a run's results and end: at a shutdown, what
/// failed is likely its query cancel (handle_worker_sigterm), meant for a statement that waits and
/// met a write instead; the ERROR served it (a second one is taken), and `work` runs once more.
fn in_own_transaction_at_shutdown<T, E: Into<CollectError>>(
    work: impl Fn() -> Result<T, E> + std::panic::RefUnwindSafe,
) -> Result<T, CollectError> {
    in_own_transaction(&work).or_else(|error| {
        if pg::shutdown_requested() {
            pg::take_shutdown_cancel();
            in_own_transaction(&work)
        } else {
            Err(error)
        }
    })
}

/// Collections write history: on a standby they are refused up front with SQLSTATE 25006.
pub fn refuse_during_recovery() -> Result<(), CollectError> {
    if pg::recovery_in_progress() {
        return Err(CollectError::StandbyServer);
    }
    Ok(())
}

/// What the worker asks for: a run claimed from the queue, or one of its interval.
pub enum WorkerRun {
    Queued(RunIdentity),
    Interval,
}

impl WorkerRun {
    /// The queued run's row, if the worker claimed one.
    fn queued(&self) -> Option<RunIdentity> {
        match self {
            WorkerRun::Queued(run) => Some(run.clone()),
            WorkerRun::Interval => None,
        }
    }
}

/// A started worker run: its row is committed and it holds the run lock.
struct Started {
    locks: SessionLocks,
    run: RunIdentity,
    plan: Plan,
}

/// A worker run, each step in a transaction of its own (the worker is between transactions).
/// `Err` carries the problems the worker should log, and `Ok` those of a run that went as it
/// should (one the deadline cut short); the run's row says what happened either way.
pub fn collect_in_worker(request: WorkerRun) -> Result<Vec<String>, Vec<String>> {
    let started_at = Instant::now();
    let queued = request.queued();
    let start = pg::in_transaction(|| start_in_worker(request))
        .unwrap_or_else(|message| Err((None, CollectError::Transaction { message })));
    let Started { locks, run, plan } = match start {
        Ok(Some(started)) => started,
        Ok(None) => return Ok(Vec::new()),
        Err((run, error)) => {
            let mut problems = vec![format!("the run could not start: {error}")];
            problems.extend(fail_in_worker(run.or(queued).as_ref(), &error.to_string()));
            return Err(problems);
        }
    };

    let mut problems = Vec::new();
    let run_id = run.id;
    let recording = plan.settings.recording;
    // A batch whose transaction failed (a cancel while it was written, say) is written again at
    // the run's end: the run stops calling the endpoint, but loses nothing that can be written.
    let mut unwritten = Vec::new();
    let mut write = |due: Vec<_>| {
        let written =
            in_own_transaction_at_shutdown(|| history::record_results(run_id, &due, recording));
        if let Err(error) = &written {
            problems.push(format!(
                "run {run_id} stopped calling the endpoint: its results could not be recorded: \
                 {error}"
            ));
            unwritten.extend(due);
        }
        written
    };
    let mut sink = ResultSink {
        batch: ResultBatch::new(Some(WORKER_BATCH_WAIT)),
        write: &mut write,
    };
    let executed = run::execute(
        &plan,
        &run,
        started_at,
        Interrupts::StopRun,
        false,
        &mut sink,
    );
    let rest = sink.batch.take();
    // What the run stopped for (a shutdown) may have set a query cancel again since it was taken:
    // its end is no statement to cancel.
    pg::take_shutdown_cancel();
    // In a transaction of its own: one that fails again (a row the history refuses) does not
    // take the run's end with it.
    if !unwritten.is_empty() {
        if let Err(error) = in_own_transaction_at_shutdown(|| {
            history::record_results(run_id, &unwritten, recording)
        }) {
            problems.push(format!(
                "run {run_id}: {} results could not be recorded: {error}",
                unwritten.len()
            ));
        }
    }
    let ended = in_own_transaction_at_shutdown(|| match &executed {
        Ok(executed) => {
            let status = if executed.cancelled && pg::shutdown_requested() {
                RunStatus::Interrupted
            } else {
                executed.summary.final_status()
            };
            history::record_results(run_id, &rest, recording)?;
            Ok::<_, CollectError>(history::finish_run(&executed.summary, status)?)
        }
        Err(error) => Ok(history::fail_run(run_id, &error.to_string())?),
    });
    if let Err(error) = ended {
        problems.push(format!("could not record the end of run {run_id}: {error}"));
        problems.extend(fail_in_worker(Some(&run), &error.to_string()));
    }
    if let Err(error) = &executed {
        problems.push(format!("run {run_id} failed: {error}"));
    }
    drop(locks);
    if !problems.is_empty() {
        return Err(problems);
    }
    // Said at most every ten minutes, as a problem is, not at every run while it lasts.
    let deadline = executed
        .ok()
        .and_then(|executed| run::deadline_reached(&executed.summary, &plan));
    Ok(deadline
        .map(|(message, hint)| format!("{message}. {hint}"))
        .into_iter()
        .collect())
}

/// Takes the run lock (or records the run as skipped: `None`), creates or claims the run's row
/// and resolves its plan. On failure, the run's row if it has one by then.
fn start_in_worker(
    request: WorkerRun,
) -> Result<Option<Started>, (Option<RunIdentity>, CollectError)> {
    let queued = request.queued();
    let before_run = |error: CollectError| (queued.clone(), error);
    let Some(locks) = SessionLocks::try_acquire() else {
        let running = lock::running_run_id().map_err(|e| before_run(e.into()))?;
        match &queued {
            Some(run) => history::skip_queued_run(run.id, running),
            None => history::record_skipped_run(Trigger::Worker, None, running).map(|_| ()),
        }
        .map_err(|e| before_run(e.into()))?;
        return Ok(None);
    };
    let run = match queued.clone() {
        Some(run) => run,
        None => history::start_run(Trigger::Worker, None, 0).map_err(|e| (None, e.into()))?,
    };
    let failed = |error: CollectError| (Some(run.clone()), error);
    locks.publish(run.id);
    // The targets query could have released the session's locks (pg_advisory_unlock_all()).
    let plan = run::plan(Scope::All, || Ok(locks.confirm(run.id)?)).map_err(failed)?;
    history::set_companies_total(run.id, plan.targets.len()).map_err(|e| failed(e.into()))?;
    Ok(Some(Started { locks, run, plan }))
}

/// Best effort: the run's row says why it failed. Returns the problem if even that fails. At a
/// shutdown, whose cancel is likely what failed, the row is left `running`: the worker's next
/// start marks it `interrupted`.
fn fail_in_worker(run: Option<&RunIdentity>, error: &str) -> Option<String> {
    if pg::shutdown_requested() {
        return None;
    }
    let run_id = run?.id;
    in_own_transaction(|| history::fail_run(run_id, error))
        .err()
        .map(|error| format!("could not mark run {run_id} failed: {error}"))
}
