//! Every `dex_collector.*` setting, defined and validated in one place.
//!
//! All settings but `dex_max_bytes` are `SUSET`: superusers (or roles granted `SET` on the
//! parameter) can change them with `ALTER SYSTEM`, `ALTER DATABASE ... SET`, `ALTER ROLE ... SET`
//! or `SET`. The `dex_collector` prefix is reserved, so a misspelt name is an error.
//!
//! No setting holds the service key (see `service_key.rs`): it comes from Supabase Vault or from
//! the file `service_key_file` names. The old `dex_collector.service_key` is kept only as a name
//! that refuses every value and says where the key goes instead. An unset `site_url` falls back
//! to the Vault secret `dex_collector_site_url`.

use std::ffi::CString;
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::prelude::*;

use crate::history::{AlertPolicy, Recording, Retention};
use crate::pg::{self, Rejection, StringCheck};
use crate::readonly;
use crate::service_key::{is_valid_header_value, read_key_file, KeyFileError};
use dex_collector_core::alert::validate_delivery_url;
use dex_collector_core::endpoint::{validate_site_url, EndpointConfig};
use dex_collector_core::history_sql::HistoryDetail;
use dex_collector_core::history_sql::{
    DEFAULT_EVENT_RETENTION_DAYS, DEFAULT_HISTORY_RETENTION_DAYS, DEFAULT_ROLLUP_RETENTION_DAYS,
};

static SITE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SERVICE_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `dex_collector.service_key` of 0.1.0: defined only to refuse values with a useful message.
static RETIRED_SERVICE_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TARGETS_QUERY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TARGETS_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static ADAPTIVE_CONCURRENCY: GucSetting<bool> = GucSetting::<bool>::new(false);
static MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(64);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static MAX_PAGES: GucSetting<i32> = GucSetting::<i32>::new(50);
static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(2);
static MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
static RUN_DEADLINE_MS: GucSetting<i32> = GucSetting::<i32>::new(4 * 60 * 1000);
static WORKER_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static WORKER_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(0);
static HISTORY_RETENTION_S: GucSetting<i32> =
    GucSetting::<i32>::new(days_in_seconds(DEFAULT_HISTORY_RETENTION_DAYS));
static EVENT_RETENTION_S: GucSetting<i32> =
    GucSetting::<i32>::new(days_in_seconds(DEFAULT_EVENT_RETENTION_DAYS));
static ROLLUP_RETENTION_S: GucSetting<i32> =
    GucSetting::<i32>::new(days_in_seconds(DEFAULT_ROLLUP_RETENTION_DAYS));

const fn days_in_seconds(days: u32) -> i32 {
    (days * 24 * 3600) as i32
}
static HISTORY_DETAIL: GucSetting<DetailSetting> =
    GucSetting::<DetailSetting>::new(DetailSetting::Changes);
static ALERT_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static HEARTBEAT_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ALERT_AFTER_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(3);
static ALERT_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(3600);
static DEX_MAX_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// The highest `dex_collector.dex_max_bytes`: the worst input this long (lines that each add a
/// record, the most output per byte, about 35 bytes of jsonb each) still fits in jsonb's
/// 255 MB, and its parse stays within about 0.5 GB of the backend's memory.
const DEX_MAX_BYTES_LIMIT: i32 = 4 * 1024 * 1024;

/// `dex_collector.history_detail` as PostgreSQL parses it: see [`HistoryDetail`].
#[derive(Debug, Clone, Copy, PostgresGucEnum)]
enum DetailSetting {
    #[name = c"changes"]
    Changes,
    #[name = c"all"]
    All,
}

impl From<DetailSetting> for HistoryDetail {
    fn from(setting: DetailSetting) -> HistoryDetail {
        match setting {
            DetailSetting::Changes => HistoryDetail::Changes,
            DetailSetting::All => HistoryDetail::All,
        }
    }
}

