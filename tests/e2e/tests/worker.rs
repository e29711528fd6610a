//! The background worker, overlap control, the run deadline, history upkeep and the monitoring
//! views, end to end (pg_cron scheduling is in operations.rs).

use std::time::{Duration, Instant};

use dex_collector_e2e::cluster::TestCluster;
use dex_collector_e2e::deployment::{
    sample, server_major, sql_error, Deployment, DeploymentOptions,
};
use dex_collector_e2e::stand_in::{Behavior, StandInConfig};
use serde_json::Value;

fn with_worker(extra: &[(&str, &str)]) -> Deployment {
    let mut settings = vec![("dex_collector.database".to_string(), "dex".to_string())];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Deployment::start(DeploymentOptions {
        preload: true,
        settings,
        ..DeploymentOptions::default()
    })
    .unwrap()
}

/// Polls `sql` (one value) until `done` says so or `limit` passes; returns the last value.
fn wait_for<T: for<'a> postgres::types::FromSql<'a>>(
    cluster: &TestCluster,
    sql: &str,
    limit: Duration,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let value: T = cluster
            .connect()
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get(0);
        if done(&value) || started.elapsed() > limit {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls run `run_id`'s status until `done` says so or `limit` passes; returns the last one.
fn wait_for_run(
    cluster: &TestCluster,
    run_id: i64,
    limit: Duration,
    done: impl Fn(&String) -> bool,
) -> String {
    wait_for(
        cluster,
        &format!("SELECT status FROM dex_collector.runs WHERE id = {run_id}"),
        limit,
        done,
    )
}

/// Queues a run for the worker and waits at most `limit` for it to succeed; returns its id.
fn queue_run_until_succeeded(
    cluster: &TestCluster,
    client: &mut postgres::Client,
    limit: Duration,
) -> i64 {
    let run_id: i64 = client
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    let status = wait_for_run(cluster, run_id, limit, |s| s == "succeeded");
    assert_eq!(status, "succeeded");
    run_id
}

/// A deployment whose endpoint answers every company after `delay`.
fn answering_after(delay: Duration) -> Deployment {
    Deployment::start(DeploymentOptions {
        stand_in: StandInConfig {
            default_behavior: Behavior::Delay {
                delay,
                then: Box::new(Behavior::Synthetic),
            },
            ..StandInConfig::default()
        },
        ..DeploymentOptions::default()
    })
    .unwrap()
}

/// The worker's process id, once it runs.
fn running_worker(cluster: &TestCluster) -> i32 {
    wait_for::<Option<i32>>(
        cluster,
        "SELECT (SELECT pid FROM pg_stat_activity
                  WHERE backend_type = 'dex_collector' AND datname = 'dex')",
        Duration::from_secs(20),
        Option::is_some,
    )
    .expect("the worker runs")
}

/// Queues a run, waits until the worker `pid` shows `wait` (a column of `pg_stat_activity` and
/// its value), and terminates it there; returns the run's id.
fn queue_and_terminate_worker_waiting(
    cluster: &TestCluster,
    client: &mut postgres::Client,
    pid: i32,
    wait: (&str, &str),
) -> i64 {
    let run_id: i64 = client
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    let (column, value) = wait;
    let seen = wait_for::<Option<String>>(
        cluster,
        &format!("SELECT (SELECT {column} FROM pg_stat_activity WHERE pid = {pid})"),
        Duration::from_secs(20),
        |seen| seen.as_deref() == Some(value),
    );
    assert_eq!(seen.as_deref(), Some(value));
    client
        .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    run_id
}

/// Queues a run for the worker and waits until its requests wait on the endpoint (one that
/// hangs); returns the run's id.
fn queue_run_waiting_on_the_endpoint(deployment: &Deployment) -> i64 {
    let run_id: i64 = deployment
        .client()
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    assert!(
        deployment
            .stand_in
            .wait_for_requests(8, Duration::from_secs(20)),
        "the run is waiting on the endpoint"
    );
    run_id
}

fn worker_pid(cluster: &TestCluster) -> Option<i32> {
    cluster
        .connect()
        .unwrap()
        .query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'dex_collector' AND datname = 'dex'", &[])
        .unwrap()
        .map(|row| row.get(0))
}

#[test]
fn an_async_run_is_started_by_the_woken_worker() {
    let deployment = with_worker(&[]);
    let cluster = &deployment.cluster;
    let pid = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dex_collector' AND datname = 'dex'",
        Duration::from_secs(20),
        |n| *n == 1,
    );
    assert_eq!(pid, 1, "the worker shows in pg_stat_activity");
    let name: String = cluster
        .connect()
        .unwrap()
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE backend_type = 'dex_collector'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "dex_collector worker");

    let mut client = deployment.client();
    let queued_at = Instant::now();
    let run_id = queue_run_until_succeeded(cluster, &mut client, Duration::from_secs(30));
    // The worker idles 10 s between looks at the queue: starting sooner means it was woken.
    assert!(
        queued_at.elapsed() < Duration::from_secs(8),
        "the queued run waited {:?}",
        queued_at.elapsed()
    );
    let row = client
        .query_one(
            "SELECT trigger, companies_processed, companies_succeeded,
                    (SELECT count(*) FROM dex_collector.run_results WHERE run_id = r.id)
               FROM dex_collector.runs r WHERE id = $1",
            &[&run_id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "async");
    assert_eq!(row.get::<_, i32>(1), 8);
    assert_eq!(row.get::<_, i32>(2), 8);
    assert_eq!(row.get::<_, i64>(3), 10);

    // Again right after that run, when the worker has just begun its 10 s wait: the first could
    // have been queued near the end of one, where the worker's own look would start it as soon.
    let queued_at = Instant::now();
    queue_run_until_succeeded(cluster, &mut client, Duration::from_secs(30));
    assert!(
        queued_at.elapsed() < Duration::from_secs(5),
        "the second queued run waited {:?}",
        queued_at.elapsed()
    );
}

