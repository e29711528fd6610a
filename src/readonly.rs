//! Runs SQL that the collector does not own (the targets query, the Vault lookup) so that it can
//! neither change data nor abort the caller's transaction: inside a subtransaction that is made
//! read-only (and without JIT) and always rolled back, with any error it raises returned as text,
//! and, given a limit, cancelled when it takes longer.

use std::panic::UnwindSafe;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::backend::QueryTimer;
use crate::error::caught_report;

/// Why SQL run by [`run`] gave no result.
#[derive(Debug)]
pub enum Failed {
    /// It raised an error: PostgreSQL's message, with its detail (where a foreign server's error
    /// says why), and its SQLSTATE.
    Error {
        message: String,
        sqlstate: PgSqlErrorCode,
    },
    /// It was still running when its time limit ran out, and was cancelled.
    TimedOut,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Error { message, .. } => f.write_str(message),
            Failed::TimedOut => f.write_str("cancelled at its time limit"),
        }
    }
}

/// Runs `work` read-only in a throw-away subtransaction. Values `work` returns must be owned by
/// Rust (not pointers into Postgres memory): the subtransaction's memory is gone afterwards.
/// A query cancel raised inside is re-raised: the user asked to stop, not to continue; one that
/// `limit` raised is [`Failed::TimedOut`].
pub fn run<T>(limit: Option<Duration>, work: impl FnOnce() -> T + UnwindSafe) -> Result<T, Failed> {
    // SAFETY: the same sequence PL/pgSQL uses around an exception block; we are on the backend's
    // thread inside a transaction (every caller runs within a SQL function or a worker transaction).
    let (old_context, old_owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        // JIT off too: a targets query written with EXISTS in its select list is costed
        // quadratically and would be JIT-compiled (hundreds of ms) past a few thousand companies.
        for (name, value) in [(c"transaction_read_only", c"on"), (c"jit", c"off")] {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                0,
                false,
            );
        }
        // A fresh snapshot, so the query sees what this transaction did before (as any statement
        // of a volatile function would), not only what the calling statement's snapshot saw.
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        saved
    };
    let timer = limit.map(QueryTimer::start);
    let outcome: Result<T, Box<CaughtError>> = PgTryBuilder::new(|| Ok(work()))
        .catch_others(|caught| Err(Box::new(caught)))
        .execute();
    let timed_out = timer.is_some_and(QueryTimer::stop);
    // SAFETY: undoes the subtransaction begun above, restoring the caller's context and owner;
    // an error inside already lost the snapshot with the aborted subtransaction's state.
    unsafe {
        if outcome.is_ok() {
            pg_sys::PopActiveSnapshot();
        }
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    match outcome {
        _ if timed_out => Err(Failed::TimedOut),
        Ok(value) => Ok(value),
        Err(caught) => {
            let report = caught_report(&caught);
            if report.sql_error_code() == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                caught.rethrow()
            }
            let message = match report.detail() {
                // postgres_fdw's "could not connect to server" says why only in its detail.
                Some(detail) => format!(
                    "{} ({})",
                    report.message(),
                    detail.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
                None => report.message().to_string(),
            };
            Err(Failed::Error {
                message,
                sqlstate: report.sql_error_code(),
            })
        }
    }
}