/// The configuration cannot be used: raised before any request is sent. No variant holds the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("dex_collector is not configured: it has no {}{}",
        missing_parts(*site_url, *service_key),
        retired_key_note(retired_key_set_in))]
    Missing {
        site_url: bool,
        service_key: bool,
        /// Where the retired `dex_collector.service_key` is still set (places, never values).
        retired_key_set_in: Vec<String>,
    },
    #[error("invalid dex_collector.site_url: {reason}")]
    InvalidSiteUrl { reason: String },
    #[error("invalid Vault secret dex_collector_service_key: it must be printable ASCII without spaces or control characters")]
    InvalidVaultServiceKey,
    #[error("unusable dex_collector.service_key_file {path:?}: {error}")]
    KeyFile {
        path: String,
        #[source]
        error: KeyFileError,
    },
    #[error("could not read dex_collector secrets from Supabase Vault: {reason}")]
    Vault { reason: String },
    #[error("could not look for the retired dex_collector.service_key: {reason}")]
    Catalog { reason: String },
    #[error("unusable dex_collector.ca_file: {reason}")]
    CaFile { reason: String },
    #[error("could not read the dex_collector settings stored for this database: {reason}")]
    Stored { reason: String },
    #[error("could not read the call's timeouts: {reason}")]
    Timeouts { reason: String },
    /// A statement or transaction timeout that would cancel a SQL call before it could collect.
    #[error("{setting} ({value}) leaves this call too little time to collect: it would be cancelled, and its history lost")]
    CallTimeoutTooShort { setting: String, value: String },
    /// A delivery URL from Vault (`secret`, or the setting of that name) that cannot be used.
    #[error("invalid {secret}: {reason}")]
    InvalidDeliveryUrl {
        secret: &'static str,
        reason: String,
    },
}

/// What a [`ConfigError::Missing`] lacks, in words.
fn missing_parts(site_url: bool, service_key: bool) -> String {
    let mut missing = Vec::new();
    if site_url {
        missing
            .push("site URL (dex_collector.site_url, or the Vault secret dex_collector_site_url)");
    }
    if service_key {
        missing.push("service key (the Vault secret dex_collector_service_key, or a file named by dex_collector.service_key_file)");
    }
    missing.join(" and no ")
}

/// Where the retired `dex_collector.service_key` is still set, if anywhere.
fn retired_key_note(set_in: &[String]) -> String {
    if set_in.is_empty() {
        return String::new();
    }
    format!(
        "; dex_collector.service_key is still set ({}) but no longer read: any role can read a setting, and the server logs its new value on reload",
        set_in.join(", ")
    )
}

/// Vault secret names read when the matching setting is unset.
pub const VAULT_SITE_URL: &str = "dex_collector_site_url";
pub const VAULT_SERVICE_KEY: &str = "dex_collector_service_key";
pub const VAULT_ALERT_URL: &str = "dex_collector_alert_url";
pub const VAULT_HEARTBEAT_URL: &str = "dex_collector_heartbeat_url";
/// The key of the webhook's signature: a Vault secret only.
pub const VAULT_ALERT_SECRET: &str = "dex_collector_alert_secret";

