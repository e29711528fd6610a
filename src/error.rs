//! Errors that stop a call before any request, one enum per component, each mapped to a Postgres
//! ERROR with a SQLSTATE at the SQL boundary. A failing company is never an error: it is a result.

use std::fmt;
use std::time::Duration;

use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
use pgrx::prelude::*;

use crate::service_key::KeyFileError;
use crate::settings::RETIRED_KEY_HINT;

/// The configuration cannot be used: raised before any request is sent. No variant holds the key.
#[derive(Debug)]
pub enum ConfigError {
    Missing {
        site_url: bool,
        service_key: bool,
        /// Where the retired `dex_collector.service_key` is still set (places, never values).
        retired_key_set_in: Vec<String>,
    },
    InvalidSiteUrl {
        reason: String,
    },
    InvalidVaultServiceKey,
    KeyFile {
        path: String,
        error: KeyFileError,
    },
    Vault {
        reason: String,
    },
    Catalog {
        reason: String,
    },
    CaFile {
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { site_url, service_key, retired_key_set_in } => {
                let mut missing = Vec::new();
                if *site_url {
                    missing.push("site URL (dex_collector.site_url, or the Vault secret dex_collector_site_url)");
                }
                if *service_key {
                    missing.push("service key (the Vault secret dex_collector_service_key, or a file named by dex_collector.service_key_file)");
                }
                write!(f, "dex_collector is not configured: it has no {}", missing.join(" and no "))?;
                if !retired_key_set_in.is_empty() {
                    write!(
                        f,
                        "; dex_collector.service_key is still set ({}) but no longer read: any role can read a setting, and the server logs its new value on reload",
                        retired_key_set_in.join(", ")
                    )?;
                }
                Ok(())
            }
            ConfigError::InvalidSiteUrl { reason } => write!(f, "invalid dex_collector.site_url: {reason}"),
            ConfigError::InvalidVaultServiceKey => write!(
                f,
                "invalid Vault secret dex_collector_service_key: it must be printable ASCII without spaces or control characters"
            ),
            ConfigError::KeyFile { path, error } => {
                write!(f, "unusable dex_collector.service_key_file {path:?}: {}", error.reason())
            }
            ConfigError::Vault { reason } => write!(f, "could not read dex_collector secrets from Supabase Vault: {reason}"),
            ConfigError::Catalog { reason } => write!(f, "could not look for the retired dex_collector.service_key: {reason}"),
            ConfigError::CaFile { reason } => write!(f, "unusable dex_collector.ca_file: {reason}"),
        }
    }
}

impl ConfigError {
    fn hint(&self) -> Option<String> {
        match self {
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
            ConfigError::KeyFile { .. } => Some(
                "The file must be a regular file holding only the key, owned by the database server's user \
                 with mode 0600 (or by root with 0640). It is read at the start of every run."
                    .to_string(),
            ),
            _ => None,
        }
    }
}

/// The targets query could not be run or did not return what is needed.
#[derive(Debug)]
pub enum TargetsError {
    QueryFailed {
        custom: bool,
        message: String,
        /// The query names a table, column, function or schema that is not there.
        schema_mismatch: bool,
    },
    /// Still running at the run's deadline, and cancelled.
    TimedOut {
        custom: bool,
        limit: Duration,
    },
    MissingColumn {
        column: &'static str,
    },
    WrongColumnType {
        column: String,
        expected: String,
    },
    NullCompanyId,
    Unreadable {
        message: String,
    },
}

impl fmt::Display for TargetsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetsError::QueryFailed { custom: true, message, .. } => {
                write!(f, "dex_collector.targets_query failed: {message}")
            }
            TargetsError::QueryFailed { custom: false, message, schema_mismatch: true } => write!(
                f,
                "the built-in target selection failed: {message} (set dex_collector.targets_query for a different schema)"
            ),
            TargetsError::QueryFailed { custom: false, message, schema_mismatch: false } => {
                write!(f, "the built-in target selection failed: {message}")
            }
            TargetsError::TimedOut { custom, limit } => write!(
                f,
                "{} did not finish within dex_collector.run_deadline ({} ms) and was cancelled; \
                 a foreign server it reads may be slow or unreachable",
                if *custom { "dex_collector.targets_query" } else { "the built-in target selection" },
                limit.as_millis()
            ),
            TargetsError::MissingColumn { column } => {
                write!(f, "dex_collector.targets_query must return a column named {column}")
            }
            TargetsError::WrongColumnType { column, expected } => {
                write!(f, "dex_collector.targets_query: column {column} must be of type {expected}")
            }
            TargetsError::NullCompanyId => write!(f, "dex_collector.targets_query returned a NULL company_id"),
            TargetsError::Unreadable { message } => write!(f, "dex_collector.targets_query: {message}"),
        }
    }
}

