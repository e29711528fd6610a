//! Results on their way to the history: a run writes them in batches as they come, so that it
//! holds at most one batch of them whatever the number of companies, and writes one statement
//! per batch rather than one per company.

use std::time::{Duration, Instant};

use crate::summary::CompanyResult;

/// A batch is written once it holds this many results: large enough that a run's statements
/// cost little per company, small enough that a batch's rows and the statement's work on them
/// take a few megabytes at most.
pub const BATCH_RESULTS: usize = 1_000;

/// Results waiting to be written.
#[derive(Debug)]
pub struct ResultBatch {
    results: Vec<CompanyResult>,
    /// Since when the oldest result waits.
    since: Option<Instant>,
    /// A batch older than this is written however few it holds (the worker commits each batch,
    /// and a crash loses what waits); `None`: only full batches before the end of the run.
    max_wait: Option<Duration>,
}

impl ResultBatch {
    pub fn new(max_wait: Option<Duration>) -> ResultBatch {
        ResultBatch {
            results: Vec::new(),
            since: None,
            max_wait,
        }
    }

    /// Adds `result`, come at `now`; returns the batch when it is due to be written.
    pub fn push(&mut self, result: CompanyResult, now: Instant) -> Option<Vec<CompanyResult>> {
        let since = *self.since.get_or_insert(now);
        self.results.push(result);
        let full = self.results.len() >= BATCH_RESULTS;
        let waited = self
            .max_wait
            .is_some_and(|max_wait| now.saturating_duration_since(since) >= max_wait);
        (full || waited).then(|| self.take())
    }

    /// The batch, if it has waited long enough to be written however few it holds.
    pub fn take_if_waited(&mut self, now: Instant) -> Option<Vec<CompanyResult>> {
        let since = self.since?;
        let max_wait = self.max_wait?;
        (now.saturating_duration_since(since) >= max_wait).then(|| self.take())
    }

    /// Whatever waits, at the end of the run.
    pub fn take(&mut self) -> Vec<CompanyResult> {
        self.since = None;
        std::mem::take(&mut self.results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::SKIP_NO_CREDENTIALS;
    use crate::target::Target;

    fn result(n: usize) -> CompanyResult {
        let target = Target {
            company_id: format!("company {n}"),
            company_name: format!("Company {n}"),
            has_credentials: false,
        };
        CompanyResult::skipped(target, SKIP_NO_CREDENTIALS)
    }

    #[test]
    fn full_batches_are_due_and_the_rest_waits_for_the_end() {
        let mut batch = ResultBatch::new(None);
        let now = Instant::now();
        let mut written = Vec::new();
        for n in 0..BATCH_RESULTS * 2 + 7 {
            if let Some(due) = batch.push(result(n), now + Duration::from_secs(n as u64)) {
                written.push(due.len());
            }
        }
        assert_eq!(written, vec![BATCH_RESULTS, BATCH_RESULTS]);
        let rest = batch.take();
        assert_eq!(rest.len(), 7);
        assert_eq!(
            rest[0].target.company_id,
            format!("company {}", BATCH_RESULTS * 2)
        );
        assert!(batch.take().is_empty());
    }

    #[test]
    fn a_batch_that_waited_long_enough_is_due_however_small() {
        let mut batch = ResultBatch::new(Some(Duration::from_secs(1)));
        let start = Instant::now();
        assert!(batch.push(result(0), start).is_none());
        assert!(batch
            .push(result(1), start + Duration::from_millis(900))
            .is_none());
        let due = batch.push(result(2), start + Duration::from_secs(1));
        assert_eq!(due.map(|due| due.len()), Some(3));
        // The next batch waits from its own first result, also when no other comes.
        let later = start + Duration::from_secs(5);
        assert!(batch.push(result(3), later).is_none());
        assert!(batch
            .push(result(4), later + Duration::from_millis(999))
            .is_none());
        assert!(batch
            .take_if_waited(later + Duration::from_millis(999))
            .is_none());
        let waited = batch.take_if_waited(later + Duration::from_secs(1));
        assert_eq!(waited.map(|due| due.len()), Some(2));
        assert!(
            batch
                .take_if_waited(later + Duration::from_secs(9))
                .is_none(),
            "empty"
        );
    }

    #[test]
    fn without_a_wait_only_full_batches_are_due() {
        let mut batch = ResultBatch::new(None);
        let start = Instant::now();
        assert!(batch.push(result(0), start).is_none());
        assert!(batch
            .take_if_waited(start + Duration::from_secs(3600))
            .is_none());
    }
}
