//! Every `dex_collector.*` setting, defined and validated in one place.
//!
//! All settings are `SUSET`: superusers (or roles granted `SET` on the parameter) can change them
//! with `ALTER SYSTEM`, `ALTER DATABASE ... SET`, `ALTER ROLE ... SET` or `SET`. The service key is
//! also `SUPERUSER_ONLY`, so other roles can neither `SHOW` it nor see it in `pg_settings`.
//!
//! When `site_url` or `service_key` is unset, [`Settings::load`] falls back to Supabase Vault
//! (secrets `dex_collector_site_url` / `dex_collector_service_key` in `vault.decrypted_secrets`),
//! because Supabase projects cannot set superuser-only settings.

use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::endpoint::{validate_site_url, EndpointConfig};
use crate::error::ConfigError;
use crate::readonly;

static SITE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SERVICE_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TARGETS_QUERY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static MAX_PAGES: GucSetting<i32> = GucSetting::<i32>::new(50);
static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(2);
static MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
static RUN_DEADLINE_MS: GucSetting<i32> = GucSetting::<i32>::new(4 * 60 * 1000);
static WORKER_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static WORKER_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(0);
static HISTORY_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(14 * 24 * 3600);
static DEX_MAX_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// The highest `dex_collector.dex_max_bytes`: the worst input this long (lines that each add a
/// record, the most output per byte, about 35 bytes of jsonb each) still fits in jsonb's
/// 255 MB, and its parse stays within about 0.5 GB of the backend's memory.
const DEX_MAX_BYTES_LIMIT: i32 = 4 * 1024 * 1024;

/// Vault secret names read when the matching setting is unset.
pub const VAULT_SITE_URL: &str = "dex_collector_site_url";
pub const VAULT_SERVICE_KEY: &str = "dex_collector_service_key";

/// Registers every setting; called once from `_PG_init`.
pub fn define() {
    // SAFETY: the check hooks are `#[pg_guard]`ed and never unwind into Postgres.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"dex_collector.site_url",
            c"Base URL of the web app that serves /api/dex/collect-bulk (http or https).",
            c"For example https://your-app.pages.dev. Empty: read the Vault secret dex_collector_site_url.",
            &SITE_URL,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_site_url),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"dex_collector.service_key",
            c"Shared secret sent as X-Service-Key; only superusers can read it.",
            c"Empty: read the Vault secret dex_collector_service_key.",
            &SERVICE_KEY,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(check_service_key),
            None,
            None,
        );
    }
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
        c"dex_collector.database",
        c"The database the background worker connects to (its runs, queue and history live there).",
        c"Needs a server restart. The worker runs only with shared_preload_libraries = 'dex_collector'.",
        &WORKER_DATABASE,
        // Only the postmaster may define a restart-only setting; a session loading the library
        // later gets one it can merely read.
        if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
            GucContext::Postmaster
        } else {
            GucContext::Sighup
        },
        GucFlags::default(),
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
}

/// `dex_collector.dex_max_bytes`: the largest DEX input the DEX functions read.
pub fn dex_max_bytes() -> usize {
    usize::try_from(DEX_MAX_BYTES.get()).unwrap_or(0)
}

/// The worker's settings, read anew at each turn of its loop (they change on SIGHUP).
pub struct WorkerSettings {
    /// Run a collection this often; `None`: only queued runs.
    pub interval: Option<Duration>,
    /// Delete history older than this; `None`: keep it all.
    pub history_retention: Option<Duration>,
}

impl WorkerSettings {
    pub fn current() -> WorkerSettings {
        let seconds = |value: i32| {
            Some(Duration::from_secs(u64::from(positive(value)))).filter(|d| !d.is_zero())
        };
        WorkerSettings {
            interval: seconds(WORKER_INTERVAL_S.get()),
            history_retention: seconds(HISTORY_RETENTION_S.get()),
        }
    }
}

/// The database the background worker connects to.
pub fn worker_database() -> String {
    string_setting(&WORKER_DATABASE).unwrap_or_else(|| "postgres".to_string())
}

/// Everything one run needs, resolved from the settings (and Vault) at its start.
#[derive(Clone)]
pub struct Settings {
    pub endpoint: EndpointConfig,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub run_deadline: Duration,
    pub ca_file: Option<String>,
    pub targets_query: Option<String>,
}

