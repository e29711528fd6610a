//! What the background worker does: runs queued collections (`dex_collect_all_async()`) as soon
//! as a committing caller sets its latch, runs one every `dex_collector.interval` when that is
//! set, notes runs that stop arriving as events (`staleness.rs`), sends events to the webhook and
//! pings the heartbeat (`delivery.rs`), deletes runs, events and daily rollups past their
//! retention (`history_retention`, `event_retention`, `rollup_retention`), and marks runs a crash
//! left `running` as `interrupted`.
//!
//! The loop survives every error: each unit of work runs in its own transaction, an error aborts
//! it, is logged (the same problem at most every ten minutes) and backs the loop off. While there
//! is nothing it can do (its database missing, the extension not created or not updated there)
//! it says so once and waits; an idle cycle logs nothing. On a standby it starts at promotion; the
//! servers pg_upgrade runs have none.

use std::ffi::CString;
use std::time::{Duration, Instant, SystemTime};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::delivery::Deliveries;
use crate::history::{self, Retention, RETENTION_ROWS_BATCH, RETENTION_RUNS_BATCH};
use crate::lifecycle::{self, in_own_transaction, WorkerRun};
use crate::pg;
use crate::settings::{self, worker_database, WorkerSettings};
use crate::staleness::ScheduleWatch;
use crate::version;
use dex_collector_core::alert::alert_text;
use dex_collector_core::problems::ProblemLog;

