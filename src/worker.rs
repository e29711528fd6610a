//! The background worker: runs queued collections (`dex_collect_all_async()`) as soon as it is
//! woken, runs one every `dex_collector.interval` when that is set, deletes history older than
//! `dex_collector.history_retention`, and marks runs a crash left `running` as `interrupted`.
//!
//! Unlike a SQL call, a worker run commits each company's result as it finishes, so a crash loses
//! at most the companies in flight. Every unit of work runs in its own transaction; an error in
//! one is logged, the transaction aborted, and the loop backs off and goes on: the worker never
//! dies for good (and if it does crash, the postmaster restarts it).

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{caught_report, CollectError};
use crate::history::{self, Trigger};
use crate::lock::{self, Holder};
use crate::run::{self, Scope};
use crate::settings::{worker_database, WorkerSettings};
use crate::summary::{ResultStatus, RunStatus};

/// `backend_type` in `pg_stat_activity`.
pub const WORKER_TYPE: &str = "dex_collector";
const WORKER_NAME: &str = "dex_collector worker";
/// Longest sleep between looks at the queue when nothing wakes the worker.
const IDLE_WAIT: Duration = Duration::from_secs(10);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const RETENTION_BATCH: i64 = 20;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Registers the worker; only possible while `shared_preload_libraries` is being loaded.
pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_TYPE)
        .set_library("dex_collector")
        .set_function("dex_collector_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn dex_collector_worker_main(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&worker_database()), None);
    // SAFETY: a constant C string; pgstat copies it.
    unsafe { pg_sys::pgstat_report_appname(c"dex_collector worker".as_ptr()) };
    log!(
        "dex_collector worker started in database {}",
        worker_database()
    );

    if let Ok(Ok(count)) =
        in_transaction("marking interrupted runs", history::mark_interrupted_runs)
    {
        if count > 0 {
            log!("dex_collector worker: marked {count} run(s) left running by a restart or crash as interrupted");
        }
    }

    let mut next_interval_run: Option<Instant> = None;
    let mut next_retention = Instant::now();
    let mut failures: u32 = 0;
    loop {
        if shutdown_requested() {
            break;
        }
        let settings = WorkerSettings::current();
        let now = Instant::now();
        next_interval_run = match (settings.interval, next_interval_run) {
            (None, _) => None,
            (Some(interval), None) => Some(now + interval),
            (Some(interval), Some(due)) => Some(due.min(now + interval)),
        };

        let mut ok = true;
        loop {
            match in_transaction("looking for queued runs", history::claim_queued_run) {
                Ok(Ok(Some(run_id))) => ok &= collect(Trigger::Async, Some(run_id)),
                Ok(Ok(None)) => break,
                Ok(Err(error)) => {
                    warning!("dex_collector worker: {error}");
                    ok = false;
                    break;
                }
                Err(()) => {
                    ok = false;
                    break;
                }
            }
            if shutdown_requested() {
                break;
            }
        }
        if let (Some(interval), Some(due)) = (settings.interval, next_interval_run) {
            if Instant::now() >= due && !shutdown_requested() {
                ok &= collect(Trigger::Worker, None);
                // Missed slots (a run longer than the interval) are skipped, not run back to back.
                let next = due + interval;
                let now = Instant::now();
                next_interval_run = Some(if next > now { next } else { now + interval });
            }
        }
        if let Some(retention) = settings.history_retention {
            if Instant::now() >= next_retention && !shutdown_requested() {
                ok &= delete_old_history(retention);
                next_retention = Instant::now() + RETENTION_EVERY;
            }
        }

        failures = if ok { 0 } else { failures.saturating_add(1) };
        let backoff = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
        let mut wait = if failures > 0 { backoff } else { IDLE_WAIT };
        if let Some(due) = next_interval_run {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(10)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard reload of a worker's configuration, on its own thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    log!("dex_collector worker stopping");
    // Exit code 1: the postmaster restarts the worker after pg_terminate_backend (code 0 would
    // unregister it); at shutdown it is not restarted either way.
    // SAFETY: the normal way for a worker to end; runs Postgres' exit callbacks.
    unsafe { pg_sys::proc_exit(1) };
}

fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// Runs `work` in a transaction of its own. A Postgres error inside is logged as a WARNING and
/// its transaction aborted: `Err(())`, and the worker goes on.
fn in_transaction<R>(
    what: &str,
    work: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, ()> {
    // SAFETY: the worker is connected and outside any transaction whenever this is called.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(|| Ok(work()))
        .catch_others(|caught| Err(caught_report(&caught).message().to_string()))
        .execute();
    match outcome {
        Ok(result) => {
            // SAFETY: closes the transaction begun above.
            unsafe {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Ok(result)
        }
        Err(message) => {
            // SAFETY: aborting releases the snapshot and every resource of the failed transaction.
            unsafe { pg_sys::AbortCurrentTransaction() };
            warning!("dex_collector worker: error while {what}: {message}");
            Err(())
        }
    }
}

/// One collection: a queued run (`run_id`) or an interval run. True when it went without error.
fn collect(trigger: Trigger, queued: Option<i64>) -> bool {
    let started = Instant::now();
    let prepared = in_transaction("starting a run", || start_run(trigger, queued));
    let (run_id, plan) = match prepared {
        Ok(Ok(Some(prepared))) => prepared,
        Ok(Ok(None)) => return true,
        Ok(Err(StartFailure { run_id, error })) => {
            warning!("dex_collector worker: the run could not start: {error}");
            end_failed_run(run_id, &error.to_string());
            return false;
        }
        Err(()) => {
            end_failed_run(queued, "the run could not start (see the server log)");
            return false;
        }
    };

    let mut committed_ok = true;
    let summary = run::execute(&plan, run_id, started, &mut |result| {
        let result = result.clone();
        committed_ok &= matches!(
            in_transaction("recording a result", move || history::record_results(
                run_id,
                std::slice::from_ref(&result)
            )),
            Ok(Ok(()))
        );
    });
    let finished = in_transaction("finishing a run", || -> Result<(), CollectError> {
        match &summary {
            Ok(summary) => {
                let not_yet_recorded: Vec<_> = summary
                    .results
                    .iter()
                    .filter(|r| r.status == ResultStatus::Skipped)
                    .cloned()
                    .collect();
                history::record_results(run_id, &not_yet_recorded)?;
                let status = if shutdown_requested() {
                    RunStatus::Interrupted
                } else {
                    summary.final_status()
                };
                history::finish_run(summary, status)?;
            }
            Err(error) => history::fail_run(run_id, &error.to_string())?,
        }
        lock::release_session_locks()
    });
    committed_ok && summary.is_ok() && matches!(finished, Ok(Ok(())))
}

/// A run that could not start, and the id it had by then.
struct StartFailure {
    run_id: Option<i64>,
    error: CollectError,
}

/// Takes the run lock (or records the run as skipped: `None`), creates or claims the run's row
/// and resolves its plan.
fn start_run(
    trigger: Trigger,
    queued: Option<i64>,
) -> Result<Option<(i64, run::Plan)>, StartFailure> {
    let failed = |run_id: Option<i64>| move |error| StartFailure { run_id, error };
    if !lock::try_acquire(Holder::Session).map_err(failed(queued))? {
        let running = lock::running_run_id().map_err(failed(queued))?;
        match queued {
            Some(run_id) => history::skip_queued_run(run_id, running),
            None => history::record_skipped_run(trigger, running).map(|_| ()),
        }
        .map_err(failed(queued))?;
        return Ok(None);
    }
    let run_id = match queued {
        Some(run_id) => run_id,
        None => history::start_run(trigger, 0).map_err(failed(None))?,
    };
    lock::publish(Holder::Session, run_id).map_err(failed(Some(run_id)))?;
    let plan = run::plan(Scope::All).map_err(failed(Some(run_id)))?;
    history::set_companies_total(run_id, plan.targets.len()).map_err(failed(Some(run_id)))?;
    Ok(Some((run_id, plan)))
}

/// Best effort: the run's row says why it failed, and the locks are free.
fn end_failed_run(run_id: Option<i64>, error: &str) {
    let _ = in_transaction("recording a failed run", || -> Result<(), CollectError> {
        if let Some(run_id) = run_id {
            history::fail_run(run_id, error)?;
        }
        lock::release_session_locks()
    });
}

/// Queues a run for the worker and wakes it when the caller's transaction commits (before, the
/// worker could not see the row). Tells the caller when no worker will pick the run up.
pub fn queue_run() -> Result<i64, CollectError> {
    let run_id = history::queue_run()?;
    let worker = Spi::get_two::<i32, String>(&format!(
        "SELECT (SELECT pid FROM pg_catalog.pg_stat_activity
                  WHERE backend_type = '{WORKER_TYPE}' AND datname = current_database() LIMIT 1),
                current_setting('shared_preload_libraries')"
    ))
    .map_err(|e| CollectError::History {
        message: e.to_string(),
    })?;
    match worker {
        (Some(pid), _) => {
            pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
                // SAFETY: SIGUSR1 makes a Postgres process set its latch; nothing else happens.
                unsafe { libc::kill(pid, libc::SIGUSR1) };
            });
        }
        (None, preloaded) if preloaded.as_deref().is_some_and(|libraries| libraries.contains("dex_collector")) => notice!(
            "dex_collector: the background worker serves the database named by dex_collector.database ({}), \
             not this one, so run {run_id} stays queued",
            worker_database()
        ),
        (None, _) => notice!(
            "dex_collector: the background worker is off, so run {run_id} stays queued; turn it on with \
             shared_preload_libraries = 'dex_collector' and dex_collector.database = '<this database>', then restart PostgreSQL"
        ),
    }
    Ok(run_id)
}

/// Deletes old runs in small transactions. True when it went without error.
fn delete_old_history(retention: Duration) -> bool {
    let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        match in_transaction("deleting old history", || {
            history::delete_old_runs(seconds, RETENTION_BATCH)
        }) {
            Ok(Ok(0)) => break,
            Ok(Ok(count)) => deleted += count,
            Ok(Err(error)) => {
                warning!("dex_collector worker: {error}");
                return false;
            }
            Err(()) => return false,
        }
        if shutdown_requested() {
            break;
        }
    }
    if deleted > 0 {
        log!("dex_collector worker: deleted {deleted} run(s) older than dex_collector.history_retention");
    }
    true
}
