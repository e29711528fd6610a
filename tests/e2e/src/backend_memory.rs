//! A backend's memory as the kernel sees it (`/proc/<pid>/status`), for the memory tests and
//! benchmarks. Reading another process's status needs the same user or root, as in CI.

use std::error::Error;

#[derive(Clone, Copy, Debug)]
pub struct BackendMemory {
    /// VmRSS: the resident set, private and shared pages alike.
    pub rss_kb: u64,
    /// RssAnon: the backend's own memory (heap, stacks).
    pub private_kb: u64,
    /// RssShmem: the pages of PostgreSQL's shared memory (shared buffers) this backend touched.
    pub shared_kb: u64,
    /// RssFile: the pages of mapped files (the server's and the libraries' code) it touched.
    pub files_kb: u64,
    /// VmHWM: the resident set's high-water mark.
    pub peak_kb: u64,
}

impl BackendMemory {
    /// The memory of the backend with process id `pid` (`SELECT pg_backend_pid()`).
    pub fn of(pid: i32) -> Result<BackendMemory, Box<dyn Error>> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let field = |name: &str| -> Result<u64, Box<dyn Error>> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("{path} has no {name}").into())
        };
        Ok(BackendMemory {
            rss_kb: field("VmRSS")?,
            private_kb: field("RssAnon")?,
            shared_kb: field("RssShmem")?,
            files_kb: field("RssFile")?,
            peak_kb: field("VmHWM")?,
        })
    }

    /// The backend of `client`'s session.
    pub fn of_session(client: &mut postgres::Client) -> Result<BackendMemory, Box<dyn Error>> {
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        BackendMemory::of(pid)
    }
}
