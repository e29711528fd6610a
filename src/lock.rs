//! At most one collection runs at a time per database, whoever starts it (pg_cron, the worker,
//! a person in the SQL editor), with advisory locks in a space of the extension's own
//! ([`pg::LOCK_SPACE`]), which no SQL function can take: a session that takes advisory locks,
//! by accident or to stop collection, cannot hold runs back.
//! - `(RUN_LOCK, 0)` is the run itself: taken with a *try*, so a second caller never waits;
//! - `(RUN_ID_LOCK, run id)` publishes which run holds it, so a skipped caller can name that run
//!   even while its row is not committed yet (a SQL call writes its history at commit).
//!
//! A SQL call takes transaction-level locks (released at commit, abort or cancel). The worker,
//! which commits after each company, takes session-level locks held by a [`SessionLocks`] guard,
//! which releases them however the run ends, without needing a transaction. Its own session can
//! release those (`pg_advisory_unlock_all()` releases every session-level advisory lock): the
//! worker confirms them after the targets query, the one SQL it runs that it does not control.

use pgrx::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::pg::{self, LockScope, TryLock};

/// This worker process has warned that its targets query released the run lock.
static RELEASE_TOLD: AtomicBool = AtomicBool::new(false);

/// 'DEXC' and 'DEXD': the first key of our two-key advisory locks.
const RUN_LOCK: u32 = 0x4445_5843;
const RUN_ID_LOCK: u32 = 0x4445_5844;

/// The advisory locks that keep runs apart could not be read, or were lost.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("dex_collector could not check for a run in progress: {0}")]
    Unreadable(#[from] pgrx::spi::Error),
    /// SQL the worker ran while holding its session lock (the targets query) released it, with
    /// `pg_advisory_unlock_all()`, and another run took it.
    #[error("the targets query (dex_collector.targets_query, or a function or view it reads) released the run lock with pg_advisory_unlock_all(), and another run took it meanwhile; this run called no company: take pg_advisory_unlock_all() out of what the targets query runs")]
    Lost,
}

/// Takes the run lock for the calling transaction if it is free; false when another collection
/// holds it.
pub fn try_acquire_for_transaction() -> bool {
    pg::try_lock(RUN_LOCK, 0, LockScope::Transaction) != TryLock::Busy
}

/// The worker's run lock, held across its transactions until the guard drops.
pub struct SessionLocks(());

impl SessionLocks {
    /// Takes the run lock for this session if it is free; `None` when another collection holds it.
    pub fn try_acquire() -> Option<SessionLocks> {
        // The guard exists before the lock is taken, so an ERROR in between cannot leak it.
        let guard = SessionLocks(());
        (pg::try_lock(RUN_LOCK, 0, LockScope::Session) != TryLock::Busy).then_some(guard)
    }

    /// Announces which run holds the run lock.
    pub fn publish(&self, run_id: i64) {
        pg::lock(RUN_ID_LOCK, published_key(run_id), LockScope::Session);
    }

    /// After SQL the worker does not control (the targets query), which could have released
    /// every session-level advisory lock of this session: the locks again, unless another run
    /// took the run lock meanwhile. Taking a lock this session holds only counts it again.
    pub fn confirm(&self, run_id: i64) -> Result<(), LockError> {
        match pg::try_lock(RUN_LOCK, 0, LockScope::Session) {
            TryLock::AlreadyHeld => {}
            TryLock::Busy => return Err(LockError::Lost),
            TryLock::Taken => {
                // No other run got in this time: said once a worker process, not every run.
                if !RELEASE_TOLD.swap(true, Ordering::Relaxed) {
                    warning!("dex_collector worker: the targets query (dex_collector.targets_query, or a function or view it reads) released the run lock with pg_advisory_unlock_all(); taken again, as no other run had taken it meanwhile (one that had would have failed this run): take pg_advisory_unlock_all() out of what the targets query runs");
                }
            }
        }
        self.publish(run_id);
        Ok(())
    }
}

impl Drop for SessionLocks {
    fn drop(&mut self) {
        pg::release_session_locks();
    }
}

/// Announces which run holds the calling transaction's run lock.
pub fn publish_for_transaction(run_id: i64) {
    pg::lock(RUN_ID_LOCK, published_key(run_id), LockScope::Transaction);
}

/// The run holding the lock in this database, if it has published itself (a holder has not
/// while it plans its run, nor once it has let the lock go).
pub fn running_run_id() -> Result<Option<i64>, LockError> {
    // One row whatever holds the lock: a query that finds none is an error to get_one.
    Spi::get_one_with_args::<i64>(
        "SELECT (SELECT p.objid::bigint
           FROM pg_catalog.pg_locks p
           JOIN pg_catalog.pg_locks l
             ON l.pid = p.pid AND l.locktype = 'advisory' AND l.classid = $1::oid
            AND l.objid = 0 AND l.objsubid = $3 AND l.granted AND l.database = p.database
          WHERE p.locktype = 'advisory' AND p.classid = $2::oid AND p.objsubid = $3 AND p.granted
            AND p.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          LIMIT 1)",
        &[
            i64::from(RUN_LOCK).into(),
            i64::from(RUN_ID_LOCK).into(),
            i32::from(pg::LOCK_SPACE).into(),
        ],
    )
    .map_err(LockError::Unreadable)
}

/// Run ids are positive and stay far below 2^32 (one run a minute for 8,000 years).
fn published_key(run_id: i64) -> u32 {
    u32::try_from(run_id).unwrap_or(u32::MAX)
}
