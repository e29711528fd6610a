//! The history over a month (issue #22, "a history that stays small"): N companies (1,000)
//! collected every 5 minutes for D days (30), about 2 % of the results failing, in simulated
//! time, recorded by the very statements the extension runs: `history_sql::RECORD_RESULTS` for
//! each run's results, and `DELETE_OLD_HISTORY` every simulated hour at the default retentions.
//! Once with `dex_collector.history_detail` 'all' and once with 'changes', each in a database of
//! its own in one throwaway cluster (autovacuum as PostgreSQL ships it).
//!
//! It reports, per mode: the bytes a company's day of history takes at steady state, each
//! table's size and dead tuples at the end, `dex_collector.history_size`, and the time of
//! docs/monitoring.md's queries and of the rollup views. And it fails unless the history is what
//! the simulation says it must be: every run's counts; in 'changes' mode every failure and every
//! change of a company's results kept (the rows 'all' keeps, byte for byte); the events; the
//! daily rollups, as the simulation adds them up and identical in both modes.
//!
//! Nothing calls an endpoint: results are made up here, by a seeded generator (both modes record
//! the same ones), and go into the statement as production builds them
//! (`CompanyResult::history_row()`). The failure model:
//!
//! - 2 % of the companies have no DEX credentials: skipped at every run;
//! - flapping companies (12 %) have bad spells, 2 hours on average, 8 hours apart, in which 70 %
//!   of their runs fail;
//! - outage-prone companies (3 %) are down for 1 to 12 hours, 1 to 4 times a month, every run
//!   failing meanwhile; one in five of them is also down once for 1 to 3 days;
//! - the endpoint is down for everyone for two runs every ten days;
//! - and any company fails a run now and then (0.3 %).
//!
//! Successes answer 200 with one page (after a streak of an hour of failures, the backlog comes
//! as 50 pages, the cap, with more pending), a log-normal time (median 800 ms). Failures are HTTP
//! 500 (not retried), 502 and 503 (retried twice) and timeouts (retried twice).
//!
//! What it does not reproduce, and what that does to the sizes: a month passes in minutes, so
//! autovacuum, which wakes every `autovacuum_naptime` of real time, comes hundreds of times less
//! often per simulated hour than it would (`--autovacuum-naptime 1` narrows the gap); and each
//! run's results are one statement, as `dex_collect_all()` records them, where the background
//! worker records each company in a transaction of its own (the run's row is then updated once
//! per company, and a page's old row versions can be pruned between two companies).
//!
//! Simulated time ends at the real time the program starts, so the views that read `now()` see
//! a recent history. Run it through `scripts/bench.sh --history-month`, which installs the
//! release build first; `--simulate-only` prints the failure model's figures without a database.

#![forbid(unsafe_code)]

#[path = "../random.rs"]
mod random;

use random::Random;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dex_collector_core::endpoint::CompanyOutcome;
use dex_collector_core::history_sql::{
    HistoryDetail, DEFAULT_EVENT_RETENTION_DAYS, DEFAULT_HISTORY_RETENTION_DAYS,
    DEFAULT_ROLLUP_RETENTION_DAYS, DELETE_OLD_HISTORY, DURATION_BUCKETS, RECORD_RESULTS,
    RETENTION_ROWS_BATCH, RETENTION_RUNS_BATCH,
};
use dex_collector_core::summary::{CompanyResult, ResultStatus, SKIP_NO_CREDENTIALS};
use dex_collector_core::target::Target;
use dex_collector_e2e::cluster::{ClusterOptions, TestCluster};
use dex_collector_e2e::readme;
use postgres::types::Type;
use postgres::{Client, NoTls, Statement};
use serde_json::Value;

type BenchResult<T> = Result<T, String>;

const USAGE: &str = "\
usage: dex-history-bench [--days D] [--companies N] [--seed S] [--autovacuum-naptime SECONDS]
           D days (30) of a run every 5 minutes over N companies (1000), recorded with
           history_detail 'all' and then 'changes', reported and checked; the cluster's
           autovacuum_naptime is PostgreSQL's default (60 s) unless given
       dex-history-bench --simulate-only [--days D] [--companies N] [--seed S]
           the simulated results alone, without a database: failures, their streaks, events";

const DEFAULT_DAYS: u32 = 30;
const DEFAULT_COMPANIES: u32 = 1_000;
const DEFAULT_SEED: u64 = 20_261_202;

/// The cadence the issue asks for: a run every 5 minutes.
const RUN_EVERY_S: i64 = 300;
const RUNS_PER_DAY: u32 = 288;
const RUNS_PER_HOUR: u32 = 12;
const SECONDS_PER_DAY: i64 = 86_400;
/// A run's results are recorded this long after it starts (`$7`); it ends a little later.
const RECORDED_AFTER_S: i64 = 30;
const FINISHED_AFTER_S: i64 = 45;

/// `dex_collector.alert_after_failures` and `alert_after` at their defaults.
const ALERT_AFTER_FAILURES: i32 = 3;
const ALERT_AFTER_MS: i64 = 3_600_000;

/// The target: a day of history for 1,000 companies in under 5 MB.
const TARGET_BYTES_PER_COMPANY_DAY: f64 = 5_000_000.0 / 1_000.0;

const HISTORY_TABLES: [&str; 5] = [
    "runs",
    "run_results",
    "companies",
    "events",
    "daily_rollups",
];
/// Kept for `history_retention`: their size stops growing once they hold that many days.
const WINDOWED_TABLES: [&str; 2] = ["runs", "run_results"];
/// Kept longer than the simulation lasts: they grow by a day's rows every day.
const GROWING_TABLES: [&str; 2] = ["events", "daily_rollups"];
/// The growing tables' growth per day is measured over the last this many days.
const GROWTH_WINDOW_DAYS: u32 = 10;

const MONITORING: &str = include_str!("../../../../docs/monitoring.md");
/// The company docs/monitoring.md's last query reads: it is simulated company 1.
const SAMPLE_COMPANY: &str = "a0000000-0000-4000-8000-000000000001";
/// Timed executions of each query, after one untimed.
const QUERY_REPEATS: usize = 3;

// The failure model (see the top of this file).
const NO_CREDENTIALS_SHARE: f64 = 0.02;
const FLAPPING_SHARE: f64 = 0.12;
const OUTAGE_PRONE_SHARE: f64 = 0.03;
/// Any company, outside a bad spell or an outage: a failure now and then, a run at a time.
const TRANSIENT_FAILURE: f64 = 0.003;
/// A flapping company's bad spells: their mean length, the mean time between them, and the
/// share of runs that fail in one.
const BAD_SPELL_MEAN_RUNS: f64 = 24.0;
const GOOD_SPELL_MEAN_RUNS: f64 = 96.0;
const BAD_SPELL_FAILURE: f64 = 0.7;
/// An outage-prone company's outages in 30 days (1 to this many) and their length in runs
/// (log-uniform: 1 to 12 hours); some are also down once for 1 to 3 days.
const OUTAGES_PER_30_DAYS_MAX: u64 = 4;
const OUTAGE_RUNS: (f64, f64) = (12.0, 144.0);
const LONG_OUTAGE_SHARE: f64 = 0.2;
const LONG_OUTAGE_RUNS: (f64, f64) = (288.0, 864.0);
/// The endpoint down for every company: this many runs every this many days, in the afternoon.
const INCIDENT_EVERY_DAYS: u32 = 10;
const INCIDENT_RUNS: u32 = 2;
const INCIDENT_AT_RUN_OF_DAY: u32 = 170;
/// Failed runs in a row (an hour) after which data has piled up: the next success pages to the
/// cap (`dex_collector.max_pages`' default) and leaves more pending.
const BACKLOG_AFTER_FAILURES: u32 = 12;
const MAX_PAGES: u32 = 50;
/// `dex_collector.max_retries`' default: 502, 503 and timeouts are tried this many times more.
const MAX_RETRIES: u32 = 2;

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("dex-history-bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = if options.simulate_only {
        simulate_only(&options);
        Ok(())
    } else {
        bench(&options)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-history-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Options {
    days: u32,
    companies: u32,
    seed: u64,
    /// `autovacuum_naptime` in seconds; `None`: PostgreSQL's default (60 s).
    autovacuum_naptime_s: Option<u32>,
    simulate_only: bool,
}

impl Options {
    fn total_runs(&self) -> u32 {
        self.days * RUNS_PER_DAY
    }
}

/// `Ok(None)` asks for the usage text.
fn parse_args(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        days: DEFAULT_DAYS,
        companies: DEFAULT_COMPANIES,
        seed: DEFAULT_SEED,
        autovacuum_naptime_s: None,
        simulate_only: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{name}: \"{text}\" is not a whole number"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--days" => options.days = between("--days", value("--days")?, 1, 3_650)?,
            "--companies" => {
                options.companies = between("--companies", value("--companies")?, 1, 100_000)?
            }
            "--seed" => options.seed = value("--seed")?,
            // PostgreSQL's own range for it.
            "--autovacuum-naptime" => {
                options.autovacuum_naptime_s = Some(between(
                    "--autovacuum-naptime",
                    value("--autovacuum-naptime")?,
                    1,
                    2_147_483,
                )?)
            }
            "--simulate-only" => options.simulate_only = true,
            other => return Err(format!("unknown argument \"{other}\"")),
        }
    }
    Ok(Some(options))
}

