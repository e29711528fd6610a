//! One run inside PostgreSQL: its plan (settings, targets in fair order), and the core's fan-out
//! driven on the backend's own thread, with a [`fan_out::Host`] that polls the backend's
//! interrupt flags (raising a cancel as PostgreSQL does) and hands each result to the caller's
//! way of recording it (`lifecycle`, in batches). The HTTP client and runtime are kept per
//! backend, so connections are reused across companies and runs.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dex_collector_core::batch::ResultBatch;
use dex_collector_core::endpoint::RunIdentity;
use dex_collector_core::fan_out::{self, Executed, Http, HttpError};
use dex_collector_core::flow::{resume_level, Concurrency, Flow};
use dex_collector_core::summary::{CompanyResult, RunSummary};
use dex_collector_core::target::{fair_order, Target};

use crate::error::CollectError;
use crate::history;
use crate::pg;
use crate::settings::{self, CaFile, CallTimeout, ConfigError, Settings};
use crate::targets;
use crate::version;

/// Which companies a call collects.
pub enum Scope {
    All,
    Company(String),
}

impl Scope {
    /// The one company of a `dex_collect_company()` call, recorded with its run.
    pub fn company_id(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Company(company_id) => Some(company_id),
        }
    }
}

/// What a run will do, resolved before its first request.
pub struct Plan {
    pub settings: Settings,
    pub targets: Vec<Target>,
    /// Fixed, or adaptive from near where the latest adaptive runs settled.
    pub concurrency: Concurrency,
    pub deadline: Deadline,
}

/// When a run stops calling the endpoint, from its start: after `dex_collector.run_deadline`, or
/// earlier, for a SQL call, to finish before a timeout of PostgreSQL's would cancel it.
pub struct Deadline {
    pub after: Duration,
    /// The timeout it stops for; `None`: `run_deadline`.
    pub timeout: Option<CallTimeout>,
}

/// What a run keeps of a call's timeout to record its end (the last results, the run's row, the
/// summary): a tenth of what is left, within these bounds.
const RECORDING_TIME: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// A call that would have less than this to collect is refused instead.
const SHORTEST_CALL: Duration = Duration::from_secs(1);

impl Plan {
    /// For a SQL call begun at `started`: stops its calls early enough that `statement_timeout` or
    /// `transaction_timeout` does not cancel it, since a cancelled call loses its history, the
    /// fair order's with it, and so calls the same companies first each time. Refuses a call that
    /// would have no time to collect.
    pub fn stop_before_call_timeout(&mut self, started: Instant) -> Result<(), CollectError> {
        let Some(timeout) = settings::call_timeout()? else {
            return Ok(());
        };
        let recording = (timeout.left / 10).clamp(RECORDING_TIME.0, RECORDING_TIME.1);
        let collecting = timeout.left.saturating_sub(recording);
        if collecting < SHORTEST_CALL {
            return Err(ConfigError::CallTimeoutTooShort {
                setting: timeout.setting,
                value: timeout.value,
            }
            .into());
        }
        let after = started.elapsed() + collecting;
        if after < self.deadline.after {
            self.deadline = Deadline {
                after,
                timeout: Some(timeout),
            };
        }
        Ok(())
    }
}

/// Reads the settings and the targets, in fair order (see [`fair_order`]); for a run of all
/// companies, first forgets the state of companies no longer among them
/// ([`history::forget_companies_not_among`]). `after_targets` runs right after the targets query,
/// the one SQL of the run that the extension does not control, before anything is written. Raises
/// nothing itself: configuration errors are returned.
pub fn plan(
    scope: Scope,
    after_targets: impl FnOnce() -> Result<(), CollectError>,
) -> Result<Plan, CollectError> {
    version::check_installed_version()?;
    let settings = Settings::load()?;
    let targets = targets::load(
        settings.targets_query.as_deref(),
        settings.targets_role.as_deref(),
        settings.run_deadline,
    )?;
    after_targets()?;
    let targets = match scope {
        Scope::All => {
            history::forget_companies_not_among(&targets)?;
            let last_calls = history::last_calls(&targets)?;
            fair_order(targets, &last_calls)
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
    let concurrency = match settings.adaptive_max {
        None => Concurrency::Fixed(settings.concurrency),
        Some(max) => {
            let recent = history::recent_adaptive_runs()?;
            let ceiling = history::recent_adaptive_ceiling()?;
            let resumed = resume_level(&recent.limits, ceiling);
            Concurrency::Adaptive {
                start: resumed.unwrap_or(settings.concurrency),
                max,
                settled: resumed.is_some(),
                ceiling,
                spread: recent.spread,
            }
        }
    };
    Ok(Plan {
        deadline: Deadline {
            after: settings.run_deadline,
            timeout: None,
        },
        settings,
        targets,
        concurrency,
    })
}

/// Where a run's results go: into `batch` as each is known, and each batch that is due to
/// `write`; an error from it stops the run. Whatever `batch` holds at the end is the caller's.
pub struct ResultSink<'a> {
    pub batch: ResultBatch,
    pub write: &'a mut dyn FnMut(Vec<CompanyResult>) -> Result<(), CollectError>,
}

impl ResultSink<'_> {
    fn write_due(&mut self, due: Option<Vec<CompanyResult>>) -> Result<(), String> {
        match due {
            Some(due) => (self.write)(due).map_err(|error| error.to_string()),
            None => Ok(()),
        }
    }
}

