//! Every SQL example of the README runs as written, in order, through psql (those of the section
//! "Self-hosted Supabase" run in `supabase.rs`, on a Supabase-configured cluster): with the stand-in's
//! URL, key and a key file in place of the placeholders, and `postgres` (the database the README names)
//! mapped to the test database. A block that shows an error in a `-- ERROR:  ...` comment must
//! fail with that message.

use dex_collector_e2e::cluster::{ClusterOptions, TestCluster};
use dex_collector_e2e::deployment::{sample, SAMPLE_SCHEMA};
use dex_collector_e2e::readme::{self, SUPABASE_SECTION};
use dex_collector_e2e::stand_in::{StandIn, StandInConfig, DEFAULT_SERVICE_KEY};

const README: &str = include_str!("../../../README.md");

#[test]
fn every_sql_example_in_the_readme_runs_as_written() {
    let stand_in = StandIn::start(StandInConfig::default()).unwrap();
    let cluster = TestCluster::start(ClusterOptions {
        // As the README configures them (its database `postgres` is the test's `dex`).
        shared_preload_libraries: vec!["pg_cron".into(), "dex_collector".into()],
        settings: vec![
            ("cron.database_name".into(), "dex".into()),
            ("dex_collector.database".into(), "dex".into()),
        ],
        ..ClusterOptions::default()
    })
    .unwrap();
    let mut client = cluster.connect().unwrap();
    client.batch_execute(SAMPLE_SCHEMA).unwrap();
    // The README's targets_query is for the public deployment's columns; give the sample both.
    client
        .batch_execute(
            "ALTER TABLE public.user_credentials ADD COLUMN username_encrypted text, ADD COLUMN is_active boolean DEFAULT true;
             UPDATE public.user_credentials SET username_encrypted = dex_username;
             CREATE SCHEMA vault;
             CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text);
             CREATE FUNCTION vault.create_secret(new_secret text, new_name text) RETURNS uuid LANGUAGE sql AS
               $$ INSERT INTO vault.secrets VALUES (new_name, new_secret); SELECT gen_random_uuid() $$;
             CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;",
        )
        .unwrap();

    let key_file = cluster
        .write_private_file("service_key", format!("{DEFAULT_SERVICE_KEY}\n").as_bytes())
        .unwrap();
    let (_, elsewhere) = readme::section(README, SUPABASE_SECTION);
    let blocks = readme::sql_blocks(&elsewhere);
    assert!(blocks.len() >= 10, "found {} SQL examples", blocks.len());
    for block in &blocks {
        let runnable = block
            .replace(
                "'https://your-app.pages.dev'",
                &format!("'{}'", stand_in.url()),
            )
            .replace("'your-service-key'", &format!("'{DEFAULT_SERVICE_KEY}'"))
            .replace(
                "'/etc/dex_collector/service_key'",
                &format!("'{}'", key_file.display()),
            )
            .replace("DATABASE postgres", "DATABASE dex");
        let expected_error = block
            .lines()
            .find_map(|line| line.strip_prefix("-- ERROR:  "));
        match (cluster.psql(&runnable), expected_error) {
            (Ok(_), None) => {}
            (Err(error), None) => panic!("README example failed:\n{block}\n{error}"),
            (Ok(output), Some(expected)) => {
                panic!("README example did not fail with {expected:?}:\n{block}\n{output}")
            }
            (Err(error), Some(expected)) => assert!(
                error.to_string().contains(&format!("ERROR:  {expected}")),
                "README example failed otherwise than it says:\n{block}\n{error}"
            ),
        }
    }

    let mut client = cluster.connect().unwrap();
    let runs: i64 = client
        .query_one(
            "SELECT count(*) FROM dex_collector.runs WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 2, "dex_collect_all() and dex_collect_company() ran");
    let acme_requests = stand_in
        .requests()
        .iter()
        .filter(|r| r.company_id() == Some(sample::ACME))
        .count();
    assert_eq!(acme_requests, 2);
    let jobs: i64 = client
        .query_one("SELECT count(*) FROM cron.job", &[])
        .unwrap()
        .get(0);
    assert_eq!(jobs, 0, "scheduled, then unscheduled");
    let roles: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('dex_scheduler', 'dex_monitor')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(roles, 2);
    // The sales report's one row, as the README says.
    let (units, value): (i64, String) = {
        let row = client
            .query_one(
                "SELECT s.units, s.value::text
                   FROM (SELECT raw_content, lag(raw_content) OVER (ORDER BY captured_at) AS previous
                           FROM dex_captures) p,
                        dex_sales(p.previous, p.raw_content) s",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((units, value.as_str()), (38, "19.00"));
}
