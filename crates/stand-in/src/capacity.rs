//! An endpoint with a capacity, as a real one has: it serves `workers` requests at once (each for
//! the time its behavior's delay says), queues up to `queue` more, which wait their turn, and
//! answers 429 with `Retry-After` beyond that. Latency grows with the queue; load past it is
//! refused. The number of workers can change while it runs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::lock;

/// What the endpoint can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Requests served at once.
    pub workers: usize,
    /// Requests that may wait for a worker; one more is refused.
    pub queue: usize,
    /// The refusal's `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// What the capacity did since start or `reset()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityReport {
    /// Requests refused with 429.
    pub refused: u64,
    /// Requests served, and how long each was at the endpoint (queue and service), in the order
    /// they ended.
    pub served: Vec<Duration>,
}

pub(crate) struct Gate {
    workers: AtomicUsize,
    queue: usize,
    pub(crate) retry_after: Option<String>,
    /// Requests in service or waiting.
    admitted: AtomicUsize,
    in_service: Mutex<usize>,
    freed: Notify,
    refused: AtomicU64,
    served: Mutex<Vec<Duration>>,
}

/// A request's place at the endpoint, from admission until dropped.
pub(crate) struct Admitted<'g> {
    gate: &'g Gate,
    serving: bool,
}

impl Gate {
    pub(crate) fn new(capacity: &Capacity) -> Gate {
        Gate {
            workers: AtomicUsize::new(capacity.workers),
            queue: capacity.queue,
            retry_after: capacity.retry_after.clone(),
            admitted: AtomicUsize::new(0),
            in_service: Mutex::new(0),
            freed: Notify::new(),
            refused: AtomicU64::new(0),
            served: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn set_workers(&self, workers: usize) {
        self.workers.store(workers, Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    /// A place in the queue, or `None`: refused, the queue being full.
    pub(crate) fn admit(&self) -> Option<Admitted<'_>> {
        let limit = self.workers.load(Ordering::SeqCst) + self.queue;
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        if before >= limit {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted {
            gate: self,
            serving: false,
        })
    }

    pub(crate) fn report(&self) -> CapacityReport {
        CapacityReport {
            refused: self.refused.load(Ordering::Relaxed),
            served: lock(&self.served).clone(),
        }
    }

    pub(crate) fn reset(&self) {
        self.refused.store(0, Ordering::Relaxed);
        lock(&self.served).clear();
    }
}

impl Admitted<'_> {
    /// Waits for a worker.
    pub(crate) async fn serve(&mut self) {
        let gate = self.gate;
        loop {
            let freed = gate.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so that a worker freed in between is not missed.
            freed.as_mut().enable();
            {
                let mut in_service = lock(&gate.in_service);
                if *in_service < gate.workers.load(Ordering::SeqCst) {
                    *in_service += 1;
                    self.serving = true;
                    return;
                }
            }
            freed.await;
        }
    }
}

impl Admitted<'_> {
    /// Served, after `at_endpoint` at the endpoint: its worker and its place are free again.
    pub(crate) fn served(self, at_endpoint: Duration) {
        lock(&self.gate.served).push(at_endpoint);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.serving {
            *lock(&self.gate.in_service) -= 1;
            self.gate.freed.notify_waiters();
        }
        self.gate.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}
