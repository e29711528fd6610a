//! The demo behind the README's first command: a throwaway cluster with the design's schema,
//! a stand-in endpoint on loopback answering as a real deployment would (including failures),
//! one real `SELECT dex_collect_all()`, and the run it recorded.

use std::process::ExitCode;
use std::time::Duration;

use dex_collector_e2e::deployment::{sample, Deployment, DeploymentOptions};
use dex_collector_e2e::stand_in::{Behavior, StandInConfig};

fn main() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let deployment = Deployment::start(DeploymentOptions {
        stand_in: StandInConfig {
            latency: Duration::from_millis(150),
            ..StandInConfig::default()
        },
        ..DeploymentOptions::default()
    })?;
    let stand_in = &deployment.stand_in;
    stand_in.set_behavior(
        sample::ACME,
        Behavior::Collect {
            records: 12,
            machines: 3,
        },
    );
    stand_in.set_behavior(sample::BETA, Behavior::ServerError);
    stand_in.set_behavior(
        sample::COASTAL,
        Behavior::Paged {
            total_records: 40,
            machines_per_page: 2,
        },
    );
    stand_in.set_behavior(sample::HARBOR, Behavior::NothingNew);
    stand_in.set_behavior(
        sample::ISLAND,
        Behavior::CollectionFailed("Cantaloupe login failed".into()),
    );
    stand_in.set_behavior(
        sample::KEYSTONE,
        Behavior::FailTimes {
            failures: 1,
            status: 503,
            retry_after: None,
            then: Box::new(Behavior::Collect {
                records: 4,
                machines: 1,
            }),
        },
    );
    println!(
        "A throwaway PostgreSQL 15 is running on port {} with the design's schema (12 companies, row level\n\
         security on) and dex_collector; a stand-in for /api/dex/collect-bulk answers at {}\n\
         (150 ms per answer; Beta Snacks fails with HTTP 500, Island Coffee's Cantaloupe login fails,\n\
         Coastal Refreshments has 3 pages, Keystone Kiosks is unavailable once and then collects).\n",
        deployment.cluster.port(),
        stand_in.url()
    );
    let script = "\\echo '=> SELECT jsonb_pretty(dex_collect_all());'
SELECT jsonb_pretty(dex_collect_all());
\\echo '=> The run, as recorded in dex_collector.runs and dex_collector.run_results:'
SELECT id, status, trigger, companies_total AS total, companies_processed AS called,
       companies_succeeded AS ok, companies_failed AS failed, companies_skipped AS skipped,
       records_collected AS records, duration_ms
  FROM dex_collector.runs ORDER BY id;
SELECT company_name, status, http_status, pages, attempts, records_collected AS records, error
  FROM dex_collector.run_results ORDER BY company_name;
";
    print!("{}", deployment.cluster.psql(script)?);
    println!(
        "The endpoint received {} requests. The cluster and the stand-in are removed now.",
        stand_in.request_count()
    );
    Ok(())
}