fn between(name: &str, value: u64, low: u32, high: u32) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|value| (low..=high).contains(value))
        .ok_or_else(|| format!("{name} must be between {low} and {high}"))
}

/// How a call to the endpoint fails, as the collector reports it (crates/collector-core's
/// endpoint.rs: the error texts, which statuses are retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    ServerError,
    BadGateway,
    Unavailable,
    TimedOut,
}

impl Failure {
    /// Of the failures that come and go: mostly gateways and overload, some errors, timeouts.
    fn random(random: &mut Random) -> Failure {
        match random.below(20) {
            0..=7 => Failure::BadGateway,
            8..=12 => Failure::Unavailable,
            13..=16 => Failure::ServerError,
            _ => Failure::TimedOut,
        }
    }

    fn http_status(self) -> Option<u16> {
        match self {
            Failure::ServerError => Some(500),
            Failure::BadGateway => Some(502),
            Failure::Unavailable => Some(503),
            Failure::TimedOut => None,
        }
    }

    fn error(self) -> &'static str {
        match self {
            Failure::ServerError => "HTTP 500: Internal Server Error",
            Failure::BadGateway => "HTTP 502: Bad gateway",
            Failure::Unavailable => "HTTP 503: Service unavailable",
            Failure::TimedOut => "timed out after 60 s",
        }
    }

    fn attempts(self) -> u32 {
        match self {
            Failure::ServerError => 1,
            Failure::BadGateway | Failure::Unavailable | Failure::TimedOut => 1 + MAX_RETRIES,
        }
    }

    fn duration_ms(self, random: &mut Random) -> i64 {
        let ms = match self {
            Failure::ServerError => random.log_normal(400.0, 0.5),
            // Three answers, with the backoff between them.
            Failure::BadGateway | Failure::Unavailable => random.log_normal(3_000.0, 0.4),
            // Three request timeouts of 60 s, with the backoff between them.
            Failure::TimedOut => 180_000.0 + random.log_normal(2_000.0, 0.5),
        };
        ms.round() as i64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(Failure),
    /// For want of credentials (the only skip the simulation makes).
    Skipped,
}

/// One company's result in one run, before it becomes a `CompanyResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SimResult {
    company: usize,
    outcome: Outcome,
    pages: u32,
    attempts: u32,
    records: i64,
    machines: i64,
    duration_ms: i64,
    more_pending: bool,
}

impl SimResult {
    fn status(&self) -> ResultStatus {
        match self.outcome {
            Outcome::Succeeded => ResultStatus::Succeeded,
            Outcome::Failed(_) => ResultStatus::Failed,
            Outcome::Skipped => ResultStatus::Skipped,
        }
    }

    fn http_status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Succeeded => Some(200),
            Outcome::Failed(failure) => failure.http_status(),
            Outcome::Skipped => None,
        }
    }

    /// The result as the collector hands it to the history, so that its JSON row is
    /// `CompanyResult::history_row()`'s own.
    fn company_result(&self, target: &Target) -> CompanyResult {
        let failure = match self.outcome {
            Outcome::Skipped => return CompanyResult::skipped(target.clone(), SKIP_NO_CREDENTIALS),
            Outcome::Succeeded => None,
            Outcome::Failed(failure) => Some(failure),
        };
        CompanyResult::called(
            target.clone(),
            CompanyOutcome {
                success: failure.is_none(),
                http_status: self.http_status(),
                pages: self.pages,
                attempts: self.attempts,
                records: self.records,
                machines: self.machines,
                error: failure.map(|failure| failure.error().to_string()),
                more_pending: self.more_pending,
                auth_rejected: false,
                dropped_by_run: false,
                duration: Duration::from_millis(self.duration_ms.unsigned_abs()),
            },
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    NoCredentials,
    Steady,
    Flapping,
    OutageProne,
}

/// Runs `first_run..end_run` of one company all fail the same way.
#[derive(Clone, Copy, Debug)]
struct Outage {
    first_run: u32,
    end_run: u32,
    failure: Failure,
}

impl Outage {
    fn random(random: &mut Random, total_runs: u32, length_runs: (f64, f64)) -> Outage {
        let first_run = random.below(u64::from(total_runs)) as u32;
        let length = random.log_uniform(length_runs).round() as u32;
        Outage {
            first_run,
            end_run: first_run.saturating_add(length),
            failure: Failure::random(random),
        }
    }

    fn covers(&self, run: u32) -> bool {
        (self.first_run..self.end_run).contains(&run)
    }
}

struct SimCompany {
    target: Target,
    profile: Profile,
    /// Machines it has: a success updates some of them.
    machines: i64,
    outages: Vec<Outage>,
    /// A flapping company's bad spell.
    in_bad_spell: bool,
    failed_in_a_row: u32,
}

/// Every company's results, run after run, from one seed.
struct Fleet {
    companies: Vec<SimCompany>,
    /// The first run of each incident (the endpoint down for everyone).
    incidents: Vec<u32>,
    random: Random,
}

/// Simulated company `n` (1-based): company 1 is docs/monitoring.md's sample company.
fn company_id(n: u32) -> String {
    format!("a0000000-0000-4000-8000-{n:012x}")
}

impl Fleet {
    fn new(options: &Options) -> Fleet {
        let total_runs = options.total_runs();
        let mut random = Random(options.seed);
        let companies = (1..=options.companies)
            .map(|n| {
                let draw = random.unit();
                let profile = if n == 1 {
                    // The sample company: the common case.
                    Profile::Steady
                } else if draw < NO_CREDENTIALS_SHARE {
                    Profile::NoCredentials
                } else if draw < NO_CREDENTIALS_SHARE + FLAPPING_SHARE {
                    Profile::Flapping
                } else if draw < NO_CREDENTIALS_SHARE + FLAPPING_SHARE + OUTAGE_PRONE_SHARE {
                    Profile::OutageProne
                } else {
                    Profile::Steady
                };
                let machines = random.log_uniform((1.0, 200.0)).round() as i64;
                let mut outages = Vec::new();
                if profile == Profile::OutageProne {
                    let in_30_days = 1 + random.below(OUTAGES_PER_30_DAYS_MAX);
                    let count = (in_30_days as f64 * f64::from(options.days) / 30.0)
                        .round()
                        .max(1.0) as u32;
                    for _ in 0..count {
                        outages.push(Outage::random(&mut random, total_runs, OUTAGE_RUNS));
                    }
                    if random.chance(LONG_OUTAGE_SHARE) {
                        outages.push(Outage::random(&mut random, total_runs, LONG_OUTAGE_RUNS));
                    }
                }
                SimCompany {
                    target: Target {
                        company_id: company_id(n),
                        company_name: format!("Simulated Vending {n:06}"),
                        has_credentials: profile != Profile::NoCredentials,
                    },
                    profile,
                    machines,
                    outages,
                    in_bad_spell: false,
                    failed_in_a_row: 0,
                }
            })
            .collect();
        let incidents = (1..)
            .map(|k| k * INCIDENT_EVERY_DAYS - 1)
            .take_while(|&day| day < options.days)
            .map(|day| day * RUNS_PER_DAY + INCIDENT_AT_RUN_OF_DAY)
            .collect();
        Fleet {
            companies,
            incidents,
            random: Random(options.seed.wrapping_add(1)),
        }
    }

    fn count(&self, profile: Profile) -> usize {
        self.companies
            .iter()
            .filter(|company| company.profile == profile)
            .count()
    }

    /// Every company's result of run `run` (0-based), in the companies' order.
    fn results(&mut self, run: u32) -> Vec<SimResult> {
        let incident = self
            .incidents
            .iter()
            .any(|&first| (first..first + INCIDENT_RUNS).contains(&run));
        let Fleet {
            companies, random, ..
        } = self;
        companies
            .iter_mut()
            .enumerate()
            .map(|(index, company)| company.result(index, run, incident, random))
            .collect()
    }
}

impl SimCompany {
    fn result(&mut self, index: usize, run: u32, incident: bool, random: &mut Random) -> SimResult {
        let skipped = SimResult {
            company: index,
            outcome: Outcome::Skipped,
            pages: 0,
            attempts: 0,
            records: 0,
            machines: 0,
            duration_ms: 0,
            more_pending: false,
        };
        if self.profile == Profile::NoCredentials {
            return skipped;
        }
        // A flapping company's spells go on whatever else happens.
        if self.profile == Profile::Flapping {
            let mean_runs = if self.in_bad_spell {
                BAD_SPELL_MEAN_RUNS
            } else {
                GOOD_SPELL_MEAN_RUNS
            };
            if random.chance(1.0 / mean_runs) {
                self.in_bad_spell = !self.in_bad_spell;
            }
        }
        let failure = if let Some(outage) = self.outages.iter().find(|outage| outage.covers(run)) {
            Some(outage.failure)
        } else if incident {
            Some(Failure::Unavailable)
        } else if self.in_bad_spell {
            random
                .chance(BAD_SPELL_FAILURE)
                .then(|| Failure::random(random))
        } else {
            random
                .chance(TRANSIENT_FAILURE)
                .then(|| Failure::random(random))
        };
        if let Some(failure) = failure {
            self.failed_in_a_row += 1;
            return SimResult {
                outcome: Outcome::Failed(failure),
                pages: 0,
                attempts: failure.attempts(),
                duration_ms: failure.duration_ms(random),
                ..skipped
            };
        }
        let backlog = self.failed_in_a_row >= BACKLOG_AFTER_FAILURES;
        self.failed_in_a_row = 0;
        let pages = if backlog { MAX_PAGES } else { 1 };
        let machines = random.below(self.machines.unsigned_abs() + 1) as i64;
        let records = machines * (1 + random.below(40) as i64) * i64::from(pages);
        let duration = random.log_normal(800.0, 0.6) * f64::from(pages);
        SimResult {
            outcome: Outcome::Succeeded,
            pages,
            attempts: pages,
            records,
            machines,
            duration_ms: duration.round() as i64,
            more_pending: backlog,
            ..skipped
        }
    }
}

/// The rollups' duration bucket, `floor(3 * log2(ms + 1))` capped at the last, in integers:
/// the largest `b` with `2^b <= (ms + 1)^3`, so no rounding decides it.
fn duration_bucket(ms: i64) -> usize {
    // The cube overflows u128 only past two centuries of milliseconds: the last bucket.
    (u128::from(ms.unsigned_abs()) + 1)
        .checked_pow(3)
        .map_or(DURATION_BUCKETS - 1, |cube| {
            ((127 - cube.leading_zeros()) as usize).min(DURATION_BUCKETS - 1)
        })
}

/// What one run must leave in `runs` and `run_results`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RunTally {
    started_at: i64,
    succeeded: i64,
    failed: i64,
    skipped: i64,
    records: i64,
    machines: i64,
    /// The `run_results` rows history_detail 'changes' keeps.
    rows_if_changes: i64,
}

