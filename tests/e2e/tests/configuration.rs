//! The database's encoding, settings, the targets query, the Vault fallback, privileges and
//! cancellation, end to end.

use std::time::{Duration, Instant};

use dex_collector_e2e::deployment::{
    one, sample, server_major, skipped_ids, sql_error, wait_until, Deployment, DeploymentOptions,
    SAMPLE_SCHEMA,
};
use dex_collector_e2e::stand_in::{Behavior, DEFAULT_SERVICE_KEY};
use serde_json::Value;

/// The example `targets_query` of docs/configuration.md for a schema with `username_encrypted` and
/// `is_active`.
const ENCRYPTED_CREDENTIALS_QUERY: &str =
    include_str!("../../fixtures/targets_query_encrypted.sql");
const CONFIGURATION: &str = include_str!("../../../docs/configuration.md");

fn deployment() -> Deployment {
    Deployment::start(DeploymentOptions::default()).expect("deployment starts")
}

#[test]
fn missing_configuration_is_one_clear_error_before_any_request() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute("ALTER DATABASE dex RESET dex_collector.site_url")
        .unwrap();
    let mut client = deployment.client();
    let (code, message, hint) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "22023");
    assert_eq!(
        message,
        "dex_collector is not configured: it has no site URL (dex_collector.site_url, or the Vault secret dex_collector_site_url)"
    );
    assert!(hint.unwrap_or_default().contains("ALTER DATABASE"));
    client
        .batch_execute("ALTER DATABASE dex RESET dex_collector.service_key_file")
        .unwrap();
    let mut client = deployment.client();
    let (_, message, hint) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(
        message,
        "dex_collector is not configured: it has no site URL (dex_collector.site_url, or the Vault \
         secret dex_collector_site_url) and no service key (the Vault secret \
         dex_collector_service_key, or a file named by dex_collector.service_key_file)"
    );
    let hint = hint.unwrap_or_default();
    assert!(
        hint.contains("vault.create_secret") && hint.contains("service_key_file"),
        "{hint}"
    );
    assert_eq!(deployment.stand_in.request_count(), 0);
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM dex_collector.runs", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
}

/// A database in an encoding other than UTF-8 is refused at CREATE EXTENSION: its runs would fail
/// at the first company name that is not ASCII. SQL_ASCII, which takes any bytes, is left to hold
/// UTF-8, and collects a name in it.
#[test]
fn create_extension_refuses_a_database_not_in_utf8_and_sql_ascii_collects() {
    let deployment = deployment();
    let mut client = deployment.client();
    for encoding in ["LATIN1", "SQL_ASCII"] {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {encoding} ENCODING '{encoding}' TEMPLATE template0"
            ))
            .unwrap();
    }
    let mut latin1 = deployment.cluster.connect_as("postgres", "latin1").unwrap();
    let (code, message, hint) = sql_error(latin1.batch_execute("CREATE EXTENSION dex_collector"));
    assert_eq!(code, "0A000");
    assert_eq!(
        message,
        "dex_collector needs a UTF8 database; this one is LATIN1"
    );
    assert!(hint.unwrap_or_default().contains("ENCODING 'UTF8'"));

    let mut ascii = deployment
        .cluster
        .connect_as("postgres", "sql_ascii")
        .unwrap();
    ascii.batch_execute(SAMPLE_SCHEMA).unwrap();
    ascii
        .execute(
            "UPDATE public.companies SET company_name = 'Café Acme' WHERE id = $1::text::uuid",
            &[&sample::ACME],
        )
        .unwrap();
    ascii
        .batch_execute(&format!(
            "CREATE EXTENSION dex_collector; {}",
            deployment.configure_sql_in("sql_ascii")
        ))
        .unwrap();
    let mut ascii = deployment
        .cluster
        .connect_as("postgres", "sql_ascii")
        .unwrap();
    let summary: Value = one(&mut ascii, "SELECT dex_collect_all()");
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    let name: String = ascii
        .query_one(
            "SELECT company_name FROM dex_collector.companies WHERE company_id = $1::text::uuid",
            &[&sample::ACME],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "Café Acme");
}

