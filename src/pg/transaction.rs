//! Transactions of the worker's own, opened and closed by hand (a worker runs outside any), and
//! a read of the shared catalog for a worker connected to no database.

use std::ffi::CStr;
use std::panic::UnwindSafe;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use super::caught_report;
use super::interrupts::QueryTimer;

/// In a worker connected to no database: whether `name` exists and accepts connections (not
/// `datallowconn = false`, not left invalid by an interrupted DROP DATABASE). pg_database is
/// shared, and read with a plain scan as the autovacuum launcher does (its indexes need a
/// database's pg_class).
pub fn database_accepts_connections(name: &CStr) -> Result<bool, String> {
    in_transaction(|| {
        let mut found = false;
        // SAFETY: a catalog heap scan inside the transaction `in_transaction` opened; every tuple
        // of pg_database is a FormData_pg_database, and the scan and relation are closed below.
        unsafe {
            let relation =
                pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
            let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let database = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
                if CStr::from_ptr((*database).datname.data.as_ptr()) == name {
                    // -2 marks a database an interrupted DROP DATABASE left invalid.
                    found = (*database).datallowconn && (*database).datconnlimit != -2;
                    break;
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        }
        found
    })
}

/// Runs `work` in a transaction of its own, from a worker outside any transaction. A Postgres
/// error inside, or at commit, aborts the transaction and is returned as its message.
///
/// At a shutdown, the commit does not wait for a synchronous standby: the postmaster's SIGTERM
/// comes once, its query cancel ends one such wait, and a standby that is down would hold every
/// commit after it, and the shutdown, for good (a session's terminate ends each of its waits).
/// And the transaction's table statistics are reported after it: a worker has no idle loop that
/// does so, and without them autovacuum never learns of the rows the worker deletes and updates.
pub fn in_transaction<R>(work: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    in_transaction_waiting(None, work)
}

/// How long a transaction of the worker's upkeep waits for a lock ([`in_upkeep_transaction`]).
const UPKEEP_LOCK_WAIT: &CStr = c"2s";

/// [`in_transaction`] for the worker's upkeep (its deliveries, the retention of history): a lock
/// it waits for longer than [`UPKEEP_LOCK_WAIT`] fails it, to be tried again on a later turn.
/// A worker's statements have no `statement_timeout`, and a session that keeps a lock on what the
/// upkeep writes (an event marked by hand in a transaction left open) would otherwise hold the
/// worker's whole loop, its runs, pings and the schedule's watch, until that transaction ends.
pub fn in_upkeep_transaction<R>(
    work: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, String> {
    in_transaction_waiting(Some(UPKEEP_LOCK_WAIT), work)
}

/// Sets `name` to `value` for the current transaction only (SET LOCAL).
///
/// # Safety
/// On the backend's thread, inside a transaction (a value the setting refuses raises an ERROR).
unsafe fn set_local(name: &CStr, value: &CStr) {
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

fn in_transaction_waiting<R>(
    lock_wait: Option<&CStr>,
    work: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, String> {
    // SAFETY: the worker is connected and outside any transaction whenever this is called.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    let outcome = PgTryBuilder::new(|| {
        // SAFETY: in the transaction begun above; the settings are its own (SET LOCAL), and an
        // ERROR from any call is caught below.
        unsafe {
            if super::interrupts::shutdown_requested() {
                set_local(c"synchronous_commit", c"local");
            }
            if let Some(wait) = lock_wait {
                set_local(c"lock_timeout", wait);
            }
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let result = work();
        // SAFETY: closes the transaction begun above; an ERROR here is caught below.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(result)
    })
    .catch_others(|caught| {
        // SAFETY: aborting releases the snapshot and every resource of the failed transaction,
        // and of any subtransaction an error left open inside it (aborting only the innermost
        // would leave the worker in a failed subtransaction, where every later start and commit
        // does nothing).
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        Err(caught_report(&caught).message().to_string())
    })
    .execute();
    // SAFETY: outside any transaction, as a backend reports between its statements.
    unsafe { pg_sys::pgstat_report_stat(true) };
    outcome
}

/// What a subtransaction of this module gives back: what `work` returned or raised, and whether
/// its time limit ran out (rolled back then, whichever function ran it).
pub struct RolledBack<T> {
    /// What `work` returned, or the error it raised.
    pub outcome: Result<T, Box<CaughtError>>,
    /// The time limit ran out (the query cancel it raised, or left pending, was its own).
    pub timed_out: bool,
}

/// Runs `work` in a subtransaction that is always rolled back, with `settings` (name, value) set
/// for its duration, a fresh snapshot (so it sees what this transaction did before, as any
/// statement of a volatile function would), given a `limit`, a [`QueryTimer`], and given a role,
/// with that role's rights in a security-restricted operation (as VACUUM runs an index's
/// functions as the table's owner: no `SET ROLE` or `SET SESSION AUTHORIZATION` back). An error
/// inside is caught and returned; the caller's memory context, resource owner and user are
/// restored either way. Values `work` returns must be owned by Rust (not pointers into
/// PostgreSQL memory): the subtransaction's memory is gone afterwards.
pub fn in_rolled_back_subtransaction<T>(
    settings: &[(&CStr, &CStr)],
    limit: Option<Duration>,
    role: Option<pg_sys::Oid>,
    work: impl FnOnce() -> T + UnwindSafe,
) -> RolledBack<T> {
    in_subtransaction(settings, limit, role, |_| false, work)
}

/// Runs `work` in a subtransaction, given a `limit`, with a [`QueryTimer`]: what it did is kept
/// when it returns `Ok`, undone when it returns an `Err`, raises an error (caught and returned)
/// or runs out of time, as a PL/pgSQL exception block does; the caller's transaction goes on
/// either way.
pub fn in_subtransaction_kept_if_done<T, E>(
    limit: Option<Duration>,
    work: impl FnOnce() -> Result<T, E> + UnwindSafe,
) -> RolledBack<Result<T, E>> {
    in_subtransaction(&[], limit, None, Result::is_ok, work)
}

fn in_subtransaction<T>(
    settings: &[(&CStr, &CStr)],
    limit: Option<Duration>,
    role: Option<pg_sys::Oid>,
    keep: impl FnOnce(&T) -> bool,
    work: impl FnOnce() -> T + UnwindSafe,
) -> RolledBack<T> {
    // SAFETY: the same sequence PL/pgSQL uses around an exception block, and the user switch
    // VACUUM makes; we are on the backend's thread inside a transaction (every caller runs within
    // a SQL function or a worker transaction).
    let (old_context, old_owner, old_user, old_security) = unsafe {
        let (mut user, mut security) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut security);
        let saved = (
            pg_sys::CurrentMemoryContext,
            pg_sys::CurrentResourceOwner,
            user,
            security,
        );
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        for (name, value) in settings {
            set_local(name, value);
        }
        if let Some(role) = role {
            let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE
                | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
            pg_sys::SetUserIdAndSecContext(role, security | restricted);
        }
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        saved
    };
    let timer = limit.map(QueryTimer::start);
    let outcome: Result<T, Box<CaughtError>> = PgTryBuilder::new(|| Ok(work()))
        .catch_others(|caught| Err(Box::new(caught)))
        .execute();
    // Disarmed before the subtransaction ends, so that it cannot cancel that.
    let timed_out = timer.is_some_and(QueryTimer::stop);
    // SAFETY: ends the subtransaction begun above, restoring the caller's context, owner and
    // user; an error inside already lost the snapshot with the aborted subtransaction's state.
    unsafe {
        if outcome.is_ok() {
            pg_sys::PopActiveSnapshot();
        }
        if !timed_out && outcome.as_ref().is_ok_and(keep) {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::SetUserIdAndSecContext(old_user, old_security);
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    RolledBack { outcome, timed_out }
}
