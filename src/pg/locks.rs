//! Advisory locks in a space of their own: the lock manager's advisory tags, with a fourth field
//! that no SQL function sets (`pg_advisory_lock(bigint)` sets 1, the two-key forms 2), so no
//! other session can take, hold or release one of these by calling a function, and no
//! application's advisory locks can collide with them. The holding session itself can release
//! its session-level ones: `pg_advisory_unlock_all()` releases every session-level advisory
//! lock. `pg_locks` shows them as `advisory` locks whose `objsubid` is [`LOCK_SPACE`].

use pgrx::pg_sys;

/// The fourth field of these locks' tags ('DC'), `objsubid` in `pg_locks`.
pub const LOCK_SPACE: u16 = 0x4443;

/// How long a lock is held.
#[derive(Clone, Copy, Debug)]
pub enum LockScope {
    /// Until the calling transaction ends: commit, abort or cancel.
    Transaction,
    /// Until [`release_session_locks`], or the process ends.
    Session,
}

/// What a try for a lock found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryLock {
    /// Taken now.
    Taken,
    /// This session held it already (taking it again only counts it again).
    AlreadyHeld,
    /// Another process holds it.
    Busy,
}

/// Takes the exclusive lock on (`first`, `second`) in this database if no other process holds
/// it. Within a transaction when `scope` is the transaction's.
pub fn try_lock(first: u32, second: u32, scope: LockScope) -> TryLock {
    match acquire(first, second, scope, true) {
        pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL => TryLock::Busy,
        pg_sys::LockAcquireResult::LOCKACQUIRE_ALREADY_HELD
        | pg_sys::LockAcquireResult::LOCKACQUIRE_ALREADY_CLEAR => TryLock::AlreadyHeld,
        _ => TryLock::Taken,
    }
}

/// Takes the exclusive lock on (`first`, `second`) in this database, waiting for it if another
/// process holds it (a wait that a cancel or the deadlock check ends with an ERROR).
pub fn lock(first: u32, second: u32, scope: LockScope) {
    acquire(first, second, scope, false);
}

fn acquire(
    first: u32,
    second: u32,
    scope: LockScope,
    dont_wait: bool,
) -> pg_sys::LockAcquireResult::Type {
    // Outside a transaction there is no resource owner to release a transaction's lock: it would
    // be held until the process ends.
    debug_assert!(
        matches!(scope, LockScope::Session) || {
            // SAFETY: reads the transaction state; valid in any state.
            unsafe { pg_sys::IsTransactionState() }
        }
    );
    // SAFETY: a backend connected to a database (MyDatabaseId set) reads its own global; the tag
    // is built as SET_LOCKTAG_ADVISORY builds it, and LockAcquire takes it by pointer for the
    // call's duration only. A transaction-scoped lock is taken, as pg_advisory_xact_lock takes
    // it, under the current resource owner, which the callers' transactions provide.
    unsafe {
        let tag = pg_sys::LOCKTAG {
            locktag_field1: pg_sys::MyDatabaseId.into(),
            locktag_field2: first,
            locktag_field3: second,
            locktag_field4: LOCK_SPACE,
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        let session = matches!(scope, LockScope::Session);
        pg_sys::LockAcquire(
            &tag,
            pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
            session,
            dont_wait,
        )
    }
}

/// Releases every session-level advisory lock this backend holds. Needs no transaction, so it
/// works after any failure, including one that aborted the transaction meant to release them.
pub fn release_session_locks() {
    // SAFETY: what pg_advisory_unlock_all() does; lock manager calls valid in any state.
    unsafe { pg_sys::LockReleaseSession(pg_sys::USER_LOCKMETHOD as pg_sys::LOCKMETHODID) };
}
