//! Which finished runs the heartbeat has pinged. Runs finish in the order they take the run lock,
//! not in the order of their ids: a run queued (its id taken) just before a pg_cron call that takes
//! the lock first finishes after it. So the pings follow the ids only up to the first run not
//! finished yet, and remember the runs they pinged beyond it.

use std::collections::BTreeSet;

/// At most this many runs are looked at a turn.
pub const RUNS_AT_ONCE: usize = 100;

/// Where the pings have got to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PingProgress {
    /// Every run up to this one has been pinged, or finished otherwise (skipped, interrupted).
    done_through: i64,
    /// Runs after `done_through` already pinged: a few, while a run before them had not finished.
    pinged_beyond: BTreeSet<i64>,
}

/// What a turn found: the runs after [`PingProgress::done_through`] that succeeded or failed and
/// are not in [`PingProgress::pinged_beyond`], oldest first, at most [`RUNS_AT_ONCE`]; and, read
/// in the same statement, the first run after `done_through` that is queued or running.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub finished: Vec<(i64, bool)>,
    pub first_unfinished: Option<i64>,
}

impl PingProgress {
    /// Starting after run `done_through`, the runs in `past` after it taken as pinged: those that
    /// finished before pinging began, while a run before them had not.
    pub fn after(done_through: i64, past: impl IntoIterator<Item = i64>) -> PingProgress {
        PingProgress {
            done_through,
            pinged_beyond: past
                .into_iter()
                .filter(|run_id| *run_id > done_through)
                .collect(),
        }
    }

    pub fn done_through(&self) -> i64 {
        self.done_through
    }

    pub fn pinged_beyond(&self) -> Vec<i64> {
        self.pinged_beyond.iter().copied().collect()
    }

    /// Takes in a turn: `found`, of which the first `pinged` runs were pinged (or their pings
    /// failed for good); the rest are left for the next turn. Moves on to the last run pinged, but
    /// not past the first run not finished yet, nor past one found and left, nor past the last one
    /// found when there may be more: no finished run before the point is left unpinged.
    pub fn turn_done(&mut self, found: &Found, pinged: usize) {
        let mut not_past: Vec<i64> = found
            .first_unfinished
            .map(|first| first - 1)
            .into_iter()
            .collect();
        if found.finished.len() >= RUNS_AT_ONCE {
            not_past.extend(found.finished.last().map(|(run_id, _)| *run_id));
        }
        if let Some((left, _)) = found.finished.get(pinged) {
            not_past.push(left - 1);
        }
        self.pinged_beyond.extend(
            found
                .finished
                .iter()
                .take(pinged)
                .map(|(run_id, _)| *run_id),
        );
        let last_pinged = self
            .pinged_beyond
            .last()
            .copied()
            .unwrap_or(self.done_through);
        self.done_through = not_past
            .into_iter()
            .fold(last_pinged, i64::min)
            .max(self.done_through);
        self.pinged_beyond = self
            .pinged_beyond
            .split_off(&self.done_through.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the progress is: the run it is done through, and those pinged beyond it.
    fn state(progress: &PingProgress) -> (i64, Vec<i64>) {
        (progress.done_through(), progress.pinged_beyond())
    }

    fn found(finished: &[i64], first_unfinished: Option<i64>) -> Found {
        Found {
            finished: finished.iter().map(|run_id| (*run_id, true)).collect(),
            first_unfinished,
        }
    }

    #[test]
    fn runs_finished_in_order_are_pinged_once_each() {
        let mut progress = PingProgress::after(5, []);
        progress.turn_done(&found(&[6, 7], None), 2);
        assert_eq!(state(&progress), (7, vec![]));
        progress.turn_done(&found(&[], None), 0);
        assert_eq!(progress.done_through(), 7);
    }

    #[test]
    fn a_run_that_finishes_after_a_later_one_is_pinged_too() {
        // Run 6 was queued, run 7 took the lock first and finished: 7 is pinged, 6 waited for.
        let mut progress = PingProgress::after(5, []);
        progress.turn_done(&found(&[7], Some(6)), 1);
        assert_eq!(state(&progress), (5, vec![7]));
        // Nothing new, 6 still running: nothing moves.
        progress.turn_done(&found(&[], Some(6)), 0);
        assert_eq!(state(&progress), (5, vec![7]));
        // 6 finished: the next turn finds it (7 left out of the search), and moves past both.
        progress.turn_done(&found(&[6, 8], None), 2);
        assert_eq!(state(&progress), (8, vec![]));
    }

    #[test]
    fn a_run_left_for_the_next_turn_is_not_passed() {
        // Pinged 9 and 11 while 8 ran; then 8 and 10 finished, and the turn's time ran out after 8.
        let mut progress = PingProgress::after(7, []);
        progress.turn_done(&found(&[9, 11], Some(8)), 2);
        progress.turn_done(&found(&[8, 10], None), 1);
        assert_eq!(state(&progress), (9, vec![11]));
        progress.turn_done(&found(&[10], None), 0);
        assert_eq!(progress.done_through(), 9, "10 left again");
        progress.turn_done(&found(&[10], None), 1);
        assert_eq!(state(&progress), (11, vec![]));
    }

    #[test]
    fn a_run_queued_before_the_start_is_pinged_and_the_past_is_not() {
        // A restarted worker: 7 finished before it began, 6 is still queued.
        let mut progress = PingProgress::after(5, [7]);
        progress.turn_done(&found(&[], Some(6)), 0);
        assert_eq!(state(&progress), (5, vec![7]));
        progress.turn_done(&found(&[6], None), 1);
        assert_eq!(state(&progress), (7, vec![]));
    }

    #[test]
    fn a_full_turn_moves_no_further_than_the_last_run_it_found() {
        // 500 was pinged while 100 ran; 100 to 199 are found, 200 to 499 are still to come.
        let mut progress = PingProgress::after(99, []);
        progress.turn_done(&found(&[500], Some(100)), 1);
        let first_hundred: Vec<i64> = (100..100 + RUNS_AT_ONCE as i64).collect();
        progress.turn_done(&found(&first_hundred, None), RUNS_AT_ONCE);
        assert_eq!(state(&progress), (199, vec![500]));
    }
}
