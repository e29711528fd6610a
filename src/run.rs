//! One run: settings, targets, the concurrent fan-out over the endpoint, the deadline, query
//! cancellation, and the summary recorded in the history.
//!
//! The HTTP work runs on a current-thread tokio runtime driven by the backend's own thread, so no
//! Postgres function is ever called from another thread. The runtime is only driven in short
//! `block_on` steps that return at each finished company, at the deadline, or as soon as a cancel
//! or terminate is pending; Postgres work (history, interrupt handling) happens between steps.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::runtime::Runtime;
use tokio::task::{Id, JoinSet};

use crate::backend;
use crate::endpoint::{build_client, collect_company, CompanyOutcome, EndpointConfig, RunIdentity};
use crate::error::{warn_with_hint, CollectError, ConfigError};
use crate::history;
use crate::settings::Settings;
use crate::summary::{
    CompanyResult, RunSummary, SKIP_AUTH_REJECTED, SKIP_BOOKKEEPING_FAILED, SKIP_CANCELLED,
    SKIP_DEADLINE, SKIP_NO_CREDENTIALS, STOPPED_AT_DEADLINE,
};
use crate::targets::{self, Target};

/// How often a waiting run looks at the backend's cancel and terminate flags.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

/// Which companies a call collects.
pub enum Scope {
    All,
    Company(String),
}

/// What a run will do, resolved before its first request.
pub struct Plan {
    pub settings: Settings,
    pub targets: Vec<Target>,
}

/// Reads the settings and the targets, in fair order (see [`targets::fair_order`]). Raises
/// nothing itself: configuration errors are returned.
pub fn plan(scope: Scope) -> Result<Plan, CollectError> {
    history::check_installed_version()?;
    let settings = Settings::load()?;
    let targets = targets::load(settings.targets_query.as_deref())?;
    let targets = match scope {
        Scope::All => {
            let last_calls = history::last_calls(&targets)?;
            targets::fair_order(targets, &last_calls)
        }
        Scope::Company(company_id) => {
            let targets: Vec<Target> = targets
                .into_iter()
                .filter(|target| target.company_id == company_id)
                .collect();
            if targets.is_empty() {
                return Err(CollectError::UnknownCompany { company_id });
            }
            targets
        }
    };
    Ok(Plan { settings, targets })
}

/// Where each called company's result goes as soon as it is known: `Ok(true)` when it is recorded
/// there and then (the worker commits it), `Ok(false)` when it is left for the end of the run, an
/// error when it could not be recorded, which stops the run: no company is called whose result
/// cannot be kept.
pub type ResultSink<'a> = dyn FnMut(&CompanyResult) -> Result<bool, CollectError> + 'a;

/// A run's summary, and which of its results the sink recorded (same order).
pub struct Executed {
    pub summary: RunSummary,
    pub recorded: Vec<bool>,
}

impl Executed {
    /// The results the sink did not record: every one for a SQL call, the skipped ones and any
    /// the fan-out ended without passing through the sink for the worker.
    pub fn unrecorded(&self) -> Vec<CompanyResult> {
        self.summary
            .results
            .iter()
            .zip(&self.recorded)
            .filter(|(_, recorded)| !**recorded)
            .map(|(result, _)| result.clone())
            .collect()
    }
}

/// Calls the endpoint for the plan's targets, handing each called company's result to `sink`.
pub fn execute(
    plan: &Plan,
    run: &RunIdentity,
    started: Instant,
    sink: &mut ResultSink<'_>,
) -> Result<Executed, CollectError> {
    let deadline = started + plan.settings.run_deadline;
    let fan_out = with_http(&plan.settings, |http| {
        fan_out(http, &plan.settings, run, &plan.targets, deadline, sink)
    })?;
    let summary = RunSummary {
        run_id: run.id,
        results: fan_out.results,
        duration: started.elapsed(),
        run_error: fan_out.run_error,
        deadline_reached: fan_out.deadline_reached,
    };
    if summary.deadline_reached {
        warn_deadline_reached(&summary, &plan.settings);
    }
    Ok(Executed {
        summary,
        recorded: fan_out.recorded,
    })
}

/// One WARNING per run that the deadline cut short: how many companies it left out, and what
/// to change. It reaches the server log from the worker and pg_cron, and the caller too.
fn warn_deadline_reached(summary: &RunSummary, settings: &Settings) {
    let not_reached = summary.companies_not_reached();
    let stopped = summary.companies_stopped_at_deadline();
    let called = summary.companies_processed();
    let message = format!(
        "dex_collector run {} reached dex_collector.run_deadline ({}): {not_reached} of {} companies \
         were not called, {stopped} of the {called} called were cut short",
        summary.run_id,
        human_duration(settings.run_deadline),
        not_reached + called,
    );
    let hint = format!(
        "The next run calls the companies left out first. To reach every company in one run, raise \
         dex_collector.concurrency (now {}) or dex_collector.run_deadline (keep it under the \
         schedule's interval): a run reaches about concurrency × run_deadline ÷ the endpoint's \
         mean time per company.",
        settings.concurrency
    );
    warn_with_hint(message, hint);
}

