//! Production operations, end to end: locks that cannot outlive their run, history through
//! pg_dump and restore, pg_upgrade, pg_cron jobs through DROP EXTENSION, a hot standby and its
//! promotion, and a worker whose database or extension is missing.

use std::collections::HashSet;
use std::time::Duration;

use dex_collector_e2e::cluster::{ClusterOptions, TestCluster};
use dex_collector_e2e::deployment::{
    one, sample, sql_error, wait_until, Deployment, DeploymentOptions,
};
use dex_collector_e2e::readme;
use dex_collector_e2e::stand_in::{Behavior, StandInConfig};
use serde_json::Value;

/// The run lock's two advisory keys ('DEXC', 'DEXD'), as `src/lock.rs` takes them (in its own
/// space, not SQL's).
const RUN_LOCK: i32 = 0x4445_5843;
const RUN_ID_LOCK: i32 = 0x4445_5844;

fn with_worker(extra: &[(&str, &str)], default_behavior: Behavior) -> Deployment {
    let mut settings = vec![("dex_collector.database".to_string(), "dex".to_string())];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Deployment::start(DeploymentOptions {
        preload: true,
        settings,
        stand_in: StandInConfig {
            default_behavior,
            ..StandInConfig::default()
        },
        ..DeploymentOptions::default()
    })
    .unwrap()
}

fn worker_ready(cluster: &TestCluster) -> bool {
    wait_until(Duration::from_secs(30), || {
        cluster
            .log_contents()
            .contains("dex_collector worker started in database dex")
    })
}

#[test]
fn a_worker_run_that_loses_its_history_stops_calling_and_leaves_no_lock_behind() {
    let deployment = with_worker(
        &[("dex_collector.concurrency", "1")],
        Behavior::Delay {
            delay: Duration::from_millis(700),
            then: Box::new(Behavior::Synthetic),
        },
    )
    .expect_warnings(&[
        "stopped calling the endpoint: its results could not be recorded",
        // The batch that could not be written, tried again at the run's end: the history is gone.
        "results could not be recorded: dex_collector's transaction failed",
        "could not record the end of run",
        "could not mark run",
    ]);
    let cluster = &deployment.cluster;
    assert!(worker_ready(cluster));
    let mut client = deployment.client();
    let _: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    assert!(deployment
        .stand_in
        .wait_for_requests(2, Duration::from_secs(20)));
    // Any failure of the run's bookkeeping does it; dropping the history mid-run is the plainest.
    client
        .batch_execute("DROP EXTENSION dex_collector")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after_drop = deployment.stand_in.request_count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        deployment.stand_in.request_count(),
        after_drop,
        "the run stopped calling the endpoint once it could not record a result"
    );
    assert!(
        after_drop < 8,
        "{after_drop} requests: the run went on after the drop"
    );

    client
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    let summary: Value = one(&mut deployment.client(), "SELECT dex_collect_all()");
    assert_eq!(summary["success"], true, "no lock left behind: {summary}");
    assert_eq!(summary["successfulCollections"], 8, "{summary}");

    // The worker goes on too: it waited for the extension and runs the next queued run.
    let run_id: i64 = one(&mut deployment.client(), "SELECT dex_collect_all_async()");
    assert!(wait_until(Duration::from_secs(40), || {
        let status: Option<String> = deployment
            .client()
            .query_one(
                "SELECT status FROM dex_collector.runs WHERE id = $1",
                &[&run_id],
            )
            .unwrap()
            .get(0);
        status.as_deref() == Some("succeeded")
    }));
    let log = cluster.log_contents();
    assert!(
        log.contains("waiting for CREATE EXTENSION dex_collector"),
        "{log}"
    );
}

