//! A run's results and the arithmetic of its summary (pure Rust).
//!
//! The summary keeps the shape of the edge function it replaces (`success`, `companiesProcessed`,
//! `successfulCollections`, `totalRecords`, `results[]`) and adds `run_id`, `companiesSkipped`,
//! `durationMs`, `company_id` in each result, and `skipped[]` for companies not called.

use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

use crate::endpoint::CompanyOutcome;
use crate::flow::FlowReport;
use crate::target::Target;

/// Why a company was not called, or was stopped.
pub const SKIP_NO_CREDENTIALS: &str = "No DEX credentials configured";
pub const SKIP_DEADLINE: &str = "deadline";
pub const SKIP_AUTH_REJECTED: &str = "service key rejected by the endpoint";
pub const SKIP_CANCELLED: &str = "cancelled";
pub const SKIP_BOOKKEEPING_FAILED: &str = "the run stopped: its results could not be recorded";
/// The error of a company whose requests the run deadline cut short.
pub const STOPPED_AT_DEADLINE: &str =
    "stopped at the run deadline (dex_collector.run_deadline) while collecting";
/// Why a whole run was skipped.
pub const ALREADY_RUNNING: &str = "a collection run is already in progress";
/// Why a run with no targets failed: a targets query that finds no company (a table or a status
/// renamed by a migration, a foreign server's rows gone) is likelier broken than right, and a run
/// that succeeded would keep `health` healthy while nothing is collected.
pub const NO_TARGETS: &str = "the targets query found no company to collect";

/// The status of a whole run, as `dex_collector.runs.status` (its CHECK lists the same six).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for the worker (`dex_collect_all_async()`).
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Not run: another run held the lock.
    Skipped,
    /// Cut short by a shutdown or crash.
    Interrupted,
}

impl RunStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Skipped,
            RunStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Queued or running: the run has not ended.
    pub const fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// The status of one company in one run, as `dex_collector.run_results.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Succeeded,
    Failed,
    Skipped,
}

impl ResultStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
            ResultStatus::Skipped => "skipped",
        }
    }
}

/// What happened to one company in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyResult {
    pub target: Target,
    pub status: ResultStatus,
    /// For a called company, what the endpoint did; default for a skipped one.
    pub outcome: CompanyOutcome,
    /// The error of a failed company or the reason a company was skipped.
    pub reason: Option<String>,
}

impl CompanyResult {
    pub fn called(target: Target, outcome: CompanyOutcome) -> Self {
        let status = if outcome.success {
            ResultStatus::Succeeded
        } else {
            ResultStatus::Failed
        };
        let reason = outcome.error.clone();
        CompanyResult {
            target,
            status,
            outcome,
            reason,
        }
    }

    pub fn skipped(target: Target, reason: &str) -> Self {
        CompanyResult {
            target,
            status: ResultStatus::Skipped,
            outcome: CompanyOutcome::default(),
            reason: Some(reason.to_string()),
        }
    }

    /// One `dex_collector.run_results` row, as the JSON object `history.rs` inserts.
    pub fn history_row(&self) -> Value {
        json!({
            "company_id": self.target.company_id,
            "company_name": self.target.company_name,
            "status": self.status.as_str(),
            "http_status": self.outcome.http_status,
            "pages": self.outcome.pages,
            "attempts": self.outcome.attempts,
            "records_collected": self.outcome.records,
            "machines_updated": self.outcome.machines,
            "duration_ms": duration_ms(self.outcome.duration),
            "more_pending": self.outcome.more_pending,
            "run_failure": self.outcome.is_run_failure(),
            "error": self.reason,
        })
    }
}

/// A run's counts, kept as each result comes: all that a run holds of its results, unless its
/// caller wants them listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Skipped because the deadline came before they were called.
    pub not_reached: usize,
    /// Called, but cut short by the deadline.
    pub stopped_at_deadline: usize,
    pub records: i64,
    pub machines: i64,
}

impl RunCounts {
    pub fn add(&mut self, result: &CompanyResult) {
        let reason = result.reason.as_deref();
        match result.status {
            ResultStatus::Succeeded => self.succeeded += 1,
            ResultStatus::Failed => {
                self.failed += 1;
                if reason == Some(STOPPED_AT_DEADLINE) {
                    self.stopped_at_deadline += 1;
                }
            }
            ResultStatus::Skipped => {
                self.skipped += 1;
                if reason == Some(SKIP_DEADLINE) {
                    self.not_reached += 1;
                }
            }
        }
        self.records = self.records.saturating_add(result.outcome.records);
        self.machines = self.machines.saturating_add(result.outcome.machines);
    }
}

/// The whole run, as returned to the caller and recorded in `dex_collector.runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run_id: i64,
    pub counts: RunCounts,
    /// Every company's result in target order, for a caller that returns them (a SQL call);
    /// empty for one that does not (the worker), which then holds only the counts.
    pub results: Vec<CompanyResult>,
    pub duration: Duration,
    /// Set when the run as a whole failed (e.g. the key was rejected).
    pub run_error: Option<String>,
    /// The run deadline came before every company was collected.
    pub deadline_reached: bool,
    /// How many companies it collected at once, and what the endpoint's load did to it.
    pub flow: FlowReport,
}

