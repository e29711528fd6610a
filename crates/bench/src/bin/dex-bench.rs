//! The collection fan-out benchmark (BENCHMARKS.md): a throwaway PostgreSQL
//! with the extension, N synthetic companies in the design's schema (row level security on), a
//! stand-in endpoint answering after a fixed latency, and `SELECT dex_collect_all()` timed from
//! the client: target selection, requests, history writes and commit included. Each case is also
//! timed sequentially (`dex_collector.concurrency = 1`: one request after another, as the old edge
//! function called the endpoint) against the same endpoint.
//!
//! The extension must be installed (release build) in the PostgreSQL that `pg_config` (or
//! `PG_CONFIG`) names; `scripts/bench.sh` does that and then runs this program.

#![forbid(unsafe_code)]

use std::error::Error;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use dex_collector_e2e::backend_memory::BackendMemory;
use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic;
use dex_stand_in::{COLLECT_PATH, DEFAULT_SERVICE_KEY};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const USAGE: &str = "\
usage: dex-bench
           the suite: every case of BENCHMARKS.md, one table, and the targets checked
       dex-bench [--companies N] [--latency-ms L] [--concurrency C] [--runs K] [--baseline-runs B]
           one case: K runs with concurrency C (median reported), then B sequential runs
           (defaults: N 2000, L 0, C 64, K 5, B 1; B 0 skips the baseline)
       dex-bench --memory [--companies N] [--concurrency C] [--runs K]
           K runs in one session (default 100), and the backend's memory after the first and the last";

/// The suite: a slow endpoint (the fan-out's efficiency), an instant one (throughput, the stand-in
/// not limiting it) at the default concurrency and at 64, and 1,000 vs 10,000 companies (scaling).
const SUITE: [Case; 5] = [
    Case {
        companies: 2_000,
        latency_ms: 50,
        concurrency: 64,
        runs: 5,
        baseline_runs: 1,
    },
    Case {
        companies: 2_000,
        latency_ms: 0,
        concurrency: 64,
        runs: 5,
        baseline_runs: 3,
    },
    Case {
        companies: 2_000,
        latency_ms: 0,
        concurrency: 8,
        runs: 5,
        baseline_runs: 3,
    },
    Case {
        companies: 1_000,
        latency_ms: 0,
        concurrency: 64,
        runs: 5,
        baseline_runs: 3,
    },
    Case {
        companies: 10_000,
        latency_ms: 0,
        concurrency: 64,
        runs: 5,
        baseline_runs: 3,
    },
];
const SUITE_MEMORY: MemoryCase = MemoryCase {
    companies: 2_000,
    concurrency: 64,
    runs: 100,
};

/// The targets, checked against the suite's cases.
const MAX_WALL_OVER_IDEAL: f64 = 1.2;
const MIN_COMPANIES_PER_SECOND: f64 = 5_000.0;
const MAX_SCALING_RATIO: f64 = 1.3;
const MAX_RSS_GROWTH_KB: u64 = 10 * 1024;

/// How long the load tool drives the stand-in to measure its ceiling.
const CEILING_DURATION: &str = "3s";
/// Lines of the server log shown when a case fails.
const LOG_TAIL_LINES: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Case {
    companies: u32,
    latency_ms: u64,
    concurrency: u32,
    /// Runs with `concurrency` in one session; the median is reported.
    runs: usize,
    /// Runs with concurrency 1 in another session; 0 skips the baseline.
    baseline_runs: usize,
}

impl Case {
    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// The best a perfect fan-out could do: ceil(N / C) rounds of one latency each.
    fn ideal(&self) -> Duration {
        self.latency() * self.companies.div_ceil(self.concurrency)
    }
}

#[derive(Clone, Copy, Debug)]
struct MemoryCase {
    companies: u32,
    concurrency: u32,
    runs: usize,
}

enum Mode {
    Suite,
    One(Case),
    Memory(MemoryCase),
}