#[test]
fn bad_values_are_rejected_when_they_are_set() {
    let deployment = deployment();
    let mut client = deployment.client();
    client.batch_execute("LOAD 'dex_collector'").unwrap();
    for (statement, expected) in [
        (
            "SET dex_collector.site_url = 'ftp://example.com'",
            "scheme must be http or https",
        ),
        ("SET dex_collector.site_url = 'not a url'", "is not a URL"),
        (
            "ALTER SYSTEM SET dex_collector.site_url = 'https://example.com/?x=1'",
            "base URL only",
        ),
        (
            "ALTER DATABASE dex SET dex_collector.site_url = 'https://u:p@example.com'",
            "credentials",
        ),
        (
            "SET dex_collector.concurrency = 0",
            "0 is outside the valid range",
        ),
        (
            "SET dex_collector.request_timeout = '10ms'",
            "outside the valid range",
        ),
    ] {
        let (code, message, _) = sql_error(client.batch_execute(statement));
        assert_eq!(code, "22023", "{statement}");
        assert!(message.contains(expected), "{statement}: {message}");
    }
    let (_, message, _) =
        sql_error(client.batch_execute("SET dex_collector.service_key = 'has a space'"));
    assert!(
        !message.contains("has a space"),
        "a rejected key is never echoed: {message}"
    );
    let (code, message, _) = sql_error(client.batch_execute("SET dex_collector.concurency = 4"));
    assert_eq!(code, "42602", "the prefix is reserved: {message}");
    client
        .batch_execute("SET dex_collector.request_timeout = '2s'")
        .unwrap();
    let shown: String = client
        .query_one("SHOW dex_collector.request_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "2s");
    // ALTER SYSTEM works once the library is loaded in the session (docs/configuration.md).
    client
        .batch_execute("ALTER SYSTEM SET dex_collector.concurrency = 16")
        .unwrap();
    client
        .batch_execute("ALTER SYSTEM RESET dex_collector.concurrency")
        .unwrap();
}

#[test]
fn a_custom_targets_query_replaces_the_rule() {
    let deployment = deployment();
    assert!(
        CONFIGURATION.contains(ENCRYPTED_CREDENTIALS_QUERY.trim()),
        "docs/configuration.md shows the tested targets_query"
    );
    let mut client = deployment.client();
    // The public deployment's schema: encrypted credentials and an is_active flag.
    client
        .batch_execute(&format!(
            "ALTER TABLE public.user_credentials RENAME COLUMN dex_username TO username_encrypted;
             ALTER TABLE public.user_credentials ADD COLUMN is_active boolean NOT NULL DEFAULT true;
             UPDATE public.user_credentials SET is_active = false WHERE company_id = '{}';
             ALTER DATABASE dex SET dex_collector.targets_query = $q${}$q$;",
            sample::ACME,
            ENCRYPTED_CREDENTIALS_QUERY
        ))
        .unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["companiesProcessed"], 7, "{summary}");
    let skipped = skipped_ids(&summary);
    assert_eq!(
        skipped,
        vec![sample::ACME, sample::DELTA, sample::EVERGREEN]
    );
    assert!(deployment
        .stand_in
        .requests()
        .iter()
        .all(|r| r.company_id() != Some(sample::ACME)));

    // Without has_credentials every row is a target.
    let mut client = deployment.client();
    client
        .batch_execute(&format!(
            "SET dex_collector.targets_query = 'SELECT id AS company_id, company_name FROM public.companies WHERE id = ''{}'''",
            sample::GOLDEN
        ))
        .unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["companiesProcessed"], 1);
    assert_eq!(summary["results"][0]["company"], "Golden Gate Snacks");
}

