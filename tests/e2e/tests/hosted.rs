//! docs/hosted.md as written: dex_collector in a sidecar PostgreSQL that reads the companies of a
//! hosted database through postgres_fdw. The hosted database is built as Supabase's are (the
//! design's schema with row level security, `postgres` no superuser, the API roles), takes SSL,
//! and lets `dex_reader` in over SSL with its password only; the sidecar preloads dex_collector
//! for the worker and calls a stand-in endpoint. The page's blocks run in order, each where its
//! first line says, with the test's host, port, password, files and URL in place of the
//! placeholders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dex_collector_e2e::cluster::{ClusterOptions, ServerFiles, TestCluster};
use dex_collector_e2e::deployment::{
    one, sample, sql_error, wait_until, Deployment, DeploymentOptions, SAMPLE_SCHEMA,
};
use dex_collector_e2e::readme;
use serde_json::Value;

const PAGE: &str = include_str!("../../../docs/hosted.md");
const ON_HOSTED: &str = "-- On the hosted database";
const ON_SIDECAR: &str = "-- On the sidecar";
const ANOTHER_SCHEMA: &str = "## 6. Another schema";
const READER_PASSWORD: &str = "test-reader-password-3f9c";

/// Supabase's roles as its init scripts make them, `postgres` demoted at the end (see
/// supabase.rs, which builds the self-hosted image with supautils on top).
const AS_SUPERUSER_FIRST: &str = "CREATE ROLE postgres SUPERUSER LOGIN;";
const AS_POSTGRES_WHILE_SUPERUSER: &str = "
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;";
const AS_SUPERUSER_THEN: &str = "
GRANT anon, authenticated, service_role TO postgres;
GRANT ALL ON DATABASE postgres TO postgres;
GRANT ALL ON SCHEMA public TO postgres;
ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;";
/// `dex_reader` only over SSL and with its password; everyone else as the harness has it.
const READER_HBA: &str = "hostssl all dex_reader 127.0.0.1/32 scram-sha-256\n\
                          host all dex_reader 127.0.0.1/32 reject\n";

/// A company added on the hosted side after the first run, with an active machine and
/// credentials.
const MANGO: &str = "a0000000-0000-4000-8000-000000000013";

/// The hosted database: a cluster whose bootstrap superuser is `supabase_admin`, database
/// `postgres`, SSL with a self-signed certificate.
struct Hosted {
    cluster: TestCluster,
    // Holds the certificate and key while the cluster runs.
    _files: ServerFiles,
}

impl Hosted {
    fn start() -> Hosted {
        let files = ServerFiles::new().unwrap();
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        let cert = files
            .write("server.crt", &certified.cert.pem(), 0o644)
            .unwrap();
        let key = files
            .write("server.key", &certified.signing_key.serialize_pem(), 0o600)
            .unwrap();
        let setting = |name: &str, value: &Path| (name.to_string(), value.display().to_string());
        let cluster = TestCluster::start(ClusterOptions {
            settings: vec![
                ("ssl".into(), "on".into()),
                setting("ssl_cert_file", &cert),
                setting("ssl_key_file", &key),
            ],
            database: "postgres".into(),
            superuser: "supabase_admin".into(),
            ..ClusterOptions::default()
        })
        .unwrap();
        cluster
            .connect()
            .unwrap()
            .batch_execute(AS_SUPERUSER_FIRST)
            .unwrap();
        postgres_on(&cluster)
            .batch_execute(AS_POSTGRES_WHILE_SUPERUSER)
            .unwrap();
        cluster
            .connect()
            .unwrap()
            .batch_execute(AS_SUPERUSER_THEN)
            .unwrap();
        // The tables belong to postgres, as the SQL editor makes them, behind row level security.
        postgres_on(&cluster).batch_execute(SAMPLE_SCHEMA).unwrap();
        let hba = cluster.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{READER_HBA}{rules}")).unwrap();
        cluster
            .connect()
            .unwrap()
            .batch_execute("SELECT pg_reload_conf()")
            .unwrap();
        Hosted {
            cluster,
            _files: files,
        }
    }
}

