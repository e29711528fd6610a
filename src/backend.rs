//! Every direct call into PostgreSQL's C API that pgrx does not wrap safely: transactions of the
//! worker, interrupt and shutdown flags, a time limit for queries, signal masks, session locks,
//! recovery, the shared memory through which a committing backend wakes the worker, and the event
//! trigger that sees `DROP EXTENSION`. (`readonly.rs` holds the one other piece: read-only subtransactions.)
//! The rest of the extension calls these safe functions and contains no `unsafe`.

use std::ffi::{c_int, CStr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};

use crate::error::caught_report;

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

/// The worker makes its latch the one a queued run sets.
pub fn publish_worker_latch() {
    if preloaded() {
        // SAFETY: MyLatch points into this process's PGPROC, in shared memory, for its lifetime.
        let latch = unsafe { pg_sys::MyLatch } as usize;
        WORKER_LATCH.get().store(latch, Ordering::Release);
    }
}

/// The worker withdraws its latch as it exits.
pub fn withdraw_worker_latch() {
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
pub fn in_transaction<R>(work: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    // SAFETY: the worker is connected and outside any transaction whenever this is called.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    PgTryBuilder::new(|| {
        let result = work();
        // SAFETY: closes the transaction begun above; an ERROR here is caught below.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(result)
    })
    .catch_others(|caught| {
        // SAFETY: aborting releases the snapshot and every resource of the failed transaction.
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(caught_report(&caught).message().to_string())
    })
    .execute()
}

/// True when the backend has been asked to cancel the query or to exit, or the worker to shut
/// down (its SIGTERM handler sets `ShutdownRequestPending`).
pub fn cancel_or_terminate_pending() -> bool {
    // SAFETY: reads of sig_atomic_t flags that signal handlers set; volatile as in C.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
            || shutdown_requested()
    }
}

/// True when any interrupt waits to be served: a cancel or terminate, and also a signal barrier
/// or another request that `CHECK_FOR_INTERRUPTS` serves without raising.
pub fn interrupt_pending() -> bool {
    // SAFETY: a sig_atomic_t flag set by signal handlers; volatile as in C.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::InterruptPending) != 0 || shutdown_requested()
    }
}

/// In the worker: forgets a query cancel (`pg_cancel_backend`), which has no query to cancel
/// there; true when there was one.
pub fn take_query_cancel() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGINT handler, read and cleared on this thread.
    unsafe {
        let pending = std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0;
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 0);
        pending
    }
}

/// The worker's wait: until its latch is set, `timeout` passes or the postmaster dies (false
/// then, or on shutdown). A query cancel is forgotten rather than raised outside any query, and
/// other interrupts (signal barriers) are served.
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
    take_query_cancel();
    pgrx::check_for_interrupts!();
    events & pg_sys::WL_POSTMASTER_DEATH as i32 == 0 && !shutdown_requested()
}

/// Set by [`query_timer_expired`] when a [`QueryTimer`] runs out.
static QUERY_TIMER_EXPIRED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This backend's timeout slot for [`QueryTimer`], registered on first use.
    static QUERY_TIMER_ID: std::cell::Cell<Option<c_int>> = const { std::cell::Cell::new(None) };
}

// utils/timeout.h, which pgrx does not bind, and SetLatch without pgrx's error guard, which has
// no place in a signal handler. None of these raises an ERROR (RegisterTimeout and
// enable_timeout_after at worst a FATAL, which exits without unwinding through Rust).
unsafe extern "C" {
    fn RegisterTimeout(id: c_int, handler: Option<unsafe extern "C" fn()>) -> c_int;
    fn enable_timeout_after(id: c_int, delay_ms: c_int);
    fn disable_timeout(id: c_int, keep_indicator: bool);
    #[link_name = "SetLatch"]
    fn set_latch_in_signal_handler(latch: *mut pg_sys::Latch);
}

/// Any id from `USER_TIMEOUT` on makes `RegisterTimeout` pick a free user slot; the enum's
/// value of `USER_TIMEOUT` differs between majors, so ask with one past all of them.
const ANY_USER_TIMEOUT: c_int = 1000;