/// Registers every setting; called once from `_PG_init`.
pub fn define() {
    pg::define_checked_string::<SiteUrlCheck>(
        c"dex_collector.site_url",
        c"Base URL of the web app that serves /api/dex/collect-bulk (http or https).",
        c"For example https://your-app.pages.dev. Empty: read the Vault secret dex_collector_site_url.",
        &SITE_URL,
        GucContext::Suset,
        GucFlags::default(),
    );
    pg::define_checked_string::<RetiredServiceKeyCheck>(
        c"dex_collector.service_key",
        c"No longer read: the key is the Vault secret dex_collector_service_key or the file dex_collector.service_key_file names.",
        c"Any value is refused: a setting is readable by other roles and logged on reload.",
        &RETIRED_SERVICE_KEY,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"dex_collector.service_key_file",
        c"File holding the service key sent as X-Service-Key, when Vault has no dex_collector_service_key.",
        c"Read at the start of every run. Owned by the server's user with mode 0600, or by root with 0640.",
        &SERVICE_KEY_FILE,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"dex_collector.targets_query",
        c"SQL returning company_id uuid, company_name text [, has_credentials boolean].",
        c"Replaces the built-in rule (companies with an active machine; skipped without DEX credentials). \
          Runs read-only with search_path = pg_catalog, pg_temp: qualify table names.",
        &TARGETS_QUERY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"dex_collector.targets_role",
        c"The role whose rights the targets query runs with.",
        c"Empty: the one owner of the built-in rule's three tables, the database's owner for targets_query. \
          Functions the query calls, directly or through views, run as this role, which must see every company.",
        &TARGETS_ROLE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"dex_collector.database",
        c"The database the background worker connects to (its runs, queue and history live there).",
        c"Needs a server restart. The worker runs only with shared_preload_libraries = 'dex_collector'.",
        &WORKER_DATABASE,
        // Only the postmaster may define a restart-only setting; a session loading the library
        // later gets one it can merely read.
        if pg::loading_shared_preload_libraries() {
            GucContext::Postmaster
        } else {
            GucContext::Sighup
        },
        GucFlags::default(),
    );
    pg::define_checked_string::<DeliveryUrlCheck>(
        c"dex_collector.alert_url",
        c"The background worker POSTs each event here (a Slack or Discord incoming webhook, or your own).",
        c"Empty: the Vault secret dex_collector_alert_url, or none. A URL with a token in it belongs in Vault.",
        &ALERT_URL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    pg::define_checked_string::<DeliveryUrlCheck>(
        c"dex_collector.heartbeat_url",
        c"The background worker pings this after each finished run; with a path segment fail (before any query) after a failed one.",
        c"Empty: the Vault secret dex_collector_heartbeat_url, or none (healthchecks.io and its peers).",
        &HEARTBEAT_URL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.alert_after_failures",
        c"A company is failing (an event, a NOTIFY) after this many failures in a row.",
        c"Or after dex_collector.alert_after without a success, whichever comes first; a success ends it.",
        &ALERT_AFTER_FAILURES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.alert_after",
        c"A company is failing after failing for this long without a success; 0: only alert_after_failures counts.",
        c"Judged when a result is recorded: runs that stop altogether are the heartbeat's and the health view's to see.",
        &ALERT_AFTER_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.interval",
        c"How often the background worker runs a collection by itself; 0 turns that off.",
        c"pg_cron stays the main scheduler; this is for servers without it.",
        &WORKER_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.history_retention",
        c"The background worker deletes runs older than this (with their results); 0 keeps all.",
        c"",
        &HISTORY_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.event_retention",
        c"The background worker deletes events older than this; 0 keeps all.",
        c"",
        &EVENT_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.rollup_retention",
        c"The background worker deletes daily rollups of days older than this; 0 keeps all.",
        c"",
        &ROLLUP_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_enum_guc(
        c"dex_collector.history_detail",
        c"Which results get a row of dex_collector.run_results: changes, or all.",
        c"changes: failures, skips, the first success after either, and successes with more pages pending or another HTTP status; every result is counted in runs and daily_rollups either way.",
        &HISTORY_DETAIL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"dex_collector.ca_file",
        c"PEM file of extra CA certificates trusted for https site URLs.",
        c"Added to the system's trusted roots.",
        &CA_FILE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.concurrency",
        c"How many companies are collected at once.",
        c"",
        &CONCURRENCY,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"dex_collector.adaptive_concurrency",
        c"Whether a run finds how many companies to collect at once from the endpoint's answers.",
        c"Rises while answers come as fast as the fastest, falls on 429, 503, dropped requests and queueing; starts at 0.85 times where the latest adaptive runs settled (the median of the latest three, of two the higher, and no higher than where a refused run of the last hour settled unless the latest settled higher; the first at dex_collector.concurrency), at most dex_collector.max_concurrency.",
        &ADAPTIVE_CONCURRENCY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.max_concurrency",
        c"The most companies an adaptive run collects at once.",
        c"",
        &MAX_CONCURRENCY,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.request_timeout",
        c"Time limit for one HTTP request, answer body included.",
        c"",
        &REQUEST_TIMEOUT_MS,
        100,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.connect_timeout",
        c"Time limit for opening a connection to the endpoint.",
        c"",
        &CONNECT_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.run_deadline",
        c"Time limit for a whole run; past it no company is started and requests in flight are cancelled.",
        c"Keep it under the schedule's interval so that runs never pile up.",
        &RUN_DEADLINE_MS,
        1_000,
        86_400_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.max_pages",
        c"Most pages fetched for one company in one run (batching.hasMore paging).",
        c"",
        &MAX_PAGES,
        1,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.max_retries",
        c"Retries of a request that failed transiently (connection error, timeout, 429, 502, 503, 504).",
        c"",
        &MAX_RETRIES,
        0,
        10,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dex_collector.dex_max_bytes",
        c"Largest input dex_parse(), dex_validate() and dex_segments() accept; larger input is refused unread.",
        c"Protects the backend's memory: dex_parse() takes about 20 times its input at peak. At most 4MB.",
        &DEX_MAX_BYTES,
        1,
        DEX_MAX_BYTES_LIMIT,
        GucContext::Userset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"dex_collector.max_response_bytes",
        c"Largest answer body read from the endpoint; a larger one is abandoned.",
        c"",
        &MAX_RESPONSE_BYTES,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    pg::reserve_prefix(c"dex_collector");
}

/// `dex_collector.dex_max_bytes`: the largest DEX input the DEX functions read.
pub fn dex_max_bytes() -> usize {
    usize::try_from(DEX_MAX_BYTES.get()).unwrap_or(0)
}

/// The worker's settings, read anew at each turn of its loop (they change on SIGHUP).
pub struct WorkerSettings {
    /// Run a collection this often; `None`: only queued runs.
    pub interval: Option<Duration>,
    /// What the worker deletes, and after how long.
    pub retention: Retention,
}

impl WorkerSettings {
    pub fn current() -> WorkerSettings {
        WorkerSettings {
            interval: nonzero_seconds(WORKER_INTERVAL_S.get()),
            retention: retention(),
        }
    }
}

/// How long each kind of history is kept.
pub fn retention() -> Retention {
    Retention {
        runs: nonzero_seconds(HISTORY_RETENTION_S.get()),
        events: nonzero_seconds(EVENT_RETENTION_S.get()),
        rollups: nonzero_seconds(ROLLUP_RETENTION_S.get()),
    }
}

/// A setting in seconds, `None` for 0 (off).
fn nonzero_seconds(value: i32) -> Option<Duration> {
    Some(Duration::from_secs(u64::from(positive(value)))).filter(|d| !d.is_zero())
}

/// The database the background worker connects to.
pub fn worker_database() -> String {
    string_setting(&WORKER_DATABASE).unwrap_or_else(|| "postgres".to_string())
}

/// Everything one run needs, resolved from the settings (and Vault) at its start.
#[derive(Clone)]
pub struct Settings {
    pub endpoint: EndpointConfig,
    /// Companies at once, or where the first adaptive run starts.
    pub concurrency: usize,
    /// `Some(dex_collector.max_concurrency)` when the concurrency is adaptive.
    pub adaptive_max: Option<usize>,
    pub connect_timeout: Duration,
    pub run_deadline: Duration,
    pub ca_file: Option<String>,
    pub targets_query: Option<String>,
    /// `dex_collector.targets_role`, if set.
    pub targets_role: Option<String>,
    pub recording: Recording,
}

impl Settings {
    /// Reads the settings, the site URL falling back to Vault, and the key from Vault or the key
    /// file (read now, so a rotated key needs no reload).
    pub fn load() -> Result<Settings, ConfigError> {
        let mut vault = read_vault_secrets(&[VAULT_SITE_URL, VAULT_SERVICE_KEY])?;
        let site_url = string_setting(&SITE_URL).or(vault.remove(VAULT_SITE_URL));
        let service_key = match vault.remove(VAULT_SERVICE_KEY) {
            Some(key) if is_valid_header_value(key.as_bytes()) => Some(key),
            Some(_) => return Err(ConfigError::InvalidVaultServiceKey),
            None => match string_setting(&SERVICE_KEY_FILE) {
                Some(path) => Some(
                    read_key_file(&path).map_err(|error| ConfigError::KeyFile { path, error })?,
                ),
                None => None,
            },
        };
        let (site_url, service_key) = match (site_url, service_key) {
            (Some(url), Some(key)) => (url, key),
            (url, key) => {
                let leftovers = if key.is_none() {
                    retired_key_settings()?
                } else {
                    Vec::new()
                };
                return Err(ConfigError::Missing {
                    site_url: url.is_none(),
                    service_key: key.is_none(),
                    retired_key_set_in: leftovers,
                });
            }
        };
        validate_site_url(&site_url).map_err(|reason| ConfigError::InvalidSiteUrl { reason })?;
        Ok(Settings {
            endpoint: EndpointConfig {
                site_url,
                service_key,
                request_timeout: millis(REQUEST_TIMEOUT_MS.get()),
                max_pages: positive(MAX_PAGES.get()),
                max_retries: positive(MAX_RETRIES.get()),
                max_response_bytes: positive(MAX_RESPONSE_BYTES.get()) as usize,
            },
            concurrency: positive(CONCURRENCY.get()) as usize,
            adaptive_max: ADAPTIVE_CONCURRENCY
                .get()
                .then(|| positive(MAX_CONCURRENCY.get()) as usize),
            connect_timeout: millis(CONNECT_TIMEOUT_MS.get()),
            run_deadline: millis(RUN_DEADLINE_MS.get()),
            ca_file: string_setting(&CA_FILE),
            targets_query: string_setting(&TARGETS_QUERY),
            targets_role: string_setting(&TARGETS_ROLE),
            recording: Recording {
                alerts: AlertPolicy {
                    after_failures: ALERT_AFTER_FAILURES.get().max(1),
                    after: Some(Duration::from_secs(u64::from(positive(
                        ALERT_AFTER_S.get(),
                    ))))
                    .filter(|after| !after.is_zero()),
                },
                detail: HISTORY_DETAIL.get().into(),
            },
        })
    }
}

/// The `dex_collector.*` settings `ALTER DATABASE` and `ALTER ROLE` store for a session of this
/// database and role, as one text. PostgreSQL applies them when a session connects; the worker,
/// connected once, compares them with those it connected with to know when to start again.
pub fn stored_for_session() -> Result<String, ConfigError> {
    Spi::get_one::<String>(
        "SELECT coalesce(string_agg(format('%s %s %s', s.setdatabase, s.setrole, c.setting), E'\n'
                                    ORDER BY s.setdatabase, s.setrole, c.n), '')
           FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY AS c(setting, n)
          WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                       WHERE datname = current_database()))
            AND s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))
            AND c.setting LIKE 'dex\\_collector.%'",
    )
    .map(Option::unwrap_or_default)
    .map_err(|error| ConfigError::Stored {
        reason: error.to_string(),
    })
}

