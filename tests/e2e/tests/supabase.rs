//! dex_collector on a self-hosted Supabase database, built from the real parts (supautils and
//! Supabase Vault from third_party/, pg_cron) and configured as Supabase's images are: the
//! bootstrap superuser is `supabase_admin`, the role people log in as, `postgres`, is not a
//! superuser but supautils' privileged role, and dex_collector is a privileged extension with the
//! after-create script this repository ships. Every step is taken as `postgres` unless said.

use std::time::Duration;

use dex_collector_e2e::cluster::{ClusterOptions, ServerFiles, TestCluster};
use dex_collector_e2e::deployment::{
    one, sample, server_major, sql_error, wait_until, OFFER_ABANDONED_EVENTS_AGAIN, SAMPLE_SCHEMA,
};
use dex_collector_e2e::readme;
use dex_collector_e2e::stand_in::{Behavior, StandIn, StandInConfig, DEFAULT_SERVICE_KEY};
use serde_json::Value;

const AFTER_CREATE: &str =
    include_str!("../../../supabase/extension-custom-scripts/dex_collector/after-create.sql");
/// The subsection of docs/privileges.md's Supabase section run as `supabase_admin`, after the
/// API roles are shown to have nothing.
const REALTIME_SECTION: &str = "### Alerts in Supabase Realtime";
/// What the GitHub workflow runs in Supabase's real images, run here on Supabase's parts.
const SCENARIO: &str = include_str!("../../supabase/scenario.sql");

/// The grants Supabase's own after-create scripts give `postgres` on pg_cron and Vault
/// (supabase/postgres, ansible/files/postgresql_extension_custom_scripts/).
const PG_CRON_AFTER_CREATE: &str = "
GRANT USAGE ON SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA cron TO postgres WITH GRANT OPTION;
REVOKE ALL ON TABLE cron.job FROM postgres;
GRANT SELECT ON TABLE cron.job TO postgres WITH GRANT OPTION;";
const VAULT_AFTER_CREATE: &str = "
GRANT USAGE ON SCHEMA vault TO postgres WITH GRANT OPTION;
GRANT SELECT, DELETE ON vault.secrets, vault.decrypted_secrets TO postgres WITH GRANT OPTION;
GRANT EXECUTE ON FUNCTION vault.create_secret, vault.update_secret TO postgres WITH GRANT OPTION;";

/// Supabase's roles, as its init scripts and migrations make them: `postgres` is created a
/// superuser, sets up schema `extensions` and the API roles' default privileges, and is then
/// demoted (migrations/db/init-scripts/, migrations/db/migrations/10000000000000_demote-postgres.sql).
const AS_SUPERUSER_FIRST: &str = "CREATE ROLE postgres SUPERUSER LOGIN;";
const AS_POSTGRES_WHILE_SUPERUSER: &str = "
ALTER USER supabase_admin WITH SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS;
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR USER supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR USER supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;";
/// Realtime's publication and `auth.jwt()`, as Supabase's init scripts and migrations make them
/// (migrations/db/init-scripts/00000000000000-initial-schema.sql creates the publication empty;
/// `auth.jwt()` reads the claims PostgREST and Realtime put in `request.jwt.claims`).
const REALTIME_AND_AUTH: &str = "
CREATE PUBLICATION supabase_realtime;
CREATE SCHEMA auth AUTHORIZATION supabase_admin;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                    nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;";
const AS_SUPERUSER_THEN: &str = r#"
ALTER ROLE postgres SET search_path TO "$user", public, extensions;
ALTER ROLE authenticated INHERIT;
ALTER ROLE anon INHERIT;
ALTER ROLE service_role INHERIT;
GRANT anon, authenticated, service_role TO postgres;
GRANT ALL ON DATABASE postgres TO postgres;
GRANT ALL ON SCHEMA public TO postgres;
ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;"#;

struct Supabase {
    stand_in: StandIn,
    cluster: TestCluster,
    /// The custom scripts and the Vault key script, kept while the cluster runs.
    files: ServerFiles,
}

