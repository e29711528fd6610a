//! Throwaway PostgreSQL clusters: `initdb` into a fresh temporary directory, start on a free port,
//! and on drop stop the server and delete everything. Several can run at once.
//!
//! The server binaries come from `pg_config --bindir` (`PG_CONFIG` names another `pg_config`).
//! PostgreSQL refuses to run as root, so when this process is root every PostgreSQL program runs
//! as the `postgres` OS user through `runuser`.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The OS user PostgreSQL runs as when this process is root.
const POSTGRES_OS_USER: &str = "postgres";
/// The extension's worker's backend type (`pg_stat_activity.backend_type`, `%b` in the log).
pub const WORKER_BACKEND_TYPE: &str = "dex_collector";
/// The bootstrap superuser of a cluster unless its options name another.
const DEFAULT_SUPERUSER: &str = "postgres";
/// Seconds `pg_ctl` waits for start, restart and stop.
const PG_CTL_TIMEOUT_SECONDS: &str = "60";
/// Lines of the server log quoted in errors.
const LOG_TAIL_LINES: usize = 40;
/// Attempts at starting the server when another process takes the chosen port first.
const PORT_ATTEMPTS: usize = 5;

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Libraries for `shared_preload_libraries`, e.g. `["dex_collector"]`.
    pub shared_preload_libraries: Vec<String>,
    /// Extra `postgresql.conf` settings, name and value (the value is quoted here).
    pub settings: Vec<(String, String)>,
    /// Database created after start and used by `connect` and `psql`.
    pub database: String,
    /// The bootstrap superuser (`initdb -U`), as whom `connect`, `psql` and `run_program` work:
    /// `postgres` unless a test builds a cluster where `postgres` is not a superuser (Supabase).
    pub superuser: String,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            shared_preload_libraries: Vec::new(),
            settings: Vec::new(),
            database: "dex".to_owned(),
            superuser: DEFAULT_SUPERUSER.to_owned(),
        }
    }
}

#[derive(Debug)]
pub enum ClusterError {
    /// A file could not be written or a program could not be started.
    Io { action: String, source: io::Error },
    /// A program exited unsuccessfully.
    Command {
        command: String,
        status: ExitStatus,
        /// Its stdout and stderr.
        output: String,
        /// The end of the server log, when the server was involved.
        log_tail: String,
    },
    /// Connecting or running SQL failed.
    Sql {
        action: String,
        source: postgres::Error,
        /// The end of the server log, when the failure happened while setting the cluster up.
        log_tail: String,
    },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log_tail = match self {
            ClusterError::Io { action, source } => return write!(f, "{action}: {source}"),
            ClusterError::Command {
                command,
                status,
                output,
                log_tail,
            } => {
                write!(f, "`{command}` failed ({status}):\n{}", output.trim_end())?;
                log_tail
            }
            ClusterError::Sql {
                action,
                source,
                log_tail,
            } => {
                // postgres::Error's Display hides the server's message; Debug shows it.
                write!(f, "{action}: {source}")?;
                if let Some(db_error) = source.as_db_error() {
                    write!(f, ": {}", db_error.message())?;
                }
                log_tail
            }
        };
        if !log_tail.is_empty() {
            write!(
                f,
                "\n--- end of the server log ---\n{}",
                log_tail.trim_end()
            )?;
        }
        Ok(())
    }
}

impl ClusterError {
    /// The same error quoting `log_tail` (an I/O error quotes none).
    fn with_log_tail(self, log_tail: String) -> ClusterError {
        match self {
            ClusterError::Command {
                command,
                status,
                output,
                ..
            } => ClusterError::Command {
                command,
                status,
                output,
                log_tail,
            },
            ClusterError::Sql { action, source, .. } => ClusterError::Sql {
                action,
                source,
                log_tail,
            },
            io_error => io_error,
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Io { source, .. } => Some(source),
            ClusterError::Sql { source, .. } => Some(source),
            ClusterError::Command { .. } => None,
        }
    }
}