/// A new session as `postgres`, the role the Supabase SQL editor uses.
fn postgres_on(cluster: &TestCluster) -> postgres::Client {
    cluster.connect_as("postgres", "postgres").unwrap()
}

/// The sidecar with the page's recipe applied, and the hosted database it reads.
struct Setup {
    hosted: Hosted,
    sidecar: Deployment,
    pgpass: PathBuf,
}

impl Setup {
    /// Both clusters, the password file from the page's line, and every block of the page but
    /// those of `ANOTHER_SCHEMA`, in order; `expected_warnings` in the sidecar's log.
    fn start(expected_warnings: &[&str]) -> Setup {
        let hosted = Hosted::start();
        let sidecar = Deployment::start(DeploymentOptions {
            preload: true,
            settings: vec![("dex_collector.database".into(), "dex".into())],
            sample_schema: false,
            configure: false,
            ..DeploymentOptions::default()
        })
        .unwrap()
        .expect_warnings(expected_warnings);
        let lines = readme::fenced_blocks(PAGE, "text");
        assert_eq!(lines.len(), 1, "the password file's one line");
        let line = lines[0]
            .replace(
                "aws-0-eu-central-1.pooler.supabase.com:5432:",
                &format!("127.0.0.1:{}:", hosted.cluster.port()),
            )
            .replace("dex_reader.your-project-ref", "dex_reader")
            .replace("choose-a-long-random-password", READER_PASSWORD);
        let pgpass = sidecar
            .cluster
            .write_private_file("pgpass", line.as_bytes())
            .unwrap();
        let setup = Setup {
            hosted,
            sidecar,
            pgpass,
        };
        let (_, main_part) = readme::section(PAGE, ANOTHER_SCHEMA);
        let blocks = readme::sql_blocks(&main_part);
        assert!(blocks.len() >= 4, "{blocks:#?}");
        for block in &blocks {
            setup.run_block(block);
        }
        // A worker that connected before CREATE EXTENSION notices it on its next look (every
        // 10 s); after one run it starts queued runs at once, so the runs below time the run.
        let (warm_up, _) = setup.worker_run(Duration::from_secs(30));
        assert_eq!(warm_up["status"], "succeeded", "{warm_up}");
        setup
    }

    /// A block of the page where its first line says, with the placeholders replaced.
    fn run_block(&self, block: &str) {
        let runnable = block
            .replace("'aws-0-eu-central-1.pooler.supabase.com'", "'127.0.0.1'")
            .replace(
                "port '5432'",
                &format!("port '{}'", self.hosted.cluster.port()),
            )
            .replace("'dex_reader.your-project-ref'", "'dex_reader'")
            .replace(
                "'choose-a-long-random-password'",
                &format!("'{READER_PASSWORD}'"),
            )
            .replace(
                "'https://your-app.pages.dev'",
                &format!("'{}'", self.sidecar.stand_in.url()),
            )
            .replace(
                "'/etc/dex_collector/service_key'",
                &format!("'{}'", self.sidecar.key_file.display()),
            )
            .replace(
                "'/etc/dex_collector/pgpass'",
                &format!("'{}'", self.pgpass.display()),
            );
        for placeholder in [
            "your-",
            "supabase.com",
            "/etc/dex_collector",
            "choose-a-long",
        ] {
            assert!(
                !runnable.contains(placeholder),
                "a placeholder the test does not replace:\n{block}"
            );
        }
        if block.starts_with(ON_HOSTED) {
            postgres_on(&self.hosted.cluster)
                .batch_execute(&runnable)
                .unwrap_or_else(|e| {
                    panic!("the page's block failed on the hosted side:\n{block}\n{e:?}")
                });
        } else if block.starts_with(ON_SIDECAR) {
            // psql, as a reader would: statement by statement (ALTER SYSTEM refuses a block).
            self.sidecar.cluster.psql(&runnable).unwrap_or_else(|e| {
                panic!("the page's block failed on the sidecar:\n{block}\n{e}")
            });
        } else {
            panic!("a block must say where it runs ({ON_HOSTED:?} or {ON_SIDECAR:?}):\n{block}");
        }
    }

