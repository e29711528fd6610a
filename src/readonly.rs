//! Runs SQL that the collector does not own (the targets query, the Vault lookup) so that it can
//! neither change data nor abort the caller's transaction: inside a subtransaction that is made
//! read-only (and without JIT) and always rolled back, as the role given (in a security-restricted
//! operation), with any error it raises returned as text, and, given a limit, cancelled when it
//! takes longer.

use std::panic::UnwindSafe;
use std::time::Duration;

use pgrx::prelude::*;

use crate::pg::{self, caught_report, RolledBack};

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

/// Runs `work` read-only in a throw-away subtransaction, with the rights of `role` if given (and
/// then with row level security off: a query that a policy would filter fails instead of
/// silently missing rows). Values `work` returns must be owned by Rust (not pointers into
/// Postgres memory): the subtransaction's memory is gone afterwards. A query cancel raised
/// inside is re-raised: the user asked to stop, not to continue; one that `limit` raised is
/// [`Failed::TimedOut`].
pub fn run<T>(
    limit: Option<Duration>,
    role: Option<pg_sys::Oid>,
    work: impl FnOnce() -> T + UnwindSafe,
) -> Result<T, Failed> {
    // JIT off too: a targets query written with EXISTS in its select list is costed
    // quadratically and would be JIT-compiled (hundreds of ms) past a few thousand companies.
    let mut settings = vec![(c"transaction_read_only", c"on"), (c"jit", c"off")];
    if role.is_some() {
        settings.push((c"row_security", c"off"));
    }
    let RolledBack { outcome, timed_out } =
        pg::in_rolled_back_subtransaction(&settings, limit, role, work);
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