/// One company's day in `daily_rollups`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rollup {
    attempts: i32,
    succeeded: i32,
    failed: i32,
    skipped: i32,
    requests: i32,
    records: i64,
    machines: i64,
    duration_max: Option<i64>,
    histogram: Vec<i16>,
}

impl Rollup {
    fn new() -> Rollup {
        Rollup {
            attempts: 0,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            requests: 0,
            records: 0,
            machines: 0,
            duration_max: None,
            histogram: vec![0; DURATION_BUCKETS],
        }
    }
}

/// A company's health as RECORD_RESULTS' comments define it, kept here independently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Health {
    last: Option<(ResultStatus, Option<u16>)>,
    /// Its state is 'skipped': its latest result was a skip for want of credentials.
    skipped: bool,
    failures: i32,
    failing_since: Option<i64>,
    alerted: bool,
    ever_succeeded: bool,
    /// The failure streak under way (for the figures only).
    streak: u32,
}

impl Health {
    fn state(&self) -> &'static str {
        if self.skipped {
            "skipped"
        } else if self.alerted {
            "failing"
        } else if self.ever_succeeded {
            "ok"
        } else {
            "never_collected"
        }
    }
}

/// An event a company's result must make.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExpectedEvent {
    run: u32,
    company: usize,
    kind: &'static str,
    consecutive_failures: i32,
}

/// What the history must hold, by the simulation's own account.
#[derive(Clone, Debug, Default, PartialEq)]
struct Expected {
    runs: Vec<RunTally>,
    events: Vec<ExpectedEvent>,
    /// By (company, UTC day as days since 1970-01-01): the order of `ORDER BY company_id, day`.
    rollups: BTreeMap<(usize, i64), Rollup>,
    health: Vec<Health>,
    /// Lengths of the failure streaks that ended (and, after `finish`, those still open).
    streaks: Vec<u32>,
}

impl Expected {
    fn new(companies: usize) -> Expected {
        Expected {
            health: vec![Health::default(); companies],
            ..Expected::default()
        }
    }

    /// Accounts for run `run`'s results, recorded at `recorded_at` (Unix seconds).
    fn observe(&mut self, run: u32, started_at: i64, recorded_at: i64, results: &[SimResult]) {
        let mut tally = RunTally {
            started_at,
            ..RunTally::default()
        };
        let day = recorded_at.div_euclid(SECONDS_PER_DAY);
        for result in results {
            let status = result.status();
            let health = &mut self.health[result.company];
            let was_succeeded = matches!(health.last, Some((ResultStatus::Succeeded, _)));
            let was_http = health.last.and_then(|(_, http)| http);
            tally.rows_if_changes += i64::from(match status {
                ResultStatus::Failed => true,
                ResultStatus::Succeeded => {
                    !was_succeeded || result.more_pending || result.http_status() != was_http
                }
                // A company without credentials when it becomes so.
                ResultStatus::Skipped => !health.skipped,
            });
            let mut event = |kind: &'static str, consecutive_failures: i32| {
                self.events.push(ExpectedEvent {
                    run,
                    company: result.company,
                    kind,
                    consecutive_failures,
                })
            };
            let was_skipped = health.skipped;
            health.skipped = status == ResultStatus::Skipped;
            if was_skipped && !health.skipped {
                event("collectable", 0);
            }
            match status {
                ResultStatus::Succeeded => {
                    tally.succeeded += 1;
                    if health.alerted {
                        event("recovered", 0);
                    }
                    health.failures = 0;
                    health.failing_since = None;
                    health.alerted = false;
                    health.ever_succeeded = true;
                }
                ResultStatus::Failed => {
                    tally.failed += 1;
                    health.failures += 1;
                    let since = *health.failing_since.get_or_insert(recorded_at);
                    let alerted = health.alerted
                        || health.failures >= ALERT_AFTER_FAILURES
                        || (recorded_at - since) * 1000 >= ALERT_AFTER_MS;
                    if alerted && !health.alerted {
                        event("failing", health.failures);
                    }
                    health.alerted = alerted;
                }
                ResultStatus::Skipped => {
                    tally.skipped += 1;
                    if !was_skipped {
                        event("skipped", health.failures);
                    }
                }
            }
            if status == ResultStatus::Failed {
                health.streak += 1;
            } else if health.streak > 0 {
                self.streaks.push(health.streak);
                health.streak = 0;
            }
            health.last = Some((status, result.http_status()));
            tally.records += result.records;
            tally.machines += result.machines;

            let rollup = self
                .rollups
                .entry((result.company, day))
                .or_insert_with(Rollup::new);
            match status {
                ResultStatus::Succeeded => rollup.succeeded += 1,
                ResultStatus::Failed => rollup.failed += 1,
                ResultStatus::Skipped => rollup.skipped += 1,
            }
            if status != ResultStatus::Skipped {
                rollup.attempts += 1;
                rollup.duration_max = rollup.duration_max.max(Some(result.duration_ms));
                let bucket = &mut rollup.histogram[duration_bucket(result.duration_ms)];
                // As the statement counts: a bucket stops at smallint's maximum.
                *bucket = bucket.saturating_add(1);
            }
            rollup.requests += result.attempts as i32;
            rollup.records += result.records;
            rollup.machines += result.machines;
        }
        self.runs.push(tally);
    }

    /// Counts the failure streaks still open at the end.
    fn finish(&mut self) {
        for health in &mut self.health {
            if health.streak > 0 {
                self.streaks.push(health.streak);
                health.streak = 0;
            }
        }
    }

    fn total(&self, field: fn(&RunTally) -> i64) -> i64 {
        self.runs.iter().map(field).sum()
    }
}

/// Unix seconds as the `timestamptz` parameter.
fn at(unix_seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
}

fn simulate(options: &Options, start: i64) -> (Fleet, Expected) {
    let mut fleet = Fleet::new(options);
    let mut expected = Expected::new(fleet.companies.len());
    for run in 0..options.total_runs() {
        let started_at = start + i64::from(run) * RUN_EVERY_S;
        let results = fleet.results(run);
        expected.observe(run, started_at, started_at + RECORDED_AFTER_S, &results);
    }
    expected.finish();
    (fleet, expected)
}

fn simulate_only(options: &Options) {
    let (fleet, expected) = simulate(options, 0);
    print_simulation(options, &fleet, &expected);
}