fn main() -> ExitCode {
    let mode = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(mode)) => mode,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("dex-bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` asks for the usage text.
fn parse_args(args: Vec<String>) -> Result<Option<Mode>, String> {
    if args.is_empty() {
        return Ok(Some(Mode::Suite));
    }
    let mut case = Case {
        companies: 2_000,
        latency_ms: 0,
        concurrency: 64,
        runs: 5,
        baseline_runs: 1,
    };
    let mut runs = None;
    let mut memory = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{name}: \"{text}\" is not a whole number"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--companies" => {
                case.companies = between("--companies", value("--companies")?, 1, 1_000_000)?
            }
            "--latency-ms" => {
                case.latency_ms =
                    u64::from(between("--latency-ms", value("--latency-ms")?, 0, 60_000)?)
            }
            // dex_collector.concurrency's own range.
            "--concurrency" => {
                case.concurrency = between("--concurrency", value("--concurrency")?, 1, 1000)?
            }
            "--runs" => runs = Some(between("--runs", value("--runs")?, 1, 100_000)? as usize),
            "--baseline-runs" => {
                case.baseline_runs =
                    between("--baseline-runs", value("--baseline-runs")?, 0, 1000)? as usize
            }
            "--memory" => memory = true,
            other => return Err(format!("unknown argument \"{other}\"")),
        }
    }
    Ok(Some(if memory {
        Mode::Memory(MemoryCase {
            companies: case.companies,
            concurrency: case.concurrency,
            runs: runs.unwrap_or(SUITE_MEMORY.runs),
        })
    } else {
        Mode::One(Case {
            runs: runs.unwrap_or(case.runs),
            ..case
        })
    }))
}

fn between(name: &str, value: u64, min: u32, max: u32) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("{name} must be between {min} and {max}"))
}

fn run(mode: Mode) -> BenchResult<()> {
    let suite = matches!(mode, Mode::Suite);
    let (cases, memory) = match mode {
        Mode::Suite => (SUITE.to_vec(), Some(SUITE_MEMORY)),
        Mode::One(case) => (vec![case], None),
        Mode::Memory(memory) => (Vec::new(), Some(memory)),
    };
    let mut bench = Bench::start()?;
    let (measured, memory) = bench.measure_all(&cases, memory).map_err(|error| {
        // The cluster is deleted on exit: keep what its log says about the failure.
        format!(
            "{error}\n--- end of the server log ---\n{}",
            bench.log_tail()
        )
    })?;
    bench.deployment.check_log()?;
    let mut out = report(&bench.machine, &measured, memory.as_ref());
    if suite {
        check_targets(&mut out, &measured, memory.as_ref());
    }
    print!("{out}");
    Ok(())
}

/// One deployment for the whole benchmark, reloaded with other companies and latencies per case.
struct Bench {
    deployment: Deployment,
    loaded_companies: Option<u32>,
    machine: Machine,
}

impl Bench {
    fn start() -> BenchResult<Bench> {
        let deployment = Deployment::start(DeploymentOptions::for_benchmark())?;
        let server: String = deployment
            .client()
            .query_one("SHOW server_version", &[])?
            .get(0);
        Ok(Bench {
            deployment,
            loaded_companies: None,
            machine: Machine::describe(server),
        })
    }

    fn measure_all(
        &mut self,
        cases: &[Case],
        memory: Option<MemoryCase>,
    ) -> BenchResult<(Vec<Measured>, Option<MemoryMeasured>)> {
        let measured = cases
            .iter()
            .map(|case| self.measure(*case))
            .collect::<BenchResult<Vec<_>>>()?;
        let memory = memory
            .map(|memory| self.measure_memory(memory))
            .transpose()?;
        Ok((measured, memory))
    }