/// Runs in PostgreSQL's SIGALRM handler: only flags, as a query cancel's handler sets them.
unsafe extern "C" fn query_timer_expired() {
    QUERY_TIMER_EXPIRED.store(true, Ordering::SeqCst);
    // SAFETY: what StatementCancelHandler does, minus the signal: sig_atomic_t flags and the
    // process latch, all async-signal-safe.
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        set_latch_in_signal_handler(pg_sys::MyLatch);
    }
}

/// A time limit on SQL the extension runs for itself (the targets query, which may read a
/// foreign server that hangs): when it runs out, the next `CHECK_FOR_INTERRUPTS` raises a query
/// cancel. A timeout of its own, not `statement_timeout`, so that the caller's statement timeout
/// is left as it is, and no SIGINT, which the worker takes for `pg_cancel_backend`.
pub struct QueryTimer {
    id: c_int,
}

impl QueryTimer {
    pub fn start(limit: std::time::Duration) -> QueryTimer {
        let id = QUERY_TIMER_ID.with(|slot| match slot.get() {
            Some(id) => id,
            None => {
                // SAFETY: takes one of the process's free user timeout slots, once per process,
                // on the backend's thread.
                let id = unsafe { RegisterTimeout(ANY_USER_TIMEOUT, Some(query_timer_expired)) };
                slot.set(Some(id));
                id
            }
        });
        QUERY_TIMER_EXPIRED.store(false, Ordering::SeqCst);
        let millis = c_int::try_from(limit.as_millis())
            .unwrap_or(c_int::MAX)
            .max(1);
        // SAFETY: arms the timeout registered above.
        unsafe { enable_timeout_after(id, millis) };
        QueryTimer { id }
    }

    /// Disarms the timer; true when it had run out (the query cancel it raised, or left pending,
    /// was its own).
    pub fn stop(self) -> bool {
        drop(self);
        let expired = QUERY_TIMER_EXPIRED.swap(false, Ordering::SeqCst);
        if expired {
            // A cancel the timer asked for and no query served yet is not the user's.
            take_query_cancel();
        }
        expired
    }
}

impl Drop for QueryTimer {
    /// Disarms the timer, however it goes (unwinding too), so it cannot cancel a later query.
    fn drop(&mut self) {
        // SAFETY: disarms our own timeout; harmless when it already fired.
        unsafe { disable_timeout(self.id, false) };
    }
}