#[test]
fn the_worker_runs_on_its_interval_after_a_reload_and_comes_back_when_terminated() {
    let deployment = with_worker(&[]);
    let cluster = &deployment.cluster;
    let first_pid = {
        wait_for::<i64>(
            cluster,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dex_collector' AND datname = 'dex'",
            Duration::from_secs(20),
            |n| *n == 1,
        );
        worker_pid(cluster).expect("the worker runs")
    };
    let mut client = deployment.client();
    client.batch_execute("LOAD 'dex_collector'").unwrap();
    client
        .batch_execute("ALTER SYSTEM SET dex_collector.interval = '1s'")
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    let worker_runs = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'succeeded'",
        Duration::from_secs(30),
        |n| *n >= 2,
    );
    assert!(
        worker_runs >= 2,
        "interval runs happen after SIGHUP: {worker_runs}"
    );

    client
        .batch_execute(&format!("SELECT pg_terminate_backend({first_pid})"))
        .unwrap();
    let started = Instant::now();
    let mut second_pid = None;
    while started.elapsed() < Duration::from_secs(30) {
        second_pid = worker_pid(cluster).filter(|pid| *pid != first_pid);
        if second_pid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        second_pid.is_some(),
        "the postmaster restarts a terminated worker"
    );
    let before: i64 = client
        .query_one(
            "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker'",
            &[],
        )
        .unwrap()
        .get(0);
    let after = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker'",
        Duration::from_secs(30),
        |n| *n > before,
    );
    assert!(
        after > before,
        "the restarted worker keeps running interval collections"
    );
    let stuck: i64 = client.query_one("SELECT count(*) FROM dex_collector.runs WHERE status = 'running' AND started_at < now() - interval '20 s'", &[]).unwrap().get(0);
    assert_eq!(stuck, 0);
}

#[test]
fn a_fast_restart_during_a_slow_run_is_quick_and_leaves_the_run_interrupted() {
    let deployment = with_worker(&[]);
    deployment.stand_in.set_default_behavior(Behavior::Hang);
    let cluster = &deployment.cluster;
    wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dex_collector' AND datname = 'dex'",
        Duration::from_secs(20),
        |n| *n == 1,
    );
    let run_id = queue_run_waiting_on_the_endpoint(&deployment);
    let restart = Instant::now();
    cluster.restart("fast").unwrap();
    let took = restart.elapsed();
    eprintln!("pg_ctl restart -m fast during a run took {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "a fast restart waited {took:?} on the run"
    );
    let status = wait_for_run(cluster, run_id, Duration::from_secs(20), |s| {
        s == "interrupted"
    });
    assert_eq!(status, "interrupted");
    assert!(
        !cluster.log_contents().contains("terminated by signal"),
        "no backend crashed"
    );
}

