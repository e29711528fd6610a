//! `dex_parse()` in SQL over a table of stored DEX files (BENCHMARKS.md, "DEX parser"): a
//! throwaway cluster with the extension, the real sample files repeated into `dex_captures`,
//! then `dex_parse()`, `dex_validate()` and the `UPDATE ... SET structured_data = dex_parse(...)`
//! of docs/dex-sql.md, each timed by the client. Run it through `scripts/bench.sh --dex-parse`.
//!
//! With `--memory` (`scripts/bench.sh --dex-memory`): the backend's peak resident memory for one
//! `dex_parse()` call, against the input's size and shape, each call in a new session; then the
//! same for `dex_products()` and `dex_sales()`.

#![forbid(unsafe_code)]

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use dex_collector_e2e::backend_memory::BackendMemory;
use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic_dex::{dex_text, DexShape};

/// The seven real files the parser's tests use (MIT; licences beside them).
const SAMPLES: [&[u8]; 7] = [
    include_bytes!("../../../dex-parse/tests/fixtures/mdisibio-test.dex"),
    include_bytes!("../../../dex-parse/tests/fixtures/mdisibio-test2.dex"),
    include_bytes!("../../../dex-parse/tests/fixtures/mkrasselt1-animo.eva_dts"),
    include_bytes!("../../../dex-parse/tests/fixtures/mkrasselt1-animo2.eva_dts"),
    include_bytes!("../../../dex-parse/tests/fixtures/mkrasselt1-rhevendors.eva_dts"),
    include_bytes!("../../../dex-parse/tests/fixtures/mkrasselt1-sielaff.eva_dts"),
    include_bytes!("../../../dex-parse/tests/fixtures/tmdroid-dex3.dex"),
];
const ROWS: i64 = 100_000;
const RUNS: usize = 3;

