//! Every SQL example of the README and of the pages in docs/ runs as written, in order, through
//! psql in one cluster: the README's, then those of each page of `readme::PAGES_IN_ORDER` (the
//! section "Self-hosted Supabase" runs in `supabase.rs`, on a Supabase-configured cluster, and
//! docs/hosted.md in `hosted.rs`): with the stand-in's URL, key and a key file in place of the
//! placeholders, and `postgres` (the database the examples name) mapped to the test database. A
//! block that shows an error in a `-- ERROR:  ...` comment must fail with that message. Every
//! page of docs/ is run here or said to be run elsewhere, and every link between the texts leads
//! to a file and heading that exist.

use std::path::Path;
use std::time::Duration;

use dex_collector_e2e::cluster::{ClusterOptions, TestCluster};
use dex_collector_e2e::deployment::{rows_read_as_monitor, sample, wait_until, SAMPLE_SCHEMA};
use dex_collector_e2e::readme::{
    self, PAGES_IN_ORDER, PAGES_RUN_ELSEWHERE, PAGES_WITHOUT_SQL, SUPABASE_PAGE, SUPABASE_SECTION,
};
use dex_collector_e2e::stand_in::{StandIn, StandInConfig, DEFAULT_SERVICE_KEY};

const README: &str = include_str!("../../../README.md");
/// The SQL examples of the README and the pages together, as they are today: fewer means one
/// was lost on the way (a fence misspelt, a page left out).
const AT_LEAST_BLOCKS: usize = 18;

/// Each text's SQL examples, in the order they run: the README's, then each page's.
fn examples_in_order() -> Vec<(String, Vec<String>)> {
    let mut texts = vec![("README.md".to_string(), README.to_string())];
    for name in PAGES_IN_ORDER {
        texts.push((format!("docs/{name}"), readme::page(name)));
    }
    let examples: Vec<(String, Vec<String>)> = texts
        .into_iter()
        .map(|(name, text)| {
            let (_, elsewhere) = readme::section(&text, SUPABASE_SECTION);
            let blocks = readme::sql_blocks(&elsewhere);
            assert!(!blocks.is_empty(), "{name} has no SQL example to run");
            (name, blocks)
        })
        .collect();
    let blocks: usize = examples.iter().map(|(_, blocks)| blocks.len()).sum();
    assert!(blocks >= AT_LEAST_BLOCKS, "found {blocks} SQL examples");
    examples
}

#[test]
fn every_page_of_docs_is_run_here_or_elsewhere() {
    let mut listed: Vec<String> = PAGES_IN_ORDER
        .iter()
        .chain(PAGES_RUN_ELSEWHERE)
        .chain(PAGES_WITHOUT_SQL)
        .map(|name| name.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        readme::pages_in_docs(),
        "every page of docs/ once in readme::PAGES_IN_ORDER, PAGES_RUN_ELSEWHERE or PAGES_WITHOUT_SQL"
    );
    for name in PAGES_WITHOUT_SQL {
        assert!(
            readme::sql_blocks(&readme::page(name)).is_empty(),
            "docs/{name} has SQL now: run it (readme::PAGES_IN_ORDER)"
        );
    }
    for name in PAGES_RUN_ELSEWHERE {
        assert!(
            !readme::sql_blocks(&readme::page(name)).is_empty(),
            "docs/{name}"
        );
    }
    let (section, _) = readme::section(&readme::page(SUPABASE_PAGE), SUPABASE_SECTION);
    assert!(
        !section.is_empty(),
        "docs/{SUPABASE_PAGE} has {SUPABASE_SECTION:?}"
    );
    examples_in_order();
}

