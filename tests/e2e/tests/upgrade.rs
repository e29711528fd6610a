//! Upgrades: a released install script (0.1.0, 0.2.0), kept as it was released in `sql/`, then
//! `ALTER EXTENSION dex_collector UPDATE`: the history and the pg_cron job survive, and the schema
//! is the one a fresh install of the current version makes. Every schema change comes with its
//! upgrade script, and this test is what holds it to that.

use dex_collector_e2e::deployment::{
    available_version, installed_version, one, rows_read_as_monitor, Deployment, DeploymentOptions,
};
use dex_collector_e2e::readme;
use serde_json::Value;

/// Everything of the extension's that a user could notice, one line each, sorted: its member
/// objects, its tables' columns (in order), indexes, constraints, triggers, storage options, views,
/// functions, comments, grants (on the schema, its relations and their columns), what pg_dump
/// keeps (its configuration tables and their filters) and its event triggers.
const DESCRIBE_EXTENSION: &str = "
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'dex_collector'),
     rel AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = 'dex_collector'::regnamespace)
SELECT line FROM (
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid) AS line
      FROM pg_depend d, ext WHERE d.refobjid = ext.oid AND d.deptype = 'e'
    UNION ALL
    SELECT format('column %s.%s #%s %s not null %s default %s', rel.relname, a.attname, a.attnum,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid))
      FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN rel ON rel.oid = i.indrelid
    UNION ALL
    SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
      FROM pg_constraint WHERE connamespace = 'dex_collector'::regnamespace
    UNION ALL
    SELECT format('view %s %s', relname, pg_get_viewdef(oid)) FROM rel WHERE relkind = 'v'
    UNION ALL
    SELECT format('grants %s %s', relname, relacl) FROM rel WHERE relkind IN ('r', 'v', 'S')
    UNION ALL
    SELECT format('column grants %s.%s %s', rel.relname, a.attname, a.attacl)
      FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid WHERE a.attacl IS NOT NULL
    UNION ALL
    SELECT format('schema grants %s', coalesce(nspacl, acldefault('n', nspowner)))
      FROM pg_namespace WHERE nspname = 'dex_collector'
    UNION ALL
    SELECT format('trigger %s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
      FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('options %s %s', relname, reloptions) FROM rel WHERE reloptions IS NOT NULL
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(ds.classoid, ds.objoid, ds.objsubid),
                  ds.description)
      FROM pg_description ds
     WHERE (ds.classoid = 'pg_class'::regclass AND ds.objoid IN (SELECT oid FROM rel))
        OR (ds.classoid = 'pg_namespace'::regclass AND ds.objoid = 'dex_collector'::regnamespace)
        OR (ds.classoid, ds.objoid) IN (SELECT d.classid, d.objid FROM pg_depend d, ext
                                          WHERE d.refobjid = ext.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('function %s %s %s', p.oid::regprocedure, p.proacl, pg_get_functiondef(p.oid))
      FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid, ext
     WHERE d.refobjid = ext.oid AND d.deptype = 'e' AND d.classid = 'pg_proc'::regclass
    UNION ALL
    SELECT format('dumped %s %s', c.oid::regclass, e.extcondition[i])
      FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS c(oid, i)
     WHERE e.extname = 'dex_collector'
    UNION ALL
    SELECT format('event trigger %s on %s tags %s calls %s enabled %s', t.evtname, t.evtevent,
                  t.evttags, t.evtfoid::regproc, t.evtenabled)
      FROM pg_event_trigger t
) AS described ORDER BY line";