#[test]
fn a_shutdown_that_meets_a_batch_write_still_records_the_run_as_interrupted() {
    let deployment = with_worker(&[
        ("dex_collector.history_detail", "all"),
        ("dex_collector.concurrency", "2"),
    ]);
    // Answers 2 s apart, two at a time: the run writes its results in batches while it calls.
    deployment.stand_in.set_default_behavior(Behavior::Delay {
        delay: Duration::from_secs(2),
        then: Box::new(Behavior::Synthetic),
    });
    let cluster = &deployment.cluster;
    let worker = running_worker(cluster);
    // Each batch of results takes 3 s to write: the shutdown's query cancel, meant for a
    // statement that waits, meets a write made while the run calls.
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE FUNCTION public.slow_write() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
             CREATE TRIGGER slow_write AFTER INSERT ON dex_collector.run_results
               FOR EACH STATEMENT EXECUTE FUNCTION public.slow_write();",
        )
        .unwrap();
    let run_id =
        queue_and_terminate_worker_waiting(cluster, &mut client, worker, ("wait_event", "PgSleep"));
    let status = wait_for_run(cluster, run_id, Duration::from_secs(30), |s| s != "running");
    assert_eq!(status, "interrupted", "{}", cluster.log_contents());
    let failed_events: i64 = client
        .query_one(
            "SELECT count(*) FROM dex_collector.events WHERE kind = 'run_failed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(failed_events, 0);
}

