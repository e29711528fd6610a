//! Interrupts and time: the flags PostgreSQL's signal handlers set, and a time limit of the
//! extension's own for queries it runs for itself.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;

/// True when the backend has been asked to cancel the query or to exit, or the worker to shut
/// down.
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

/// In the worker: forgets a query cancel (`pg_cancel_backend()`, or the one its SIGTERM handler
/// sets), which has no query to cancel where it is taken; true when there was one.
pub fn take_query_cancel() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGINT handler, read and cleared on this thread.
    unsafe {
        let pending = std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0;
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 0);
        pending
    }
}

/// In the worker, at a shutdown: forgets the query cancel its SIGTERM handler set, which has no
/// statement to cancel where it is taken (the worker's own writes, a run's end).
pub fn take_shutdown_cancel() {
    if shutdown_requested() {
        take_query_cancel();
    }
}

/// The worker's SIGTERM ([`handle_worker_sigterm`]).
pub fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// The worker's SIGTERM (a shutdown, `pg_terminate_backend()`, `DROP DATABASE ... WITH (FORCE)`):
/// the shutdown flag its loop reads, and a query cancel, so that a statement it is running (a
/// targets query reading a foreign server that hangs, a wait for a lock) ends at its next
/// interrupt check instead of holding the worker until it finishes. Where no statement runs, the
/// worker takes that cancel back ([`take_query_cancel`]).
unsafe extern "C-unwind" fn worker_sigterm(_signal: c_int) {
    // SAFETY: what PostgreSQL's own handlers do: sig_atomic_t flags and the process latch, all
    // async-signal-safe, with errno kept for the code the signal interrupted.
    unsafe {
        let errno = *libc::__errno_location();
        std::ptr::write_volatile(&raw mut pg_sys::ShutdownRequestPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        set_latch_in_signal_handler(pg_sys::MyLatch);
        *libc::__errno_location() = errno;
    }
}

/// Installs the worker's SIGTERM handler; before the worker unblocks signals.
pub fn handle_worker_sigterm() {
    // SAFETY: replaces the background worker's default SIGTERM handler, on its own thread.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(libc::SIGTERM, Some(worker_sigterm));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(libc::SIGTERM, Some(worker_sigterm));
    }
}

/// In the worker, where no statement runs: serves pending interrupts (a signal barrier, say) but a
/// query cancel, which it leaves pending for [`take_query_cancel`]; a SIGTERM arriving meanwhile
/// sets one, and raising it here would end the worker with an ERROR outside any transaction.
pub fn serve_interrupts_but_cancel() {
    // SAFETY: HOLD_CANCEL_INTERRUPTS and RESUME_CANCEL_INTERRUPTS as in C, on the backend's thread.
    unsafe { pg_sys::QueryCancelHoldoffCount += 1 };
    pgrx::check_for_interrupts!();
    // SAFETY: as above; check_for_interrupts raises only a FATAL here, which never returns.
    unsafe { pg_sys::QueryCancelHoldoffCount -= 1 };
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

// utils/timeout.h's TimeoutId: the same values from PostgreSQL 15 to 18; TRANSACTION_TIMEOUT is
// new in 17.
const STATEMENT_TIMEOUT: c_int = 3;
#[cfg(any(feature = "pg17", feature = "pg18"))]
const TRANSACTION_TIMEOUT: c_int = 8;

unsafe extern "C" {
    fn get_timeout_active(id: c_int) -> bool;
    fn get_timeout_finish_time(id: c_int) -> pg_sys::TimestampTz;
    fn get_timeout_start_time(id: c_int) -> pg_sys::TimestampTz;
}

/// A timer of PostgreSQL's own that cancels a statement or ends a transaction.
#[derive(Clone, Copy)]
pub enum CallTimer {
    /// `statement_timeout`, from the statement's start.
    Statement,
    /// `transaction_timeout` (PostgreSQL 17 on), from the transaction's.
    Transaction,
}

/// A [`CallTimer`] as it runs.
pub struct RunningTimer {
    /// How long it was set for when it started.
    pub length: std::time::Duration,
    /// What is left of it.
    pub left: std::time::Duration,
}

/// The timer, if it runs. Read from the timer, not its setting: PostgreSQL starts it with the
/// statement or transaction, and raising the setting after that does not move it.
pub fn running_timer(timer: CallTimer) -> Option<RunningTimer> {
    let id = match timer {
        CallTimer::Statement => STATEMENT_TIMEOUT,
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        CallTimer::Transaction => TRANSACTION_TIMEOUT,
        #[cfg(not(any(feature = "pg17", feature = "pg18")))]
        CallTimer::Transaction => return None,
    };
    // SAFETY: reads of this backend's timeout table; none raises.
    let (start, finish, now) = unsafe {
        if !get_timeout_active(id) {
            return None;
        }
        (
            get_timeout_start_time(id),
            get_timeout_finish_time(id),
            pg_sys::GetCurrentTimestamp(),
        )
    };
    let micros = |span: pg_sys::TimestampTz| {
        std::time::Duration::from_micros(u64::try_from(span).unwrap_or_default())
    };
    Some(RunningTimer {
        length: micros(finish - start),
        left: micros(finish - now),
    })
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