fn describe(client: &mut postgres::Client) -> Vec<String> {
    client
        .query(DESCRIBE_EXTENSION, &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn an_upgrade_from_0_1_0_keeps_history_and_jobs_and_matches_a_fresh_install() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured())
        .unwrap()
        .expect_warnings(&["dex_collector.service_key is still set with ALTER DATABASE"]);
    let mut client = deployment.client();
    let current = available_version(&mut client);
    assert_ne!(current, "0.1.0");
    client
        .batch_execute("CREATE EXTENSION pg_cron; CREATE EXTENSION dex_collector VERSION '0.1.0';")
        .unwrap();
    client.batch_execute(&deployment.configure_sql()).unwrap();
    let mut client = deployment.client();
    // A year of 0.1.0's history in one run: what it recorded, as it recorded it.
    client
        .batch_execute(
            "INSERT INTO dex_collector.runs (started_at, finished_at, status, trigger,
                    companies_total, companies_processed, companies_succeeded, companies_skipped,
                    records_collected, machines_updated, duration_ms)
             VALUES (now() - interval '1 year', now() - interval '1 year', 'succeeded', 'pg_cron',
                     10, 8, 8, 2, 96, 24, 812);
             INSERT INTO dex_collector.run_results (run_id, company_id, company_name, status,
                    http_status, pages, attempts, records_collected, machines_updated, recorded_at)
             SELECT 1, c.id, c.company_name, 'succeeded', 200, 1, 1, 12, 3, now() - interval '1 year'
               FROM public.companies c ORDER BY c.company_name LIMIT 10;
             SELECT dex_collector.schedule('*/5 * * * *');",
        )
        .unwrap();

    // The new library refuses to run on the old objects, and says what to do.
    let error = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(
        db.code(),
        &postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    assert_eq!(
        db.message(),
        format!("the dex_collector library is version {current} but this database has the extension at version 0.1.0")
    );
    assert_eq!(
        db.hint(),
        Some("Run ALTER EXTENSION dex_collector UPDATE; in this database.")
    );

    // 0.1.0 took the key from a setting: the upgrade warns about one left behind.
    let mut unloaded = deployment.client();
    unloaded
        .batch_execute("ALTER DATABASE dex SET dex_collector.service_key = 'sk-old-setting'")
        .unwrap();
    unloaded
        .batch_execute("ALTER EXTENSION dex_collector UPDATE")
        .unwrap();
    let log = deployment.cluster.log_contents();
    assert!(
        log.contains("WARNING:  dex_collector.service_key is still set with ALTER DATABASE or ALTER ROLE, and 0.2.0 no longer reads it"),
        "{log}"
    );
    assert!(!log.contains("sk-old-setting"));
    unloaded
        .batch_execute("ALTER DATABASE dex RESET dex_collector.service_key")
        .unwrap();
    let mut client = deployment.client();
    assert_eq!(installed_version(&mut client), current);
    let (runs, results, jobs): (i64, i64, Vec<String>) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM dex_collector.runs),
                        (SELECT count(*) FROM dex_collector.run_results),
                        (SELECT array_agg(command) FROM cron.job WHERE jobname = 'dex_collect_all')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        (runs, results, jobs),
        (1, 10, vec!["SELECT public.dex_collect_all()".to_string()]),
        "history and job after the upgrade (the job now names the function's schema, and has its new name)"
    );

    // The upgraded extension collects, and records what the new version records.
    let after: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(after["successfulCollections"], 8, "{after}");
    assert_eq!(after["companiesNotReached"], 0, "{after}");
    // The year-old run is past dex_collector.history_retention: with no worker here, the call
    // deleted it after recording its own.
    let runs: Vec<(i64, i32)> = client
        .query(
            "SELECT run_id, companies_not_reached FROM dex_collector.run_summary ORDER BY run_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(runs, vec![(2, 0)]);

    assert_matches_a_fresh_install(&deployment, &mut client);
}