#[test]
fn a_terminated_worker_stops_in_the_middle_of_a_statement() {
    let deployment = with_worker(&[]);
    let cluster = &deployment.cluster;
    let worker = running_worker(cluster);
    // A migration holds a lock on a table the targets query reads: the worker's run waits for it
    // (up to its run deadline, 4 minutes).
    let mut migration = deployment.client();
    migration
        .batch_execute("BEGIN; LOCK TABLE public.machines IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut client = deployment.client();
    let run_id = queue_and_terminate_worker_waiting(
        cluster,
        &mut client,
        worker,
        ("wait_event_type", "Lock"),
    );
    let gone = wait_for::<i64>(
        cluster,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {worker}"),
        Duration::from_secs(20),
        |n| *n == 0,
    );
    assert_eq!(gone, 0, "the worker still waits for the lock");
    // Started again by the postmaster, it marks the run it left.
    let status = wait_for_run(cluster, run_id, Duration::from_secs(30), |s| {
        s == "interrupted"
    });
    assert_eq!(status, "interrupted");
    migration.batch_execute("ROLLBACK").unwrap();
    let log = cluster.log_contents();
    assert!(log.contains("dex_collector worker stopping"), "{log}");
    assert!(!log.contains("canceling statement"), "{log}");
}

#[test]
fn two_calls_at_once_run_once_and_the_other_is_skipped() {
    let deployment = answering_after(Duration::from_millis(800));
    let mut first = deployment.client();
    let mut second = deployment.client();
    let running = std::thread::spawn(move || {
        first
            .query_one("SELECT dex_collect_all()", &[])
            .unwrap()
            .get::<_, Value>(0)
    });
    assert!(deployment
        .stand_in
        .wait_for_requests(1, Duration::from_secs(20)));
    let skipped: Value = second
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    let ran = running.join().unwrap();

    assert_eq!(skipped["success"], false);
    assert_eq!(skipped["skipped"], true);
    assert_eq!(skipped["reason"], "a collection run is already in progress");
    assert_eq!(skipped["run_id"], ran["run_id"]);
    assert_eq!(ran["companiesProcessed"], 8);
    assert_eq!(
        deployment.stand_in.requests().len(),
        8,
        "each company was called once"
    );
    let statuses: Vec<(String, Option<String>)> = second
        .query(
            "SELECT status, error FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&("succeeded".to_string(), None)));
    let expected = format!(
        "a collection run is already in progress (run {})",
        ran["run_id"]
    );
    assert!(
        statuses.contains(&("skipped".to_string(), Some(expected))),
        "{statuses:?}"
    );
}

/// A queued run the worker takes up while a SQL call's transaction holds the run lock is skipped,
/// as a second SQL call would be, naming the run in progress; it is not run later.
#[test]
fn a_queued_run_meeting_a_run_in_progress_is_skipped_for_good() {
    let deployment = with_worker(&[]);
    let mut holder = deployment.client();
    holder.batch_execute("BEGIN").unwrap();
    let held: Value = holder
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    let mut client = deployment.client();
    let queued: i64 = client
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    // Claimed (`running`, committed) before the worker tries the run lock.
    let status = wait_for_run(&deployment.cluster, queued, Duration::from_secs(20), |s| {
        s != "queued" && s != "running"
    });
    assert_eq!(status, "skipped");
    holder.batch_execute("COMMIT").unwrap();
    // Woken by the commit and looking again every 10 s, the worker runs nothing more.
    std::thread::sleep(Duration::from_secs(11));
    let runs: Vec<(i64, String, Option<String>)> = client
        .query(
            "SELECT id, status, error FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let held = held["run_id"].as_i64().unwrap();
    assert_eq!(
        runs,
        [
            (held, "succeeded".to_string(), None),
            (
                queued,
                "skipped".to_string(),
                Some(format!(
                    "a collection run is already in progress (run {held})"
                ))
            ),
        ]
    );
    assert_eq!(deployment.stand_in.requests().len(), 8);
}

#[test]
fn the_run_deadline_cancels_requests_in_flight_and_skips_the_rest() {
    let deployment = answering_after(Duration::from_secs(5))
        .expect_warnings(&["reached dex_collector.run_deadline"]);
    let mut client = deployment.client();
    client
        .batch_execute("SET dex_collector.run_deadline = '1s'; SET dex_collector.concurrency = 2")
        .unwrap();
    let started = Instant::now();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the run ended near its deadline, not after 5 s answers"
    );
    assert_eq!(summary["success"], true);
    assert_eq!(summary["companiesProcessed"], 2, "{summary}");
    for result in summary["results"].as_array().unwrap() {
        assert_eq!(result["success"], false);
        assert!(
            result["error"].as_str().unwrap().contains("run deadline"),
            "{result}"
        );
    }
    let deadline_skips = summary["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "deadline")
        .count();
    assert_eq!(deadline_skips, 6);
    assert_eq!(
        deployment.stand_in.requests().len(),
        2,
        "no company is started past the deadline"
    );
}

/// A call of 8 companies, 2 at a time, to an endpoint answering after 5 s, stopped for a timeout
/// of a few seconds: the 2 called were cut short, the others not reached, and the run recorded.
fn assert_stopped_in_time_and_recorded(summary: &Value, client: &mut postgres::Client) {
    assert_eq!(summary["companiesProcessed"], 2, "{summary}");
    assert_eq!(summary["companiesNotReached"], 6, "{summary}");
    let runs: i64 = client
        .query_one("SELECT count(*) FROM dex_collector.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

#[test]
fn a_call_stops_in_time_for_its_statement_timeout_and_keeps_its_history() {
    let deployment = answering_after(Duration::from_secs(5))
        .expect_warnings(&["to finish before statement_timeout (3s) cancels the call"]);
    let mut client = deployment.client();
    client
        .batch_execute("SET dex_collector.concurrency = 2; SET statement_timeout = '3s'")
        .unwrap();
    // A tenth of what is left, at least a second, is kept to record the end: the calls stop at
    // about 2 s, and the call returns where it would have been cancelled with its history.
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_stopped_in_time_and_recorded(&summary, &mut client);
    assert!(deployment
        .cluster
        .log_contents()
        .contains("HINT:  The next run calls the companies left out first. To reach every company in one run, raise dex_collector.concurrency (now 2) or statement_timeout for the role that calls it"));

    // Too little left to collect: refused before any request or history. The call is the second
    // statement of its string: its timer, and the timeout its message names, start with it.
    client
        .batch_execute("SET statement_timeout = '1500ms'")
        .unwrap();
    let (state, message, hint) =
        sql_error(client.batch_execute("SELECT pg_sleep(1); SELECT dex_collect_all()"));
    assert_eq!(state, "22023");
    assert_eq!(
        message,
        "statement_timeout (1500ms) leaves this call too little time to collect: it would be cancelled, and its history lost"
    );
    assert!(hint.unwrap().contains("dex_collect_all_async()"));
    assert_eq!(deployment.stand_in.requests().len(), 2);
    let runs: i64 = client
        .query_one("SELECT count(*) FROM dex_collector.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

/// PostgreSQL 17's transaction timer starts with the transaction and keeps its length: a
/// `SET transaction_timeout` inside the transaction does not move it, so the call stops for the
/// timer, not for the setting.
#[test]
fn a_call_stops_in_time_for_the_transaction_timer_a_later_set_does_not_move() {
    let deployment = answering_after(Duration::from_secs(5))
        .expect_warnings(&["to finish before transaction_timeout (4s) cancels the call"]);
    let mut client = deployment.client();
    if server_major(&mut client) < 17 {
        return;
    }
    client
        .batch_execute("SET dex_collector.concurrency = 2; SET transaction_timeout = '4s'")
        .unwrap();
    let mut transaction = client.transaction().unwrap();
    transaction
        .batch_execute("SET LOCAL transaction_timeout = '5min'")
        .unwrap();
    let summary: Value = transaction
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    transaction.commit().unwrap();
    assert_stopped_in_time_and_recorded(&summary, &mut client);
}

#[test]
fn retention_deletes_only_old_history() {
    let deployment = with_worker(&[]);
    let mut client = deployment.client();
    client
        .batch_execute(&format!(
            "INSERT INTO dex_collector.runs (started_at, finished_at, status, trigger)
             SELECT now() - make_interval(days => d), now() - make_interval(days => d), 'succeeded', 'manual'
               FROM generate_series(1, 60) AS d;
             INSERT INTO dex_collector.run_results (run_id, company_id, company_name, status)
             SELECT id, '{acme}', 'Acme Vending', 'succeeded' FROM dex_collector.runs;
             INSERT INTO dex_collector.events (kind, company_id, created_at)
             SELECT 'failing', '{acme}', now() - make_interval(days => d)
               FROM generate_series(1, 120) AS d;
             INSERT INTO dex_collector.daily_rollups (day, company_id, duration_histogram)
             SELECT (now() AT TIME ZONE 'UTC')::date - d, '{acme}', array_fill(0, ARRAY[60])
               FROM generate_series(1, 500) AS d;",
            acme = sample::ACME
        ))
        .unwrap();
    // The worker's first sweep runs at its start; restart it to have one now.
    client
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'dex_collector'")
        .unwrap();
    let remaining = wait_for::<i64>(
        &deployment.cluster,
        "SELECT count(*) FROM dex_collector.runs",
        Duration::from_secs(30),
        |n| *n == 13,
    );
    assert_eq!(remaining, 13, "runs started 1 to 13 days ago are kept");
    // Events for dex_collector.event_retention (90 days), rollups for rollup_retention (400).
    let kept = wait_for::<String>(
        &deployment.cluster,
        "SELECT format('%s %s', (SELECT count(*) FROM dex_collector.events),
                                (SELECT count(*) FROM dex_collector.daily_rollups))",
        Duration::from_secs(30),
        |kept| kept == "89 400",
    );
    assert_eq!(kept, "89 400");
    let oldest_kept: i64 = client
        .query_one(
            "SELECT max(extract(day FROM now() - started_at))::bigint FROM dex_collector.runs",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(oldest_kept <= 14);
    let orphans: i64 = client
        .query_one("SELECT count(*) FROM dex_collector.run_results rr WHERE NOT EXISTS (SELECT 1 FROM dex_collector.runs r WHERE r.id = rr.run_id)", &[])
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
}

/// Runs that the deadline cuts short, one after another, are said as any problem of the worker's:
/// once, not at every run while it lasts (each run's row says it, and the episode's event).
#[test]
fn the_worker_says_once_that_its_runs_reach_the_deadline() {
    let deployment = with_worker(&[
        ("dex_collector.run_deadline", "1s"),
        ("dex_collector.concurrency", "1"),
    ])
    .expect_warnings(&["reached dex_collector.run_deadline"]);
    deployment.stand_in.set_latency(Duration::from_millis(400));
    let mut client = deployment.client();
    for _ in 0..2 {
        queue_run_until_succeeded(&deployment.cluster, &mut client, Duration::from_secs(30));
    }
    let cut_short: String = client
        .query_one(
            "SELECT format('%s runs, %s event',
                           (SELECT count(*) FROM dex_collector.runs WHERE companies_not_reached > 0),
                           (SELECT count(*) FROM dex_collector.events WHERE kind = 'run_cut_short'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cut_short, "2 runs, 1 event");
    let log = deployment.cluster.log_contents();
    let said: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("reached dex_collector.run_deadline"))
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("dex_collector worker: dex_collector run ")
            && said[0].contains("The next run calls the companies left out first."),
        "{}",
        said[0]
    );
}

/// A backlog of old history (a retention shortened on a large history, a worker off for weeks)
/// is deleted a few seconds a cycle, so that a queued run does not wait until it is gone.
#[test]
fn a_backlog_of_old_history_is_deleted_between_runs() {
    let deployment = with_worker(&[]);
    let mut client = deployment.client();
    const OLD: &str = "SELECT count(*) FROM dex_collector.daily_rollups
                        WHERE day < (now() AT TIME ZONE 'UTC')::date - 400";
    // 20,000 rows past rollup_retention, deleted 5,000 a batch, each batch at least 2 s whatever
    // the machine: more than one 5 s slice.
    client
        .batch_execute(
            "INSERT INTO dex_collector.daily_rollups (day, company_id, duration_histogram)
             SELECT (now() AT TIME ZONE 'UTC')::date - 401 - i % 1000,
                    ('a0000000-0000-4000-9000-' || lpad((i / 1000)::text, 12, '0'))::uuid,
                    array_fill(0::smallint, ARRAY[60])
               FROM generate_series(0, 19999) AS i;
             CREATE FUNCTION public.slow_batch() RETURNS trigger LANGUAGE plpgsql
                 AS $$BEGIN PERFORM pg_sleep(2); RETURN NULL; END$$;
             CREATE TRIGGER slow_batch BEFORE DELETE ON dex_collector.daily_rollups
                 FOR EACH STATEMENT EXECUTE FUNCTION public.slow_batch();",
        )
        .unwrap();
    // The worker's first sweep runs at its start; restart it to have one now.
    client
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'dex_collector'")
        .unwrap();
    let deleting = Instant::now();
    let left = wait_for::<i64>(&deployment.cluster, OLD, Duration::from_secs(30), |n| {
        *n < 20_000
    });
    assert!(left < 20_000, "the worker began deleting");
    queue_run_until_succeeded(&deployment.cluster, &mut client, Duration::from_secs(60));
    let left: i64 = client.query_one(OLD, &[]).unwrap().get(0);
    assert!(
        left > 0,
        "the run waited for the whole backlog: it ended {:?} after the deletion began",
        deleting.elapsed()
    );
    let left = wait_for::<i64>(&deployment.cluster, OLD, Duration::from_secs(120), |n| {
        *n == 0
    });
    assert_eq!(left, 0, "the next cycles deleted the rest");
}

#[test]
fn without_preloading_an_async_run_is_refused_with_how_to_turn_the_worker_on() {
    let deployment = Deployment::start(DeploymentOptions {
        configure: false,
        ..DeploymentOptions::default()
    })
    .unwrap();
    let mut client = deployment.client();
    client
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    let (state, message, hint) = sql_error(client.query_one("SELECT dex_collect_all_async()", &[]));
    assert_eq!(state, "55000", "{message}");
    assert!(
        message.contains("the dex_collector background worker is off"),
        "{message}"
    );
    let hint = hint.unwrap_or_default();
    assert!(
        hint.contains("shared_preload_libraries = 'dex_collector'"),
        "{hint}"
    );
    let queued: i64 = client
        .query_one("SELECT count(*) FROM dex_collector.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "nothing is left queued");
}

#[test]
fn the_views_show_health_at_a_glance() {
    let deployment = deployment_default();
    deployment
        .stand_in
        .set_behavior(sample::BETA, Behavior::ServerError);
    deployment.collect_all();
    deployment.collect_all();
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    deployment.collect_all();
    let mut client = deployment.client();
    let mut status = |id: &str| {
        client
            .query_one(
                "SELECT last_status, consecutive_failures, last_error, last_success_at IS NOT NULL
                   FROM dex_collector.company_status WHERE company_id = $1::text::uuid",
                &[&id],
            )
            .unwrap()
    };
    let beta = status(sample::BETA);
    assert_eq!(beta.get::<_, String>(0), "failed");
    assert_eq!(beta.get::<_, i64>(1), 3);
    assert_eq!(
        beta.get::<_, Option<String>>(2).as_deref(),
        Some("HTTP 500: Internal error: db timeout")
    );
    assert!(!beta.get::<_, bool>(3));
    let acme = status(sample::ACME);
    assert_eq!(acme.get::<_, i64>(1), 1);
    assert!(acme.get::<_, bool>(3));
    assert_eq!(status(sample::HARBOR).get::<_, i64>(1), 0);
    let summary = client
        .query(
            "SELECT run_id, companies_failed, success_pct::float8 FROM dex_collector.run_summary",
            &[],
        )
        .unwrap();
    assert_eq!(summary.len(), 3);
    assert_eq!(summary[0].get::<_, i32>(1), 2, "newest first");
    assert_eq!(summary[0].get::<_, f64>(2), 75.0);
}

fn deployment_default() -> Deployment {
    Deployment::start(DeploymentOptions::default()).unwrap()
}

#[test]
fn the_worker_survives_bad_settings_and_endpoint_outages() {
    let deployment = with_worker(&[("dex_collector.interval", "1s")])
        .expect_warnings(&["the run could not start: dex_collector.targets_query failed"]);
    let cluster = &deployment.cluster;
    let mut client = deployment.client();
    let worked = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'succeeded'",
        Duration::from_secs(30),
        |n| *n >= 1,
    );
    assert!(worked >= 1, "the worker runs on its interval");
    let first_pid = worker_pid(cluster).expect("the worker runs");
    client
        .batch_execute("ALTER DATABASE dex SET dex_collector.targets_query = 'SELEC broken'")
        .unwrap();
    // PostgreSQL applies a database's settings when a session connects: the worker sees them
    // change and starts again to take them.
    let failed = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'failed'
            AND error LIKE '%dex_collector.targets_query failed%'",
        Duration::from_secs(40),
        |n| *n >= 2,
    );
    assert!(
        failed >= 2,
        "bad settings fail runs, not the worker: {failed}"
    );
    assert_ne!(
        worker_pid(cluster),
        Some(first_pid),
        "the worker started again"
    );
    assert!(cluster
        .log_contents()
        .contains("the dex_collector settings of database \"dex\" changed"));

    // Taken back: the worker starts again with the setting gone.
    deployment
        .stand_in
        .set_default_behavior(Behavior::CloseWithoutAnswer);
    client
        .batch_execute("ALTER DATABASE dex RESET dex_collector.targets_query")
        .unwrap();
    let outage_runs = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'succeeded' AND companies_failed = 8",
        Duration::from_secs(60),
        |n| *n >= 1,
    );
    assert!(
        outage_runs >= 1,
        "an endpoint outage is recorded company by company"
    );
    deployment
        .stand_in
        .set_default_behavior(Behavior::Synthetic);
    let healthy = wait_for::<i64>(
        cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'succeeded' AND companies_succeeded = 8",
        Duration::from_secs(60),
        |n| *n >= 1,
    );
    assert!(healthy >= 1, "the worker recovers by itself");
}

#[test]
fn a_batch_the_worker_could_not_write_is_written_with_the_runs_end() {
    let deployment = with_worker(&[]).expect_warnings(&["its results could not be recorded"]);
    let cluster = &deployment.cluster;
    let mut client = deployment.client();
    // The first statement that writes results fails (a cancel while the worker wrote, say); the
    // ones after it do not.
    client
        .batch_execute(
            "CREATE SEQUENCE public.result_writes;
             CREATE FUNCTION public.fail_the_first_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('public.result_writes') = 1 THEN
                     RAISE EXCEPTION 'the disk is full (a test)';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER fail_the_first_write AFTER INSERT ON dex_collector.run_results
                 FOR EACH STATEMENT EXECUTE FUNCTION public.fail_the_first_write();",
        )
        .unwrap();
    // One company answers after 5 s: the other results (seven collected, two skipped for want of
    // credentials) are written a second in, and that write fails.
    deployment.stand_in.set_behavior(
        sample::ACME,
        Behavior::Delay {
            delay: Duration::from_secs(5),
            then: Box::new(Behavior::Synthetic),
        },
    );
    let run_id: i64 = client
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    let status = wait_for_run(cluster, run_id, Duration::from_secs(30), |status| {
        status != "queued" && status != "running"
    });
    // The run stopped calling the endpoint (the slow company cut short, never recorded), and
    // wrote the batch that had failed with its end: its counts are those of the results recorded.
    assert_eq!(status, "failed");
    let run = client
        .query_one(
            "SELECT error, companies_processed, companies_succeeded, companies_skipped,
                    (SELECT count(*) FROM dex_collector.run_results WHERE run_id = r.id)
               FROM dex_collector.runs r WHERE id = $1",
            &[&run_id],
        )
        .unwrap();
    let error: String = run.get(0);
    assert!(
        error.contains("its results could not be recorded") && error.contains("the disk is full"),
        "{error}"
    );
    assert_eq!(
        (
            run.get::<_, i32>(1),
            run.get::<_, i32>(2),
            run.get::<_, i32>(3)
        ),
        (7, 7, 2)
    );
    assert_eq!(run.get::<_, i64>(4), 9);
}

#[test]
fn an_idle_queue_is_no_error_and_logs_nothing() {
    let deployment = with_worker(&[("dex_collector.interval", "1s")]);
    let runs: i64 = wait_for(
        &deployment.cluster,
        "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'worker' AND status = 'succeeded'",
        Duration::from_secs(30),
        |&runs: &i64| runs >= 3,
    );
    assert!(runs >= 3, "the worker ran on its interval: {runs} run(s)");
    let log = deployment.cluster.log_contents();
    assert!(
        !log.contains("could not record the run") && !log.contains("SpiTupleTable"),
        "an empty queue was logged as an error:\n{log}"
    );
}

#[test]
fn a_run_cut_by_a_crash_counts_the_results_it_recorded() {
    let deployment = with_worker(&[]);
    // Six companies answer at once and are committed within a second, in a batch of their own,
    // while two never answer.
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::Hang);
    deployment
        .stand_in
        .set_behavior(sample::BETA, Behavior::Hang);
    let cluster = &deployment.cluster;
    let run_id: i64 = deployment
        .client()
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap()
        .get(0);
    let recorded = wait_for::<i64>(
        cluster,
        &format!(
            "SELECT count(*) FROM dex_collector.run_results WHERE run_id = {run_id} AND status = 'succeeded'"
        ),
        Duration::from_secs(20),
        |n| *n == 6,
    );
    assert_eq!(recorded, 6, "six companies committed before the crash");
    cluster.restart("immediate").unwrap();
    let status = wait_for_run(cluster, run_id, Duration::from_secs(20), |s| {
        s == "interrupted"
    });
    assert_eq!(status, "interrupted");
    let row = deployment
        .client()
        .query_one(
            &format!(
                "SELECT r.companies_processed, r.companies_succeeded, r.records_collected,
                        r.duration_ms IS NOT NULL AND r.duration_ms >= 0,
                        (SELECT sum(records_collected)::bigint FROM dex_collector.run_results WHERE run_id = r.id)
                   FROM dex_collector.runs r WHERE r.id = {run_id}"
            ),
            &[],
        )
        .unwrap();
    let (processed, succeeded, records, has_duration, recorded_records): (
        i32,
        i32,
        i64,
        bool,
        Option<i64>,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!((processed, succeeded), (6, 6));
    assert!(has_duration);
    assert_eq!(Some(records), recorded_records);
    assert!(records > 0);
}

#[test]
fn the_rows_the_worker_writes_reach_the_statistics_autovacuum_reads() {
    let deployment = with_worker(&[]);
    let cluster = &deployment.cluster;
    running_worker(cluster);
    let mut client = deployment.client();
    queue_run_until_succeeded(cluster, &mut client, Duration::from_secs(30));
    // The run's row is updated and the companies' states are inserted by the worker alone, which
    // goes on running: a backend's counts reach the shared statistics only when it reports them.
    let counted = wait_for::<Vec<i64>>(
        cluster,
        "SELECT ARRAY[(SELECT n_tup_upd FROM pg_stat_user_tables
                        WHERE relid = 'dex_collector.runs'::regclass),
                      (SELECT n_tup_ins FROM pg_stat_user_tables
                        WHERE relid = 'dex_collector.companies'::regclass)]",
        Duration::from_secs(10),
        |counts| counts[0] > 0 && counts[1] >= 8,
    );
    assert!(counted[0] > 0 && counted[1] >= 8, "{counted:?}");
    assert_eq!(worker_pid(cluster), Some(running_worker(cluster)));
}

#[test]
fn a_shutdown_does_not_wait_for_a_synchronous_standby_that_is_down() {
    let deployment = with_worker(&[]).expect_warnings(&[
        // The shutdown's query cancel ends the worker's one wait, as PostgreSQL says.
        "canceling wait for synchronous replication",
    ]);
    let cluster = &deployment.cluster;
    let worker = running_worker(cluster);
    let mut client = deployment.client();
    // Every commit now waits for a standby that never comes, but this session's.
    for statement in [
        "ALTER SYSTEM SET synchronous_standby_names = 'standby_that_is_down'",
        "SELECT pg_reload_conf()",
        "SET synchronous_commit = local",
    ] {
        client.batch_execute(statement).unwrap();
    }
    client
        .query_one("SELECT dex_collect_all_async()", &[])
        .unwrap();
    let waiting = wait_for::<Option<String>>(
        cluster,
        &format!("SELECT (SELECT wait_event FROM pg_stat_activity WHERE pid = {worker})"),
        Duration::from_secs(20),
        |seen| seen.as_deref() == Some("SyncRep"),
    );
    assert_eq!(waiting.as_deref(), Some("SyncRep"));
    drop(client);
    // pg_ctl waits up to a minute: the worker's commits after the one its SIGTERM freed would
    // each wait for the standby, and the shutdown with them.
    let stopping = Instant::now();
    let stopped = cluster.stop_server();
    assert!(
        stopped.is_ok(),
        "after {:?}: {stopped:?}",
        stopping.elapsed()
    );
    cluster.start_again().unwrap();
    let mut client = deployment.client();
    for statement in [
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).unwrap();
    }
}

#[test]
fn a_run_ends_with_the_postmaster_so_that_the_server_can_start_again() {
    let deployment = with_worker(&[]);
    deployment.stand_in.set_default_behavior(Behavior::Hang);
    let cluster = &deployment.cluster;
    let worker = running_worker(cluster);
    let run_id = queue_run_waiting_on_the_endpoint(&deployment);
    // The postmaster dies (the OOM killer, say) while the run waits on the endpoint.
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &postmaster])
        .status()
        .unwrap();
    assert!(killed.success());
    // The worker ends within a moment, not at the run's deadline, 4 minutes on: while it is
    // attached to the old server's shared memory, no new server starts.
    let started = Instant::now();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{worker}/status"))
            .is_ok_and(|status| !status.lines().any(|line| line.starts_with("State:\tZ")))
    };
    while alive() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(), "the worker {worker} still runs");
    // Where nothing reaps the killed postmaster (a container's init may not), it stays a zombie
    // that PostgreSQL takes for a running server: its lock files go, as an operator would remove
    // them. What a lingering worker would hold is the shared memory, which the start checks.
    let data_dir = cluster.data_dir();
    std::fs::remove_file(data_dir.join("postmaster.pid")).unwrap();
    let socket_dir = data_dir.parent().unwrap();
    for entry in std::fs::read_dir(socket_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".s.PGSQL.") && name.ends_with(".lock") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    cluster.start_again().unwrap();
    let status = wait_for_run(cluster, run_id, Duration::from_secs(20), |s| {
        s == "interrupted"
    });
    assert_eq!(status, "interrupted");
}
