//! Which companies a run collects for.
//!
//! By default the design's rule (docs/contract.md): every company with at least one machine whose
//! status is `active`; such a company without a `user_credentials` row with a `dex_username` is
//! skipped ("No DEX credentials configured") and never sent to the endpoint.
//! `dex_collector.targets_query` replaces the rule for deployments whose schema differs. A run
//! calls them in fair order (`dex_collector_core::target::fair_order`).

use std::time::Duration;

use pgrx::pg_sys;
use pgrx::prelude::*;

use dex_collector_core::target::{each_company_once, Target};

use crate::readonly;

/// The targets query could not be run or did not return what is needed.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("{}", match (custom, schema_mismatch) {
        (true, _) => format!("dex_collector.targets_query failed: {message}"),
        (false, true) => format!("the built-in target selection failed: {message} (set dex_collector.targets_query for a different schema)"),
        (false, false) => format!("the built-in target selection failed: {message}"),
    })]
    QueryFailed {
        custom: bool,
        message: String,
        /// The query names a table, column, function or schema that is not there.
        schema_mismatch: bool,
    },
    /// Still running at the run's deadline, and cancelled.
    #[error("{} did not finish within dex_collector.run_deadline ({} ms) and was cancelled; \
             a foreign server it reads may be slow or unreachable",
        if *custom { "dex_collector.targets_query" } else { "the built-in target selection" },
        limit.as_millis())]
    TimedOut { custom: bool, limit: Duration },
    #[error("dex_collector.targets_query must return a column named {column}")]
    MissingColumn { column: &'static str },
    #[error("dex_collector.targets_query: column {column} must be of type {expected}")]
    WrongColumnType { column: String, expected: String },
    #[error("dex_collector.targets_role: role {role:?} does not exist")]
    UnknownRole { role: String },
    #[error("the built-in target selection reads public.companies, public.machines and public.user_credentials, which different roles own ({}): set dex_collector.targets_role to the role whose rights it runs with", owners.join(", "))]
    OwnersDiffer { owners: Vec<String> },
    #[error("dex_collector.targets_query returned a NULL company_id")]
    NullCompanyId,
    #[error("dex_collector.targets_query: {0}")]
    Unreadable(#[from] pgrx::spi::Error),
}

/// The built-in rule, as SQL with the same result shape a custom `targets_query` must have.
///
/// `has_credentials` comes from a join, not from an `EXISTS` in the select list: the planner
/// costs such an `EXISTS` as a scan of `user_credentials` per company (although it runs it
/// hashed), an estimate growing with the square of the companies; that once made PostgreSQL
/// JIT-compile this query (200 ms of a 10,000-company run). `readonly::run` now also turns JIT
/// off, which protects custom queries written the other way.
pub const DEFAULT_TARGETS_QUERY: &str = "\
SELECT c.id AS company_id,
       c.company_name::text AS company_name,
       credentialed.company_id IS NOT NULL AS has_credentials
  FROM public.companies c
  LEFT JOIN (SELECT DISTINCT uc.company_id FROM public.user_credentials uc
              WHERE uc.dex_username IS NOT NULL) AS credentialed ON credentialed.company_id = c.id
 WHERE EXISTS (SELECT 1 FROM public.machines m
               WHERE m.company_id = c.id AND m.status = 'active')
 ORDER BY c.company_name, c.id";

/// Runs the targets query (read-only, in a subtransaction, with the rights of its role: see
/// [`role`]) and returns the targets in its order, each company once. The query is cancelled
/// after `limit` (the run's deadline): it may read foreign tables, and a remote server that hangs
/// must not hang the run.
pub fn load(
    custom_query: Option<&str>,
    role_setting: Option<&str>,
    limit: Duration,
) -> Result<Vec<Target>, TargetsError> {
    let custom = custom_query.is_some();
    let query = custom_query.unwrap_or(DEFAULT_TARGETS_QUERY);
    let (role, role_name) = role(role_setting, custom)?;
    let rows = readonly::run(Some(limit), Some(role), || {
        Spi::connect(|client| read_targets(client, query))
    })
    .map_err(|failed| match failed {
        readonly::Failed::Error { message, sqlstate } => TargetsError::QueryFailed {
            custom,
            // Failures the role can cause: privileges, row level security, a foreign server's
            // user mapping or password (the mapping is looked up for this role).
            message: if matches!(
                sqlstate,
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
                    | PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT
                    | PgSqlErrorCode::ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED
                    | PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
            ) {
                format!("{message} (it runs as role {role_name:?}: see dex_collector.targets_role)")
            } else {
                message
            },
            schema_mismatch: matches!(
                sqlstate,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE
                    | PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN
                    | PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION
                    | PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME
            ),
        },
        readonly::Failed::TimedOut => TargetsError::TimedOut { custom, limit },
    })??;
    Ok(each_company_once(rows))
}

/// The role the targets query runs as, and its name: `dex_collector.targets_role`; or else, for
/// the built-in rule, the owner of the tables it reads (one role for all three, or an error that
/// asks for `targets_role`); for a custom query, the database's owner. Not the superuser who owns
/// the extension: whoever owns a table the query reads could replace it with a view calling a
/// function of theirs, which would then run with a superuser's rights.
fn role(setting: Option<&str>, custom: bool) -> Result<(pg_sys::Oid, String), TargetsError> {
    let roles: Vec<(pg_sys::Oid, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT r.oid, r.rolname::text FROM pg_catalog.pg_roles r
                  WHERE CASE
                        WHEN $1 IS NOT NULL THEN r.rolname = $1
                        -- All three there (else the query's own error says which is missing).
                        WHEN NOT $2 AND pg_catalog.to_regclass('public.companies') IS NOT NULL
                             AND pg_catalog.to_regclass('public.machines') IS NOT NULL
                             AND pg_catalog.to_regclass('public.user_credentials') IS NOT NULL
                        THEN r.oid IN (SELECT relowner FROM pg_catalog.pg_class
                                        WHERE oid IN (pg_catalog.to_regclass('public.companies'),
                                                      pg_catalog.to_regclass('public.machines'),
                                                      pg_catalog.to_regclass('public.user_credentials')))
                        ELSE r.oid = (SELECT datdba FROM pg_catalog.pg_database
                                       WHERE datname = pg_catalog.current_database())
                        END
                  ORDER BY r.rolname",
                None,
                &[setting.into(), custom.into()],
            )?
            .map(|row| Ok((row.get::<pg_sys::Oid>(1)?, row.get::<String>(2)?)))
            .filter_map(|found| match found {
                Ok((Some(oid), Some(name))) => Some(Ok((oid, name))),
                Ok(_) => None,
                Err(error) => Some(Err(error)),
            })
            .collect::<Result<_, pgrx::spi::Error>>()
    })?;
    match roles.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(TargetsError::UnknownRole {
            role: setting.unwrap_or_default().to_string(),
        }),
        several => Err(TargetsError::OwnersDiffer {
            owners: several
                .iter()
                .map(|(_, name)| format!("{name:?}"))
                .collect(),
        }),
    }
}