/// A time limit PostgreSQL puts on a SQL call: `statement_timeout`, from the statement's start, or
/// (PostgreSQL 17 on) `transaction_timeout`, from the transaction's.
pub struct CallTimeout {
    /// The setting's name.
    pub setting: String,
    /// Its value as PostgreSQL shows it (`30s`); the timer's own length when the setting has
    /// changed since the timer started.
    pub value: String,
    /// What is left of it now.
    pub left: Duration,
}

/// The call's timeout that runs out first, if one runs.
pub fn call_timeout() -> Result<Option<CallTimeout>, ConfigError> {
    let first = [
        ("statement_timeout", pg::CallTimer::Statement),
        ("transaction_timeout", pg::CallTimer::Transaction),
    ]
    .into_iter()
    .filter_map(|(setting, timer)| Some((setting, pg::running_timer(timer)?)))
    .min_by_key(|(_, timer)| timer.left);
    let Some((setting, timer)) = first else {
        return Ok(None);
    };
    let (value, seconds) = Spi::get_two_with_args::<String, f64>(
        "SELECT v, extract(epoch FROM v::interval)::float8 FROM current_setting($1) AS v",
        &[setting.into()],
    )
    .map_err(|error| ConfigError::Timeouts {
        reason: error.to_string(),
    })?;
    let value = match (value, seconds) {
        (Some(value), Some(seconds)) if (seconds - timer.length.as_secs_f64()).abs() < 1.0 => value,
        // Changed since the timer started (inside the transaction): the timer is what counts.
        _ => format!("{}s", timer.length.as_secs_f64().round()),
    };
    Ok(Some(CallTimeout {
        setting: setting.to_string(),
        value,
        left: timer.left,
    }))
}

