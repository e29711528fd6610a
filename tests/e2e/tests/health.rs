//! Health as state: each company's row in `dex_collector.companies`, kept with its results; the
//! events of its changes, each sent with NOTIFY and received here by a real LISTEN connection;
//! `company_status` and `health` answering from them.

use std::time::Duration;

use dex_collector_e2e::deployment::{
    collect_company, notifications, one, sample, wait_until, Deployment, DeploymentOptions,
};
use dex_collector_e2e::stand_in::Behavior;
use serde_json::Value;

fn deployment(options: DeploymentOptions) -> Deployment {
    Deployment::start(options).unwrap()
}

/// The events of one company, oldest first, as (kind, consecutive failures).
fn events_of(client: &mut postgres::Client, company: &str) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT kind, (details->>'consecutive_failures')::bigint FROM dex_collector.events
              WHERE company_id = $1::text::uuid ORDER BY id",
            &[&company],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get::<_, Option<i64>>(1).unwrap_or(-1)))
        .collect()
}

fn state_of(client: &mut postgres::Client, company: &str) -> (String, i32, bool) {
    let row = client
        .query_one(
            "SELECT state, consecutive_failures, alerted FROM dex_collector.companies
              WHERE company_id = $1::text::uuid",
            &[&company],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[test]
fn a_failing_company_is_one_event_and_one_notify_until_it_recovers() {
    let deployment = deployment(DeploymentOptions::default());
    let mut client = deployment.client();
    let mut listener = deployment.listener();

    deployment.collect_all();
    assert_eq!(state_of(&mut client, sample::ACME), ("ok".into(), 0, false));
    let first = notifications(&mut listener, Duration::from_secs(2));
    let kinds: Vec<&str> = first.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["skipped", "skipped"],
        "the two companies without credentials: {first:#?}"
    );

    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    for failures in 1..=2 {
        deployment.collect_all();
        assert_eq!(
            state_of(&mut client, sample::ACME),
            ("ok".into(), failures, false),
            "below dex_collector.alert_after_failures (3) it is not failing yet"
        );
    }
    assert!(notifications(&mut listener, Duration::from_millis(500)).is_empty());

    deployment.collect_all();
    assert_eq!(
        state_of(&mut client, sample::ACME),
        ("failing".into(), 3, true)
    );
    assert_eq!(
        events_of(&mut client, sample::ACME),
        [("failing".to_string(), 3)]
    );
    let failing = notifications(&mut listener, Duration::from_secs(2));
    assert_eq!(failing.len(), 1, "{failing:#?}");
    assert_eq!(failing[0]["kind"], "failing");
    assert_eq!(failing[0]["company_id"], sample::ACME);
    assert_eq!(failing[0]["company_name"], "Acme Vending");
    assert_eq!(failing[0]["details"]["http_status"], 500);
    assert!(failing[0]["details"]["error"]
        .as_str()
        .unwrap()
        .contains("500"));
    let event_id: i64 = one(&mut client, "SELECT max(id) FROM dex_collector.events");
    assert_eq!(failing[0]["id"], event_id);

    for _ in 0..10 {
        deployment.collect_all();
    }
    assert_eq!(
        state_of(&mut client, sample::ACME),
        ("failing".into(), 13, true)
    );
    assert_eq!(
        events_of(&mut client, sample::ACME).len(),
        1,
        "one event per episode"
    );
    assert!(notifications(&mut listener, Duration::from_millis(500)).is_empty());

    deployment.stand_in.reset();
    deployment.collect_all();
    assert_eq!(state_of(&mut client, sample::ACME), ("ok".into(), 0, false));
    assert_eq!(
        events_of(&mut client, sample::ACME),
        [("failing".to_string(), 3), ("recovered".to_string(), 0)]
    );
    let recovered = notifications(&mut listener, Duration::from_secs(2));
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    assert_eq!(recovered[0]["kind"], "recovered");

    // company_status answers from companies, with the columns it always had.
    let row = client
        .query_one(
            "SELECT last_status, consecutive_failures, last_error, since_last_success < interval '1 minute',
                    state, last_http_status
               FROM dex_collector.company_status WHERE company_id = $1::text::uuid",
            &[&sample::ACME],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, i64>(1), 0);
    assert!(
        row.get::<_, String>(2).contains("500"),
        "the latest failure's error stays"
    );
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "ok");
    assert_eq!(row.get::<_, i32>(5), 200);
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM dex_collector.company_status"
        ),
        10,
        "every target, skipped ones too"
    );
}

