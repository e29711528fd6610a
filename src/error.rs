//! The one error boundary: every error a SQL function can raise becomes a PostgreSQL ERROR here,
//! with its SQLSTATE, message and hint. Each component has its own error type next to its code
//! (`ConfigError` in settings, `TargetsError` in targets, `HistoryError`, `LockError`,
//! `VersionError`); a collection call's are gathered in [`CollectError`], the DEX functions' in
//! [`DexSqlError`], and both convert into pgrx's `ErrorReport`, which a `#[pg_extern]` returning
//! `Result<_, ErrorReport>` raises. A failing company is never an error: it is a result.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::history::HistoryError;
use crate::lock::LockError;
use crate::settings::{ConfigError, RETIRED_KEY_HINT};
use crate::targets::TargetsError;
use crate::version::VersionError;

/// Everything that makes a collection call raise instead of returning a summary.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Targets(#[from] TargetsError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("dex_collect_company() needs a company id, not NULL")]
    NullCompanyId,
    #[error("company {company_id} is not a collection target (no such company, or it has no active machine)")]
    UnknownCompany { company_id: String },
    #[error("dex_collector could not start its HTTP client: {message}")]
    Runtime { message: String },
    /// A transaction of the worker's own failed (the message is PostgreSQL's).
    #[error("dex_collector's transaction failed: {message}")]
    Transaction { message: String },
    /// A hot standby cannot write the run history.
    #[error("dex_collector cannot collect on a standby server: a run writes its history, and a standby is read-only")]
    StandbyServer,
    /// `dex_collect_all_async()` where no worker will ever run the queued collection.
    #[error("{}", match worker_database {
        Some(database) => format!("the dex_collector background worker serves database {database:?}, not this one: a queued run would never start"),
        None => "the dex_collector background worker is off: a queued run would never start".to_string(),
    })]
    NoWorkerForDatabase { worker_database: Option<String> },
}

