//! A run's memory against its number of companies (BENCHMARKS.md, "A run's memory"): for 2,000,
//! 20,000 and 50,000 synthetic companies, one `SELECT dex_collect_all()` (concurrency 64, an
//! endpoint answering at once) in a new session, the backend's memory read from `/proc` every
//! 5 ms while it runs: the highest private memory (`RssAnon`) seen, and after the run its
//! resident high-water mark (`VmHWM`) and the shared buffers it touched (`RssShmem`); then what
//! the shared buffers hold, by schema (`pg_buffercache`), to tell the pages of the tables the runs
//! read and wrote from memory a run holds. Run it
//! through `scripts/bench.sh --run-memory`; `--shared-buffers SIZE` (PostgreSQL's units, e.g.
//! `32MB`) sets the cluster's `shared_buffers`, which bound the shared part.

#![forbid(unsafe_code)]

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dex_collector_e2e::backend_memory::BackendMemory;
use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic;

const COMPANIES: [u32; 3] = [2_000, 20_000, 50_000];
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-run-memory-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn megabytes(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// `--shared-buffers SIZE`, or nothing for PostgreSQL's default.
fn shared_buffers() -> Result<Option<String>, Box<dyn Error>> {
    const USAGE: &str = "usage: [--shared-buffers SIZE]";
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [] => Ok(None),
        [flag, size] if flag == "--shared-buffers" => Ok(Some(size.clone())),
        _ => Err(format!("unexpected arguments {arguments:?}; {USAGE}").into()),
    }
}

fn bench() -> Result<(), Box<dyn Error>> {
    let mut options = DeploymentOptions::for_benchmark();
    if let Some(size) = shared_buffers()? {
        options.settings.push(("shared_buffers".into(), size));
    }
    let deployment = Deployment::start(options)?;
    let shared_buffers: String = deployment
        .client()
        .query_one("SHOW shared_buffers", &[])?
        .get(0);
    println!("shared_buffers {shared_buffers}\n");
    println!(
        "| companies | before the run: VmHWM / RssAnon | highest RssAnon while it ran | VmHWM after | RssShmem after | RssFile after | wall |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for companies in COMPANIES {
        synthetic::load_companies(&mut deployment.client(), companies)?;
        let mut client = deployment.client();
        client.batch_execute("SET dex_collector.concurrency = 64")?;
        let before = BackendMemory::of_session(&mut client)?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        let running = AtomicBool::new(true);
        let (outcome, highest_private_kb) = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut highest = 0;
                while running.load(Ordering::SeqCst) {
                    if let Ok(memory) = BackendMemory::of(pid) {
                        highest = highest.max(memory.private_kb);
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                highest
            });
            let started = std::time::Instant::now();
            let outcome = client
                .query_one(
                    "SELECT (dex_collect_all()->>'successfulCollections')::int",
                    &[],
                )
                .map(|row| (row.get::<_, i32>(0), started.elapsed()));
            running.store(false, Ordering::SeqCst);
            (outcome, sampler.join().unwrap_or_default())
        });
        let (succeeded, wall) = outcome?;
        if succeeded != companies as i32 {
            return Err(format!("{succeeded} of {companies} companies collected").into());
        }
        let after = BackendMemory::of(pid)?;
        println!(
            "| {companies} | {} / {} | {} | {} | {} | {} | {:.2} s |",
            megabytes(before.peak_kb),
            megabytes(before.private_kb),
            megabytes(highest_private_kb),
            megabytes(after.peak_kb),
            megabytes(after.shared_kb),
            megabytes(after.files_kb),
            wall.as_secs_f64(),
        );
    }
    buffers_by_schema(&deployment)?;
    deployment.check_log()?;
    Ok(())
}

/// What the shared buffers hold after the runs, by the schema of the relation (tables, indexes,
/// TOAST) each buffer is a page of: the targets' tables in `public`, the history in
/// `dex_collector`, the catalogs.
fn buffers_by_schema(deployment: &Deployment) -> Result<(), Box<dyn Error>> {
    let mut client = deployment.client();
    client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")?;
    let rows = client.query(
        "SELECT CASE WHEN b.relfilenode IS NULL THEN 'free'
                    ELSE coalesce(r.nspname, 'other databases, dropped relations') END,
                count(*) * current_setting('block_size')::bigint / 1024
           FROM pg_buffercache b
           LEFT JOIN (SELECT pg_relation_filenode(c.oid) AS filenode, n.nspname
                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace) r
                  ON r.filenode = b.relfilenode
                 AND b.reldatabase IN (0, (SELECT oid FROM pg_database
                                            WHERE datname = current_database()))
          GROUP BY 1 ORDER BY 2 DESC",
        &[],
    )?;
    println!("\nThe shared buffers after the runs, by schema:\n");
    println!("| schema | buffers |\n|---|---:|");
    for row in rows {
        let (schema, kb): (String, i64) = (row.get(0), row.get(1));
        println!("| {schema} | {} |", megabytes(kb.unsigned_abs()));
    }
    Ok(())
}
