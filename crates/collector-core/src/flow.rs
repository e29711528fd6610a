//! How much a run asks of the endpoint at once: how many companies it collects at a time (a fixed
//! number, or an adaptive limit found from what the endpoint's answers say about its load), the
//! pause that a 429 or 503 with `Retry-After` asks of the whole run, and the run's retry budget.
//!
//! The adaptive limit is additive increase and multiplicative decrease, as in TCP's congestion
//! control, on two signals. An answer saying the endpoint is overloaded (429, 503), or a request it
//! dropped (timed out, refused, reset), lowers the limit at once to 0.7 times, and for a while it
//! grows no higher than 0.9 times where that happened. A window of answers whose median latency has
//! risen well above the lowest recent window's median (the endpoint queueing requests it cannot
//! serve yet) lowers it in proportion; one whose median has risen a little (a queue beginning)
//! holds it. How much is "well above" and "a little" follows how widely the answers spread, as the
//! windows' own quartiles measure it: a window's median of widely spread answers moves more by
//! chance, so such windows hold more answers and the ratios widen, and answers that hardly spread
//! show a shorter queue. A queue that halving the limit (at once, or by steps with calm windows
//! between) does not shorten by three tenths, twice in a row, is not the run's: the endpoint has
//! become slower for everyone, its pace is the new baseline, and the limit goes back to a step
//! below where it began to fall. Otherwise each window raises it: by a quarter until the load shows
//! (three such windows in a row, a fall or a refusal), then by one (but see below for where the
//! runs before settled). A window is as many answers as the limit, about one round trip's worth,
//! while the limit grows by a quarter, and one and a half times as many otherwise (at least 16,
//! more where they spread widely, but while the limit falls no more than eight round trips' worth),
//! to requests sent since it began: what was sent under the old limit says nothing about the new
//! one, and what was still out when the window before ended is the slowest of its time. Medians,
//! because collect-bulk's time per company is heavy-tailed: one slow company says nothing about the
//! endpoint's queue.
//!
//! Growth by a quarter, not doubling as in TCP's slow start, a hold before the fall, and then by
//! one, not by the limit's square root: an endpoint's queue is short, and a limit that overshoots
//! it is refused, at the cost of a `Retry-After` pause of the whole run, before a window of answers
//! can show the queue. Fast growth ends on the third window in a row that shows a queue beginning,
//! not the first or the second: the median of a window of 16 moves by a sixth by chance, and a
//! first run that ended its fast growth on chance would climb the rest of the way by one. A run
//! after others begins a step below where they settled and grows by one: begun at the endpoint's
//! edge, its first windows would be a queue taken for the baseline; where they settled and above, a
//! window without a queue beginning right after one with holds it, so that a window of a full queue
//! low by chance does not take it past the endpoint's end. Where they settled is the median of the
//! latest three: one run that settled low by chance does not hold back the runs after it. Measured
//! against a model of such an endpoint (tests/adaptive_against_a_queue.rs) and the capacity
//! benchmark (BENCHMARKS.md).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How a run chooses how many companies it collects at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concurrency {
    Fixed(usize),
    /// Found while the run goes: starting at `start`, at most `max`. `settled`: `start` is where
    /// the recent adaptive runs settled ([`resume_level`]); the run begins [`RESUME`] times that
    /// and grows as it does once the endpoint's load has shown (by one per window, and from `start`
    /// up only after two windows in a row without a queue), not by a first run's quarter.
    /// `ceiling`: where a recent run that met refusals settled; this run grows no higher for its
    /// first [`PLATEAU`] and [`PLATEAU_WINDOWS`], as after a refusal of its own, so that
    /// consecutive runs do not each pay a `Retry-After` pause to find the same capacity again.
    /// `spread`: how widely the last adaptive run's answers spread, as it measured them; this run's
    /// first windows take it (see [`AdaptiveLimit::spread`]).
    Adaptive {
        start: usize,
        max: usize,
        settled: bool,
        ceiling: Option<usize>,
        spread: Option<f64>,
    },
}

/// What one HTTP exchange says about the endpoint's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer other than 429 or 503: its latency is what tells.
    Answered,
    /// 429: the endpoint says the run sends too much. It answers: it is up, and full.
    RateLimited,
    /// 503: the endpoint says it is overloaded, or down (a maintenance page).
    Unavailable,
    /// No whole answer: the request timed out, or the connection was refused, reset or closed
    /// before the answer's end.
    Dropped,
}

impl Signal {
    /// A 429 or 503, which may ask for a `Retry-After` pause of the whole run.
    pub fn overloaded(self) -> bool {
        matches!(self, Signal::RateLimited | Signal::Unavailable)
    }
}

/// A window's median this many times the lowest recent window's means the endpoint queues: the
/// limit falls. At [`REFERENCE_NOISE`]; see [`Thresholds`].
const QUEUEING_RATIO: f64 = 1.6;
/// This many times means a queue is beginning: the limit holds, and [`LOADED_WINDOWS`] such windows
/// in a row end its fast growth.
const LOADED_RATIO: f64 = 1.25;
/// The same two for answers without noise: what a queue alone does to the latency.
const QUIET_QUEUEING_RATIO: f64 = 1.25;
const QUIET_LOADED_RATIO: f64 = 1.1;
/// The spread of collect-bulk's time per company (the standard deviation of its logarithm, as a
/// window's quartiles read it) that the two ratios above were measured at: a log-normal of sigma
/// 0.5, the capacity benchmark's. A window's median of [`MIN_WINDOW`] such answers moves by about
/// a sixth by chance, and the lowest of 30 such medians lies that much and more under the
/// endpoint's own. Where the answers spread wider, the ratios widen in proportion to the noise of
/// a window's median, and windows hold more answers; where they spread less, the ratios narrow
/// toward the quiet ones: a run tuned to one spread fell to a limit of 1 or 2 at twice it and was
/// refused once a run at half it (the model test, BENCHMARKS.md).
const REFERENCE_NOISE: f64 = 0.41;
/// The last [`QUEUEING_SLACK_PART`] of each ratio is at least [`QUEUEING_SLACK`], so that a fast
/// endpoint's jitter of a few milliseconds (and the backend's own pauses to record results) is not
/// taken for a queue: at a baseline of 10 ms a window falls above 19.5 ms (at the reference).
const QUEUEING_SLACK: Duration = Duration::from_millis(5);
const QUEUEING_SLACK_PART: f64 = 0.15;
/// The most answers a window holds for its noise: a window of more takes longer than a run can
/// wait to see its queue.
const MAX_WINDOW: usize = 96;
/// The noise is the median of this many windows' spreads at least, the last run's spread (or the
/// reference, before any run measured one) standing in for those not yet ended: one window's
/// quartiles are themselves noisy. Three, not five: with five, answers that spread twice as widely
/// were held to the reference's windows and ratios until the fourth window ended, and a first
/// window's median low by chance made a baseline the windows after it read as a queue, or hid the
/// queue at the endpoint's edge (the model test at sigma 1.0: 0.17 refusals a first run with five,
/// none with three).
const NOISE_WINDOWS: usize = 3;
/// How many windows' medians the baseline is the lowest of.
const BASELINE_WINDOWS: usize = 30;
/// A queue that lowering the limit does not shorten is not the run's: when [`NOT_SHORTER_WINDOWS`]
/// falling windows in a row each have a median at least [`NOT_SHORTER`] times that of a falling
/// window at twice their limit or more ([`HALVED`]), the endpoint has become slower for everyone
/// (its own load, Cantaloupe's), and the last median is the new baseline. Two, not one: after a
/// drop in the endpoint's capacity, requests sent at half the limit still wait behind what the
/// higher limit queued, and a window that straddles the drop reads faster than the queue that
/// follows; with one such window a deep queue passed for a slower endpoint (in the model test).
/// Three quarters, not nine tenths: where the endpoint slows down, the first falling window also
/// holds the run's own queue at the edge (a few requests over its workers, at the new pace), and
/// the window at half that limit reads about 0.8 times it, more or less by chance; at nine tenths
/// that comparison failed and the fall went on, in 25 of 40 runs of the model test to a limit of 1
/// or 2 (14 now, with the return to [`RESUME`] times where it began: 1.14 times fixed 16's wall,
/// 1.30 before), where a window of 16 answers takes seconds. A queue of the run's own halves with
/// the limit while the limit stays over what the endpoint serves at once: 0.5, well under the bar.
/// Seven tenths, not three quarters: where the answers spread widely (a sigma of 1.0), that 0.8
/// fell under three quarters often enough by chance that the fall went on to a limit of 1 to 5,
/// where a window of some 60 answers takes 10 to 20 s (in the model over 120 seeds, runs begun at
/// 17, three times slower 2 s into a run: 1.27 times fixed 16's wall at three quarters, 1.26 at
/// seven tenths, no run under 7; twelve runs in a row 1.32 and 1.27; at sigma 0.5 1.08 and 1.07, at
/// a median of 4 s 1.17 and 1.13). At 0.6 a deep queue after a drop from 64 workers to 8 began to
/// pass for a slower endpoint (one run settled at 26, against at most 15); at seven tenths those
/// runs settle as at three quarters.
const HALVED: f64 = 0.5;
const NOT_SHORTER: f64 = 0.7;
const NOT_SHORTER_WINDOWS: usize = 2;
/// The fewest answers a window holds, however low the limit: a median of fewer moves so much by
/// chance that a limit of a few falls, again and again, on no queue at all.
const MIN_WINDOW: usize = 16;
/// While the limit falls, a window holds no more answers than this many round trips bring (and
/// [`MIN_WINDOW`] at least), however widely they spread; its ratios widen for the fewer answers
/// (see [`Thresholds`]). Where the answers spread widely (a sigma of 1.0: windows of 60 to 96
/// answers) a fall that the noise carried on to a limit of 1 or 2 held windows of 30 to 96
/// round trips there, seconds each at an endpoint three times slower, before they could show
/// that the queue did not shorten: in the model over 120 seeds, twelve runs in a row, that
/// endpoint took 1.27 times fixed 16's wall time with full windows, 1.16 with eight round trips'
/// worth (1.14 with four, but an endpoint that lost capacity between runs 1.15 times against
/// 1.08; 1.16 with six, 1.18 with twelve); the model's other cases within a hundredth
/// (BENCHMARKS.md).
const FALLING_ROUND_TRIPS: usize = 8;
/// Except while the limit grows by a quarter (a first run's beginning), a window holds at least
/// this many times the limit in answers. A window begun when the limit changed ends with the first
/// answers to come back, the fastest of the requests sent since, and the more so the fewer round
/// trips it holds: with windows of one round trip (as many answers as the limit, where that is more
/// than the noise asks for), the windows over [`MIN_WINDOW`] read faster than those under it, and
/// the queue that begins as the limit climbs past the endpoint's workers was hidden until a refusal
/// (in the model over 120 seeds, twelve runs in a row, runs 2 to 12: 16 workers at sigma 0.25 met a
/// 429 in 76 of 1,320 runs, 2 at one and a half round trips; the runs' mean wall time 1.015 ->
/// 1.000 times fixed 16, 64 workers at sigma 1.0 1.089 -> 1.064). The cost: at sigma 0.5 and at a
/// median of 4 s, runs with a 429 31 -> 33 and 26 -> 35 (two round trips in the growth as well, 73
/// each). Not while the limit grows by a quarter, where a longer window is slower growth (a large
/// endpoint's first run 1.46 -> 1.53 times fixed 64's wall time; 1.48 with longer windows only
/// after the growth). The [`PLATEAU_WINDOWS`] after a refusal last half as long again.
const SETTLED_ROUND_TRIPS: f64 = 1.5;
/// Growth per window until the load shows; then one per window.
const SLOW_START_GROWTH: f64 = 1.25;
/// How many windows in a row that show a queue beginning end the growth by a quarter. Three, not
/// two: the limit holds while they come, so a third costs a window's growth, not a refusal, and
/// two in a row came by chance, far under the capacity, often enough that a large endpoint's first
/// run then climbed most of the way by one (in the model over 120 seeds, 64 workers from 8: 1.56
/// times fixed 64's wall time with two, a quarter of the runs over 1.5 times; 1.46 with three, one
/// in seven; 1.44 with four, but more refusals after an endpoint lost capacity between runs).
const LOADED_WINDOWS: usize = 3;
/// What a queue does to the limit at most.
const DECREASE: f64 = 0.5;
/// A fall (see [`AdaptiveLimit::falling`]) ends after this many windows in a row without a queue,
/// if the limit is not back where it began before: a fall whose queue was the run's own settles
/// below where it began, and windows held against its old ones long after, at another pace, could
/// pass for an endpoint slower for everyone. In the model test, three times slower at sigma 1.0,
/// runs 2 to 6: 1.19 times fixed 16 kept until the limit was back, 1.17 ended by either, 1.18
/// ended by three calm windows alone.
const FALL_CALM_WINDOWS: usize = 3;
/// A run after others begins at this part of where they settled ([`resume_level`]), and a fall that
/// found the endpoint slower for everyone goes back to this part of where it began. Where a run
/// settles is often the endpoint's edge, its queue nearly full: begun there, the run's first
/// windows would be its baseline, a queue would read as no queue, and the limit would grow until
/// refused (in the model test, about one run in two paid that `Retry-After` pause at a median of 4
/// s, once the first had found the capacity). A step below, its first windows see a shorter queue,
/// and the queue shows as the limit climbs back, by one per window: a third as many refusals in the
/// model test (0.16 a run at 4 s, 0.51 begun at the edge), at a few windows' growth. After a fall
/// the baseline is one window at its bottom, and the limit it began from was the edge: there, about
/// half as many refusals in the model test as back at the edge itself (0.33 a run against 0.70,
/// three times slower at 40 ms; 0.53 against 1.20 at 4 s), at the same wall time.
const RESUME: f64 = 0.85;
/// A run after others starts from the median of where this many of the latest settled: a run
/// that settles lower by chance (its windows' medians high by chance, the limit held and lowered
/// on no queue) would otherwise hold the next one as low, and that one the next, climbing back by
/// one per window. In the model test at 64 workers and a sigma of 1.0, runs 2 to 12 took 1.14
/// times fixed 64's wall time begun from the last run alone, 1.09 from the median of three (over
/// 120 seeds); at the model's other endpoints within a hundredth or better, and as many refusals
/// or fewer but for an endpoint that lost capacity between runs (BENCHMARKS.md).
pub const RESUME_RUNS: usize = 3;
/// What an overloaded or dropped request does to it (TCP CUBIC's factor).
const OVERLOAD_DECREASE: f64 = 0.7;
/// After an overloaded or dropped request, the limit grows no higher than [`CEILING`] times where
/// it was then, for this long and this many windows: each refusal costs a `Retry-After` pause of
/// the whole run, so a limit that found the endpoint's ceiling stays under it, and probes above it
/// again only now and then, to find a capacity that has grown.
const PLATEAU: Duration = Duration::from_secs(30);
const PLATEAU_WINDOWS: usize = 20;
/// The ceiling, as a part of the limit at the refusal: the limit in force then may have been
/// well over what the endpoint takes, and each refusal under a ceiling lowers it again.
const CEILING: f64 = 0.9;