/// A running cluster in its own temporary directory (data directory, log file and Unix socket),
/// listening on 127.0.0.1 with trust authentication. Dropping it (or `stop()`) stops the server
/// immediately and deletes the directory.
pub struct TestCluster {
    bin_dir: PathBuf,
    /// `(uid, gid)` of the `postgres` OS user when PostgreSQL programs run as that user.
    postgres_os_user: Option<(u32, u32)>,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    database: String,
    superuser: String,
    /// What it was started with: a cluster pg_upgrade makes of it gets the same.
    options: ClusterOptions,
}

impl TestCluster {
    /// Creates, configures and starts a cluster, then creates `options.database`.
    pub fn start(options: ClusterOptions) -> Result<TestCluster, ClusterError> {
        let bin_dir = postgres_bin_dir()?;
        let postgres_os_user = if running_as_root() {
            Some(postgres_os_user_ids()?)
        } else {
            None
        };
        let mut live = live_clusters();
        let root = create_temp_dir(postgres_os_user)?;
        // From here on, dropping `cluster` cleans up whatever a failing step leaves behind.
        let mut cluster = TestCluster {
            bin_dir,
            postgres_os_user,
            data_dir: root.join("data"),
            log_path: root.join("server.log"),
            root,
            port: 0,
            database: options.database.clone(),
            superuser: options.superuser.clone(),
            options: options.clone(),
        };
        live.push(cluster.teardown());
        drop(live);
        cluster.init_data_dir()?;
        cluster.start_server(&options)?;
        cluster.create_database()?;
        Ok(cluster)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started with `options`' settings on
    /// a port of its own. Its database is `primary`'s; it is read-only until [`Self::promote`].
    pub fn standby_of(
        primary: &TestCluster,
        options: ClusterOptions,
    ) -> Result<TestCluster, ClusterError> {
        let mut standby = primary.sibling(options.clone())?;
        let mut basebackup = standby.pg_command("pg_basebackup");
        basebackup
            .arg("-D")
            .arg(&standby.data_dir)
            .args([
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-h",
                "127.0.0.1",
                "-U",
                &standby.superuser,
            ])
            .arg("-p")
            .arg(primary.port.to_string());
        run(basebackup, None).map_err(|error| primary.with_log_tail(error))?;
        standby.start_server(&options)?;
        Ok(standby)
    }

    /// A cluster of this one's binaries, superuser and database in a directory of its own, neither
    /// made nor started; torn down with the others if the process is interrupted.
    fn sibling(&self, options: ClusterOptions) -> Result<TestCluster, ClusterError> {
        let mut live = live_clusters();
        let root = create_temp_dir(self.postgres_os_user)?;
        let sibling = TestCluster {
            bin_dir: self.bin_dir.clone(),
            postgres_os_user: self.postgres_os_user,
            data_dir: root.join("data"),
            log_path: root.join("server.log"),
            root,
            port: 0,
            database: self.database.clone(),
            superuser: self.superuser.clone(),
            options,
        };
        live.push(sibling.teardown());
        Ok(sibling)
    }

    /// `pg_ctl promote`, waiting until the standby is a primary.
    pub fn promote(&self) -> Result<(), ClusterError> {
        let mut pg_ctl = self.pg_ctl();
        pg_ctl.arg("promote");
        run(pg_ctl, None)
            .map(drop)
            .map_err(|error| self.with_log_tail(error))
    }

    /// Runs a PostgreSQL client program (`pg_dump`, `pg_restore`, ...) as the server's OS user,
    /// connected to this cluster as the superuser: `-h 127.0.0.1 -p PORT -U SUPERUSER ARGS`.
    /// Returns its stdout. Files it writes belong to the server's user; put them in
    /// [`Self::root_dir`].
    pub fn run_program(&self, program: &str, args: &[&str]) -> Result<String, ClusterError> {
        let mut command = self.pg_command(program);
        command
            .args(["-h", "127.0.0.1", "-U", &self.superuser])
            .arg("-p")
            .arg(self.port.to_string())
            .args(args);
        run(command, None)
    }

    /// pg_upgrade of this cluster into a new one, started after it with the same settings and
    /// libraries, as an upgrade to the next major version runs (the binaries here are the same):
    /// this server is stopped, pg_upgrade starts a server of its own on each data directory,
    /// then the new cluster starts. Returns it, and what pg_upgrade and its servers logged (kept
    /// with `--retain`). This cluster's directory stays until it is dropped.
    pub fn pg_upgrade(&self) -> Result<(TestCluster, String), ClusterError> {
        let mut upgraded = self.sibling(self.options.clone())?;
        upgraded.port = free_port()?;
        upgraded.init_data_dir()?;
        // pg_upgrade's server reads the new cluster's settings as the cluster's own does.
        upgraded.write_settings(&self.options)?;
        self.stop_server()?;
        let mut pg_upgrade = upgraded.pg_command("pg_upgrade");
        pg_upgrade
            .arg("--old-bindir")
            .arg(&self.bin_dir)
            .arg("--new-bindir")
            .arg(&self.bin_dir)
            .arg("--old-datadir")
            .arg(&self.data_dir)
            .arg("--new-datadir")
            .arg(&upgraded.data_dir)
            .arg("--old-port")
            .arg(self.port.to_string())
            .arg("--new-port")
            .arg(upgraded.port.to_string())
            .arg("--socketdir")
            .arg(&upgraded.root)
            .args(["--username", &self.superuser, "--retain"]);
        let result = run(pg_upgrade, None);
        let logs = read_logs_under(&upgraded.data_dir.join("pg_upgrade_output.d"));
        result.map_err(|error| error.with_log_tail(logs.clone()))?;
        let options = upgraded.options.clone();
        upgraded.start_server(&options)?;
        Ok((upgraded, logs))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database `connect` and `psql` use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// A libpq-style connection string for `database` as the superuser.
    pub fn connection_string(&self, database: &str) -> String {
        self.connection_string_as(&self.superuser, database)
    }

    fn connection_string_as(&self, role: &str, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={}",
            self.port,
            quote_conninfo(role),
            quote_conninfo(database)
        )
    }

    /// A connection to the cluster's database as the superuser.
    pub fn connect(&self) -> Result<postgres::Client, ClusterError> {
        self.connect_as(&self.superuser, &self.database)
    }

    /// A connection to `database` as `role` (trust authentication: no password).
    pub fn connect_as(&self, role: &str, database: &str) -> Result<postgres::Client, ClusterError> {
        postgres::Client::connect(&self.connection_string_as(role, database), postgres::NoTls)
            .map_err(|source| ClusterError::Sql {
                action: format!("connecting to database {database} as {role}"),
                source,
                log_tail: String::new(),
            })
    }

    /// Runs `sql` through the real `psql` client (`-X -v ON_ERROR_STOP=1`) on the cluster's
    /// database as the superuser and returns its stdout: psql's own formatting, for demos.
    pub fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        let mut psql = self.pg_command("psql");
        psql.args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            &self.superuser,
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .arg("-d")
        .arg(&self.database)
        .args(["-f", "-"]);
        run(psql, Some(sql))
    }