/// The worker's SIGTERM.
pub fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// For helper threads (DNS lookups): every signal stays with the backend's own thread.
pub fn block_all_signals() {
    // SAFETY: plain libc calls on a fully initialised, thread-local signal set.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// True on a hot standby (until promotion).
pub fn recovery_in_progress() -> bool {
    // SAFETY: reads shared recovery state; callable in any backend.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Releases every session-level advisory lock this backend holds. Needs no transaction, so it
/// works after any failure, including one that aborted the transaction meant to release them.
pub fn release_session_advisory_locks() {
    // SAFETY: what pg_advisory_unlock_all() does; lock manager calls valid in any state.
    unsafe { pg_sys::LockReleaseSession(pg_sys::USER_LOCKMETHOD as pg_sys::LOCKMETHODID) };
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
    withdraw_worker_latch();
    // SAFETY: the normal way for a worker to end; runs Postgres' exit callbacks.
    unsafe { pg_sys::proc_exit(1) }
}

/// The background worker's entry point, named in its registration.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn dex_collector_worker_main(_argument: pg_sys::Datum) {
    crate::worker::main()
}

/// The event trigger function behind `dex_collector.before_drop`: at the start of a statement
/// that drops dex_collector (`DROP EXTENSION` naming it, `DROP SCHEMA ... CASCADE` of its schema,
/// `DROP OWNED BY` its owner), runs `dex_collector.unschedule_all()` so no pg_cron job is left
/// calling functions that are about to disappear. Its work is undone if the drop fails.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn dex_collector_before_drop(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: Postgres calls an event trigger function with EventTriggerData as its context.
    let dropped = unsafe { dropped_by(fcinfo) };
    let drops_this_extension = match dropped {
        Dropped::Extensions(names) => names.iter().any(|name| name == "dex_collector"),
        Dropped::SchemasWithContents(names) => Spi::get_one_with_args::<bool>(
            "SELECT n.nspname = ANY ($1)
               FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
              WHERE e.extname = 'dex_collector'",
            &[names.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false),
        Dropped::OwnedBy(roles) => Spi::get_one_with_args::<bool>(
            "SELECT e.extowner = ANY ($1) FROM pg_catalog.pg_extension e WHERE e.extname = 'dex_collector'",
            &[roles.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false),
        Dropped::Other => false,
    };
    // Only for a role that may drop it: anyone else meets PostgreSQL's own "must be owner".
    let may_drop = || {
        Spi::get_one::<bool>(
            "SELECT pg_catalog.pg_has_role(current_user, e.extowner, 'USAGE')
               FROM pg_catalog.pg_extension e WHERE e.extname = 'dex_collector'",
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    };
    if drops_this_extension && may_drop() {
        if let Err(error) = Spi::run("SELECT dex_collector.unschedule_all()") {
            error!("dex_collector: could not remove its pg_cron jobs before the drop: {error}");
        }
    }
    pg_sys::Datum::from(0)
}

/// What a statement an event trigger sees would drop, as far as dex_collector is concerned.
enum Dropped {
    /// `DROP EXTENSION` of these names.
    Extensions(Vec<String>),
    /// `DROP SCHEMA ... CASCADE` of these schemas (without CASCADE the drop of a schema that holds
    /// the extension fails, and so nothing goes).
    SchemasWithContents(Vec<String>),
    /// `DROP OWNED BY` these roles (those that exist).
    OwnedBy(Vec<pg_sys::Oid>),
    Other,
}

/// # Safety
/// `fcinfo` must be the call info of an event trigger function.
unsafe fn dropped_by(fcinfo: pg_sys::FunctionCallInfo) -> Dropped {
    // SAFETY (whole body): the caller guarantees an event trigger call, whose context is an
    // EventTriggerData holding the statement's parse tree; node tags are checked before any cast:
    // a DropStmt of extensions or schemas lists String nodes, a DropOwnedStmt RoleSpec nodes.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            return Dropped::Other;
        }
        let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
        if tree.is_null() {
            return Dropped::Other;
        }
        match (*tree).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let drop = tree.cast::<pg_sys::DropStmt>();
                match (*drop).removeType {
                    pg_sys::ObjectType::OBJECT_EXTENSION => {
                        Dropped::Extensions(string_nodes((*drop).objects))
                    }
                    pg_sys::ObjectType::OBJECT_SCHEMA
                        if (*drop).behavior == pg_sys::DropBehavior::DROP_CASCADE =>
                    {
                        Dropped::SchemasWithContents(string_nodes((*drop).objects))
                    }
                    _ => Dropped::Other,
                }
            }
            pg_sys::NodeTag::T_DropOwnedStmt => {
                let roles = (*tree.cast::<pg_sys::DropOwnedStmt>()).roles;
                Dropped::OwnedBy(
                    list_nodes(roles)
                        .filter(|node| (**node).type_ == pg_sys::NodeTag::T_RoleSpec)
                        .map(|node| pg_sys::get_rolespec_oid(node.cast::<pg_sys::RoleSpec>(), true))
                        .filter(|oid| *oid != pg_sys::InvalidOid)
                        .collect(),
                )
            }
            _ => Dropped::Other,
        }
    }
}

/// The non-null nodes of a parse tree `List`.
///
/// # Safety
/// `list` must be null or a valid `List` of node pointers that outlives the iterator.
unsafe fn list_nodes(list: *mut pg_sys::List) -> impl Iterator<Item = *mut pg_sys::Node> {
    // SAFETY: the caller guarantees a valid list; `length` elements follow `elements`.
    let length = if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    };
    (0..usize::try_from(length).unwrap_or(0))
        // SAFETY: i < length.
        .map(move |i| unsafe { (*(*list).elements.add(i)).ptr_value.cast::<pg_sys::Node>() })
        .filter(|node| !node.is_null())
}

/// The values of a `List` of `String` nodes (names in a `DROP` statement).
///
/// # Safety
/// As for [`list_nodes`].
unsafe fn string_nodes(list: *mut pg_sys::List) -> Vec<String> {
    // SAFETY: node tags are checked before the cast; a String node's sval is a C string or null.
    unsafe {
        list_nodes(list)
            .filter(|node| (**node).type_ == pg_sys::NodeTag::T_String)
            .filter_map(|node| {
                let value = (*node.cast::<pg_sys::String>()).sval;
                (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
            })
            .collect()
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_dex_collector_before_drop() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