    fn sidecar_client(&self) -> postgres::Client {
        self.sidecar.client()
    }

    /// Queues a run for the worker and waits for its end: the run's row, and how long it took.
    fn worker_run(&self, limit: Duration) -> (Value, Duration) {
        let queued_at = Instant::now();
        let run_id: i64 = one(&mut self.sidecar_client(), "SELECT dex_collect_all_async()");
        let row_sql = format!("SELECT to_jsonb(r) FROM dex_collector.runs r WHERE id = {run_id}");
        let ended = wait_until(limit, || {
            let row: Value = one(&mut self.sidecar_client(), &row_sql);
            !matches!(row["status"].as_str(), Some("queued" | "running"))
        });
        let row: Value = one(&mut self.sidecar_client(), &row_sql);
        assert!(ended, "run {run_id} did not end within {limit:?}: {row}");
        (row, queued_at.elapsed())
    }

    /// The companies whose latest result, from run `run_id`, has `status`: read from their state,
    /// since `run_results` keeps only news (a company's first result, a failure, a change).
    fn latest_results(&self, run_id: i64, status: &str) -> BTreeSet<String> {
        self.sidecar_client()
            .query(
                "SELECT company_id::text FROM dex_collector.companies WHERE last_run_id = $1 AND last_status = $2",
                &[&run_id, &status],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

fn ids(companies: &[&str]) -> BTreeSet<String> {
    companies.iter().map(|id| id.to_string()).collect()
}

#[test]
fn the_page_collects_through_postgres_fdw_and_a_remote_down_fails_one_run_clearly() {
    let setup = Setup::start(&["could not connect to server \"hosted\""]);
    let mut client = setup.sidecar_client();

    // The page's first collection (a SQL call), through the foreign tables as dex_reader.
    let run: Value = one(
        &mut client,
        "SELECT to_jsonb(r) FROM dex_collector.runs r ORDER BY id LIMIT 1",
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    let first = run["id"].as_i64().unwrap();
    // Every company's first result is news: stored.
    let first_results = |status: &str| -> BTreeSet<String> {
        setup.sidecar_client()
            .query(
                "SELECT company_id::text FROM dex_collector.run_results WHERE run_id = $1 AND status = $2",
                &[&first, &status],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert_eq!(first_results("succeeded"), ids(&sample::CALLED));
    assert_eq!(first_results("skipped"), ids(&sample::SKIPPED));
    // The page ran the password block after that collection: the first run read the password
    // from the file alone.
    let options: Vec<String> = one(
        &mut client,
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'hosted' AND usename = 'postgres'",
    );
    assert!(
        options.contains(&format!("password={READER_PASSWORD}")),
        "{options:?}"
    );

    // Even the sidecar's superuser cannot read a Cantaloupe password through dex_reader.
    let (state, message, _) = sql_error(client.query_one(
        "SELECT dex_password FROM public.user_credentials LIMIT 1",
        &[],
    ));
    assert_eq!(state, "42501", "{message}");

    // A plain role of the sidecar: no password, no foreign table, no mapping of its own.
    client.batch_execute("CREATE ROLE plain LOGIN").unwrap();
    let mut plain = setup.sidecar.cluster.connect_as("plain", "dex").unwrap();
    let seen: Option<Vec<String>> = one(
        &mut plain,
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'hosted'",
    );
    assert_eq!(seen, None, "pg_user_mappings hides the mapping's options");
    for denied in [
        "SELECT umoptions::text FROM pg_catalog.pg_user_mapping",
        "SELECT count(*) FROM public.companies",
        "SELECT count(*) FROM public.user_credentials",
        "CREATE USER MAPPING FOR plain SERVER hosted OPTIONS (user 'dex_reader')",
        "SELECT dex_collect_all()",
    ] {
        let (state, message, _) = sql_error(plain.query_one(denied, &[]));
        assert_eq!(state, "42501", "{denied}: {message}");
    }

    // A company added on the hosted side is collected by the next run.
    postgres_on(&setup.hosted.cluster)
        .batch_execute(&format!(
            "INSERT INTO public.companies (id, company_name) VALUES ('{MANGO}', 'Mango Markets');
             INSERT INTO public.machines (company_id, case_serial) VALUES ('{MANGO}', 'SN-0013-1');
             INSERT INTO public.user_credentials (company_id, dex_username, dex_password)
             VALUES ('{MANGO}', 'mango', 'not-a-real-password');"
        ))
        .unwrap();
    let (run, _) = setup.worker_run(Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    let mut called = ids(&sample::CALLED);
    called.insert(MANGO.to_string());
    assert_eq!(
        setup.latest_results(run["id"].as_i64().unwrap(), "succeeded"),
        called
    );

    // The hosted database down: one failed run, at once, with the reason and no request; a SQL
    // call raises the same.
    setup.hosted.cluster.stop_server().unwrap();
    let requests_before = setup.sidecar.stand_in.request_count();
    let (run, took) = setup.worker_run(Duration::from_secs(60));
    eprintln!("hosted down: the worker's run failed after {took:?}: {run}");
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not connect to server \"hosted\""),
        "{error}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let started = Instant::now();
    let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    eprintln!(
        "hosted down: dex_collect_all() raised after {:?}: {message}",
        started.elapsed()
    );
    assert!(
        message.contains("could not connect to server \"hosted\""),
        "{message}"
    );
    assert_eq!(setup.sidecar.stand_in.request_count(), requests_before);
    // The SQL call left no run; the page's monitoring query shows the worker's.
    let monitoring = readme::sql_blocks(PAGE)
        .into_iter()
        .find(|block| block.contains("WHERE status = 'failed'"))
        .unwrap();
    let failed: Vec<String> = client
        .simple_query(&monitoring)
        .unwrap()
        .iter()
        .filter_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => {
                row.try_get("run_id").ok().flatten().map(str::to_string)
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![run["id"].to_string()]);
    let latest: i64 = one(&mut client, "SELECT max(id) FROM dex_collector.runs");
    assert_eq!(
        Some(latest),
        run["id"].as_i64(),
        "a SQL call that fails records no run"
    );

    // Up again: the next run goes on with every company.
    setup.hosted.cluster.start_again().unwrap();
    let (run, _) = setup.worker_run(Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        setup.latest_results(run["id"].as_i64().unwrap(), "succeeded"),
        called
    );

    // Another schema: the hosted `app` tables, read through the view the page makes.
    postgres_on(&setup.hosted.cluster)
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.companies (id uuid PRIMARY KEY, company_name text NOT NULL);
             CREATE TABLE app.machines (company_id uuid REFERENCES app.companies, status text);
             CREATE TABLE app.user_credentials (company_id uuid REFERENCES app.companies,
                                                username_encrypted text, password_encrypted text,
                                                is_active boolean);
             INSERT INTO app.companies VALUES
                 ('b0000000-0000-4000-8000-000000000001', 'Apex Vending'),
                 ('b0000000-0000-4000-8000-000000000002', 'Birch Snacks'),
                 ('b0000000-0000-4000-8000-000000000003', 'Cedar Coffee');
             INSERT INTO app.machines VALUES
                 ('b0000000-0000-4000-8000-000000000001', 'active'),
                 ('b0000000-0000-4000-8000-000000000002', 'active'),
                 ('b0000000-0000-4000-8000-000000000003', 'inactive');
             INSERT INTO app.user_credentials VALUES
                 ('b0000000-0000-4000-8000-000000000001', 'apex', 'secret', true),
                 ('b0000000-0000-4000-8000-000000000002', 'birch', 'secret', false);",
        )
        .unwrap();
    let (section, _) = readme::section(PAGE, ANOTHER_SCHEMA);
    let blocks = readme::sql_blocks(&section);
    assert_eq!(blocks.len(), 2, "{section}");
    for block in &blocks {
        setup.run_block(block);
    }
    let (run, _) = setup.worker_run(Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(
        setup.latest_results(run_id, "succeeded"),
        ids(&["b0000000-0000-4000-8000-000000000001"])
    );
    assert_eq!(
        setup.latest_results(run_id, "skipped"),
        ids(&["b0000000-0000-4000-8000-000000000002"]),
        "inactive credentials"
    );

    // The sidecar's log is checked when its deployment is dropped.
    setup.hosted.cluster.check_log(&[]).unwrap();
    let sidecar_log = setup.sidecar.cluster.log_contents();
    assert!(
        !sidecar_log.contains(READER_PASSWORD),
        "the password is not in the sidecar's log"
    );
}

/// A hosted database whose query hangs (here on a lock) fails the run within about
/// `dex_collector.run_deadline`, the time limit on the targets query, with an error that says the
/// query did not finish in time; the next run goes on. (Without that limit only the page's remote
/// `statement_timeout`, 5 minutes, would end such a run, with a cancel's message.)
#[test]
fn a_hanging_remote_fails_the_run_within_the_run_deadline() {
    let setup = Setup::start(&["did not finish within dex_collector.run_deadline"]);
    let mut client = setup.sidecar_client();
    // One statement at a time: ALTER SYSTEM refuses to run in a multi-statement batch.
    for statement in [
        "LOAD 'dex_collector'",
        "ALTER SYSTEM SET dex_collector.run_deadline = '5s'",
        "SELECT pg_reload_conf()",
    ] {
        client
            .batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
    }
    // The worker and new sessions take the reload; give the worker a moment for its SIGHUP.
    std::thread::sleep(Duration::from_secs(1));

    // A transaction on the hosted side that holds the companies: every read waits for it.
    let mut holder = postgres_on(&setup.hosted.cluster);
    holder
        .batch_execute("BEGIN; LOCK TABLE public.companies IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let requests_before = setup.sidecar.stand_in.request_count();
    let (run, took) = setup.worker_run(Duration::from_secs(120));
    eprintln!("hanging remote: the worker's run ended after {took:?}: {run}");
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not finish") && error.contains("run_deadline"),
        "the error says the targets query did not finish in time: {error}"
    );
    let duration = Duration::from_millis(run["duration_ms"].as_u64().unwrap_or(u64::MAX));
    assert!(
        duration < Duration::from_secs(8) && took < Duration::from_secs(12),
        "bounded by run_deadline (5s): the run took {duration:?}, {took:?} from queued to ended"
    );

    // A SQL call, likewise.
    let started = Instant::now();
    let (_, message, _) = sql_error(client.query_one("SELECT dex_collect_all()", &[]));
    let took = started.elapsed();
    eprintln!("hanging remote: dex_collect_all() raised after {took:?}: {message}");
    assert!(
        message.contains("did not finish") && message.contains("run_deadline"),
        "{message}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(setup.sidecar.stand_in.request_count(), requests_before);

    // The lock released, the next run goes on.
    holder.batch_execute("ROLLBACK").unwrap();
    let (run, _) = setup.worker_run(Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        setup.latest_results(run["id"].as_i64().unwrap(), "succeeded"),
        ids(&sample::CALLED)
    );

    // The sidecar's log is checked when its deployment is dropped.
    setup.hosted.cluster.check_log(&[]).unwrap();
}
