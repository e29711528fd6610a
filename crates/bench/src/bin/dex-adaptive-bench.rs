//! Concurrency against an endpoint with a capacity (BENCHMARKS.md, "Concurrency and the endpoint's
//! capacity"): `SELECT dex_collect_all()` for 1,500 synthetic companies against a stand-in that
//! serves 16 requests at once, queues 8 more and answers 429 with `Retry-After: 1` beyond that,
//! each request taking its company's time, drawn once from a log-normal distribution (median 40 ms,
//! sigma 0.5: a real endpoint's seconds, scaled down). Fixed concurrencies 4, 16, 64 and 256
//! against the adaptive limit (at most 256), its first run from dex_collector.concurrency's 8 and
//! the run after from where the first settled (0.85 times it); then the same with the endpoint
//! dropping to 4 workers two seconds into a run of 3,000 companies (fixed 4, 8, 12 and 16 against
//! adaptive; 12 is what the smaller endpoint holds, workers and queue), sampled every 50 ms. Run it
//! through `scripts/bench.sh --adaptive`; with `--repeat N` it runs only the adaptive cases, N
//! times over: the first run (from an empty runs table), the next run, and the drop (from the
//! higher of where those two settled), so that their spread shows. With `--slower K` (and
//! `--repeat N`, or one round) every company takes K times as long, `Retry-After` still 1 s: fixed
//! 16 and the adaptive first and next runs, then the drop K times later into the run for fixed 12
//! and adaptive, to show what a refusal's pause costs a run nearer a real endpoint's time scale
//! (the drop's fixed 4, 8 and 16 would take K times as long, 16 half an hour), the run deadline K
//! times the default 4 minutes so that the drop's runs end by collecting, not by the deadline (a
//! cell says how many companies a run did not reach, if any). With `--slowdown K` (and
//! `--repeat N`, or one round) every company takes K times as long from two seconds into a run of
//! 3,000 (the endpoint slower for everyone; it still serves 16 at once, and fixed 16 is still
//! right): fixed 16 and the adaptive first and next runs; with `--slower S` too, every company S
//! times as long from the start and the change S times later. With `--consecutive N`, N adaptive
//! runs in a row from an empty runs table, as a schedule makes them: how often a run meets a
//! refusal once the capacity has been found; with `--slower K` too, after a run at fixed 16 to
//! compare them with (at `--slower 100` a company's median is 4 s, a real endpoint's, and a run
//! about seven minutes). With `--spread S` (0 to 2), in any of these, the companies' times are
//! drawn with sigma S, not 0.5 (the same median): companies that differ more or less from one
//! another. With `--consecutive N --workers W`, a larger (or smaller) endpoint: it serves W at once
//! and queues W / 2, the runs are of 3,000 companies, and a run at fixed W comes first to compare
//! them with.

#![forbid(unsafe_code)]

#[path = "../random.rs"]
mod random;

use random::Random;
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic;
use dex_stand_in::{Behavior, Capacity, StandIn, StandInConfig};
use serde_json::Value;

