//! dex_collector: collects DEX audit data for every company from inside PostgreSQL.
//!
//! What needs no database (the endpoint contract and its client, targets, the fan-out, results
//! and summaries) is the `dex-collector-core` crate; this crate is the PostgreSQL side.
//!
//! Where things are, by layer; each depends only on those below it:
//! - SQL functions: `api` (collection), `dex_sql` (DEX in SQL); `worker`, the background worker;
//! - `delivery`: what the worker sends out (events to the webhook, heartbeat pings);
//! - `error`: the one boundary where every error becomes a PostgreSQL ERROR;
//! - a run: `lifecycle` (from lock to finish, for SQL calls and the worker alike) and `run` (one
//!   run's plan, and the core's fan-out driven on the backend's thread);
//! - its parts: `history` (how a run is recorded), `lock` (one run at a time per database),
//!   `outbox` (what is left to send), `staleness` (runs that stop arriving, as events), `targets`
//!   (which companies a run collects for), `version` (the database's extension against the
//!   library), `settings` (every `dex_collector.*` setting, and the Vault fallback), `service_key`
//!   (where the key comes from: Vault or a private file, never a setting), `readonly` (SQL the
//!   extension does not own, contained);
//! - `pg`: every raw call into PostgreSQL, and the only `unsafe` code.

// Unsafe code lives in `pg` alone; scripts/check-layers.sh also keeps it out of every other file.
#![deny(unsafe_code)]

use pgrx::prelude::*;

mod api;
mod delivery;
mod dex_sql;
mod error;
mod history;
mod lifecycle;
mod lock;
mod outbox;
#[allow(unsafe_code)]
mod pg;
mod readonly;
mod run;
mod service_key;
mod settings;
mod staleness;
mod targets;
mod version;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/helpers.sql", name = "helpers", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pg_upgrade starts a server on each cluster with its shared_preload_libraries, and nothing of
    // the library may run there. A worker would hold a connection to the database pg_upgrade drops
    // and makes anew (`postgres`: the upgrade fails), or call the endpoint and write history while
    // the old cluster is dumped. And each stored `dex_collector.*` setting must be restored as it
    // was, as a placeholder: one this version's settings refuse (0.1.0's key, a value out of
    // range, a name it does not know) fails the upgrade.
    if pg::binary_upgrade() {
        return;
    }
    settings::define();
    if pg::loading_shared_preload_libraries() {
        pg::init_shared_memory();
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::targets;

    const SAMPLE_SCHEMA: &str = include_str!("../tests/fixtures/sample_schema.sql");

    #[pg_test]
    fn the_history_starts_empty() {
        let count = Spi::get_one::<i64>("SELECT count(*) FROM dex_collector.runs").unwrap();
        assert_eq!(count, Some(0));
    }

    #[pg_test]
    fn the_default_rule_selects_companies_with_an_active_machine() {
        Spi::run(SAMPLE_SCHEMA).unwrap();
        let targets = targets::load(None, None, std::time::Duration::from_secs(60)).unwrap();
        let names: Vec<&str> = targets.iter().map(|t| t.company_name.as_str()).collect();
        assert_eq!(names.len(), 10);
        assert!(!names.contains(&"Fresh Bites"), "inactive machines only");
        assert!(!names.contains(&"Golden Gate Snacks"), "no machines");
        let without_credentials: Vec<&str> = targets
            .iter()
            .filter(|t| !t.has_credentials)
            .map(|t| t.company_name.as_str())
            .collect();
        assert_eq!(
            without_credentials,
            vec!["Delta Drinks", "Evergreen Vending"]
        );
    }

    #[pg_test]
    fn the_targets_query_leaves_the_transaction_writable() {
        Spi::run(SAMPLE_SCHEMA).unwrap();
        targets::load(None, None, std::time::Duration::from_secs(60)).unwrap();
        Spi::run("INSERT INTO dex_collector.runs (status, trigger) VALUES ('skipped', 'manual')")
            .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM dex_collector.runs").unwrap(),
            Some(1)
        );
    }

    #[pg_test(error = "invalid dex_collector.site_url: scheme must be http or https, not \"ftp\"")]
    fn a_bad_site_url_is_rejected_when_set() {
        Spi::run("SET dex_collector.site_url = 'ftp://example.com'").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'dex_collector'"]
    }
}