#[test]
fn a_broken_targets_query_names_the_setting() {
    let deployment = deployment();
    let mut client = deployment.client();
    for (query, expected) in [
        (
            "SELEC 1",
            "dex_collector.targets_query failed: syntax error",
        ),
        (
            "SELECT id AS company_id FROM public.companies",
            "must return a column named company_name",
        ),
        (
            "SELECT company_name FROM public.companies",
            "must return a column named company_id",
        ),
        (
            "SELECT id::text AS company_id, company_name FROM public.companies",
            "column company_id must be of type uuid",
        ),
        (
            "SELECT id AS company_id, company_name FROM companies",
            "relation \"companies\" does not exist",
        ),
        (
            "SELECT NULL::uuid AS company_id, 'x'::text AS company_name",
            "NULL company_id",
        ),
        (
            "SELECT id AS company_id, company_name::name AS company_name FROM public.companies",
            "column company_name must be of type text",
        ),
    ] {
        client
            .batch_execute(&format!("SET dex_collector.targets_query = $q${query}$q$"))
            .unwrap();
        let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
        assert!(message.contains(expected), "{query}: {message}");
        assert!(
            message.contains("dex_collector.targets_query"),
            "{query}: {message}"
        );
    }
    assert_eq!(deployment.stand_in.request_count(), 0);
}

#[test]
fn a_company_in_several_rows_is_one_target_with_credentials_if_any_row_has_them() {
    let deployment = deployment();
    let mut client = deployment.client();
    // Its first row says no credentials, its second yes (a LEFT JOIN of two users, say).
    client
        .batch_execute(&format!(
            "SET dex_collector.targets_query = $q$
               SELECT c.id AS company_id, c.company_name, r.has_credentials
                 FROM public.companies c
                 CROSS JOIN (VALUES (1, false), (2, true)) AS r(n, has_credentials)
                WHERE c.id = '{}' ORDER BY r.n$q$",
            sample::ACME
        ))
        .unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["companiesProcessed"], 1, "{summary}");
    assert_eq!(summary["companiesSkipped"], 0, "{summary}");
    assert_eq!(deployment.stand_in.request_count(), 1);
}

/// The targets query may read foreign tables on a server that hangs: it is cancelled at the
/// run's deadline with an error that says so, the caller's own statement_timeout still applies,
/// and the session goes on unharmed.
#[test]
fn a_targets_query_that_does_not_finish_is_cancelled_at_the_run_deadline() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute(
            "SET dex_collector.run_deadline = '1s';
             SET dex_collector.targets_query = $q$
               SELECT c.id AS company_id, c.company_name FROM public.companies c, pg_sleep(30)$q$",
        )
        .unwrap();
    let started = Instant::now();
    let (code, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "57014", "{message}");
    assert_eq!(
        message,
        "dex_collector.targets_query did not finish within dex_collector.run_deadline (1000 ms) \
         and was cancelled; a foreign server it reads may be slow or unreachable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A shorter statement_timeout of the caller's is the caller's.
    client
        .batch_execute("SET dex_collector.run_deadline = '20s'; SET statement_timeout = '500ms'")
        .unwrap();
    let (code, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "57014");
    assert!(message.contains("statement timeout"), "{message}");

    // Nothing left armed: a run and a long statement afterwards are not cancelled.
    client
        .batch_execute(
            "RESET statement_timeout; RESET dex_collector.targets_query;
             SET dex_collector.run_deadline = '1s'",
        )
        .unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    client.batch_execute("SELECT pg_sleep(1.5)").unwrap();
    assert_eq!(deployment.stand_in.request_count(), 8);
}