/// The adaptive limit's state; `now` is passed in, so tests can run on their own clock.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    limit: f64,
    max: f64,
    /// Until the load shows, the limit grows by [`SLOW_START_GROWTH`] per window.
    slow_start: bool,
    /// How many windows in a row, the last among them, showed a queue beginning.
    loaded_windows: usize,
    /// The last window showed a queue, beginning (it held the limit) or longer (it lowered it).
    last_window_queued: bool,
    /// Where the recent runs settled, for a run after others ([`resume_level`]). At or above it, a
    /// window without a queue beginning right after one with a queue holds the limit: only the
    /// second in a row raises it (however long loaded and calm windows take turns there). There the
    /// endpoint's queue is near full, and a full queue's windows read on either side of the ratio
    /// for a queue beginning ([`LOADED_RATIO`] at the reference spread) by chance: traced in the
    /// model (16 workers and a queue of 8, sigma 0.5, a run after eight others), at 24, all the
    /// endpoint holds, windows read 1.17 to 1.56 times the baseline, and one under the ratio raised
    /// the limit to 25, refused. In the model over 120 seeds, twelve runs in a row, runs 2 to 12:
    /// runs with a 429 at sigma 0.5 33 -> 4 of 1,320, at a median of 4 s 35 -> 4 (seeds 2000 to
    /// 2119: 33 -> 5, 31 -> 5), the wall time as before (1.006 -> 1.001, 1.004 -> 1.002 times fixed
    /// 16); the cost, 64 workers at sigma 1.0 1.064 -> 1.095 times fixed 64 (1.063 -> 1.083). At
    /// every level, not only there: the drop 1.185 -> 1.321 times fixed 12 and an endpoint slower
    /// for everyone 1.16 -> 1.21 to 1.35 (the limit climbing back more slowly after every window
    /// with a queue beginning). Forgotten when a fall finds the endpoint slower for everyone: with
    /// it, three times slower at sigma 1.0, runs 2 to 6 took 1.224 times fixed 16 in the model test
    /// (1.171 before; 1.167 forgotten).
    settled_at: Option<f64>,
    /// This run has lowered its limit: a queue or a refusal.
    lowered: bool,
    /// This run has found something of the endpoint's capacity: a window ended, or a request was
    /// refused or dropped while the endpoint answered others. A first run that found nothing (too
    /// few companies to end a window, or the endpoint down throughout) hands on no level.
    learned: bool,
    /// The endpoint has answered a request of this run.
    answered: bool,
    /// Since the endpoint last answered, only refusals and dropped requests: where the run stood
    /// before the first of them.
    unanswered: Option<Unanswered>,
    /// When the endpoint last answered again after it was down: a refusal of a request sent before
    /// is the outage's, not the endpoint's capacity now.
    backed_up_at: Option<Instant>,
    /// Where the run stood before an outage it came back from: it settles no lower until it lowers
    /// its limit again, as a run after others does at where they settled (see
    /// [`AdaptiveLimit::settled`]). Not [`AdaptiveLimit::settled_at`], which also holds the limit
    /// after a queue at and above it: a run would then hold where it does not otherwise.
    floor: Option<f64>,
    window: Vec<Duration>,
    /// The recent windows' medians, each with how many answers it was taken of (the bottom of a
    /// fall that found the endpoint slower, as many as the noise asks for).
    recent_medians: VecDeque<(Duration, usize)>,
    /// The recent windows' spreads, the latest [`BASELINE_WINDOWS`].
    recent_spreads: VecDeque<f64>,
    /// How widely the answers spread: the median of the recent windows' spreads, the last run's
    /// (or else the reference) standing in for those of the first [`NOISE_WINDOWS`] not yet ended,
    /// and no wider than [`widest_noise`].
    noise: f64,
    /// How widely the last run's answers spread, as it measured them.
    last_run_noise: Option<f64>,
    /// Requests sent before the limit last changed say nothing about the new one: a window holds
    /// only answers to requests sent since, and an overloaded one sent before does not lower it
    /// again.
    last_change: Option<Instant>,
    /// A window holds only answers to requests sent since it began (see [`AdaptiveLimit::begin`]).
    window_began: Option<Instant>,
    /// Under the limit of the last overloaded or dropped request, while it holds; since when, and
    /// how many windows since.
    ceiling: Option<(f64, Instant, usize)>,
    /// Windows have lowered it for their latency: from the first that lowers it until the limit is
    /// back where that one began, [`FALL_CALM_WINDOWS`] windows in a row without a queue, a refusal
    /// or a dropped request, or the return after a fall that found the endpoint slower. Windows
    /// without a queue between falling ones keep it: a queue that a limit lowered by steps, with
    /// calm windows between them, never shortened is the endpoint slower for everyone as much as
    /// one that halving the limit at once did not shorten. Traced in the benchmark (BENCHMARKS.md):
    /// after a window low by chance became the baseline at an endpoint slower for everyone, the
    /// limit wandered down from 20.8 to 6.5 over 20 s in steps of a tenth or two with calm windows
    /// between, each of which ended the fall before the limit had halved, so that the fall's test
    /// never ran. Kept through calm windows, in the model over 120 seeds, twelve runs in a row,
    /// runs 2 to 12 (seeds 1000 to 1119; 2000 to 2119): 1.75 times slower at sigma 1.0 1.207 ->
    /// 1.150 times fixed 16 (1.201 -> 1.139), twice 1.154 -> 1.141 (1.160 -> 1.136), three times
    /// 1.164 -> 1.155 (1.149 -> 1.160), the drop 1.188 -> 1.179 (1.187 -> 1.170), the other cases
    /// within 0.01.
    falling: Option<Fall>,
    /// The last window lowered the limit: windows hold no more than [`FALLING_ROUND_TRIPS`].
    shortened: bool,
}

/// Where a run stood when the endpoint last answered, kept while it answers nothing. An endpoint
/// that refuses or drops every request, at a limit of 1 too, is down or out of reach (a deploy's
/// maintenance page, its platform's outage, a wrong `site_url`): that says nothing of its capacity.
/// The limit it drove down to 1 is then neither where the run settled nor a ceiling, and once the
/// endpoint answers a request sent since, the run goes on from a step below where it stood
/// ([`RESUME`]), as a run after others begins. Handed on, a 1 from a few minutes' outage began the
/// runs of the next hour at 1 under a ceiling of 1, one company at a time. So is a run that has
/// had no answer at all, however few its requests (an outage, see [`AdaptiveLimit::outage`]).
///
/// A 429 is an answer: the endpoint is up, and says the run sends too much. Only 503s and dropped
/// requests make an outage; a 429 of a request sent since the endpoint was found down ends one as
/// a refusal at 1 would while it answers: full (a rate limit), and the limit stays at 1.
///
/// An answer to a request sent before the endpoint was found down says nothing of whether it is
/// back: a request the platform held while the app was away (a proxy that queues them through a
/// deploy) answers once the app is back, but so does one of the few that an endpoint full to the
/// brim served slowly while it refused the rest at once, and the company behind either sends its
/// next page at once, refused by a deploy still going on as by the full endpoint. Only an answer to
/// a request sent since it was found down says it is back: the run goes on from a step below where
/// it stood, and an endpoint that was full after all refuses it again, between answers now, which
/// lowers the limit as refusals do (taken for full at once, an answer that came back as a deploy
/// ended left the run at 1, and handed on 1, for the next hour).
#[derive(Debug, Clone)]
struct Unanswered {
    limit: f64,
    slow_start: bool,
    lowered: bool,
    learned: bool,
    ceiling: Option<(f64, Instant, usize)>,
    floor: Option<f64>,
    /// A refusal or dropped request that lowered the limit has come since.
    lowered_since: bool,
    /// When the endpoint refused a request at a limit of 1 after that: it is down.
    down_at: Option<Instant>,
}

