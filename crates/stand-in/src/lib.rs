//! A stand-in for the web app's `/api/dex/collect-bulk` endpoint (see docs/contract.md): answers like
//! the real one, per company, including the ways real deployments fail, and, given a [`Capacity`],
//! as an endpoint that can serve only so many requests at once. It knows nothing of
//! PostgreSQL: the core's tests, the end-to-end suite, the demo and the benchmarks all use it, and
//! the `dex-stand-in` program (`src/main.rs`) serves it from the command line.
//!
//! The server runs on its own tokio runtime owned by [`StandIn`], so callers need no runtime:
//!
//! ```no_run
//! use dex_stand_in::{Behavior, StandIn, StandInConfig};
//!
//! let stand_in = StandIn::start(StandInConfig::default())?;
//! stand_in.set_behavior("c0ffee00-0000-0000-0000-000000000001", Behavior::Hang);
//! // ... point the extension at stand_in.url() ...
//! assert_eq!(stand_in.requests().len(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]

mod behavior;
mod capacity;
mod connection;
mod http;
mod tls;

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

pub use behavior::{synthetic_counts, Behavior, SpecError, DEFAULT_PAGE_SIZE, SPEC_FORMS};
pub use capacity::{Capacity, CapacityReport};
pub use http::RecordedRequest;

use behavior::{Answer, Paging, PlannedAnswer, Response};
use connection::serve_connection;

/// The one path the stand-in serves.
pub const COLLECT_PATH: &str = "/api/dex/collect-bulk";

/// The service key of `StandInConfig::default()`.
pub const DEFAULT_SERVICE_KEY: &str = "stand-in-service-key";

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long `stop()`/drop waits for the server's threads to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// The `X-Service-Key` value requests must carry.
    pub service_key: String,
    /// Added before every answer; changeable later with `set_latency`.
    pub latency: Duration,
    /// The behavior of companies without one of their own.
    pub default_behavior: Behavior,
    /// Keep every request for `requests()`; turn off for benchmarks.
    pub record_requests: bool,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a fresh self-signed certificate (see `StandIn::cert_pem`).
    pub tls: bool,
    /// Not the collect-bulk endpoint but a receiver of webhooks and heartbeats: every request,
    /// any method and path, is recorded and answered with this status (changeable later with
    /// `set_receiver_status`).
    pub receiver_status: Option<u16>,
    /// An endpoint that serves so many requests at once, queues a few more and refuses the rest
    /// (see `Capacity`); `None`: every request is served at once.
    pub capacity: Option<Capacity>,
    /// Closes a connection that waits this long for its next request after an answer, as Node's
    /// `server.keepAliveTimeout` does (5 s there by default); `None`: it stays open until the
    /// client closes it.
    pub keep_alive_timeout: Option<Duration>,
}

impl Default for StandInConfig {
    fn default() -> StandInConfig {
        StandInConfig {
            service_key: DEFAULT_SERVICE_KEY.to_owned(),
            latency: Duration::ZERO,
            default_behavior: Behavior::Synthetic,
            record_requests: true,
            port: 0,
            tls: false,
            receiver_status: None,
            capacity: None,
            keep_alive_timeout: None,
        }
    }
}

/// A running stand-in endpoint. Dropping it (or `stop()`) shuts the server down and closes every
/// connection before returning; when dropped inside an async runtime it cannot wait, and the
/// connections close a moment later.
pub struct StandIn {
    state: Arc<State>,
    runtime: Option<Runtime>,
    port: u16,
    cert_pem: Option<String>,
}