impl Supabase {
    fn start() -> Supabase {
        let stand_in = StandIn::start(StandInConfig::default()).unwrap();
        let files = ServerFiles::new().unwrap();
        files
            .write(
                "scripts/dex_collector/after-create.sql",
                AFTER_CREATE,
                0o644,
            )
            .unwrap();
        files
            .write(
                "scripts/pg_cron/after-create.sql",
                PG_CRON_AFTER_CREATE,
                0o644,
            )
            .unwrap();
        files
            .write(
                "scripts/supabase_vault/after-create.sql",
                VAULT_AFTER_CREATE,
                0o644,
            )
            .unwrap();
        let getkey = files
            .write(
                "vault-getkey.sh",
                "#!/bin/sh\necho 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
                0o755,
            )
            .unwrap();
        let setting = |name: &str, value: &str| (name.to_string(), value.to_string());
        let cluster = TestCluster::start(ClusterOptions {
            shared_preload_libraries: vec![
                "supautils".into(),
                "pg_cron".into(),
                "supabase_vault".into(),
                "dex_collector".into(),
            ],
            settings: vec![
                setting("supautils.superuser", "supabase_admin"),
                setting("supautils.privileged_role", "postgres"),
                setting(
                    "supautils.privileged_extensions",
                    "pg_cron, pgcrypto, supabase_vault, dex_collector",
                ),
                setting(
                    "supautils.extension_custom_scripts_path",
                    &files.dir().join("scripts").to_string_lossy(),
                ),
                setting(
                    "supautils.reserved_roles",
                    "supabase_admin, service_role, authenticated, anon",
                ),
                setting("vault.getkey_script", &getkey.to_string_lossy()),
                setting("cron.database_name", "postgres"),
                // As Supabase's postgresql.conf has it, for Realtime and replication.
                setting("wal_level", "logical"),
                setting("dex_collector.database", "postgres"),
            ],
            database: "postgres".into(),
            superuser: "supabase_admin".into(),
        })
        .unwrap();
        cluster
            .connect()
            .unwrap()
            .batch_execute(AS_SUPERUSER_FIRST)
            .unwrap();
        postgres(&cluster)
            .batch_execute(AS_POSTGRES_WHILE_SUPERUSER)
            .unwrap();
        cluster
            .connect()
            .unwrap()
            .batch_execute(&format!("{AS_SUPERUSER_THEN}{REALTIME_AND_AUTH}"))
            .unwrap();
        Supabase {
            stand_in,
            cluster,
            files,
        }
    }
}

/// A new session as `postgres`.
fn postgres(cluster: &TestCluster) -> postgres::Client {
    cluster.connect_as("postgres", "postgres").unwrap()
}

