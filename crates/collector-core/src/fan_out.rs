//! The fan-out: every target with credentials called, as many at a time as the run's flow allows
//! (crate::flow), until all are done, the deadline comes, the key is rejected, the caller is
//! interrupted, or a result cannot be recorded.
//!
//! The HTTP work runs on a current-thread tokio runtime driven by the caller's own thread, only in
//! short `block_on` steps that return at each finished company, at the deadline, or as soon as the
//! host says it is interrupted; the host's own work (recording a result, raising an interrupt)
//! happens between steps, on that same thread. In PostgreSQL that keeps every Postgres call on
//! the backend's thread.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::runtime::Runtime;
use tokio::task::{Id, JoinError, JoinSet};

use crate::endpoint::{build_client, collect_company, CompanyOutcome, EndpointConfig, RunIdentity};
use crate::flow::Flow;
use crate::summary::{
    CompanyResult, RunCounts, RunSummary, NO_TARGETS, SKIP_AUTH_REJECTED, SKIP_BOOKKEEPING_FAILED,
    SKIP_CANCELLED, SKIP_DEADLINE, SKIP_NO_CREDENTIALS, STOPPED_AT_DEADLINE,
};
use crate::target::Target;

/// How often a waiting fan-out asks the host whether it is interrupted.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);
/// After this long without a finished company the host is told it is idle.
const IDLE_AFTER: Duration = Duration::from_millis(250);
/// How long the runtime is driven before a run's first request or a webhook's POST (see
/// [`Http::drop_closed_connections`]).
const READ_IDLE_CONNECTIONS: Duration = Duration::from_millis(1);

/// A runtime and an HTTP client, kept across runs so connections are reused.
pub struct Http {
    runtime: Runtime,
    client: Client,
}

impl Http {
    /// `on_thread_start` runs on each of the runtime's helper threads (DNS lookups), e.g. to
    /// block signals meant for the caller's thread. `extra_ca_pem` adds trusted roots.
    pub fn new(
        connect_timeout: Duration,
        pool_size: usize,
        extra_ca_pem: Option<&[u8]>,
        on_thread_start: fn(),
    ) -> Result<Http, HttpError> {
        let client =
            build_client(connect_timeout, pool_size, extra_ca_pem).map_err(HttpError::Client)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .on_thread_start(on_thread_start)
            .build()
            .map_err(|e| HttpError::Runtime(e.to_string()))?;
        Ok(Http { runtime, client })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Nothing drives the runtime between runs: a kept connection that the server closed
    /// meanwhile (Node closes one idle for 5 s) still looks open to the pool, and a request
    /// written on it fails ("connection closed before message completed"), costing a retry.
    /// Parking on the sleep polls the sockets and wakes the tasks of those with an EOF to read;
    /// the yield runs those tasks before any company's, so hyper ends the connections and the
    /// pool discards them.
    pub(crate) fn drop_closed_connections(&self) {
        self.runtime.block_on(async {
            tokio::time::sleep(READ_IDLE_CONNECTIONS).await;
            tokio::task::yield_now().await;
        });
    }

    /// Stops the runtime without waiting for its helper threads (a blocked DNS lookup).
    pub fn shut_down(self) {
        self.runtime.shutdown_background();
    }
}

/// Why [`Http::new`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The client could not be built (in practice: an unusable extra CA certificate).
    Client(String),
    Runtime(String),
}