/// Windows that lowered the limit for their latency, one after another.
#[derive(Debug, Clone)]
struct Fall {
    /// The limit before the first of them: if the endpoint has only become slower, the limit goes
    /// back to [`RESUME`] times it.
    began_at: f64,
    /// Each one's limit and median, the latest [`BASELINE_WINDOWS`].
    windows: VecDeque<(f64, Duration)>,
    /// How many in a row were no shorter than a window at twice their limit.
    not_shorter: usize,
    /// Windows without a queue since the last falling one.
    calm_windows: usize,
}

impl Fall {
    fn new(began_at: f64) -> Fall {
        Fall {
            began_at,
            windows: VecDeque::new(),
            not_shorter: 0,
            calm_windows: 0,
        }
    }

    /// Takes in a falling window: true when the queue has not shortened as the limit fell.
    fn not_shortened(&mut self, limit: f64, median: Duration) -> bool {
        let at_twice = self
            .windows
            .iter()
            .rev()
            .find(|(at, _)| limit <= at * HALVED)
            .map(|(_, at_twice)| *at_twice);
        if at_twice.is_some_and(|at_twice| median >= at_twice.mul_f64(NOT_SHORTER)) {
            self.not_shorter += 1;
        } else {
            self.not_shorter = 0;
        }
        push_recent(&mut self.windows, (limit, median));
        self.not_shorter >= NOT_SHORTER_WINDOWS
    }
}

impl AdaptiveLimit {
    pub fn new(start: usize, max: usize) -> AdaptiveLimit {
        let max = max.max(1) as f64;
        AdaptiveLimit {
            limit: (start.max(1) as f64).min(max),
            max,
            slow_start: true,
            loaded_windows: 0,
            last_window_queued: false,
            settled_at: None,
            lowered: false,
            learned: false,
            answered: false,
            unanswered: None,
            backed_up_at: None,
            floor: None,
            window: Vec::new(),
            recent_medians: VecDeque::new(),
            recent_spreads: VecDeque::new(),
            noise: REFERENCE_NOISE,
            last_run_noise: None,
            last_change: None,
            window_began: None,
            ceiling: None,
            falling: None,
            shortened: false,
        }
    }

    /// A run's limit, begun at `now`, as [`Concurrency::Adaptive`] says.
    pub fn for_run(
        start: usize,
        max: usize,
        settled: bool,
        ceiling: Option<usize>,
        spread: Option<f64>,
        now: Instant,
    ) -> AdaptiveLimit {
        let begin = if settled {
            (start as f64 * RESUME) as usize
        } else {
            start
        };
        let mut adaptive = AdaptiveLimit::new(begin, max);
        adaptive.slow_start = !settled;
        adaptive.settled_at = settled.then_some(start as f64);
        adaptive.ceiling = ceiling.map(|ceiling| (ceiling.max(1) as f64, now, 0));
        // The spread of collect-bulk's time per company is the endpoint's and its companies', not
        // the run's: taken from the last run, the first windows are as long, and their ratios as
        // wide, as the answers ask for. From the reference, where the answers spread twice as
        // widely, a window high by chance among the first read as a queue and the limit fell (in
        // the model over 120 seeds, 64 workers at sigma 1.0, runs 2 to 5: 1.22 times fixed 64's
        // wall time with the reference, 1.15 with the last run's spread; see BENCHMARKS.md).
        if let Some(spread) = spread.filter(|spread| spread.is_finite() && *spread >= 0.0) {
            adaptive.noise = spread.min(widest_noise());
            adaptive.last_run_noise = Some(adaptive.noise);
        }
        adaptive
    }

    /// How widely the answers spread (the standard deviation of their logarithm, as the windows'
    /// quartiles read it), for the next run's first windows: the median of this run's windows'
    /// readings, the last run's counted as one more. Not the noise the limit works from, in which
    /// the last run's stands in for every window of the first [`NOISE_WINDOWS`] not yet ended: a
    /// run of one window would hand on the last run's spread unchanged, and runs too short to end
    /// two windows would never measure their way from it. None before a window has ended in a run
    /// with no spread from a run before.
    pub fn spread(&self) -> Option<f64> {
        let mut readings: Vec<f64> = self.recent_spreads.iter().copied().collect();
        readings.extend(self.last_run_noise);
        readings.sort_unstable_by(f64::total_cmp);
        let middle = readings.len() / 2;
        let median = match readings.len() {
            0 => return None,
            even if even % 2 == 0 => (readings[middle - 1] + readings[middle]) / 2.0,
            _ => readings[middle],
        };
        Some(median.min(widest_noise()))
    }

    /// How many companies may be in flight now.
    pub fn current(&self) -> usize {
        self.limit as usize
    }

    /// Where this run has settled, for the runs after it: its limit, but, in a run begun a step
    /// below where the runs before settled ([`RESUME`]), no lower than that level until it lowers
    /// its limit. Begun below it by design, a run that ends before it has grown back (one of a few
    /// companies, one that ends no window) has found nothing against that level; handed on as it
    /// was, its limit would take the next run's a step lower, and the one after lower again, to 1.
    /// That level is [`AdaptiveLimit::settled_at`] (no higher than the maximum): a fall that forgets
    /// it has lowered the limit first.
    ///
    /// In an outage ([`AdaptiveLimit::outage`]), where the run stood when it last answered; after
    /// one, no lower than that until it lowers its limit again ([`AdaptiveLimit::floor`]).
    pub fn settled(&self) -> usize {
        match self.outage() {
            Some(before) => self.settled_level(before.limit, before.lowered, before.floor),
            None => self.settled_level(self.limit, self.lowered, self.floor),
        }
    }

    /// Where a run settles at `limit`, having `lowered` it or not, and no lower than `floor` (see
    /// [`AdaptiveLimit::settled`]).
    fn settled_level(&self, limit: f64, lowered: bool, floor: Option<f64>) -> usize {
        let limit = limit.max(floor.unwrap_or(0.0));
        match self.settled_at {
            Some(level) if !lowered => (limit as usize).max(level.min(self.max) as usize),
            _ => limit as usize,
        }
    }

    /// Whether this run has a level to hand on ([`AdaptiveLimit::settled`]): one begun from where
    /// others settled has theirs; a first run one once a window has ended or a refusal has lowered
    /// its limit while the endpoint was not down.
    pub fn hands_on(&self) -> bool {
        let learned = self.outage().map_or(self.learned, |before| before.learned);
        learned || self.settled_at.is_some()
    }

    /// The endpoint refuses or drops every request, at a limit of 1 too (see [`Unanswered`]).
    fn endpoint_down(&self) -> bool {
        self.unanswered
            .as_ref()
            .is_some_and(|unanswered| unanswered.down_at.is_some())
    }

    /// Where the run stood before an outage: the endpoint down, or no answer at all in this run
    /// (a run of a few companies that met only refusals has found no more than one that met
    /// enough to reach 1). None when the refusals since the last answer, if any, may be the
    /// endpoint's capacity.
    fn outage(&self) -> Option<&Unanswered> {
        self.unanswered
            .as_ref()
            .filter(|_| self.endpoint_down() || !self.answered)
    }

    /// Takes in one exchange: sent at `sent_at`, ended `latency` later, at `now`.
    pub fn observe(&mut self, sent_at: Instant, latency: Duration, signal: Signal, now: Instant) {
        let refused = signal != Signal::Answered;
        // A 429 is the endpoint's answer too: it is up, and the run sends too much.
        let reached = matches!(signal, Signal::Answered | Signal::RateLimited);
        // Sent before the endpoint came back from an outage, a refusal is the outage's.
        if refused && self.backed_up_at.is_some_and(|at| sent_at < at) {
            return;
        }
        if let Some(down_at) = self.unanswered.as_ref().and_then(|before| before.down_at) {
            // Down: nothing to learn until it answers a request sent since (see Unanswered).
            if !reached || sent_at < down_at {
                return;
            }
            match self.unanswered.take() {
                // Up, and refusing what the run sends at 1: full, not back; the limit stays.
                Some(_) if signal == Signal::RateLimited => {}
                Some(before) => self.back_up(before, now),
                None => {}
            }
        } else if reached {
            self.unanswered = None;
        } else if self.unanswered.is_none() {
            self.unanswered = Some(Unanswered {
                limit: self.limit,
                slow_start: self.slow_start,
                lowered: self.lowered,
                learned: self.learned,
                ceiling: self.ceiling,
                floor: self.floor,
                lowered_since: false,
                down_at: None,
            });
        }
        if reached {
            self.answered = true;
        }
        if refused {
            // Evidence against where the runs before settled, whether or not it lowers the limit
            // again (see AdaptiveLimit::settled).
            self.lowered = true;
            self.floor = None;
        }
        if self.last_change.is_some_and(|at| sent_at < at) {
            return;
        }
        match signal {
            Signal::RateLimited | Signal::Unavailable | Signal::Dropped => {
                let at_one = self.current() <= 1;
                if let Some(unanswered) = self.unanswered.as_mut() {
                    if unanswered.lowered_since && at_one {
                        unanswered.down_at = Some(now);
                        self.falling = None;
                        self.shortened = false;
                        return;
                    }
                    unanswered.lowered_since = true;
                }
                self.learned = true;
                self.ceiling = Some(((self.limit * CEILING).max(1.0), now, 0));
                // A refusal or a dropped request says the endpoint is overloaded, not only slower.
                self.falling = None;
                self.shortened = false;
                self.decrease(OVERLOAD_DECREASE, now);
            }
            Signal::Answered if self.window_began.is_some_and(|began| sent_at < began) => {}
            Signal::Answered => {
                self.window.push(latency);
                if self.window.len() >= self.window_size() {
                    self.end_window(now);
                }
            }
        }
    }

    /// A new window, of answers to requests sent from `now` on. Those still out from before are
    /// the slowest of their time, and a window's first answers the fastest of its own: a window
    /// that took in the stragglers of the one before read higher than one that began with a
    /// change of the limit, a queue where there was none, and the limit held, and fell, by chance
    /// (in the model test, a 64-worker endpoint at sigma 1.0 took up to 2.08 times the fixed
    /// setting's wall time in the runs after the first; 1.29 with every window begun afresh).
    fn begin(&mut self, now: Instant) {
        self.window_began = Some(now);
        self.window.clear();
    }