    fn log_tail(&self) -> String {
        let log = self.deployment.cluster.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Loads `companies` (unless loaded already), sets the endpoint's latency, and empties the
    /// history so that every case starts from the same tables.
    fn prepare(&mut self, companies: u32, latency: Duration) -> BenchResult<()> {
        let mut client = self.deployment.cluster.connect()?;
        if self.loaded_companies != Some(companies) {
            synthetic::load_companies(&mut client, companies)?;
            self.loaded_companies = Some(companies);
        }
        client.batch_execute("TRUNCATE dex_collector.run_results, dex_collector.runs")?;
        self.deployment.stand_in.set_latency(latency);
        Ok(())
    }

    /// A new session: its first run loads the library and builds the HTTP client, as a run
    /// started by pg_cron (a new connection per job) does.
    fn session(&self, concurrency: u32) -> BenchResult<Session> {
        let mut client = self.deployment.cluster.connect()?;
        client.batch_execute(&format!("SET dex_collector.concurrency = {concurrency}"))?;
        let backend_pid: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        Ok(Session {
            client,
            backend_pid,
        })
    }

    fn measure(&mut self, case: Case) -> BenchResult<Measured> {
        eprintln!(
            "dex-bench: {} companies, latency {} ms, concurrency {}: {} run(s)",
            case.companies, case.latency_ms, case.concurrency, case.runs
        );
        self.prepare(case.companies, case.latency())?;
        let mut session = self.session(case.concurrency)?;
        let walls = (0..case.runs)
            .map(|_| session.collect(case.companies))
            .collect::<BenchResult<Vec<_>>>()?;
        let peak_rss_kb = session.memory()?.peak_kb;
        // Its backend and connections would otherwise sit idle beside the baseline's.
        drop(session);
        let mut baseline = None;
        if case.baseline_runs > 0 {
            eprintln!(
                "dex-bench:   sequential baseline (concurrency 1): {} run(s)",
                case.baseline_runs
            );
            let mut sequential = self.session(1)?;
            let walls = (0..case.baseline_runs)
                .map(|_| sequential.collect(case.companies))
                .collect::<BenchResult<Vec<_>>>()?;
            baseline = Some(median(&walls));
        }
        let stand_in_ceiling = (case.latency_ms == 0).then(|| {
            eprintln!(
                "dex-bench:   the stand-in's own ceiling (wrk, {} connections)",
                case.concurrency
            );
            stand_in_ceiling(&self.deployment, case.concurrency)
        });
        Ok(Measured {
            case,
            first: walls[0],
            wall: median(&walls),
            baseline,
            peak_rss_kb,
            stand_in_ceiling,
        })
    }

    fn measure_memory(&mut self, memory: MemoryCase) -> BenchResult<MemoryMeasured> {
        eprintln!(
            "dex-bench: memory: {} runs of {} companies in one session, concurrency {}, latency 0",
            memory.runs, memory.companies, memory.concurrency
        );
        self.prepare(memory.companies, Duration::ZERO)?;
        let mut session = self.session(memory.concurrency)?;
        let mut walls = vec![session.collect(memory.companies)?];
        let after_first = session.memory()?;
        for _ in 1..memory.runs {
            walls.push(session.collect(memory.companies)?);
        }
        let after_last = session.memory()?;
        let history = self.deployment.cluster.connect()?.query_one(
            "SELECT count(*), pg_total_relation_size('dex_collector.run_results') FROM dex_collector.run_results",
            &[],
        )?;
        let (history_rows, history_bytes): (i64, i64) = (history.get(0), history.get(1));
        Ok(MemoryMeasured {
            case: memory,
            after_first,
            after_last,
            walls,
            history_rows,
            history_bytes,
        })
    }
}

/// A superuser session whose backend runs the collections.
struct Session {
    client: postgres::Client,
    backend_pid: i32,
}

impl Session {
    /// One `dex_collect_all()`, timed from the client; an error unless every company succeeded.
    fn collect(&mut self, companies: u32) -> BenchResult<Duration> {
        let started = Instant::now();
        // Only two fields come back: shipping the whole summary to this client is not the run's work.
        let row = self.client.query_one(
            "SELECT (s->>'successfulCollections')::bigint, s->>'error' FROM dex_collect_all() AS s",
            &[],
        )?;
        let wall = started.elapsed();
        let succeeded: Option<i64> = row.get(0);
        if succeeded != Some(i64::from(companies)) {
            let error: Option<String> = row.get(1);
            return Err(format!(
                "a run collected {succeeded:?} of {companies} companies{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            )
            .into());
        }
        Ok(wall)
    }

    /// The backend's memory, from `/proc/<pid>/status`.
    fn memory(&self) -> BenchResult<BackendMemory> {
        BackendMemory::of(self.backend_pid)
    }
}

struct Measured {
    case: Case,
    /// The session's first run: the library is loaded and the HTTP client built then.
    first: Duration,
    /// Median of the case's runs, the first included.
    wall: Duration,
    /// Median of the sequential runs.
    baseline: Option<Duration>,
    peak_rss_kb: u64,
    /// Requests per second the stand-in answered under the load tool, or why not measured.
    stand_in_ceiling: Option<Result<f64, String>>,
}

impl Measured {
    fn companies_per_second(&self) -> f64 {
        f64::from(self.case.companies) / self.wall.as_secs_f64()
    }

    fn wall_over_ideal(&self) -> Option<f64> {
        let ideal = self.case.ideal();
        (!ideal.is_zero()).then(|| self.wall.as_secs_f64() / ideal.as_secs_f64())
    }

    fn seconds_per_company(&self) -> f64 {
        self.wall.as_secs_f64() / f64::from(self.case.companies)
    }
}

struct MemoryMeasured {
    case: MemoryCase,
    after_first: BackendMemory,
    after_last: BackendMemory,
    walls: Vec<Duration>,
    /// `run_results` after the runs: this backend wrote every page of it through shared buffers.
    history_rows: i64,
    history_bytes: i64,
}

impl MemoryMeasured {
    fn rss_growth_kb(&self) -> i64 {
        self.after_last.rss_kb as i64 - self.after_first.rss_kb as i64
    }