/// pg_cron's job names are unique per user: where the owner of 0.2.0's job already has one named
/// `dex_collect_all`, the old job keeps its name, with a WARNING, and the upgrade goes on. A day of
/// counts past bigint's range goes into its rollup clamped, as the collector adds them.
#[test]
fn an_upgrade_from_0_2_0_survives_a_job_of_the_new_name_and_counts_past_bigint() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured())
        .unwrap()
        .expect_warnings(&["the pg_cron job dex-collection-every-5-minutes keeps its name"]);
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE EXTENSION pg_cron; CREATE EXTENSION dex_collector VERSION '0.2.0';
             SELECT cron.schedule('dex-collection-every-5-minutes', '*/5 * * * *', 'SELECT dex_collect_all()');
             SELECT cron.schedule('dex_collect_all', '0 3 * * *', 'SELECT dex_collect_all()');
             INSERT INTO dex_collector.runs (finished_at, status, trigger, companies_total,
                    companies_processed, companies_succeeded)
             SELECT now(), 'succeeded', 'pg_cron', 1, 1, 1 FROM generate_series(1, 2);
             INSERT INTO dex_collector.run_results (run_id, company_id, company_name, status,
                    http_status, pages, attempts, records_collected, machines_updated)
             SELECT id, 'a0000000-0000-4000-8000-000000000001', 'Acme Vending', 'succeeded', 200, 1,
                    1, 9223372036854775807, 9223372036854775807
               FROM dex_collector.runs;",
        )
        .unwrap();
    client
        .batch_execute("ALTER EXTENSION dex_collector UPDATE")
        .unwrap();
    assert_eq!(
        installed_version(&mut client),
        available_version(&mut client)
    );
    let jobs: Vec<String> = client
        .query("SELECT jobname FROM cron.job ORDER BY jobid", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(jobs, ["dex-collection-every-5-minutes", "dex_collect_all"]);
    assert!(deployment.cluster.log_contents().contains(
        "the pg_cron job dex-collection-every-5-minutes keeps its name: its owner has a job named dex_collect_all already"
    ));
    let rollup: (i64, i64, i32) = {
        let row = client
            .query_one(
                "SELECT records_collected, machines_updated, succeeded FROM dex_collector.daily_rollups",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(rollup, (i64::MAX, i64::MAX, 2));
}

#[test]
fn an_upgrade_from_0_2_0_keeps_grants_and_takes_the_dex_functions_from_supabases_api_roles() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured()).unwrap();
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE dex_user NOLOGIN;
             CREATE EXTENSION pg_cron; CREATE EXTENSION dex_collector VERSION '0.2.0';
             GRANT EXECUTE ON FUNCTION dex_sales(text, text, boolean) TO dex_user;
             CREATE ROLE dex_monitor NOLOGIN;
             GRANT USAGE ON SCHEMA dex_collector TO dex_monitor;
             GRANT SELECT ON ALL TABLES IN SCHEMA dex_collector TO dex_monitor;
             ALTER EVENT TRIGGER dex_collector_before_drop DISABLE;",
        )
        .unwrap();
    let may_parse = "SELECT has_function_privilege('anon', 'dex_parse(text)', 'EXECUTE')";
    assert!(
        one::<bool>(&mut client, may_parse),
        "0.2.0 left them to PUBLIC"
    );
    client
        .batch_execute("ALTER EXTENSION dex_collector UPDATE")
        .unwrap();
    assert_eq!(
        installed_version(&mut client),
        available_version(&mut client)
    );
    let callable: Vec<String> = client
        .query(
            "SELECT format('%s %s', r.role, p.oid::regprocedure)
               FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid,
                    unnest(ARRAY['anon', 'authenticated']) AS r(role)
              WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
                AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
                AND has_function_privilege(r.role, p.oid, 'EXECUTE')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(callable.is_empty(), "{callable:#?}");
    assert!(
        one::<bool>(
            &mut client,
            "SELECT has_function_privilege('dex_user', 'dex_sales(text, text, boolean)', 'EXECUTE')"
        ),
        "a grant the user made stays"
    );
    assert_eq!(
        one::<String>(
            &mut client,
            "SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = 'dex_collector_before_drop'"
        ),
        "D",
        "the event trigger, made anew by the update, stays disabled as the DBA left it"
    );
    // A monitoring role granted 0.2.0's tables reads 0.3.0's views once granted them again, with
    // operations.md's statements.
    let may_read_health =
        "SELECT has_table_privilege('dex_monitor', 'dex_collector.health', 'SELECT')";
    assert!(!one::<bool>(&mut client, may_read_health));
    let (upgrade, _) = readme::section(&readme::page("operations.md"), "## Upgrade");
    let grants = readme::sql_blocks(&upgrade)
        .into_iter()
        .find(|block| block.contains("TO dex_monitor"))
        .expect("operations.md's Upgrade grants the monitoring role");
    client.batch_execute(&grants).unwrap();
    assert_eq!(rows_read_as_monitor(&mut client).unwrap(), 2);
    client
        .batch_execute(
            "ALTER EVENT TRIGGER dex_collector_before_drop ENABLE;
             REVOKE EXECUTE ON FUNCTION dex_sales(text, text, boolean) FROM dex_user;
             DROP OWNED BY dex_monitor; DROP ROLE dex_monitor;",
        )
        .unwrap();
    assert_matches_a_fresh_install(&deployment, &mut client);
}