    /// As many answers as the limit, about one round trip's worth, while the limit grows by a
    /// quarter ([`SETTLED_ROUND_TRIPS`] round trips' otherwise), and more where the answers spread
    /// wider than the reference (see [`Thresholds`]); while the limit falls (see
    /// [`AdaptiveLimit::shortened`]), no more than [`FALLING_ROUND_TRIPS`] round trips' worth, and
    /// [`MIN_WINDOW`] at least.
    fn window_size(&self) -> usize {
        let answers = window_for(self.noise);
        let answers = if self.shortened {
            answers.min((FALLING_ROUND_TRIPS * self.current()).max(MIN_WINDOW))
        } else {
            answers
        };
        let round_trips = if self.slow_start {
            1.0
        } else {
            SETTLED_ROUND_TRIPS
        };
        answers.max((self.current() as f64 * round_trips) as usize)
    }

    fn end_window(&mut self, now: Instant) {
        self.learned = true;
        self.window.sort_unstable();
        let answers = self.window.len();
        let median = self.window[answers / 2];
        if let Some(spread) = spread(&self.window) {
            push_recent(&mut self.recent_spreads, spread);
            let mut spreads: Vec<f64> = self.recent_spreads.iter().copied().collect();
            let stand_in = self.last_run_noise.unwrap_or(REFERENCE_NOISE);
            spreads.resize(spreads.len().max(NOISE_WINDOWS), stand_in);
            spreads.sort_unstable_by(f64::total_cmp);
            self.noise = spreads[spreads.len() / 2].min(widest_noise());
        }
        self.begin(now);
        push_recent(&mut self.recent_medians, (median, answers));
        // The lowest recent median among windows at least half as long as the noise asks for
        // (this window always among them): where the answers spread widely, the first windows
        // (as short as the stand-in's spread asks for, before the run's own was known) have
        // medians that lie so far under the endpoint's own that the windows after them would read
        // as a queue.
        let full_window = window_for(self.noise);
        let steady = full_window.min(answers) / 2;
        let baseline = self
            .recent_medians
            .iter()
            .filter(|(_, length)| *length >= steady)
            .map(|(median, _)| *median)
            .fold(median, Duration::min);
        let thresholds = Thresholds::new(self.noise, answers);
        let tolerated = thresholds.queueing(baseline);
        if median > tolerated {
            self.last_window_queued = true;
            self.shortened = true;
            let limit = self.limit;
            let fall = self.falling.get_or_insert_with(|| Fall::new(limit));
            fall.calm_windows = 0;
            if fall.not_shortened(limit, median) {
                let began_at = fall.began_at;
                self.falling = None;
                self.shortened = false;
                // Where the runs settled, or this one before an outage, was the endpoint's edge
                // before it slowed down.
                self.settled_at = None;
                self.floor = None;
                self.recent_medians.clear();
                // Short by design (FALLING_ROUND_TRIPS), the window at the bottom of the fall
                // is the new baseline all the same: counted as shorter, the windows after it
                // would pass it over and each be its own baseline until a full one came.
                self.recent_medians
                    .push_back((median, answers.max(full_window)));
                self.change_to((began_at * RESUME).max(1.0), now);
                return;
            }
            self.decrease(
                (tolerated.as_secs_f64() / median.as_secs_f64()).max(DECREASE),
                now,
            );
            return;
        }
        let mut highest = self.max;
        if let Some((ceiling, since, windows)) = self.ceiling.as_mut() {
            *windows += 1;
            if *windows < PLATEAU_WINDOWS || now.saturating_duration_since(*since) < PLATEAU {
                highest = highest.min(*ceiling);
            } else {
                self.ceiling = None;
            }
        }
        if median > thresholds.loaded(baseline) {
            self.loaded_windows += 1;
            self.last_window_queued = true;
            if self.loaded_windows >= LOADED_WINDOWS {
                self.slow_start = false;
            }
            return;
        }
        let after_queue = self.last_window_queued;
        self.last_window_queued = false;
        self.loaded_windows = 0;
        // Only a window without a queue ends the short windows of a fall: between the falling
        // windows of a long queue, some only hold.
        self.shortened = false;
        let hold = after_queue && self.settled_at.is_some_and(|settled| self.limit >= settled);
        if !hold {
            let raised = if self.slow_start {
                self.limit * SLOW_START_GROWTH
            } else {
                self.limit + 1.0
            };
            let raised = raised.min(highest);
            if raised > self.limit {
                self.change_to(raised, now);
            }
        }
        // The fall itself ends back where it began, or after a few windows without a queue.
        if let Some(fall) = self.falling.as_mut() {
            fall.calm_windows += 1;
            if self.limit >= fall.began_at || fall.calm_windows >= FALL_CALM_WINDOWS {
                self.falling = None;
            }
        }
    }

    /// The endpoint answers again after it was down: the run goes on as it stood before, from a
    /// step below its limit then, as a run after others begins a step below where they settled,
    /// and where it stood is where it settles until it lowers its limit again
    /// ([`AdaptiveLimit::floor`]; a run that had found nothing before has nothing to hand on).
    fn back_up(&mut self, before: Unanswered, now: Instant) {
        self.slow_start = before.slow_start;
        self.lowered = before.lowered;
        self.learned = before.learned;
        self.ceiling = before.ceiling;
        self.backed_up_at = Some(now);
        self.floor = (before.learned || self.settled_at.is_some())
            .then(|| self.settled_level(before.limit, before.lowered, before.floor) as f64);
        self.change_to((before.limit * RESUME).max(1.0), now);
    }

    fn decrease(&mut self, factor: f64, now: Instant) {
        self.slow_start = false;
        self.lowered = true;
        self.floor = None;
        self.change_to((self.limit * factor).max(1.0), now);
    }

    fn change_to(&mut self, limit: f64, now: Instant) {
        self.limit = limit;
        self.last_change = Some(now);
        self.begin(now);
    }
}

/// Where a run after others starts from ([`Concurrency::Adaptive`]'s `start`): the median of
/// where the latest [`RESUME_RUNS`] adaptive runs settled (of two, the higher), `settled` the
/// latest first, and no higher than the `ceiling` of a recent refusal or, if higher, where the
/// latest run settled. None when no run has.
pub fn resume_level(settled: &[usize], ceiling: Option<usize>) -> Option<usize> {
    let latest = *settled.first()?;
    let mut recent: Vec<usize> = settled.iter().take(RESUME_RUNS).copied().collect();
    recent.sort_unstable();
    let median = *recent.get(recent.len() / 2)?;
    // Runs before a refusal may have settled above what the endpoint takes since; a run after it
    // that settled higher again, without one, found that it takes more.
    Some(ceiling.map_or(median, |ceiling| median.min(ceiling.max(latest))))
}

/// Keeps the latest [`BASELINE_WINDOWS`] of a window's readings.
fn push_recent<T>(recent: &mut VecDeque<T>, reading: T) {
    if recent.len() == BASELINE_WINDOWS {
        recent.pop_front();
    }
    recent.push_back(reading);
}

/// The spread of a window's answers: the standard deviation of their logarithm, read from their
/// quartiles, which a tail in fewer than a quarter of the answers does not move (nor does it move
/// the median); a tail in more reads as a wide spread (the noise taken no wider than
/// [`widest_noise`]). None when the quartiles are not both above zero. `sorted` is sorted.
fn spread(sorted: &[Duration]) -> Option<f64> {
    let first = sorted.get(sorted.len() / 4)?.as_secs_f64();
    let third = sorted.get(sorted.len() * 3 / 4)?.as_secs_f64();
    // The interquartile range of a normal distribution is 1.349 standard deviations.
    (first > 0.0).then(|| (third / first).ln() / 1.349)
}

/// The widest noise taken in: where [`MAX_WINDOW`] answers keep a window's median as steady as
/// [`MIN_WINDOW`] at [`REFERENCE_NOISE`], so that a full window is held to the reference ratios.
/// Wider, and the ratios would widen past them: with three answers in ten 30 times as long as the
/// rest (the median among the fast ones, the third quartile among the slow), to 2.5 times the
/// baseline and more, and only a 429 could lower the limit.
fn widest_noise() -> f64 {
    REFERENCE_NOISE * (MAX_WINDOW as f64 / MIN_WINDOW as f64).sqrt()
}

/// The fewest answers a window holds for the noise of its answers: as many as keep its median as
/// steady as [`MIN_WINDOW`] answers' at [`REFERENCE_NOISE`], up to [`MAX_WINDOW`].
fn window_for(noise: f64) -> usize {
    let part = noise / REFERENCE_NOISE;
    ((MIN_WINDOW as f64 * part * part).ceil() as usize).clamp(MIN_WINDOW, MAX_WINDOW)
}

/// What a window's median is held against, for the noise of the answers: the reference ratios
/// where a window's median is as steady as [`MIN_WINDOW`] answers' at [`REFERENCE_NOISE`], the
/// quiet ones where it does not move at all, and wider ones where it moves more.
struct Thresholds {
    /// The noise of a window's median, as a part of its noise at the reference.
    relative_noise: f64,
}

impl Thresholds {
    /// For a window of `answers` answers ending now.
    fn new(noise: f64, answers: usize) -> Thresholds {
        // A median's noise falls with the square root of the answers it is taken of; a window that
        // holds more than its noise asks for (one or one and a half times the limit) is held to the
        // ratios for what its noise asks for, as at the reference, where its lean to the first
        // answers to come back after a change outweighs its steadier median.
        let answers = answers.min(window_for(noise));
        Thresholds {
            relative_noise: noise / REFERENCE_NOISE * (MIN_WINDOW as f64 / answers as f64).sqrt(),
        }
    }

    fn ratio(&self, quiet: f64, reference: f64) -> f64 {
        quiet * (reference / quiet).powf(self.relative_noise)
    }

    /// The ratio for the noise, its last [`QUEUEING_SLACK_PART`] at least [`QUEUEING_SLACK`].
    fn above(&self, baseline: Duration, quiet: f64, reference: f64) -> Duration {
        let slack = QUEUEING_SLACK.max(baseline.mul_f64(QUEUEING_SLACK_PART));
        baseline.mul_f64(self.ratio(quiet, reference) - QUEUEING_SLACK_PART) + slack
    }

    /// A median above this is a queue: the limit falls.
    fn queueing(&self, baseline: Duration) -> Duration {
        self.above(baseline, QUIET_QUEUEING_RATIO, QUEUEING_RATIO)
    }

    /// A median above this is a queue beginning: the limit holds.
    fn loaded(&self, baseline: Duration) -> Duration {
        self.above(baseline, QUIET_LOADED_RATIO, LOADED_RATIO)
    }
}

/// A run may retry at most this many requests, plus [`RETRY_BUDGET_RATIO`] of the companies it
/// has called: when most requests fail, retries must not multiply the load on the endpoint.
pub const RETRY_BUDGET_BASE: u64 = 100;
pub const RETRY_BUDGET_RATIO: f64 = 0.2;