    /// `pg_ctl restart -m MODE` (`smart`, `fast` or `immediate`), waiting until the server
    /// accepts connections again.
    pub fn restart(&self, mode: &str) -> Result<(), ClusterError> {
        self.run_pg_ctl(&["-m", mode, "restart"])
    }

    /// `pg_ctl stop -m fast`: the server down (a database gone away), its directory kept for
    /// [`Self::start_again`].
    pub fn stop_server(&self) -> Result<(), ClusterError> {
        self.run_pg_ctl(&["-m", "fast", "stop"])
    }

    /// `pg_ctl start` after [`Self::stop_server`], on the same port, waiting until the server
    /// accepts connections.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        self.run_pg_ctl(&["start"])
    }

    fn run_pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let mut pg_ctl = self.pg_ctl();
        pg_ctl.args(args);
        run(pg_ctl, None)
            .map(drop)
            .map_err(|error| self.with_log_tail(error))
    }

    /// The whole server log so far (empty if it cannot be read).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|log| String::from_utf8_lossy(&log).into_owned())
            .unwrap_or_default()
    }

    /// Fails with the server log's lines nobody expects, if it has any: panics, backtraces,
    /// crashes, and WARNINGs but those containing one of `expected_warnings`.
    pub fn check_log(&self, expected_warnings: &[&str]) -> Result<(), String> {
        let unexpected = unexpected_log_lines(&self.log_contents(), expected_warnings);
        if unexpected.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the server log has {} unexpected lines:\n{}",
            unexpected.len(),
            unexpected.join("\n")
        ))
    }

    /// Writes `contents` to `name` in the cluster's directory, readable by the server's user only
    /// (mode 0600, owned by it): a secret file as the server must find it.
    pub fn write_private_file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.join(name);
        let io_error = |source| ClusterError::Io {
            action: format!("writing {}", path.display()),
            source,
        };
        std::fs::write(&path, contents).map_err(io_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error)?;
        hand_over(&path, self.postgres_os_user)?;
        Ok(path)
    }

    /// Hands `path` (made by the test) to the server's OS user, as `write_private_file` does.
    pub fn hand_over(&self, path: &Path) -> Result<(), ClusterError> {
        hand_over(path, self.postgres_os_user)
    }

    /// The cluster's own directory (data directory, log, socket), owned by the server's user.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server immediately and deletes the cluster (as dropping does).
    pub fn stop(self) {}

    fn init_data_dir(&self) -> Result<(), ClusterError> {
        let mut initdb = self.pg_command("initdb");
        initdb.arg("-D").arg(&self.data_dir).args([
            "--auth=trust",
            "-U",
            &self.superuser,
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        run(initdb, None)?;
        // Our settings live in their own file so that a retry on another port can rewrite it.
        append_to_file(
            &self.data_dir.join("postgresql.conf"),
            "\n# Throwaway test cluster settings\ninclude = 'test_cluster.conf'\n",
        )
    }

    fn start_server(&mut self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            self.write_settings(options)?;
            let log_before = self.log_contents().len();
            let mut pg_ctl = self.pg_ctl();
            pg_ctl.arg("start");
            match run(pg_ctl, None) {
                Ok(_) => return Ok(()),
                Err(error) => {
                    // The port was free when chosen; another process may have taken it since.
                    let log = self.log_contents();
                    let port_taken = log
                        .get(log_before..)
                        .is_some_and(|new| new.contains("could not bind"));
                    if !port_taken || attempt == PORT_ATTEMPTS {
                        return Err(self.with_log_tail(error));
                    }
                }
            }
            attempt += 1;
        }
    }

    fn write_settings(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let socket_dir = self.root.to_string_lossy().into_owned();
        let mut settings: Vec<(&str, String)> = vec![
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", socket_dir),
            ("logging_collector", "off".to_owned()),
            // The backend type after the process id: an ERROR or FATAL of the extension's worker
            // is told from a test's own failing statements (see `unexpected_log_lines`).
            ("log_line_prefix", LOG_LINE_PREFIX.to_owned()),
            ("fsync", "off".to_owned()),
            (
                "shared_preload_libraries",
                options.shared_preload_libraries.join(","),
            ),
        ];
        settings.extend(
            options
                .settings
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone())),
        );
        let conf: String = settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "{name} = '{}'\n",
                    value.replace('\\', "\\\\").replace('\'', "''")
                )
            })
            .collect();
        let path = self.data_dir.join("test_cluster.conf");
        fs::write(&path, conf).map_err(|source| ClusterError::Io {
            action: format!("writing {}", path.display()),
            source,
        })?;
        // Readable by the server whatever our umask.
        hand_over(&path, self.postgres_os_user)
    }

    fn create_database(&self) -> Result<(), ClusterError> {
        if self.database == "postgres" {
            return Ok(());
        }
        let fail = |action: &str, source| ClusterError::Sql {
            action: action.to_owned(),
            source,
            log_tail: self.log_tail(),
        };
        let mut client = self
            .connect_as(&self.superuser, "postgres")
            .map_err(|error| self.with_log_tail(error))?;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                quote_identifier(&self.database)
            ))
            .map_err(|source| fail(&format!("creating database {}", self.database), source))
    }

    /// `pg_ctl` with the arguments every call shares: data directory, log file, wait.
    fn pg_ctl(&self) -> Command {
        let mut pg_ctl = self.pg_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECONDS]);
        pg_ctl
    }

    /// A PostgreSQL program, run as the `postgres` OS user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        pg_command(&self.bin_dir, self.postgres_os_user, &self.root, program)
    }

    fn teardown(&self) -> Teardown {
        Teardown {
            bin_dir: self.bin_dir.clone(),
            postgres_os_user: self.postgres_os_user,
            root: self.root.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn with_log_tail(&self, error: ClusterError) -> ClusterError {
        error.with_log_tail(self.log_tail())
    }
}

/// The server log's line prefix in test clusters: PostgreSQL's default with the backend type.
const LOG_LINE_PREFIX: &str = "%m [%p] %b ";

/// The lines of a server log nobody expects: panics, backtraces, crashes, and WARNINGs, and ERRORs
/// and FATALs of the extension's worker (which a test's statements do not make), other than those
/// containing one of `expected_warnings`.
fn unexpected_log_lines(log: &str, expected_warnings: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let alarming = [
                "panicked",
                "stack backtrace",
                "PANIC:",
                "terminated by signal",
            ]
            .iter()
            .any(|needle| line.contains(needle));
            // Two the worker makes by design: its first connection to a database not created yet
            // fails once (the test creates it after the server starts; its next start waits
            // quietly), and its SIGTERM (a shutdown, a restart, pg_terminate_backend) cancels a
            // statement it is running.
            let worker_failed = ["ERROR:", "FATAL:"]
                .iter()
                .any(|level| line.contains(&format!("] {WORKER_BACKEND_TYPE} {level}")))
                && !(line.contains("FATAL:  database") && line.ends_with("does not exist"))
                && !line.ends_with("ERROR:  canceling statement due to user request");
            let unexpected = (line.contains("WARNING:") || worker_failed)
                && !expected_warnings
                    .iter()
                    .any(|expected| line.contains(expected));
            alarming || unexpected
        })
        .map(str::to_string)
        .collect()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Torn down before it leaves the list: interrupted meanwhile, the handler does it again.
        self.teardown().run();
        live_clusters().retain(|live| live.root != self.root);
    }
}