impl Settings {
    /// Reads the settings, falling back to Vault for an unset site URL or key.
    pub fn load() -> Result<Settings, ConfigError> {
        let mut site_url = string_setting(&SITE_URL);
        let mut service_key = string_setting(&SERVICE_KEY);
        if site_url.is_none() || service_key.is_none() {
            let secrets = read_vault_secrets()?;
            site_url = site_url.or(secrets.site_url);
            service_key = service_key.or(secrets.service_key);
        }
        let (site_url, service_key) = match (site_url, service_key) {
            (Some(url), Some(key)) => (url, key),
            (url, key) => {
                return Err(ConfigError::Missing {
                    site_url: url.is_none(),
                    service_key: key.is_none(),
                })
            }
        };
        validate_site_url(&site_url).map_err(|reason| ConfigError::InvalidSiteUrl { reason })?;
        if !is_valid_header_value(&service_key) {
            return Err(ConfigError::InvalidServiceKey);
        }
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
            connect_timeout: millis(CONNECT_TIMEOUT_MS.get()),
            run_deadline: millis(RUN_DEADLINE_MS.get()),
            ca_file: string_setting(&CA_FILE),
            targets_query: string_setting(&TARGETS_QUERY),
        })
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

/// A key goes into an HTTP header: visible ASCII only, so it can never split or corrupt a request.
fn is_valid_header_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[derive(Default)]
struct VaultSecrets {
    site_url: Option<String>,
    service_key: Option<String>,
}

/// Reads our two secrets from Supabase Vault when its view exists; nothing when it does not.
fn read_vault_secrets() -> Result<VaultSecrets, ConfigError> {
    let lookup = readonly::run(|| {
        Spi::connect(|client| -> Result<VaultSecrets, pgrx::spi::Error> {
            let vault_exists = client
                .select(
                    "SELECT to_regclass('vault.decrypted_secrets') IS NOT NULL",
                    None,
                    &[],
                )?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            let mut secrets = VaultSecrets::default();
            if !vault_exists {
                return Ok(secrets);
            }
            let rows = client.select(
                "SELECT name::text, decrypted_secret::text FROM vault.decrypted_secrets \
                 WHERE name IN ($1, $2) ORDER BY name",
                None,
                &[VAULT_SITE_URL.into(), VAULT_SERVICE_KEY.into()],
            )?;
            for row in rows {
                let name = row.get::<String>(1)?.unwrap_or_default();
                let value = row
                    .get::<String>(2)?
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty());
                match name.as_str() {
                    VAULT_SITE_URL => secrets.site_url = value,
                    VAULT_SERVICE_KEY => secrets.service_key = value,
                    _ => {}
                }
            }
            Ok(secrets)
        })
    });
    match lookup {
        Ok(Ok(secrets)) => Ok(secrets),
        Ok(Err(spi_error)) => Err(ConfigError::Vault {
            reason: spi_error.to_string(),
        }),
        Err(postgres_error) => Err(ConfigError::Vault {
            reason: postgres_error,
        }),
    }
}

/// Tells Postgres why a value was rejected; the text must live in a Postgres memory context.
unsafe fn set_check_message(message: &str) {
    if let Ok(message) = CString::new(message) {
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
    }
}

/// The shared body of the string check hooks: an empty value (unset) is accepted; otherwise
/// `problem` says what is wrong with it, and that text becomes the error message.
unsafe fn check_string(
    newval: *mut *mut c_char,
    problem: impl FnOnce(&str) -> Option<String>,
) -> bool {
    let value = match newval.as_ref().and_then(|ptr| ptr.as_ref()) {
        Some(ptr) => CStr::from_ptr(ptr).to_string_lossy().trim().to_string(),
        None => return true,
    };
    if value.is_empty() {
        return true;
    }
    match problem(&value) {
        None => true,
        Some(message) => {
            set_check_message(&message);
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_site_url(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |value| {
        validate_site_url(value)
            .err()
            .map(|reason| format!("invalid dex_collector.site_url: {reason}"))
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn check_service_key(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |value| {
        // Never echo the rejected value: it is a secret.
        (!is_valid_header_value(value)).then(|| {
            "invalid dex_collector.service_key: it must be printable ASCII without spaces or control characters"
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::is_valid_header_value;

    #[test]
    fn header_values_are_visible_ascii_only() {
        assert!(is_valid_header_value("sk_live_abc-123"));
        assert!(!is_valid_header_value(""));
        assert!(!is_valid_header_value("two words"));
        assert!(!is_valid_header_value("line\nbreak"));
        assert!(!is_valid_header_value("ünïcode"));
    }
}