fn percent(part: i64, whole: i64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn print_simulation(options: &Options, fleet: &Fleet, expected: &Expected) {
    let runs = options.total_runs();
    let succeeded = expected.total(|run| run.succeeded);
    let failed = expected.total(|run| run.failed);
    let skipped = expected.total(|run| run.skipped);
    let called = succeeded + failed;
    let long_outages = fleet
        .companies
        .iter()
        .filter(|company| {
            company
                .outages
                .iter()
                .any(|outage| f64::from(outage.end_run - outage.first_run) >= LONG_OUTAGE_RUNS.0)
        })
        .count();
    println!(
        "Simulated: {} companies, {} days of a run every 5 minutes: {runs} runs, {} results (seed {}).",
        options.companies,
        options.days,
        succeeded + failed + skipped,
        options.seed
    );
    println!(
        "Companies: {} without credentials (skipped at every run, {:.1} % of the results), {} flapping, \
         {} outage-prone ({long_outages} of them down once for a day or more), {} steady; \
         {} incidents of {INCIDENT_RUNS} runs in which every company fails.",
        fleet.count(Profile::NoCredentials),
        percent(skipped, succeeded + failed + skipped),
        fleet.count(Profile::Flapping),
        fleet.count(Profile::OutageProne),
        fleet.count(Profile::Steady),
        fleet.incidents.len()
    );
    let in_streaks = |low: u32, high: u32| -> i64 {
        expected
            .streaks
            .iter()
            .filter(|&&length| (low..=high).contains(&length))
            .map(|&length| i64::from(length))
            .sum()
    };
    let longest = expected.streaks.iter().max().copied().unwrap_or(0);
    println!(
        "Failures: {failed} of {called} called results ({:.2} %; {:.2} % of all results), in {} streaks: \
         {:.0} % of the failures alone, {:.0} % in streaks of 2 to 11 runs, {:.0} % in streaks of an hour \
         or more (12 runs+); the longest {longest} runs ({:.1} h).",
        percent(failed, called),
        percent(failed, succeeded + failed + skipped),
        expected.streaks.len(),
        percent(in_streaks(1, 1), failed),
        percent(in_streaks(2, 11), failed),
        percent(in_streaks(12, u32::MAX), failed),
        f64::from(longest) / f64::from(RUNS_PER_HOUR)
    );
    let events = |kind: &str| expected.events.iter().filter(|e| e.kind == kind).count();
    println!(
        "Events: {} failing, {} recovered, {} skipped. run_results rows a day: all {:.0}, changes {:.0} \
         (on average over the {} days).",
        events("failing"),
        events("recovered"),
        events("skipped"),
        expected.total(|run| run.succeeded + run.failed + run.skipped) as f64
            / f64::from(options.days),
        expected.total(|run| run.rows_if_changes) as f64 / f64::from(options.days),
        options.days
    );
}

/// A postgres error with the server's message, detail, hint and context, which its Display hides.
fn sql_error(action: &str, error: &postgres::Error) -> String {
    let mut message = format!("{action}: {error}");
    if let Some(db) = error.as_db_error() {
        message.push_str(&format!(": {}", db.message()));
        for (label, part) in [
            ("detail", db.detail()),
            ("hint", db.hint()),
            ("context", db.where_()),
        ] {
            if let Some(part) = part {
                message.push_str(&format!("\n  {label}: {part}"));
            }
        }
    }
    message
}

trait SqlContext<T> {
    fn context(self, action: impl FnOnce() -> String) -> BenchResult<T>;
}

impl<T> SqlContext<T> for Result<T, postgres::Error> {
    fn context(self, action: impl FnOnce() -> String) -> BenchResult<T> {
        self.map_err(|error| sql_error(&action(), &error))
    }
}

fn connect(cluster: &TestCluster, database: &str) -> BenchResult<Client> {
    Client::connect(&cluster.connection_string(database), NoTls)
        .context(|| format!("connecting to database {database}"))
}

/// One table's size and tuples, as the statistics say.
#[derive(Clone, Debug)]
struct TableStats {
    name: String,
    bytes: i64,
    live: i64,
    dead: i64,
    autovacuums: i64,
    autoanalyzes: i64,
    updates: i64,
    hot_updates: i64,
}

fn table_stats(client: &mut Client) -> BenchResult<Vec<TableStats>> {
    // Statistics reach the shared ones when a session goes idle, at most once a second: this
    // session's own counts of the last statements first.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .context(|| "flushing the statistics".to_string())?;
    let names: Vec<String> = HISTORY_TABLES.iter().map(|name| name.to_string()).collect();
    let rows = client
        .query(
            "SELECT t.name, pg_total_relation_size(('dex_collector.' || t.name)::regclass),
                    coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
                    coalesce(s.autovacuum_count, 0), coalesce(s.autoanalyze_count, 0),
                    coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0)
               FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n)
               LEFT JOIN pg_stat_user_tables s ON s.schemaname = 'dex_collector' AND s.relname = t.name
              ORDER BY t.n",
            &[&names],
        )
        .context(|| "reading the tables' sizes and statistics".to_string())?;
    Ok(rows
        .iter()
        .map(|row| TableStats {
            name: row.get(0),
            bytes: row.get(1),
            live: row.get(2),
            dead: row.get(3),
            autovacuums: row.get(4),
            autoanalyzes: row.get(5),
            updates: row.get(6),
            hot_updates: row.get(7),
        })
        .collect())
}

fn bytes_of(tables: &[TableStats], name: &str) -> i64 {
    tables
        .iter()
        .find(|table| table.name == name)
        .map_or(0, |table| table.bytes)
}

fn megabytes(bytes: i64) -> String {
    format!("{:.2}", bytes as f64 / 1_000_000.0)
}

/// `DELETE_OLD_HISTORY` as the worker runs it: until it deletes nothing, one transaction each.
struct Retention {
    statement: Statement,
    calls: u64,
    deleted: i64,
    time: Duration,
}

impl Retention {
    fn prepare(client: &mut Client) -> BenchResult<Retention> {
        let statement = client
            .prepare_typed(
                DELETE_OLD_HISTORY,
                &[
                    Type::FLOAT8,
                    Type::INT8,
                    Type::FLOAT8,
                    Type::FLOAT8,
                    Type::TIMESTAMPTZ,
                    Type::INT8,
                ],
            )
            .context(|| "preparing DELETE_OLD_HISTORY".to_string())?;
        Ok(Retention {
            statement,
            calls: 0,
            deleted: 0,
            time: Duration::ZERO,
        })
    }

    fn run(&mut self, client: &mut Client, now: i64) -> BenchResult<()> {
        let seconds = |days: u32| f64::from(days) * SECONDS_PER_DAY as f64;
        let began = Instant::now();
        loop {
            let deleted: i64 = client
                .query_one(
                    &self.statement,
                    &[
                        &seconds(DEFAULT_HISTORY_RETENTION_DAYS),
                        &RETENTION_RUNS_BATCH,
                        &seconds(DEFAULT_EVENT_RETENTION_DAYS),
                        &seconds(DEFAULT_ROLLUP_RETENTION_DAYS),
                        &at(now),
                        &RETENTION_ROWS_BATCH,
                    ],
                )
                .context(|| "DELETE_OLD_HISTORY".to_string())?
                .get(0);
            self.calls += 1;
            self.deleted += deleted;
            if deleted == 0 {
                break;
            }
        }
        self.time += began.elapsed();
        Ok(())
    }
}

/// A query's server-side execution times (EXPLAIN ANALYZE) and the rows it returns.
struct QueryTiming {
    title: String,
    times_ms: Vec<f64>,
    rows: i64,
}