/// What an interrupt does to a run.
#[derive(Clone, Copy)]
pub enum Interrupts {
    /// A SQL call: PostgreSQL raises the cancel or terminate, as for any query.
    Raise,
    /// The worker: a shutdown or a cancel stops the run, which then records its end.
    StopRun,
}

/// The backend as the fan-out's host.
struct Backend<'s, 'a> {
    interrupts: Interrupts,
    sink: &'s mut ResultSink<'a>,
}

impl fan_out::Host for Backend<'_, '_> {
    fn interrupted(&self) -> bool {
        pg::exit_if_postmaster_died();
        pg::interrupt_pending()
    }

    fn interrupt(&mut self) -> bool {
        if let Interrupts::StopRun = self.interrupts {
            // The worker: a shutdown or a cancel stops the run. A shutdown comes with a query
            // cancel (for a statement the worker would otherwise finish first): other interrupts
            // are served with cancels held off, and the cancel taken here, where no statement
            // runs, so that the run can record its end.
            pg::serve_interrupts_but_cancel();
            let cancelled = pg::take_query_cancel();
            return cancelled || pg::shutdown_requested();
        }
        // Raises a cancel or terminate (unwinding drops the requests in flight); otherwise serves
        // what else was pending (a signal barrier, say) and the run goes on, unless Postgres holds
        // a cancel off.
        pgrx::check_for_interrupts!();
        pg::cancel_or_terminate_pending()
    }

    fn record(&mut self, result: CompanyResult) -> Result<(), String> {
        let due = self.sink.batch.push(result, Instant::now());
        self.sink.write_due(due)
    }

    fn idle(&mut self) -> Result<(), String> {
        let due = self.sink.batch.take_if_waited(Instant::now());
        self.sink.write_due(due)
    }
}

/// Calls the endpoint for the plan's targets, handing each company's result to `sink`; the
/// summary lists them all only with `list_results` (a SQL call returns them).
pub fn execute(
    plan: &Plan,
    run: &RunIdentity,
    started: Instant,
    interrupts: Interrupts,
    list_results: bool,
    sink: &mut ResultSink<'_>,
) -> Result<Executed, CollectError> {
    with_http(&plan.settings, |http| {
        let fan_out_plan = fan_out::Plan {
            run,
            targets: &plan.targets,
            flow: Arc::new(Flow::new(plan.concurrency)),
            deadline: started + plan.deadline.after,
            list_results,
        };
        let call = fan_out_plan.contract_call(http, &plan.settings.endpoint);
        fan_out::fan_out(
            http,
            &fan_out_plan,
            &*call,
            &mut Backend { interrupts, sink },
            started,
        )
    })
}