#[test]
fn alert_after_opens_an_episode_by_time_and_skips_neither_count_nor_end_it() {
    let deployment = deployment(DeploymentOptions::default());
    let mut client = deployment.client();
    client
        .batch_execute(
            "SET dex_collector.alert_after_failures = 100; SET dex_collector.alert_after = '1s'",
        )
        .unwrap();
    deployment
        .stand_in
        .set_behavior(sample::BETA, Behavior::ServerError);
    client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    assert_eq!(
        state_of(&mut client, sample::BETA),
        ("never_collected".into(), 1, false)
    );
    std::thread::sleep(Duration::from_millis(1100));
    client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    assert_eq!(
        state_of(&mut client, sample::BETA),
        ("failing".into(), 2, true)
    );

    // Credentials gone: skipped, the episode still open; back: collectable, still failing.
    client
        .batch_execute(
            "UPDATE public.user_credentials SET dex_username = NULL
              WHERE company_id = 'a0000000-0000-4000-8000-000000000002'",
        )
        .unwrap();
    client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    assert_eq!(
        state_of(&mut client, sample::BETA),
        ("skipped".into(), 2, true)
    );
    client
        .batch_execute(
            "UPDATE public.user_credentials SET dex_username = 'beta'
              WHERE company_id = 'a0000000-0000-4000-8000-000000000002'",
        )
        .unwrap();
    client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    assert_eq!(
        state_of(&mut client, sample::BETA),
        ("failing".into(), 3, true)
    );
    deployment.stand_in.reset();
    client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    let kinds: Vec<String> = events_of(&mut client, sample::BETA)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(kinds, ["failing", "skipped", "collectable", "recovered"]);
}