/// dex_validate(bytea) and dex_segments(bytea), new in 0.3.0, take the grants their text forms
/// were given: PUBLIC's taken away, a role's given.
#[test]
fn an_upgrade_from_0_2_0_gives_the_new_bytea_forms_the_grants_of_their_text_forms() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured()).unwrap();
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE EXTENSION dex_collector VERSION '0.2.0';
             CREATE ROLE dex_reader NOLOGIN;
             REVOKE EXECUTE ON FUNCTION dex_segments(text) FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION dex_segments(text) TO dex_reader WITH GRANT OPTION;
             ALTER EXTENSION dex_collector UPDATE;",
        )
        .unwrap();
    let may = |client: &mut postgres::Client, role: &str, function: &str, privilege: &str| {
        one::<bool>(
            client,
            &format!("SELECT has_function_privilege('{role}', '{function}', '{privilege}')"),
        )
    };
    assert!(!may(
        &mut client,
        "public",
        "dex_segments(bytea)",
        "EXECUTE"
    ));
    assert!(may(
        &mut client,
        "dex_reader",
        "dex_segments(bytea)",
        "EXECUTE WITH GRANT OPTION"
    ));
    assert!(
        may(&mut client, "public", "dex_validate(bytea)", "EXECUTE"),
        "its text form kept PUBLIC's grant"
    );
    client
        .batch_execute("DROP EXTENSION dex_collector; DROP ROLE dex_reader;")
        .unwrap();
}