fn read_targets(
    client: &pgrx::spi::SpiClient<'_>,
    query: &str,
) -> Result<Vec<Target>, TargetsError> {
    let table = client.select(query, None, &[])?;
    let columns = Columns::find(&table)?;
    let mut targets = Vec::with_capacity(table.len());
    for row in table {
        let company_id = row
            .get::<pgrx::Uuid>(columns.company_id)?
            .ok_or(TargetsError::NullCompanyId)?
            .to_string();
        let company_name = row
            .get::<String>(columns.company_name)?
            .unwrap_or_else(|| company_id.clone());
        let has_credentials = match columns.has_credentials {
            Some(ordinal) => row.get::<bool>(ordinal)?.unwrap_or(false),
            None => true,
        };
        targets.push(Target {
            company_id,
            company_name,
            has_credentials,
        });
    }
    Ok(targets)
}

/// Where the expected columns are, checked by name and type before any row is read.
struct Columns {
    company_id: usize,
    company_name: usize,
    has_credentials: Option<usize>,
}

impl Columns {
    fn find(table: &pgrx::spi::SpiTupleTable<'_>) -> Result<Columns, TargetsError> {
        let count = table.columns()?;
        let mut found = (None, None, None);
        for ordinal in 1..=count {
            let name = table.column_name(ordinal)?;
            let type_oid = table.column_type_oid(ordinal)?.value();
            let (slot, expected, accepted): (&mut Option<usize>, &str, &[pg_sys::Oid]) = match name
                .as_str()
            {
                "company_id" => (&mut found.0, "uuid", &[pg_sys::UUIDOID]),
                "company_name" => (&mut found.1, "text", &[pg_sys::TEXTOID, pg_sys::VARCHAROID]),
                "has_credentials" => (&mut found.2, "boolean", &[pg_sys::BOOLOID]),
                _ => continue,
            };
            if !accepted.contains(&type_oid) {
                return Err(TargetsError::WrongColumnType {
                    column: name,
                    expected: expected.to_string(),
                });
            }
            *slot = Some(ordinal);
        }
        match found {
            (Some(company_id), Some(company_name), has_credentials) => Ok(Columns {
                company_id,
                company_name,
                has_credentials,
            }),
            (company_id, _, _) => Err(TargetsError::MissingColumn {
                column: if company_id.is_none() {
                    "company_id"
                } else {
                    "company_name"
                },
            }),
        }
    }
}