/// `backend_type` in `pg_stat_activity`.
pub const WORKER_TYPE: &str = "dex_collector";
const WORKER_NAME: &str = "dex_collector worker";
/// Longest sleep between looks at the queue when nothing wakes the worker.
const IDLE_WAIT: Duration = Duration::from_secs(10);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How long one cycle deletes old history: a backlog (a retention shortened on a large history,
/// a worker off for weeks) goes on in the next cycles, between runs and deliveries, instead of
/// holding them back until it is gone.
const RETENTION_SLICE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The same problem is logged again after this long at the earliest.
const REPEAT_PROBLEM_AFTER: Duration = Duration::from_secs(600);
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Registers the worker; only possible while `shared_preload_libraries` is being loaded.
pub fn register() {
    pg::set_worker_main(main);
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_TYPE)
        .set_library("dex_collector")
        .set_function(pg::WORKER_ENTRY)
        .enable_spi_access()
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

/// The worker process, from its start to its exit.
pub fn main() -> ! {
    pg::handle_worker_sigterm();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    let database = worker_database();
    if pg::worker_database_missing() {
        wait_for_database(&database);
    }
    // Still set if the connection below fails (FATAL): the next start waits for the database
    // instead of failing the same way every few seconds.
    pg::set_worker_database_missing(true);
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    pg::set_worker_database_missing(false);
    pg::report_application_name(c"dex_collector worker");
    if let Err(message) = pin_search_path() {
        warning!("dex_collector worker: could not set its search_path: {message}");
        pg::exit_worker_for_restart();
    }
    pg::publish_worker_latch();
    log!("dex_collector worker started in database {database}");
    serve(&database);
    log!("dex_collector worker stopping");
    pg::exit_worker_for_restart()
}

/// The worker runs as a superuser: a search_path from the database's settings must not let another
/// role's function or operator be chosen over PostgreSQL's own (named ahead of pg_catalog, or a
/// closer match for the argument types in any schema on the path, one named after that superuser
/// included).
fn pin_search_path() -> Result<(), String> {
    pg::in_transaction(|| {
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
    })?
    .map_err(|error| error.to_string())
}

/// Connected to no database, waits until `database` exists and accepts connections, then exits to
/// be started again (a process connects to one database, once).
fn wait_for_database(database: &str) -> ! {
    BackgroundWorker::connect_worker_to_spi(None, None);
    log!(
        "dex_collector worker: could not connect to database {database:?} (dex_collector.database): it does not exist or does not accept connections; waiting for it"
    );
    let name = CString::new(database).unwrap_or_default();
    let mut problems = Problems::default();
    loop {
        match pg::database_accepts_connections(&name) {
            Ok(true) => {
                log!("dex_collector worker: database {database:?} accepts connections now; connecting to it");
                pg::set_worker_database_missing(false);
                pg::exit_worker_for_restart();
            }
            Ok(false) => {}
            Err(message) => problems.report(format!(
                "could not look for database {database:?}: {message}"
            )),
        }
        if !pg::wait_worker_latch(IDLE_WAIT) {
            pg::exit_worker_for_restart();
        }
    }
}

/// Why the worker cannot work in its database right now. (On a standby it does not run at all:
/// the postmaster starts it once recovery has finished, at promotion.)
#[derive(Debug, Clone, PartialEq)]
enum Waiting {
    NoExtension,
    Outdated { installed: String },
}

impl Waiting {
    fn announce(&self, database: &str) {
        match self {
            Waiting::NoExtension => log!(
                "dex_collector worker: the extension is not created in database {database:?}; waiting for CREATE EXTENSION dex_collector"
            ),
            Waiting::Outdated { installed } if version::library_is_older_than(installed) => log!(
                "dex_collector worker: database {database:?} has dex_collector {installed}, the library this server loaded is {}; restart PostgreSQL",
                version::LIBRARY_VERSION
            ),
            Waiting::Outdated { installed } => log!(
                "dex_collector worker: database {database:?} has dex_collector {installed}, the library is {}; waiting for ALTER EXTENSION dex_collector UPDATE",
                version::LIBRARY_VERSION
            ),
        }
    }
}

/// What stops the worker from working now, if anything, and the oid of the extension it found (in
/// a transaction of its own).
fn waiting_for() -> Result<(Option<Waiting>, Option<i64>), String> {
    let installed = in_own_transaction(version::installed_extension).map_err(|e| e.to_string())?;
    Ok(match installed {
        None => (Some(Waiting::NoExtension), None),
        Some(installed) if installed.version != version::LIBRARY_VERSION => (
            Some(Waiting::Outdated {
                installed: installed.version,
            }),
            Some(installed.oid),
        ),
        Some(installed) => (None, Some(installed.oid)),
    })
}

/// Real problems as WARNINGs, each at most every [`REPEAT_PROBLEM_AFTER`] (told apart as
/// [`ProblemLog`] says).
struct Problems(ProblemLog);

impl Default for Problems {
    fn default() -> Problems {
        Problems(ProblemLog::new(REPEAT_PROBLEM_AFTER))
    }
}

impl Problems {
    fn report(&mut self, problem: String) {
        // At a shutdown, the statement it cancelled (handle_worker_sigterm) fails: not a problem.
        if pg::shutdown_requested() {
            return;
        }
        if self.0.tell(&problem, Instant::now()) {
            warning!("dex_collector worker: {problem}");
        }
    }
}

/// The loop: wait, work, repeat until shutdown.
fn serve(database: &str) {
    let mut waiting: Option<Waiting> = None;
    let mut interrupted_runs_marked = false;
    let mut next_interval_run: Option<Instant> = None;
    let mut next_retention = Instant::now();
    let mut failures: u32 = 0;
    let mut problems = Problems::default();
    let mut deliveries = Deliveries::new();
    let mut schedule_watch = ScheduleWatch::new();
    let mut extension_found: Option<i64> = None;
    // When the worker last looked for the extension and found it, or found none.
    let mut extension_seen_at = SystemTime::now();
    // Those it connected with: the first read, at once after connecting (or, if that failed, the
    // first that did not).
    let mut connected_with = None;
    while !pg::shutdown_requested() {
        match (stored_settings(&mut problems), &connected_with) {
            (Some(now), Some(then)) if now != *then => {
                log!(
                    "dex_collector worker: the dex_collector settings of database {database:?} changed (ALTER DATABASE or ALTER ROLE); starting again to take them"
                );
                return;
            }
            (Some(now), None) => connected_with = Some(now),
            _ => {}
        }
        let settings = WorkerSettings::current();
        let now = Instant::now();
        next_interval_run = match (settings.interval, next_interval_run) {
            (None, _) => None,
            (Some(interval), None) => Some(now + interval),
            (Some(interval), Some(due)) => Some(due.min(now + interval)),
        };

        let mut ok = true;
        let mut more_queued = false;
        let mut more_to_delete = false;
        let checked_at = SystemTime::now();
        match waiting_for() {
            Err(problem) => {
                problems.report(format!("could not check the extension: {problem}"));
                ok = false;
            }
            Ok((now_waiting, extension)) => {
                // A DROP EXTENSION and CREATE EXTENSION, in one cycle or across several: the new
                // history starts afresh (run ids from 1), and what the worker knew of the old one
                // (the runs pinged, the schedule and since when) goes with it.
                if extension.is_some() {
                    if extension_found.is_some_and(|found| Some(found) != extension) {
                        deliveries.start_new_history(extension_seen_at);
                        schedule_watch = ScheduleWatch::new();
                    }
                    extension_found = extension;
                }
                extension_seen_at = checked_at;
                if now_waiting != waiting {
                    match &now_waiting {
                        Some(reason) => reason.announce(database),
                        None if waiting.is_some() => {
                            log!("dex_collector worker: ready in database {database:?}");
                        }
                        None => {}
                    }
                    waiting = now_waiting;
                }
            }
        }
        if !ok || waiting.is_some() {
            // Nothing runs while waiting: the interval starts again once the worker can work.
            next_interval_run = None;
        } else {
            if !interrupted_runs_marked {
                interrupted_runs_marked = mark_interrupted_runs(&mut problems);
                ok &= interrupted_runs_marked;
            }
            match run_queued(&mut problems) {
                Queue::Empty => {}
                Queue::Ran => more_queued = true,
                Queue::Failed => ok = false,
            }
            // One run a cycle, so that what it leaves to send goes before the next: an interval
            // run that is due waits for the next cycle after a queued one.
            if let (Some(interval), Some(due), false) =
                (settings.interval, next_interval_run, more_queued)
            {
                if Instant::now() >= due && !pg::shutdown_requested() {
                    ok &= report(
                        lifecycle::collect_in_worker(WorkerRun::Interval),
                        &mut problems,
                    );
                    // Missed slots (a run longer than the interval) are skipped, not run back to back.
                    let next = due + interval;
                    let now = Instant::now();
                    next_interval_run = Some(if next > now { next } else { now + interval });
                }
            }
            // After a failure the extension may be gone (a run that lost its history): the next
            // cycle checks first, and the schedule and the retention wait for it.
            if ok {
                ok &= note_staleness(&mut schedule_watch, &mut problems);
            }
            if let Err(problem) = deliveries.turn() {
                // Each event keeps its own backoff: the loop's does not apply.
                problems.report(problem);
            }
            if ok
                && !settings.retention.keeps_everything()
                && Instant::now() >= next_retention
                && !pg::shutdown_requested()
            {
                match delete_old_history(settings.retention, &mut problems) {
                    Deleted::All => next_retention = Instant::now() + RETENTION_EVERY,
                    Deleted::Some => more_to_delete = true,
                    Deleted::Failed => {
                        ok = false;
                        next_retention = Instant::now() + RETENTION_EVERY;
                    }
                }
            }
        }

        failures = if ok { 0 } else { failures.saturating_add(1) };
        let backoff = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
        let mut wait = match (failures, more_queued || more_to_delete) {
            (0, true) => Duration::ZERO,
            (0, false) => IDLE_WAIT,
            _ => backoff,
        };
        if let Some(due) = next_interval_run {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if !pg::wait_worker_latch(wait.max(Duration::from_millis(10))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            pg::reload_configuration();
        }
    }
}

/// The settings `ALTER DATABASE` and `ALTER ROLE` store for the worker's session: PostgreSQL
/// applies them when a session connects, and the worker connects once, so it starts again when
/// they change. None when they cannot be read (logged).
fn stored_settings(problems: &mut Problems) -> Option<String> {
    match in_own_transaction(settings::stored_for_session) {
        Ok(stored) => Some(stored),
        Err(error) => {
            problems.report(error.to_string());
            None
        }
    }
}

/// Logs a worker run's problems; true when it did not fail.
fn report(outcome: Result<Vec<String>, Vec<String>>, problems: &mut Problems) -> bool {
    let (found, ran) = match outcome {
        Ok(found) => (found, true),
        Err(found) => (found, false),
    };
    for problem in found {
        problems.report(problem);
    }
    ran
}

/// What a look at the queue came to.
enum Queue {
    /// Nothing was queued.
    Empty,
    /// One queued run ran; more may be waiting.
    Ran,
    /// The queue could not be read, or the run failed: the next cycle checks the extension first.
    Failed,
}

/// Runs the oldest queued run, if there is one. One a cycle: between two, the worker sends what
/// the first left to send (its events, its heartbeat) and notes staleness, as after any run.
fn run_queued(problems: &mut Problems) -> Queue {
    if pg::shutdown_requested() {
        return Queue::Empty;
    }
    match in_own_transaction(history::claim_queued_run) {
        Ok(Some(run)) => {
            if report(
                lifecycle::collect_in_worker(WorkerRun::Queued(run)),
                problems,
            ) {
                Queue::Ran
            } else {
                Queue::Failed
            }
        }
        Ok(None) => Queue::Empty,
        Err(error) => {
            problems.report(format!("could not look for queued runs: {error}"));
            Queue::Failed
        }
    }
}

/// Notes runs stopping or starting again as an event, and logs it. True when it went without error.
fn note_staleness(watch: &mut ScheduleWatch, problems: &mut Problems) -> bool {
    match watch.note_change() {
        Ok(Some(event)) => {
            log!("dex_collector worker: {}", alert_text(&event));
            true
        }
        Ok(None) => true,
        Err(error) => {
            problems.report(format!(
                "could not check whether runs arrive on schedule: {error}"
            ));
            false
        }
    }
}

/// Runs a crash or restart left `running` can never finish: marks them `interrupted`.
fn mark_interrupted_runs(problems: &mut Problems) -> bool {
    match in_own_transaction(history::mark_interrupted_runs) {
        Ok(0) => true,
        Ok(count) => {
            log!("dex_collector worker: marked {count} run(s) left running by a restart or crash as interrupted");
            true
        }
        Err(error) => {
            problems.report(format!("could not mark interrupted runs: {error}"));
            false
        }
    }
}

/// How far a cycle's deletion of old history went.
enum Deleted {
    /// Nothing is left past its retention.
    All,
    /// The cycle's slice of time ran out, or a shutdown came, with more to delete.
    Some,
    /// A batch failed (logged).
    Failed,
}

/// Deletes old history in small transactions, for at most [`RETENTION_SLICE`].
fn delete_old_history(retention: Retention, problems: &mut Problems) -> Deleted {
    let started = Instant::now();
    let mut deleted = 0;
    let outcome = loop {
        if pg::shutdown_requested() || started.elapsed() >= RETENTION_SLICE {
            break Deleted::Some;
        }
        let batch = pg::in_upkeep_transaction(|| {
            history::delete_old_history(retention, RETENTION_RUNS_BATCH, RETENTION_ROWS_BATCH)
        });
        match batch.and_then(|deleted| deleted.map_err(|error| error.to_string())) {
            Ok(0) => break Deleted::All,
            Ok(count) => deleted += count,
            Err(error) => {
                problems.report(format!("could not delete old history: {error}"));
                break Deleted::Failed;
            }
        }
    };
    // Routine, every hour once the history is full: at LOG it would be a line an hour forever.
    if deleted > 0 {
        debug1!("dex_collector worker: deleted {deleted} row(s) of history past their retention");
    }
    outcome
}
