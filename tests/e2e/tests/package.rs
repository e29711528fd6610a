//! The installable packages (`scripts/package.sh`), installed into a system that has PostgreSQL
//! and nothing else. `scripts/test-package.sh` installs each package there and runs this test
//! program against it; a plain `cargo test` would test the developer's own build instead, so it
//! leaves these to that script (`--ignored`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dex_collector_e2e::deployment::{
    available_version, installed_version, one, sample, wait_until, Deployment, DeploymentOptions,
};
use dex_collector_e2e::stand_in::StandInConfig;

const RUN_BY: &str = "run by scripts/test-package.sh in a system with a package installed";

#[test]
#[ignore = "run by scripts/test-package.sh in a system with a package installed"]
fn a_package_creates_the_extension_collects_and_runs_its_worker() {
    let deployment = Deployment::start(DeploymentOptions {
        preload: true,
        also_preload: vec!["pg_cron".into()],
        settings: vec![
            ("dex_collector.database".into(), "dex".into()),
            ("cron.database_name".into(), "dex".into()),
        ],
        stand_in: StandInConfig::default(),
        ..DeploymentOptions::default()
    })
    .unwrap_or_else(|e| panic!("{RUN_BY}: {e}"));
    let mut client = deployment.client();
    assert_eq!(
        installed_version(&mut client),
        available_version(&mut client)
    );
    // The server runs from the bindir `pg_config` names: in the script's imitation of Supabase's
    // Nix-built server, started through the wrapper script there.
    let server_bindir: String = one(
        &mut client,
        "SELECT setting FROM pg_config WHERE name = 'BINDIR'",
    );
    assert_eq!(
        canonical(server_bindir.into()),
        canonical(pg_config_bindir())
    );

    let summary = deployment.collect_all();
    assert_eq!(summary["success"], true, "{summary}");
    assert_eq!(
        summary["successfulCollections"],
        sample::CALLED.len(),
        "{summary}"
    );

    // The background worker, woken by a queued run.
    let run_id: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    let finished = wait_until(Duration::from_secs(30), || {
        let status: String = one(
            &mut deployment.client(),
            &format!("SELECT status FROM dex_collector.runs WHERE id = {run_id}"),
        );
        status == "succeeded"
    });
    assert!(finished, "the worker did not finish run {run_id}");

    // pg_cron takes the schedule (its running the job is the operations suite's).
    client
        .batch_execute("CREATE EXTENSION pg_cron")
        .unwrap_or_else(|e| panic!("CREATE EXTENSION pg_cron: {e}"));
    let job: i64 = one(&mut client, "SELECT dex_collector.schedule('*/15 * * * *')");
    assert!(job > 0);

    // The DEX functions.
    let machine: String = one(
        &mut client,
        "SELECT dex_parse('DXS*9252131001*VA*V1/1*1\r\nID1*123456789\r\nDXE*1*1\r\n'::text)
                #>> '{machine,serial}'",
    );
    assert_eq!(machine, "123456789");
}

#[test]
#[ignore = "run by scripts/test-package.sh in a system with a package installed"]
fn a_package_updates_the_previous_release() {
    let deployment = Deployment::start(DeploymentOptions {
        configure: false,
        ..DeploymentOptions::default()
    })
    .unwrap_or_else(|e| panic!("{RUN_BY}: {e}"));
    let mut client = deployment.client();
    client
        .batch_execute(
            "CREATE EXTENSION dex_collector VERSION '0.1.0';
             ALTER EXTENSION dex_collector UPDATE;",
        )
        .unwrap_or_else(|e| panic!("0.1.0, then UPDATE: {e}"));
    assert_eq!(
        installed_version(&mut client),
        available_version(&mut client)
    );
    client.batch_execute(&deployment.configure_sql()).unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["success"], true, "{summary}");
}

/// `pg_config --bindir`, of the `pg_config` that `PG_CONFIG` names as the clusters' does.
fn pg_config_bindir() -> PathBuf {
    let pg_config = std::env::var_os("PG_CONFIG").unwrap_or_else(|| "pg_config".into());
    let output = Command::new(&pg_config)
        .arg("--bindir")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", pg_config.to_string_lossy()));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn canonical(path: PathBuf) -> PathBuf {
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