#[test]
fn an_upgrade_from_0_2_0_builds_each_company_state_from_its_history() {
    let deployment = Deployment::start(DeploymentOptions::with_pg_cron_unconfigured()).unwrap();
    let mut client = deployment.client();
    // Four runs of 0.2.0's history: all collected; then the first company fails three times, the
    // second once and recovers, the third is skipped at last, and the fourth fails three times for
    // the runs' sake (requests a cancel dropped), which is no failure of its own.
    client
        .batch_execute(
            "CREATE EXTENSION dex_collector VERSION '0.2.0';
             INSERT INTO dex_collector.runs (started_at, finished_at, status, trigger)
             SELECT now() - (5 - r) * interval '5 minutes', now() - (5 - r) * interval '5 minutes',
                    'succeeded', 'pg_cron'
               FROM generate_series(1, 4) AS r;
             WITH c AS (SELECT id, company_name, row_number() OVER (ORDER BY company_name) AS n
                          FROM public.companies)
             INSERT INTO dex_collector.run_results (run_id, company_id, company_name, status,
                    http_status, error, recorded_at)
             SELECT r, c.id, c.company_name,
                    CASE WHEN r > 1 AND c.n IN (1, 4) THEN 'failed'
                         WHEN r = 2 AND c.n = 2 THEN 'failed'
                         WHEN r = 4 AND c.n = 3 THEN 'skipped'
                         ELSE 'succeeded' END,
                    CASE WHEN (r > 1 AND c.n = 1) OR (r = 2 AND c.n = 2) THEN 502
                         WHEN (r = 4 AND c.n = 3) OR (r > 1 AND c.n = 4) THEN NULL ELSE 200 END,
                    CASE WHEN (r > 1 AND c.n = 1) OR (r = 2 AND c.n = 2) THEN 'HTTP 502: run ' || r
                         WHEN r = 4 AND c.n = 3 THEN 'No DEX credentials configured'
                         WHEN r > 1 AND c.n = 4 THEN 'stopped: the run was cancelled while collecting' END,
                    now() - (5 - r) * interval '5 minutes' + c.n * interval '1 second'
               FROM generate_series(1, 4) AS r, c;",
        )
        .unwrap();
    let status = "SELECT string_agg(format('%s %s %s %s %s %s %s', company_id, company_name,
                                           last_attempt_at, last_status, last_success_at,
                                           last_error, consecutive_failures), E'\n'
                                    ORDER BY company_id)
                    FROM dex_collector.company_status WHERE company_name <> 'Delta Drinks'";
    let before: String = one(&mut client, status);
    client
        .batch_execute("ALTER EXTENSION dex_collector UPDATE")
        .unwrap();
    let after: String = one(&mut client, status);
    assert_eq!(
        after, before,
        "company_status answers as before, from companies now"
    );
    let states: Vec<(String, String, i32, bool)> = client
        .query(
            "SELECT c.company_name, c.state, c.consecutive_failures, c.alerted
               FROM dex_collector.companies c ORDER BY c.company_name LIMIT 4",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert_eq!(
        states,
        [
            ("Acme Vending".to_string(), "failing".to_string(), 3, true),
            ("Beta Snacks".to_string(), "ok".to_string(), 0, false),
            (
                "Coastal Refreshments".to_string(),
                "skipped".to_string(),
                0,
                false
            ),
            ("Delta Drinks".to_string(), "ok".to_string(), 0, false),
        ]
    );
    let events: i64 = one(&mut client, "SELECT count(*) FROM dex_collector.events");
    assert_eq!(events, 0, "the past is state, not new events");
    // The days of the history, rolled up: every result counted (the runs here span one day, or
    // two across midnight UTC).
    let days: Vec<(String, i64, i64, i64, i64)> = client
        .query(
            "SELECT company_name, sum(attempts)::bigint, sum(succeeded)::bigint,
                    sum(failed)::bigint, sum(skipped)::bigint
               FROM dex_collector.daily_rollups GROUP BY company_name ORDER BY company_name LIMIT 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    assert_eq!(
        days,
        [
            ("Acme Vending".to_string(), 4, 1, 3, 0),
            ("Beta Snacks".to_string(), 4, 3, 1, 0),
            ("Coastal Refreshments".to_string(), 3, 3, 0, 1),
        ]
    );
    // The fair order reads the same runs from companies as it did from the history.
    let last_calls: Vec<(Option<i64>, Option<i64>)> = client
        .query(
            "SELECT last_called_run_id, last_success_run_id FROM dex_collector.companies
              ORDER BY company_name LIMIT 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        last_calls,
        [(Some(4), Some(1)), (Some(4), Some(4)), (Some(3), Some(3))]
    );
    assert_matches_a_fresh_install(&deployment, &mut client);
}

/// The extension as upgraded in the deployment's database is the one `CREATE EXTENSION` makes in
/// a new database of the same cluster.
fn assert_matches_a_fresh_install(deployment: &Deployment, client: &mut postgres::Client) {
    let upgraded = describe(client);
    client.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh_client = deployment.cluster.connect_as("postgres", "fresh").unwrap();
    fresh_client
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    let fresh = describe(&mut fresh_client);
    assert!(upgraded.len() > 20, "{upgraded:#?}");
    // Column grants are made only for supautils' privileged role, absent here: none to see.
    for kind in ["trigger ", "options ", "schema grants ", "comment "] {
        assert!(
            fresh.iter().any(|line| line.starts_with(kind)),
            "nothing described as {kind:?}: {fresh:#?}"
        );
    }
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !fresh.contains(l)).collect();
    let only_fresh: Vec<&String> = fresh.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install:\nonly after the upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}"
    );
}
