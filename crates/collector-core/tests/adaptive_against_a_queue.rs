//! The adaptive limit against a model of an endpoint with a capacity, in simulated time: workers
//! serving one request each, a short queue behind them, 429 with `Retry-After: 1` beyond it, and
//! each company's time at a worker drawn from a log-normal distribution (median 40 ms, sigma 0.5),
//! as in the capacity benchmark (BENCHMARKS.md), but over 40 seeds, in milliseconds of real time,
//! and without the noise of a loaded machine; and at a median of 4 s, a real endpoint's, and with
//! companies that differ more or less (sigma 0.25 and 1.0). Each test holds the mean over the
//! seeds, against a fixed concurrency right for that endpoint. The client side is the fan-out's: a
//! company holds its place while it waits for its retry, and a 429 holds back every request until
//! its `Retry-After` has passed.

#[path = "../../bench/src/random.rs"]
mod random;

use dex_collector_core::flow::{resume_level, AdaptiveLimit, Signal};
use random::Random;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

const MEDIAN_MS: f64 = 40.0;
const SIGMA: f64 = 0.5;
const RETRY_AFTER: Duration = Duration::from_secs(1);
const SEEDS: u64 = 40;

struct Endpoint {
    workers: usize,
    queue: usize,
    /// The median of a company's time at a worker.
    median_ms: f64,
    /// The spread of the companies' times: the standard deviation of their logarithm.
    sigma: f64,
    /// From this time on, this many workers.
    change: Option<(Duration, usize)>,
    /// From this time on, each company's time at a worker this many times as long.
    slower: Option<(Duration, f64)>,
}

impl Endpoint {
    fn service(&self, now: Duration, time: Duration) -> Duration {
        match self.slower {
            Some((from, factor)) if now >= from => time.mul_f64(factor),
            _ => time,
        }
    }
}

enum Limit {
    Fixed(usize),
    Adaptive(Box<AdaptiveLimit>),
}

impl Limit {
    fn adaptive(limit: AdaptiveLimit) -> Limit {
        Limit::Adaptive(Box::new(limit))
    }

    fn current(&self) -> usize {
        match self {
            Limit::Fixed(limit) => *limit,
            Limit::Adaptive(adaptive) => adaptive.current(),
        }
    }

    fn settled(&self) -> usize {
        match self {
            Limit::Fixed(limit) => *limit,
            Limit::Adaptive(adaptive) => adaptive.settled(),
        }
    }