const COMPANIES: u32 = 1_500;
const WORKERS: usize = 16;
/// The endpoint queues half as many requests as it serves at once.
const QUEUE_PART: usize = 2;
const MEDIAN_MS: f64 = 40.0;
const SIGMA: f64 = 0.5;
/// The widest `--spread`: at 2 the mean company takes 7.4 times the median, and the drop's slowest
/// fixed runs come near the 4-minute run deadline; wider, runs would end by the deadline, not by
/// collecting.
const WIDEST_SPREAD: f64 = 2.0;
const MAX_CONCURRENCY: u32 = 256;
const CHANGE_COMPANIES: u32 = 3_000;
const CHANGE_AFTER: Duration = Duration::from_secs(2);
const WORKERS_AFTER_CHANGE: usize = 4;
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
enum Setting {
    Fixed(u32),
    Adaptive,
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-adaptive-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Each company's time at a free worker, `sigma` the spread of its logarithm.
fn service_times(companies: u32, sigma: f64) -> Vec<Duration> {
    let mut random = Random(random::CAPACITY_BENCHMARK_SEED);
    (0..companies)
        .map(|_| Duration::from_secs_f64(random.log_normal(MEDIAN_MS, sigma) / 1000.0))
        .collect()
}

fn install_behaviors(stand_in: &StandIn, times: &[Duration]) {
    for (n, &delay) in (1..).zip(times) {
        stand_in.set_behavior(
            &synthetic::company_id(n),
            Behavior::Delay {
                delay,
                then: Box::new(Behavior::Synthetic),
            },
        );
    }
}

fn configure(client: &mut postgres::Client, setting: Setting) -> Result<(), postgres::Error> {
    match setting {
        Setting::Fixed(concurrency) => client.batch_execute(&format!(
            "SET dex_collector.adaptive_concurrency = off; SET dex_collector.concurrency = {concurrency};"
        )),
        Setting::Adaptive => client.batch_execute(&format!(
            "SET dex_collector.adaptive_concurrency = on; SET dex_collector.concurrency = 8;
             SET dex_collector.max_concurrency = {MAX_CONCURRENCY};"
        )),
    }
}

struct Outcome {
    wall: Duration,
    summary: Value,
    run_row: (i32, i32, i32),
}

fn collect(client: &mut postgres::Client) -> Result<Outcome, Box<dyn Error>> {
    let started = Instant::now();
    let summary: Value = client.query_one("SELECT dex_collect_all()", &[])?.get(0);
    let wall = started.elapsed();
    let run_id = summary["run_id"]
        .as_i64()
        .ok_or("a summary without run_id")?;
    let row = client.query_one(
        "SELECT companies_failed, overloaded_answers, retries FROM dex_collector.runs WHERE id = $1",
        &[&run_id],
    )?;
    Ok(Outcome {
        wall,
        summary,
        run_row: (row.get(0), row.get(1), row.get(2)),
    })
}

fn percentile(values: &mut [Duration], fraction: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    values[((values.len() - 1) as f64 * fraction).round() as usize]
}

fn limit_text(summary: &Value) -> String {
    let concurrency = &summary["concurrency"];
    if concurrency["adaptive"] == true {
        format!(
            "{} → {} ({}–{}), read {}",
            concurrency["start"],
            concurrency["limit"],
            concurrency["lowest"],
            concurrency["highest"],
            concurrency["spread"]
        )
    } else {
        concurrency["limit"].to_string()
    }
}

/// `--repeat N`, `--slower K`, `--slowdown K`, `--consecutive N` and `--workers W`, each a whole
/// number above 0; `--spread S`, a number from 0 (every company alike) to [`WIDEST_SPREAD`].
#[derive(Default)]
struct Options {
    repeat: Option<u32>,
    slower: Option<u32>,
    slowdown: Option<u32>,
    consecutive: Option<u32>,
    workers: Option<u32>,
    spread: Option<f64>,
}

fn options() -> Result<Options, Box<dyn Error>> {
    const USAGE: &str = "usage: [--repeat N] [--slower K] [--slowdown K] [--spread S] \
                         | --consecutive N [--slower K] [--workers W] [--spread S]";
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut options = Options::default();
    for pair in arguments.chunks(2) {
        let [flag, n] = pair else {
            return Err(format!("{pair:?} without a number; {USAGE}").into());
        };
        if flag == "--spread" {
            let Some(spread) = n
                .parse()
                .ok()
                .filter(|spread: &f64| (0.0..=WIDEST_SPREAD).contains(spread))
            else {
                return Err(format!(
                    "--spread takes a number from 0 to {WIDEST_SPREAD}, not {n:?}"
                )
                .into());
            };
            options.spread = Some(spread);
            continue;
        }
        let Some(n) = n.parse().ok().filter(|n| *n > 0) else {
            return Err(format!("{flag} takes a whole number above 0, not {n:?}").into());
        };
        match flag.as_str() {
            "--repeat" => options.repeat = Some(n),
            "--slower" => options.slower = Some(n),
            "--slowdown" => options.slowdown = Some(n),
            "--consecutive" => options.consecutive = Some(n),
            "--workers" => options.workers = Some(n),
            _ => return Err(format!("unexpected argument {flag:?}; {USAGE}").into()),
        }
    }
    let others = options.repeat.or(options.slowdown);
    if options.consecutive.is_some() && others.is_some() {
        return Err(format!(
            "--consecutive goes alone or with --slower, --workers and --spread; {USAGE}"
        )
        .into());
    }
    if options.workers.is_some() && options.consecutive.is_none() {
        return Err(format!("--workers goes with --consecutive; {USAGE}").into());
    }
    Ok(options)
}

fn bench() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    let workers = options.workers.map_or(WORKERS, |workers| workers as usize);
    let deployment = Deployment::start(DeploymentOptions {
        stand_in: StandInConfig {
            record_requests: false,
            capacity: Some(Capacity {
                workers,
                queue: workers / QUEUE_PART,
                retry_after: Some("1".into()),
            }),
            ..StandInConfig::default()
        },
        ..DeploymentOptions::default()
    })?;
    let measured = measure(&options, &deployment);
    deployment.check_log()?;
    measured
}