/// Where a value of the retired `dex_collector.service_key` is still stored (never the value):
/// `ALTER DATABASE/ROLE ... SET` entries and configuration files. Each is readable or logged.
fn retired_key_settings() -> Result<Vec<String>, ConfigError> {
    let lookup = readonly::run(None, None, || {
        Spi::connect(|client| -> Result<Vec<String>, pgrx::spi::Error> {
            let rows = client.select(
                "SELECT CASE WHEN s.setdatabase = 0 AND s.setrole = 0 THEN 'ALTER DATABASE/ROLE settings'
                             WHEN s.setrole = 0 THEN format('ALTER DATABASE %I SET', d.datname)
                             WHEN s.setdatabase = 0 THEN format('ALTER ROLE %I SET', r.rolname)
                             ELSE format('ALTER ROLE %I IN DATABASE %I SET', r.rolname, d.datname) END
                   FROM pg_catalog.pg_db_role_setting s
                   LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
                   LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
                  WHERE EXISTS (SELECT 1 FROM unnest(s.setconfig) AS c
                                 WHERE c LIKE 'dex_collector.service\\_key=%')
                 UNION ALL
                 SELECT format('%s line %s', f.sourcefile, f.sourceline)
                   FROM pg_catalog.pg_file_settings f WHERE f.name = 'dex_collector.service_key'",
                None,
                &[],
            )?;
            rows.into_iter()
                .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                .collect()
        })
    });
    read_only_result(lookup, |reason| ConfigError::Catalog { reason })
}