/// A PostgreSQL program in `bin_dir`, run from `root` as the `postgres` OS user when we are root.
fn pg_command(
    bin_dir: &Path,
    postgres_os_user: Option<(u32, u32)>,
    root: &Path,
    program: &str,
) -> Command {
    let program = bin_dir.join(program);
    let mut command = if postgres_os_user.is_some() {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
        runuser
    } else {
        Command::new(program)
    };
    // The postgres user may not be allowed into our working directory.
    command.current_dir(root);
    // A server behaves as in production: no Rust backtraces in error details.
    command
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// What stops a cluster's server at once and deletes its directory: when the cluster is dropped,
/// or when the process is interrupted while the cluster runs.
struct Teardown {
    bin_dir: PathBuf,
    postgres_os_user: Option<(u32, u32)>,
    root: PathBuf,
    data_dir: PathBuf,
}

impl Teardown {
    fn run(&self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut pg_ctl = pg_command(&self.bin_dir, self.postgres_os_user, &self.root, "pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "stop"]);
            // Nothing to do about a failure while cleaning up; the directory goes regardless.
            let _ = pg_ctl.stdin(Stdio::null()).output();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The clusters of this process not dropped yet. A program stopped by Ctrl-C, SIGTERM or SIGHUP
/// (a test run interrupted, the demo) runs no destructor, and its servers, started by `pg_ctl` in
/// a session of their own, would outlive it: the first cluster sets a handler that tears them all
/// down, then exits. A cluster's directory is made under this lock, so none escapes the list.
fn live_clusters() -> MutexGuard<'static, Vec<Teardown>> {
    static LIVE: Mutex<Vec<Teardown>> = Mutex::new(Vec::new());
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // A program that set a handler of its own (none does) keeps it.
        let _ = ctrlc::set_handler(|| {
            // Held until the exit: no cluster is started meanwhile. A cluster being made may
            // still have its initdb or pg_ctl running, which write into its directory after it
            // is deleted: again until it is gone, for a few seconds. (A server that pg_ctl starts
            // after its directory went stops by itself within a minute, missing its lock file.)
            let live = live_clusters();
            for _ in 0..25 {
                live.iter().for_each(Teardown::run);
                if live.iter().all(|cluster| !cluster.root.exists()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            std::process::exit(130);
        });
    });
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `command`, feeding it `stdin`, and returns its stdout.
fn run(mut command: Command, stdin: Option<&str>) -> Result<String, ClusterError> {
    let description = describe(&command);
    let spawn_error = |source| ClusterError::Io {
        action: format!("running `{description}`"),
        source,
    };
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(spawn_error)?;
    let output = std::thread::scope(|scope| {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Fed from another thread so a program writing lots of output while reading cannot
            // deadlock against us. A write error means the program quit early (e.g. psql's
            // ON_ERROR_STOP); its exit status reports that.
            scope.spawn(move || pipe.write_all(input.as_bytes()));
        }
        child.wait_with_output()
    })
    .map_err(spawn_error)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(ClusterError::Command {
            command: description,
            status: output.status,
            output: stdout + &String::from_utf8_lossy(&output.stderr),
            log_tail: String::new(),
        })
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn postgres_bin_dir() -> Result<PathBuf, ClusterError> {
    let pg_config = std::env::var_os("PG_CONFIG").unwrap_or_else(|| OsString::from("pg_config"));
    let mut command = Command::new(pg_config);
    command.arg("--bindir");
    Ok(PathBuf::from(run(command, None)?.trim()))
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `.log` files under `dir`, at any depth, one after another, each under its path.
fn read_logs_under(dir: &Path) -> String {
    files_under([dir.to_path_buf()])
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .map(|path| {
            let text = fs::read(&path).unwrap_or_default();
            format!(
                "--- {} ---\n{}\n",
                path.display(),
                String::from_utf8_lossy(&text)
            )
        })
        .collect()
}

/// The files at `roots`, and under those that are directories, at any depth (none of what cannot
/// be read).
pub(crate) fn files_under(roots: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = roots.into_iter().collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(
                fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|entry| entry.path()),
            );
        } else if path.exists() {
            files.push(path);
        }
    }
    files
}

/// A port on 127.0.0.1 that nobody listens on right now.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|source| ClusterError::Io {
            action: "finding a free port".to_owned(),
            source,
        })
}