fn measure(options: &Options, deployment: &Deployment) -> Result<(), Box<dyn Error>> {
    let stand_in = &deployment.stand_in;
    let mut client = deployment.client();
    let (companies, workers) = match options.workers {
        Some(workers) => (CHANGE_COMPANIES, workers as usize),
        None => (COMPANIES, WORKERS),
    };
    synthetic::load_companies(&mut client, companies)?;
    let sigma = options.spread.unwrap_or(SIGMA);
    let times: Vec<Duration> = service_times(CHANGE_COMPANIES, sigma)
        .into_iter()
        .map(|time| time * options.slower.unwrap_or(1))
        .collect();
    let mut sorted = times[..companies as usize].to_vec();
    let (p50, p95) = (percentile(&mut sorted, 0.5), percentile(&mut sorted, 0.95));
    let work: Duration = times[..companies as usize].iter().sum();
    println!(
        "{companies} companies; the endpoint serves {workers} at once, queues {}, answers 429 \
         with Retry-After: 1 beyond; a company's time at a worker: log-normal of sigma {sigma}, \
         median {p50:?}, p95 {p95:?}; ideal wall at {workers} workers {:.2} s.\n",
        workers / QUEUE_PART,
        work.as_secs_f64() / workers as f64
    );
    if let Some(factor) = options.slowdown {
        let rounds = options.repeat.unwrap_or(1);
        let scale = options.slower.unwrap_or(1);
        return compare_through_a_slowdown(stand_in, &mut client, &times, factor, scale, rounds);
    }
    if let Some(runs) = options.consecutive {
        // A run at the endpoint's own number first, where there is something to compare with.
        let fixed = (options.slower.is_some() || options.workers.is_some()).then_some(workers);
        return consecutive_adaptive(stand_in, &mut client, &times, runs, options.slower, fixed);
    }
    if let Some(factor) = options.slower {
        let rounds = options.repeat.unwrap_or(1);
        return compare_slower(stand_in, &mut client, &times, factor, rounds);
    }
    if let Some(rounds) = options.repeat {
        return repeat_adaptive(stand_in, &mut client, &times, rounds);
    }
    println!(
        "| concurrency | wall | companies/s | failed | 429s | retries | peak requests at the endpoint | p95 at the endpoint | limit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let cases = [
        ("4", Setting::Fixed(4)),
        ("16", Setting::Fixed(16)),
        ("64", Setting::Fixed(64)),
        ("256", Setting::Fixed(256)),
        ("adaptive, first run", Setting::Adaptive),
        ("adaptive, next run", Setting::Adaptive),
    ];
    for (name, setting) in cases {
        if name == "adaptive, first run" {
            client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
        }
        let outcome = collect_at_capacity(stand_in, &mut client, &times, setting)?;
        let mut served = stand_in.capacity_report().served;
        let (failed, overloaded, retries) = outcome.run_row;
        println!(
            "| {name} | {:.2} s | {:.0} | {failed} | {overloaded} | {retries} | {} | {:.0} ms | {} |",
            outcome.wall.as_secs_f64(),
            f64::from(COMPANIES) / outcome.wall.as_secs_f64(),
            stand_in.max_concurrent_requests(),
            percentile(&mut served, 0.95).as_secs_f64() * 1000.0,
            limit_text(&outcome.summary),
        );
    }

    println!(
        "\n{CHANGE_COMPANIES} companies; {CHANGE_AFTER:?} into the run the endpoint drops from \
         {WORKERS} workers to {WORKERS_AFTER_CHANGE} (queue {}).\n",
        WORKERS / QUEUE_PART
    );
    println!(
        "| concurrency | wall | failed | 429s | 429s after the drop | requests at the endpoint, mean over each second after the drop | limit |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    synthetic::load_companies(&mut client, CHANGE_COMPANIES)?;
    for (name, setting) in [
        ("4", Setting::Fixed(4)),
        ("8", Setting::Fixed(8)),
        ("12", Setting::Fixed(12)),
        ("16", Setting::Fixed(16)),
        ("adaptive", Setting::Adaptive),
    ] {
        let dropped =
            collect_through_a_change(stand_in, &mut client, &times, setting, Change::Drop, 1)?;
        println!("| {name} | {} |", changed_row(&dropped));
    }
    Ok(())
}

/// The columns of a row of the drop's and the slowdown's tables after the first.
fn changed_row(changed: &Changed) -> String {
    let (failed, overloaded, _) = changed.outcome.run_row;
    format!(
        "{:.2} s | {failed} | {overloaded} | {} | {} | {}",
        changed.outcome.wall.as_secs_f64(),
        changed.refused_after,
        changed.means_per_stretch.join(", "),
        limit_text(&changed.outcome.summary),
    )
}

/// The endpoint's counts reset, and the session set for `setting`.
fn prepare(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    setting: Setting,
) -> Result<(), postgres::Error> {
    stand_in.reset();
    install_behaviors(stand_in, times);
    configure(client, setting)
}

/// One run of the companies loaded, against the endpoint at its full capacity (a change puts it
/// back after its run).
fn collect_at_capacity(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    setting: Setting,
) -> Result<Outcome, Box<dyn Error>> {
    prepare(stand_in, client, times, setting)?;
    collect(client)
}

/// What happens to the endpoint during a run.
#[derive(Clone, Copy)]
enum Change {
    /// It drops to [`WORKERS_AFTER_CHANGE`] workers.
    Drop,
    /// Every company takes this many times as long.
    SlowDown(u32),
}

struct Changed {
    outcome: Outcome,
    refused_after: u64,
    /// The requests at the endpoint, mean over each of the first 8 stretches of `scale` seconds
    /// after the change (of one second at the benchmark's own time scale).
    means_per_stretch: Vec<String>,
}

/// One run of the companies loaded, the endpoint changing [`CHANGE_AFTER`] times `scale` into it
/// (`scale`, with `--slower K`, is K, every company's time already K times as long in `times`).
fn collect_through_a_change(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    setting: Setting,
    change: Change,
    scale: u32,
) -> Result<Changed, Box<dyn Error>> {
    let after = CHANGE_AFTER * scale;
    let slowed: Vec<Duration> = match change {
        Change::Drop => Vec::new(),
        Change::SlowDown(factor) => times.iter().map(|time| *time * factor).collect(),
    };
    prepare(stand_in, client, times, setting)?;
    let running = AtomicBool::new(true);
    let (outcome, samples, refused_before) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut refused_before = None;
            while running.load(Ordering::SeqCst) {
                if refused_before.is_none() && started.elapsed() >= after {
                    refused_before = Some(stand_in.capacity_report().refused);
                    match change {
                        Change::Drop => stand_in.set_capacity_workers(WORKERS_AFTER_CHANGE),
                        Change::SlowDown(_) => install_behaviors(stand_in, &slowed),
                    }
                }
                if refused_before.is_some() {
                    samples.push(stand_in.requests_being_answered());
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            (samples, refused_before.unwrap_or_default())
        });
        let outcome = collect(client);
        running.store(false, Ordering::SeqCst);
        let (samples, refused_before) = sampler.join().unwrap_or_default();
        (outcome, samples, refused_before)
    });
    stand_in.set_capacity_workers(WORKERS);
    let per_stretch = (1000 / SAMPLE_EVERY.as_millis()) as usize * scale as usize;
    let means_per_stretch = samples
        .chunks(per_stretch)
        .take(8)
        .map(|stretch| {
            format!(
                "{:.0}",
                stretch.iter().sum::<usize>() as f64 / stretch.len() as f64
            )
        })
        .collect();
    Ok(Changed {
        outcome: outcome?,
        refused_after: stand_in.capacity_report().refused - refused_before,
        means_per_stretch,
    })
}