/// src/lock.rs: the run lock is in a space of its own, which no SQL function can take. A role
/// holding advisory locks on the same keys, in both of SQL's forms, holds no run back; a run's
/// lock is where operations.md says to look for it, before and after it names its run.
#[test]
fn advisory_locks_taken_in_sql_never_hold_runs_back() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    let first = deployment.collect_all();
    let first_run = first["run_id"].as_i64().unwrap();
    let mut client = deployment.client();
    client.batch_execute("CREATE ROLE app_user LOGIN").unwrap();
    let mut app = deployment.cluster.connect_as("app_user", "dex").unwrap();
    let run_lock = i64::from(RUN_LOCK);
    app.execute(
        "SELECT pg_advisory_lock($1::int4, 0), pg_advisory_lock($2::int4, $3::int4),
                pg_advisory_lock($4::int8 << 32), pg_advisory_lock($4::int8)",
        &[
            &RUN_LOCK,
            &RUN_ID_LOCK,
            &i32::try_from(first_run + 1).unwrap(),
            &run_lock,
        ],
    )
    .unwrap();

    let summary = deployment.collect_all();
    assert_eq!(summary["success"], true, "{summary}");
    assert_eq!(
        summary["run_id"],
        first_run + 1,
        "the run went ahead: {summary}"
    );
    assert!(
        app.simple_query("SELECT 1").is_ok(),
        "the session is left alone"
    );

    // A call still reading its targets holds the lock and has published no run yet: a call
    // meanwhile is skipped, naming none, and operations.md's query shows the holder.
    // Its targets query waits for an SQL advisory lock the test holds (one that no longer
    // touches the run lock) until the skipped call is through.
    client.execute("SELECT pg_advisory_lock(42)", &[]).unwrap();
    let mut planning = deployment.client();
    let planning_pid: i32 = one(&mut planning, "SELECT pg_backend_pid()");
    planning
        .batch_execute(
            "SET dex_collector.targets_query = 'SELECT c.id AS company_id, c.company_name
               FROM pg_catalog.pg_advisory_xact_lock_shared(42) l, public.companies c'",
        )
        .unwrap();
    let planned = std::thread::spawn(move || {
        planning
            .query_one("SELECT dex_collect_all()", &[])
            .map(|row| row.get::<_, Value>(0))
    });
    assert!(wait_until(Duration::from_secs(30), || {
        lock_holders(&mut client) == [(planning_pid, None)]
    }));
    let skipped = deployment.collect_all();
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["run_id"], Value::Null, "{skipped}");
    client
        .execute("SELECT pg_advisory_unlock(42)", &[])
        .unwrap();
    let planned = planned.join().unwrap().unwrap();
    assert_eq!(planned["success"], true, "{planned}");

    // A run in progress holds its lock and names its run.
    let mut caller = deployment.client();
    caller
        .batch_execute("BEGIN; SELECT dex_collect_all()")
        .unwrap();
    let running = planned["run_id"].as_i64().unwrap() + 1;
    let caller_pid: i32 = one(&mut caller, "SELECT pg_backend_pid()");
    assert_eq!(lock_holders(&mut client), [(caller_pid, Some(running))]);
    let skipped = deployment.collect_all();
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["run_id"], running, "{skipped}");
    caller.batch_execute("COMMIT").unwrap();
    assert_eq!(deployment.collect_all()["success"], true);
}

/// src/lock.rs: SQL in the worker's own session can release its session-level run lock
/// (`pg_advisory_unlock_all()` in the targets query); the worker takes the lock again after the
/// query, saying so once, and a run that lost it to another fails, naming why, instead of running
/// beside it.
#[test]
fn a_worker_run_whose_targets_query_released_the_run_lock_fails_if_another_took_it() {
    let targets = "SELECT company_id, company_name FROM public.release_and_wait()";
    let deployment = with_worker(
        &[
            ("dex_collector.targets_query", targets),
            ("dex_collector.concurrency", "1"),
        ],
        Behavior::Delay {
            delay: Duration::from_millis(400),
            then: Box::new(Behavior::Synthetic),
        },
    )
    .expect_warnings(&[
        "released the run lock with pg_advisory_unlock_all(); taken again",
        "the run could not start: the targets query (dex_collector.targets_query, or a function or view it reads) released the run lock",
    ]);
    assert!(worker_ready(&deployment.cluster));
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE FUNCTION public.release_and_wait()
                 RETURNS TABLE (company_id uuid, company_name text) LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_catalog.pg_advisory_unlock_all();
                 PERFORM pg_catalog.pg_advisory_xact_lock_shared(42);
                 RETURN QUERY SELECT c.id, c.company_name FROM public.companies c;
             END $$;",
        )
        .unwrap();
    let status_of = |client: &mut postgres::Client, run: i64| -> String {
        one(
            client,
            &format!("SELECT status FROM dex_collector.runs WHERE id = {run}"),
        )
    };
    // The worker waits in its targets query (for an SQL advisory lock the test holds), its run
    // lock released.
    let queue_and_wait = |client: &mut postgres::Client| -> i64 {
        client.execute("SELECT pg_advisory_lock(42)", &[]).unwrap();
        let queued: i64 = one(client, "SELECT dex_collect_all_async()");
        assert!(wait_until(Duration::from_secs(30), || {
            one::<i64>(
                client,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND NOT granted",
            ) == 1
        }));
        assert!(lock_holders(client).is_empty());
        queued
    };

    // No one took it meanwhile: the worker takes it again, names its run, and runs.
    let queued = queue_and_wait(&mut client);
    client
        .execute("SELECT pg_advisory_unlock(42)", &[])
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        lock_holders(&mut client)
            .iter()
            .any(|(_, run)| *run == Some(queued))
    }));
    let skipped = deployment.collect_all();
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["run_id"], queued, "{skipped}");
    assert!(wait_until(Duration::from_secs(30), || status_of(
        &mut client,
        queued
    ) == "succeeded"));

    // A SQL call takes the run lock meanwhile and keeps it while the worker goes on.
    let queued = queue_and_wait(&mut client);
    let mut caller = deployment.client();
    caller
        .batch_execute(
            "SET dex_collector.targets_query = 'SELECT id AS company_id, company_name FROM public.companies';
             BEGIN; SELECT dex_collect_all();",
        )
        .unwrap();
    client
        .execute("SELECT pg_advisory_unlock(42)", &[])
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || status_of(
        &mut client,
        queued
    ) == "failed"));
    let error: String = one(
        &mut client,
        &format!("SELECT error FROM dex_collector.runs WHERE id = {queued}"),
    );
    assert!(
        error.contains("released the run lock with pg_advisory_unlock_all(), and another run took it meanwhile; this run called no company"),
        "{error}"
    );
    caller.batch_execute("COMMIT").unwrap();
    let last: String = one(
        &mut client,
        "SELECT status FROM dex_collector.runs ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(last, "succeeded", "the SQL call's run");
    let told = deployment
        .cluster
        .log_contents()
        .matches("taken again")
        .count();
    assert_eq!(told, 1, "the lock taken again is said");
}

