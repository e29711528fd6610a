//! dex_collector: collects DEX audit data for every company from inside PostgreSQL.
//!
//! Where things are:
//! - `settings`: every `dex_collector.*` setting, validated, and the Vault fallback;
//! - `targets`: which companies a run collects for;
//! - `endpoint`: the collect-bulk contract, how one company is collected (pure Rust);
//! - `run`: one run (fan-out, deadline, cancellation); `summary`: its arithmetic (pure Rust);
//! - `history`: how a run is recorded; `lock`: one run at a time per database;
//! - `worker`: the background worker; `api`: the SQL functions; `error`: errors to SQLSTATEs;
//! - `readonly`: running SQL the extension does not own, read-only and contained.

use pgrx::prelude::*;

mod api;
mod endpoint;
mod error;
mod history;
mod lock;
mod readonly;
mod run;
mod settings;
mod summary;
mod targets;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/helpers.sql", name = "helpers", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::define();
    // SAFETY: a flag Postgres sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_history_tables_exist() {
        let count = Spi::get_one::<i64>("SELECT count(*) FROM dex_collector.runs").unwrap();
        assert_eq!(count, Some(0));
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
