//! A whole deployment for tests, the demo and the benchmark: a throwaway cluster with the design's
//! schema and the extension, pointed at a stand-in endpoint.
//!
//! The extension must already be installed into the PostgreSQL that `pg_config` names
//! (`cargo pgrx install`; the README's commands do it).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;

use crate::cluster::{files_under, ClusterOptions, TestCluster};
use crate::stand_in::{StandIn, StandInConfig};

/// The design's three tables with row level security and a dozen companies.
/// docs/monitoring.md's statement that offers the webhook's abandoned events again, afresh.
pub const OFFER_ABANDONED_EVENTS_AGAIN: &str = "UPDATE dex_collector.events
   SET abandoned_at = NULL, next_delivery_at = NULL, refusals = 0, delivery_attempts = 0
 WHERE abandoned_at IS NOT NULL";

pub const SAMPLE_SCHEMA: &str = include_str!("../../fixtures/sample_schema.sql");

/// The sample companies (see `tests/fixtures/sample_schema.sql`).
pub mod sample {
    pub const ACME: &str = "a0000000-0000-4000-8000-000000000001";
    pub const BETA: &str = "a0000000-0000-4000-8000-000000000002";
    pub const COASTAL: &str = "a0000000-0000-4000-8000-000000000003";
    /// Active machines, no credentials row: skipped.
    pub const DELTA: &str = "a0000000-0000-4000-8000-000000000004";
    /// Active machines, a credentials row with a NULL dex_username: skipped.
    pub const EVERGREEN: &str = "a0000000-0000-4000-8000-000000000005";
    /// Inactive machines only: not a target.
    pub const FRESH: &str = "a0000000-0000-4000-8000-000000000006";
    /// No machines at all: not a target.
    pub const GOLDEN: &str = "a0000000-0000-4000-8000-000000000007";
    pub const HARBOR: &str = "a0000000-0000-4000-8000-000000000008";
    /// Active and inactive machines: a target.
    pub const ISLAND: &str = "a0000000-0000-4000-8000-000000000009";
    pub const JUPITER: &str = "a0000000-0000-4000-8000-000000000010";
    pub const KEYSTONE: &str = "a0000000-0000-4000-8000-000000000011";
    pub const LAKESIDE: &str = "a0000000-0000-4000-8000-000000000012";

    /// The companies the endpoint is called for, in the targets' order (by name).
    pub const CALLED: [&str; 8] = [
        ACME, BETA, COASTAL, HARBOR, ISLAND, JUPITER, KEYSTONE, LAKESIDE,
    ];
    /// Targets skipped for missing credentials.
    pub const SKIPPED: [&str; 2] = [DELTA, EVERGREEN];
}

pub struct DeploymentOptions {
    /// Put dex_collector in `shared_preload_libraries` (the background worker needs it).
    pub preload: bool,
    /// Other libraries to preload, e.g. `pg_cron`.
    pub also_preload: Vec<String>,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
    /// The database of the schema and the extension: `dex`, or `postgres` as on Supabase.
    pub database: String,
    pub stand_in: StandInConfig,
    /// Load the sample schema (off for schemas a test builds itself).
    pub sample_schema: bool,
    /// Create the extension and point it at the stand-in (off to do it as a test's own steps).
    pub configure: bool,
    /// WARNINGs the test means to cause: a part of each such line. Any other WARNING in the
    /// server log, or a panic, backtrace or crash, fails the test when the deployment is dropped.
    pub expected_warnings: Vec<String>,
}

impl DeploymentOptions {
    /// pg_cron preloaded and serving the test database; the extension left for the test to create
    /// (in the schema, or at the version, it wants).
    pub fn with_pg_cron_unconfigured() -> Self {
        DeploymentOptions {
            also_preload: vec!["pg_cron".into()],
            settings: vec![("cron.database_name".into(), "dex".into())],
            configure: false,
            ..DeploymentOptions::default()
        }
    }

    /// The defaults with the stand-in keeping no log of requests: a benchmark's tens of
    /// thousands of them would be memory and time the measurement does not want.
    pub fn for_benchmark() -> Self {
        DeploymentOptions {
            stand_in: StandInConfig {
                record_requests: false,
                ..StandInConfig::default()
            },
            ..DeploymentOptions::default()
        }
    }
}

impl Default for DeploymentOptions {
    fn default() -> Self {
        DeploymentOptions {
            preload: false,
            also_preload: Vec::new(),
            settings: Vec::new(),
            database: "dex".to_owned(),
            stand_in: StandInConfig::default(),
            sample_schema: true,
            configure: true,
            expected_warnings: Vec::new(),
        }
    }
}