/// `--repeat N`: the adaptive cases only, `rounds` times: a first run from an empty runs table,
/// the next run, and the drop from the higher of where those two settled, as in the full
/// benchmark.
fn repeat_adaptive(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    rounds: u32,
) -> Result<(), Box<dyn Error>> {
    println!("| round | first run | next run | drop |");
    println!("|---:|---|---|---|");
    for round in 1..=rounds {
        synthetic::load_companies(client, COMPANIES)?;
        client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
        let first = collect_at_capacity(stand_in, client, times, Setting::Adaptive)?;
        let next = collect_at_capacity(stand_in, client, times, Setting::Adaptive)?;
        synthetic::load_companies(client, CHANGE_COMPANIES)?;
        let dropped =
            collect_through_a_change(stand_in, client, times, Setting::Adaptive, Change::Drop, 1)?;
        println!(
            "| {round} | {} | {} | {} |",
            cell(&first),
            cell(&next),
            cell(&dropped.outcome)
        );
    }
    Ok(())
}

/// The run deadline `factor` times the default 4 minutes, so that runs with every company `factor`
/// times as long end by collecting, not by the deadline; at most a day, the setting's maximum.
fn deadline_for(client: &mut postgres::Client, factor: u32) -> Result<u32, postgres::Error> {
    let minutes = factor.saturating_mul(4).min(24 * 60);
    client.batch_execute(&format!("SET dex_collector.run_deadline = '{minutes}min'"))?;
    Ok(minutes)
}