/// What the fan-out asks of whoever runs it.
pub trait Host {
    /// True when something asks for the host's attention (a cancel, a shutdown, any interrupt it
    /// must serve); asked every 20 ms while requests are awaited.
    fn interrupted(&self) -> bool;
    /// Called once [`Host::interrupted`] said so, with the requests still in flight: true stops
    /// the run as cancelled, false carries on. A host that raises (PostgreSQL's cancel) does not
    /// return, and unwinding aborts the requests.
    fn interrupt(&mut self) -> bool;
    /// Each company's result, called or skipped, once, as soon as it is known: the fan-out keeps
    /// no more of it than its counts (and the result itself when the plan lists results).
    /// `Err(reason)` when it could not be recorded, which stops the run: no company is called
    /// whose result cannot be kept.
    fn record(&mut self, result: CompanyResult) -> Result<(), String>;
    /// No company has finished for a quarter of a second: a host holding results back may write
    /// them now. `Err(reason)` as for [`Host::record`].
    fn idle(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// One company's collection, as a task the runtime can run.
pub type CompanyTask = Pin<Box<dyn Future<Output = CompanyOutcome> + Send + 'static>>;

/// How each company is collected: normally [`Plan::contract_call`]; tests pass their own.
pub type CompanyCall<'a> = dyn Fn(&Target) -> CompanyTask + 'a;

/// What to call and within which limits.
pub struct Plan<'a> {
    pub run: &'a RunIdentity,
    pub targets: &'a [Target],
    /// How many companies at a time; shared with every request of the run.
    pub flow: Arc<Flow>,
    pub deadline: Instant,
    /// Keep every result for the summary's lists (a SQL call returns them); otherwise only the
    /// counts are kept, whatever the number of companies.
    pub list_results: bool,
}

impl Plan<'_> {
    /// The collect-bulk contract for every company, with `endpoint`'s settings.
    pub fn contract_call<'c>(
        &self,
        http: &Http,
        endpoint: &EndpointConfig,
    ) -> Box<CompanyCall<'c>> {
        let client = http.client.clone();
        let config = Arc::new(endpoint.clone());
        let run = Arc::new(self.run.clone());
        let flow = Arc::clone(&self.flow);
        let deadline = self.deadline;
        Box::new(move |target: &Target| {
            let (client, config, run) = (client.clone(), Arc::clone(&config), Arc::clone(&run));
            let flow = Arc::clone(&flow);
            let company_id = target.company_id.clone();
            Box::pin(async move {
                collect_company(&client, &config, &run, &company_id, deadline, &flow).await
            })
        })
    }
}

/// A run's summary; every result went to the host.
pub struct Executed {
    pub summary: RunSummary,
    /// The host stopped the run ([`Host::interrupt`] returned true).
    pub cancelled: bool,
}

/// Requests in flight. Dropping it, including while an interrupt unwinds, aborts them and drives
/// the runtime until they are gone, so no request carries on in the background.
struct InFlight<'rt> {
    tasks: JoinSet<CompanyOutcome>,
    /// Each task's target, and when it was called.
    index_of: HashMap<Id, (usize, Instant)>,
    runtime: &'rt Runtime,
}

impl InFlight<'_> {
    /// Aborts every task: each target's outcome if it had one, or how long it had been called.
    fn abort_all(&mut self) -> Vec<(usize, Result<CompanyOutcome, Duration>)> {
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
                    .map(|(index, _)| (index, Ok(outcome))),
                Err(error) => self
                    .index_of
                    .remove(&error.id())
                    .map(|(index, called)| (index, Err(called.elapsed()))),
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
    Finished(Result<(Id, CompanyOutcome), JoinError>),
    Interrupted,
    DeadlineReached,
    Idle,
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
    /// Why a company left uncalled was skipped.
    fn skip_reason(self) -> &'static str {
        match self {
            Stop::Deadline => SKIP_DEADLINE,
            Stop::AuthRejected => SKIP_AUTH_REJECTED,
            Stop::Cancelled => SKIP_CANCELLED,
            Stop::BookkeepingFailed => SKIP_BOOKKEEPING_FAILED,
        }
    }

    /// The error of a company whose requests the stop cut short.
    fn cut_short(self) -> &'static str {
        match self {
            Stop::Deadline => STOPPED_AT_DEADLINE,
            Stop::AuthRejected => {
                "stopped: the endpoint rejected the service key for another company"
            }
            Stop::Cancelled => "stopped: the run was cancelled while collecting",
            Stop::BookkeepingFailed => "stopped: the run's history could not be written",
        }
    }
}