impl QueryTiming {
    fn median_ms(&self) -> f64 {
        let mut sorted = self.times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// docs/monitoring.md's first sql block, query by query (each with its comment line), and the
/// rollup views.
fn timed_queries() -> Vec<(String, String)> {
    let blocks = readme::sql_blocks(MONITORING);
    let mut queries: Vec<(String, String)> = blocks
        .first()
        .map(String::as_str)
        .unwrap_or_default()
        .split(";\n")
        .map(str::trim)
        .filter(|query| !query.is_empty())
        .map(|query| {
            let title = query.lines().next().unwrap_or_default();
            (
                title.trim_start_matches("-- ").to_string(),
                query.to_string(),
            )
        })
        .collect();
    queries.push((
        "A company's last 30 days (company_days).".to_string(),
        format!(
            "SELECT * FROM dex_collector.company_days WHERE company_id = '{SAMPLE_COMPANY}'
              ORDER BY day DESC LIMIT 30"
        ),
    ));
    queries.push((
        "All companies' last 30 days (daily_totals).".to_string(),
        "SELECT * FROM dex_collector.daily_totals
          WHERE day > (now() AT TIME ZONE 'UTC')::date - 30 ORDER BY day DESC"
            .to_string(),
    ));
    queries.push((
        "What the history takes (history_size).".to_string(),
        "SELECT * FROM dex_collector.history_size".to_string(),
    ));
    queries
}

fn time_queries(client: &mut Client) -> BenchResult<Vec<QueryTiming>> {
    let mut timings = Vec::new();
    for (title, query) in timed_queries() {
        client
            .query(query.as_str(), &[])
            .context(|| format!("{title}\n{query}"))?;
        let mut times_ms = Vec::new();
        let mut rows = 0;
        for _ in 0..QUERY_REPEATS {
            let explained: Value = client
                .query_one(
                    format!("EXPLAIN (ANALYZE, FORMAT JSON) {query}").as_str(),
                    &[],
                )
                .context(|| format!("EXPLAIN ANALYZE of {title}"))?
                .get(0);
            times_ms.push(explained[0]["Execution Time"].as_f64().unwrap_or(f64::NAN));
            rows = explained[0]["Plan"]["Actual Rows"].as_i64().unwrap_or(-1);
        }
        timings.push(QueryTiming {
            title,
            times_ms,
            rows,
        });
    }
    Ok(timings)
}

/// One mode's month, and what it left.
struct ModeRun {
    detail: HistoryDetail,
    client: Client,
    run_ids: Vec<i64>,
    expected: Expected,
    record_ms: Vec<f64>,
    wall: Duration,
    retention: Retention,
    /// The tables at the end of each simulated day.
    days: Vec<Vec<TableStats>>,
    /// After the last retention pass.
    tables: Vec<TableStats>,
    history_size: Vec<String>,
    /// Each table's mean row, its data alone (`pg_column_size`), at the end.
    row_bytes: Vec<f64>,
    queries: Vec<QueryTiming>,
    /// Real seconds between the simulated end and the queries: what `now()` adds in the views.
    query_lag_s: f64,
    problems: Vec<String>,
}

fn bench(options: &Options) -> BenchResult<()> {
    // Simulated time ends now (to the 5 minutes), so the views' now() sees a recent history.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| format!("the clock is before 1970: {error}"))?
        .as_secs() as i64;
    let end = now - now.rem_euclid(RUN_EVERY_S);
    let start = end - i64::from(options.days) * SECONDS_PER_DAY;

    let began = Instant::now();
    let (fleet, simulated) = simulate(options, start);
    print_simulation(options, &fleet, &simulated);
    println!(
        "(the simulation alone: {:.1} s)\n",
        began.elapsed().as_secs_f64()
    );

    let cluster = TestCluster::start(ClusterOptions {
        settings: options
            .autovacuum_naptime_s
            .map(|seconds| ("autovacuum_naptime".to_string(), format!("{seconds}s")))
            .into_iter()
            .collect(),
        ..ClusterOptions::default()
    })
    .map_err(|error| format!("starting a throwaway cluster: {error}"))?;
    let mut admin = cluster
        .connect()
        .map_err(|error| format!("connecting to the throwaway cluster: {error}"))?;
    print_settings(&mut admin, options)?;

    let mut modes = Vec::new();
    for detail in [HistoryDetail::All, HistoryDetail::Changes] {
        let mode = run_mode(&cluster, &mut admin, options, start, detail)?;
        if mode.expected != simulated {
            return Err(format!(
                "the simulation of mode '{}' differs from the first one: it is not deterministic",
                detail.as_str()
            ));
        }
        modes.push(mode);
    }
    let mut problems: Vec<String> = Vec::new();
    if let [all, changes] = modes.as_mut_slice() {
        problems = compare_modes(all, changes)?;
    }
    print_summary(options, &modes);
    for mode in &modes {
        problems.extend(
            mode.problems
                .iter()
                .map(|problem| format!("'{}': {problem}", mode.detail.as_str())),
        );
    }
    if problems.is_empty() {
        println!(
            "\nChecks passed: every run's counts; the run_results rows of each mode (every failure \
             kept in 'changes', each row as 'all' has it); the events and the companies' states, as \
             the simulation says and identical in both modes; the daily rollups, as the simulation \
             adds them up and identical in both modes."
        );
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed:\n- {}",
            problems.len(),
            problems.join("\n- ")
        ))
    }
}

fn print_settings(admin: &mut Client, options: &Options) -> BenchResult<()> {
    let rows = admin
        .query(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings
              WHERE name LIKE 'autovacuum%' OR name IN ('server_version', 'fsync', 'shared_buffers',
                    'maintenance_work_mem', 'vacuum_cost_limit', 'vacuum_cost_delay')
              ORDER BY name",
            &[],
        )
        .context(|| "reading the cluster's settings".to_string())?;
    let settings: Vec<String> = rows
        .iter()
        .map(|row| format!("{} {}", row.get::<_, String>(0), row.get::<_, String>(1)))
        .collect();
    println!(
        "Throwaway cluster, PostgreSQL's defaults but fsync off{}: {}.\n",
        options
            .autovacuum_naptime_s
            .map_or(String::new(), |seconds| format!(
                " and autovacuum_naptime {seconds} s"
            )),
        settings.join(", ")
    );
    Ok(())
}

fn run_mode(
    cluster: &TestCluster,
    admin: &mut Client,
    options: &Options,
    start: i64,
    detail: HistoryDetail,
) -> BenchResult<ModeRun> {
    let database = format!("history_{}", detail.as_str());
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .context(|| format!("creating database {database}"))?;
    let mut client = connect(cluster, &database)?;
    client
        .batch_execute("CREATE EXTENSION dex_collector")
        .context(|| {
            "CREATE EXTENSION dex_collector (install the release build of this tree first: \
         scripts/bench.sh --history-month does)"
                .to_string()
        })?;
    let record = client
        .prepare_typed(
            RECORD_RESULTS,
            // The types the extension binds them with (src/history.rs).
            &[
                Type::INT8,
                Type::JSONB,
                Type::INT4,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
            ],
        )
        .context(|| {
            "preparing RECORD_RESULTS (is the installed extension this tree's?)".to_string()
        })?;
    let insert_run = client
        .prepare(
            "INSERT INTO dex_collector.runs (started_at, status, trigger, companies_total)
             VALUES ($1, 'running', 'worker', $2) RETURNING id",
        )
        .context(|| "preparing the runs insert".to_string())?;
    // Only the status and end: the counts are RECORD_RESULTS' to keep, and checked.
    let finish_run = client
        .prepare(
            "UPDATE dex_collector.runs SET status = 'succeeded', finished_at = $2 WHERE id = $1",
        )
        .context(|| "preparing the runs update".to_string())?;
    let mut retention = Retention::prepare(&mut client)?;

    println!("## history_detail = '{}'\n", detail.as_str());
    println!(
        "Each simulated day: RECORD_RESULTS per run (mean), DELETE_OLD_HISTORY (sum), then each \
         table with its indexes (MB) and its dead tuples.\n"
    );
    println!(
        "| day | record (ms) | retention (ms) | runs | run_results | companies | events | daily_rollups | total (MB) | dead: runs | run_results | companies | events | daily_rollups |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");

    let companies = i32::try_from(options.companies)
        .map_err(|_| "too many companies for companies_total".to_string())?;
    let began = Instant::now();
    let mut fleet = Fleet::new(options);
    let mut expected = Expected::new(fleet.companies.len());
    let mut run_ids = Vec::new();
    let mut record_ms = Vec::new();
    let mut days = Vec::new();
    let mut day_record_ms = 0.0;
    let mut day_retention = retention.time;
    for run in 0..options.total_runs() {
        let started_at = start + i64::from(run) * RUN_EVERY_S;
        let recorded_at = started_at + RECORDED_AFTER_S;
        // The worker deletes old history once an hour.
        if run > 0 && run % RUNS_PER_HOUR == 0 {
            retention.run(&mut client, started_at)?;
        }
        let run_id: i64 = client
            .query_one(&insert_run, &[&at(started_at), &companies])
            .context(|| format!("inserting run {run}"))?
            .get(0);
        let results = fleet.results(run);
        expected.observe(run, started_at, recorded_at, &results);
        let rows = Value::Array(
            results
                .iter()
                .map(|result| {
                    result
                        .company_result(&fleet.companies[result.company].target)
                        .history_row()
                })
                .collect(),
        );
        let recording = Instant::now();
        client
            .execute(
                &record,
                &[
                    &run_id,
                    &rows,
                    &ALERT_AFTER_FAILURES,
                    &Some(ALERT_AFTER_MS),
                    &SKIP_NO_CREDENTIALS,
                    &detail.as_str(),
                    &at(recorded_at),
                ],
            )
            .context(|| format!("RECORD_RESULTS of run {run_id}"))?;
        let ms = recording.elapsed().as_secs_f64() * 1000.0;
        record_ms.push(ms);
        day_record_ms += ms;
        client
            .execute(&finish_run, &[&run_id, &at(started_at + FINISHED_AFTER_S)])
            .context(|| format!("finishing run {run_id}"))?;
        run_ids.push(run_id);

        if (run + 1) % RUNS_PER_DAY == 0 {
            let tables = table_stats(&mut client)?;
            let cell = |name: &str, of: fn(&TableStats) -> i64| {
                tables.iter().find(|table| table.name == name).map_or(0, of)
            };
            let total: i64 = tables.iter().map(|table| table.bytes).sum();
            let mut line = format!(
                "| {} | {:.1} | {:.0} |",
                (run + 1) / RUNS_PER_DAY,
                day_record_ms / f64::from(RUNS_PER_DAY),
                (retention.time - day_retention).as_secs_f64() * 1000.0
            );
            for name in HISTORY_TABLES {
                line.push_str(&format!(" {} |", megabytes(cell(name, |t| t.bytes))));
            }
            line.push_str(&format!(" {} |", megabytes(total)));
            for name in HISTORY_TABLES {
                line.push_str(&format!(" {} |", cell(name, |t| t.dead)));
            }
            println!("{line}");
            days.push(tables);
            day_record_ms = 0.0;
            day_retention = retention.time;
        }
    }
    // The last hour's pass, at the end of the simulated time.
    retention.run(
        &mut client,
        start + i64::from(options.total_runs()) * RUN_EVERY_S,
    )?;
    expected.finish();
    let wall = began.elapsed();
    let tables = table_stats(&mut client)?;
    let mut row_bytes = Vec::new();
    for name in HISTORY_TABLES {
        let query = format!(
            "SELECT coalesce(avg(pg_column_size(t.*)), 0)::float8 FROM dex_collector.{name} t"
        );
        row_bytes.push(
            client
                .query_one(query.as_str(), &[])
                .context(|| query.clone())?
                .get(0),
        );
    }

    // history_size reads the retention settings: the library defines them when it loads.
    client
        .batch_execute("LOAD 'dex_collector'")
        .context(|| "LOAD 'dex_collector'".to_string())?;
    let query_lag_s = SystemTime::now()
        .duration_since(at(start + i64::from(options.total_runs()) * RUN_EVERY_S))
        .map_or(0.0, |lag| lag.as_secs_f64());
    let queries = time_queries(&mut client)?;
    let history_size = client
        .query(
            "SELECT format('| %s | %s | %s | %s | %s | %s |', table_name, rows, bytes,
                           rows_last_day, coalesce(retention::text, '-'),
                           coalesce(projected_bytes::text, '-'))
               FROM dex_collector.history_size",
            &[],
        )
        .context(|| "SELECT * FROM dex_collector.history_size".to_string())?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut mode = ModeRun {
        detail,
        client,
        run_ids,
        expected,
        record_ms,
        wall,
        retention,
        days,
        tables,
        history_size,
        row_bytes,
        queries,
        query_lag_s,
        problems: Vec::new(),
    };
    mode.problems = check_mode(&mut mode, options)?;
    println!(
        "\n'{}': {:.0} s for {} runs; checks: {}.\n",
        detail.as_str(),
        mode.wall.as_secs_f64(),
        options.total_runs(),
        if mode.problems.is_empty() {
            "passed".to_string()
        } else {
            format!("{} failed (listed at the end)", mode.problems.len())
        }
    );
    Ok(mode)
}