pub struct Deployment {
    pub stand_in: StandIn,
    pub cluster: TestCluster,
    /// The file holding the stand-in's service key, as `dex_collector.service_key_file` names it.
    pub key_file: std::path::PathBuf,
    /// See [`DeploymentOptions::expected_warnings`]; a test may add to them as it goes.
    pub expected_warnings: Vec<String>,
}

/// Fails early, with the fix, when the extension is not installed in the PostgreSQL under test,
/// or when the installed library is older than the tree: the suite would test another build.
fn ensure_extension_installed() -> Result<(), Box<dyn Error>> {
    let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".to_string());
    let ask = |flag: &str| -> Result<std::path::PathBuf, Box<dyn Error>> {
        let output = std::process::Command::new(&pg_config).arg(flag).output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().into())
    };
    let control = ask("--sharedir")?.join("extension/dex_collector.control");
    let library = ask("--pkglibdir")?.join("dex_collector.so");
    let install = format!(
        "install the extension (cargo pgrx install --pg-config {pg_config}), or run ./scripts/test.sh which does it"
    );
    if !control.exists() || !library.exists() {
        return Err(format!("{} is missing: {install}", control.display()).into());
    }
    let installed_at = std::fs::metadata(&library)?.modified()?;
    if let Some(newer) = newer_source(installed_at) {
        return Err(format!(
            "the installed {} is older than {}: {install}",
            library.display(),
            newer.display()
        )
        .into());
    }
    Ok(())
}

/// A source file of the extension changed after `installed_at`, if any.
fn newer_source(installed_at: std::time::SystemTime) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = [
        "src",
        "sql",
        "crates/collector-core/src",
        "crates/dex-parse/src",
        "crates/jsonb-binary/src",
        "Cargo.toml",
        "dex_collector.control",
    ]
    .iter()
    .map(|path| root.join(path));
    files_under(sources).into_iter().find(|path| {
        std::fs::metadata(path)
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified > installed_at)
    })
}

impl Deployment {
    /// Starts the stand-in and the cluster, writes the key file, loads the schema, creates the
    /// extension and points it at the stand-in with `ALTER DATABASE ... SET` (see
    /// [`Deployment::configure_sql`]).
    pub fn start(options: DeploymentOptions) -> Result<Deployment, Box<dyn Error>> {
        ensure_extension_installed()?;
        let service_key = options.stand_in.service_key.clone();
        let stand_in = StandIn::start(options.stand_in)?;
        let mut preload = options.also_preload;
        if options.preload {
            preload.push("dex_collector".to_string());
        }
        let cluster = TestCluster::start(ClusterOptions {
            shared_preload_libraries: preload,
            settings: options.settings,
            database: options.database,
            ..ClusterOptions::default()
        })?;
        let key_file =
            cluster.write_private_file("service_key", format!("{service_key}\n").as_bytes())?;
        let mut client = cluster.connect()?;
        if options.sample_schema {
            client.batch_execute(SAMPLE_SCHEMA)?;
        }
        let deployment = Deployment {
            stand_in,
            cluster,
            key_file,
            expected_warnings: options.expected_warnings,
        };
        if !options.configure {
            return Ok(deployment);
        }
        client
            .batch_execute("CREATE EXTENSION dex_collector")
            .map_err(|e| {
                let reason = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_string());
                format!("CREATE EXTENSION dex_collector failed: {reason}")
            })?;
        client.batch_execute(&deployment.configure_sql())?;
        Ok(deployment)
    }

    /// Points the deployment's database at the stand-in: its URL, and the key file (new sessions).
    pub fn configure_sql(&self) -> String {
        self.configure_sql_in(self.cluster.database())
    }

    /// [`Deployment::configure_sql`] for another `database` of the cluster.
    pub fn configure_sql_in(&self, database: &str) -> String {
        format!(
            "ALTER DATABASE {database} SET dex_collector.site_url = '{}';
             ALTER DATABASE {database} SET dex_collector.service_key_file = '{}';",
            self.stand_in.url(),
            self.key_file.display(),
        )
    }

    /// A new superuser session (it sees the database's settings as they are now).
    pub fn client(&self) -> postgres::Client {
        self.cluster
            .connect()
            .unwrap_or_else(|e| panic!("cannot connect: {e}"))
    }

    /// A new session listening on channel dex_collector, where every event goes out with NOTIFY.
    pub fn listener(&self) -> postgres::Client {
        let mut client = self.client();
        client
            .batch_execute("LISTEN dex_collector")
            .unwrap_or_else(|e| panic!("LISTEN dex_collector: {e}"));
        client
    }

    /// Adds WARNINGs the test means to cause (see [`DeploymentOptions::expected_warnings`]).
    pub fn expect_warnings(mut self, warnings: &[&str]) -> Deployment {
        self.expected_warnings
            .extend(warnings.iter().map(|warning| warning.to_string()));
        self
    }

    /// Fails with the server log's unexpected lines ([`TestCluster::check_log`]) if it has any. A
    /// benchmark checks it before it reports, so that figures from a server that panicked or
    /// warned on the way are not reported as a clean run's; dropping the deployment checks it
    /// again, so that every test searches its server's log.
    pub fn check_log(&self) -> Result<(), String> {
        let expected: Vec<&str> = self.expected_warnings.iter().map(String::as_str).collect();
        self.cluster.check_log(&expected)
    }

    /// `SELECT dex_collect_all()` in a new session.
    pub fn collect_all(&self) -> Value {
        self.client()
            .query_one("SELECT dex_collect_all()", &[])
            .unwrap_or_else(|e| panic!("dex_collect_all() failed: {e}"))
            .get(0)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // A test already failing says why; its log is not the news.
        if std::thread::panicking() {
            return;
        }
        if let Err(unexpected) = self.check_log() {
            panic!("{unexpected}");
        }
    }
}