/// What a run's flow did, for its summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlowReport {
    /// `Some(max)` for an adaptive limit.
    pub adaptive_max: Option<usize>,
    pub start_limit: usize,
    /// Where the run settled (the next adaptive runs start from it: [`resume_level`]): the limit
    /// when its last company was called, or lower if it fell after. In a run's tail fewer companies
    /// are left than the limit allows, answers come back fast, and the limit grows on nothing. A
    /// run after others that has not lowered its limit settles no lower than where they did
    /// ([`AdaptiveLimit::settled`]). None for a first adaptive run that found nothing of the
    /// endpoint's capacity ([`AdaptiveLimit::hands_on`]).
    pub end_limit: Option<usize>,
    pub lowest_limit: usize,
    pub highest_limit: usize,
    /// How widely an adaptive run's answers spread (see [`AdaptiveLimit::spread`]): the next
    /// adaptive run takes it for its first windows.
    pub spread: Option<f64>,
    /// 429 and 503 answers.
    pub overloaded_answers: u64,
    /// Requests sent again (a retry the budget granted but the run's end left unsent is not one).
    pub retries: u64,
    /// Retries the budget refused.
    pub retries_refused: u64,
    /// How long the run held back its requests for a `Retry-After`, up to the report: a pause
    /// the run's end cut short (a 401, a cancel) counts until then.
    pub paused: Duration,
}

/// One run's flow, shared by its requests.
#[derive(Debug)]
pub struct Flow {
    state: Mutex<FlowState>,
}

#[derive(Debug)]
struct FlowState {
    limit: Limit,
    paused_until: Option<Instant>,
    companies_called: u64,
    /// Retries the budget granted, sent or not yet.
    retries_granted: u64,
    /// Where the run has settled so far (the report's `end_limit`, but for a run that has no level
    /// to hand on yet).
    settled: usize,
    /// `settled` when the endpoint last answered, before the refusals and dropped requests since.
    settled_when_answered: usize,
    report: FlowReport,
}

#[derive(Debug)]
enum Limit {
    Fixed(usize),
    Adaptive(Box<AdaptiveLimit>),
}

impl Limit {
    fn current(&self) -> usize {
        match self {
            Limit::Fixed(limit) => (*limit).max(1),
            Limit::Adaptive(adaptive) => adaptive.current(),
        }
    }

    fn settled(&self) -> usize {
        match self {
            Limit::Fixed(_) => self.current(),
            Limit::Adaptive(adaptive) => adaptive.settled(),
        }
    }

    /// Where the run settled, if it has a level to hand on ([`AdaptiveLimit::hands_on`]).
    fn handed_on(&self, settled: usize) -> Option<usize> {
        match self {
            Limit::Fixed(_) => Some(settled),
            Limit::Adaptive(adaptive) => adaptive.hands_on().then_some(settled),
        }
    }
}

