//! At most one collection runs at a time per database, whoever starts it (pg_cron, the worker,
//! a person in the SQL editor), with advisory locks:
//! - `(RUN_LOCK, 0)` is the run itself: taken with a *try*, so a second caller never waits;
//! - `(RUN_ID_LOCK, run id)` publishes which run holds it, so a skipped caller can name that run
//!   even while its row is not committed yet (a SQL call writes its history at commit).
//!
//! A SQL call takes transaction-level locks (released at commit, abort or cancel). The worker,
//! which commits after each company, takes session-level locks held by a [`SessionLocks`] guard,
//! which releases them however the run ends, without needing a transaction.
//!
//! A lock that outlives its run anyway (a process whose published run has ended, as a build
//! before 0.2.0 could leave after a failed final transaction) is found by the next caller that
//! cannot take the lock, logged, and cleared by ending the process that holds it.

use std::time::Duration;

use pgrx::prelude::*;

use dex_collector_core::summary::RunStatus;

use crate::pg;

/// 'DEXC' and 'DEXD': the first key of our two-key advisory locks.
const RUN_LOCK: i32 = 0x4445_5843;
const RUN_ID_LOCK: i32 = 0x4445_5844;

/// How long a lock must stay held by an ended run before it counts as stale: a run releases its
/// locks right after its last commit, and this rides out that moment.
const STALE_RECHECK: Duration = Duration::from_millis(250);
/// How long to wait for a stale holder to go once it has been told to.
const STALE_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The advisory locks that keep runs apart could not be read or taken.
#[derive(Debug, thiserror::Error)]
#[error("dex_collector could not check for a run in progress: {0}")]
pub struct LockError(#[from] pgrx::spi::Error);

/// Takes the run lock for the calling transaction if it is free; false when another collection
/// holds it (after clearing a stale holder, if that is what held it).
pub fn try_acquire_for_transaction() -> Result<bool, LockError> {
    try_acquire("pg_try_advisory_xact_lock")
}

/// The worker's run lock, held across its transactions until the guard drops.
pub struct SessionLocks(());

impl SessionLocks {
    /// Takes the run lock for this session if it is free; `None` when another collection holds it.
    pub fn try_acquire() -> Result<Option<SessionLocks>, LockError> {
        // The guard exists before the lock is taken, so an ERROR in between cannot leak it.
        let guard = SessionLocks(());
        Ok(try_acquire("pg_try_advisory_lock")?.then_some(guard))
    }

    /// Announces which run holds the run lock.
    pub fn publish(&self, run_id: i64) -> Result<(), LockError> {
        publish("pg_advisory_lock", run_id)
    }
}

impl Drop for SessionLocks {
    fn drop(&mut self) {
        pg::release_session_advisory_locks();
    }
}

/// Announces which run holds the calling transaction's run lock.
pub fn publish_for_transaction(run_id: i64) -> Result<(), LockError> {
    publish("pg_advisory_xact_lock", run_id)
}

fn try_acquire(function: &str) -> Result<bool, LockError> {
    let attempt = || {
        Spi::get_one_with_args::<bool>(&format!("SELECT {function}($1, 0)"), &[RUN_LOCK.into()])
            .map(|acquired| acquired.unwrap_or(false))
            .map_err(LockError)
    };
    if attempt()? {
        return Ok(true);
    }
    match clear_stale_holder()? {
        Stale::No => Ok(false),
        Stale::HolderChanged => attempt(),
        Stale::HolderEnded => {
            let waited = std::time::Instant::now();
            while waited.elapsed() < STALE_RELEASE_WAIT {
                if attempt()? {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(50));
                pgrx::check_for_interrupts!();
            }
            attempt()
        }
    }
}

/// What became of a holder whose published run had ended.
enum Stale {
    /// Not stale: its run is running, or it published none.
    No,
    /// It released the lock or another run took it during the recheck.
    HolderChanged,
    /// It still held the lock and was told to end.
    HolderEnded,
}

fn publish(function: &str, run_id: i64) -> Result<(), LockError> {
    Spi::run_with_args(
        &format!("SELECT {function}($1, $2)"),
        &[RUN_ID_LOCK.into(), published_key(run_id).into()],
    )
    .map_err(LockError)
}

/// The run holding the lock in this database, if it has published itself.
pub fn running_run_id() -> Result<Option<i64>, LockError> {
    Ok(holder()?.map(|holder| holder.run_id))
}

/// A process holding the run lock and the run it published.
#[derive(Debug, PartialEq)]
struct Holder {
    pid: i32,
    run_id: i64,
    /// The run's status, if its row is committed.
    status: Option<String>,
}

fn holder() -> Result<Option<Holder>, LockError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT p.pid, p.objid::bigint, r.status
               FROM pg_catalog.pg_locks p
               JOIN pg_catalog.pg_locks l
                 ON l.pid = p.pid AND l.locktype = 'advisory' AND l.classid = $1::oid
                AND l.objid = 0 AND l.objsubid = 2 AND l.granted AND l.database = p.database
               LEFT JOIN dex_collector.runs r ON r.id = p.objid::bigint
              WHERE p.locktype = 'advisory' AND p.classid = $2::oid AND p.objsubid = 2 AND p.granted
                AND p.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              LIMIT 1",
            None,
            &[i64::from(RUN_LOCK).into(), i64::from(RUN_ID_LOCK).into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(match (row.get::<i32>(1)?, row.get::<i64>(2)?) {
            (Some(pid), Some(run_id)) => Some(Holder {
                pid,
                run_id,
                status: row.get::<String>(3)?,
            }),
            _ => None,
        })
    })
    .map_err(LockError)
}

/// A run whose row says it ended does not hold the lock once its last commit is through.
fn has_ended(holder: &Holder) -> bool {
    holder
        .status
        .as_deref()
        .and_then(RunStatus::parse)
        .is_some_and(|status| !status.is_active())
}

/// Ends the process holding the run lock when the run it published has ended and it still holds
/// the lock a moment later.
fn clear_stale_holder() -> Result<Stale, LockError> {
    let Some(first) = holder()?.filter(has_ended) else {
        return Ok(Stale::No);
    };
    std::thread::sleep(STALE_RECHECK);
    pgrx::check_for_interrupts!();
    if holder()?.as_ref() != Some(&first) {
        return Ok(Stale::HolderChanged);
    }
    log!(
        "dex_collector: process {} still holds the run lock of run {}, which ended as '{}'; ending that process to release it",
        first.pid,
        first.run_id,
        first.status.as_deref().unwrap_or_default()
    );
    Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_terminate_backend($1)",
        &[first.pid.into()],
    )
    .map_err(LockError)?;
    Ok(Stale::HolderEnded)
}

/// Run ids are positive and stay far below 2^31 (one run a minute for 4,000 years).
fn published_key(run_id: i64) -> i32 {
    i32::try_from(run_id).unwrap_or(i32::MAX)
}