/// For a run that the deadline cut short, what to say (a SQL call's WARNING, a worker's problem):
/// how many companies it left out, and, as a hint, what to change.
pub fn deadline_reached(summary: &RunSummary, plan: &Plan) -> Option<(String, String)> {
    if !summary.deadline_reached {
        return None;
    }
    let settings = &plan.settings;
    let not_reached = summary.companies_not_reached();
    let stopped = summary.companies_stopped_at_deadline();
    let called = summary.companies_processed();
    let reached = match &plan.deadline.timeout {
        None => format!(
            "reached dex_collector.run_deadline ({})",
            human_duration(settings.run_deadline)
        ),
        Some(timeout) => format!(
            "stopped calling after {:.1} s, to finish before {} ({}) cancels the call",
            plan.deadline.after.as_secs_f64(),
            timeout.setting,
            timeout.value
        ),
    };
    // Only its numbers differ from one run to the next: the worker tells a problem again only
    // when more than its numbers changed.
    let message = format!(
        "dex_collector run {} {reached}: not called: {not_reached} of {} companies; cut short: \
         {stopped} of the {called} called",
        summary.run_id,
        not_reached + called,
    );
    let concurrency = match summary.flow.adaptive_max {
        None => format!("dex_collector.concurrency (now {})", settings.concurrency),
        Some(max) => match summary.flow.end_limit {
            Some(settled) => format!(
                "dex_collector.max_concurrency (now {max}; the adaptive limit settled at {settled})"
            ),
            None => format!("dex_collector.max_concurrency (now {max})"),
        },
    };
    let longer = match &plan.deadline.timeout {
        None => "dex_collector.run_deadline (keep it under the schedule's interval)".to_string(),
        Some(timeout) => format!(
            "{} for the role that calls it (or call dex_collect_all_async(), which no statement \
             timeout cuts)",
            timeout.setting
        ),
    };
    let hint = format!(
        "The next run calls the companies left out first. To reach every company in one run, raise \
         {concurrency} or {longer}: a run reaches about concurrency × its time ÷ the endpoint's \
         mean time per company."
    );
    Some((message, hint))
}

/// `4min`, `90s`, `1500ms`: as PostgreSQL writes a time setting.
fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(60_000) {
        format!("{}min", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// The per-backend HTTP machinery and the settings it was built with.
struct KeptHttp {
    http: Http,
    built_for: ClientSettings,
}

/// The settings the client was built with; a change rebuilds it.
#[derive(Clone, PartialEq)]
struct ClientSettings {
    connect_timeout: Duration,
    pool_size: usize,
    ca_file: Option<CaFile>,
}

thread_local! {
    // Never dropped: dropping a runtime at process exit could wait on a blocked DNS lookup.
    static HTTP: RefCell<Option<ManuallyDrop<KeptHttp>>> = const { RefCell::new(None) };
}

fn with_http<R>(settings: &Settings, work: impl FnOnce(&Http) -> R) -> Result<R, CollectError> {
    let wanted = ClientSettings {
        connect_timeout: settings.connect_timeout,
        pool_size: settings.adaptive_max.unwrap_or(settings.concurrency),
        ca_file: settings.ca_file.as_deref().map(CaFile::read),
    };
    HTTP.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|kept| kept.built_for != wanted) {
            if let Some(old) = slot.take() {
                ManuallyDrop::into_inner(old).http.shut_down();
            }
            *slot = Some(ManuallyDrop::new(new_http(wanted)?));
        }
        match slot.as_ref() {
            Some(kept) => Ok(work(&kept.http)),
            None => Err(CollectError::Runtime {
                message: "the HTTP client was not kept".into(),
            }),
        }
    })
}

/// An HTTP runtime and client trusting `ca_file`'s certificates besides the system's: the
/// collection's, and the worker's for its deliveries. A CA file that cannot be read or used is a
/// configuration error naming it.
pub fn build_http(
    connect_timeout: Duration,
    pool_size: usize,
    ca_file: Option<&CaFile>,
) -> Result<Http, CollectError> {
    let ca_pem = ca_file
        .map(CaFile::contents)
        .transpose()
        .map_err(|reason| CollectError::Config(ConfigError::CaFile { reason }))?;
    // DNS lookups run on helper threads; keep every signal for the backend's own thread.
    Http::new(connect_timeout, pool_size, ca_pem, pg::block_all_signals).map_err(|error| {
        match (error, ca_file) {
            // With an extra CA file, that is what the client could not take.
            (HttpError::Client(reason), Some(ca_file)) => {
                CollectError::Config(ConfigError::CaFile {
                    reason: format!("{}: {reason}", ca_file.path()),
                })
            }
            (HttpError::Client(message) | HttpError::Runtime(message), _) => {
                CollectError::Runtime { message }
            }
        }
    })
}

fn new_http(settings: ClientSettings) -> Result<KeptHttp, CollectError> {
    let http = build_http(
        settings.connect_timeout,
        settings.pool_size,
        settings.ca_file.as_ref(),
    )?;
    Ok(KeptHttp {
        http,
        built_for: settings,
    })
}