/// The session holding the run lock and the run it published, by docs/operations.md's query.
fn lock_holders(client: &mut postgres::Client) -> Vec<(i32, Option<i64>)> {
    let page = readme::page("operations.md");
    let query = readme::sql_blocks(&page)
        .into_iter()
        .find(|block| block.contains("1145395267"))
        .expect("operations.md shows who holds the run lock");
    client
        .query(&query, &[])
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get("pid"),
                row.get::<_, Option<u32>>("run_id").map(i64::from),
            )
        })
        .collect()
}

/// operations.md: under REPEATABLE READ, a call whose snapshot predates another run's end fails
/// with 40001 and records nothing; the next call runs.
#[test]
fn a_repeatable_read_call_that_missed_another_runs_end_fails_with_40001() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    deployment.collect_all();
    let mut caller = deployment.client();
    caller
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    let ended_since = deployment.collect_all();
    assert_eq!(ended_since["success"], true, "{ended_since}");
    let (state, message, _) = sql_error(caller.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(state, "40001", "{message}");
    caller.batch_execute("ROLLBACK").unwrap();
    let mut client = deployment.client();
    let runs: i64 = one(&mut client, "SELECT count(*) FROM dex_collector.runs");
    assert_eq!(runs, 2);
    assert_eq!(deployment.collect_all()["success"], true);
}

/// The Idempotency-Keys the stand-in has received.
fn idempotency_keys(deployment: &Deployment) -> HashSet<String> {
    deployment
        .stand_in
        .requests()
        .iter()
        .filter_map(|request| request.header("idempotency-key").map(str::to_string))
        .collect()
}