#[test]
fn the_targets_query_cannot_modify_data() {
    let deployment = deployment();
    let mut client = deployment.client();
    let machines_before: i64 = client
        .query_one("SELECT count(*) FROM public.machines", &[])
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "SET dex_collector.targets_query = $q$
               WITH gone AS (DELETE FROM public.machines RETURNING company_id)
               SELECT c.id AS company_id, c.company_name FROM public.companies c$q$",
        )
        .unwrap();
    let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    // Refused by SPI's read-only execution before it reaches the read-only transaction.
    assert!(
        message.contains("dex_collector.targets_query failed: SELECT is not allowed"),
        "{message}"
    );
    client
        .batch_execute(
            "CREATE FUNCTION public.sneaky() RETURNS uuid LANGUAGE plpgsql AS
               $f$ BEGIN DELETE FROM public.machines; RETURN gen_random_uuid(); END $f$;
             SET dex_collector.targets_query = 'SELECT public.sneaky() AS company_id, ''x''::text AS company_name'",
        )
        .unwrap();
    let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert!(message.contains("read-only transaction"), "{message}");
    let machines: i64 = client
        .query_one("SELECT count(*) FROM public.machines", &[])
        .unwrap()
        .get(0);
    assert_eq!(machines, machines_before);
    assert!(machines > 0);
}

#[test]
fn the_targets_query_runs_with_the_rights_of_the_tables_owner_not_a_superuser() {
    let deployment = deployment();
    let mut admin = deployment.client();
    // The application's role owns its tables, as `postgres` does on Supabase, and swaps one for a
    // view that calls a function of its own: that function must not get a superuser's rights.
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN;
             GRANT CREATE ON SCHEMA public TO app;
             ALTER TABLE public.companies OWNER TO app;
             CREATE ROLE outsider;",
        )
        .unwrap();
    // Not the rights of one owner over another's tables: which, is for the setting to say.
    refused(
        &mut admin,
        &[
            "public.user_credentials, which different roles own (",
            "\"app\"",
            "set dex_collector.targets_role",
        ],
    );
    admin
        .batch_execute(
            "ALTER TABLE public.machines OWNER TO app;
             ALTER TABLE public.user_credentials OWNER TO app;",
        )
        .unwrap();
    assert_eq!(deployment.collect_all()["successfulCollections"], 8);

    let mut app = deployment.cluster.connect_as("app", "dex").unwrap();
    app.batch_execute(
        "ALTER TABLE public.companies RENAME TO companies_data;
         CREATE FUNCTION public.whoever() RETURNS boolean LANGUAGE plpgsql AS
           $f$ BEGIN RAISE EXCEPTION 'ran as %', current_user; END $f$;
         CREATE VIEW public.companies AS SELECT * FROM public.companies_data WHERE public.whoever();",
    )
    .unwrap();
    refused(
        &mut admin,
        &["the built-in target selection failed: ran as app"],
    );
    app.batch_execute(
        "DROP VIEW public.companies;
         ALTER TABLE public.companies_data RENAME TO companies;",
    )
    .unwrap();
    // Nor is a Vault look-alike read where Vault is absent: only a view a superuser made.
    admin
        .batch_execute("GRANT CREATE ON DATABASE dex TO app")
        .unwrap();
    app.batch_execute(
        "CREATE SCHEMA vault;
         CREATE VIEW vault.decrypted_secrets AS
         SELECT 'dex_collector_service_key'::text AS name, 'x'::text AS decrypted_secret
          WHERE public.whoever();",
    )
    .unwrap();
    assert_eq!(deployment.collect_all()["successfulCollections"], 8);
    // Nor a pg_cron look-alike, which would tell health how often runs are due.
    app.batch_execute(
        "CREATE SCHEMA cron;
         CREATE TABLE cron.job AS
         SELECT 1::bigint AS jobid, 'dex_collect_all'::text AS jobname, '@weekly'::text AS schedule,
                current_database()::text AS database, true AS active;",
    )
    .unwrap();
    let weekly: bool = one(
        &mut admin,
        "SELECT dex_collector.expected_interval() IS NOT DISTINCT FROM interval '7 days'",
    );
    assert!(!weekly, "the look-alike's schedule was read");

    // Rows a policy would hide from the role are an error, not companies silently left out.
    app.batch_execute("ALTER TABLE public.companies FORCE ROW LEVEL SECURITY")
        .unwrap();
    refused(
        &mut admin,
        &[
            "row-level security",
            "it runs as role \"app\": see dex_collector.targets_role",
        ],
    );
    app.batch_execute("ALTER TABLE public.companies NO FORCE ROW LEVEL SECURITY")
        .unwrap();

    // dex_collector.targets_role names another role: its rights, or a clear error.
    admin
        .batch_execute("SET dex_collector.targets_role = 'outsider'")
        .unwrap();
    refused(
        &mut admin,
        &["(it runs as role \"outsider\": see dex_collector.targets_role)"],
    );
    admin
        .batch_execute("SET dex_collector.targets_role = 'no_such_role'")
        .unwrap();
    refused(
        &mut admin,
        &["dex_collector.targets_role: role \"no_such_role\" does not exist"],
    );
    admin
        .batch_execute(
            "GRANT SELECT ON public.companies, public.machines, public.user_credentials TO outsider;
             ALTER ROLE outsider BYPASSRLS;
             SET dex_collector.targets_role = 'outsider'",
        )
        .unwrap();
    let summary: Value = admin
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["successfulCollections"], 8, "{summary}");

    // A targets_query runs as the database's owner.
    admin
        .batch_execute(
            "RESET dex_collector.targets_role;
             ALTER DATABASE dex OWNER TO app;
             SET dex_collector.targets_query = 'SELECT c.id AS company_id, c.company_name::text AS company_name
                                                  FROM public.companies c WHERE public.whoever()'",
        )
        .unwrap();
    refused(
        &mut admin,
        &["dex_collector.targets_query failed: ran as app"],
    );
}

