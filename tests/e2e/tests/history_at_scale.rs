//! The monitoring queries of docs/monitoring.md over the history the default retention keeps for
//! 1,000 companies: 14 days of 5-minute runs, 4 million `run_results` rows, generated in SQL. Each
//! query must be answered by index probes per company (its plan is asserted, never its time); the
//! times are printed, and `scripts/bench.sh --history` records them.

use dex_collector_e2e::deployment::{one, Deployment, DeploymentOptions};
use dex_collector_e2e::readme;
use serde_json::Value;

const MONITORING: &str = include_str!("../../../docs/monitoring.md");
const GENERATOR: &str = include_str!("../../fixtures/history_generator.sql");
const RUNS: u32 = 4032;
const COMPANIES: u32 = 1000;

/// The queries of docs/monitoring.md's first sql block, each with its comment line.
fn monitoring_queries() -> Vec<String> {
    let blocks = readme::sql_blocks(MONITORING);
    blocks[0]
        .split(";\n")
        .map(str::trim)
        .filter(|query| !query.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every node of a plan, as "Node Type on relation (index)", with the rows it read: those it
/// returned and those its filter or recheck removed, over all its loops.
fn plan_nodes(plan: &Value, nodes: &mut Vec<(String, u64)>) {
    let text = |key: &str| {
        plan.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let count = |key: &str| plan.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let read = (count("Actual Rows")
        + count("Rows Removed by Filter")
        + count("Rows Removed by Index Recheck"))
        * count("Actual Loops").max(1.0);
    nodes.push((
        format!(
            "{} on {} ({})",
            text("Node Type"),
            text("Relation Name"),
            text("Index Name")
        ),
        read as u64,
    ));
    for child in plan
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        plan_nodes(child, nodes);
    }
}

#[test]
fn the_monitoring_queries_probe_indexes_at_four_million_results() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    let mut client = deployment.client();
    // The history as 0.2.0 kept it; the upgrade to this version builds each company's state from it.
    client
        .batch_execute(&format!(
            "DROP EXTENSION dex_collector; CREATE EXTENSION dex_collector VERSION '0.2.0';
             SET dex_gen.runs = '{RUNS}'; SET dex_gen.companies = '{COMPANIES}';\n{GENERATOR}"
        ))
        .unwrap();
    client
        .batch_execute("VACUUM (ANALYZE) dex_collector.runs")
        .unwrap();
    client
        .batch_execute("VACUUM (ANALYZE) dex_collector.run_results")
        .unwrap();
    let upgrade = std::time::Instant::now();
    client
        .batch_execute("ALTER EXTENSION dex_collector UPDATE")
        .unwrap();
    println!(
        "ALTER EXTENSION dex_collector UPDATE over the history: {:.1} s",
        upgrade.elapsed().as_secs_f64()
    );
    client
        .batch_execute("VACUUM (ANALYZE) dex_collector.companies")
        .unwrap();
    let states: Vec<(String, i64)> = client
        .query(
            "SELECT state, count(*) FROM dex_collector.companies GROUP BY state ORDER BY state",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    println!("companies by state after the upgrade: {states:?}");
    // Each company's latest result, found another way, is what its state says.
    let mismatched: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.companies c
           FULL JOIN (SELECT DISTINCT ON (company_id) company_id, run_id, status
                        FROM dex_collector.run_results ORDER BY company_id, run_id DESC) l
             ON l.company_id = c.company_id
          WHERE c.last_run_id IS DISTINCT FROM l.run_id OR c.last_status IS DISTINCT FROM l.status",
    );
    assert_eq!(mismatched, 0);
    // The generator's 50 companies that always fail (an open episode, whether the last run's
    // deadline skipped them or not), and its 20 always skipped.
    let always_failing: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.companies
          WHERE alerted AND state IN ('failing', 'skipped') AND last_success_at IS NULL
            AND consecutive_failures > 4000",
    );
    assert_eq!(always_failing, 50);
    let always_skipped: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.companies
          WHERE state = 'skipped' AND last_called_run_id IS NULL",
    );
    assert_eq!(always_skipped, 20);
    let (rows, bytes): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), pg_total_relation_size('dex_collector.run_results')
                   FROM dex_collector.run_results",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(rows, i64::from(RUNS) * i64::from(COMPANIES));
    // The upgrade counted every result of the history into its day's rollup.
    let rolled_up: i64 = one(
        &mut client,
        "SELECT (sum(attempts) + sum(skipped))::bigint FROM dex_collector.daily_rollups",
    );
    assert_eq!(rolled_up, rows);
    println!(
        "run_results: {rows} rows, {} MB with indexes, {} bytes per company-run",
        bytes / 1_000_000,
        bytes / rows
    );

    let queries = monitoring_queries();
    assert_eq!(queries.len(), 8, "{queries:#?}");
    for query in &queries {
        let mut times = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let explained: Value = client
                .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {query}"), &[])
                .unwrap_or_else(|e| panic!("{query}: {e:?}"))
                .get(0);
            times.push(explained[0]["Execution Time"].as_f64().unwrap_or(f64::NAN));
            nodes.clear();
            plan_nodes(&explained[0]["Plan"], &mut nodes);
        }
        let title = query.lines().next().unwrap_or_default();
        println!("{title}\n    execution times (ms): {times:.1?}");
        // One company's history is 4,032 results; a query that reads more of run_results than a
        // few companies' reads it whole, whatever the scan (an index-only or bitmap scan of every
        // row passes for a probe by its node type).
        let history_read: u64 = nodes
            .iter()
            .filter(|(node, _)| node.contains(" on run_results "))
            .map(|(_, read)| read)
            .sum();
        assert!(
            history_read <= 3 * u64::from(RUNS),
            "{title} reads {history_read} rows of the history:\n{nodes:#?}"
        );
    }
}