#[test]
fn the_history_survives_pg_dump_and_restore_and_idempotency_keys_never_repeat() {
    let original = Deployment::start(DeploymentOptions::default()).unwrap();
    original.collect_all();
    original.collect_all();
    let mut client = original.client();
    // A run queued or in progress at dump time belongs to the dumped server.
    client
        .batch_execute(
            "INSERT INTO dex_collector.runs (status, trigger) VALUES ('queued', 'async')",
        )
        .unwrap();
    let history = "SELECT string_agg(format('%s %s %s %s', id, status, run_key, companies_succeeded), ', ' ORDER BY id)
                     FROM dex_collector.runs WHERE status <> 'queued'";
    let results = "SELECT string_agg(format('%s %s %s', run_id, company_id, status), ', ' ORDER BY run_id, company_id)
                     FROM dex_collector.run_results";
    let rollups = "SELECT string_agg(r::text, ', ' ORDER BY company_id, day) FROM dex_collector.daily_rollups r";
    let original_history: String = one(&mut client, history);
    let original_results: String = one(&mut client, results);
    let original_rollups: String = one(&mut client, rollups);

    // Every key is the run's random key, the company and the page.
    let first_key: String = one(
        &mut client,
        "SELECT run_key::text FROM dex_collector.runs WHERE id = 1",
    );
    assert!(
        idempotency_keys(&original)
            .contains(&format!("dex-collector:{first_key}:{}:1", sample::ACME)),
        "{:?}",
        idempotency_keys(&original)
    );

    let custom = original.cluster.root_dir().join("history.dump");
    let plain = original.cluster.root_dir().join("history.sql");
    original
        .cluster
        .run_program("pg_dump", &["-Fc", "-f", custom.to_str().unwrap(), "dex"])
        .unwrap();
    original
        .cluster
        .run_program("pg_dump", &["-f", plain.to_str().unwrap(), "dex"])
        .unwrap();

    for (format, restore) in [
        (
            "custom",
            vec!["pg_restore", "-d", "dex", custom.to_str().unwrap()],
        ),
        (
            "plain",
            vec![
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "dex",
                "-f",
                plain.to_str().unwrap(),
            ],
        ),
    ] {
        let restored = TestCluster::start(ClusterOptions::default()).unwrap();
        restored.run_program(restore[0], &restore[1..]).unwrap();
        // Database settings are not part of a database's dump (pg_dumpall has them).
        restored
            .connect()
            .unwrap()
            .batch_execute(&original.configure_sql())
            .unwrap();
        let mut restored_client = restored.connect().unwrap();
        assert_eq!(
            one::<String>(&mut restored_client, history),
            original_history,
            "{format}"
        );
        assert_eq!(
            one::<String>(&mut restored_client, results),
            original_results,
            "{format}"
        );
        assert_eq!(
            one::<String>(&mut restored_client, rollups),
            original_rollups,
            "{format}: the daily rollups"
        );
        let queued: i64 = one(
            &mut restored_client,
            "SELECT count(*) FROM dex_collector.runs WHERE status IN ('queued', 'running')",
        );
        assert_eq!(
            queued, 0,
            "{format}: runs of the dumped server are not restored"
        );

        // Run ids go on from the dumped sequence, with keys of their own.
        let summary: Value = one(&mut restored_client, "SELECT dex_collect_all()");
        assert_eq!(summary["run_id"], 4, "{format}: {summary}");
        assert_eq!(summary["successfulCollections"], 8, "{format}: {summary}");
        restored.check_log(&[]).unwrap();
    }
    // The restored databases called the same stand-in with run 4, as does the original now:
    // every request carried a key no other request had.
    let summary = original.collect_all();
    assert_eq!(summary["run_id"], 4);
    let requests = original.stand_in.requests().len();
    assert_eq!(requests, 5 * 8, "five runs of 8 companies, one page each");
    assert_eq!(
        idempotency_keys(&original).len(),
        requests,
        "no Idempotency-Key repeats across the original and its restores"
    );
}

