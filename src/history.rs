//! How a run is recorded: `dex_collector.runs` (one row per run) and
//! `dex_collector.run_results` (one row per company per run), written through SPI.
//! Results are inserted in batches from one JSON array, not one statement per company.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::error::CollectError;
use crate::summary::{CompanyResult, RunSummary};

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A direct SQL call; recorded as `pg_cron` when pg_cron's connection made it.
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
        }
    }
}

fn history_error(error: pgrx::spi::Error) -> CollectError {
    CollectError::History { message: error.to_string() }
}

/// Inserts the run's row as `running` and returns its id.
pub fn start_run(trigger: Trigger, companies_total: usize) -> Result<i64, CollectError> {
    let total = i32::try_from(companies_total).unwrap_or(i32::MAX);
    Spi::connect_mut(|client| {
        client
            .update(
                "INSERT INTO dex_collector.runs (status, trigger, companies_total)
                 VALUES ('running',
                         CASE WHEN $1 = 'manual' AND current_setting('application_name') = 'pg_cron'
                              THEN 'pg_cron' ELSE $1 END,
                         $2)
                 RETURNING id",
                None,
                &[trigger.as_str().into(), total.into()],
            )?
            .first()
            .get_one::<i64>()
    })
    .map_err(history_error)?
    .ok_or_else(|| CollectError::History { message: "INSERT ... RETURNING gave no id".into() })
}

/// Inserts one `run_results` row per result, in one statement.
pub fn record_results(run_id: i64, results: &[CompanyResult]) -> Result<(), CollectError> {
    if results.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(results.iter().map(CompanyResult::history_row).collect());
    Spi::connect_mut(|client| {
        client.update(
            "INSERT INTO dex_collector.run_results
                    (run_id, company_id, company_name, status, http_status, pages, attempts,
                     records_collected, machines_updated, duration_ms, more_pending, error)
             SELECT $1, r.company_id, r.company_name, r.status, r.http_status, r.pages, r.attempts,
                    r.records_collected, r.machines_updated, r.duration_ms, r.more_pending, r.error
               FROM jsonb_to_recordset($2) AS r(company_id uuid, company_name text, status text,
                    http_status integer, pages integer, attempts integer, records_collected bigint,
                    machines_updated bigint, duration_ms bigint, more_pending boolean, error text)",
            None,
            &[run_id.into(), JsonB(rows).into()],
        )?;
        Ok(())
    })
    .map_err(history_error)
}

/// Completes the run's row with its counts and final status.
pub fn finish_run(summary: &RunSummary) -> Result<(), CollectError> {
    let status = if summary.success() { "succeeded" } else { "failed" };
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE dex_collector.runs
                SET finished_at = clock_timestamp(), status = $2,
                    companies_processed = $3, companies_succeeded = $4, companies_failed = $5,
                    companies_skipped = $6, records_collected = $7, machines_updated = $8,
                    duration_ms = $9, error = $10
              WHERE id = $1",
            None,
            &[
                summary.run_id.into(),
                status.into(),
                count(summary.companies_processed()).into(),
                count(summary.companies_succeeded()).into(),
                count(summary.companies_failed()).into(),
                count(summary.companies_skipped()).into(),
                summary.total_records().into(),
                summary.total_machines().into(),
                summary.duration_ms().into(),
                summary.run_error.clone().into(),
            ],
        )?;
        Ok(())
    })
    .map_err(history_error)
}