// `#[track_caller]` here and on `report`: the ERROR's location (in verbose output and the
// server log) is where `?` raised it, not this file.
impl From<CollectError> for ErrorReport {
    #[track_caller]
    fn from(error: CollectError) -> Self {
        use PgSqlErrorCode::*;
        let sqlstate = match &error {
            CollectError::Config(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            CollectError::Targets(
                TargetsError::QueryFailed { .. }
                | TargetsError::Unreadable(_)
                | TargetsError::UnknownRole { .. }
                | TargetsError::OwnersDiffer { .. },
            ) => ERRCODE_INVALID_PARAMETER_VALUE,
            CollectError::Targets(TargetsError::TimedOut { .. }) => ERRCODE_QUERY_CANCELED,
            CollectError::Targets(_) => ERRCODE_DATATYPE_MISMATCH,
            CollectError::UnknownCompany { .. } => ERRCODE_NO_DATA_FOUND,
            CollectError::NullCompanyId => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            CollectError::Version(VersionError::Outdated { .. })
            | CollectError::NoWorkerForDatabase { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            CollectError::StandbyServer => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            CollectError::Version(VersionError::Unreadable(_))
            | CollectError::Runtime { .. }
            | CollectError::History(_)
            | CollectError::Transaction { .. }
            | CollectError::Lock(_) => ERRCODE_INTERNAL_ERROR,
        };
        let hint = match &error {
            CollectError::Config(config) => config_hint(config),
            CollectError::Version(VersionError::Outdated { library_older: false, .. }) => {
                Some("Run ALTER EXTENSION dex_collector UPDATE; in this database.".into())
            }
            CollectError::Version(VersionError::Outdated { library_older: true, .. }) => Some(
                "Restart PostgreSQL: it still runs the dex_collector library it loaded before the upgrade.".into(),
            ),
            CollectError::NullCompanyId => Some(
                "A NULL id is mostly a lookup that found no company: check the query that gave it.".into(),
            ),
            CollectError::StandbyServer => Some(
                "Call it on the primary. A preloaded worker starts collecting here after promotion.".into(),
            ),
            CollectError::NoWorkerForDatabase { .. } => Some(
                "Call dex_collect_all() to collect now, or run the worker for this database: \
                 shared_preload_libraries = 'dex_collector' and dex_collector.database = '<this database>', then restart PostgreSQL."
                    .into(),
            ),
            _ => None,
        };
        report(sqlstate, error.to_string(), None, hint)
    }
}

/// What to do about a configuration that cannot be used.
fn config_hint(error: &ConfigError) -> Option<String> {
    match error {
        ConfigError::Missing { site_url, service_key, retired_key_set_in } => {
            let mut hint = Vec::new();
            if *site_url {
                hint.push(
                    "As superuser: ALTER DATABASE your_database SET dex_collector.site_url = 'https://your-app.pages.dev'; \
                     then reconnect (on Supabase, store the Vault secret dex_collector_site_url instead)."
                        .to_string(),
                );
            }
            if *service_key {
                hint.push(RETIRED_KEY_HINT.to_string());
            }
            if !retired_key_set_in.is_empty() {
                hint.push(
                    "Then remove the old setting where it is set, e.g. ALTER DATABASE your_database RESET dex_collector.service_key; \
                     or ALTER SYSTEM RESET dex_collector.service_key; (after LOAD 'dex_collector')."
                        .to_string(),
                );
            }
            Some(hint.join(" "))
        }
        ConfigError::CallTimeoutTooShort { setting, .. } => Some(format!(
            "Raise {setting} for the role that calls it (ALTER ROLE ... SET {setting} = '5min'), or SET it \
             before the call's {}: a SET after its timer started does not extend it. Or call \
             dex_collect_all_async(), which the background worker runs outside any statement.",
            if setting == "transaction_timeout" {
                "transaction begins (a string of several statements, such as a pg_cron job's, is one transaction)"
            } else {
                "statement"
            }
        )),
        ConfigError::KeyFile { .. } => Some(
            "The file must be a regular file holding only the key, owned by the database server's user \
             with mode 0600 (or by root with 0640). It is read at the start of every run."
                .to_string(),
        ),
        _ => None,
    }
}

/// Why a DEX function raises.
#[derive(Debug, thiserror::Error)]
pub enum DexSqlError {
    /// Longer than `dex_collector.dex_max_bytes`, refused before any of it is read.
    #[error("DEX input of {len} bytes exceeds dex_collector.dex_max_bytes ({limit} bytes)")]
    TooLarge { len: usize, limit: usize },
    /// Text with no DEX in it at all (damaged DEX still parses, with its problems reported).
    #[error(transparent)]
    NotDex(#[from] dex_parse::DexError),
    /// A result jsonb cannot hold.
    #[error("{}", match .0 {
        jsonb_binary::Error::TooLarge { .. } => format!("the parsed DEX is too large for jsonb: {}", .0),
        jsonb_binary::Error::Unsupported(_) => format!("the parsed DEX could not be written as jsonb: {}", .0),
    })]
    Unwritable(#[from] jsonb_binary::Error),
    /// `dex_sales()` of audits of different machines or in the wrong order.
    #[error(transparent)]
    Mismatch(#[from] dex_parse::SalesError),
    /// One of two inputs (`dex_sales()`'s `older` or `newer`) could not be read: which one.
    #[error("{argument}: {error}")]
    Argument {
        argument: &'static str,
        error: Box<DexSqlError>,
    },
}

impl DexSqlError {
    /// This error as one of `argument`'s.
    pub fn in_argument(self, argument: &'static str) -> Self {
        DexSqlError::Argument {
            argument,
            error: Box::new(self),
        }
    }

    /// Its SQLSTATE, detail and hint.
    fn report_parts(&self) -> (PgSqlErrorCode, Option<&'static str>, Option<&'static str>) {
        use PgSqlErrorCode::*;
        match self {
            DexSqlError::TooLarge { .. } => (
                ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                None,
                Some(
                    "Real DEX files are a few kilobytes. To read larger input in this session: \
                     SET dex_collector.dex_max_bytes = '4MB' (the most it allows).",
                ),
            ),
            DexSqlError::NotDex(_) => (
                ERRCODE_INVALID_TEXT_REPRESENTATION,
                Some(
                    "Damaged DEX still parses, with its problems in \"validation\"; dex_segments() shows how the text splits into segments.",
                ),
                None,
            ),
            DexSqlError::Unwritable(unwritable) => (
                match unwritable {
                    jsonb_binary::Error::TooLarge { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    jsonb_binary::Error::Unsupported(_) => ERRCODE_INTERNAL_ERROR,
                },
                None,
                Some("Lower dex_collector.dex_max_bytes: no real DEX file comes near this."),
            ),
            DexSqlError::Mismatch(_) => (
                ERRCODE_INVALID_PARAMETER_VALUE,
                None,
                Some("To compare them anyway: dex_sales(older, newer, ignore_mismatch => true)."),
            ),
            DexSqlError::Argument { error, .. } => error.report_parts(),
        }
    }
}

impl From<DexSqlError> for ErrorReport {
    #[track_caller]
    fn from(error: DexSqlError) -> Self {
        let (sqlstate, detail, hint) = error.report_parts();
        report(
            sqlstate,
            error.to_string(),
            detail,
            hint.map(str::to_string),
        )
    }
}

/// A PostgreSQL ERROR with what it says.
#[track_caller]
fn report(
    sqlstate: PgSqlErrorCode,
    message: String,
    detail: Option<&str>,
    hint: Option<String>,
) -> ErrorReport {
    let report = ErrorReport::new(sqlstate, message, "dex_collector");
    let report = match detail {
        Some(detail) => report.set_detail(detail),
        None => report,
    };
    match hint {
        Some(hint) => report.set_hint(hint),
        None => report,
    }
}

/// Logs a WARNING with a hint (to the client too, when there is one).
pub fn warn_with_hint(message: String, hint: String) {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_WARNING, message, "dex_collector")
        .set_hint(hint)
        .report(PgLogLevel::WARNING);
}