#[test]
fn postgres_creates_collects_schedules_monitors_and_grants_and_the_api_roles_get_nothing() {
    let supabase = Supabase::start();
    let cluster = &supabase.cluster;
    let mut client = postgres(cluster);
    assert!(!one::<bool>(
        &mut client,
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ));

    // The companies, behind row level security that shows an API role none of them.
    client.batch_execute(SAMPLE_SCHEMA).unwrap();

    // The section of docs/privileges.md, as written, as postgres.
    let (section, _) = readme::section(
        &readme::page(readme::SUPABASE_PAGE),
        readme::SUPABASE_SECTION,
    );
    let (realtime, setup) = readme::section(&section, REALTIME_SECTION);
    let blocks = readme::sql_blocks(&setup);
    assert_eq!(blocks.len(), 3, "{setup}");
    for block in &blocks {
        let runnable = block
            .replace(
                "'https://your-app.pages.dev'",
                &format!("'{}'", supabase.stand_in.url()),
            )
            .replace("'your-service-key'", &format!("'{DEFAULT_SERVICE_KEY}'"));
        postgres(cluster)
            .batch_execute(&runnable)
            .unwrap_or_else(|e| panic!("example failed:\n{block}\n{e:?}"));
    }
    let mut client = postgres(cluster);
    let owner: String = one(
        &mut client,
        "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'dex_collector'",
    );
    assert_eq!(owner, "supabase_admin", "created through supautils");
    // But not updated through it, as docs/privileges.md says: supautils 3.4 runs the statement as
    // supabase_admin, then again as postgres, whom PostgreSQL refuses. A supautils that stops
    // doing so fails this, and the page says otherwise then.
    let update = client.batch_execute("ALTER EXTENSION dex_collector UPDATE");
    let refused = update.as_ref().err().and_then(|error| error.as_db_error());
    assert_eq!(
        refused.map(|error| error.message()),
        Some("must be owner of extension dex_collector"),
        "{update:?}"
    );
    let may_collect = "SELECT has_function_privilege('postgres', 'extensions.dex_collect_all()', 'EXECUTE WITH GRANT OPTION')";
    assert!(
        one::<bool>(&mut client, may_collect),
        "postgres may use and pass on the collection"
    );
    // monitoring.md's statement that offers abandoned events again runs as postgres.
    client.batch_execute(OFFER_ABANDONED_EVENTS_AGAIN).unwrap();
    // supautils runs the after-create script after every CREATE EXTENSION, even one that finds
    // the extension there: it settles grants lost since.
    cluster
        .connect()
        .unwrap()
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION extensions.dex_collect_all() FROM postgres CASCADE",
        )
        .unwrap();
    assert!(!one::<bool>(&mut client, may_collect));
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS dex_collector SCHEMA extensions")
        .unwrap();
    assert!(
        one::<bool>(&mut client, may_collect),
        "the after-create script ran"
    );
    // The collection read the site URL and the key from the real Vault, through RLS.
    let summary: Value = one(
        &mut client,
        "SELECT to_jsonb(r) FROM dex_collector.runs r ORDER BY id LIMIT 1",
    );
    assert_eq!(summary["companies_succeeded"], 8, "{summary}");
    assert!(supabase
        .stand_in
        .requests()
        .iter()
        .all(|request| request.header("x-service-key") == Some(DEFAULT_SERVICE_KEY)));
    let job: String = one(
        &mut client,
        "SELECT command FROM cron.job WHERE username = 'postgres'",
    );
    assert_eq!(job, "SELECT extensions.dex_collect_all()");
    let failing: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.company_status WHERE consecutive_failures > 0",
    );
    assert_eq!(failing, 0);
    let mut monitor = cluster.connect_as("dex_monitor", "postgres").unwrap();
    assert_eq!(
        one::<i64>(
            &mut monitor,
            "SELECT count(*) FROM dex_collector.run_summary"
        ),
        1
    );
    let (state, _, _) = sql_error(monitor.query_one("SELECT extensions.dex_collect_all()", &[]));
    assert_eq!(state, "42501", "reading is not collecting");

    // An API role: no collection, no history, no targets, no key, and no DEX function either
    // (PostgREST would serve them to anonymous callers).
    let mut api = postgres(cluster);
    api.batch_execute("SET ROLE authenticated").unwrap();
    for denied in [
        "SELECT extensions.dex_collect_all()",
        "SELECT extensions.dex_parse('DXS*1*VA*V0/6*1'::text)",
        "SELECT extensions.dex_collect_all_async()",
        "SELECT dex_collector.schedule()",
        "SELECT count(*) FROM dex_collector.runs",
        "SELECT count(*) FROM dex_collector.run_summary",
        "SELECT count(*) FROM vault.decrypted_secrets",
    ] {
        let (state, message, _) = sql_error(api.query_one(denied, &[]));
        assert_eq!(state, "42501", "{denied}: {message}");
    }
    // Not one privilege of any kind on the extension's tables, views and sequence (on 17 the
    // default privileges' ALL includes MAINTAIN: VACUUM, ANALYZE, LOCK TABLE, REFRESH).
    let granted: Vec<String> = client
        .query(
            "SELECT format('%s %s %s', c.relname,
                           CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                           a.privilege_type)
               FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.relnamespace = 'dex_collector'::regnamespace
                AND (a.grantee = 0
                     OR a.grantee IN ('anon'::regrole, 'authenticated'::regrole, 'service_role'::regrole))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(granted.is_empty(), "{granted:#?}");
    assert_eq!(
        one::<i64>(&mut api, "SELECT count(*) FROM public.companies"),
        0,
        "RLS"
    );

    // The events in Supabase Realtime, as docs/privileges.md says, as supabase_admin: Realtime
    // streams the publication's tables and sends a subscriber a row only if the subscriber's role,
    // with its JWT's claims, may SELECT it.
    let realtime_blocks = readme::sql_blocks(&realtime);
    assert_eq!(realtime_blocks.len(), 1, "{realtime}");
    cluster
        .connect()
        .unwrap()
        .batch_execute(&realtime_blocks[0])
        .unwrap_or_else(|e| panic!("example failed:\n{}\n{e:?}", realtime_blocks[0]));
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM pg_publication_tables
              WHERE pubname = 'supabase_realtime' AND schemaname = 'dex_collector' AND tablename = 'events'"
        ),
        1
    );
    // Collections still write events under row level security: three failures, one more.
    let events_before: i64 = one(&mut client, "SELECT count(*) FROM dex_collector.events");
    supabase
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    for _ in 0..3 {
        client
            .batch_execute("SELECT extensions.dex_collect_all()")
            .unwrap();
    }
    supabase.stand_in.reset();
    let as_subscriber = |claims: &str| -> i64 {
        let mut api = postgres(cluster);
        api.batch_execute(&format!(
            "SELECT set_config('request.jwt.claims', '{claims}', false); SET ROLE authenticated"
        ))
        .unwrap();
        one(
            &mut api,
            "SELECT count(*) FROM dex_collector.events WHERE kind = 'failing'",
        )
    };
    assert_eq!(
        one::<i64>(&mut client, "SELECT count(*) FROM dex_collector.events"),
        events_before + 1
    );
    assert_eq!(
        as_subscriber(
            r#"{"role": "authenticated", "app_metadata": {"dex_collector_alerts": true}}"#
        ),
        1,
        "a user the policy names reads the event"
    );
    assert_eq!(
        as_subscriber(
            r#"{"role": "authenticated", "app_metadata": {}, "user_metadata": {"dex_collector_alerts": true}}"#
        ),
        0,
        "any other signed-in user reads none"
    );
    let mut anonymous = postgres(cluster);
    anonymous.batch_execute("SET ROLE anon").unwrap();
    let (state, _, _) =
        sql_error(anonymous.query_one("SELECT count(*) FROM dex_collector.events", &[]));
    assert_eq!(state, "42501", "anon gets nothing");
    // postgres may call them, and grant them to a role of its choosing.
    assert!(one::<bool>(
        &mut client,
        "SELECT extensions.dex_parse('DXS*1*VA*V0/6*1'::text) IS NOT NULL"
    ));
    client
        .batch_execute(
            "CREATE ROLE dex_reader NOLOGIN;
             GRANT EXECUTE ON FUNCTION extensions.dex_parse(text) TO dex_reader",
        )
        .unwrap();
    assert!(one::<bool>(
        &mut client,
        "SELECT has_function_privilege('dex_reader', 'extensions.dex_parse(text)', 'EXECUTE')"
    ));

    // The preloaded worker serves the Supabase database.
    let queued: i64 = one(&mut postgres(cluster), "SELECT dex_collect_all_async()");
    assert!(wait_until(Duration::from_secs(30), || {
        one::<String>(
            &mut postgres(cluster),
            &format!("SELECT status FROM dex_collector.runs WHERE id = {queued}"),
        ) == "succeeded"
    }));

    // The pg_cron job postgres scheduled runs as postgres (every minute now, to see it run).
    let mut client = postgres(cluster);
    one::<i64>(&mut client, "SELECT dex_collector.schedule('* * * * *')");
    assert!(
        wait_until(Duration::from_secs(75), || {
            one::<i64>(
                &mut postgres(cluster),
                "SELECT count(*) FROM dex_collector.runs WHERE trigger = 'pg_cron' AND status = 'succeeded'",
            ) >= 1
        }),
        "{}",
        cluster.log_contents()
    );

    // postgres can dump the database, history included.
    let dump = cluster.root_dir().join("postgres.sql");
    cluster
        .run_program(
            "pg_dump",
            &["-U", "postgres", "-f", &dump.to_string_lossy(), "postgres"],
        )
        .unwrap();
    // pg_dump keeps an extension table's grants, not its policies or row level security, and its
    // place in a publication only from 18 on: docs/privileges.md says to run the Realtime block
    // again after a restore.
    let dumped = std::fs::read_to_string(&dump).unwrap();
    assert!(dumped.contains("GRANT SELECT ON TABLE dex_collector.events TO authenticated;"));
    for not_kept in [
        "CREATE POLICY alert_readers",
        "ALTER TABLE dex_collector.events ENABLE ROW LEVEL SECURITY",
    ] {
        assert!(!dumped.contains(not_kept), "the dump has {not_kept:?} now");
    }
    let publication = "ALTER PUBLICATION supabase_realtime ADD TABLE ONLY dex_collector.events;";
    assert_eq!(
        dumped.contains(publication),
        server_major(&mut client) >= 18,
        "PostgreSQL 18's pg_dump is the first to keep an extension table's publication"
    );

    // DROP EXTENSION as postgres takes the job; created again in public, the database's default
    // privileges for supabase_admin do not hand any of its functions to the API roles.
    client
        .batch_execute("DROP EXTENSION dex_collector")
        .unwrap();
    assert_eq!(one::<i64>(&mut client, "SELECT count(*) FROM cron.job"), 0);
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT (SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime')
                  + (SELECT count(*) FROM pg_policies WHERE policyname = 'alert_readers')"
        ),
        0,
        "the table's place in the publication and its policy went with it"
    );
    client
        .batch_execute("CREATE EXTENSION dex_collector")
        .unwrap();
    for role in ["anon", "authenticated", "service_role"] {
        let (collect, parse): (bool, bool) = {
            let row = client
                .query_one(
                    "SELECT has_function_privilege($1, 'public.dex_collect_all()', 'EXECUTE'),
                            has_function_privilege($1, 'public.dex_parse(text)', 'EXECUTE')",
                    &[&role],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!((collect, parse), (false, false), "{role}");
    }
    assert!(one::<bool>(
        &mut client,
        "SELECT has_function_privilege('postgres', 'public.dex_collect_all()', 'EXECUTE WITH GRANT OPTION')"
    ));

    // As docs/privileges.md warns: supautils lets any login role drop a privileged extension.
    client.batch_execute("CREATE ROLE nobody LOGIN").unwrap();
    let mut nobody = cluster.connect_as("nobody", "postgres").unwrap();
    nobody
        .batch_execute("DROP EXTENSION dex_collector")
        .unwrap();

    cluster.check_log(&[]).unwrap();
    assert!(
        !cluster.log_contents().contains(DEFAULT_SERVICE_KEY),
        "the key is not in the server log"
    );
}

#[test]
fn the_image_scenario_passes_on_supabases_parts() {
    let supabase = Supabase::start();
    let cluster = &supabase.cluster;
    postgres(cluster).batch_execute(SAMPLE_SCHEMA).unwrap();
    let scenario = supabase
        .files
        .write("scenario.sql", SCENARIO, 0o644)
        .unwrap();
    let output = cluster
        .run_program(
            "psql",
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                &format!("site_url={}", supabase.stand_in.url()),
                "-v",
                &format!("service_key={DEFAULT_SERVICE_KEY}"),
                "-f",
                &scenario.to_string_lossy(),
            ],
        )
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.log_contents()));
    assert!(output.contains("scenario: passed"), "{output}");
    cluster.check_log(&[]).unwrap();
}
