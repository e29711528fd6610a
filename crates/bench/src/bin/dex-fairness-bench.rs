//! Fairness under the run deadline with realistic endpoint times (BENCHMARKS.md, "Every company
//! under the deadline"): 1,000 synthetic companies whose collect-bulk answers take a
//! heavy-tailed time (log-normal, median 5 s, 1 % over 60 s, so about 1 % time out), collected
//! by consecutive runs until every company that can be collected has been, once with the
//! defaults and once tuned. Run it through `scripts/bench.sh --fairness`.
//!
//! Time is scaled down twentyfold so the whole thing takes minutes: answers (median 250 ms),
//! `request_timeout` (3 s), `run_deadline` (12 s) and the 5-minute cadence (15 s) alike. Counts
//! of runs and companies do not depend on the scale; only the wall time does. The cadence matters
//! for the endpoint's load: requests a run abandons (timed out, or cut at its deadline) go on at
//! the endpoint, as they would at the real one, which works on until it has downloaded the DEX.

#![forbid(unsafe_code)]

#[path = "../random.rs"]
mod random;

use random::Random;
use std::collections::BTreeSet;
use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic;
use dex_stand_in::Behavior;

const COMPANIES: u32 = 1_000;
const SCALE: f64 = 1.0 / 20.0;
const MEDIAN_S: f64 = 5.0;
/// P(time > 60 s) = 1 %: ln(60 / 5) / 2.326 (the 99th percentile of the standard normal).
const SIGMA: f64 = 1.0683;
const REQUEST_TIMEOUT_S: f64 = 60.0;
const RUN_DEADLINE_S: f64 = 240.0;
const CADENCE_S: f64 = 300.0;
const MAX_RUNS: usize = 30;

struct Case {
    name: &'static str,
    concurrency: u32,
}

const CASES: [Case; 3] = [
    Case {
        name: "defaults",
        concurrency: 8,
    },
    Case {
        name: "tuned",
        concurrency: 32,
    },
    Case {
        name: "tuned further",
        concurrency: 64,
    },
];

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-fairness-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Unscaled endpoint time of each company, seconds.
fn endpoint_times() -> Vec<f64> {
    let mut random = Random(20_261_128);
    (0..COMPANIES)
        .map(|_| random.log_normal(MEDIAN_S, SIGMA))
        .collect()
}

fn scaled(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds * SCALE)
}

fn bench() -> Result<(), Box<dyn Error>> {
    let deployment = Deployment::start(DeploymentOptions {
        // The runs are meant to reach their deadline: each says so.
        expected_warnings: vec!["reached dex_collector.run_deadline".into()],
        ..DeploymentOptions::for_benchmark()
    })?;
    let mut client = deployment.client();
    synthetic::load_companies(&mut client, COMPANIES)?;
    let times = endpoint_times();
    let collectable: BTreeSet<String> = (1..=COMPANIES)
        .zip(&times)
        .filter(|(_, &time)| time < REQUEST_TIMEOUT_S)
        .map(|(n, _)| synthetic::company_id(n))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{COMPANIES} companies; endpoint time (unscaled): median {:.1} s, mean {mean:.1} s, \
         p90 {:.1} s, p99 {:.1} s, max {:.0} s; {} over the 60 s request timeout.",
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() * 99 / 100],
        sorted[sorted.len() - 1],
        COMPANIES as usize - collectable.len()
    );
    println!(
        "A run every 5 minutes; otherwise the defaults: run_deadline 4min, request_timeout 60s, \
         max_retries 2. Time scaled by 1/20.\n"
    );
    println!(
        "| case | concurrency | runs until every collectable company succeeded | until every company was called | collected per run (mean) | sizing rule: C × deadline ÷ median, ÷ mean | peak concurrent requests at the endpoint | wall (scaled) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in CASES {
        // What the last case abandoned is still being answered: let it end first.
        let idle_by = Instant::now() + Duration::from_secs(60);
        while deployment.stand_in.requests_being_answered() > 0 && Instant::now() < idle_by {
            std::thread::sleep(Duration::from_millis(100));
        }
        deployment.stand_in.reset();
        for (n, &time) in (1..=COMPANIES).zip(&times) {
            deployment.stand_in.set_behavior(
                &synthetic::company_id(n),
                Behavior::Delay {
                    delay: scaled(time),
                    then: Box::new(Behavior::Synthetic),
                },
            );
        }
        client.batch_execute("TRUNCATE dex_collector.runs CASCADE")?;
        client.batch_execute(&format!(
            "SET dex_collector.concurrency = {};
             SET dex_collector.request_timeout = '{}ms';
             SET dex_collector.run_deadline = '{}ms';",
            case.concurrency,
            scaled(REQUEST_TIMEOUT_S).as_millis(),
            scaled(RUN_DEADLINE_S).as_millis()
        ))?;
        let started = Instant::now();
        let mut succeeded: BTreeSet<String> = BTreeSet::new();
        let mut called: BTreeSet<String> = BTreeSet::new();
        let mut per_run = Vec::new();
        let mut runs_until_called = None;
        while succeeded.len() < collectable.len() && per_run.len() < MAX_RUNS {
            // pg_cron starts a run every 5 minutes (scaled), whenever the last one ended.
            let due = started + scaled(CADENCE_S) * per_run.len() as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let summary: serde_json::Value =
                client.query_one("SELECT dex_collect_all()", &[])?.get(0);
            let results = summary["results"].as_array().cloned().unwrap_or_default();
            let mut collected = 0;
            for result in &results {
                let company = result["company_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if result["success"] == true {
                    collected += 1;
                    succeeded.insert(company.clone());
                }
                called.insert(company);
            }
            per_run.push(collected);
            if runs_until_called.is_none() && called.len() == COMPANIES as usize {
                runs_until_called = Some(per_run.len());
            }
        }
        let deadline = RUN_DEADLINE_S;
        let rule = |time: f64| f64::from(case.concurrency) * deadline / time;
        println!(
            "| {} | {} | {} | {} | {:.0} ({:.0} %) | {:.0}, {:.0} | {} | {:.0} s |",
            case.name,
            case.concurrency,
            if succeeded.len() == collectable.len() {
                per_run.len().to_string()
            } else {
                format!("not within {MAX_RUNS}")
            },
            runs_until_called.map_or_else(|| "-".to_string(), |runs| runs.to_string()),
            per_run.iter().sum::<usize>() as f64 / per_run.len() as f64,
            100.0 * per_run.iter().sum::<usize>() as f64
                / per_run.len() as f64
                / f64::from(COMPANIES),
            rule(MEDIAN_S),
            rule(mean),
            deployment.stand_in.max_concurrent_requests(),
            started.elapsed().as_secs_f64()
        );
        eprintln!(
            "dex-fairness-bench: {}: collected per run {per_run:?}",
            case.name
        );
    }
    deployment.check_log()?;
    Ok(())
}