/// As Supabase has it: the schema, the extension, pg_cron and the worker all in database `postgres`,
/// which pg_upgrade drops and makes anew in the new cluster.
#[test]
fn pg_upgrade_keeps_the_history_the_job_and_the_settings_and_the_worker_keeps_out_of_it() {
    let settings = [
        ("dex_collector.database", "postgres"),
        ("cron.database_name", "postgres"),
    ];
    let deployment = Deployment::start(DeploymentOptions {
        preload: true,
        also_preload: vec!["pg_cron".into()],
        settings: settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        database: "postgres".into(),
        ..DeploymentOptions::default()
    })
    .unwrap()
    .expect_warnings(&STORED_SETTINGS_REFUSED);
    let worker_started = "dex_collector worker started in database postgres";
    let cluster = &deployment.cluster;
    assert!(wait_until(Duration::from_secs(30), || cluster
        .log_contents()
        .contains(worker_started)));
    let mut client = deployment.client();
    client
        // A job that does not run during the test: it only has to come over.
        .batch_execute("CREATE EXTENSION pg_cron; SELECT dex_collector.schedule('0 3 1 1 *')")
        .unwrap();
    assert_eq!(deployment.collect_all()["successfulCollections"], 8);
    assert_eq!(
        refused_stored_settings(&mut client),
        Vec::<[Option<String>; 3]>::new()
    );
    // What 0.1.0 left (its key as a setting, of the database and of a role), a name no version
    // knows, one that belongs in the configuration file and a value out of range, stored as a
    // session without the library could store them: this one would refuse each.
    client
        .batch_execute(
            "UPDATE pg_db_role_setting
                SET setconfig = setconfig
                                || '{dex_collector.service_key=sk-0.1.0,dex_collector.retired=1,
                                     dex_collector.interval=5min,dex_collector.concurrency=5000}'
              WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = 'postgres')
                AND setrole = 0;
             INSERT INTO pg_db_role_setting
             VALUES (0, 'postgres'::regrole, '{dex_collector.service_key=sk-0.1.0}')",
        )
        .unwrap();
    let kept = "SELECT concat_ws(' | ',
                    (SELECT extversion FROM pg_extension WHERE extname = 'dex_collector'),
                    (SELECT string_agg(format('%s %s %s', jobname, schedule, command), ', ')
                       FROM cron.job),
                    (SELECT string_agg(format('%s %s %s', id, status, companies_succeeded), ', '
                                       ORDER BY id)
                       FROM dex_collector.runs),
                    (SELECT count(*) FROM dex_collector.run_results),
                    (SELECT string_agg(format('%s %s', company_id, state), ', '
                                       ORDER BY company_id)
                       FROM dex_collector.companies),
                    (SELECT string_agg(array_to_string(setconfig, ' '), ', '
                                       ORDER BY setdatabase, setrole)
                       FROM pg_db_role_setting))";
    let before: String = one(&mut client, kept);
    let refused = [
        [Some("postgres"), None, Some("dex_collector.interval")],
        [Some("postgres"), None, Some("dex_collector.retired")],
        [Some("postgres"), None, Some("dex_collector.service_key")],
        [None, Some("postgres"), Some("dex_collector.service_key")],
    ]
    .map(|row| row.map(|field| field.map(str::to_string)));
    assert_eq!(refused_stored_settings(&mut client), refused);
    drop(client);

    let (upgraded, upgrade_logs) = cluster.pg_upgrade().unwrap();
    assert!(
        upgrade_logs.contains("database system is ready to accept connections"),
        "no log of pg_upgrade's servers found:\n{upgrade_logs}"
    );
    assert!(
        !upgrade_logs.contains("dex_collector worker"),
        "the worker ran in a server of pg_upgrade's:\n{upgrade_logs}"
    );
    assert!(wait_until(Duration::from_secs(30), || upgraded
        .log_contents()
        .contains(worker_started)));
    let mut client = upgraded.connect().unwrap();
    assert_eq!(one::<String>(&mut client, kept), before);
    assert_eq!(refused_stored_settings(&mut client), refused);
    // Taken out as operations.md says: one by one, but for what belongs in the configuration file.
    client
        .batch_execute(
            "ALTER DATABASE postgres RESET dex_collector.service_key;
             ALTER ROLE postgres RESET dex_collector.service_key;
             ALTER DATABASE postgres RESET dex_collector.retired;",
        )
        .unwrap();
    let (code, _, _) =
        sql_error(client.batch_execute("ALTER DATABASE postgres RESET dex_collector.interval"));
    assert_eq!(code, "55P02");
    assert_eq!(refused_stored_settings(&mut client), refused[..1]);
    // The database's settings (the endpoint, the key file) came over with it.
    let summary: Value = one(&mut client, "SELECT dex_collect_all()");
    assert_eq!(summary["run_id"], 2, "{summary}");
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    upgraded.check_log(&STORED_SETTINGS_REFUSED).unwrap();
}

/// The stored settings the library refuses, by docs/operations.md's query: database, role, name.
fn refused_stored_settings(client: &mut postgres::Client) -> Vec<[Option<String>; 3]> {
    let page = readme::page("operations.md");
    let query = readme::sql_blocks(&page)
        .into_iter()
        .find(|block| block.contains("pg_db_role_setting"))
        .expect("operations.md finds the stored settings the library refuses");
    client
        .simple_query(&query)
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => {
                Some([0, 1, 2].map(|field| row.get(field).map(str::to_string)))
            }
            _ => None,
        })
        .collect()
}

/// The WARNINGs of a session that meets the stored settings the library refuses, and ignores them.
const STORED_SETTINGS_REFUSED: [&str; 4] = [
    "dex_collector.service_key",
    "dex_collector.retired",
    "dex_collector.interval",
    "dex_collector.concurrency",
];