/// The outcome of a read-only lookup: an SPI error or a PostgreSQL error becomes `error`.
fn read_only_result<T>(
    lookup: Result<Result<T, pgrx::spi::Error>, readonly::Failed>,
    error: impl FnOnce(String) -> ConfigError,
) -> Result<T, ConfigError> {
    match lookup {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(spi_error)) => Err(error(spi_error.to_string())),
        Err(failed) => Err(error(failed.to_string())),
    }
}

fn string_setting(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|value| value.to_string_lossy().trim().to_string())
        .filter(|value| !value.is_empty())
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::from(positive(value)))
}

fn positive(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// Our secrets that Supabase Vault holds, by name (trimmed; empty ones left out).
type VaultSecrets = std::collections::HashMap<String, String>;

/// Reads the secrets `names` from Supabase Vault when its view exists; nothing when it does not.
fn read_vault_secrets(names: &[&str]) -> Result<VaultSecrets, ConfigError> {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let lookup = readonly::run(None, None, || {
        Spi::connect(|client| -> Result<VaultSecrets, pgrx::spi::Error> {
            // This runs as a superuser: Vault's view (a superuser made it, with the extension
            // or, in Vault 0.2, through pgsodium), not one of that name that another role made
            // where Vault is absent, calling a function of theirs.
            let vault_exists = client
                .select(
                    "SELECT EXISTS (
                         SELECT FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
                          WHERE c.oid = pg_catalog.to_regclass('vault.decrypted_secrets')
                            AND r.rolsuper)",
                    None,
                    &[],
                )?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            let mut secrets = VaultSecrets::new();
            if !vault_exists {
                return Ok(secrets);
            }
            let rows = client.select(
                "SELECT name::text, decrypted_secret::text FROM vault.decrypted_secrets \
                 WHERE name = ANY ($1) ORDER BY name",
                None,
                &[names.into()],
            )?;
            for row in rows {
                let name = row.get::<String>(1)?.unwrap_or_default();
                let value = row.get::<String>(2)?.map(|v| v.trim().to_string());
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    secrets.insert(name, value);
                }
            }
            Ok(secrets)
        })
    });
    read_only_result(lookup, |reason| ConfigError::Vault { reason })
}

/// Where the background worker sends what it has to say, resolved (settings, then Vault) at each
/// turn of its loop. Each URL is resolved on its own: one that cannot be used (a Vault secret is
/// only checked here) holds back its own deliveries, not the other's.
pub struct DeliveryTargets {
    pub alert_url: Result<Option<String>, ConfigError>,
    /// The webhook's signing key (a Vault secret only); unsigned without one.
    pub alert_secret: Option<String>,
    pub heartbeat_url: Result<Option<String>, ConfigError>,
    pub connect_timeout: Duration,
    pub ca_file: Option<String>,
}

