//! At most one collection runs at a time per database, whoever starts it (pg_cron, the worker,
//! a person in the SQL editor), with advisory locks:
//! - `(RUN_LOCK, 0)` is the run itself: taken with a *try*, so a second caller never waits;
//! - `(RUN_ID_LOCK, run id)` publishes which run holds it, so a skipped caller can name that run
//!   even while its row is not committed yet (a SQL call writes its history at commit).
//!
//! A SQL call takes transaction-level locks (released at commit, abort or cancel); the worker,
//! which commits after each company, takes session-level locks and releases them itself.

use pgrx::prelude::*;

use crate::error::CollectError;

/// 'DEXC' and 'DEXD': the first key of our two-key advisory locks.
const RUN_LOCK: i32 = 0x4445_5843;
const RUN_ID_LOCK: i32 = 0x4445_5844;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Released when the calling transaction ends.
    Transaction,
    /// Held across the worker's transactions until [`release`].
    Session,
}

fn spi_error(error: pgrx::spi::Error) -> CollectError {
    CollectError::History {
        message: format!("advisory lock: {error}"),
    }
}

/// Takes the run lock if free; false when another collection holds it.
pub fn try_acquire(holder: Holder) -> Result<bool, CollectError> {
    let function = match holder {
        Holder::Transaction => "pg_try_advisory_xact_lock",
        Holder::Session => "pg_try_advisory_lock",
    };
    Spi::get_one_with_args::<bool>(&format!("SELECT {function}($1, 0)"), &[RUN_LOCK.into()])
        .map(|acquired| acquired.unwrap_or(false))
        .map_err(spi_error)
}

/// Announces which run holds the run lock.
pub fn publish(holder: Holder, run_id: i64) -> Result<(), CollectError> {
    let function = match holder {
        Holder::Transaction => "pg_advisory_xact_lock",
        Holder::Session => "pg_advisory_lock",
    };
    Spi::run_with_args(
        &format!("SELECT {function}($1, $2)"),
        &[RUN_ID_LOCK.into(), published_key(run_id).into()],
    )
    .map_err(spi_error)
}

/// Releases the worker's session-level locks (it holds no others), whatever state a failed run
/// left them in.
pub fn release_session_locks() -> Result<(), CollectError> {
    Spi::run("SELECT pg_advisory_unlock_all()").map_err(spi_error)
}

/// The run holding the lock in this database, if it has published itself.
pub fn running_run_id() -> Result<Option<i64>, CollectError> {
    Spi::get_one_with_args::<i64>(
        "SELECT objid::bigint FROM pg_catalog.pg_locks
          WHERE locktype = 'advisory' AND classid = $1::oid AND objsubid = 2 AND granted
            AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          LIMIT 1",
        &[i64::from(RUN_ID_LOCK).into()],
    )
    .map_err(spi_error)
}

/// Run ids are positive and stay far below 2^31 (one run a minute for 4,000 years).
fn published_key(run_id: i64) -> i32 {
    i32::try_from(run_id).unwrap_or(i32::MAX)
}