#[test]
fn a_scheduled_job_names_the_schema_runs_in_pg_cron_and_goes_with_drop_extension() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured()).unwrap();
    let mut client = deployment.client();
    // In a schema that is not on the job's search_path.
    client
        .batch_execute("CREATE SCHEMA extensions; CREATE EXTENSION dex_collector SCHEMA extensions")
        .unwrap();
    client.batch_execute(&deployment.configure_sql()).unwrap();
    let mut client = deployment.client();
    let (state, message, hint) =
        sql_error(client.query_one("SELECT dex_collector.schedule()", &[]));
    assert_eq!(state, "42704");
    assert_eq!(message, "pg_cron is not installed");
    assert!(hint
        .unwrap_or_default()
        .contains("CREATE EXTENSION pg_cron"));

    client.batch_execute("CREATE EXTENSION pg_cron").unwrap();
    let job_id: i64 = one(&mut client, "SELECT dex_collector.schedule('* * * * *')");
    let job = client
        .query_one(
            "SELECT jobname, command FROM cron.job WHERE jobid = $1",
            &[&job_id],
        )
        .unwrap();
    assert_eq!(job.get::<_, String>(0), "dex_collect_all");
    assert_eq!(
        job.get::<_, String>(1),
        "SELECT extensions.dex_collect_all()"
    );
    let again: i64 = one(&mut client, "SELECT dex_collector.schedule('* * * * *')");
    assert_eq!(again, job_id, "scheduling again replaces the job");

    // pg_cron fires at the next minute boundary.
    assert!(
        wait_until(Duration::from_secs(75), || {
            one::<i64>(
                &mut deployment.client(),
                "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'pg_cron' AND status = 'succeeded'",
            ) >= 1
        }),
        "the cron job ran {}",
        deployment.cluster.log_contents()
    );
    assert!(one::<bool>(
        &mut client,
        "SELECT dex_collector.unschedule()"
    ));
    assert!(!one::<bool>(
        &mut client,
        "SELECT dex_collector.unschedule()"
    ));

    // DROP EXTENSION takes schedule()'s job with it, names any other job calling dex_collector,
    // and a rolled-back drop keeps everything.
    one::<i64>(&mut client, "SELECT dex_collector.schedule()");
    let mine: i64 = one(
        &mut client,
        "SELECT cron.schedule('nightly-acme', '0 3 * * *', 'SELECT extensions.dex_collect_company(''00000000-0000-0000-0000-000000000000'')')",
    );
    client
        .batch_execute("BEGIN; DROP EXTENSION dex_collector; ROLLBACK;")
        .unwrap();
    assert_eq!(one::<i64>(&mut client, "SELECT count(*) FROM cron.job"), 2);

    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&notices);
    let mut config: postgres::Config = deployment.cluster.connection_string("dex").parse().unwrap();
    config.notice_callback(move |notice| {
        sink.lock().unwrap().push(format!(
            "{} {}",
            notice.message(),
            notice.hint().unwrap_or_default()
        ))
    });
    let mut dropping = config.connect(postgres::NoTls).unwrap();
    dropping
        .batch_execute("DROP EXTENSION dex_collector")
        .unwrap();
    let names: Vec<String> = client
        .query("SELECT jobname FROM cron.job ORDER BY jobid", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, vec!["nightly-acme"]);
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("removed the pg_cron job dex_collect_all")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains(&format!(
            "pg_cron job {mine} (nightly-acme) still calls dex_collector"
        )) && n.contains(&format!("SELECT cron.unschedule({mine});"))),
        "{notices:?}"
    );
}