/// Everything that makes a collection call raise instead of returning a summary.
#[derive(Debug)]
pub enum CollectError {
    Config(ConfigError),
    Targets(TargetsError),
    UnknownCompany {
        company_id: String,
    },
    Runtime {
        message: String,
    },
    History {
        message: String,
    },
    /// A transaction of the worker's own failed (the message is PostgreSQL's).
    Transaction {
        message: String,
    },
    /// The advisory locks that keep runs apart could not be read or taken.
    Lock {
        message: String,
    },
    /// A hot standby cannot write the run history.
    StandbyServer,
    /// `dex_collect_all_async()` where no worker will ever run the queued collection.
    NoWorkerForDatabase {
        worker_database: Option<String>,
    },
    /// The library was upgraded but this database's extension objects were not.
    ExtensionOutdated {
        installed: String,
        /// The other way round: the database was updated, the server not restarted.
        library_older: bool,
    },
}

impl From<ConfigError> for CollectError {
    fn from(error: ConfigError) -> Self {
        CollectError::Config(error)
    }
}

impl From<TargetsError> for CollectError {
    fn from(error: TargetsError) -> Self {
        CollectError::Targets(error)
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::Config(error) => error.fmt(f),
            CollectError::Targets(error) => error.fmt(f),
            CollectError::UnknownCompany { company_id } => write!(
                f,
                "company {company_id} is not a collection target (no such company, or it has no active machine)"
            ),
            CollectError::Runtime { message } => write!(f, "dex_collector could not start its HTTP client: {message}"),
            CollectError::History { message } => write!(f, "dex_collector could not record the run: {message}"),
            CollectError::Transaction { message } => write!(f, "dex_collector's transaction failed: {message}"),
            CollectError::Lock { message } => write!(f, "dex_collector could not check for a run in progress: {message}"),
            CollectError::StandbyServer => write!(
                f,
                "dex_collector cannot collect on a standby server: a run writes its history, and a standby is read-only"
            ),
            CollectError::NoWorkerForDatabase { worker_database: Some(database) } => write!(
                f,
                "the dex_collector background worker serves database {database:?}, not this one: a queued run would never start"
            ),
            CollectError::NoWorkerForDatabase { worker_database: None } => write!(
                f,
                "the dex_collector background worker is off: a queued run would never start"
            ),
            CollectError::ExtensionOutdated { installed, .. } => write!(
                f,
                "the dex_collector library is version {} but this database has the extension at version {installed}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

impl CollectError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            CollectError::Config(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            CollectError::Targets(
                TargetsError::QueryFailed { .. } | TargetsError::Unreadable { .. },
            ) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            CollectError::Targets(TargetsError::TimedOut { .. }) => {
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED
            }
            CollectError::Targets(_) => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            CollectError::UnknownCompany { .. } => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            CollectError::ExtensionOutdated { .. } | CollectError::NoWorkerForDatabase { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            CollectError::StandbyServer => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            CollectError::Runtime { .. }
            | CollectError::History { .. }
            | CollectError::Transaction { .. }
            | CollectError::Lock { .. } => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raises the error as a Postgres ERROR; does not return.
    pub fn raise(self) -> ! {
        let report = pgrx::pg_sys::panic::ErrorReport::new(
            self.sqlstate(),
            self.to_string(),
            "dex_collector",
        );
        let report = match self {
            CollectError::Config(ref config) => match config.hint() {
                Some(hint) => report.set_hint(hint),
                None => report,
            },
            CollectError::ExtensionOutdated { library_older: false, .. } => {
                report.set_hint("Run ALTER EXTENSION dex_collector UPDATE; in this database.")
            }
            CollectError::ExtensionOutdated { library_older: true, .. } => report.set_hint(
                "Restart PostgreSQL: it still runs the dex_collector library it loaded before the upgrade.",
            ),
            CollectError::StandbyServer => {
                report.set_hint("Call it on the primary. A preloaded worker starts collecting here after promotion.")
            }
            CollectError::NoWorkerForDatabase { .. } => report.set_hint(
                "Call dex_collect_all() to collect now, or run the worker for this database: \
                 shared_preload_libraries = 'dex_collector' and dex_collector.database = '<this database>', then restart PostgreSQL.",
            ),
            _ => report,
        };
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }
}

/// The report inside any caught error: a Postgres ERROR, a Rust `ereport!`, or a panic.
pub fn caught_report(caught: &CaughtError) -> &ErrorReportWithLevel {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report,
        CaughtError::RustPanic { ereport, .. } => ereport,
    }
}

/// Logs a WARNING with a hint (to the client too, when there is one).
pub fn warn_with_hint(message: String, hint: String) {
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        message,
        "dex_collector",
    )
    .set_hint(hint)
    .report(PgLogLevel::WARNING);
}