/// A new directory under the system temporary directory, owned by the `postgres` OS user when
/// PostgreSQL runs as that user. The name is short: the Unix socket lives in it.
fn create_temp_dir(postgres_os_user: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
    static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "dex-e2e-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&path).map_err(|source| ClusterError::Io {
        action: format!("creating {}", path.display()),
        source,
    })?;
    hand_over(&path, postgres_os_user)?;
    Ok(path)
}

/// Makes `path` owned by the `postgres` OS user, if PostgreSQL runs as that user.
fn hand_over(path: &Path, postgres_os_user: Option<(u32, u32)>) -> Result<(), ClusterError> {
    let Some((uid, gid)) = postgres_os_user else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| ClusterError::Io {
        action: format!("handing {} to the {POSTGRES_OS_USER} user", path.display()),
        source,
    })
}

fn postgres_os_user_ids() -> Result<(u32, u32), ClusterError> {
    let id = |flag: &str| -> Result<u32, ClusterError> {
        let mut command = Command::new("id");
        command.args([flag, POSTGRES_OS_USER]);
        let output = run(command, None)?;
        output.trim().parse().map_err(|_| ClusterError::Io {
            action: format!("reading the id of the {POSTGRES_OS_USER} user"),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`id {flag}` printed {output:?}"),
            ),
        })
    };
    Ok((id("-u")?, id("-g")?))
}