/// `--consecutive N`: N adaptive runs one after the other, the first from an empty runs table;
/// with `--slower K` (`slower`, every company's time already K times as long in `times`), the
/// run deadline K times the default; after a run at `fixed`, if any.
fn consecutive_adaptive(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    runs: u32,
    slower: Option<u32>,
    fixed: Option<usize>,
) -> Result<(), Box<dyn Error>> {
    if let Some(factor) = slower {
        let deadline_minutes = deadline_for(client, factor)?;
        println!("Run deadline {deadline_minutes} min.");
    }
    if let Some(concurrency) = fixed {
        let setting = Setting::Fixed(concurrency as u32);
        let fixed = collect_at_capacity(stand_in, client, times, setting)?;
        println!("Fixed {concurrency}: {}.\n", cell(&fixed));
    }
    println!("| run | adaptive |");
    println!("|---:|---|");
    client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
    for run in 1..=runs {
        let outcome = collect_at_capacity(stand_in, client, times, Setting::Adaptive)?;
        println!("| {run} | {} |", cell(&outcome));
    }
    Ok(())
}

/// `--slower K`: fixed 16, then the adaptive first run (from an empty runs table) and the next,
/// then the drop, K times later into the run, for fixed 12 and adaptive (from the higher of where
/// those two settled); `rounds` times, every company's time already K times as long in `times`.
fn compare_slower(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    factor: u32,
    rounds: u32,
) -> Result<(), Box<dyn Error>> {
    let drop_after = CHANGE_AFTER * factor;
    let deadline_minutes = deadline_for(client, factor)?;
    println!(
        "The drop {drop_after:?} into a run of {CHANGE_COMPANIES} companies; run deadline \
         {deadline_minutes} min.\n\n\
         | round | fixed 16 | adaptive, first run | adaptive, next run | drop, fixed 12 | drop, adaptive |"
    );
    println!("|---:|---|---|---|---|---|");
    for round in 1..=rounds {
        synthetic::load_companies(client, COMPANIES)?;
        let fixed = collect_at_capacity(stand_in, client, times, Setting::Fixed(16))?;
        client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
        let first = collect_at_capacity(stand_in, client, times, Setting::Adaptive)?;
        let next = collect_at_capacity(stand_in, client, times, Setting::Adaptive)?;
        synthetic::load_companies(client, CHANGE_COMPANIES)?;
        let mut drop = |setting| {
            collect_through_a_change(stand_in, client, times, setting, Change::Drop, factor)
        };
        let fixed_drop = drop(Setting::Fixed(12))?;
        let adaptive_drop = drop(Setting::Adaptive)?;
        println!(
            "| {round} | {} | {} | {} | {} | {} |",
            cell(&fixed),
            cell(&first),
            cell(&next),
            cell(&fixed_drop.outcome),
            cell(&adaptive_drop.outcome)
        );
    }
    Ok(())
}