impl RunSummary {
    pub fn success(&self) -> bool {
        self.run_error.is_none()
    }

    /// A run succeeds when it ran to its end; failed companies are counted, not fatal.
    pub fn final_status(&self) -> RunStatus {
        if self.success() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        }
    }

    /// Companies the endpoint was called for (skipped ones are not counted, as in the design).
    pub fn companies_processed(&self) -> usize {
        self.counts.succeeded + self.counts.failed
    }

    pub fn companies_succeeded(&self) -> usize {
        self.counts.succeeded
    }

    pub fn companies_failed(&self) -> usize {
        self.counts.failed
    }

    pub fn companies_skipped(&self) -> usize {
        self.counts.skipped
    }

    /// Companies with credentials that were not called because the deadline came first.
    pub fn companies_not_reached(&self) -> usize {
        self.counts.not_reached
    }

    /// Companies called but cut short by the deadline.
    pub fn companies_stopped_at_deadline(&self) -> usize {
        self.counts.stopped_at_deadline
    }

    pub fn total_records(&self) -> i64 {
        self.counts.records
    }

    pub fn total_machines(&self) -> i64 {
        self.counts.machines
    }

    pub fn duration_ms(&self) -> i64 {
        duration_ms(self.duration)
    }

    /// `{"adaptive": false, "limit": 8}`, or for an adaptive run where it started, where it
    /// settled (the next runs start from it), its lowest and highest, and its maximum.
    fn concurrency_json(&self) -> Value {
        let flow = &self.flow;
        match flow.adaptive_max {
            None => json!({"adaptive": false, "limit": flow.end_limit}),
            Some(max) => json!({
                "adaptive": true,
                "start": flow.start_limit,
                "limit": flow.end_limit,
                "lowest": flow.lowest_limit,
                "highest": flow.highest_limit,
                "max": max,
                // Two places are all a reading from quartiles holds.
                "spread": flow.spread.map(|spread| (spread * 100.0).round() / 100.0),
            }),
        }
    }
}

/// The JSON `dex_collect_all()` returns, written one company at a time: no tree of the whole
/// summary is built on the way to its `jsonb`.
impl Serialize for RunSummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("success", &self.success())?;
        map.serialize_entry("run_id", &self.run_id)?;
        map.serialize_entry("companiesProcessed", &self.companies_processed())?;
        map.serialize_entry("successfulCollections", &self.companies_succeeded())?;
        map.serialize_entry("companiesSkipped", &self.companies_skipped())?;
        map.serialize_entry("companiesNotReached", &self.companies_not_reached())?;
        map.serialize_entry("totalRecords", &self.total_records())?;
        map.serialize_entry("durationMs", &self.duration_ms())?;
        map.serialize_entry("concurrency", &self.concurrency_json())?;
        map.serialize_entry("overloadedAnswers", &self.flow.overloaded_answers)?;
        map.serialize_entry("retries", &self.flow.retries)?;
        map.serialize_entry("retriesRefused", &self.flow.retries_refused)?;
        map.serialize_entry("pausedMs", &duration_ms(self.flow.paused))?;
        map.serialize_entry("results", &Listed(&self.results, ListedAs::Called))?;
        map.serialize_entry("skipped", &Listed(&self.results, ListedAs::Skipped))?;
        if let Some(error) = &self.run_error {
            map.serialize_entry("error", error)?;
        }
        map.end()
    }
}

/// The summary's `results[]` (called companies) or `skipped[]`.
struct Listed<'a>(&'a [CompanyResult], ListedAs);

#[derive(Clone, Copy, PartialEq)]
enum ListedAs {
    Called,
    Skipped,
}

impl Serialize for Listed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Listed(results, listed_as) = *self;
        let skipped = listed_as == ListedAs::Skipped;
        serializer.collect_seq(
            results
                .iter()
                .filter(|result| (result.status == ResultStatus::Skipped) == skipped)
                .map(|result| Entry(result, listed_as)),
        )
    }
}

/// One company of `results[]` or `skipped[]`.
struct Entry<'a>(&'a CompanyResult, ListedAs);

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Entry(result, listed_as) = *self;
        let target = &result.target;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("company_id", &target.company_id)?;
        map.serialize_entry("company", &target.company_name)?;
        if listed_as == ListedAs::Skipped {
            map.serialize_entry("reason", &result.reason)?;
            return map.end();
        }
        let outcome = &result.outcome;
        map.serialize_entry("success", &(result.status == ResultStatus::Succeeded))?;
        map.serialize_entry("recordsCollected", &outcome.records)?;
        map.serialize_entry("machinesUpdated", &outcome.machines)?;
        map.serialize_entry("pages", &outcome.pages)?;
        map.serialize_entry("attempts", &outcome.attempts)?;
        if let Some(status) = outcome.http_status {
            map.serialize_entry("httpStatus", &status)?;
        }
        if outcome.more_pending {
            map.serialize_entry("morePending", &true)?;
        }
        if let Some(error) = &result.reason {
            map.serialize_entry("error", error)?;
        }
        map.end()
    }
}

pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            company_id: format!("00000000-0000-0000-0000-00000000000{}", name.len()),
            company_name: name.into(),
            has_credentials: true,
        }
    }

    fn outcome(success: bool, records: i64, machines: i64, error: Option<&str>) -> CompanyOutcome {
        CompanyOutcome {
            success,
            http_status: Some(if success { 200 } else { 500 }),
            pages: 1,
            attempts: 1,
            records,
            machines,
            error: error.map(str::to_string),
            ..CompanyOutcome::default()
        }
    }

    /// A summary of `results`, listed, counted as the fan-out counts them.
    fn summary_of(results: Vec<CompanyResult>) -> RunSummary {
        let mut counts = RunCounts::default();
        results.iter().for_each(|result| counts.add(result));
        RunSummary {
            run_id: 0,
            counts,
            results,
            duration: Duration::ZERO,
            run_error: None,
            deadline_reached: false,
            flow: FlowReport::default(),
        }
    }

    fn to_json(summary: &RunSummary) -> Value {
        serde_json::to_value(summary).unwrap_or_default()
    }

    #[test]
    fn summary_matches_the_design_arithmetic() {
        let summary = RunSummary {
            run_id: 7,
            duration: Duration::from_millis(1234),
            ..summary_of(vec![
                CompanyResult::called(target("Acme Vending"), outcome(true, 12, 3, None)),
                CompanyResult::called(
                    target("Beta Snacks"),
                    outcome(false, 0, 0, Some("HTTP 500: boom")),
                ),
                CompanyResult::skipped(target("Gamma"), SKIP_NO_CREDENTIALS),
            ])
        };
        let json = to_json(&summary);
        assert_eq!(json["success"], true);
        assert_eq!(json["run_id"], 7);
        assert_eq!(json["companiesProcessed"], 2);
        assert_eq!(json["successfulCollections"], 1);
        assert_eq!(json["companiesSkipped"], 1);
        assert_eq!(json["companiesNotReached"], 0);
        assert_eq!(json["totalRecords"], 12);
        assert_eq!(json["durationMs"], 1234);
        assert_eq!(json["results"].as_array().map(Vec::len), Some(2));
        assert_eq!(json["results"][0]["company"], "Acme Vending");
        assert_eq!(json["results"][0]["recordsCollected"], 12);
        assert_eq!(json["results"][0]["machinesUpdated"], 3);
        assert!(json["results"][0].get("error").is_none());
        assert_eq!(json["results"][1]["success"], false);
        assert_eq!(json["results"][1]["error"], "HTTP 500: boom");
        assert_eq!(json["skipped"][0]["reason"], SKIP_NO_CREDENTIALS);
        assert_eq!(summary.companies_failed(), 1);
        assert_eq!(summary.total_machines(), 3);
    }

    #[test]
    fn a_run_error_fails_the_run() {
        let summary = RunSummary {
            run_error: Some(SKIP_AUTH_REJECTED.into()),
            ..summary_of(vec![])
        };
        let json = to_json(&summary);
        assert_eq!(json["success"], false);
        assert_eq!(json["error"], SKIP_AUTH_REJECTED);
        assert_eq!(json["companiesProcessed"], 0);
    }

    #[test]
    fn a_deadline_counts_companies_not_reached_and_cut_short() {
        let stopped = CompanyOutcome {
            error: Some(STOPPED_AT_DEADLINE.into()),
            ..CompanyOutcome::default()
        };
        let summary = RunSummary {
            deadline_reached: true,
            ..summary_of(vec![
                CompanyResult::called(target("Acme Vending"), outcome(true, 1, 1, None)),
                CompanyResult::called(target("Beta Snacks"), stopped),
                CompanyResult::skipped(target("Gamma"), SKIP_DEADLINE),
                CompanyResult::skipped(target("Delta Drinks"), SKIP_DEADLINE),
                CompanyResult::skipped(target("Epsilon"), SKIP_NO_CREDENTIALS),
            ])
        };
        assert_eq!(summary.companies_not_reached(), 2);
        assert_eq!(summary.companies_stopped_at_deadline(), 1);
        assert_eq!(to_json(&summary)["companiesNotReached"], 2);
        assert_eq!(summary.final_status(), RunStatus::Succeeded);
    }

    #[test]
    fn history_rows_carry_every_column() {
        let row = CompanyResult::called(target("Acme"), outcome(true, 5, 2, None)).history_row();
        assert_eq!(row["status"], "succeeded");
        assert_eq!(row["records_collected"], 5);
        assert_eq!(row["http_status"], 200);
        assert!(row["error"].is_null());
        let skipped = CompanyResult::skipped(target("Acme"), SKIP_DEADLINE).history_row();
        assert_eq!(skipped["status"], "skipped");
        assert_eq!(skipped["error"], SKIP_DEADLINE);
        assert!(skipped["http_status"].is_null());
    }
}