    /// Takes in an answer, on the model's clock: `origin` plus the time since the run began.
    fn observe(&mut self, origin: Instant, sent_at: Duration, now: Duration, signal: Signal) {
        if let Limit::Adaptive(adaptive) = self {
            adaptive.observe(origin + sent_at, now - sent_at, signal, origin + now);
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The client sends the company's request, unless a pause holds it back.
    Send(usize),
    Served(usize),
    Refused(usize),
}

struct Run {
    wall: Duration,
    refused: usize,
    /// As the run's report has it: the limit when the last company was sent, or lower if it fell
    /// after (as `AdaptiveLimit::settled` reads it).
    end_limit: usize,
    /// How widely the answers spread, as the adaptive limit measured it.
    spread: Option<f64>,
}

fn simulate(companies: usize, seed: u64, endpoint: &Endpoint, mut limit: Limit) -> Run {
    let mut random = Random(seed);
    let service: Vec<Duration> = (0..companies)
        .map(|_| {
            Duration::from_secs_f64(random.log_normal(endpoint.median_ms, endpoint.sigma) / 1000.0)
        })
        .collect();
    let origin = Instant::now();
    let mut events = BinaryHeap::new();
    let mut order = 0u64;
    let mut schedule = |events: &mut BinaryHeap<_>, at: Duration, event: Event| {
        order += 1;
        events.push(Reverse((at, order, event)));
    };
    let mut sent_at = vec![Duration::ZERO; companies];
    let (mut next, mut in_flight, mut busy) = (0, 0, 0);
    let mut waiting = VecDeque::new();
    let mut paused_until = Duration::ZERO;
    let mut now = Duration::ZERO;
    let mut refused = 0;
    let mut end_limit = limit.settled();
    loop {
        while next < companies && in_flight < limit.current() {
            end_limit = limit.settled();
            in_flight += 1;
            schedule(&mut events, now, Event::Send(next));
            next += 1;
        }
        end_limit = end_limit.min(limit.settled());
        let Some(Reverse((at, _, event))) = events.pop() else {
            break;
        };
        now = at;
        let workers = match endpoint.change {
            Some((from, workers)) if now >= from => workers,
            _ => endpoint.workers,
        };
        match event {
            Event::Send(company) if paused_until > now => {
                schedule(&mut events, paused_until, Event::Send(company));
            }
            Event::Send(company) => {
                sent_at[company] = now;
                if busy < workers {
                    busy += 1;
                    let done = now + endpoint.service(now, service[company]);
                    schedule(&mut events, done, Event::Served(company));
                } else if waiting.len() < endpoint.queue {
                    waiting.push_back(company);
                } else {
                    schedule(
                        &mut events,
                        now + Duration::from_micros(200),
                        Event::Refused(company),
                    );
                }
            }
            Event::Served(company) => {
                busy -= 1;
                while busy < workers {
                    let Some(queued) = waiting.pop_front() else {
                        break;
                    };
                    busy += 1;
                    let done = now + endpoint.service(now, service[queued]);
                    schedule(&mut events, done, Event::Served(queued));
                }
                limit.observe(origin, sent_at[company], now, Signal::Answered);
                in_flight -= 1;
            }
            Event::Refused(company) => {
                refused += 1;
                limit.observe(origin, sent_at[company], now, Signal::RateLimited);
                paused_until = paused_until.max(now + RETRY_AFTER);
                let jitter = RETRY_AFTER.mul_f64(random.unit() / 4.0);
                schedule(
                    &mut events,
                    now + RETRY_AFTER + jitter,
                    Event::Send(company),
                );
            }
        }
    }
    let spread = match &limit {
        Limit::Adaptive(adaptive) => adaptive.spread(),
        Limit::Fixed(_) => None,
    };
    Run {
        wall: now,
        refused,
        end_limit,
        spread,
    }
}

/// Over every seed: the adaptive run's mean wall time as a part of the fixed one's, its mean
/// number of 429s, and the runs themselves.
fn compare(
    companies: usize,
    endpoint: &Endpoint,
    fixed: usize,
    start: usize,
) -> (f64, f64, Vec<Run>) {
    let runs: Vec<(Run, Run)> = (0..SEEDS)
        .map(|seed| {
            (
                simulate(companies, seed, endpoint, Limit::Fixed(fixed)),
                simulate(
                    companies,
                    seed,
                    endpoint,
                    Limit::adaptive(AdaptiveLimit::new(start, 256)),
                ),
            )
        })
        .collect();
    let slower = runs
        .iter()
        .map(|(fixed, adaptive)| adaptive.wall.as_secs_f64() / fixed.wall.as_secs_f64())
        .sum::<f64>()
        / SEEDS as f64;
    let refused = runs
        .iter()
        .map(|(_, adaptive)| adaptive.refused)
        .sum::<usize>() as f64
        / SEEDS as f64;
    (
        slower,
        refused,
        runs.into_iter().map(|(_, adaptive)| adaptive).collect(),
    )
}

/// Runs one after another, as a schedule makes them: the first from `start`, each next from where
/// the ones before settled (the median of the latest three, as [`resume_level`] takes it), under
/// the ceiling of the latest run that met a 429 (all within the hour the extension keeps it). For
/// each run in the series, over every seed: its mean wall time as a part of the fixed one's and its
/// mean number of 429s.
fn consecutive(
    companies: usize,
    endpoint: &Endpoint,
    fixed: usize,
    start: usize,
    runs: usize,
) -> Vec<(f64, f64)> {
    let mut means = vec![(0.0, 0.0); runs];
    for seed in 0..SEEDS {
        let (mut settled, mut ceiling, mut spread) = (Vec::new(), None, None);
        for (n, mean) in means.iter_mut().enumerate() {
            let seed = seed * 100 + n as u64;
            let fixed = simulate(companies, seed, endpoint, Limit::Fixed(fixed));
            let resumed = resume_level(&settled, ceiling);
            let limit = AdaptiveLimit::for_run(
                resumed.unwrap_or(start),
                256,
                resumed.is_some(),
                ceiling,
                spread,
                Instant::now(),
            );
            let run = simulate(companies, seed, endpoint, Limit::adaptive(limit));
            mean.0 += run.wall.as_secs_f64() / fixed.wall.as_secs_f64() / SEEDS as f64;
            mean.1 += run.refused as f64 / SEEDS as f64;
            if run.refused > 0 {
                ceiling = Some(run.end_limit);
            }
            settled.insert(0, run.end_limit);
            spread = run.spread;
        }
    }
    means
}

/// Holds each run after the first under `most_slower` times the fixed setting's wall time, and
/// their mean number of 429s under `most_refused`.
fn assert_runs_after_the_first(
    runs: &[(f64, f64)],
    most_slower: f64,
    most_refused: f64,
    what: &str,
) {
    let after = &runs[1..];
    for (slower, _) in after {
        assert!(slower < &most_slower, "{what}: {slower:.3} times fixed");
    }
    let refused = after.iter().map(|(_, refused)| refused).sum::<f64>() / after.len() as f64;
    assert!(
        refused < most_refused,
        "{what}: {refused:.2} 429s a run after the first"
    );
}

#[test]
fn it_finds_a_small_endpoints_capacity_without_overrunning_its_queue() {
    let endpoint = Endpoint {
        workers: 16,
        queue: 8,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: None,
        slower: None,
    };
    let (slower, refused, runs) = compare(1_500, &endpoint, 16, 8);
    // 1.07 times and 0.25 a run when written; 1.20 times and 1.3 a run when, after the first
    // slower window, the limit grew by its square root (past the 24 the endpoint holds); 1.50
    // times and 9.3 a run when it doubled per window. Each 429 holds back the run for a second, a
    // quarter of this run's ideal time: a run without one is within 5 % of fixed 16. With each
    // window of answers to requests sent since it began, and a queue beginning at 1.25 times the
    // baseline, not 1.35: 1.04 times and none (1.05 times and 0.17 a run before). The capacity
    // benchmark showed that gain once its stand-in served its queue in order, as this model does:
    // no refusal in 6 first runs (3 of 9 before; BENCHMARKS.md).
    assert!(slower < 1.12, "{slower:.3} times fixed 16's wall time");
    assert!(refused <= 0.05, "{refused:.2} 429s a run");
    for run in &runs {
        assert!(
            (8..=24).contains(&run.end_limit),
            "settled at {}",
            run.end_limit
        );
    }
}

#[test]
fn it_grows_to_a_large_endpoints_capacity_without_a_refusal() {
    let endpoint = Endpoint {
        workers: 64,
        queue: 32,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: None,
        slower: None,
    };
    let (slower, refused, runs) = compare(3_000, &endpoint, 64, 8);
    // From 8, a run of 2.2 s spends a fifth of it growing when growth by a quarter lasts until
    // the endpoint queues; 1.44 times when last measured, because in some runs two slow windows
    // in a row came by chance and the limit climbed by one from there (settled at 25, 36 and 45
    // of 40 runs). 1.27 times when it grew by its square root after the first slower window;
    // doubling overshot the 96 the endpoint holds, 2.06 times with 38 429s a run.
    // With fresh windows and a queue beginning at 1.25 times, the load shows sooner and fast
    // growth ends earlier: 1.48 times (1.38 before), 35 of 40 runs settled at 48 or more (37).
    // Ended by three such windows in a row, not two: 1.40 times, 39 of 40. With windows of one
    // and a half round trips once it has ended, the climb by one after it is slower: 1.42 times,
    // 35 of 40 (with two windows in a row 1.54 times, failing, tried).
    assert!(slower < 1.45, "{slower:.3} times fixed 64's wall time");
    assert_eq!(refused, 0.0);
    let grown = runs.iter().filter(|run| run.end_limit >= 48).count();
    assert!(
        grown * 8 >= runs.len() * 7,
        "{grown} of {} runs settled at 48 or more",
        runs.len()
    );
}

#[test]
fn it_follows_a_drop_in_capacity() {
    // Two seconds in, 16 workers become 4: 12 in flight is what the smaller endpoint holds.
    let endpoint = Endpoint {
        workers: 16,
        queue: 8,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: Some((Duration::from_secs(2), 4)),
        slower: None,
    };
    let (slower, refused, runs) = compare(3_000, &endpoint, 12, 8);
    // 1.01 times and 1.8 429s a run when last measured; 1.06 times and 3.8 with growth by the
    // square root, 1.28 times and 14.4 with doubling.
    assert!(slower < 1.1, "{slower:.3} times fixed 12's wall time");
    // Whatever is in flight above 12 at the drop is refused: a few, not a herd.
    assert!(refused < 3.0, "{refused:.1} 429s a run");
    for run in &runs {
        assert!(run.end_limit <= 12, "settled at {}", run.end_limit);
    }
}

#[test]
fn at_a_real_endpoints_seconds_it_finds_the_capacity_as_well() {
    // A median of 4 s, 100 times the benchmark's: the slack's 5 ms is nothing here, its part of
    // the baseline is all. Without that part the limit took chance for a queue and fell to 1 or 2:
    // 2.13 times fixed 16 for the small endpoint at a median of 400 ms, 6.8 times fixed 64 for the
    // large one. 1.05 times fixed 16 and 0.25 429s a run, and 1.47 times fixed 64 and none, when
    // written; with fresh windows and a queue beginning at 1.25 times, 1.04 times and none (0.20
    // before), and 1.65 times (1.46): fast growth ends sooner.
    for (workers, queue, companies, most_slower, most_refused) in
        [(16, 8, 1_500, 1.12, 0.05), (64, 32, 3_000, 1.7, 0.0)]
    {
        let endpoint = Endpoint {
            workers,
            queue,
            median_ms: MEDIAN_MS * 100.0,
            sigma: SIGMA,
            change: None,
            slower: None,
        };
        let (slower, refused, _) = compare(companies, &endpoint, workers, 8);
        assert!(
            slower < most_slower,
            "{slower:.3} times fixed {workers}'s wall time"
        );
        assert!(refused <= most_refused, "{refused:.2} 429s a run");
    }
}

#[test]
fn the_runs_after_the_first_seldom_meet_a_refusal() {
    // The first run finds the capacity; each next one starts a step below where the ones before
    // settled (the median of the latest three), so that its first windows see a shorter queue than
    // the endpoint's edge, and the queue shows as it climbs back. Begun where the one before
    // settled, runs 2 to 5 met 0.51 429s a run at a median of 4 s (about one run in two paying a
    // `Retry-After` pause), 0.23 at 40 ms, and the large endpoint 0.21 (one run 1.18 times fixed
    // 64); 0.16, 0.09 and none when written, each at 1.04 to 1.12 times the fixed setting's wall
    // time. Where the runs before settled, a window without a queue after one with holds the
    // limit: 0.019 at 40 ms (0.038 without, failing, tried), 0.013 at 4 s (0.019).
    let small = |median_ms| Endpoint {
        workers: 16,
        queue: 8,
        median_ms,
        sigma: SIGMA,
        change: None,
        slower: None,
    };
    let large = Endpoint {
        workers: 64,
        queue: 32,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: None,
        slower: None,
    };
    for (endpoint, companies, most_refused) in [
        (small(MEDIAN_MS), 1_500, 0.03),
        (small(MEDIAN_MS * 100.0), 1_500, 0.3),
        (large, 3_000, 0.05),
    ] {
        let workers = endpoint.workers;
        let runs = consecutive(companies, &endpoint, workers, 8, 5);
        let what = format!("{workers} workers, {} ms", endpoint.median_ms);
        assert_runs_after_the_first(&runs, 1.15, most_refused, &what);
    }
}

#[test]
fn an_endpoint_slower_for_everyone_is_not_taken_for_a_queue() {
    // Two seconds in, every company takes three times as long (Cantaloupe slower for everyone):
    // the endpoint still serves 16 at once, and fixed 16 is still right.
    let endpoint = Endpoint {
        workers: 16,
        queue: 8,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: None,
        slower: Some((Duration::from_secs(2), 3.0)),
    };
    let (slower, refused, runs) = compare(3_000, &endpoint, 16, 8);
    // 1.14 times and 0.33 429s a run when written, runs settling at 8 or more (the limit goes
    // back to 0.85 times where it began to fall, and climbs). 1.30 times and 0.68 when a queue
    // had to shorten by a tenth, not a quarter, as the limit halved, and the limit went back to
    // where it began to fall, the endpoint's edge; 1.13 times and 0.70 with the quarter alone.
    // Before a queue that halving the limit did not shorten was taken for a slower endpoint, the
    // limit kept falling until 30 windows at the new pace had passed and then grew back by one:
    // 4.38 times, settling at 6 to 22. 1.08 times when one such window was enough, which
    // misfired on the deep queue below. With the noise read from three windows, not five, one run
    // of the 40 settles at 7: a window low by chance near its end became the baseline, and the
    // limit wandered down from 18 (1.12 times and 0.33 a run; 0.28 before).
    assert!(slower < 1.2, "{slower:.3} times fixed 16's wall time");
    assert!(refused < 0.5, "{refused:.2} 429s a run");
    let low = runs.iter().filter(|run| run.end_limit < 8).count();
    assert!(
        low * 20 <= runs.len(),
        "{low} of {} settled under 8",
        runs.len()
    );
    for run in &runs {
        assert!(run.end_limit >= 7, "settled at {}", run.end_limit);
    }
}

#[test]
fn the_capacity_benchmarks_own_times_three_times_slower() {
    // The benchmark's 3,000 companies' times (its seed), at ten times its scale (a median of
    // 400 ms), every company three times as long from 20 s in: `--slowdown 3 --slower 10`. The
    // model reproduces the benchmark there: fixed 16 213.93 s (the benchmark 214.40 and 214.49 s),
    // adaptive 1.33 times when written (the benchmark 1.44 and 1.52), none refused. These times are
    // a bad case for the limit, which wanders down on windows slow by chance long after the change
    // (BENCHMARKS.md): over the 40 seeds the mean is 1.13 times, and one seed takes 2.42.
    let endpoint = Endpoint {
        workers: 16,
        queue: 8,
        median_ms: MEDIAN_MS * 10.0,
        sigma: SIGMA,
        change: None,
        slower: Some((Duration::from_secs(20), 3.0)),
    };
    let seed = random::CAPACITY_BENCHMARK_SEED;
    let fixed = simulate(3_000, seed, &endpoint, Limit::Fixed(16));
    let adaptive = simulate(
        3_000,
        seed,
        &endpoint,
        Limit::adaptive(AdaptiveLimit::new(8, 256)),
    );
    let slower = adaptive.wall.as_secs_f64() / fixed.wall.as_secs_f64();
    assert!(slower < 1.4, "{slower:.3} times fixed 16's wall time");
    assert_eq!(adaptive.refused, 0);
}

#[test]
fn a_drop_in_capacity_behind_a_deep_queue_is_not_taken_for_a_slower_endpoint() {
    // An endpoint that queues whatever comes (no 429) drops from 64 workers to 8 two seconds in:
    // the requests already queued keep the latency up while the limit falls, which must not pass
    // for an endpoint that became slower for everyone (the limit would go back up and park a
    // queue of several times the workers).
    let endpoint = Endpoint {
        workers: 64,
        queue: 10_000,
        median_ms: MEDIAN_MS,
        sigma: SIGMA,
        change: Some((Duration::from_secs(2), 8)),
        slower: None,
    };
    let (_, _, runs) = compare(6_000, &endpoint, 8, 8);
    // Settled at 7 to 23 when written; at up to 70 (10 of 40 runs over 32) when one window that
    // was no shorter than one at twice the limit was enough.
    for run in &runs {
        assert!(run.end_limit <= 32, "settled at {}", run.end_limit);
    }
}

#[test]
fn companies_that_differ_more_or_less_than_the_benchmarks_do_not_mislead_it() {
    // The benchmark's companies differ by a sigma of 0.5; the fairness benchmark models
    // collect-bulk with 1.07 (one company in a hundred over a minute at a median of 5 s). With its
    // thresholds set once for 0.5, the limit took chance for a queue at 1.0 (a first run 2.70 times
    // fixed 16, runs after it 3.1 to 3.7 times, the large endpoint 7.35 times) and at 0.25 ran into
    // the endpoint's end (1.12 429s a first run, 1.28 times). Measured from the answers' own
    // spread, when written: at 1.0 a first run 1.13 times with 0.17 429s, the runs after 1.10 to
    // 1.18 times with none; at 0.25 1.06 times with 0.12, the runs after 0.22 a run. With the
    // noise read from three windows, not five, and no wider than a full window's: at 1.0 a first
    // run 1.10 times with none, the runs after at most 1.11 times with none; at 0.25 1.05 times
    // with 0.10, the runs after 0.23 a run. With windows of one and a half round trips once the
    // growth by a quarter has ended, at 0.25 the runs after 0.01 a run (0.08 with one round
    // trip's, failing, tried).
    for (sigma, most_refused_after) in [(0.25, 0.04), (1.0, 0.1)] {
        let endpoint = Endpoint {
            workers: 16,
            queue: 8,
            median_ms: MEDIAN_MS,
            sigma,
            change: None,
            slower: None,
        };
        let (slower, refused, _) = compare(1_500, &endpoint, 16, 8);
        assert!(slower < 1.2, "sigma {sigma}: {slower:.3} times fixed 16");
        assert!(refused < 0.3, "sigma {sigma}: {refused:.2} 429s a run");
        let runs = consecutive(1_500, &endpoint, 16, 8, 5);
        assert_runs_after_the_first(&runs, 1.2, most_refused_after, &format!("sigma {sigma}"));
    }
}

#[test]
fn a_large_endpoints_runs_after_the_first_keep_its_pace() {
    // 64 workers, companies that differ by a sigma of 1.0: windows of dozens of answers. When a
    // window took in the answers still out from before it began, a window after one that held the
    // limit read the slowest of their time, a queue where there was none; the limit held, fell
    // by chance, and grew back by one per window: the runs after the first took up to 2.08 times
    // fixed 64's wall time. With each window of answers to requests sent since it began: 1.29.
    // A run's first windows took the reference's spread, half these answers', until three had
    // measured it, and one high by chance read as a queue: runs 2 to 5 1.26 times on average.
    // With the spread the run before measured: 1.14. A run that settled lower by chance held the
    // runs after it as low while each began from where the one before settled, and they climbed
    // back by one per window: runs 6 to 12 took 1.11 to 1.25 times (1.16 on average). Begun from
    // the median of where the latest three settled: 1.07 to 1.10.
    let endpoint = Endpoint {
        workers: 64,
        queue: 32,
        median_ms: MEDIAN_MS,
        sigma: 1.0,
        change: None,
        slower: None,
    };
    let runs = consecutive(3_000, &endpoint, 64, 8, 12);
    assert_runs_after_the_first(&runs, 1.5, 0.05, "64 workers, sigma 1.0");
    let mean = |runs: &[(f64, f64)]| {
        runs.iter().map(|(slower, _)| slower).sum::<f64>() / runs.len() as f64
    };
    let slower = mean(&runs[1..5]);
    assert!(slower < 1.2, "runs 2 to 5: {slower:.3} times fixed 64");
    for (n, (slower, _)) in runs.iter().enumerate().skip(5) {
        assert!(*slower < 1.15, "run {}: {slower:.3} times fixed 64", n + 1);
    }
}

#[test]
fn an_endpoint_slower_for_everyone_at_a_wide_spread_costs_no_long_fall() {
    // Companies that differ by a sigma of 1.0, each three (two, 1.75, 1.5) times as long from 2 s
    // into every run: the fall that follows, its windows' medians noisy, may go on far below the
    // endpoint's 16 workers before two windows show that the queue did not shorten. With windows as
    // long as the spread asks for, 60 to 96 answers, a fall to a limit of 1 or 2 held windows of
    // tens of round trips there, seconds each: runs 2 to 6 took 1.30 times fixed 16's wall time at
    // three times slower (1.26 to 1.34), 1.23 at twice (1.19 to 1.29). With windows of eight round
    // trips at most while the limit falls: 1.17 (1.14 to 1.25) and 1.17 (1.14 to 1.20). With a fall
    // kept through the calm windows between its falling ones (three in a row end it, or the limit
    // back where it began), where a limit lowered by steps meets the same pace as at twice it:
    // three times slower 1.17 (1.17 before; 1.18 ended by the three calm windows alone, 1.19 by the
    // limit back alone), twice 1.15 (1.18), 1.75 times 1.13 (1.18), 1.5 times 1.21 (1.39: the limit
    // wandered down in small falls with calm windows between them).
    for (factor, most_slower) in [(3.0, 1.18), (2.0, 1.2), (1.75, 1.16), (1.5, 1.3)] {
        let endpoint = Endpoint {
            workers: 16,
            queue: 8,
            median_ms: MEDIAN_MS,
            sigma: 1.0,
            change: None,
            slower: Some((Duration::from_secs(2), factor)),
        };
        let runs = consecutive(3_000, &endpoint, 16, 8, 6);
        let after = &runs[1..];
        let mean = after.iter().map(|(slower, _)| slower).sum::<f64>() / after.len() as f64;
        assert!(
            mean < most_slower,
            "{factor} times slower, runs 2 to 6: {mean:.3} times fixed 16"
        );
        assert_runs_after_the_first(&runs, 1.3, 0.1, &format!("{factor} times slower"));
    }
}