/// A collection refused with 22023 and a message holding each of `expected`.
fn refused(client: &mut postgres::Client, expected: &[&str]) {
    let (code, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "22023", "{message}");
    for part in expected {
        assert!(message.contains(part), "{message}");
    }
}

/// Without a worker, each call deletes a batch of old history after recording its run; a batch
/// that fails or runs long is given up, not the run.
#[test]
fn old_history_that_cannot_be_deleted_does_not_take_the_calls_run_with_it() {
    let deployment = deployment().expect_warnings(&[
        "dex_collector: old history was not deleted after this run (canceling statement due to lock timeout)",
        "dex_collector: old history was not deleted after this run (it did not finish within",
    ]);
    let mut client = deployment.client();
    let old_run: i64 = one(
        &mut client,
        "INSERT INTO dex_collector.runs (started_at, finished_at, status, trigger)
         VALUES (now() - interval '1 year', now() - interval '1 year', 'succeeded', 'manual')
         RETURNING id",
    );
    let mut holder = deployment.client();
    let mut holding = holder.transaction().unwrap();
    holding
        .execute(
            "SELECT 1 FROM dex_collector.runs WHERE id = $1 FOR UPDATE",
            &[&old_run],
        )
        .unwrap();
    let runs = |client: &mut postgres::Client| -> i64 {
        one(client, "SELECT count(*) FROM dex_collector.runs")
    };

    // The row lock is waited for until lock_timeout: the batch fails, the run stays.
    client.batch_execute("SET lock_timeout = '300ms'").unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    assert_eq!(runs(&mut client), 2);

    // Without lock_timeout, the wait ends at half of what statement_timeout leaves the call.
    client
        .batch_execute("RESET lock_timeout; SET statement_timeout = '4s'")
        .unwrap();
    let started = Instant::now();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    // It waited for the lock until half of what the timer left (about 1.9 s), not to its end.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(runs(&mut client), 3);

    holding.rollback().unwrap();
    client.batch_execute("RESET statement_timeout").unwrap();
    deployment.collect_all();
    let remaining: i64 = one(
        &mut client,
        &format!("SELECT count(*) FROM dex_collector.runs WHERE id = {old_run}"),
    );
    assert_eq!(remaining, 0, "deleted once nothing holds it");
    assert_eq!(runs(&mut client), 3);
}

