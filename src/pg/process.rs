//! The background worker's process: its entry point, its wait, reload, name and exit, and what it
//! asks of the server's state.

use std::ffi::CStr;
use std::sync::OnceLock;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::interrupts::{serve_interrupts_but_cancel, shutdown_requested, take_query_cancel};

/// The worker's wait: until its latch is set, `timeout` passes or the postmaster dies (false
/// then, or on shutdown). Other interrupts (signal barriers) are served, and a query cancel is
/// forgotten rather than raised outside any query.
pub fn wait_worker_latch(timeout: std::time::Duration) -> bool {
    let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    // SAFETY: the standard latch wait of a worker, on its own latch and thread.
    let events = unsafe {
        let events = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as i32,
            millis as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        events
    };
    serve_interrupts_but_cancel();
    take_query_cancel();
    events & pg_sys::WL_POSTMASTER_DEATH as i32 == 0 && !shutdown_requested()
}

/// Ends the process at once if the postmaster has died, as PostgreSQL's own waits do: a backend
/// that goes on (a run calling the endpoint until its deadline) keeps the old server's shared
/// memory attached, and a new postmaster refuses to start until it is gone.
pub fn exit_if_postmaster_died() {
    // SAFETY: a wait of no time on the backend's own wait set, on its thread: it returns at once,
    // or, the postmaster gone, exits the process (proc_exit(1)) as WL_EXIT_ON_PM_DEATH asks.
    unsafe {
        pg_sys::WaitLatch(
            std::ptr::null_mut(),
            (pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            0,
            pg_sys::PG_WAIT_EXTENSION,
        );
    }
}

/// True in a server pg_upgrade started (`-b`), the old cluster's and the new one's alike.
pub fn binary_upgrade() -> bool {
    // SAFETY: a flag the postmaster sets from its command line before it loads any library.
    unsafe { pg_sys::IsBinaryUpgrade }
}

/// True on a hot standby (until promotion).
pub fn recovery_in_progress() -> bool {
    // SAFETY: reads shared recovery state; callable in any backend.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// The worker's SIGHUP: reads the configuration files again.
pub fn reload_configuration() {
    // SAFETY: the standard reload of a worker's configuration, on its own thread.
    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
}

/// `application_name` in `pg_stat_activity`.
pub fn report_application_name(name: &CStr) {
    // SAFETY: pgstat copies the string.
    unsafe { pg_sys::pgstat_report_appname(name.as_ptr()) };
}

/// Ends the worker so that the postmaster starts it again after its restart interval (exit code
/// 1; code 0 would unregister it). At shutdown it is not restarted either way.
pub fn exit_worker_for_restart() -> ! {
    // SAFETY: the normal way for a worker to end; runs Postgres' exit callbacks (the one that
    // withdraws the worker's latch among them).
    unsafe { pg_sys::proc_exit(1) };
    // PostgreSQL 18's headers no longer declare proc_exit as not returning; it still never does.
    #[cfg(feature = "pg18")]
    unreachable!("proc_exit returned");
}

/// The process's effective user id: the server's user, whom a private key file must belong to.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The symbol the background worker is registered under.
pub const WORKER_ENTRY: &str = "dex_collector_worker_main";

/// What the worker process runs, set by `_PG_init` before the worker is registered: the
/// postmaster's memory, which every process it forks starts with. A function handed down rather
/// than called by name, so that this layer depends on nothing above it.
static WORKER_MAIN: OnceLock<fn() -> !> = OnceLock::new();

/// Sets what the worker process runs; before its registration.
pub fn set_worker_main(main: fn() -> !) {
    // A second call (a library loaded again) sets the same function: nothing to do.
    let _ = WORKER_MAIN.set(main);
}

/// The background worker's entry point, named in its registration.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn dex_collector_worker_main(_argument: pg_sys::Datum) {
    match WORKER_MAIN.get() {
        Some(main) => main(),
        None => error!("dex_collector worker: started without its library's initialisation"),
    }
}
