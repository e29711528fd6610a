//! The collection's SQL functions: thin wrappers that run a collection; its errors become
//! PostgreSQL ERRORs through `error.rs`.
//!
//! They are SECURITY DEFINER (owned by the superuser who created the extension) so that a role
//! granted EXECUTE needs no other right (the targets query itself runs as a role of its own, not
//! this superuser: `targets.rs`), and they pin `search_path` so that nothing a caller puts on the path can take
//! part in the run.

// A `#[pg_extern]` raises the `ErrorReport` it returns; it is large, and only ever returned once.
#![allow(clippy::result_large_err)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::CollectError;
use crate::history::Trigger;
use crate::lifecycle;
use crate::pg::Jsonb;
use crate::run::Scope;

/// Collects DEX data for every target company; returns the run's summary.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn dex_collect_all() -> Result<Jsonb, ErrorReport> {
    Ok(Jsonb(lifecycle::collect_in_transaction(
        Scope::All,
        Trigger::Manual,
    )?))
}

/// Collects DEX data for one company, recorded as a run of its own. Called on a NULL id too (not
/// STRICT), to raise: a NULL is mostly a lookup that found no company, and a NULL result would
/// look like a call that did something.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn dex_collect_company(company_id: Option<pgrx::Uuid>) -> Result<Jsonb, ErrorReport> {
    let company_id = company_id.ok_or(CollectError::NullCompanyId)?;
    Ok(Jsonb(lifecycle::collect_in_transaction(
        Scope::Company(company_id.to_string()),
        Trigger::Manual,
    )?))
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION @extschema@.dex_collect_all() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.dex_collect_company(uuid) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.dex_collect_all() IS
    'dex_collector: collect DEX data for every target company; returns the run summary';
COMMENT ON FUNCTION @extschema@.dex_collect_company(uuid) IS
    'dex_collector: collect DEX data for one company; returns the run summary';
"#,
    name = "collection_privileges",
    requires = [dex_collect_all, dex_collect_company],
);

/// Queues a collection for the background worker and returns its run id at once.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn dex_collect_all_async() -> Result<i64, ErrorReport> {
    Ok(lifecycle::queue_for_worker()?)
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION @extschema@.dex_collect_all_async() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.dex_collect_all_async() IS
    'dex_collector: queue a collection for the background worker; returns its run id';
"#,
    name = "async_privileges",
    requires = [dex_collect_all_async],
);