fn append_to_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| ClusterError::Io {
            action: format!("appending to {}", path.display()),
            source,
        })
}

/// A value for a libpq connection string, quoted when it needs to be.
fn quote_conninfo(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A directory of files a server reads (scripts, configuration), made before the server starts:
/// readable by the server's OS user, deleted when dropped.
pub struct ServerFiles {
    dir: PathBuf,
    postgres_os_user: Option<(u32, u32)>,
}

impl ServerFiles {
    pub fn new() -> Result<ServerFiles, ClusterError> {
        let postgres_os_user = if running_as_root() {
            Some(postgres_os_user_ids()?)
        } else {
            None
        };
        let dir = create_temp_dir(postgres_os_user)?;
        Ok(ServerFiles {
            dir,
            postgres_os_user,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` at `relative` (directories made as needed), with `mode`, owned by the
    /// server's OS user; returns the full path.
    pub fn write(
        &self,
        relative: &str,
        contents: &str,
        mode: u32,
    ) -> Result<PathBuf, ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(relative);
        let io_error = |source| ClusterError::Io {
            action: format!("writing {}", path.display()),
            source,
        };
        let mut parent = path.parent();
        let mut made = Vec::new();
        while let Some(dir) = parent.filter(|dir| !dir.exists()) {
            made.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in made.iter().rev() {
            fs::create_dir(dir).map_err(io_error)?;
            hand_over(dir, self.postgres_os_user)?;
        }
        fs::write(&path, contents).map_err(io_error)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error)?;
        hand_over(&path, self.postgres_os_user)?;
        Ok(path)
    }
}

impl Drop for ServerFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::unexpected_log_lines;

    #[test]
    fn a_workers_error_is_unexpected_and_a_sessions_is_not() {
        let log = "\
2026-12-07 08:00:00.000 UTC [101] client backend ERROR:  relation \"x\" does not exist
2026-12-07 08:00:01.000 UTC [102] dex_collector ERROR:  could not serialize access
2026-12-07 08:00:02.000 UTC [102] dex_collector FATAL:  terminating background worker
2026-12-07 08:00:03.000 UTC [102] dex_collector LOG:  dex_collector worker: started
2026-12-07 08:00:03.500 UTC [105] dex_collector FATAL:  database \"dex\" does not exist
2026-12-07 08:00:03.700 UTC [105] dex_collector ERROR:  canceling statement due to user request
2026-12-07 08:00:04.000 UTC [103] client backend WARNING:  expected here
2026-12-07 08:00:05.000 UTC [104] client backend WARNING:  nobody expects this
";
        assert_eq!(
            unexpected_log_lines(log, &["expected here"]),
            [
                "2026-12-07 08:00:01.000 UTC [102] dex_collector ERROR:  could not serialize access",
                "2026-12-07 08:00:02.000 UTC [102] dex_collector FATAL:  terminating background worker",
                "2026-12-07 08:00:05.000 UTC [104] client backend WARNING:  nobody expects this",
            ]
        );
        assert_eq!(
            unexpected_log_lines(log, &["expected here", "serialize", "terminating"]).len(),
            1
        );
    }
}