/// `--slowdown K`: fixed 16, then the adaptive first run (from an empty runs table) and the next,
/// `rounds` times, every company K times as long from [`CHANGE_AFTER`] into each run; with
/// `--slower S` (`scale`, every company's time already S times as long in `times`) S times later,
/// the run deadline S times the default.
fn compare_through_a_slowdown(
    stand_in: &StandIn,
    client: &mut postgres::Client,
    times: &[Duration],
    factor: u32,
    scale: u32,
    rounds: u32,
) -> Result<(), Box<dyn Error>> {
    let deadline_minutes = deadline_for(client, scale)?;
    println!(
        "{CHANGE_COMPANIES} companies; {:?} into the run every company takes {factor} times as \
         long; run deadline {deadline_minutes} min.\n",
        CHANGE_AFTER * scale
    );
    println!(
        "| round | concurrency | wall | failed | 429s | 429s after the change | requests at the endpoint, mean over each {scale} s after the change | limit |"
    );
    println!("|---:|---|---:|---:|---:|---:|---|---|");
    synthetic::load_companies(client, CHANGE_COMPANIES)?;
    let change = Change::SlowDown(factor);
    for round in 1..=rounds {
        for (name, setting) in [
            ("16", Setting::Fixed(16)),
            ("adaptive, first run", Setting::Adaptive),
            ("adaptive, next run", Setting::Adaptive),
        ] {
            if name == "adaptive, first run" {
                client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
            }
            let changed =
                collect_through_a_change(stand_in, client, times, setting, change, scale)?;
            println!("| {round} | {name} | {} |", changed_row(&changed));
        }
    }
    Ok(())
}

/// A run in one cell: wall, refusals, the companies it did not reach if any, limit.
fn cell(outcome: &Outcome) -> String {
    let not_reached = match outcome.summary["companiesNotReached"].as_u64() {
        Some(0) | None => String::new(),
        Some(n) => format!(", {n} not reached"),
    };
    let refused = match outcome.run_row.1 {
        0 => "no 429".to_string(),
        1 => "1 429".to_string(),
        n => format!("{n} 429s"),
    };
    format!(
        "{:.2} s, {refused}{not_reached}, {}",
        outcome.wall.as_secs_f64(),
        limit_text(&outcome.summary)
    )
}