#[test]
fn settings_fall_back_to_supabase_vault() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute(&format!(
            "ALTER DATABASE dex RESET dex_collector.site_url;
             ALTER DATABASE dex RESET dex_collector.service_key_file;
             CREATE SCHEMA vault;
             CREATE TABLE vault.secrets (name text, secret text);
             INSERT INTO vault.secrets VALUES ('dex_collector_site_url', '{}'),
                                              ('dex_collector_service_key', '{}'),
                                              ('unrelated', 'x');
             CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;",
            deployment.stand_in.url(),
            DEFAULT_SERVICE_KEY
        ))
        .unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8);
    assert!(deployment
        .stand_in
        .requests()
        .iter()
        .all(|r| r.header("x-service-key") == Some(DEFAULT_SERVICE_KEY)));

    // A setting wins over Vault; a Vault site URL is validated like the setting.
    let mut client = deployment.client();
    client.batch_execute("UPDATE vault.secrets SET secret = 'ftp://nowhere' WHERE name = 'dex_collector_site_url'").unwrap();
    let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    assert!(
        message.contains("invalid dex_collector.site_url"),
        "{message}"
    );
    client
        .batch_execute(&format!(
            "SET dex_collector.site_url = '{}'",
            deployment.stand_in.url()
        ))
        .unwrap();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["successfulCollections"], 8);
}

#[test]
fn a_granted_role_collects_every_company_despite_row_level_security_and_cannot_read_the_key() {
    let deployment = deployment();
    let mut admin = deployment.client();
    admin
        .batch_execute(
            "CREATE ROLE collector LOGIN;
             GRANT SELECT ON public.companies TO collector;",
        )
        .unwrap();
    let mut collector = deployment.cluster.connect_as("collector", "dex").unwrap();
    let visible: i64 = collector
        .query_one("SELECT count(*) FROM public.companies", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        visible, 0,
        "row level security hides every company from the role"
    );

    let (code, message, _) = sql_error(collector.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "42501", "{message}");
    let (code, _, _) = sql_error(collector.query_one(
        "SELECT dex_collect_company($1::text::uuid)",
        &[&sample::ACME],
    ));
    assert_eq!(code, "42501");

    admin
        .batch_execute("GRANT EXECUTE ON FUNCTION dex_collect_all() TO collector")
        .unwrap();
    let summary: Value = collector
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["companiesProcessed"], 8);
    assert_eq!(summary["successfulCollections"], 8);
    let started_by: String = admin
        .query_one(
            "SELECT started_by::text FROM dex_collector.runs WHERE id = $1",
            &[&summary["run_id"].as_i64()],
        )
        .unwrap()
        .get(0);
    assert_eq!(started_by, "collector");

    let (code, _, _) = sql_error(collector.query_one("SHOW dex_collector.service_key_file", &[]));
    assert_eq!(code, "42501");
    let (code, _, _) = sql_error(collector.query_one(
        "SELECT current_setting('dex_collector.service_key_file')",
        &[],
    ));
    assert_eq!(code, "42501");
    let rows = collector
        .query(
            "SELECT setting FROM pg_settings WHERE name LIKE 'dex_collector.service_key%'",
            &[],
        )
        .unwrap();
    assert!(rows.is_empty());
    let (code, _, _) = sql_error(collector.query("SELECT * FROM pg_file_settings", &[]));
    assert_eq!(code, "42501");
    let (code, _, _) = sql_error(collector.query("SELECT * FROM dex_collector.runs", &[]));
    assert_eq!(code, "42501", "the history is not readable unless granted");
    assert!(!summary.to_string().contains(DEFAULT_SERVICE_KEY));
}