#[test]
fn a_run_cut_short_by_the_deadline_is_an_event() {
    let deployment = deployment(DeploymentOptions::default())
        .expect_warnings(&["reached dex_collector.run_deadline"]);
    let mut client = deployment.client();
    let mut listener = deployment.listener();
    deployment.stand_in.set_latency(Duration::from_millis(400));
    client
        .batch_execute("SET dex_collector.concurrency = 1; SET dex_collector.run_deadline = '1s'")
        .unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    let run_id = summary["run_id"].as_i64().unwrap();
    let (kind, not_reached): (String, i64) = {
        let row = client
            .query_one(
                "SELECT kind, (details->>'companies_not_reached')::bigint FROM dex_collector.events
                  WHERE run_id = $1 AND company_id IS NULL",
                &[&run_id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(kind, "run_cut_short");
    assert!(not_reached > 0);
    // One company at a time, each 400 ms: the deadline comes while the third is in flight.
    let log = deployment.cluster.log_contents();
    assert!(
        log.lines()
            .any(|line| line.contains("reached dex_collector.run_deadline")
                && line.contains("; cut short: 1 of the ")
                && line.ends_with(" called")),
        "{log}"
    );
    // The one in flight is recorded failed, and counted among its failures in a row: a company
    // always slower than the deadline would otherwise never be failing.
    let (cut, counted): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM dex_collector.run_results
                          WHERE run_id = $1 AND status = 'failed' AND error LIKE 'stopped at the run deadline%'),
                        (SELECT count(*) FROM dex_collector.companies WHERE consecutive_failures > 0)",
                &[&run_id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((cut, counted), (1, 1));
    // The companies the deadline left out keep their state: no storm of per-company events.
    let company_events: Vec<String> = client
        .query(
            "SELECT kind FROM dex_collector.events WHERE company_id IS NOT NULL ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        company_events,
        ["skipped", "skipped"],
        "the two without credentials"
    );
    let received = notifications(&mut listener, Duration::from_secs(2));
    assert!(
        received
            .iter()
            .any(|e| e["kind"] == "run_cut_short" && e["run_id"] == run_id),
        "{received:#?}"
    );
    let run_events = |client: &mut postgres::Client| -> Vec<(String, i64)> {
        client
            .query(
                "SELECT kind, run_id FROM dex_collector.events WHERE company_id IS NULL ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    };
    // Cut short again: the same episode, no new event.
    let again: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert!(
        again["companiesNotReached"].as_i64().unwrap() > 0,
        "{again}"
    );
    assert_eq!(
        run_events(&mut client),
        [("run_cut_short".to_string(), run_id)]
    );

    // The endpoint refuses the key: the run stops as a whole.
    deployment.stand_in.set_latency(Duration::ZERO);
    deployment.stand_in.set_default_behavior(Behavior::Status {
        status: 401,
        content_type: "application/json".into(),
        body: r#"{"error":"Unauthorized"}"#.into(),
        headers: Vec::new(),
    });
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    let run_id = summary["run_id"].as_i64().unwrap();
    let kind: String = client
        .query_one(
            "SELECT kind FROM dex_collector.events WHERE run_id = $1 AND company_id IS NULL",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(kind, "run_failed");

    // Failing again the same way is the same episode; another error, or a failure after a run
    // that succeeded, is news.
    let collect = |client: &mut postgres::Client| -> i64 {
        let summary: Value = client
            .query_one("SELECT dex_collect_all()", &[])
            .unwrap()
            .get(0);
        summary["run_id"].as_i64().unwrap()
    };
    collect(&mut client);
    client
        .batch_execute(
            "SET dex_collector.targets_query =
                 'SELECT id AS company_id, company_name FROM public.companies WHERE false'",
        )
        .unwrap();
    let nothing_found = collect(&mut client);
    client
        .batch_execute("RESET dex_collector.targets_query")
        .unwrap();
    deployment
        .stand_in
        .set_default_behavior(Behavior::Synthetic);
    collect(&mut client);
    deployment.stand_in.set_default_behavior(Behavior::Status {
        status: 401,
        content_type: "application/json".into(),
        body: r#"{"error":"Unauthorized"}"#.into(),
        headers: Vec::new(),
    });
    let refused_again = collect(&mut client);
    let failed: Vec<i64> = run_events(&mut client)
        .into_iter()
        .filter(|(kind, _)| kind == "run_failed")
        .map(|(_, run)| run)
        .collect();
    assert_eq!(failed, [run_id, nothing_found, refused_again]);
    // The company the key was refused for failed for the run's sake: the run that succeeded before
    // left every company without failures, and so does this one.
    let (refused, counted): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM dex_collector.run_results
                          WHERE run_id = $1 AND status = 'failed' AND http_status = 401),
                        (SELECT count(*) FROM dex_collector.companies WHERE consecutive_failures > 0)",
                &[&refused_again],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((refused, counted), (1, 0));
}

#[test]
fn a_notify_payload_stays_under_postgres_limit_whatever_the_event_holds() {
    let deployment = deployment(DeploymentOptions::default());
    let mut client = deployment.client();
    client
        .batch_execute(
            "INSERT INTO dex_collector.events (kind, run_id, details)
             VALUES ('run_failed', 1, jsonb_build_object('error', repeat('é', 20000))),
                    ('run_failed', 2, jsonb_build_object('error', 'short'))",
        )
        .unwrap();
    let payloads: Vec<String> = client
        .query(
            "SELECT dex_collector.event_payload(e) FROM dex_collector.events e ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(payloads.iter().all(|payload| payload.len() <= 7900));
    let long: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(long["truncated"], true);
    assert_eq!(long["run_id"], 1);
    let short: Value = serde_json::from_str(&payloads[1]).unwrap();
    assert_eq!(short["details"]["error"], "short");
    // Rows that arrive without the collector making them (a restored dump) send nothing.
    let mut listener = deployment.listener();
    client
        .batch_execute(
            "INSERT INTO dex_collector.companies (company_id, company_name, state, state_since,
                    last_attempt_at, last_status, alerted)
             VALUES (gen_random_uuid(), 'Restored', 'failing', now(), now(), 'failed', true);
             INSERT INTO dex_collector.events (kind, run_id) VALUES ('run_failed', 3)",
        )
        .unwrap();
    assert!(notifications(&mut listener, Duration::from_millis(500)).is_empty());
}

#[test]
fn health_is_one_row_that_turns_stale_when_runs_stop() {
    let deployment = deployment(DeploymentOptions {
        also_preload: vec!["pg_cron".into()],
        settings: vec![("cron.database_name".into(), "dex".into())],
        ..DeploymentOptions::default()
    });
    let mut client = deployment.client();
    client
        .batch_execute("CREATE EXTENSION pg_cron; SELECT dex_collector.schedule('*/5 * * * *')")
        .unwrap();
    let before: Option<bool> = one(&mut client, "SELECT healthy FROM dex_collector.health");
    assert_eq!(before, Some(false), "no run yet");
    deployment.collect_all();
    let row = client
        .query_one(
            "SELECT healthy, stale, expected_every = interval '5 minutes', companies_ok,
                    companies_skipped, companies_failing, companies_never_collected, last_run_status
               FROM dex_collector.health",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert_eq!(
        (
            row.get::<_, i64>(3),
            row.get::<_, i64>(4),
            row.get::<_, i64>(5),
            row.get::<_, i64>(6)
        ),
        (8, 2, 0, 0)
    );
    assert_eq!(row.get::<_, String>(7), "succeeded");
    let metrics: Vec<(String, String, f64)> = client
        .query(
            "SELECT metric, label, value FROM dex_collector.metrics
              WHERE metric IN ('dex_collector_healthy', 'dex_collector_companies',
                               'dex_collector_events_last_day')
              ORDER BY metric, label",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected: Vec<(String, String, f64)> = [
        ("dex_collector_companies", "failing", 0.0),
        ("dex_collector_companies", "never_collected", 0.0),
        ("dex_collector_companies", "ok", 8.0),
        ("dex_collector_companies", "skipped", 2.0),
        ("dex_collector_events_last_day", "collectable", 0.0),
        ("dex_collector_events_last_day", "failing", 0.0),
        ("dex_collector_events_last_day", "fresh", 0.0),
        ("dex_collector_events_last_day", "recovered", 0.0),
        ("dex_collector_events_last_day", "run_cut_short", 0.0),
        ("dex_collector_events_last_day", "run_failed", 0.0),
        ("dex_collector_events_last_day", "skipped", 2.0),
        ("dex_collector_events_last_day", "stale", 0.0),
        ("dex_collector_healthy", "", 1.0),
    ]
    .into_iter()
    .map(|(metric, label, value)| (metric.to_string(), label.to_string(), value))
    .collect();
    assert_eq!(metrics, expected);

    // Two runs missed: stale, and not healthy.
    client
        .batch_execute(
            "UPDATE dex_collector.runs SET started_at = started_at - interval '11 minutes'",
        )
        .unwrap();
    let (healthy, stale): (bool, bool) = {
        let row = client
            .query_one("SELECT healthy, stale FROM dex_collector.health", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(!healthy && stale);
    // A run skipped because another held the lock (as every call is while a stuck session holds
    // it) is no run at all.
    client
        .batch_execute(
            "INSERT INTO dex_collector.runs (finished_at, status, trigger, error)
             VALUES (now(), 'skipped', 'pg_cron', 'a collection run is already in progress')",
        )
        .unwrap();
    let (healthy, stale, last_run_status): (bool, bool, String) = {
        let row = client
            .query_one(
                "SELECT healthy, stale, last_run_status FROM dex_collector.health",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert!(!healthy && stale);
    assert_eq!(last_run_status, "succeeded");
    // Nor is a run of one company (an app's refresh, say), which goes on with the schedule
    // stopped.
    let company = collect_company(&mut client, sample::ACME);
    let (stale, last_run_id): (bool, i64) = {
        let row = client
            .query_one("SELECT stale, last_run_id FROM dex_collector.health", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(stale);
    // The run of every company before (a pg_cron call of the job, too, if one came meanwhile).
    assert_ne!(Some(last_run_id), company["run_id"].as_i64());

    // Other schedules pg_cron runs regularly; irregular ones say nothing.
    for (schedule, every) in [
        ("30 seconds", Some("00:00:30")),
        ("0 * * * *", Some("01:00:00")),
        ("0,20,40 * * * *", Some("00:20:00")),
        // The longest wait: from :10 to :00.
        ("0,5,10 * * * *", Some("00:50:00")),
        // pg_cron takes a step no field has (as 1): no interval is read from it, and no error.
        ("*/4294967297 * * * *", None),
        ("15 */2 * * *", Some("02:00:00")),
        ("0 3 * * *", Some("1 day")),
        ("0 3 * * 1", None),
    ] {
        if let Err(error) = client.execute("SELECT dex_collector.schedule($1)", &[&schedule]) {
            // Schedules in seconds came with pg_cron 1.5; an older one refuses them, and may
            // refuse the step too long.
            assert!(
                (schedule.ends_with("seconds") || schedule.starts_with("*/4294967297"))
                    && error
                        .as_db_error()
                        .is_some_and(|db| db.message().contains("invalid schedule")),
                "{schedule}: {error:?}"
            );
            continue;
        }
        let health = client.query_one("SELECT count(*) FROM dex_collector.health", &[]);
        assert!(health.is_ok(), "{schedule}: {health:?}");
        assert_eq!(
            expected_interval(&mut client).as_deref(),
            every,
            "{schedule}"
        );
    }

    // A job paused on purpose means no run is meant to start.
    let expected_while = |client: &mut postgres::Client, active: bool| -> Option<String> {
        client
            .execute(
                "SELECT cron.alter_job(jobid, active := $1) FROM cron.job
                  WHERE jobname = 'dex_collect_all'",
                &[&active],
            )
            .unwrap();
        expected_interval(client)
    };
    client
        .execute("SELECT dex_collector.schedule('*/5 * * * *')", &[])
        .unwrap();
    assert_eq!(expected_while(&mut client, false), None);
    assert_eq!(
        expected_while(&mut client, true).as_deref(),
        Some("00:05:00")
    );

    // A job of that name made later by a role that may not call dex_collect_all() is not the
    // schedule: with it, `stale` would wait a week. Once the role may call it, it is.
    client
        .batch_execute("CREATE ROLE scheduler LOGIN; GRANT USAGE ON SCHEMA cron TO scheduler")
        .unwrap();
    let mut scheduler = deployment.cluster.connect_as("scheduler", "dex").unwrap();
    scheduler
        .execute(
            "SELECT cron.schedule('dex_collect_all', '@weekly', 'SELECT 1')",
            &[],
        )
        .unwrap();
    assert_eq!(expected_interval(&mut client).as_deref(), Some("00:05:00"));
    client
        .batch_execute("GRANT EXECUTE ON FUNCTION dex_collect_all() TO scheduler")
        .unwrap();
    assert_eq!(expected_interval(&mut client).as_deref(), Some("7 days"));
    // Alone, such a job is still the schedule (its calls fail, and `stale` says so in time).
    client
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION dex_collect_all() FROM scheduler;
             SELECT dex_collector.unschedule();",
        )
        .unwrap();
    scheduler
        .execute(
            "SELECT cron.schedule('dex_collect_all', '*/10 * * * *', 'SELECT 1')",
            &[],
        )
        .unwrap();
    assert_eq!(expected_interval(&mut client).as_deref(), Some("00:10:00"));
    // But the worker's interval says more, whether such a job's schedule is shorter (`stale` for
    // good) or longer (never `stale`); and where a job whose role may call it has a schedule that
    // says nothing (not regular), the worker's interval says.
    for statement in [
        "LOAD 'dex_collector'",
        "ALTER SYSTEM SET dex_collector.interval = '15min'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || {
        expected_interval(&mut client).as_deref() == Some("00:15:00")
    }));
    client
        .execute("SELECT dex_collector.schedule('0 3 * * 1')", &[])
        .unwrap();
    assert_eq!(expected_interval(&mut client).as_deref(), Some("00:15:00"));
}

/// A company that stops being a target (its machines deactivated) is forgotten by the first run of
/// all companies a day after its last result: failing when it left, it would keep `health`
/// unhealthy for good. Its history stays. A targets query that finds no company forgets nothing.
#[test]
fn a_company_that_is_no_longer_a_target_is_forgotten_a_day_after_its_last_result() {
    let deployment = deployment(DeploymentOptions::default());
    let mut client = deployment.client();
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    for _ in 0..3 {
        deployment.collect_all();
    }
    let failing = |client: &mut postgres::Client| -> (i64, i64) {
        let row = client
            .query_one(
                "SELECT companies_failing, companies_ok + companies_failing + companies_skipped
                   FROM dex_collector.health",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(failing(&mut client), (1, 10));

    // A targets query that finds nothing is likelier broken than right: nothing is forgotten, even
    // a day after the companies' last results.
    client
        .batch_execute(
            "UPDATE dex_collector.companies SET last_attempt_at = last_attempt_at - interval '25 hours'",
        )
        .unwrap();
    client
        .batch_execute(
            "ALTER DATABASE dex SET dex_collector.targets_query =
                 'SELECT id AS company_id, company_name FROM public.companies WHERE false'",
        )
        .unwrap();
    let mut client = deployment.client();
    let summary = deployment.collect_all();
    assert_eq!(failing(&mut client), (1, 10));
    // And the run that found nothing failed: health, the metrics and the event say so.
    assert_eq!(summary["success"], false, "{summary}");
    assert_eq!(
        summary["error"],
        "the targets query found no company to collect"
    );
    let (healthy, last_run_status): (bool, String) = {
        let row = client
            .query_one(
                "SELECT healthy, last_run_status FROM dex_collector.health",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((healthy, last_run_status.as_str()), (false, "failed"));
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM dex_collector.events WHERE kind = 'run_failed'"
        ),
        1
    );
    client
        .batch_execute("ALTER DATABASE dex RESET dex_collector.targets_query")
        .unwrap();
    // A run of the usual targets: every company has a result again.
    deployment.collect_all();
    assert_eq!(failing(&mut client), (1, 10));

    let mut client = deployment.client();
    client
        .batch_execute(&format!(
            "UPDATE public.machines SET status = 'inactive' WHERE company_id = '{}'",
            sample::ACME
        ))
        .unwrap();
    deployment.collect_all();
    assert_eq!(
        failing(&mut client),
        (1, 10),
        "kept for a day after its last result"
    );
    client
        .batch_execute(&format!(
            "UPDATE dex_collector.companies SET last_attempt_at = last_attempt_at - interval '25 hours'
              WHERE company_id = '{}'",
            sample::ACME
        ))
        .unwrap();
    deployment.collect_all();
    assert_eq!(failing(&mut client), (0, 9));
    let forgotten: i64 = one(
        &mut client,
        &format!(
            "SELECT count(*) FROM dex_collector.company_status WHERE company_id = '{}'",
            sample::ACME
        ),
    );
    assert_eq!(forgotten, 0);
    let kept: i64 = one(
        &mut client,
        &format!(
            "SELECT count(*) FROM dex_collector.run_results WHERE company_id = '{}'",
            sample::ACME
        ),
    );
    assert!(kept >= 3, "its history stays: {kept}");
    let healthy: bool = one(&mut client, "SELECT healthy FROM dex_collector.health");
    assert!(healthy);
}

/// monitoring.md's history_size query, from a session that has not loaded the library (none is
/// preloaded here, and it calls no function of it): the retentions are the settings, or the
/// library's defaults where none is set.
#[test]
fn history_size_names_each_tables_retention_without_the_library() {
    let deployment = deployment(DeploymentOptions::default());
    let retentions = || -> Vec<(String, Option<String>)> {
        deployment
            .client()
            .query(
                "SELECT table_name, retention::text FROM dex_collector.history_size",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    };
    let named = |runs: &str| -> Vec<(String, Option<String>)> {
        [
            ("runs", Some(runs)),
            ("run_results", Some(runs)),
            ("events", Some("90 days")),
            ("daily_rollups", Some("400 days")),
            ("companies", None),
        ]
        .into_iter()
        .map(|(table, kept)| (table.to_string(), kept.map(str::to_string)))
        .collect()
    };
    assert_eq!(retentions(), named("14 days"));
    deployment
        .client()
        .batch_execute("ALTER DATABASE dex SET dex_collector.history_retention = '7d'")
        .unwrap();
    assert_eq!(retentions(), named("7 days"));
}

/// monitoring.md: events that a webhook with a URL has not been offered within 15 minutes (or
/// twice the run deadline) turn `health` unhealthy. Here no worker runs to offer them.
#[test]
fn events_no_one_offers_to_a_webhook_with_a_url_turn_health_unhealthy() {
    let deployment = deployment(DeploymentOptions::default());
    deployment.collect_all();
    let unsent = |client: &mut postgres::Client| -> (bool, i64, f64) {
        let row = client
            .query_one(
                "SELECT h.healthy, h.alerts_unsent, m.value
                   FROM dex_collector.health h, dex_collector.metrics m
                  WHERE m.metric = 'dex_collector_alerts_unsent'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    let mut client = deployment.client();
    let events: i64 = one(&mut client, "SELECT count(*) FROM dex_collector.events");
    assert_eq!(events, 2, "the two companies without credentials, skipped");
    client
        .batch_execute(
            "UPDATE dex_collector.events SET created_at = created_at - interval '16 minutes'",
        )
        .unwrap();
    assert_eq!(
        unsent(&mut client),
        (true, 0, 0.0),
        "without a URL they wait"
    );

    // A URL in (an imitation of) Vault: nothing offered them. A blank secret is no URL, as
    // for the worker.
    client
        .batch_execute(
            "CREATE SCHEMA vault;
             CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text);
             CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;
             INSERT INTO vault.secrets VALUES ('dex_collector_alert_url', ' ');",
        )
        .unwrap();
    assert_eq!(unsent(&mut client), (true, 0, 0.0));
    client
        .batch_execute("UPDATE vault.secrets SET secret = 'https://hooks.example.com/a'")
        .unwrap();
    assert_eq!(unsent(&mut client), (false, 2, 2.0));
    // The worker may take twice the run deadline; a number alone is milliseconds. As written
    // where the library is not loaded in the session, as the library shows it where it is.
    let deadlines = |client: &mut postgres::Client| {
        for (deadline, expected) in [("10min", 0), ("600000", 0), ("300000", 2), ("4min", 2)] {
            client
                .batch_execute(&format!("SET dex_collector.run_deadline = '{deadline}'"))
                .unwrap();
            assert_eq!(unsent(client).1, expected, "{deadline}");
        }
    };
    deadlines(&mut client);
    // A worker that delivered or gave up on an event in that time is working through a backlog.
    let first = "(SELECT min(id) FROM dex_collector.events)";
    for (change, expected) in [
        ("delivered_at = now() - interval '1 minute'", (true, 0, 0.0)),
        (
            "delivered_at = now() - interval '16 minutes'",
            (false, 1, 1.0),
        ),
        ("delivered_at = NULL, abandoned_at = now()", (false, 0, 0.0)),
        (
            "abandoned_at = now() - interval '16 minutes'",
            (false, 1, 1.0),
        ),
        // Behind one the receiver has not taken: alerts_undelivered counts that one.
        (
            "abandoned_at = NULL, delivery_attempts = 1",
            (false, 0, 0.0),
        ),
    ] {
        client
            .batch_execute(&format!(
                "UPDATE dex_collector.events SET {change} WHERE id = {first}"
            ))
            .unwrap();
        assert_eq!(unsent(&mut client), expected, "{change}");
    }
    client
        .batch_execute(&format!(
            "UPDATE dex_collector.events SET delivery_attempts = 0 WHERE id = {first}"
        ))
        .unwrap();

    // The setting instead, in every session once it has taken the reload.
    for statement in [
        "DELETE FROM vault.secrets",
        // ALTER SYSTEM checks the setting (on 15 and 16 it must know it), with the library.
        "LOAD 'dex_collector'",
        "ALTER SYSTEM SET dex_collector.alert_url = 'https://hooks.example.com/b'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || {
        unsent(&mut client) == (false, 2, 2.0)
    }));
    deadlines(&mut client);
    client
        .batch_execute("UPDATE dex_collector.events SET delivered_at = now() - interval '1 hour'")
        .unwrap();
    assert_eq!(unsent(&mut client), (true, 0, 0.0));
}

fn expected_interval(client: &mut postgres::Client) -> Option<String> {
    one(client, "SELECT dex_collector.expected_interval()::text")
}