/// `4min`, `90s`, `1500ms`: as PostgreSQL writes a time setting.
fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 60_000 == 0 {
        format!("{}min", millis / 60_000)
    } else if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// The per-backend HTTP machinery, kept across runs so connections are reused.
struct Http {
    runtime: Runtime,
    client: Client,
    built_for: ClientSettings,
}

/// The settings the client was built with; a change rebuilds it.
#[derive(Clone, PartialEq)]
struct ClientSettings {
    connect_timeout: Duration,
    pool_size: usize,
    ca_file: Option<String>,
}

thread_local! {
    // Never dropped: dropping a runtime at process exit could wait on a blocked DNS lookup.
    static HTTP: RefCell<Option<ManuallyDrop<Http>>> = const { RefCell::new(None) };
}

fn with_http<R>(settings: &Settings, work: impl FnOnce(&Http) -> R) -> Result<R, CollectError> {
    let wanted = ClientSettings {
        connect_timeout: settings.connect_timeout,
        pool_size: settings.concurrency,
        ca_file: settings.ca_file.clone(),
    };
    HTTP.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|http| http.built_for != wanted) {
            if let Some(old) = slot.take() {
                ManuallyDrop::into_inner(old).runtime.shutdown_background();
            }
            *slot = Some(ManuallyDrop::new(new_http(wanted)?));
        }
        match slot.as_ref() {
            Some(http) => Ok(work(http)),
            None => Err(CollectError::Runtime {
                message: "the HTTP client was not kept".into(),
            }),
        }
    })
}

fn new_http(settings: ClientSettings) -> Result<Http, CollectError> {
    let ca_pem = match &settings.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CollectError::Config(ConfigError::CaFile {
                reason: format!("cannot read {path}: {e}"),
            })
        })?),
        None => None,
    };
    let client = build_client(
        settings.connect_timeout,
        settings.pool_size,
        ca_pem.as_deref(),
    )
    .map_err(|reason| CollectError::Config(ConfigError::CaFile { reason }))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        // DNS lookups run on helper threads; keep every signal for the backend's own thread.
        .on_thread_start(backend::block_all_signals)
        .build()
        .map_err(|e| CollectError::Runtime {
            message: e.to_string(),
        })?;
    Ok(Http {
        runtime,
        client,
        built_for: settings,
    })
}

async fn cancel_or_terminate_requested() {
    while !backend::cancel_or_terminate_pending() {
        tokio::time::sleep(INTERRUPT_POLL).await;
    }
}

/// Requests in flight. Dropping it, including while an ERROR unwinds, aborts them and drives the
/// runtime until they are gone, so no request carries on in the background.
struct InFlight<'rt> {
    tasks: JoinSet<CompanyOutcome>,
    index_of: std::collections::HashMap<Id, usize>,
    runtime: &'rt Runtime,
}

impl InFlight<'_> {
    fn abort_all(&mut self) -> Vec<(usize, Option<CompanyOutcome>)> {
        self.tasks.abort_all();
        let tasks = &mut self.tasks;
        let ended = self.runtime.block_on(async {
            let mut ended = Vec::new();
            while let Some(joined) = tasks.join_next_with_id().await {
                ended.push(joined);
            }
            // Let the connection tasks see their requests dropped and close.
            tokio::task::yield_now().await;
            ended
        });
        ended
            .into_iter()
            .filter_map(|joined| match joined {
                Ok((id, outcome)) => self
                    .index_of
                    .remove(&id)
                    .map(|index| (index, Some(outcome))),
                Err(error) => self.index_of.remove(&error.id()).map(|index| (index, None)),
            })
            .collect()
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.abort_all();
        }
    }
}

enum Step {
    Finished(Result<(Id, CompanyOutcome), tokio::task::JoinError>),
    Interrupted,
    DeadlineReached,
}

/// Why a run stopped before calling every company.
#[derive(Clone, Copy)]
enum Stop {
    Deadline,
    AuthRejected,
    Cancelled,
    BookkeepingFailed,
}

impl Stop {
    fn reason(self) -> &'static str {
        match self {
            Stop::Deadline => SKIP_DEADLINE,
            Stop::AuthRejected => SKIP_AUTH_REJECTED,
            Stop::Cancelled => SKIP_CANCELLED,
            Stop::BookkeepingFailed => SKIP_BOOKKEEPING_FAILED,
        }
    }
}

struct FanOut {
    results: Vec<CompanyResult>,
    recorded: Vec<bool>,
    run_error: Option<String>,
    deadline_reached: bool,
}