/// The run's results so far: their counts, each handed to the host, and kept when listed.
struct Results<'t> {
    targets: &'t [Target],
    counts: RunCounts,
    /// In target order, when the plan lists results.
    listed: Option<Vec<Option<CompanyResult>>>,
    record_error: Option<String>,
}

impl Results<'_> {
    /// Counts a company's result and hands it to the host; false when it could not be recorded
    /// (then, and after, the host gets no more).
    fn finish(&mut self, host: &mut dyn Host, index: usize, result: CompanyResult) -> bool {
        self.counts.add(&result);
        if let Some(listed) = &mut self.listed {
            listed[index] = Some(result.clone());
        }
        self.through_host(|| host.record(result))
    }

    /// Lets the host write what it holds; false when it could not.
    fn idle(&mut self, host: &mut dyn Host) -> bool {
        self.through_host(|| host.idle())
    }

    /// Runs one of the host's recording calls unless an earlier one failed; false when this or
    /// an earlier one did, keeping the first reason.
    fn through_host(&mut self, call: impl FnOnce() -> Result<(), String>) -> bool {
        if self.record_error.is_some() {
            return false;
        }
        match call() {
            Ok(()) => true,
            Err(reason) => {
                self.record_error = Some(reason);
                false
            }
        }
    }

    fn called(&mut self, host: &mut dyn Host, index: usize, outcome: CompanyOutcome) -> bool {
        let result = CompanyResult::called(self.targets[index].clone(), outcome);
        self.finish(host, index, result)
    }

    fn skipped(&mut self, host: &mut dyn Host, index: usize, reason: &str) -> bool {
        let result = CompanyResult::skipped(self.targets[index].clone(), reason);
        self.finish(host, index, result)
    }
}