    fn private_growth_kb(&self) -> i64 {
        self.after_last.private_kb as i64 - self.after_first.private_kb as i64
    }
}

fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The stand-in's throughput under `wrk` at latency 0 over `connections` keep-alive connections,
/// with the request the extension sends. wrk gets one thread: on two cores the stand-in keeps the
/// other, as it shares the machine with the backend during a run.
fn stand_in_ceiling(deployment: &Deployment, connections: u32) -> Result<f64, String> {
    let script_path = std::env::temp_dir().join(format!("dex-bench-{}.lua", std::process::id()));
    let script = format!(
        "wrk.method = \"POST\"\nwrk.body = \"{{}}\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"X-Service-Key\"] = \"{DEFAULT_SERVICE_KEY}\"\n\
         wrk.headers[\"X-Company-ID\"] = \"{}\"\n",
        synthetic::company_id(1)
    );
    std::fs::write(&script_path, script)
        .map_err(|e| format!("cannot write {}: {e}", script_path.display()))?;
    let output = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            CEILING_DURATION,
            "-s",
        ])
        .arg(&script_path)
        .arg(format!("{}{COLLECT_PATH}", deployment.stand_in.url()))
        .output();
    // Only needed while wrk runs; a leftover in the temp directory would be harmless.
    let _ = std::fs::remove_file(&script_path);
    let output =
        output.map_err(|e| format!("not measured: cannot run wrk ({e}); apt-get install wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "not measured: wrk failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    if text.contains("Non-2xx") {
        return Err("not measured: the stand-in refused wrk's requests".into());
    }
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| "not measured: no Requests/sec in wrk's output".into())
}

/// What the figures ran on.
struct Machine {
    cpu: String,
    cores: usize,
    /// PostgreSQL's `server_version`.
    server: String,
}

impl Machine {
    fn describe(server: String) -> Machine {
        // /proc/cpuinfo rather than lscpu, which a minimal Debian 13 lacks.
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "model name").then(|| value.trim().to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        Machine { cpu, cores, server }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn megabytes(kb: i64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn report(machine: &Machine, measured: &[Measured], memory: Option<&MemoryMeasured>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nMachine: {}, {} cores; PostgreSQL {}",
        machine.cpu, machine.cores, machine.server
    );
    if !measured.is_empty() {
        let _ = writeln!(
            out,
            "\n| companies | latency | concurrency | runs | wall (median) | first run | companies/s | ideal | \
             wall/ideal | sequential | speed-up | backend peak RSS | stand-in ceiling (wrk) |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
    }
    for m in measured {
        let case = &m.case;
        let (sequential, speed_up) = match m.baseline {
            Some(baseline) => (
                seconds(baseline),
                format!("{:.1}x", baseline.as_secs_f64() / m.wall.as_secs_f64()),
            ),
            None => ("not run".into(), "".into()),
        };
        let ceiling = match &m.stand_in_ceiling {
            Some(Ok(per_second)) => format!("{per_second:.0} req/s"),
            Some(Err(why)) => why.clone(),
            None => "".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} ms | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            case.companies,
            case.latency_ms,
            case.concurrency,
            case.runs,
            seconds(m.wall),
            seconds(m.first),
            m.companies_per_second(),
            seconds(case.ideal()),
            m.wall_over_ideal()
                .map_or_else(|| "n/a".into(), |ratio| format!("{ratio:.2}")),
            sequential,
            speed_up,
            megabytes(m.peak_rss_kb as i64),
            ceiling,
        );
    }
    if let Some(m) = memory {
        let (first, last) = (&m.after_first, &m.after_last);
        let row = |name: &str, before: u64, after: u64| {
            format!(
                "| {name} | {} | {} | {} |\n",
                megabytes(before as i64),
                megabytes(after as i64),
                megabytes(after as i64 - before as i64)
            )
        };
        let tenth = (m.walls.len() / 10).max(1);
        let _ = write!(
            out,
            "\nMemory: {} runs of {} companies in one session (concurrency {}, latency 0); median run time \
             {} over runs 1 to {tenth}, {} over runs {} to {}\n\n\
             | backend memory | after run 1 | after run {} | growth |\n|---|---:|---:|---:|\n{}{}{}{}",
            m.case.runs,
            m.case.companies,
            m.case.concurrency,
            seconds(median(&m.walls[..tenth])),
            seconds(median(&m.walls[m.walls.len() - tenth..])),
            m.walls.len() - tenth + 1,
            m.walls.len(),
            m.case.runs,
            row("RSS (VmRSS)", first.rss_kb, last.rss_kb),
            row("private (RssAnon)", first.private_kb, last.private_kb),
            row("shared buffers touched (RssShmem)", first.shared_kb, last.shared_kb),
            row("peak RSS (VmHWM)", first.peak_kb, last.peak_kb),
        );
        let _ = writeln!(
            out,
            "\nThe history written meanwhile: {} rows of dex_collector.run_results, {} with its indexes.",
            m.history_rows,
            megabytes(m.history_bytes / 1024),
        );
    }
    out
}

/// The four targets, against the suite's cases.
fn check_targets(out: &mut String, measured: &[Measured], memory: Option<&MemoryMeasured>) {
    let find = |companies, latency_ms, concurrency| {
        measured.iter().find(|m| {
            (m.case.companies, m.case.latency_ms, m.case.concurrency)
                == (companies, latency_ms, concurrency)
        })
    };
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    let _ = writeln!(out, "\nTargets:");
    if let Some(m) = find(2_000, 50, 64) {
        let ratio = m.wall_over_ideal().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            out,
            "- 2000 companies, 50 ms, concurrency 64: wall/ideal {ratio:.2} (at most {MAX_WALL_OVER_IDEAL}): {}",
            verdict(ratio <= MAX_WALL_OVER_IDEAL)
        );
    }
    if let Some(m) = find(2_000, 0, 64) {
        let rate = m.companies_per_second();
        let ceiling = match &m.stand_in_ceiling {
            Some(Ok(per_second)) => format!("the stand-in alone answers {per_second:.0} req/s"),
            _ => "the stand-in's ceiling not measured".into(),
        };
        let _ = writeln!(
            out,
            "- 2000 companies, latency 0: {rate:.0} companies/s (at least {MIN_COMPANIES_PER_SECOND}; {ceiling}): {}",
            verdict(rate >= MIN_COMPANIES_PER_SECOND)
        );
    }
    if let (Some(small), Some(large)) = (find(1_000, 0, 64), find(10_000, 0, 64)) {
        let ratio = large.seconds_per_company() / small.seconds_per_company();
        let _ = writeln!(
            out,
            "- time per company, 10000 vs 1000 companies at latency 0: {:.1} µs vs {:.1} µs, ratio {ratio:.2} \
             (at most {MAX_SCALING_RATIO}): {}",
            large.seconds_per_company() * 1e6,
            small.seconds_per_company() * 1e6,
            verdict(ratio <= MAX_SCALING_RATIO)
        );
    }
    if let Some(m) = memory {
        let limit = MAX_RSS_GROWTH_KB as i64;
        let _ = writeln!(
            out,
            "- backend RSS growth over {} runs: {} (at most {}): {}; its private memory grew {}: {}",
            m.case.runs,
            megabytes(m.rss_growth_kb()),
            megabytes(limit),
            verdict(m.rss_growth_kb() <= limit),
            megabytes(m.private_growth_kb()),
            verdict(m.private_growth_kb() <= limit),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_ideal_is_whole_rounds_of_one_latency() {
        let case = Case {
            companies: 2_000,
            latency_ms: 50,
            concurrency: 64,
            runs: 1,
            baseline_runs: 0,
        };
        assert_eq!(case.ideal(), Duration::from_millis(32 * 50));
        assert_eq!(
            Case {
                latency_ms: 0,
                ..case
            }
            .ideal(),
            Duration::ZERO
        );
    }

    #[test]
    fn arguments_choose_the_mode() {
        assert!(matches!(parse_args(Vec::new()), Ok(Some(Mode::Suite))));
        assert!(matches!(parse_args(args("--help")), Ok(None)));
        let Ok(Some(Mode::One(case))) = parse_args(args(
            "--companies 500 --latency-ms 20 --concurrency 16 --runs 3",
        )) else {
            panic!("one case expected")
        };
        assert_eq!(
            case,
            Case {
                companies: 500,
                latency_ms: 20,
                concurrency: 16,
                runs: 3,
                baseline_runs: 1
            }
        );
        let Ok(Some(Mode::Memory(memory))) = parse_args(args("--memory --concurrency 8")) else {
            panic!("the memory case expected")
        };
        assert_eq!(
            (memory.companies, memory.concurrency, memory.runs),
            (2_000, 8, 100)
        );
        assert!(parse_args(args("--concurrency 1001")).is_err());
        assert!(parse_args(args("--companies 0")).is_err());
        assert!(parse_args(args("--runs")).is_err());
        assert!(parse_args(args("--latency 5")).is_err());
    }
}
