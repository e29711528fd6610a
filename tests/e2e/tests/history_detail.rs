//! A history that stays small: with `dex_collector.history_detail = 'changes'` (the default) a
//! result gets a `run_results` row only when it is news, every result is still counted in its
//! run's row and in `dex_collector.daily_rollups`, and the mode can change between runs.

use std::collections::BTreeMap;

use dex_collector_e2e::deployment::{
    one, results_by_company, sample, sql_error, Deployment, DeploymentOptions,
};
use dex_collector_e2e::stand_in::Behavior;
use serde_json::Value;

/// One company's stored results, oldest first: (run, status).
fn stored(client: &mut postgres::Client, company: &str) -> Vec<(i64, String)> {
    client
        .query(
            "SELECT run_id, status FROM dex_collector.run_results
              WHERE company_id = $1::text::uuid ORDER BY run_id",
            &[&company],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// What the summaries say each company's day holds: attempts, succeeded, failed, skipped,
/// records, machines, requests.
fn expected_days(summaries: &[Value]) -> BTreeMap<String, [i64; 7]> {
    let mut days: BTreeMap<String, [i64; 7]> = BTreeMap::new();
    for summary in summaries {
        for (company, result) in results_by_company(summary) {
            let day = days.entry(company).or_default();
            let succeeded = result["success"] == Value::Bool(true);
            day[0] += 1;
            day[1] += i64::from(succeeded);
            day[2] += i64::from(!succeeded);
            day[4] += result["recordsCollected"].as_i64().unwrap();
            day[5] += result["machinesUpdated"].as_i64().unwrap();
            day[6] += result["attempts"].as_i64().unwrap();
        }
        for skipped in summary["skipped"].as_array().unwrap() {
            let company = skipped["company_id"].as_str().unwrap().to_string();
            days.entry(company).or_default()[3] += 1;
        }
    }
    days
}

fn rolled_up(client: &mut postgres::Client) -> BTreeMap<String, [i64; 7]> {
    client
        .query(
            // Summed over days: a test may run across midnight (UTC).
            "SELECT company_id::text, sum(attempts)::bigint, sum(succeeded)::bigint,
                    sum(failed)::bigint, sum(skipped)::bigint, sum(records_collected)::bigint,
                    sum(machines_updated)::bigint, sum(requests)::bigint
               FROM dex_collector.daily_rollups GROUP BY company_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| {
            let counts: [i64; 7] = std::array::from_fn(|i| row.get(i + 1));
            (row.get(0), counts)
        })
        .collect()
}

#[test]
fn a_streak_of_successes_stores_one_row_and_each_failure_its_own() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    let mut summaries = Vec::new();
    for _ in 0..3 {
        summaries.push(deployment.collect_all());
    }
    let mut client = deployment.client();
    assert_eq!(
        stored(&mut client, sample::ACME),
        [(1, "succeeded".to_string())],
        "three successes, one row"
    );
    assert_eq!(
        stored(&mut client, sample::DELTA),
        [(1, "skipped".to_string())],
        "a company without credentials: a row when it becomes so"
    );
    let per_run: Vec<(i32, i32, i32)> = client
        .query(
            "SELECT companies_processed, companies_succeeded, companies_skipped
               FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(per_run, [(8, 8, 2); 3], "every result counted in its run");

    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    summaries.push(deployment.collect_all());
    summaries.push(deployment.collect_all());
    deployment.stand_in.reset();
    for _ in 0..3 {
        summaries.push(deployment.collect_all());
    }
    let statuses = |rows: &[(i64, &str)]| -> Vec<(i64, String)> {
        rows.iter()
            .map(|(run, status)| (*run, status.to_string()))
            .collect()
    };
    assert_eq!(
        stored(&mut client, sample::ACME),
        statuses(&[
            (1, "succeeded"),
            (4, "failed"),
            (5, "failed"),
            (6, "succeeded")
        ]),
        "each failure, and the success after them"
    );
    assert_eq!(stored(&mut client, sample::BETA).len(), 1);
    let failed_rows: Vec<(Option<i32>, Option<String>)> = client
        .query(
            "SELECT http_status, error FROM dex_collector.run_results
              WHERE company_id = $1::text::uuid AND status = 'failed'",
            &[&sample::ACME],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        failed_rows
            .iter()
            .all(|(status, error)| *status == Some(500) && error.is_some()),
        "{failed_rows:?}"
    );

    // Every result is in the day's rollup, exactly as the runs reported it.
    assert_eq!(rolled_up(&mut client), expected_days(&summaries));
    let (p50, p95, max): (Option<i64>, Option<i64>, Option<i64>) = {
        let row = client
            .query_one(
                "SELECT duration_ms_p50, duration_ms_p95, duration_ms_max
                   FROM dex_collector.company_days WHERE company_id = $1::text::uuid
                  ORDER BY day DESC LIMIT 1",
                &[&sample::ACME],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert!(
        matches!((p50, p95, max), (Some(p50), Some(p95), Some(max)) if p50 <= p95 && p95 <= max),
        "{p50:?} {p95:?} {max:?}"
    );
    let totals: (i64, i64, i64) = {
        let row = client
            .query_one(
                "SELECT sum(companies)::bigint / count(*), sum(attempts)::bigint, sum(failed)::bigint
                   FROM dex_collector.daily_totals",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(totals, (10, 8 * 8, 2));
    // company_status reads the state, not the detail.
    let acme: (String, i64) = {
        let row = client
            .query_one(
                "SELECT last_status, consecutive_failures FROM dex_collector.company_status
                  WHERE company_id = $1::text::uuid",
                &[&sample::ACME],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(acme, ("succeeded".to_string(), 0));
}

#[test]
fn the_detail_can_change_between_runs_and_all_keeps_every_result() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    let mut client = deployment.client();
    // Checked once the library is loaded (until then any dex_collector.* value is a placeholder).
    client.batch_execute("LOAD 'dex_collector'").unwrap();
    let (state, message, hint) =
        sql_error(client.query_one("SET dex_collector.history_detail = 'some'", &[]));
    assert_eq!(state, "22023", "{message}");
    assert!(
        hint.as_deref()
            .is_some_and(|hint| hint.contains("changes, all")),
        "{hint:?}"
    );
    let collect = |detail: &str| -> Value {
        let mut session = deployment.client();
        session
            .batch_execute(&format!("SET dex_collector.history_detail = '{detail}'"))
            .unwrap();
        one(&mut session, "SELECT dex_collect_all()")
    };
    let mut summaries = vec![collect("all"), collect("all"), collect("changes")];
    let rows_per_run: Vec<i64> = client
        .query(
            "SELECT (SELECT count(*) FROM dex_collector.run_results rr WHERE rr.run_id = r.id)
               FROM dex_collector.runs r ORDER BY r.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        rows_per_run,
        [10, 10, 0],
        "all: every result; changes: only news"
    );
    // Back to all in the middle of a streak: stored again from then on; the state went on all along.
    deployment
        .stand_in
        .set_behavior(sample::BETA, Behavior::ServerError);
    summaries.push(collect("changes"));
    summaries.push(collect("all"));
    let beta: Vec<(i64, String)> = stored(&mut client, sample::BETA);
    assert_eq!(
        beta.iter().map(|(run, _)| *run).collect::<Vec<_>>(),
        [1, 2, 4, 5]
    );
    let failures: i64 = one(
        &mut client,
        &format!(
            "SELECT consecutive_failures::bigint FROM dex_collector.companies WHERE company_id = '{}'",
            sample::BETA
        ),
    );
    assert_eq!(failures, 2);
    assert_eq!(rolled_up(&mut client), expected_days(&summaries));
}

#[test]
fn without_the_worker_each_call_deletes_a_batch_of_old_history() {
    each_call_deletes_a_batch_of_old_history(
        Deployment::start(DeploymentOptions::default()).unwrap(),
    );
}

/// lifecycle.rs: a worker that should serve the database but could not start deletes nothing, and
/// the calls do.
#[test]
fn with_a_worker_that_could_not_start_each_call_deletes_a_batch_of_old_history() {
    let deployment = Deployment::start(DeploymentOptions {
        preload: true,
        settings: vec![
            ("dex_collector.database".into(), "dex".into()),
            ("max_worker_processes".into(), "0".into()),
        ],
        ..DeploymentOptions::default()
    })
    .unwrap();
    assert!(deployment
        .cluster
        .log_contents()
        .contains("too many background workers"));
    each_call_deletes_a_batch_of_old_history(deployment);
}

fn each_call_deletes_a_batch_of_old_history(deployment: Deployment) {
    let mut client = deployment.client();
    // 30 runs from 20 to 49 days ago with a result each, events from 1 to 120 days ago, rollups
    // from 1 to 500 days ago: the defaults keep 14, 90 and 400 days.
    client
        .batch_execute(&format!(
            "INSERT INTO dex_collector.runs (started_at, finished_at, status, trigger)
             SELECT now() - make_interval(days => d), now() - make_interval(days => d), 'succeeded', 'pg_cron'
               FROM generate_series(20, 49) AS d;
             INSERT INTO dex_collector.run_results (run_id, company_id, company_name, status)
             SELECT id, '{acme}', 'Acme Vending', 'failed' FROM dex_collector.runs;
             INSERT INTO dex_collector.events (kind, company_id, created_at)
             SELECT 'failing', '{acme}', now() - make_interval(days => d) FROM generate_series(1, 120) AS d;
             INSERT INTO dex_collector.daily_rollups (day, company_id, duration_histogram)
             SELECT (now() AT TIME ZONE 'UTC')::date - d, '{acme}', array_fill(0, ARRAY[60])
               FROM generate_series(1, 500) AS d;",
            acme = sample::ACME
        ))
        .unwrap();
    let history = "SELECT format('%s runs, %s results, %s events, %s rollups',
                            (SELECT count(*) FROM dex_collector.runs),
                            (SELECT count(*) FROM dex_collector.run_results),
                            (SELECT count(*) FROM dex_collector.events),
                            (SELECT count(*) FROM dex_collector.daily_rollups))";
    deployment.collect_all();
    // Twenty old runs per call, with their results; the call's own run and its results stay, and
    // today's rollups and the call's two events (companies without credentials) with them.
    assert_eq!(
        one::<String>(&mut client, history),
        "11 runs, 20 results, 91 events, 410 rollups"
    );
    deployment.collect_all();
    assert_eq!(
        one::<String>(&mut client, history),
        "2 runs, 10 results, 91 events, 410 rollups"
    );
}