/// Calls the endpoint for every target with credentials, at most `plan.flow`'s limit at a time,
/// through `call`, handing each result to `host` as it comes.
pub fn fan_out(
    http: &Http,
    plan: &Plan<'_>,
    call: &CompanyCall<'_>,
    host: &mut dyn Host,
    started: Instant,
) -> Executed {
    http.drop_closed_connections();
    let targets = plan.targets;
    let mut results = Results {
        targets,
        counts: RunCounts::default(),
        listed: plan.list_results.then(|| vec![None; targets.len()]),
        record_error: None,
    };
    // Targets before it have been called or skipped.
    let mut next = 0;
    let mut in_flight = InFlight {
        tasks: JoinSet::new(),
        index_of: HashMap::new(),
        runtime: &http.runtime,
    };
    let mut stop = None;
    loop {
        // A deadline already past (the targets query took the run's time) calls no one more: the
        // rest are not reached, rather than started and cut short before their first request.
        if stop.is_none() && next < targets.len() && Instant::now() >= plan.deadline {
            stop = Some(Stop::Deadline);
        }
        while stop.is_none() && next < targets.len() && in_flight.tasks.len() < plan.flow.limit() {
            let index = next;
            next += 1;
            let target = &targets[index];
            if !target.has_credentials {
                if !results.skipped(host, index, SKIP_NO_CREDENTIALS) {
                    stop = Some(Stop::BookkeepingFailed);
                }
                continue;
            }
            plan.flow.company_called();
            let handle = in_flight
                .tasks
                .spawn_on(call(target), http.runtime.handle());
            in_flight
                .index_of
                .insert(handle.id(), (index, Instant::now()));
        }
        if in_flight.tasks.is_empty() {
            break;
        }
        let tasks = &mut in_flight.tasks;
        let watched: &dyn Host = &*host;
        let step = http.runtime.block_on(async {
            tokio::select! {
                biased;
                () = interrupted(watched) => Step::Interrupted,
                () = tokio::time::sleep_until(plan.deadline.into()) => Step::DeadlineReached,
                Some(joined) = tasks.join_next_with_id() => Step::Finished(joined),
                () = tokio::time::sleep(IDLE_AFTER) => Step::Idle,
            }
        });
        let ended_early = match step {
            Step::Finished(Ok((id, outcome))) => {
                let auth_rejected = outcome.auth_rejected;
                let kept = match in_flight.index_of.remove(&id) {
                    Some((index, _)) => results.called(host, index, outcome),
                    None => true,
                };
                if !kept {
                    Some(Stop::BookkeepingFailed)
                } else {
                    auth_rejected.then_some(Stop::AuthRejected)
                }
            }
            // A company task cannot panic by design; if one did, its company gets a failed
            // result rather than taking the run down.
            Step::Finished(Err(error)) => match in_flight.index_of.remove(&error.id()) {
                Some((index, called)) => {
                    let outcome = CompanyOutcome {
                        error: Some(
                            "internal error: the company's task ended without a result".into(),
                        ),
                        duration: called.elapsed(),
                        ..Default::default()
                    };
                    (!results.called(host, index, outcome)).then_some(Stop::BookkeepingFailed)
                }
                None => None,
            },
            Step::DeadlineReached => Some(Stop::Deadline),
            Step::Interrupted => host.interrupt().then_some(Stop::Cancelled),
            Step::Idle => (!results.idle(host)).then_some(Stop::BookkeepingFailed),
        };
        if let Some(reason) = ended_early {
            stop = Some(reason);
            for (index, outcome) in in_flight.abort_all() {
                // Its time so far, for its result and the day's durations: a company the deadline
                // always cuts short is among the slowest, not a 0 ms one.
                let outcome = outcome.unwrap_or_else(|called_for| CompanyOutcome {
                    error: Some(reason.cut_short().into()),
                    dropped_by_run: !matches!(reason, Stop::Deadline),
                    duration: called_for,
                    ..Default::default()
                });
                results.called(host, index, outcome);
            }
        }
    }
    // The targets never called: the queue ends only when they are all called, or at a stop.
    for (index, target) in targets.iter().enumerate().skip(next) {
        let reason = match (target.has_credentials, stop) {
            (true, Some(reason)) => reason.skip_reason(),
            _ => SKIP_NO_CREDENTIALS,
        };
        results.skipped(host, index, reason);
    }
    let Results {
        counts,
        listed,
        record_error,
        ..
    } = results;
    // A result that could not be recorded fails the run whatever stopped it: one that stopped at
    // its deadline or at a refused key still lost the results from there on.
    let run_error = match (stop, record_error) {
        (_, Some(reason)) => Some(format!("{SKIP_BOOKKEEPING_FAILED}: {reason}")),
        (Some(Stop::AuthRejected), None) => Some(SKIP_AUTH_REJECTED.to_string()),
        (Some(Stop::Cancelled), None) => Some("the run was cancelled".to_string()),
        (Some(Stop::BookkeepingFailed), None) => Some(SKIP_BOOKKEEPING_FAILED.to_string()),
        (Some(Stop::Deadline) | None, None) if targets.is_empty() => Some(NO_TARGETS.to_string()),
        (Some(Stop::Deadline) | None, None) => None,
    };
    Executed {
        summary: RunSummary {
            run_id: plan.run.id,
            counts,
            results: listed.into_iter().flatten().flatten().collect(),
            duration: started.elapsed(),
            run_error,
            deadline_reached: matches!(stop, Some(Stop::Deadline)),
            flow: plan.flow.report(),
        },
        cancelled: matches!(stop, Some(Stop::Cancelled)),
    }
}

async fn interrupted(host: &dyn Host) {
    while !host.interrupted() {
        tokio::time::sleep(INTERRUPT_POLL).await;
    }
}