#[test]
fn every_link_between_the_texts_leads_to_a_file_and_heading() {
    let root = readme::repository_root();
    let mut texts: Vec<String> = [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "BENCHMARKS.md",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    texts.extend(
        readme::pages_in_docs()
            .iter()
            .map(|name| format!("docs/{name}")),
    );
    let mut broken = Vec::new();
    for name in &texts {
        let path = root.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for link in readme::local_links(&text) {
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(file)
            };
            let found = target.exists()
                && (anchor.is_empty()
                    || std::fs::read_to_string(&target)
                        .is_ok_and(|target| readme::anchors(&target).iter().any(|a| a == anchor)));
            if !found {
                broken.push(format!("{name}: {link}"));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}

#[test]
fn every_sql_example_in_the_readme_and_docs_runs_as_written() {
    let stand_in = StandIn::start(StandInConfig::default()).unwrap();
    let receiver = || {
        StandIn::start(StandInConfig {
            receiver_status: Some(200),
            ..StandInConfig::default()
        })
        .unwrap()
    };
    let (webhook, heartbeat) = (receiver(), receiver());
    let cluster = TestCluster::start(ClusterOptions {
        // As the examples configure them (their database `postgres` is the test's `dex`).
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
    // The targets_query of docs/configuration.md is for the public deployment's columns; give the
    // sample both.
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
    for (name, block) in examples_in_order()
        .iter()
        .flat_map(|(name, blocks)| blocks.iter().map(move |block| (name, block)))
    {
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
            .replace("DATABASE postgres", "DATABASE dex")
            .replace(
                "'https://hooks.slack.com/services/T000/B000/XXXX'",
                &format!("'{}/services/T000/B000/XXXX'", webhook.url()),
            )
            .replace(
                "'https://hc-ping.com/your-check-uuid'",
                &format!("'{}/your-check-uuid'", heartbeat.url()),
            );
        let expected_error = block
            .lines()
            .find_map(|line| line.strip_prefix("-- ERROR:  "));
        match (cluster.psql(&runnable), expected_error) {
            (Ok(_), None) => {}
            (Err(error), None) => panic!("{name}: example failed:\n{block}\n{error}"),
            (Ok(output), Some(expected)) => {
                panic!("{name}: example did not fail with {expected:?}:\n{block}\n{output}")
            }
            (Err(error), Some(expected)) => assert!(
                error.to_string().contains(&format!("ERROR:  {expected}")),
                "{name}: example failed otherwise than it says:\n{block}\n{error}"
            ),
        }
    }

    // docs/monitoring.md's webhook gets the events there were by then, text first.
    assert!(wait_until(Duration::from_secs(60), || !webhook
        .requests()
        .is_empty()));
    for request in webhook.requests() {
        assert_eq!(request.path, "/services/T000/B000/XXXX");
        assert!(String::from_utf8_lossy(&request.body).starts_with(r#"{"text":"dex_collector: "#));
    }

    let mut client = cluster.connect().unwrap();
    // The run docs/scheduling.md queued for the worker, done by now.
    assert!(wait_until(Duration::from_secs(60), || {
        client
            .query_one(
                "SELECT count(*) FROM dex_collector.runs WHERE status IN ('queued', 'running')",
                &[],
            )
            .is_ok_and(|row| row.get::<_, i64>(0) == 0)
    }));
    let runs: i64 = client
        .query_one(
            "SELECT count(*) FROM dex_collector.runs WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        runs, 4,
        "the README's dex_collect_all(), then docs/scheduling.md's dex_collect_all(), dex_collect_company() and dex_collect_all_async()"
    );
    let acme_requests = stand_in
        .requests()
        .iter()
        .filter(|r| r.company_id() == Some(sample::ACME))
        .count();
    assert_eq!(acme_requests, 4, "one per run");
    let jobs: Vec<String> = client
        .query("SELECT jobname FROM cron.job", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        jobs,
        ["purge-cron-history"],
        "dex_collect_all scheduled, then unscheduled; operations.md's cleanup of pg_cron's log stays"
    );
    let roles: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('dex_scheduler', 'dex_monitor')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(roles, 2);
    // privileges.md's grants are all the monitoring role needs to read health and the metrics.
    let monitored = rows_read_as_monitor(&mut client).unwrap_or_else(|error| panic!("{error:?}"));
    assert_eq!(monitored, 2);
    // The sales report's one row, as docs/dex-sql.md says.
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