impl StandIn {
    /// Binds 127.0.0.1:`config.port` and starts serving.
    pub fn start(config: StandInConfig) -> io::Result<StandIn> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (tls, cert_pem) = if config.tls {
            let (acceptor, cert_pem) = tls::self_signed_acceptor()?;
            (Some(acceptor), Some(cert_pem))
        } else {
            (None, None)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("dex-stand-in")
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let state = Arc::new(State::new(&config));
        runtime.spawn(accept_connections(listener, Arc::clone(&state), tls));
        Ok(StandIn {
            state,
            runtime: Some(runtime),
            port,
            cert_pem,
        })
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS), without a trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The endpoint's full URL: `url()` + `/api/dex/collect-bulk`.
    pub fn collect_url(&self) -> String {
        format!("{}{COLLECT_PATH}", self.url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The self-signed certificate (PEM) when serving HTTPS, for a client to trust as its CA.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Sets how `company_id` is answered from now on, restarting its `FailTimes` count.
    pub fn set_behavior(&self, company_id: &str, behavior: Behavior) {
        write(&self.state.behaviors)
            .by_company
            .insert(company_id.to_owned(), InstalledBehavior::new(behavior));
    }

    /// Sets how companies without a behavior of their own are answered, restarting their
    /// `FailTimes` counts.
    pub fn set_default_behavior(&self, behavior: Behavior) {
        write(&self.state.behaviors).default = InstalledBehavior::new(behavior);
    }

    /// Delay added before every answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// Back to the configuration the stand-in started with: per-company behaviors, `FailTimes`
    /// counts, recorded requests and counters are cleared; default behavior and latency are the
    /// configured ones. Connection ids keep counting, so they stay unique.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// A receiver's answer from now on (see `StandInConfig::receiver_status`).
    pub fn set_receiver_status(&self, status: u16) {
        self.state.receiver_status.store(status, Ordering::SeqCst);
    }

    /// Every request received since start or `reset()`, in order (empty when not recording).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).clone()
    }

    /// How many requests were received since start or `reset()` (counted even when not recording).
    pub fn request_count(&self) -> u64 {
        self.state.requests_received.load(Ordering::SeqCst)
    }

    /// Blocks until `count` requests were received since start or `reset()`, or `timeout`
    /// passed; tells which. For tests that must know the endpoint was reached (e.g. before
    /// stopping a hanging answer) without polling.
    pub fn wait_for_requests(&self, count: u64, timeout: Duration) -> bool {
        self.state.wait_for_requests(count, timeout)
    }

    /// The largest number of requests being answered at the same time since start or `reset()`.
    pub fn max_concurrent_requests(&self) -> usize {
        self.state.peak_answering.load(Ordering::Relaxed)
    }

    /// How many requests are being answered now (abandoned ones included, until their answer
    /// is written or fails).
    pub fn requests_being_answered(&self) -> usize {
        self.state.answering.load(Ordering::Relaxed)
    }

    /// Changes how many requests an endpoint with a `Capacity` serves at once; nothing without.
    pub fn set_capacity_workers(&self, workers: usize) {
        if let Some(gate) = &self.state.capacity {
            gate.set_workers(workers);
        }
    }

    /// What the capacity did since start or `reset()`; empty without one.
    pub fn capacity_report(&self) -> CapacityReport {
        self.state
            .capacity
            .as_ref()
            .map(capacity::Gate::report)
            .unwrap_or_default()
    }

    /// Shuts the server down and closes all connections (as dropping does).
    pub fn stop(self) {}
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Waiting for the runtime's threads would panic inside another runtime's task: there,
            // shut down without waiting.
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            }
        }
    }
}

async fn accept_connections(listener: TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        // Trickled bytes must leave at once rather than wait for Nagle; failing to set it only
        // slows that behavior down.
        let _ = socket.set_nodelay(true);
        let connection_id = state.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::clone(&state);
        match &tls {
            None => {
                tokio::spawn(serve_connection(socket, state, connection_id));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(socket);
                tokio::spawn(async move {
                    // A failed handshake (e.g. the client rejects the certificate) just ends it.
                    if let Ok(stream) = handshake.await {
                        serve_connection(stream, state, connection_id).await;
                    }
                });
            }
        }
    }
}

/// A behavior as set for a company (or as default), with the per-company request counts its
/// `FailTimes` need. Replacing the behavior replaces the counts.
struct InstalledBehavior {
    behavior: Behavior,
    attempts_by_company: Option<Mutex<HashMap<String, u64>>>,
}

impl InstalledBehavior {
    fn new(behavior: Behavior) -> Arc<InstalledBehavior> {
        let attempts_by_company = behavior.counts_attempts().then(Mutex::default);
        Arc::new(InstalledBehavior {
            behavior,
            attempts_by_company,
        })
    }

    /// How many earlier requests of `company_id` this behavior answered; counts this one.
    fn next_attempt(&self, company_id: &str) -> u64 {
        let Some(attempts) = &self.attempts_by_company else {
            return 0;
        };
        let mut attempts = lock(attempts);
        let count = attempts.entry(company_id.to_owned()).or_insert(0);
        *count += 1;
        *count - 1
    }
}

struct BehaviorTable {
    default: Arc<InstalledBehavior>,
    by_company: HashMap<String, Arc<InstalledBehavior>>,
}

impl BehaviorTable {
    fn new(default: Behavior) -> BehaviorTable {
        BehaviorTable {
            default: InstalledBehavior::new(default),
            by_company: HashMap::new(),
        }
    }
}

/// Everything the connections share. On the hot path (no recording) a request costs one read
/// lock of the behavior table and a few atomic operations.
pub(crate) struct State {
    service_key: String,
    configured_default: Behavior,
    configured_latency: Duration,
    record_requests: bool,
    behaviors: RwLock<BehaviorTable>,
    latency_nanos: AtomicU64,
    recorded: Mutex<Vec<RecordedRequest>>,
    requests_received: AtomicU64,
    /// Threads in `wait_for_requests`: requests only touch `arrival_lock` when there are any.
    arrival_waiters: AtomicUsize,
    arrival_lock: Mutex<()>,
    arrival: Condvar,
    answering: AtomicUsize,
    peak_answering: AtomicUsize,
    next_connection_id: AtomicU64,
    /// 0: the collect-bulk endpoint; otherwise a receiver answering every request with it.
    receiver_status: AtomicU16,
    capacity: Option<capacity::Gate>,
    keep_alive_timeout: Option<Duration>,
}