impl Flow {
    pub fn new(concurrency: Concurrency) -> Flow {
        let (limit, adaptive_max) = match concurrency {
            Concurrency::Fixed(limit) => (Limit::Fixed(limit), None),
            Concurrency::Adaptive {
                start,
                max,
                settled,
                ceiling,
                spread,
            } => {
                let now = Instant::now();
                let adaptive = AdaptiveLimit::for_run(start, max, settled, ceiling, spread, now);
                (Limit::Adaptive(Box::new(adaptive)), Some(max.max(1)))
            }
        };
        let start = limit.current();
        let settled = limit.settled();
        let end_limit = limit.handed_on(settled);
        Flow {
            state: Mutex::new(FlowState {
                limit,
                paused_until: None,
                companies_called: 0,
                retries_granted: 0,
                settled,
                settled_when_answered: settled,
                report: FlowReport {
                    adaptive_max,
                    start_limit: start,
                    end_limit,
                    lowest_limit: start,
                    highest_limit: start,
                    ..FlowReport::default()
                },
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, FlowState> {
        // Nothing panics while holding it; were it poisoned, its counters are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many companies may be in flight now.
    pub fn limit(&self) -> usize {
        self.state().limit.current()
    }

    /// A company is about to be called.
    pub fn company_called(&self) {
        let mut state = self.state();
        state.companies_called += 1;
        state.settled = state.limit.settled();
        state.report.end_limit = state.limit.handed_on(state.settled);
    }

    /// When the run may send again, while a `Retry-After` holds it back.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.state().paused_until.filter(|until| *until > now)
    }

    /// Takes in one exchange: sent at `sent_at`, ended now; `retry_after` is the pause a 429 or
    /// 503 asked for, which holds back every request of the run.
    pub fn answered(&self, sent_at: Instant, signal: Signal, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.state();
        if signal.overloaded() {
            state.report.overloaded_answers += 1;
            if let Some(resume_at) = retry_after.and_then(|after| now.checked_add(after)) {
                let already = state.paused_until.filter(|until| *until > now);
                if already.is_none_or(|until| resume_at > until) {
                    let from = already.unwrap_or(now);
                    state.report.paused += resume_at - from;
                    state.paused_until = Some(resume_at);
                }
            }
        }
        let state = &mut *state;
        let Limit::Adaptive(adaptive) = &mut state.limit else {
            return;
        };
        let was_unanswered = adaptive.unanswered.is_some();
        let was_outage = adaptive.outage().is_some();
        adaptive.observe(sent_at, now.saturating_duration_since(sent_at), signal, now);
        let limit = adaptive.current();
        if !was_unanswered && adaptive.unanswered.is_some() {
            state.settled_when_answered = state.settled;
        }
        // The fall of an outage was not a fall (see AdaptiveLimit::settled): where the run had
        // settled when the endpoint last answered.
        state.settled = if was_outage || adaptive.outage().is_some() {
            state.settled_when_answered.min(adaptive.settled())
        } else {
            state.settled.min(adaptive.settled())
        };
        state.report.end_limit = state.limit.handed_on(state.settled);
        state.report.lowest_limit = state.report.lowest_limit.min(limit);
        state.report.highest_limit = state.report.highest_limit.max(limit);
    }

    /// Whether a failed request may be sent again: true takes one retry from the run's budget.
    pub fn may_retry(&self) -> bool {
        let mut state = self.state();
        let budget =
            RETRY_BUDGET_BASE + (state.companies_called as f64 * RETRY_BUDGET_RATIO) as u64;
        if state.retries_granted < budget {
            state.retries_granted += 1;
            true
        } else {
            state.report.retries_refused += 1;
            false
        }
    }

    /// A retry [`Flow::may_retry`] granted is being sent.
    pub fn retry_sent(&self) {
        self.state().report.retries += 1;
    }

    pub fn report(&self) -> FlowReport {
        let state = self.state();
        let spread = match &state.limit {
            Limit::Adaptive(adaptive) => adaptive.spread(),
            Limit::Fixed(_) => None,
        };
        let pause_left = state.paused_until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        });
        FlowReport {
            spread,
            paused: state.report.paused.saturating_sub(pause_left),
            ..state.report.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(40);

    /// Feeds `answers` answers whose median is `latency`, spread as widely as the reference
    /// (see [`feed_spread`]).
    fn feed(limit: &mut AdaptiveLimit, clock: &mut Instant, answers: usize, latency: Duration) {
        feed_spread(limit, clock, answers, latency, REFERENCE_NOISE);
    }

    /// Feeds `answers` answers whose median is `latency`, their quartiles a factor apart that
    /// reads `noise`, each sent when the one before ended, on a clock that moves `latency` per
    /// answer.
    fn feed_spread(
        limit: &mut AdaptiveLimit,
        clock: &mut Instant,
        answers: usize,
        latency: Duration,
        noise: f64,
    ) {
        let spread = spread_of(noise);
        for answer in 0..answers {
            answer_once(limit, clock, latency, spread[answer % spread.len()]);
        }
    }

    /// Factors of a median whose quartiles are a factor apart that reads `noise`: an eighth each
    /// at the outer ones, a quarter each at the quartiles' and the median, so that any run of a
    /// window's worth of them has its quartiles and median there.
    fn spread_of(noise: f64) -> [f64; 8] {
        let step = (noise * 1.349 / 2.0).exp();
        [-2, -1, -1, 0, 0, 1, 1, 2].map(|power| step.powi(power))
    }

    /// Feeds one whole window of answers whose median is `latency`, spread as `noise` reads (see
    /// [`feed_spread`]); the limit after it.
    fn feed_window(
        limit: &mut AdaptiveLimit,
        clock: &mut Instant,
        latency: Duration,
        noise: f64,
    ) -> usize {
        let answers = limit.window_size();
        feed_spread(limit, clock, answers, latency, noise);
        limit.current()
    }

    /// One answer of `latency` times `factor`, sent `latency` before now, on a clock that moves
    /// `latency`.
    fn answer_once(limit: &mut AdaptiveLimit, clock: &mut Instant, latency: Duration, factor: f64) {
        let sent_at = *clock;
        *clock += latency;
        limit.observe(sent_at, latency.mul_f64(factor), Signal::Answered, *clock);
    }

    #[test]
    fn rises_on_an_idle_endpoint_up_to_the_maximum_and_no_further() {
        let mut limit = AdaptiveLimit::new(4, 100);
        let mut clock = Instant::now();
        let mut seen = vec![limit.current()];
        for _ in 0..40 {
            let window = limit.current().max(MIN_WINDOW);
            feed(&mut limit, &mut clock, window, FLOOR);
            seen.push(limit.current());
        }
        assert_eq!(limit.current(), 100);
        assert!(seen.windows(2).all(|pair| pair[1] >= pair[0]), "{seen:?}");
        assert!(seen.iter().all(|limit| *limit <= 100));
        assert_eq!(
            &seen[..5],
            &[4, 5, 6, 7, 9],
            "a quarter more per window at first"
        );
    }

    #[test]
    fn an_overloaded_answer_lowers_it_once_for_the_requests_sent_before() {
        let mut limit = AdaptiveLimit::new(64, 100);
        let mut clock = Instant::now();
        let sent = clock;
        clock += FLOOR;
        limit.observe(sent, FLOOR, Signal::RateLimited, clock);
        assert_eq!(limit.current(), 44, "64 × 0.7");
        // The rest of the burst was sent under 64: no further decrease for it.
        for _ in 0..20 {
            limit.observe(sent, FLOOR, Signal::RateLimited, clock);
        }
        assert_eq!(limit.current(), 44);
        clock += FLOOR;
        limit.observe(
            clock - Duration::from_millis(1),
            FLOOR,
            Signal::Dropped,
            clock,
        );
        assert_eq!(limit.current(), 31, "44.8 × 0.7");
    }

    #[test]
    fn after_an_overload_it_stays_under_that_limit_for_a_while_then_probes_above() {
        let mut limit = AdaptiveLimit::new(40, 100);
        let mut clock = Instant::now();
        clock += FLOOR;
        limit.observe(clock, FLOOR, Signal::Unavailable, clock);
        assert_eq!(limit.current(), 28);
        // Calm windows: it grows back to 40 × 0.9, and no higher within the plateau.
        feed(&mut limit, &mut clock, 40 * 10, FLOOR);
        assert_eq!(limit.current(), 36);
        // Past the plateau's time and windows, it grows again.
        clock += PLATEAU;
        feed(&mut limit, &mut clock, 60 * PLATEAU_WINDOWS, FLOOR);
        assert!(limit.current() > 40, "{}", limit.current());
    }

    #[test]
    fn a_ceiling_from_an_earlier_run_holds_for_the_plateau() {
        let flow = Flow::new(Concurrency::Adaptive {
            start: 16,
            max: 256,
            settled: true,
            ceiling: Some(20),
            spread: None,
        });
        // Answers sent after each change of the limit, at once.
        for _ in 0..16 * 20 {
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        assert_eq!(flow.limit(), 20, "grown to the ceiling and no higher");
        let without = Flow::new(Concurrency::Adaptive {
            start: 16,
            max: 256,
            settled: true,
            ceiling: None,
            spread: None,
        });
        for _ in 0..16 * 20 {
            without.answered(Instant::now(), Signal::Answered, None);
        }
        assert!(without.limit() > 20, "{}", without.limit());
    }

    #[test]
    fn a_run_takes_the_spread_the_last_one_measured_for_its_first_windows() {
        let start = Instant::now();
        let mut fresh = AdaptiveLimit::for_run(20, 256, true, None, None, start);
        assert_eq!(fresh.spread(), None, "nothing measured yet");
        let mut after_a_wide_one = AdaptiveLimit::for_run(20, 256, true, None, Some(0.82), start);
        assert_eq!(after_a_wide_one.spread(), Some(0.82));
        // Answers that spread as the last run's did: from the reference, a window of 25 (one and a
        // half round trips at 17) ends and the limit grows; from the last run's spread, a window
        // holds 64 answers.
        let (mut clock, mut other_clock) = (start, start);
        feed_spread(&mut fresh, &mut clock, 25, FLOOR, 0.82);
        feed_spread(&mut after_a_wide_one, &mut other_clock, 25, FLOOR, 0.82);
        assert_eq!((fresh.current(), after_a_wide_one.current()), (18, 17));
        // One window's reading beside two stand-ins: the limit still works from the reference,
        // but hands on what the window read.
        assert_eq!(fresh.noise, REFERENCE_NOISE);
        let read = fresh.spread().unwrap_or_default();
        assert!((0.75..0.9).contains(&read), "{read}");
        // The rest of the window's answers hardly spread, after a run whose answers spread widely:
        // its one window of 64 reads narrow, the limit still works from the last run's spread,
        // and the run hands on about halfway between the two, so that runs too short to end more
        // windows still measure their way from it.
        feed_spread(&mut after_a_wide_one, &mut other_clock, 64 - 25, FLOOR, 0.1);
        assert_eq!(after_a_wide_one.current(), 18);
        assert_eq!(after_a_wide_one.noise, 0.82);
        let halfway = after_a_wide_one.spread().unwrap_or_default();
        assert!((0.4..0.5).contains(&halfway), "{halfway}");
        // No wider than a full window's, however wide the last run's read.
        let widest = AdaptiveLimit::for_run(20, 256, true, None, Some(5.0), start);
        assert_eq!(widest.spread(), Some(widest_noise()));
    }

    #[test]
    fn a_run_from_where_the_last_settled_begins_a_step_below_and_climbs_by_one() {
        let flow = Flow::new(Concurrency::Adaptive {
            start: 20,
            max: 256,
            settled: true,
            ceiling: None,
            spread: None,
        });
        assert_eq!(flow.limit(), 17);
        assert_eq!(flow.report().start_limit, 17);
        // One window, of one and a half round trips: 25 answers.
        for _ in 0..24 {
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        assert_eq!(flow.limit(), 17, "the window is not over");
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 18, "one window: up by one, not by a quarter");
        let lowest = Flow::new(Concurrency::Adaptive {
            start: 1,
            max: 256,
            settled: true,
            ceiling: None,
            spread: None,
        });
        assert_eq!(lowest.limit(), 1);
    }

    #[test]
    fn a_run_starts_from_the_median_of_where_the_latest_three_settled() {
        assert_eq!(resume_level(&[], None), None);
        assert_eq!(resume_level(&[20], None), Some(20));
        assert_eq!(
            resume_level(&[12, 20], None),
            Some(20),
            "of two, the higher"
        );
        assert_eq!(
            resume_level(&[40, 64, 60], None),
            Some(60),
            "one low by chance"
        );
        assert_eq!(
            resume_level(&[64, 60, 62, 10, 10], None),
            Some(62),
            "only the latest three"
        );
        // The latest run was refused and settled at 20: not from the levels before the refusal.
        assert_eq!(resume_level(&[20, 60, 64], Some(20)), Some(20));
        // A run after the refusal settled above it without one: the endpoint takes that much.
        assert_eq!(resume_level(&[30, 20, 64], Some(20)), Some(30));
        assert_eq!(resume_level(&[30, 40, 64], Some(20)), Some(30));
        assert_eq!(resume_level(&[12, 20, 64], Some(20)), Some(20));
    }

    #[test]
    fn where_a_run_settled_is_its_limit_when_it_called_its_last_company() {
        let flow = first_run(16, 256);
        let begun_at = flow.limit();
        flow.company_called();
        // The run's tail: fast answers, and no company left to call.
        for _ in 0..16 * 4 {
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        let report = flow.report();
        assert!(report.highest_limit > begun_at, "{report:?}");
        assert_eq!(report.end_limit, Some(begun_at));
        // Refusals in the tail still lower it, once under where it was then.
        for _ in 0..3 {
            flow.answered(Instant::now(), Signal::Unavailable, None);
        }
        assert!(flow.limit() < begun_at, "{:?}", flow.report());
        assert_eq!(flow.report().end_limit, Some(flow.limit()));
    }

    #[test]
    fn a_run_after_others_that_lowers_nothing_hands_on_where_they_settled() {
        let after_others = |start| {
            Flow::new(Concurrency::Adaptive {
                start,
                max: 256,
                settled: true,
                ceiling: None,
                spread: None,
            })
        };
        // Runs of three companies each (a company's own run, a day with few companies), none
        // ending a window: each begins a step below the level and hands it on as it was.
        let mut level = 20;
        for _ in 0..5 {
            let flow = after_others(level);
            assert_eq!(flow.limit(), 17);
            for _ in 0..3 {
                flow.company_called();
                flow.answered(Instant::now(), Signal::Answered, None);
            }
            level = flow.report().end_limit.unwrap_or_default();
            assert_eq!(level, 20);
        }
        // A refusal lowers it: that run hands on its lowered limit, once the endpoint has answered
        // (a run that met refusals only has found nothing: see AdaptiveLimit::outage).
        let flow = after_others(level);
        flow.company_called();
        flow.answered(Instant::now(), Signal::Unavailable, None);
        assert_eq!(flow.report().end_limit, Some(20));
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.report().end_limit, Some(11));
    }

    /// A run's flow, adaptive from `start`, at most `max`, with no run before it.
    fn first_run(start: usize, max: usize) -> Flow {
        Flow::new(Concurrency::Adaptive {
            start,
            max,
            settled: false,
            ceiling: None,
            spread: None,
        })
    }

    /// Refuses requests, each sent now, until the limit is 1 and once more there.
    fn refuse_down_to_one(flow: &Flow) {
        while flow.limit() > 1 {
            flow.answered(Instant::now(), Signal::Unavailable, None);
        }
        flow.answered(Instant::now(), Signal::Dropped, None);
    }

    #[test]
    fn an_endpoint_that_answers_nothing_is_down_and_leaves_the_level_as_it_was() {
        // A run begun a step below where the runs before settled (40), at 34: the endpoint shows
        // a maintenance page (503) or cannot be reached, request after request.
        let flow = Flow::new(Concurrency::Adaptive {
            start: 40,
            max: 64,
            settled: true,
            ceiling: None,
            spread: None,
        });
        flow.company_called();
        refuse_down_to_one(&flow);
        assert_eq!(flow.limit(), 1, "it backs off all the way");
        for _ in 0..5 {
            flow.company_called();
            flow.answered(Instant::now(), Signal::Unavailable, None);
        }
        let report = flow.report();
        assert_eq!(
            (report.end_limit, report.lowest_limit),
            (Some(40), 1),
            "down, not full: it hands on the level it was given, not 1"
        );
        // It answers again: the run goes on from a step below where it stood, under no ceiling.
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 28);
        assert_eq!(flow.report().end_limit, Some(40));
        // Refused again (at 28.9, after an answer), it is a refusal like any other: 0.7 times.
        flow.answered(Instant::now(), Signal::Unavailable, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (20, Some(20)));
    }

    #[test]
    fn a_first_run_that_found_nothing_hands_on_no_level() {
        // A few companies, too few to end a window.
        let flow = first_run(8, 64);
        for _ in 0..3 {
            flow.company_called();
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        assert_eq!(flow.report().end_limit, None);
        // The endpoint down from the start: nothing but refusals, down to 1.
        let flow = first_run(8, 64);
        flow.company_called();
        refuse_down_to_one(&flow);
        assert_eq!((flow.limit(), flow.report().end_limit), (1, None));
        // A few refusals and nothing else, the limit not down to 1: nothing found either.
        let flow = first_run(8, 64);
        flow.company_called();
        for _ in 0..3 {
            flow.answered(Instant::now(), Signal::Unavailable, None);
        }
        assert_eq!((flow.limit(), flow.report().end_limit), (2, None));
        // 429s alone are answers: the endpoint is up, and refuses what the run sends.
        let flow = first_run(8, 64);
        flow.company_called();
        for _ in 0..3 {
            flow.answered(Instant::now(), Signal::RateLimited, None);
        }
        assert_eq!((flow.limit(), flow.report().end_limit), (2, Some(2)));
        // A refusal while the endpoint answers others is something found.
        let flow = first_run(8, 64);
        flow.company_called();
        flow.answered(Instant::now(), Signal::Answered, None);
        flow.answered(Instant::now(), Signal::Unavailable, None);
        assert_eq!(flow.report().end_limit, Some(5));
    }

    #[test]
    fn an_answer_to_a_request_sent_before_the_endpoint_was_found_down_says_nothing() {
        // Companies started at 40 go on with their pages and retries as the limit falls: a deploy
        // (or an endpoint full to the brim that serves a few slowly) refuses them, down to 1.
        let flow = first_run(40, 64);
        let served = Instant::now();
        flow.company_called();
        flow.answered(served, Signal::Answered, None);
        refuse_down_to_one(&flow);
        // One sent before answers, and its company's next page is refused at once: still down.
        flow.answered(served, Signal::Answered, None);
        flow.answered(Instant::now(), Signal::Unavailable, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (1, None));
        // An answer to one sent since: back up, from a step below 40.
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 34);
        // Full after all: refused again, between answers now, as any refusal.
        flow.answered(Instant::now(), Signal::Unavailable, None);
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (23, Some(23)));
    }

    #[test]
    fn an_outage_that_ends_while_requests_from_before_it_are_out_comes_back_up() {
        let flow = first_run_settled_at_20();
        // A request the platform held through a deploy answers first once the app is back.
        let sent_before = Instant::now();
        refuse_down_to_one(&flow);
        flow.answered(sent_before, Signal::Answered, None);
        assert_eq!(flow.limit(), 1, "not yet told");
        // A refusal of a request sent before that answer (the outage's), then an answer to a
        // request sent since it was found down: back up.
        flow.answered(sent_before, Signal::Dropped, None);
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 17, "0.85 times 20");
        flow.company_called();
        assert_eq!(
            flow.report().end_limit,
            Some(20),
            "where it stood, until it lowers its limit again"
        );
    }

    #[test]
    fn a_refusal_sent_during_an_outage_does_not_count_after_it() {
        let flow = first_run_settled_at_20();
        refuse_down_to_one(&flow);
        let sent_while_down = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 17);
        // The last of the outage's refusals come in after the answer.
        for _ in 0..3 {
            flow.answered(sent_while_down, Signal::Unavailable, None);
        }
        flow.company_called();
        let report = flow.report();
        assert_eq!(
            (flow.limit(), report.end_limit),
            (17, Some(20)),
            "{report:?}"
        );
        // One sent since is a refusal like any other.
        flow.answered(Instant::now(), Signal::Unavailable, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (11, Some(11)));
    }

    #[test]
    fn a_run_limited_to_one_by_429s_is_full_not_down() {
        // A rate limit (a firewall's block of 429s without Retry-After) answers every request: the
        // endpoint is up, and the run sends too much.
        let flow = first_run(16, 64);
        flow.company_called();
        flow.answered(Instant::now(), Signal::Answered, None);
        while flow.limit() > 1 {
            flow.answered(Instant::now(), Signal::RateLimited, None);
        }
        for _ in 0..3 {
            flow.answered(Instant::now(), Signal::RateLimited, None);
        }
        // A connection reset among them does not make it down either.
        flow.answered(Instant::now(), Signal::Dropped, None);
        assert_eq!(flow.report().end_limit, Some(1));
        // When the block ends, the run grows from 1, not back into it from 0.85 times 16.
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (1, Some(1)));
    }