/// The extension also goes with `DROP SCHEMA ... CASCADE` of its schema and with `DROP OWNED BY`
/// its owner; its pg_cron job goes with it then too, and a job of the name it had before 0.3.0 is
/// replaced by `schedule()`.
#[test]
fn the_job_goes_with_the_extension_when_its_schema_or_its_owner_is_dropped() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured()).unwrap();
    let mut client = deployment.client();
    client
        .batch_execute("CREATE EXTENSION pg_cron; CREATE ROLE dex_admin SUPERUSER")
        .unwrap();
    let create_and_schedule = "SET ROLE dex_admin;
         CREATE SCHEMA extensions;
         CREATE EXTENSION dex_collector SCHEMA extensions;
         SELECT cron.schedule('dex-collection-every-5-minutes', '*/5 * * * *', 'SELECT extensions.dex_collect_all()');
         SELECT dex_collector.schedule('*/10 * * * *');
         RESET ROLE;";
    let jobs = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(
                "SELECT jobname || ' ' || username FROM cron.job ORDER BY jobid",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    client.batch_execute(create_and_schedule).unwrap();
    assert_eq!(
        jobs(&mut client),
        vec!["dex_collect_all dex_admin"],
        "the old name replaced"
    );

    // Not these: a schema without the extension, and one that cannot go without CASCADE.
    client
        .batch_execute("CREATE SCHEMA unrelated; DROP SCHEMA unrelated CASCADE")
        .unwrap();
    let (state, _, _) = sql_error(client.query_one("DROP SCHEMA extensions", &[]));
    assert_eq!(state, "2BP01");
    assert_eq!(jobs(&mut client).len(), 1);

    client
        .batch_execute("DROP SCHEMA extensions CASCADE")
        .unwrap();
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM pg_extension WHERE extname = 'dex_collector'"
        ),
        0
    );
    assert!(jobs(&mut client).is_empty(), "{:?}", jobs(&mut client));

    client.batch_execute(create_and_schedule).unwrap();
    assert_eq!(jobs(&mut client).len(), 1);
    client.batch_execute("DROP OWNED BY dex_admin").unwrap();
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM pg_extension WHERE extname = 'dex_collector'"
        ),
        0
    );
    assert!(jobs(&mut client).is_empty(), "{:?}", jobs(&mut client));
}

#[test]
fn on_a_standby_collections_are_refused_with_25006_and_the_worker_starts_after_promotion() {
    let deployment = with_worker(&[], Behavior::Synthetic);
    let primary = &deployment.cluster;
    assert!(worker_ready(primary));
    let mut client = deployment.client();
    deployment.collect_all();
    // A run the primary was in the middle of when it was lost.
    let cut_short: i64 = one(
        &mut client,
        "INSERT INTO dex_collector.runs (status, trigger) VALUES ('running', 'worker') RETURNING id",
    );
    let standby = TestCluster::standby_of(
        primary,
        ClusterOptions {
            shared_preload_libraries: vec!["dex_collector".into()],
            settings: vec![("dex_collector.database".into(), "dex".into())],
            ..ClusterOptions::default()
        },
    )
    .unwrap();
    let mut on_standby = standby.connect().unwrap();
    assert!(one::<bool>(&mut on_standby, "SELECT pg_is_in_recovery()"));
    for call in [
        "SELECT dex_collect_all()",
        &format!("SELECT dex_collect_company('{}')", sample::ACME),
        "SELECT dex_collect_all_async()",
    ] {
        let (state, message, hint) = sql_error(on_standby.query_one(call, &[]));
        assert_eq!(state, "25006", "{call}: {message}");
        assert_eq!(
            message,
            "dex_collector cannot collect on a standby server: a run writes its history, and a standby is read-only",
            "{call}"
        );
        assert!(hint.unwrap_or_default().contains("Call it on the primary"));
    }
    // Reading works there: the DEX functions and the history.
    let history: i64 = one(
        &mut on_standby,
        "SELECT count(*) FROM dex_collector.run_summary",
    );
    assert_eq!(history, 2);
    let parsed: bool = one(
        &mut on_standby,
        "SELECT dex_parse('DXS*1*VA*V0/6*1'::text) IS NOT NULL",
    );
    assert!(parsed);
    // The worker waits quietly: the postmaster starts it once recovery ends.
    std::thread::sleep(Duration::from_secs(3));
    let workers: i64 = one(
        &mut on_standby,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dex_collector'",
    );
    assert_eq!(workers, 0, "no worker on a standby");

    standby.promote().unwrap();
    let mut promoted = standby.connect().unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        one::<String>(
            &mut promoted,
            &format!("SELECT status FROM dex_collector.runs WHERE id = {cut_short}"),
        ) == "interrupted"
    }));
    let run_id: i64 = one(&mut promoted, "SELECT dex_collect_all_async()");
    assert!(wait_until(Duration::from_secs(30), || {
        one::<String>(
            &mut promoted,
            &format!("SELECT status FROM dex_collector.runs WHERE id = {run_id}"),
        ) == "succeeded"
    }));
    let log = standby.log_contents();
    assert!(
        log.contains("dex_collector worker started in database dex"),
        "{log}"
    );
    assert!(
        !log.contains("XX000") && !log.contains("TransactionIds"),
        "{log}"
    );
    standby.check_log(&[]).unwrap();
}

