//! Every raw call into PostgreSQL: the one place in the extension with `unsafe` (the crate denies
//! it everywhere else, and CI checks that no other file says `unsafe`). Each block states why it
//! is sound in a SAFETY line. What pgrx wraps safely (SPI, settings, the background worker's
//! registration) the rest of the extension calls directly.
//!
//! This layer depends on nothing else of the extension: the worker's entry point is handed the
//! function it runs ([`set_worker_main`]) rather than naming it.

mod event_trigger;
mod guc;
mod interrupts;
mod jsonb;
mod locks;
mod process;
mod shmem;
mod transaction;

use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};

pub use guc::{define_checked_string, reserve_prefix, Rejection, StringCheck};
pub use interrupts::{
    block_all_signals, cancel_or_terminate_pending, handle_worker_sigterm, interrupt_pending,
    running_timer, serve_interrupts_but_cancel, shutdown_requested, take_query_cancel,
    take_shutdown_cancel, CallTimer,
};
#[cfg(any(test, feature = "pg_test"))]
pub use jsonb::jsonb_in_bytes;
pub use jsonb::Jsonb;
pub use locks::{lock, release_session_locks, try_lock, LockScope, TryLock, LOCK_SPACE};
pub use process::{
    binary_upgrade, effective_uid, exit_if_postmaster_died, exit_worker_for_restart,
    recovery_in_progress, reload_configuration, report_application_name, set_worker_main,
    wait_worker_latch, WORKER_ENTRY,
};
pub use shmem::{
    init_shared_memory, loading_shared_preload_libraries, preloaded, publish_worker_latch,
    set_worker_database_missing, wake_worker_at_commit, worker_database_missing, worker_running,
};
pub use transaction::{
    database_accepts_connections, in_rolled_back_subtransaction, in_subtransaction_kept_if_done,
    in_transaction, in_upkeep_transaction, RolledBack,
};

/// The report inside any caught error: a Postgres ERROR, a Rust `ereport!`, or a panic.
pub fn caught_report(caught: &CaughtError) -> &ErrorReportWithLevel {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report,
        CaughtError::RustPanic { ereport, .. } => ereport,
    }
}