    #[test]
    fn a_429_that_ends_an_outage_says_full_and_the_limit_stays() {
        let flow = first_run_settled_at_20();
        refuse_down_to_one(&flow);
        assert_eq!(flow.report().end_limit, Some(20));
        // The endpoint is up again, behind a rate limit that refuses even one at a time.
        flow.answered(Instant::now(), Signal::RateLimited, None);
        assert_eq!((flow.limit(), flow.report().end_limit), (1, Some(1)));
        flow.answered(Instant::now(), Signal::Answered, None);
        assert_eq!(flow.limit(), 1, "not back to 17, into the limit");
    }

    /// A first run from 16 that has ended a window and called a company at 20.
    fn first_run_settled_at_20() -> Flow {
        let flow = first_run(16, 64);
        for _ in 0..16 {
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        flow.company_called();
        assert_eq!((flow.limit(), flow.report().end_limit), (20, Some(20)));
        flow
    }

    #[test]
    fn an_outage_in_a_runs_tail_hands_on_where_it_settled_before() {
        // The last company called at 20, then the tail's answers raise the limit on nothing, and
        // the endpoint goes down.
        let flow = first_run_settled_at_20();
        for _ in 0..16 * 4 {
            flow.answered(Instant::now(), Signal::Answered, None);
        }
        assert!(flow.limit() > 20, "{:?}", flow.report());
        refuse_down_to_one(&flow);
        assert_eq!(flow.report().end_limit, Some(20));
    }

    #[test]
    fn a_limit_of_one_refused_between_answers_is_not_down() {
        let mut clock = Instant::now();
        let mut limit = AdaptiveLimit::new(2, 10);
        let mut exchange = |limit: &mut AdaptiveLimit, signal| {
            clock += FLOOR;
            limit.observe(clock, FLOOR, signal, clock + FLOOR);
            clock += FLOOR;
        };
        exchange(&mut limit, Signal::Unavailable);
        for _ in 0..3 {
            exchange(&mut limit, Signal::Answered);
            exchange(&mut limit, Signal::Unavailable);
            assert!(!limit.endpoint_down());
        }
        assert_eq!((limit.current(), limit.settled()), (1, 1));
        exchange(&mut limit, Signal::Unavailable);
        assert!(limit.endpoint_down(), "refused twice in a row at 1");
        assert_eq!(limit.settled(), 1, "where it stood before those two");
    }

    #[test]
    fn a_refusal_of_a_request_sent_before_a_raise_still_counts_against_the_level() {
        let mut clock = Instant::now();
        let mut limit = AdaptiveLimit::for_run(20, 256, true, None, None, clock);
        assert_eq!((limit.current(), limit.settled()), (17, 20));
        let sent_before = clock;
        assert_eq!(
            feed_window(&mut limit, &mut clock, FLOOR, REFERENCE_NOISE),
            18
        );
        // Sent under the old limit: it does not lower the new one, but the run hands on its own
        // limit, not the level it was given.
        limit.observe(sent_before, FLOOR, Signal::Unavailable, clock);
        assert_eq!((limit.current(), limit.settled()), (18, 18));
    }

    #[test]
    fn it_never_falls_below_one() {
        let mut limit = AdaptiveLimit::new(2, 10);
        let mut clock = Instant::now();
        for _ in 0..10 {
            clock += FLOOR;
            limit.observe(clock, FLOOR, Signal::Unavailable, clock);
        }
        assert_eq!(limit.current(), 1);
    }

    #[test]
    fn rising_latency_lowers_it_and_it_then_grows_slowly() {
        let mut limit = AdaptiveLimit::new(16, 200);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 16, FLOOR);
        assert_eq!(limit.current(), 20);
        // The endpoint queues: answers take three times as long.
        feed(&mut limit, &mut clock, 20, FLOOR * 3);
        // Lowered in proportion: 20 × (40 ms × 1.45 + 40 ms × 0.15) ÷ 120 ms.
        assert_eq!(limit.current(), 10);
        // Back to its floor: additive increase now, by one.
        feed(&mut limit, &mut clock, MIN_WINDOW, FLOOR);
        assert_eq!(limit.current(), 11);
    }