/// Up to this many differences of one kind are listed.
const LISTED_DIFFERENCES: usize = 5;

/// Lists the differences between `expected` and `found`, aligned by position.
fn differences<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &[T],
    found: &[T],
) -> Vec<String> {
    let mut problems = Vec::new();
    if expected.len() != found.len() {
        problems.push(format!(
            "{what}: {} expected, {} found",
            expected.len(),
            found.len()
        ));
    }
    let differing: Vec<(usize, (&T, &T))> = expected
        .iter()
        .zip(found)
        .enumerate()
        .filter(|(_, (expected, found))| expected != found)
        .collect();
    if !differing.is_empty() {
        let listed: Vec<String> = differing
            .iter()
            .take(LISTED_DIFFERENCES)
            .map(|(index, (expected, found))| {
                format!("#{index}: expected {expected:?}, found {found:?}")
            })
            .collect();
        problems.push(format!(
            "{what}: {} differ; {}",
            differing.len(),
            listed.join("; ")
        ));
    }
    problems
}

/// The checks one mode's database answers alone: against the simulation.
fn check_mode(mode: &mut ModeRun, options: &Options) -> BenchResult<Vec<String>> {
    let mut problems = Vec::new();
    let client = &mut mode.client;
    let expected = &mode.expected;
    // Kept: the runs that started within history_retention of the last pass.
    let kept_from = options.days.saturating_sub(DEFAULT_HISTORY_RETENTION_DAYS) * RUNS_PER_DAY;
    let kept = kept_from as usize..mode.run_ids.len();

    // (c) Each kept run, with the counts RECORD_RESULTS kept in it.
    type RunRow = (i64, i64, String, i32, i32, i32, i32, i32, i64, i64);
    let found: Vec<RunRow> = client
        .query(
            "SELECT id, extract(epoch FROM started_at)::bigint, status, companies_total,
                    companies_processed, companies_succeeded, companies_failed, companies_skipped,
                    records_collected, machines_updated
               FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .context(|| "reading the runs".to_string())?
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get(7),
                row.get(8),
                row.get(9),
            )
        })
        .collect();
    let companies = options.companies as i32;
    let wanted: Vec<RunRow> = kept
        .clone()
        .map(|index| {
            let tally = &expected.runs[index];
            (
                mode.run_ids[index],
                tally.started_at,
                "succeeded".to_string(),
                companies,
                (tally.succeeded + tally.failed) as i32,
                tally.succeeded as i32,
                tally.failed as i32,
                tally.skipped as i32,
                tally.records,
                tally.machines,
            )
        })
        .collect();
    problems.extend(differences(
        "runs kept (id, started_at, status, total, processed, succeeded, failed, skipped, records, machines)",
        &wanted,
        &found,
    ));
    let miscounted = found
        .iter()
        .filter(|run| run.5 + run.6 + run.7 != companies)
        .count();
    if miscounted > 0 {
        problems.push(format!(
            "{miscounted} run(s) whose succeeded + failed + skipped is not {companies}"
        ));
    }

    // (b) run_results, run by run: every result in 'all'; in 'changes' every failure, and the
    // changes the simulation counts.
    // (succeeded, failed, skipped) rows of each run.
    type Counts = (i64, i64, i64);
    let by_run: BTreeMap<i64, Counts> = client
        .query(
            "SELECT run_id, count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'failed'),
                    count(*) FILTER (WHERE status = 'skipped')
               FROM dex_collector.run_results GROUP BY run_id",
            &[],
        )
        .context(|| "counting run_results by run".to_string())?
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
        .collect();
    let kept_ids: Vec<i64> = mode.run_ids[kept.clone()].to_vec();
    let orphans = by_run
        .keys()
        .filter(|run_id| kept_ids.binary_search(run_id).is_err())
        .count();
    if orphans > 0 {
        problems.push(format!(
            "run_results rows of {orphans} run(s) that retention deleted"
        ));
    }
    let (wanted, found): (Vec<Counts>, Vec<Counts>) = kept
        .clone()
        .map(|index| {
            let tally = &expected.runs[index];
            let (succeeded, failed, skipped) = by_run
                .get(&mode.run_ids[index])
                .copied()
                .unwrap_or_default();
            match mode.detail {
                HistoryDetail::All => (
                    (tally.succeeded, tally.failed, tally.skipped),
                    (succeeded, failed, skipped),
                ),
                HistoryDetail::Changes => (
                    (mode.run_ids[index], tally.failed, tally.rows_if_changes),
                    (mode.run_ids[index], failed, succeeded + failed + skipped),
                ),
            }
        })
        .unzip();
    problems.extend(differences(
        match mode.detail {
            HistoryDetail::All => "run_results per run (succeeded, failed, skipped)",
            HistoryDetail::Changes => "run_results per run (run, failed, rows)",
        },
        &wanted,
        &found,
    ));
    let failures_in_window: i64 = kept.clone().map(|index| expected.runs[index].failed).sum();
    let failed_rows: i64 = by_run.values().map(|counts| counts.1).sum();
    if failed_rows != failures_in_window {
        problems.push(format!(
            "{failed_rows} failed rows in run_results, {failures_in_window} failures simulated in the kept runs"
        ));
    }

    // The events: each change of a company's state, as the simulation judges it.
    let ids: Vec<String> = (1..=options.companies).map(company_id).collect();
    let mut wanted: Vec<(i64, String, String, i64)> = expected
        .events
        .iter()
        .map(|event| {
            (
                mode.run_ids[event.run as usize],
                ids[event.company].clone(),
                event.kind.to_string(),
                i64::from(event.consecutive_failures),
            )
        })
        .collect();
    wanted.sort();
    let found: Vec<(i64, String, String, i64)> = client
        .query(
            "SELECT run_id, company_id::text, kind, (details->>'consecutive_failures')::bigint
               FROM dex_collector.events ORDER BY run_id, company_id, kind",
            &[],
        )
        .context(|| "reading the events".to_string())?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    problems.extend(differences(
        "events (run, company, kind, consecutive_failures)",
        &wanted,
        &found,
    ));

    // Each company's state at the end.
    let wanted: Vec<(String, String, i32, bool)> = expected
        .health
        .iter()
        .zip(&ids)
        .map(|(health, id)| {
            (
                id.clone(),
                health.state().to_string(),
                health.failures,
                health.alerted,
            )
        })
        .collect();
    let found: Vec<(String, String, i32, bool)> = client
        .query(
            "SELECT company_id::text, state, consecutive_failures, alerted
               FROM dex_collector.companies ORDER BY company_id",
            &[],
        )
        .context(|| "reading the companies".to_string())?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    problems.extend(differences(
        "companies (id, state, consecutive_failures, alerted)",
        &wanted,
        &found,
    ));

    // (a) The daily rollups, as the simulation adds every result up.
    let wanted: Vec<(String, i64, Rollup)> = expected
        .rollups
        .iter()
        .map(|((company, day), rollup)| (ids[*company].clone(), *day, rollup.clone()))
        .collect();
    let found: Vec<(String, i64, Rollup)> = client
        .query(
            "SELECT company_id::text, (day - date '1970-01-01')::bigint, attempts, succeeded,
                    failed, skipped, requests, records_collected, machines_updated,
                    duration_ms_max, duration_histogram
               FROM dex_collector.daily_rollups ORDER BY company_id, day",
            &[],
        )
        .context(|| "reading the daily rollups".to_string())?
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                Rollup {
                    attempts: row.get(2),
                    succeeded: row.get(3),
                    failed: row.get(4),
                    skipped: row.get(5),
                    requests: row.get(6),
                    records: row.get(7),
                    machines: row.get(8),
                    duration_max: row.get(9),
                    histogram: row.get(10),
                },
            )
        })
        .collect();
    problems.extend(differences(
        "daily_rollups (company, day, counts, histogram) against the simulation",
        &wanted,
        &found,
    ));
    Ok(problems)
}