fn main() -> ExitCode {
    let result = if std::env::args().nth(1).as_deref() == Some("--memory") {
        memory()
    } else {
        bench()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let detail = error
                .downcast_ref::<postgres::Error>()
                .and_then(postgres::Error::as_db_error)
                .map(|db| db.message().to_string());
            eprintln!(
                "dex-parse-bench: {}",
                detail.unwrap_or_else(|| error.to_string())
            );
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), Box<dyn Error>> {
    let deployment = Deployment::start(DeploymentOptions {
        sample_schema: false,
        ..DeploymentOptions::default()
    })?;
    let mut client = deployment.client();
    client.batch_execute("CREATE TABLE samples (k int, raw text)")?;
    for (k, sample) in SAMPLES.iter().enumerate() {
        // The samples are all ASCII: one character a byte.
        let text: String = sample.iter().map(|&b| char::from(b)).collect();
        client.execute("INSERT INTO samples VALUES ($1, $2)", &[&(k as i32), &text])?;
    }
    client.batch_execute(&format!(
        "CREATE TABLE dex_captures AS
         SELECT n AS id, s.raw AS raw_content, NULL::jsonb AS structured_data
           FROM generate_series(1, {ROWS}) AS n JOIN samples s ON s.k = n % 7"
    ))?;
    client.batch_execute("VACUUM ANALYZE dex_captures")?;
    let bytes: i64 = client
        .query_one(
            "SELECT sum(octet_length(raw_content))::bigint FROM dex_captures",
            &[],
        )?
        .get(0);
    println!("{ROWS} stored DEX files, {:.1} MB of text; each statement timed {RUNS} times (best shown)\n", bytes as f64 / 1e6);
    println!("| statement | best time | files/s | MB/s |\n|---|---:|---:|---:|");
    // The parser's own speed over the same rows, in this process (one thread, no PostgreSQL).
    let row_sample = |n: i64| SAMPLES[(n % 7) as usize];
    for (stage, work) in [
        (
            "parser alone: parse",
            (|raw: &[u8]| dex_parse::parse(raw).map(|d| d.file_count()).unwrap_or(0))
                as fn(&[u8]) -> usize,
        ),
        ("parser alone: parse + jsonb", |raw: &[u8]| {
            dex_parse::parse(raw)
                .ok()
                .and_then(|dex| jsonb_binary::to_jsonb(&dex).ok())
                .map_or(0, |jsonb| jsonb.len())
        }),
        ("parser alone: parse + products", |raw: &[u8]| {
            dex_parse::parse(raw)
                .map(|dex| dex.products().len())
                .unwrap_or(0)
        }),
    ] {
        let mut best = f64::MAX;
        let mut sample_bytes = 0usize;
        for _ in 0..RUNS {
            let started = Instant::now();
            let mut total = 0usize;
            sample_bytes = 0;
            for n in 1..=ROWS {
                let raw = row_sample(n);
                sample_bytes += raw.len();
                total += std::hint::black_box(work(raw));
            }
            std::hint::black_box(total);
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "| {stage} | {best:.2} s | {:.0} | {:.1} |",
            ROWS as f64 / best,
            sample_bytes as f64 / 1e6 / best
        );
    }
    // dex_sales() reads two files per row: each capture and the one 7 rows on (the same sample).
    for (statement, files_per_row) in [
        (
            "SELECT count(dex_parse(raw_content)) FROM dex_captures",
            1.0,
        ),
        (
            "SELECT count(dex_validate(raw_content)) FROM dex_captures",
            1.0,
        ),
        (
            "SELECT count(*) FROM dex_captures, dex_products(raw_content)",
            1.0,
        ),
        (
            "SELECT count(*) FROM dex_captures a JOIN dex_captures b ON b.id = a.id + 7, \
             dex_sales(a.raw_content, b.raw_content)",
            2.0,
        ),
        (
            "UPDATE dex_captures SET structured_data = dex_parse(raw_content)",
            1.0,
        ),
    ] {
        let mut best = f64::MAX;
        for _ in 0..RUNS {
            let started = Instant::now();
            client.batch_execute(statement)?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "| `{statement}` | {best:.2} s | {:.0} | {:.1} |",
            files_per_row * ROWS as f64 / best,
            files_per_row * bytes as f64 / 1e6 / best
        );
    }
    deployment.check_log()?;
    Ok(())
}

/// Input sizes measured: a real file's, then up to the default and the highest limit.
const MEMORY_SIZES: [usize; 5] = [8 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];

fn memory() -> Result<(), Box<dyn Error>> {
    let deployment = Deployment::start(DeploymentOptions {
        sample_schema: false,
        ..DeploymentOptions::default()
    })?;
    let mb = |bytes: f64| bytes / 1e6;
    println!("One dex_parse() call per new session; peak = the backend's VmHWM after the call minus before it.\n");
    println!("| input | DEX | jsonb | jsonb / DEX | peak growth | peak / DEX |\n|---|---:|---:|---:|---:|---:|");
    for shape in DexShape::ALL {
        for len in MEMORY_SIZES {
            if shape != DexShape::Products && len < (1 << 20) {
                continue;
            }
            let text = dex_text(shape, len);
            let (jsonb, growth): (i32, f64) = in_a_new_session(
                &deployment,
                "SELECT pg_column_size(dex_parse($1::text))",
                &text,
            )?;
            println!(
                "| {} | {:.3} MB | {:.1} MB | {:.1} | {:.1} MB | {:.1} |",
                shape.name(),
                mb(text.len() as f64),
                mb(f64::from(jsonb)),
                f64::from(jsonb) / text.len() as f64,
                mb(growth),
                growth / text.len() as f64
            );
        }
    }
    println!("\nThe row functions, one call per new session, on the shapes that make the most products:\n");
    println!("| function | input | DEX | rows | peak growth | peak / DEX |\n|---|---|---:|---:|---:|---:|");
    for (function, query) in ROW_FUNCTIONS {
        for shape in [DexShape::Products, DexShape::BareProducts] {
            for len in [1 << 20, 4 << 20] {
                let text = dex_text(shape, len);
                let (rows, growth): (i64, f64) = in_a_new_session(&deployment, query, &text)?;
                println!(
                    "| `{function}` | {} | {:.3} MB | {rows} | {:.1} MB | {:.1} |",
                    shape.name(),
                    mb(text.len() as f64),
                    mb(growth),
                    growth / text.len() as f64
                );
            }
        }
    }
    deployment.check_log()?;
    Ok(())
}

/// `query`'s one value for `text`, in a new session whose limit is the highest, and how much the
/// backend's peak memory grew for it, in bytes.
fn in_a_new_session<T: postgres::types::FromSqlOwned>(
    deployment: &Deployment,
    query: &str,
    text: &str,
) -> Result<(T, f64), Box<dyn Error>> {
    let mut client = deployment.client();
    client.batch_execute(
        "SET dex_collector.dex_max_bytes = '4MB'; SELECT dex_parse('ST*001*0001'::text)",
    )?;
    let before = BackendMemory::of_session(&mut client)?;
    let value: T = client.query_one(query, &[&text])?.get(0);
    let after = BackendMemory::of_session(&mut client)?;
    Ok((
        value,
        (after.peak_kb.saturating_sub(before.peak_kb) * 1024) as f64,
    ))
}

/// `dex_products()` of the text, and `dex_sales()` of the text against itself (an audit compared
/// with itself: every selection in both).
const ROW_FUNCTIONS: [(&str, &str); 2] = [
    (
        "dex_products",
        "SELECT count(*) FROM dex_products($1::text)",
    ),
    (
        "dex_sales",
        "SELECT count(*) FROM dex_sales($1::text, $1::text)",
    ),
];