impl State {
    fn new(config: &StandInConfig) -> State {
        State {
            service_key: config.service_key.clone(),
            configured_default: config.default_behavior.clone(),
            configured_latency: config.latency,
            record_requests: config.record_requests,
            behaviors: RwLock::new(BehaviorTable::new(config.default_behavior.clone())),
            receiver_status: AtomicU16::new(config.receiver_status.unwrap_or(0)),
            latency_nanos: AtomicU64::new(duration_nanos(config.latency)),
            recorded: Mutex::new(Vec::new()),
            requests_received: AtomicU64::new(0),
            arrival_waiters: AtomicUsize::new(0),
            arrival_lock: Mutex::new(()),
            arrival: Condvar::new(),
            answering: AtomicUsize::new(0),
            peak_answering: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
            capacity: config.capacity.as_ref().map(capacity::Gate::new),
            keep_alive_timeout: config.keep_alive_timeout,
        }
    }

    fn reset(&self) {
        *write(&self.behaviors) = BehaviorTable::new(self.configured_default.clone());
        self.set_latency(self.configured_latency);
        lock(&self.recorded).clear();
        self.requests_received.store(0, Ordering::SeqCst);
        // Answers still in progress count again once another request begins.
        self.peak_answering.store(0, Ordering::Relaxed);
        if let Some(gate) = &self.capacity {
            gate.reset();
        }
    }

    pub(crate) fn capacity(&self) -> Option<&capacity::Gate> {
        self.capacity.as_ref()
    }

    pub(crate) fn keep_alive_timeout(&self) -> Option<Duration> {
        self.keep_alive_timeout
    }

    fn set_latency(&self, latency: Duration) {
        self.latency_nanos
            .store(duration_nanos(latency), Ordering::Relaxed);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    /// Counts a request as being answered until the returned guard is dropped.
    pub(crate) fn begin_answer(&self) -> AnsweringGuard<'_> {
        let answering = self.answering.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_answering.fetch_max(answering, Ordering::Relaxed);
        AnsweringGuard {
            answering: &self.answering,
        }
    }

    fn wait_for_requests(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.arrival_waiters.fetch_add(1, Ordering::SeqCst);
        let mut arrival = lock(&self.arrival_lock);
        let reached = loop {
            if self.requests_received.load(Ordering::SeqCst) >= count {
                break true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break false;
            };
            arrival = self
                .arrival
                .wait_timeout(arrival, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(arrival);
        self.arrival_waiters.fetch_sub(1, Ordering::SeqCst);
        reached
    }

    /// Records the request (if recording) and counts it, waking `wait_for_requests`.
    pub(crate) fn note_received(&self, request: RecordedRequest) {
        if self.record_requests {
            lock(&self.recorded).push(request);
        }
        // SeqCst pairs with `wait_for_requests`: either the waiter sees the new count, or this
        // sees the waiter and wakes it.
        self.requests_received.fetch_add(1, Ordering::SeqCst);
        if self.arrival_waiters.load(Ordering::SeqCst) > 0 {
            let _arrival = lock(&self.arrival_lock);
            self.arrival.notify_all();
        }
    }

    /// The answer to `request`, checked in the real endpoint's order: method, path, service key,
    /// company id, then the company's behavior.
    pub(crate) fn plan(&self, request: &RecordedRequest) -> PlannedAnswer {
        let refuse = |status, message: &str| PlannedAnswer {
            delay: Duration::ZERO,
            answer: Answer::Respond(Response::json(status, json!({ "error": message }))),
        };
        let receiver_status = self.receiver_status.load(Ordering::SeqCst);
        if receiver_status != 0 {
            return refuse(receiver_status, "received");
        }
        if request.method != "POST" {
            return refuse(405, "Method not allowed");
        }
        if request.path != COLLECT_PATH {
            return refuse(404, "Not found");
        }
        if request.header("x-service-key") != Some(self.service_key.as_str()) {
            return refuse(401, "Unauthorized");
        }
        let Some(company_id) = request.company_id().filter(|id| !id.is_empty()) else {
            return refuse(400, "X-Company-ID header required for service auth");
        };
        let installed = {
            let behaviors = read(&self.behaviors);
            Arc::clone(
                behaviors
                    .by_company
                    .get(company_id)
                    .unwrap_or(&behaviors.default),
            )
        };
        let paging = Paging {
            limit: request
                .query_param("limit")
                .and_then(|limit| limit.parse().ok()),
            offset: request
                .query_param("offset")
                .and_then(|offset| offset.parse().ok()),
        };
        installed
            .behavior
            .answer(installed.next_attempt(company_id), company_id, paging)
    }
}

pub(crate) struct AnsweringGuard<'a> {
    answering: &'a AtomicUsize,
}

impl Drop for AnsweringGuard<'_> {
    fn drop(&mut self) {
        self.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

// A panic while holding one of these locks leaves consistent data behind (every critical
// section is a single insert, clear or clone), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