/// Calls the endpoint for every target with credentials, `concurrency` at a time.
fn fan_out(
    http: &Http,
    settings: &Settings,
    run: &RunIdentity,
    targets: &[Target],
    deadline: Instant,
    sink: &mut ResultSink<'_>,
) -> FanOut {
    let config = Arc::new(settings.endpoint.clone());
    let run = Arc::new(run.clone());
    let mut results: Vec<Option<CompanyResult>> = vec![None; targets.len()];
    let mut recorded = vec![false; targets.len()];
    let mut bookkeeping_error: Option<CollectError> = None;
    // Records one finished company; false when its result could not be kept.
    let mut finish = |index: usize, outcome: CompanyOutcome| -> bool {
        let result = CompanyResult::called(targets[index].clone(), outcome);
        let kept = if bookkeeping_error.is_some() {
            false
        } else {
            match sink(&result) {
                Ok(now) => {
                    recorded[index] = now;
                    true
                }
                Err(error) => {
                    bookkeeping_error = Some(error);
                    false
                }
            }
        };
        results[index] = Some(result);
        kept
    };
    let mut queue = targets
        .iter()
        .enumerate()
        .filter(|(_, target)| target.has_credentials);
    let mut in_flight = InFlight {
        tasks: JoinSet::new(),
        index_of: Default::default(),
        runtime: &http.runtime,
    };
    let mut stop = None;
    loop {
        while stop.is_none() && in_flight.tasks.len() < settings.concurrency {
            let Some((index, target)) = queue.next() else {
                break;
            };
            let task = company_task(
                http.client.clone(),
                Arc::clone(&config),
                Arc::clone(&run),
                target,
                deadline,
            );
            let handle = in_flight.tasks.spawn_on(task, http.runtime.handle());
            in_flight.index_of.insert(handle.id(), index);
        }
        if in_flight.tasks.is_empty() {
            break;
        }
        let tasks = &mut in_flight.tasks;
        let step = http.runtime.block_on(async {
            tokio::select! {
                biased;
                () = cancel_or_terminate_requested() => Step::Interrupted,
                () = tokio::time::sleep_until(deadline.into()) => Step::DeadlineReached,
                Some(joined) = tasks.join_next_with_id() => Step::Finished(joined),
            }
        });
        let ended_early = match step {
            Step::Finished(Ok((id, outcome))) => {
                let auth_rejected = outcome.auth_rejected;
                let kept = match in_flight.index_of.remove(&id) {
                    Some(index) => finish(index, outcome),
                    None => true,
                };
                if !kept {
                    Some(Stop::BookkeepingFailed)
                } else {
                    auth_rejected.then_some(Stop::AuthRejected)
                }
            }
            // A company task cannot panic by design; if one did, its company gets a failed
            // result below (recorded at the run's end) rather than taking the run down.
            Step::Finished(Err(error)) => {
                in_flight.index_of.remove(&error.id());
                None
            }
            Step::DeadlineReached => Some(Stop::Deadline),
            Step::Interrupted => {
                // Raises the cancel or terminate; unwinding drops `in_flight`, which aborts the
                // requests. Returning means Postgres is holding the interrupt off: stop anyway.
                pgrx::check_for_interrupts!();
                Some(Stop::Cancelled)
            }
        };
        if let Some(reason) = ended_early {
            stop = Some(reason);
            for (index, outcome) in in_flight.abort_all() {
                finish(index, outcome.unwrap_or_else(|| stopped_outcome(reason)));
            }
        }
    }
    let results = targets
        .iter()
        .zip(results)
        .map(
            |(target, result)| match (result, target.has_credentials, stop) {
                (Some(result), _, _) => result,
                (None, false, _) => CompanyResult::skipped(target.clone(), SKIP_NO_CREDENTIALS),
                (None, true, Some(reason)) => {
                    CompanyResult::skipped(target.clone(), reason.reason())
                }
                (None, true, None) => CompanyResult::called(
                    target.clone(),
                    CompanyOutcome {
                        error: Some(
                            "internal error: the company's task ended without a result".into(),
                        ),
                        ..Default::default()
                    },
                ),
            },
        )
        .collect();
    let run_error = match stop {
        Some(Stop::AuthRejected) => Some(SKIP_AUTH_REJECTED.to_string()),
        Some(Stop::BookkeepingFailed) => Some(format!(
            "{SKIP_BOOKKEEPING_FAILED}: {}",
            bookkeeping_error.map_or_else(String::new, |error| error.to_string())
        )),
        _ => None,
    };
    FanOut {
        results,
        recorded,
        run_error,
        deadline_reached: matches!(stop, Some(Stop::Deadline)),
    }
}

/// The outcome of a company whose requests were cut short by a stop.
fn stopped_outcome(stop: Stop) -> CompanyOutcome {
    let error = match stop {
        Stop::Deadline => STOPPED_AT_DEADLINE,
        Stop::AuthRejected => "stopped: the endpoint rejected the service key for another company",
        Stop::Cancelled => "stopped: the run was cancelled while collecting",
        Stop::BookkeepingFailed => "stopped: the run's history could not be written",
    };
    CompanyOutcome {
        error: Some(error.into()),
        ..Default::default()
    }
}

fn company_task(
    client: Client,
    config: Arc<EndpointConfig>,
    run: Arc<RunIdentity>,
    target: &Target,
    deadline: Instant,
) -> impl std::future::Future<Output = CompanyOutcome> + Send + 'static {
    let company_id = target.company_id.clone();
    async move { collect_company(&client, &config, &run, &company_id, deadline).await }
}