#[test]
fn a_statement_timeout_ends_a_waiting_run_in_time_and_a_cancel_at_once() {
    let deployment =
        deployment().expect_warnings(&["to finish before statement_timeout (3s) cancels the call"]);
    deployment.stand_in.set_default_behavior(Behavior::Hang);
    let mut client = deployment.client();
    client
        .batch_execute("SET dex_collector.request_timeout = '60s'; SET statement_timeout = '3s'")
        .unwrap();
    // The run stops its requests in time to record them before the timeout would cancel it.
    let started = Instant::now();
    let summary: Value = client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["companiesProcessed"], 8, "{summary}");
    assert_eq!(summary["successfulCollections"], 0, "{summary}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a 60 s request was not waited out"
    );

    client.batch_execute("SET statement_timeout = 0").unwrap();
    let cancel_token = client.cancel_token();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let result = client.query_one("SELECT dex_collect_all()", &[]);
        (result.map(|_| ()), started.elapsed(), client)
    });
    assert!(
        deployment
            .stand_in
            .wait_for_requests(16, Duration::from_secs(20)),
        "the second run reached the endpoint"
    );
    cancel_token.cancel_query(postgres::NoTls).unwrap();
    let cancelled_at = Instant::now();
    let (result, elapsed, mut client) = waiter.join().unwrap();
    // At once: not after its requests (60 s each against an endpoint that hangs). Seconds of
    // margin for a busy machine; the interrupt is polled every 20 ms.
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "the cancelled call returned {:?} after the cancel",
        cancelled_at.elapsed()
    );
    let (code, message, _) = sql_error(result);
    assert_eq!(code, "57014");
    assert!(message.contains("user request"), "{message}");
    assert!(elapsed < Duration::from_secs(20));
    let running: i64 = client
        .query_one("SELECT count(*) FROM dex_collector.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        running, 1,
        "the first call's run, and none of the cancelled call's"
    );
    assert!(!deployment
        .cluster
        .log_contents()
        .contains("terminated by signal"));
}

/// `ALTER SYSTEM` of a dex_collector setting in a session that has not loaded the library:
/// PostgreSQL 15 and 16 refuse a name they do not know yet (hence the `LOAD` first in
/// docs/configuration.md); 17 stores it unchecked, and the value is checked when a session loads
/// the library: a bad one is a WARNING there, and the default stays.
#[test]
fn alter_system_without_the_library_loaded_follows_the_server_version() {
    // From 17 on, the invalid value stored below is refused, with a WARNING, by each session
    // that loads the library.
    let deployment = deployment().expect_warnings(&[
        "0 is outside the valid range for parameter \"dex_collector.concurrency\"",
    ]);
    let mut client = deployment.client();
    let major = server_major(&mut client);
    let stored = client.batch_execute("ALTER SYSTEM SET dex_collector.concurrency = 16");
    if major < 17 {
        let (code, message, _) = sql_error(stored);
        assert_eq!(code, "42704", "{message}");
        client.batch_execute("LOAD 'dex_collector'").unwrap();
        client
            .batch_execute("ALTER SYSTEM SET dex_collector.concurrency = 16")
            .unwrap();
    } else {
        stored.unwrap();
    }
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    let concurrency_in_new_session = || {
        let mut session = deployment.client();
        session.batch_execute("LOAD 'dex_collector'").unwrap();
        one::<String>(&mut session, "SHOW dex_collector.concurrency")
    };
    assert!(
        wait_until(Duration::from_secs(5), || concurrency_in_new_session()
            == "16"),
        "the stored value applies once the library is loaded"
    );
    if major < 17 {
        return;
    }

    let mut fresh = deployment.client();
    fresh
        .batch_execute("ALTER SYSTEM SET dex_collector.concurrency = 0")
        .unwrap();
    fresh.batch_execute("SELECT pg_reload_conf()").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || concurrency_in_new_session()
            == "8"),
        "an invalid stored value leaves the default"
    );
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    let log = deployment.cluster.log_contents();
    assert!(
        log.contains(
            "WARNING:  0 is outside the valid range for parameter \"dex_collector.concurrency\""
        ),
        "{log}"
    );
}
