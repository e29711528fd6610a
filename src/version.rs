//! Which version of the extension this database has, against the library's: a run writes
//! columns that exist only once the two agree.

use pgrx::prelude::*;

/// The version of the library this process runs.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The library was upgraded but this database's extension objects were not, or the other
    /// way round.
    #[error("the dex_collector library is version {LIBRARY_VERSION} but this database has the extension at version {installed}")]
    Outdated {
        installed: String,
        /// The database was updated, the server not restarted.
        library_older: bool,
    },
    #[error("dex_collector could not record the run: {0}")]
    Unreadable(#[from] pgrx::spi::Error),
}

/// This database's dex_collector version, `None` when the extension is not installed here.
pub fn installed_version() -> Result<Option<String>, VersionError> {
    Ok(installed_extension()?.map(|installed| installed.version))
}

/// This database's dex_collector: its version and its row.
pub struct Installed {
    pub version: String,
    /// Its row's oid in `pg_extension`: a `DROP EXTENSION` and `CREATE EXTENSION` make a new one,
    /// with a new history.
    pub oid: i64,
}

/// This database's dex_collector, if it has one.
pub fn installed_extension() -> Result<Option<Installed>, VersionError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT extversion, oid::int8 FROM pg_catalog.pg_extension WHERE extname = 'dex_collector'",
            None,
            &[],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(Installed {
            version: row.get::<String>(1)?.unwrap_or_default(),
            oid: row.get::<i64>(2)?.unwrap_or_default(),
        }))
    })
}

/// Refuses to run when this database's extension objects are older than the library: the run
/// would write columns that do not exist until `ALTER EXTENSION dex_collector UPDATE`.
pub fn check_installed_version() -> Result<(), VersionError> {
    match installed_version()? {
        Some(installed) if installed != LIBRARY_VERSION => Err(VersionError::Outdated {
            library_older: library_is_older_than(&installed),
            installed,
        }),
        _ => Ok(()),
    }
}

/// True when the database's extension is newer than the library this process loaded: the files
/// were upgraded and the database updated, but the server still runs the library it loaded.
pub fn library_is_older_than(installed: &str) -> bool {
    let parts = |version: &str| -> Vec<u64> {
        version
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect()
    };
    parts(LIBRARY_VERSION) < parts(installed)
}