#[test]
fn a_missing_worker_database_and_a_missing_extension_are_each_said_once_and_waited_for() {
    let cluster = TestCluster::start(ClusterOptions {
        shared_preload_libraries: vec!["dex_collector".into()],
        settings: vec![("dex_collector.database".into(), "later".into())],
        ..ClusterOptions::default()
    })
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        cluster
            .log_contents()
            .contains("does not exist or does not accept connections; waiting for it")
    }));
    std::thread::sleep(Duration::from_secs(12));
    let log = cluster.log_contents();
    assert!(
        log.matches("FATAL:  database \"later\" does not exist")
            .count()
            <= 1,
        "no FATAL loop: {log}"
    );
    assert_eq!(
        log.matches("does not exist or does not accept connections; waiting for it")
            .count(),
        1,
        "{log}"
    );

    let mut client = cluster.connect().unwrap();
    client.batch_execute("CREATE DATABASE later").unwrap();
    assert!(wait_until(Duration::from_secs(40), || {
        cluster
            .log_contents()
            .contains("waiting for CREATE EXTENSION dex_collector")
    }));
    std::thread::sleep(Duration::from_secs(12));
    let log = cluster.log_contents();
    assert!(
        log.contains("dex_collector worker started in database later"),
        "{log}"
    );
    assert_eq!(
        log.matches("waiting for CREATE EXTENSION dex_collector")
            .count(),
        1,
        "{log}"
    );

    let mut later = cluster.connect_as("postgres", "later").unwrap();
    later
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        cluster
            .log_contents()
            .contains("ready in database \"later\"")
    }));
    // A database the worker does not serve refuses async runs instead of queueing them forever.
    client
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    let (state, message, hint) = sql_error(client.query_one("SELECT dex_collect_all_async()", &[]));
    assert_eq!(state, "55000");
    assert_eq!(
        message,
        "the dex_collector background worker serves database \"later\", not this one: a queued run would never start"
    );
    assert!(hint.unwrap_or_default().contains("dex_collect_all()"));
    assert_eq!(
        one::<i64>(&mut client, "SELECT count(*) FROM dex_collector.runs"),
        0
    );

    // The worker is a session of its database: a plain DROP DATABASE meets it, WITH (FORCE) ends
    // it with the others, and it waits for the database again.
    drop(later);
    let (state, _, _) = sql_error(client.batch_execute("DROP DATABASE later"));
    assert_eq!(state, "55006");
    client
        .batch_execute("DROP DATABASE later WITH (FORCE)")
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        cluster
            .log_contents()
            .matches("does not exist or does not accept connections; waiting for it")
            .count()
            == 2
    }));
    cluster.check_log(&[]).unwrap();
}

fn worker_pid(deployment: &Deployment) -> i32 {
    one(
        &mut deployment.client(),
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'dex_collector'",
    )
}

#[test]
fn a_cancel_sent_to_the_worker_stops_its_run_and_the_worker_lives_on() {
    let deployment = with_worker(
        &[("dex_collector.concurrency", "1")],
        Behavior::Delay {
            delay: Duration::from_millis(700),
            then: Box::new(Behavior::Synthetic),
        },
    );
    assert!(worker_ready(&deployment.cluster));
    let pid = worker_pid(&deployment);
    let mut client = deployment.client();
    // Idle: nothing to cancel. Waiting on its latch, not in its first cycle's queries, which a
    // cancel would cancel (logged as that cycle's problem).
    assert!(wait_until(Duration::from_secs(20), || {
        one::<Option<String>>(
            &mut deployment.client(),
            &format!("SELECT wait_event_type FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .as_deref()
            == Some("Extension")
    }));
    client
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(worker_pid(&deployment), pid);

    let run_id: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    assert!(deployment
        .stand_in
        .wait_for_requests(2, Duration::from_secs(20)));
    client
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        one::<String>(
            &mut deployment.client(),
            &format!("SELECT status FROM dex_collector.runs WHERE id = {run_id}"),
        ) == "failed"
    }));
    let (error, skipped): (String, i32) = {
        let row = client
            .query_one(
                "SELECT error, companies_skipped FROM dex_collector.runs WHERE id = $1",
                &[&run_id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(error, "the run was cancelled");
    assert!(
        skipped > 2,
        "the companies not reached are skipped: {skipped}"
    );
    assert_eq!(worker_pid(&deployment), pid, "the same worker goes on");
    let next: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    assert!(wait_until(Duration::from_secs(30), || {
        one::<String>(
            &mut deployment.client(),
            &format!("SELECT status FROM dex_collector.runs WHERE id = {next}"),
        ) == "succeeded"
    }));
    assert!(!deployment
        .cluster
        .log_contents()
        .contains("canceling statement"));
}
