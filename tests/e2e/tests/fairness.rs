//! No company starves: runs cut short by their deadline call the companies left out first, a
//! company that always fails waits its turn, and each run that hits its deadline says so in its
//! summary, its row, `run_summary` and one WARNING in the server log.

use std::collections::BTreeSet;
use std::time::Duration;

use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::stand_in::{Behavior, StandInConfig};
use dex_collector_e2e::synthetic;
use serde_json::Value;

const COMPANIES: u32 = 20;
/// Every answer takes this long: two companies at a time finish two rounds within the
/// one-second deadline, and the third round is cut short.
const LATENCY: Duration = Duration::from_millis(400);
const SHORT_RUN: &str = "SET dex_collector.concurrency = 2; SET dex_collector.run_deadline = '1s';
                         SET dex_collector.max_retries = 0;";
const WARNING: &str = "reached dex_collector.run_deadline";

fn deployment() -> Deployment {
    let deployment = Deployment::start(DeploymentOptions {
        stand_in: StandInConfig {
            latency: LATENCY,
            ..StandInConfig::default()
        },
        // Every run here is cut short by its deadline on purpose, and says so.
        expected_warnings: vec!["reached dex_collector.run_deadline".into()],
        ..DeploymentOptions::default()
    })
    .unwrap();
    synthetic::load_companies(&mut deployment.client(), COMPANIES).unwrap();
    deployment
}

/// A run with `settings`: its summary and the companies it called.
fn run(deployment: &Deployment, settings: &str) -> (Value, BTreeSet<String>) {
    let mut client = deployment.client();
    client.batch_execute(settings).unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    let called = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["company_id"].as_str().unwrap().to_string())
        .collect();
    (summary, called)
}

fn warnings_in_log(deployment: &Deployment) -> usize {
    deployment.cluster.log_contents().matches(WARNING).count()
}

/// The latest run's WARNING, from "not called: N of M companies" on.
fn latest_warning(deployment: &Deployment) -> String {
    let log = deployment.cluster.log_contents();
    let line = log.lines().rfind(|line| line.contains(WARNING)).unwrap();
    line.split("): ").nth(1).unwrap().to_string()
}

#[test]
fn consecutive_runs_cut_short_reach_every_company_and_each_says_so_once() {
    let deployment = deployment();
    let mut client = deployment.client();
    let mut reached = BTreeSet::new();
    let mut runs: Vec<BTreeSet<String>> = Vec::new();
    let mut total_called = 0;
    while total_called < COMPANIES as usize {
        assert!(runs.len() < 10, "no end in sight: {runs:?}");
        let (summary, called) = run(&deployment, SHORT_RUN);
        assert!(!called.is_empty(), "{summary}");
        let not_reached = COMPANIES as usize - called.len();
        assert_eq!(summary["companiesNotReached"], not_reached, "{summary}");
        let (row, view): (i32, i32) = {
            let row = client
                .query_one(
                    "SELECT r.companies_not_reached, s.companies_not_reached
                       FROM dex_collector.runs r JOIN dex_collector.run_summary s ON s.run_id = r.id
                      WHERE r.id = $1",
                    &[&summary["run_id"].as_i64().unwrap()],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!((row as usize, view as usize), (not_reached, not_reached));
        total_called += called.len();
        reached.extend(called.iter().cloned());
        runs.push(called);
        assert_eq!(
            warnings_in_log(&deployment),
            runs.len(),
            "one WARNING per run"
        );
        let counts = latest_warning(&deployment);
        let said = format!("not called: {not_reached} of {COMPANIES} companies;");
        assert!(counts.starts_with(&said), "{counts}");
    }
    assert_eq!(
        reached.len(),
        COMPANIES as usize,
        "{} runs called {total_called} companies in all but not every one: {runs:?}",
        runs.len()
    );
    assert!(
        runs[0].is_disjoint(&runs[1]),
        "the second run called companies of the first while others waited: {runs:?}"
    );
    let log = deployment.cluster.log_contents();
    assert!(
        log.contains("HINT:  The next run calls the companies left out first"),
        "{log}"
    );

    // A run that finishes in time reaches everyone and warns nobody.
    let (summary, called) = run(
        &deployment,
        "SET dex_collector.concurrency = 20; SET dex_collector.run_deadline = '1min';",
    );
    assert_eq!(called.len(), COMPANIES as usize, "{summary}");
    assert_eq!(summary["companiesNotReached"], 0);
    assert_eq!(warnings_in_log(&deployment), runs.len());

    // Every company has a success now, and company_status says how long ago.
    let recent: i64 = client
        .query_one(
            "SELECT count(*) FROM dex_collector.company_status
              WHERE since_last_success < interval '1 hour'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(recent, i64::from(COMPANIES));
}

#[test]
fn a_company_that_always_fails_does_not_take_a_first_slot_in_every_run() {
    let deployment = deployment();
    // The first company by name, so that the targets query alone would put it first every time.
    let failing = synthetic::company_id(1);
    deployment
        .stand_in
        .set_behavior(&failing, Behavior::ServerError);
    let mut never_called: BTreeSet<String> = (1..=COMPANIES).map(synthetic::company_id).collect();
    let mut runs_calling_it = 0;
    while !never_called.is_empty() {
        let waiting_before = never_called.len();
        let (summary, called) = run(&deployment, SHORT_RUN);
        if called.contains(&failing) {
            runs_calling_it += 1;
            // Only once everyone else has had a turn may it come round again.
            assert!(
                runs_calling_it == 1 || waiting_before < called.len(),
                "the failing company was called again while {waiting_before} companies waited: {summary}"
            );
        }
        for company in &called {
            never_called.remove(company);
        }
    }
    assert!(runs_calling_it >= 1);
    let failures: i64 = deployment
        .client()
        .query_one(
            "SELECT consecutive_failures FROM dex_collector.company_status WHERE company_id = $1::text::uuid",
            &[&failing],
        )
        .unwrap()
        .get(0);
    assert_eq!(failures, runs_calling_it);
}
