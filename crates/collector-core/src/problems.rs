//! Problems told at most every so often: the background worker meets the same one in every cycle
//! while it lasts, and a log that repeats it every few seconds for days hides everything else.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each problem was last told. Problems are told apart by their text with its numbers (but
/// HTTP statuses) left out, so that a heartbeat failing for every run ("... for run 41 ...", then
/// "... for run 42 ...") is one problem, and two problems that last together are each told once,
/// not in turns.
pub struct ProblemLog {
    repeat_after: Duration,
    told: HashMap<String, Instant>,
}

impl ProblemLog {
    /// A log that tells the same problem again after `repeat_after` at the earliest.
    pub fn new(repeat_after: Duration) -> ProblemLog {
        ProblemLog {
            repeat_after,
            told: HashMap::new(),
        }
    }

    /// True when `problem` is to be told at `now`: nothing of its shape was told within
    /// `repeat_after` before. Only problems told within that time are remembered.
    pub fn tell(&mut self, problem: &str, now: Instant) -> bool {
        let repeat_after = self.repeat_after;
        self.told
            .retain(|_, told_at| now.saturating_duration_since(*told_at) < repeat_after);
        let shape = shape(problem);
        if self.told.contains_key(&shape) {
            return false;
        }
        self.told.insert(shape, now);
        true
    }
}

/// The text with each run of digits written as one `#`, but an HTTP status: a receiver that turns
/// from refusing (`HTTP 401`) to failing (`HTTP 503`) has a new problem.
fn shape(problem: &str) -> String {
    let mut shape = String::with_capacity(problem.len());
    let mut characters = problem.char_indices().peekable();
    while let Some((start, character)) = characters.next() {
        if !character.is_ascii_digit() {
            shape.push(character);
            continue;
        }
        let mut end = start + 1;
        while let Some((at, _)) = characters.next_if(|(_, next)| next.is_ascii_digit()) {
            end = at + 1;
        }
        if problem[..start].ends_with("HTTP ") {
            shape.push_str(&problem[start..end]);
        } else {
            shape.push('#');
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn the_same_problem_is_told_once_until_its_time_has_passed() {
        let mut log = ProblemLog::new(TEN_MINUTES);
        let start = Instant::now();
        assert!(log.tell("could not look for queued runs: disk full", start));
        for minute in 1..10 {
            let now = start + Duration::from_secs(60 * minute);
            assert!(!log.tell("could not look for queued runs: disk full", now));
        }
        assert!(log.tell(
            "could not look for queued runs: disk full",
            start + TEN_MINUTES
        ));
    }

    #[test]
    fn numbers_do_not_make_a_problem_new() {
        let mut log = ProblemLog::new(TEN_MINUTES);
        let start = Instant::now();
        assert!(log.tell("the heartbeat for run 41 failed: 503", start));
        for run in 42..1000 {
            let text = format!("the heartbeat for run {run} failed: 503");
            assert!(!log.tell(&text, start + Duration::from_secs(1)));
        }
        assert!(log.tell(
            "the heartbeat for run 1000 failed: connection refused",
            start
        ));
    }

    #[test]
    fn problems_that_last_together_are_each_told_once() {
        let mut log = ProblemLog::new(TEN_MINUTES);
        let start = Instant::now();
        let problems = [
            "could not look for queued runs: read-only",
            "could not record event 7",
        ];
        for cycle in 0..60 {
            let now = start + Duration::from_secs(10 * cycle);
            let told = problems.iter().filter(|p| log.tell(p, now)).count();
            assert_eq!(told, if cycle == 0 { 2 } else { 0 }, "cycle {cycle}");
        }
    }

    #[test]
    fn a_receiver_that_answers_otherwise_is_a_new_problem() {
        let mut log = ProblemLog::new(TEN_MINUTES);
        let start = Instant::now();
        assert!(log.tell("event 7 could not be delivered: HTTP 401", start));
        assert!(!log.tell("event 8 could not be delivered: HTTP 401", start));
        assert!(log.tell("event 8 could not be delivered: HTTP 503", start));
    }

    #[test]
    fn shapes_keep_the_words() {
        assert_eq!(shape("run 12 of 345, http 503"), "run # of #, http #");
        assert_eq!(shape("no numbers"), "no numbers");
        assert_eq!(shape("a1b22"), "a#b#");
        assert_eq!(
            shape("the heartbeat for run 41 failed: HTTP 503"),
            "the heartbeat for run # failed: HTTP 503"
        );
    }
}