impl DeliveryTargets {
    pub fn load() -> Result<DeliveryTargets, ConfigError> {
        let mut vault =
            read_vault_secrets(&[VAULT_ALERT_URL, VAULT_HEARTBEAT_URL, VAULT_ALERT_SECRET])?;
        let mut url = |setting: &GucSetting<Option<CString>>, secret: &'static str| {
            let url = string_setting(setting).or(vault.remove(secret));
            match url {
                Some(url) => validate_delivery_url(&url)
                    .map(|()| Some(url))
                    .map_err(|reason| ConfigError::InvalidDeliveryUrl { secret, reason }),
                None => Ok(None),
            }
        };
        let alert_url = url(&ALERT_URL, VAULT_ALERT_URL);
        let heartbeat_url = url(&HEARTBEAT_URL, VAULT_HEARTBEAT_URL);
        Ok(DeliveryTargets {
            alert_url,
            alert_secret: vault.remove(VAULT_ALERT_SECRET),
            heartbeat_url,
            connect_timeout: millis(CONNECT_TIMEOUT_MS.get()),
            ca_file: string_setting(&CA_FILE),
        })
    }
}

/// `dex_collector.ca_file` as read for a run: its path and what it holds (or why it could not be
/// read). A client kept across runs is built again when this changes, so that a certificate
/// renewed in place is taken without a new session.
#[derive(Clone, PartialEq)]
pub struct CaFile {
    path: String,
    pem: Result<Vec<u8>, String>,
}

impl CaFile {
    pub fn read(path: &str) -> CaFile {
        CaFile {
            path: path.to_string(),
            pem: std::fs::read(path).map_err(|error| error.to_string()),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// What it holds, or why it could not be read.
    pub fn contents(&self) -> Result<&[u8], String> {
        self.pem
            .as_deref()
            .map_err(|error| format!("cannot read {}: {error}", self.path))
    }
}

/// `dex_collector.alert_url` and `heartbeat_url`: http or https, a host, no credentials.
struct DeliveryUrlCheck;

impl StringCheck for DeliveryUrlCheck {
    fn check(value: &str) -> Result<(), Rejection> {
        // Not the value: a webhook's URL often holds its token, and every session that loads
        // the library later would get this WARNING for a stored value.
        validate_delivery_url(value).map_err(|reason| Rejection {
            message: format!("invalid URL: {reason}"),
            hint: None,
        })
    }
}

/// `dex_collector.site_url`: http or https, and nothing a URL cannot hold.
struct SiteUrlCheck;

impl StringCheck for SiteUrlCheck {
    fn check(value: &str) -> Result<(), Rejection> {
        validate_site_url(value).map_err(|reason| Rejection {
            message: format!("invalid dex_collector.site_url: {reason}"),
            hint: None,
        })
    }
}

/// Refuses any value of the retired `dex_collector.service_key`, naming the two ways instead.
/// The message never includes the value (PostgreSQL prints it only without a message of ours).
struct RetiredServiceKeyCheck;

impl StringCheck for RetiredServiceKeyCheck {
    fn check(_value: &str) -> Result<(), Rejection> {
        Err(Rejection {
            message:
                "dex_collector.service_key is no longer read: any role can read a setting, and the \
                      server logs its new value on reload"
                    .to_string(),
            hint: Some(RETIRED_KEY_HINT),
        })
    }
}

/// Where the key goes instead of a setting: said wherever the old setting is met.
pub const RETIRED_KEY_HINT: &str = "Store the key in Supabase Vault: \
    SELECT vault.create_secret('your-service-key', 'dex_collector_service_key'); \
    or write it to a file only the server's user can read (mode 0600) and, as superuser: \
    ALTER DATABASE your_database SET dex_collector.service_key_file = '/path/to/key';";

#[cfg(test)]
mod tests {
    use crate::service_key::is_valid_header_value;

    #[test]
    fn header_values_are_visible_ascii_only() {
        assert!(is_valid_header_value(b"sk_live_abc-123"));
        assert!(!is_valid_header_value(b""));
        assert!(!is_valid_header_value(b"two words"));
        assert!(!is_valid_header_value(b"line\nbreak"));
        assert!(!is_valid_header_value("ünïcode".as_bytes()));
    }
}