/// Every row of `query`'s one text column, in its order.
fn texts(client: &mut Client, query: &str) -> BenchResult<Vec<String>> {
    Ok(client
        .query(query, &[])
        .context(|| query.to_string())?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The checks across the modes: what must not depend on history_detail.
fn compare_modes(all: &mut ModeRun, changes: &mut ModeRun) -> BenchResult<Vec<String>> {
    let mut problems = Vec::new();
    if all.run_ids != changes.run_ids {
        problems.push("the modes' run ids differ: their rows cannot be compared".to_string());
        return Ok(problems);
    }
    for (what, query) in [
        (
            "daily_rollups, row for row",
            "SELECT d::text FROM dex_collector.daily_rollups d ORDER BY company_id, day",
        ),
        (
            "events (kind, company, run, details, created_at)",
            "SELECT format('%s %s %s %s %s', kind, company_id, run_id, details, created_at)
               FROM dex_collector.events ORDER BY id",
        ),
        (
            "companies, row for row",
            "SELECT c::text FROM dex_collector.companies c ORDER BY company_id",
        ),
    ] {
        let in_all = texts(&mut all.client, query)?;
        let in_changes = texts(&mut changes.client, query)?;
        problems.extend(
            differences(what, &in_all, &in_changes)
                .into_iter()
                .map(|problem| format!("'all' and 'changes' differ in {problem}")),
        );
    }
    // Every row 'changes' keeps is the row 'all' keeps for that run and company, byte for byte.
    let mut run_ids: Vec<i64> = Vec::new();
    let mut company_ids: Vec<String> = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    for row in changes
        .client
        .query(
            "SELECT run_id, company_id::text, md5(rr::text) FROM dex_collector.run_results rr",
            &[],
        )
        .context(|| "reading the 'changes' rows".to_string())?
    {
        run_ids.push(row.get(0));
        company_ids.push(row.get(1));
        digests.push(row.get(2));
    }
    let unmatched: i64 = all
        .client
        .query_one(
            "SELECT count(*)
               FROM unnest($1::bigint[], $2::text[], $3::text[]) AS k(run_id, company_id, digest)
               LEFT JOIN dex_collector.run_results rr
                 ON rr.run_id = k.run_id AND rr.company_id = k.company_id::uuid
              WHERE rr.run_id IS NULL OR md5(rr::text) <> k.digest",
            &[&run_ids, &company_ids, &digests],
        )
        .context(|| "matching the 'changes' rows with the 'all' rows".to_string())?
        .get(0);
    if unmatched > 0 {
        problems.push(format!(
            "{unmatched} of the {} run_results rows of 'changes' are not as 'all' has them",
            run_ids.len()
        ));
    }
    let failed_rows = |client: &mut Client| -> BenchResult<i64> {
        Ok(client
            .query_one(
                "SELECT count(*) FROM dex_collector.run_results WHERE status = 'failed'",
                &[],
            )
            .context(|| "counting the failed rows".to_string())?
            .get(0))
    };
    let (in_all, in_changes) = (
        failed_rows(&mut all.client)?,
        failed_rows(&mut changes.client)?,
    );
    if in_all != in_changes {
        problems.push(format!(
            "'all' keeps {in_all} failed rows, 'changes' {in_changes}"
        ));
    }
    Ok(problems)
}

/// Bytes a company's day of history takes, table by table, at steady state: for the tables kept
/// for history_retention, their size at the end over the days they hold (they stop growing once
/// they hold that many); for the tables kept longer, their growth a day over the last days.
fn bytes_per_company_day(mode: &ModeRun, options: &Options) -> Vec<(&'static str, f64, String)> {
    let companies = f64::from(options.companies);
    let held = options.days.min(DEFAULT_HISTORY_RETENTION_DAYS);
    let mut parts = Vec::new();
    for name in WINDOWED_TABLES {
        parts.push((
            name,
            bytes_of(&mode.tables, name) as f64 / f64::from(held) / companies,
            format!("size at the end / {held} days"),
        ));
    }
    // Growth measured once the windowed tables are steady (the last day's pass deleted a day).
    let window = GROWTH_WINDOW_DAYS.min(
        options
            .days
            .saturating_sub(DEFAULT_HISTORY_RETENTION_DAYS + 1),
    );
    for name in GROWING_TABLES {
        let end = bytes_of(&mode.tables, name);
        let (from, days) = if window > 0 {
            let first = (options.days - window) as usize;
            (
                mode.days
                    .get(first - 1)
                    .map_or(0, |tables| bytes_of(tables, name)),
                window,
            )
        } else {
            (0, options.days)
        };
        let label = if window > 0 {
            format!(
                "growth over days {}-{}",
                options.days - window + 1,
                options.days
            )
        } else {
            format!("size at the end / {} days", options.days)
        };
        parts.push((
            name,
            (end - from) as f64 / f64::from(days) / companies,
            label,
        ));
    }
    parts
}

fn quantile(values: &[f64], fraction: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

fn print_summary(options: &Options, modes: &[ModeRun]) {
    let header = |first: &str| {
        let mut line = format!("| {first} |");
        let mut rule = "|---|".to_string();
        for mode in modes {
            line.push_str(&format!(" {} |", mode.detail.as_str()));
            rule.push_str("---:|");
        }
        println!("{line}\n{rule}");
    };
    // A line of the table: a label, and a cell for each mode (by its index in `modes`).
    let row = |label: String, cell: &dyn Fn(usize) -> String| {
        let mut line = format!("| {label} |");
        for index in 0..modes.len() {
            line.push_str(&format!(" {} |", cell(index)));
        }
        println!("{line}");
    };
    println!(
        "## Summary: {} companies, {} days, a run every 5 minutes\n",
        options.companies, options.days
    );
    println!(
        "Bytes a company's day of history takes at steady state (tables with their indexes and \
         TOAST): runs and run_results hold the last {DEFAULT_HISTORY_RETENTION_DAYS} days, so their size at \
         the end over {DEFAULT_HISTORY_RETENTION_DAYS}; events and daily_rollups are kept {DEFAULT_EVENT_RETENTION_DAYS} \
         and {DEFAULT_ROLLUP_RETENTION_DAYS} days, so their growth a day at the end (companies does not grow \
         with time: in the totals only).\n"
    );
    header("bytes per company per day");
    let per_day: Vec<Vec<(&str, f64, String)>> = modes
        .iter()
        .map(|mode| bytes_per_company_day(mode, options))
        .collect();
    let total_of = |index: usize| -> f64 { per_day[index].iter().map(|part| part.1).sum() };
    if let Some(parts) = per_day.first() {
        for (part, (name, _, how)) in parts.iter().enumerate() {
            row(format!("{name} ({how})"), &|index| {
                format!("{:.0}", per_day[index][part].1)
            });
        }
    }
    row("**in all**".to_string(), &|index| {
        format!("**{:.0}**", total_of(index))
    });
    row(
        "× 1,000 companies: MB a day (target: under 5)".to_string(),
        &|index| format!("{:.2}", total_of(index) * 1_000.0 / 1_000_000.0),
    );
    let growth_days = GROWTH_WINDOW_DAYS
        .min(options.days.saturating_sub(1))
        .max(1);
    row(
        format!("growth of all tables a day over the last {growth_days} days, per company"),
        &|index| {
            let mode = &modes[index];
            let end: i64 = mode.tables.iter().map(|t| t.bytes).sum();
            let from: i64 = (options.days - growth_days)
                .checked_sub(1)
                .and_then(|day| mode.days.get(day as usize))
                .map_or(0, |tables| tables.iter().map(|t| t.bytes).sum());
            format!(
                "{:.0}",
                (end - from) as f64 / f64::from(growth_days) / f64::from(options.companies)
            )
        },
    );

    println!(
        "\nAt the end ({} days), after the last retention pass:\n",
        options.days
    );
    header("table: MB (with indexes) / live rows / dead rows / autovacuums (autoanalyzes)");
    for name in HISTORY_TABLES {
        row(name.to_string(), &|index| {
            modes[index]
                .tables
                .iter()
                .find(|table| table.name == name)
                .map_or("-".to_string(), |table| {
                    format!(
                        "{} / {} / {} / {} ({})",
                        megabytes(table.bytes),
                        table.live,
                        table.dead,
                        table.autovacuums,
                        table.autoanalyzes
                    )
                })
        });
    }
    // How far each table is from its rows' data: indexes, fillfactor, free and dead space.
    for (table_index, name) in HISTORY_TABLES.iter().enumerate() {
        row(
            format!("{name}: bytes on disk per live row / data bytes per row / HOT updates"),
            &|index| {
                let mode = &modes[index];
                mode.tables.iter().find(|table| table.name == *name).map_or(
                    "-".to_string(),
                    |table| {
                        let hot = if table.updates > 0 {
                            format!("{:.0} %", percent(table.hot_updates, table.updates))
                        } else {
                            "-".to_string()
                        };
                        format!(
                            "{:.0} / {:.0} / {hot}",
                            table.bytes as f64 / table.live.max(1) as f64,
                            mode.row_bytes.get(table_index).copied().unwrap_or(f64::NAN)
                        )
                    },
                )
            },
        );
    }
    row("**total MB**".to_string(), &|index| {
        format!(
            "**{}**",
            megabytes(modes[index].tables.iter().map(|t| t.bytes).sum())
        )
    });
    row("run_results rows kept".to_string(), &|index| {
        let mode = &modes[index];
        let kept_from = options.days.saturating_sub(DEFAULT_HISTORY_RETENTION_DAYS) * RUNS_PER_DAY;
        let rows: i64 = mode.expected.runs[kept_from as usize..]
            .iter()
            .map(|run| match mode.detail {
                HistoryDetail::All => run.succeeded + run.failed + run.skipped,
                HistoryDetail::Changes => run.rows_if_changes,
            })
            .sum();
        rows.to_string()
    });
    row(
        "RECORD_RESULTS per run: median / p95 / max ms".to_string(),
        &|index| {
            let record_ms = &modes[index].record_ms;
            format!(
                "{:.1} / {:.1} / {:.1}",
                quantile(record_ms, 0.5),
                quantile(record_ms, 0.95),
                quantile(record_ms, 1.0)
            )
        },
    );
    row(
        "DELETE_OLD_HISTORY: calls / rows deleted / s in all".to_string(),
        &|index| {
            let retention = &modes[index].retention;
            format!(
                "{} / {} / {:.1}",
                retention.calls,
                retention.deleted,
                retention.time.as_secs_f64()
            )
        },
    );
    row("wall time of the month (s)".to_string(), &|index| {
        format!("{:.0}", modes[index].wall.as_secs_f64())
    });

    println!(
        "\nQueries: server execution time (EXPLAIN ANALYZE), median of {QUERY_REPEATS} after one \
         untimed, in ms, and the rows returned. now() is later than the simulated end by {}.\n",
        modes
            .iter()
            .map(|mode| format!("{:.0} s in '{}'", mode.query_lag_s, mode.detail.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    header("query: ms (rows)");
    if let Some(first) = modes.first() {
        for (query, timing) in first.queries.iter().enumerate() {
            row(timing.title.clone(), &|index| {
                modes[index]
                    .queries
                    .get(query)
                    .map_or("-".to_string(), |timing| {
                        format!("{:.2} ({})", timing.median_ms(), timing.rows)
                    })
            });
        }
    }

    for mode in modes {
        println!(
            "\n`SELECT * FROM dex_collector.history_size` at the end, '{}':\n",
            mode.detail.as_str()
        );
        println!("| table_name | rows | bytes | rows_last_day | retention | projected_bytes |");
        println!("|---|---:|---:|---:|---|---:|");
        for line in &mode.history_size {
            println!("{line}");
        }
    }
    if let Some(index) = modes
        .iter()
        .position(|mode| mode.detail == HistoryDetail::Changes)
    {
        let per_day = total_of(index) * 1_000.0;
        let verdict = if options.days <= DEFAULT_HISTORY_RETENTION_DAYS + 1 {
            format!(
                "not judged: the history is at steady state only after {} days",
                DEFAULT_HISTORY_RETENTION_DAYS + 1
            )
        } else if per_day < TARGET_BYTES_PER_COMPANY_DAY * 1_000.0 {
            "under 5 MB, met".to_string()
        } else {
            "NOT under 5 MB".to_string()
        };
        println!(
            "\nTarget, 'changes' (the default): {:.2} MB a day for 1,000 companies: {verdict}.",
            per_day / 1_000_000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_at_their_edges() {
        assert_eq!(duration_bucket(0), 0);
        // 2^(1/3) - 1 < 1 ms: 1 ms is already in bucket 3 (2^3 = 2^3).
        assert_eq!(duration_bucket(1), 3);
        assert_eq!(duration_bucket(3), 6);
        // floor(3 * log2(801)) = floor(28.94)
        assert_eq!(duration_bucket(800), 28);
        assert_eq!(duration_bucket(1_023), 30);
        assert_eq!(duration_bucket(i64::MAX), DURATION_BUCKETS - 1);
        for ms in [5_i64, 77, 1_500, 60_000, 180_000] {
            let float = (3.0 * ((ms + 1) as f64).log2() + 1e-9).floor() as usize;
            assert_eq!(duration_bucket(ms), float.min(DURATION_BUCKETS - 1), "{ms}");
        }
    }

    #[test]
    fn the_default_month_fails_two_percent_in_streaks() {
        let options = Options {
            days: DEFAULT_DAYS,
            companies: DEFAULT_COMPANIES,
            seed: DEFAULT_SEED,
            autovacuum_naptime_s: None,
            simulate_only: true,
        };
        let (fleet, expected) = simulate(&options, 1_700_000_000);
        let failed = expected.total(|run| run.failed);
        let called = expected.total(|run| run.succeeded + run.failed);
        let share = percent(failed, called);
        assert!((1.8..=2.2).contains(&share), "{share:.2} %");
        assert_eq!(fleet.companies[0].target.company_id, SAMPLE_COMPANY);
        assert!(fleet.count(Profile::NoCredentials) > 0);
        // Hours-long streaks, and flapping: many short ones.
        assert!(expected.streaks.iter().any(|&length| length >= 144));
        assert!(
            expected
                .streaks
                .iter()
                .filter(|&&length| length == 1)
                .count()
                > 1_000
        );
        assert!(expected.events.iter().any(|event| event.kind == "failing"));
    }

    #[test]
    fn the_same_seed_gives_the_same_results() {
        let options = Options {
            days: 2,
            companies: 50,
            seed: 7,
            autovacuum_naptime_s: None,
            simulate_only: true,
        };
        assert_eq!(simulate(&options, 0).1, simulate(&options, 0).1);
        let other = Options {
            seed: 8,
            ..options.clone()
        };
        assert_ne!(simulate(&options, 0).1, simulate(&other, 0).1);
    }

    #[test]
    fn results_are_history_rows() {
        let options = Options {
            days: 1,
            companies: 200,
            seed: DEFAULT_SEED,
            autovacuum_naptime_s: None,
            simulate_only: true,
        };
        let mut fleet = Fleet::new(&options);
        let results = fleet.results(0);
        let skipped = results
            .iter()
            .find(|result| result.outcome == Outcome::Skipped)
            .map(|result| {
                result
                    .company_result(&fleet.companies[result.company].target)
                    .history_row()
            });
        assert_eq!(
            skipped.as_ref().map(|row| row["error"].clone()),
            Some(Value::from(SKIP_NO_CREDENTIALS))
        );
        let row = results[0]
            .company_result(&fleet.companies[0].target)
            .history_row();
        assert_eq!(row["company_id"], SAMPLE_COMPANY);
        assert!(row["status"] == "succeeded" || row["status"] == "failed");
    }

    #[test]
    fn the_monitoring_block_has_its_queries() {
        let queries = timed_queries();
        // docs/monitoring.md's eight, and the three views.
        assert_eq!(queries.len(), 11, "{queries:#?}");
        assert!(queries
            .iter()
            .any(|(_, query)| query.contains(SAMPLE_COMPANY)));
    }

    #[test]
    fn arguments() {
        let parsed = parse_args(vec![
            "--days".into(),
            "2".into(),
            "--companies".into(),
            "200".into(),
        ]);
        assert_eq!(
            parsed.map(|options| options.map(|o| (o.days, o.companies))),
            Ok(Some((2, 200)))
        );
        assert!(parse_args(vec!["--days".into(), "0".into()]).is_err());
        assert!(parse_args(vec!["--bogus".into()]).is_err());
        assert_eq!(parse_args(vec!["--help".into()]), Ok(None));
    }
}