/// A summary's `results[]`, by company id.
pub fn results_by_company(summary: &Value) -> BTreeMap<String, Value> {
    summary["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| Some((result["company_id"].as_str()?.to_string(), result.clone())))
        .collect()
}

/// A summary's `skipped[]` company ids, in order.
pub fn skipped_ids(summary: &Value) -> Vec<String> {
    summary["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|skipped| skipped["company_id"].as_str().map(str::to_string))
        .collect()
}

/// The SQLSTATE, message and hint of a statement that must fail with a server error.
pub fn sql_error(
    result: Result<impl std::fmt::Debug, postgres::Error>,
) -> (String, String, Option<String>) {
    let error = result.expect_err("the statement must fail");
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {error}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        db.hint().map(str::to_string),
    )
}

/// The payloads that arrived on a [`Deployment::listener`], waiting `wait` for the first and as
/// long again after each for more.
pub fn notifications(listener: &mut postgres::Client, wait: Duration) -> Vec<Value> {
    let mut received = Vec::new();
    let mut notifications = listener.notifications();
    let mut pending = notifications.timeout_iter(wait);
    while let Ok(Some(notification)) = pending.next() {
        assert_eq!(notification.channel(), "dex_collector");
        received.push(
            serde_json::from_str(notification.payload())
                .unwrap_or_else(|e| panic!("{}: {e}", notification.payload())),
        );
    }
    received
}

/// `SELECT dex_collect_company(company_id)` in `client`'s session: the run's summary.
pub fn collect_company(client: &mut postgres::Client, company_id: &str) -> Value {
    client
        .query_one("SELECT dex_collect_company($1::text::uuid)", &[&company_id])
        .unwrap_or_else(|e| panic!("dex_collect_company({company_id}) failed: {e}"))
        .get(0)
}

/// The one value `sql` returns; panics with the statement and error otherwise.
pub fn one<T: for<'a> postgres::types::FromSql<'a>>(client: &mut postgres::Client, sql: &str) -> T {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// How many rows the monitoring role of privileges.md reads, as that role, from `health` (its one
/// row) and `metrics` (the `dex_collector_alerts_unsent` metric's one): 2 once its grants are all
/// there. A grant missing is returned as the error, with the role reset either way.
pub fn rows_read_as_monitor(client: &mut postgres::Client) -> Result<i64, postgres::Error> {
    client.batch_execute("SET ROLE dex_monitor")?;
    let read = client
        .query_one(
            "SELECT (SELECT count(*) FROM dex_collector.health)
                    + (SELECT count(*) FROM dex_collector.metrics
                        WHERE metric = 'dex_collector_alerts_unsent')",
            &[],
        )
        .map(|row| row.get(0));
    client.batch_execute("RESET ROLE")?;
    read
}

/// The version `CREATE EXTENSION dex_collector` makes: the installed control file's default.
pub fn available_version(client: &mut postgres::Client) -> String {
    one(
        client,
        "SELECT default_version FROM pg_available_extensions WHERE name = 'dex_collector'",
    )
}

/// The version of the extension created in the client's database.
pub fn installed_version(client: &mut postgres::Client) -> String {
    one(
        client,
        "SELECT extversion FROM pg_extension WHERE extname = 'dex_collector'",
    )
}

/// The server's major version (15, 16, 17), for behaviour that differs between them.
pub fn server_major(client: &mut postgres::Client) -> i32 {
    let number: String = one(client, "SHOW server_version_num");
    number
        .parse::<i32>()
        .unwrap_or_else(|e| panic!("server_version_num {number}: {e}"))
        / 10_000
}

/// Polls `done` every 100 ms until it says so or `limit` passes; its last answer.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}