    #[test]
    fn a_queue_beginning_holds_it_and_ends_its_fast_growth() {
        let mut limit = AdaptiveLimit::new(16, 200);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 16, FLOOR);
        assert_eq!(limit.current(), 20);
        // Answers a little slower: over 40 ms × 1.25 (50 ms), under 40 ms × 1.6 (64 ms).
        feed(&mut limit, &mut clock, 20 * 3, Duration::from_millis(56));
        assert_eq!(limit.current(), 20);
        // Then by one, no longer by a quarter, after windows of one and a half round trips.
        feed(&mut limit, &mut clock, 29, FLOOR);
        assert_eq!(limit.current(), 20, "the window is not over");
        feed(&mut limit, &mut clock, 1, FLOOR);
        assert_eq!(limit.current(), 21);
    }

    #[test]
    fn two_slower_windows_in_a_row_hold_it_without_ending_its_fast_growth() {
        let mut limit = AdaptiveLimit::new(16, 200);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 16, FLOOR);
        feed(&mut limit, &mut clock, 20 * 2, Duration::from_millis(56));
        assert_eq!(limit.current(), 20);
        feed(&mut limit, &mut clock, 20, FLOOR);
        assert_eq!(limit.current(), 25, "still a quarter more");
        // A window without a queue began the row afresh: two more in a row do not end it either.
        feed(&mut limit, &mut clock, 25 * 2, Duration::from_millis(56));
        assert_eq!(limit.current(), 25);
        feed(&mut limit, &mut clock, 25, FLOOR);
        assert_eq!(limit.current(), 31, "a quarter more again");
    }

    #[test]
    fn where_the_runs_settled_a_window_without_a_queue_after_one_with_holds_it() {
        let mut clock = Instant::now();
        // The runs before settled at 20: this one begins at 17 and grows by one per window.
        let mut limit = AdaptiveLimit::for_run(20, 256, true, None, None, clock);
        let window = |limit: &mut AdaptiveLimit, clock: &mut Instant, latency| {
            feed_window(limit, clock, latency, REFERENCE_NOISE)
        };
        let loaded = Duration::from_millis(56);
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 18);
        // Under 20 a queue beginning holds it for its own window only.
        assert_eq!(window(&mut limit, &mut clock, loaded), 18);
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 19);
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 20);
        // At 20 the window after it holds too; the second without a queue raises it.
        assert_eq!(window(&mut limit, &mut clock, loaded), 20);
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 20, "held");
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 21);
        // A window that lowers it a little (66 ms against 64 tolerated: 21 × 64 ÷ 66) showed a
        // queue too: the window after it holds.
        assert_eq!(
            window(&mut limit, &mut clock, Duration::from_millis(66)),
            20
        );
        assert_eq!(
            window(&mut limit, &mut clock, FLOOR),
            20,
            "held after a fall"
        );
        assert_eq!(window(&mut limit, &mut clock, FLOOR), 21);
    }

    #[test]
    fn a_heavy_tail_is_not_taken_for_a_queue() {
        let mut limit = AdaptiveLimit::new(8, 64);
        let mut clock = Instant::now();
        // Three in ten answers take 30 times as long: the median does not move. Their spread makes
        // the windows as long as they can be (from the third, when the spread of two is known),
        // and no longer.
        let (mut windows, mut answers) = (Vec::new(), 0);
        for answer in 0..MAX_WINDOW * 12 {
            let latency = if answer % 10 < 3 { FLOOR * 30 } else { FLOOR };
            clock += FLOOR;
            let before = limit.current();
            limit.observe(clock, latency, Signal::Answered, clock);
            answers += 1;
            if limit.current() != before {
                windows.push(answers);
                answers = 0;
            }
        }
        assert_eq!(windows[..2], [MIN_WINDOW, MIN_WINDOW]);
        assert!(
            windows[2..].iter().all(|&window| window == MAX_WINDOW),
            "{windows:?}"
        );
        assert_eq!(limit.current(), 64);
    }

    #[test]
    fn answers_that_spread_wider_make_longer_windows() {
        let mut limit = AdaptiveLimit::new(16, 200);
        let mut clock = Instant::now();
        // Answers one at a time, until the limit changes: how many a window took.
        let spread = spread_of(REFERENCE_NOISE * 1.7);
        let mut windows = Vec::new();
        let mut answered = 0;
        for _ in 0..6 {
            let before = limit.current();
            let mut answers = 0;
            while limit.current() == before {
                answer_once(
                    &mut limit,
                    &mut clock,
                    FLOOR,
                    spread[answered % spread.len()],
                );
                answered += 1;
                answers += 1;
            }
            windows.push(answers);
        }
        // The reference stands in for the spreads of the first windows (the median of three with
        // them); from the third, 1.7 times the spread takes 1.7² times the answers (47 of 16) for
        // as steady a median, and a limit over that as many as the limit.
        assert_eq!(windows, [16, 20, 47, 47, 47, 48]);
        assert_eq!(limit.current(), 61, "grown by a quarter per window");
    }

    #[test]
    fn answers_that_do_not_spread_show_a_smaller_queue() {
        let rise = |noise| {
            let mut limit = AdaptiveLimit::new(16, 200);
            let mut clock = Instant::now();
            feed_spread(&mut limit, &mut clock, 16 + 20 + 25, FLOOR, noise);
            let before = limit.current();
            // Half as slow again: a queue of the endpoint's, or chance.
            feed_spread(&mut limit, &mut clock, before, FLOOR.mul_f64(1.5), noise);
            (before, limit.current())
        };
        // At the reference spread a window's median moves that much by chance: it holds.
        assert_eq!(rise(REFERENCE_NOISE), (31, 31));
        // Where every answer takes the same time, it is a queue: it falls.
        let (before, after) = rise(0.0);
        assert_eq!(before, 31);
        assert!(after < before, "{after}");
    }

    #[test]
    fn an_endpoint_slower_for_everyone_is_a_new_baseline_not_a_queue() {
        let mut limit = AdaptiveLimit::new(40, 40);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 40 * 5, FLOOR);
        assert_eq!(limit.current(), 40);
        // Three times slower for good: lowered in proportion while that could be a queue.
        feed(&mut limit, &mut clock, 40, FLOOR * 3);
        // 40 × 64 ms ÷ 120 ms: 21.3.
        assert_eq!(limit.current(), 21);
        feed_window(&mut limit, &mut clock, FLOOR * 3, REFERENCE_NOISE);
        assert_eq!(limit.current(), 11);
        // At 11, half of 40 or less, and no faster than at 40: once is not enough.
        feed(&mut limit, &mut clock, MIN_WINDOW, FLOOR * 3);
        assert_eq!(limit.current(), 6);
        // At 6, half of 21 or less, no faster again: not the run's queue. Back a step below where
        // it began to fall, and from there up by one per window at the new pace.
        feed(&mut limit, &mut clock, MIN_WINDOW, FLOOR * 3);
        assert_eq!(limit.current(), 34, "0.85 × 40");
        feed(&mut limit, &mut clock, 40 * 10, FLOOR * 3);
        assert_eq!(limit.current(), 40);
    }

    #[test]
    fn a_queue_that_a_fall_by_steps_did_not_shorten_is_a_slower_endpoint_too() {
        let mut limit = AdaptiveLimit::new(20, 20);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 20 * 5, FLOOR);
        assert_eq!(limit.current(), 20);
        // Slower for everyone, its windows on either side of the ratios: each falling window a
        // little over what is tolerated (75 ms against 64: 0.85 times the limit), a calm one
        // (48 ms, under the 50 of a queue beginning) after each, raising it by one. The fall goes
        // on through the calm windows: under half of where it began, and no faster than there
        // twice, the queue is not the run's, and the limit goes back to 0.85 times 20.
        let mut lowest = 20;
        for _ in 0..12 {
            let after_fall = feed_window(
                &mut limit,
                &mut clock,
                Duration::from_millis(75),
                REFERENCE_NOISE,
            );
            if after_fall == 17 && lowest < 10 {
                return;
            }
            lowest = lowest.min(after_fall);
            feed_window(
                &mut limit,
                &mut clock,
                Duration::from_millis(48),
                REFERENCE_NOISE,
            );
        }
        panic!(
            "still falling by steps: {} (lowest {lowest})",
            limit.current()
        );
    }

    /// From 64 at an idle endpoint, windows of these medians, each followed by this limit.
    fn falls_through(windows: &[(u64, usize)]) {
        let mut limit = AdaptiveLimit::new(64, 64);
        let mut clock = Instant::now();
        feed(&mut limit, &mut clock, 64 * 5, FLOOR);
        for &(median_ms, lowered_to) in windows {
            let window = Duration::from_millis(median_ms);
            assert_eq!(
                feed_window(&mut limit, &mut clock, window, REFERENCE_NOISE),
                lowered_to,
                "after a window of {median_ms} ms"
            );
        }
    }

    #[test]
    fn a_window_across_a_drop_in_capacity_does_not_pass_the_queue_after_it_for_a_slower_endpoint() {
        // The window across the drop reads faster than the queue that follows it, at half the
        // limit; the next, at a quarter, is shorter: a queue, and the limit keeps falling.
        falls_through(&[(150, 32), (160, 16), (80, 12)]);
    }

    #[test]
    fn a_fall_from_the_edge_into_a_slower_endpoint_ends_at_its_third_window() {
        // The first window holds the run's queue as well as the slower pace; at half the limit
        // the queue is gone and the pace stays: 0.8 times, not shorter by a quarter. At 17, still
        // over half of 32, it is held against the window at 64 again: the same pace, not the
        // run's queue, back to 0.85 × 64.
        falls_through(&[(150, 32), (120, 17), (120, 54)]);
    }

    #[test]
    fn a_queue_that_shortens_as_the_limit_falls_keeps_it_falling() {
        // A long queue: each lower limit shortens it, though not yet to the baseline; halved at
        // most per window.
        falls_through(&[(240, 32), (160, 16), (100, 10), (70, 9), (68, 8)]);
    }

    #[test]
    fn while_it_falls_a_window_holds_a_few_round_trips_of_answers() {
        // Answers that spread as widely as a sigma of 1.0 ask for windows of 96; once the limit
        // has fallen to 10, eight round trips' worth (80) ends the window that judges it, and
        // once a window shows no queue, windows are of 96 again.
        let mut clock = Instant::now();
        let mut limit = AdaptiveLimit::for_run(20, 64, true, None, Some(1.0), clock);
        let full = window_for(1.0);
        for _ in 0..3 {
            feed_spread(&mut limit, &mut clock, full, FLOOR, 1.0);
        }
        let before = limit.current();
        feed_spread(&mut limit, &mut clock, full, FLOOR * 3, 1.0);
        let falling = limit.current();
        assert!(falling < before, "fell from {before} to {falling}");
        // The window: eight round trips' worth, 80 answers here where a full one holds 96.
        let answers = FALLING_ROUND_TRIPS * falling;
        feed_spread(&mut limit, &mut clock, answers - 1, FLOOR * 3, 1.0);
        assert_eq!(limit.current(), falling, "the window is not over");
        feed_spread(&mut limit, &mut clock, 1, FLOOR * 3, 1.0);
        let lower = limit.current();
        assert!(lower < falling, "still {falling}");
        feed_spread(
            &mut limit,
            &mut clock,
            FALLING_ROUND_TRIPS * lower,
            FLOOR,
            1.0,
        );
        let grown = limit.current();
        assert_eq!(
            grown,
            lower + 1,
            "no queue: the fall is over, the limit grows by one"
        );
        feed_spread(&mut limit, &mut clock, full - 1, FLOOR, 1.0);
        assert_eq!(limit.current(), grown, "a full window again");
        feed_spread(&mut limit, &mut clock, 1, FLOOR, 1.0);
        assert_eq!(limit.current(), grown + 1);
    }

    #[test]
    fn the_short_window_at_the_bottom_of_a_fall_is_the_new_baseline() {
        // Three times slower at a sigma of 1.0: the fall from 20 ends at 3, where a window holds
        // 24 answers, a quarter of 96, and the limit goes back to 17. A window there a little
        // slower than that bottom (the run's queue beginning again) holds it; were the bottom
        // passed over, the window would be its own baseline and the limit would grow.
        let mut clock = Instant::now();
        let mut limit = AdaptiveLimit::for_run(20, 64, true, None, Some(1.0), clock);
        for _ in 0..3 {
            feed_spread(&mut limit, &mut clock, window_for(1.0), FLOOR, 1.0);
        }
        let mut bottom = None;
        for _ in 0..6 {
            let (at, answers) = (limit.current(), limit.window_size());
            feed_spread(&mut limit, &mut clock, answers, FLOOR * 3, 1.0);
            if limit.current() > at {
                bottom = Some((at, answers));
                break;
            }
        }
        assert_eq!(
            bottom,
            Some((3, 24)),
            "where the fall ended, and its window"
        );
        let resumed = limit.current();
        assert_eq!(resumed, 17);
        let loaded = FLOOR.mul_f64(4.2);
        assert_eq!(
            feed_window(&mut limit, &mut clock, loaded, 1.0),
            resumed,
            "held"
        );
        // Where the runs before settled (20) was the endpoint's edge before it slowed down: above
        // it, a window without a queue after one with raises the limit again.
        for _ in 0..3 {
            feed_window(&mut limit, &mut clock, FLOOR * 3, 1.0);
        }
        assert_eq!(limit.current(), 20);
        feed_window(&mut limit, &mut clock, loaded, 1.0);
        assert_eq!(
            feed_window(&mut limit, &mut clock, FLOOR * 3, 1.0),
            21,
            "the level is forgotten"
        );
    }

    #[test]
    fn a_fixed_flow_keeps_its_limit_whatever_it_meets() {
        let flow = Flow::new(Concurrency::Fixed(16));
        let sent = Instant::now();
        flow.answered(sent, Signal::Unavailable, None);
        flow.answered(sent, Signal::RateLimited, None);
        flow.answered(sent, Signal::Dropped, None);
        assert_eq!(flow.limit(), 16);
        let report = flow.report();
        assert_eq!(
            (report.start_limit, report.end_limit, report.adaptive_max),
            (16, Some(16), None)
        );
        assert_eq!(report.overloaded_answers, 2, "the 429 and the 503");
    }

    #[test]
    fn retry_after_holds_back_the_whole_run_until_the_latest_one() {
        let flow = first_run(8, 64);
        let sent = Instant::now();
        assert_eq!(flow.paused_until(sent), None);
        flow.answered(sent, Signal::Answered, None);
        flow.answered(sent, Signal::RateLimited, Some(Duration::from_secs(2)));
        let first = flow.paused_until(Instant::now()).expect("paused");
        flow.answered(sent, Signal::Unavailable, Some(Duration::from_secs(1)));
        assert_eq!(
            flow.paused_until(Instant::now()),
            Some(first),
            "an earlier end changes nothing"
        );
        flow.answered(sent, Signal::Unavailable, Some(Duration::from_secs(5)));
        let later = flow.paused_until(Instant::now()).expect("paused");
        assert!(later >= first + Duration::from_secs(2));
        assert_eq!(flow.paused_until(later), None, "over once it ends");
        let report = flow.report();
        let whole_pause = report.paused + later.saturating_duration_since(Instant::now());
        assert_eq!(report.overloaded_answers, 3);
        assert!(
            report.paused < Duration::from_secs(1),
            "the pause so far, not what a run ended now would not wait: {:?}",
            report.paused
        );
        assert!(whole_pause >= Duration::from_secs(4) && whole_pause <= Duration::from_secs(6));
        assert_eq!(
            report.end_limit,
            Some(5),
            "the first 429 lowered it to 8 × 0.7; the others were sent before"
        );
    }

    #[test]
    fn the_retry_budget_grows_with_the_companies_called() {
        let flow = Flow::new(Concurrency::Fixed(4));
        let granted = (0..RETRY_BUDGET_BASE + 50)
            .filter(|_| flow.may_retry())
            .count() as u64;
        assert_eq!(granted, RETRY_BUDGET_BASE);
        for _ in 0..100 {
            flow.company_called();
        }
        let more = (0..50).filter(|_| flow.may_retry()).count() as u64;
        assert_eq!(more, (100.0 * RETRY_BUDGET_RATIO) as u64);
        let report = flow.report();
        assert_eq!(report.retries, 0, "granted, none sent yet");
        assert_eq!(report.retries_refused, 50 + 50 - more);
        flow.retry_sent();
        assert_eq!(flow.report().retries, 1);
    }
}
