//! Shared memory: the worker's latch, through which a committing backend wakes it, and the flag
//! a failed database connection leaves for the worker's next start.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};

/// The worker's latch, published by the worker (0: no worker running).
// SAFETY: the name is ours alone.
static WORKER_LATCH: PgAtomic<AtomicUsize> =
    unsafe { PgAtomic::new(c"dex_collector_worker_latch") };
/// Set by a worker start that failed to connect to its database, so that the next start looks for
/// the database without connecting to it instead of failing the same way every few seconds.
// SAFETY: the name is ours alone.
static DATABASE_MISSING: PgAtomic<AtomicBool> =
    unsafe { PgAtomic::new(c"dex_collector_worker_database_missing") };

/// Whether this process got the shared memory above (the library is in
/// `shared_preload_libraries`); inherited by every backend the postmaster forks.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// In `_PG_init`: true while the postmaster loads `shared_preload_libraries`.
pub fn loading_shared_preload_libraries() -> bool {
    // SAFETY: a flag Postgres sets while it loads shared_preload_libraries.
    unsafe { pg_sys::process_shared_preload_libraries_in_progress }
}

/// Requests the shared memory; only while `shared_preload_libraries` is being loaded.
pub fn init_shared_memory() {
    pg_shmem_init!(WORKER_LATCH);
    pg_shmem_init!(DATABASE_MISSING);
    PRELOADED.store(true, Ordering::Relaxed);
}

/// True when the library was preloaded, so the worker and its shared memory exist.
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// The worker makes its latch the one a queued run sets, withdrawn however the worker exits (an
/// ERROR that ends it included): a latch left published says a worker runs, and SQL calls leave
/// the deletion of old history to it.
pub fn publish_worker_latch() {
    if preloaded() {
        // SAFETY: MyLatch points into this process's PGPROC, in shared memory, for its lifetime;
        // the callback runs once, as the process detaches from shared memory.
        unsafe {
            let latch = pg_sys::MyLatch as usize;
            WORKER_LATCH.get().store(latch, Ordering::Release);
            pg_sys::before_shmem_exit(Some(withdraw_at_exit), pg_sys::Datum::from(0));
        }
    }
}

unsafe extern "C-unwind" fn withdraw_at_exit(_code: std::ffi::c_int, _argument: pg_sys::Datum) {
    withdraw_worker_latch();
}

/// Whether a worker has connected to its database and not exited since (its latch published).
pub fn worker_running() -> bool {
    preloaded() && WORKER_LATCH.get().load(Ordering::Acquire) != 0
}

/// The worker withdraws its latch as it exits (see [`publish_worker_latch`]).
fn withdraw_worker_latch() {
    if preloaded() {
        WORKER_LATCH.get().store(0, Ordering::Release);
    }
}

/// Wakes the worker when the calling transaction commits (before, it could not see what the
/// transaction queued). Nothing happens on abort, or when no worker runs.
pub fn wake_worker_at_commit() {
    if !preloaded() {
        return;
    }
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        let latch = WORKER_LATCH.get().load(Ordering::Acquire);
        if latch != 0 {
            // SAFETY: the latch lives in a PGPROC in shared memory, valid for the postmaster's
            // lifetime; if the worker exited meanwhile, setting it wakes at worst another process.
            unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
        }
    });
}

/// Whether the previous worker start could not connect to its database.
pub fn worker_database_missing() -> bool {
    preloaded() && DATABASE_MISSING.get().load(Ordering::Acquire)
}

pub fn set_worker_database_missing(missing: bool) {
    if preloaded() {
        DATABASE_MISSING.get().store(missing, Ordering::Release);
    }
}
