//! An endpoint with a capacity, as a real one has: it serves `workers` requests at once (each for
//! the time its behavior's delay says), queues up to `queue` more, which wait their turn, and
//! answers 429 with `Retry-After` beyond that. The queue is served in the order it formed. Latency
//! grows with the queue; load past it is refused. The number of workers can change while it runs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

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
    /// A permit for each free worker. Tokio's semaphore hands permits out in the order they were
    /// asked for, so the queue is first come, first served, as a server's accept backlog is: a
    /// request that waits longer is never passed by one that came after it.
    free_workers: Semaphore,
    /// Workers taken away while busy: each goes when its request is served.
    leaving: AtomicUsize,
    queue: usize,
    pub(crate) retry_after: Option<String>,
    /// Requests in service or waiting.
    admitted: AtomicUsize,
    refused: AtomicU64,
    served: Mutex<Vec<Duration>>,
}

/// A request's place at the endpoint, from admission until dropped.
pub(crate) struct Admitted<'g> {
    gate: &'g Gate,
    worker: Option<SemaphorePermit<'g>>,
}

impl Gate {
    pub(crate) fn new(capacity: &Capacity) -> Gate {
        Gate {
            workers: AtomicUsize::new(capacity.workers),
            free_workers: Semaphore::new(capacity.workers),
            leaving: AtomicUsize::new(0),
            queue: capacity.queue,
            retry_after: capacity.retry_after.clone(),
            admitted: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            served: Mutex::new(Vec::new()),
        }
    }

    /// Called from one place at a time. A request served just as the workers fall may give its
    /// worker back rather than take it away: one more is then served at once until the next ends.
    pub(crate) fn set_workers(&self, workers: usize) {
        let before = self.workers.swap(workers, Ordering::SeqCst);
        if workers >= before {
            let added = workers - before;
            let stayed = take_up_to(&self.leaving, added);
            self.free_workers.add_permits(added - stayed);
        } else {
            let removed = before - workers;
            let idle = self.free_workers.forget_permits(removed);
            self.leaving.fetch_add(removed - idle, Ordering::SeqCst);
        }
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
            worker: None,
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

/// Takes at most `wanted` from `count`; how many it took.
fn take_up_to(count: &AtomicUsize, wanted: usize) -> usize {
    match count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        Some(n - n.min(wanted))
    }) {
        Ok(before) | Err(before) => before.min(wanted),
    }
}

impl Admitted<'_> {
    /// Waits for a worker, behind every request that began waiting before it.
    pub(crate) async fn serve(&mut self) {
        // The semaphore is never closed, so acquiring cannot fail.
        self.worker = self.gate.free_workers.acquire().await.ok();
    }

    /// Served, after `at_endpoint` at the endpoint: its place is free again, and its worker too
    /// unless the workers fell meanwhile.
    pub(crate) fn served(self, at_endpoint: Duration) {
        lock(&self.gate.served).push(at_endpoint);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            if take_up_to(&self.gate.leaving, 1) == 1 {
                worker.forget();
            }
        }
        self.gate.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_millis(20);

    fn gate(workers: usize) -> Gate {
        Gate::new(&Capacity {
            workers,
            queue: 4,
            retry_after: None,
        })
    }

    async fn serves_at_once(admitted: &mut Admitted<'_>) -> bool {
        tokio::time::timeout(NOW, admitted.serve()).await.is_ok()
    }

    #[tokio::test]
    async fn workers_taken_away_while_busy_leave_as_their_requests_are_served() {
        let gate = gate(3);
        let mut first = gate.admit().unwrap();
        let mut second = gate.admit().unwrap();
        assert!(serves_at_once(&mut first).await);
        assert!(serves_at_once(&mut second).await);
        // One of the three idle, goes at once; the two busy go as they are served.
        gate.set_workers(1);
        let mut third = gate.admit().unwrap();
        assert!(!serves_at_once(&mut third).await);
        drop(first);
        assert!(!serves_at_once(&mut third).await, "its worker left with it");
        drop(second);
        assert!(serves_at_once(&mut third).await);

        gate.set_workers(3);
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let mut next = gate.admit().unwrap();
            let served = serves_at_once(&mut next).await;
            waiting.push((next, served));
        }
        let served: Vec<bool> = waiting.iter().map(|(_, served)| *served).collect();
        assert_eq!(served, [true, true, false]);
    }

    #[tokio::test]
    async fn workers_given_back_before_they_left_only_stay() {
        let gate = gate(1);
        let mut busy = gate.admit().unwrap();
        assert!(serves_at_once(&mut busy).await);
        gate.set_workers(0);
        gate.set_workers(2);
        let mut next = gate.admit().unwrap();
        assert!(serves_at_once(&mut next).await);
        let mut after = gate.admit().unwrap();
        assert!(!serves_at_once(&mut after).await);
        drop(busy);
        assert!(serves_at_once(&mut after).await, "two workers, not one");
    }
}
