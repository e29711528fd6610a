//! Parser throughput on one core:
//! `cargo run --release -p dex-parse --example bench [MIB]`.
//!
//! Inputs are built from the real files in `tests/fixtures`: one large text
//! holding the samples over and over (up to 10 000 files, the most the
//! parser reads from one text), and the samples parsed one by one as many
//! small texts, the way `dex_parse()` sees them row by row. Stages: `parse` (to the parsed
//! form), `JSON text` (to a `String`), `JSON value` (to a
//! `serde_json::Value`; left out for the large text, whose tree would take
//! gigabytes) and `jsonb` (PostgreSQL's binary jsonb, what `dex_parse()` in
//! SQL returns). Each figure is the best of three runs; MB/s counts 10^6
//! input bytes per second on one thread.

use std::hint::black_box;
use std::time::{Duration, Instant};

const SAMPLES: [&[u8]; 7] = [
    include_bytes!("../tests/fixtures/mdisibio-test.dex"),
    include_bytes!("../tests/fixtures/mdisibio-test2.dex"),
    include_bytes!("../tests/fixtures/tmdroid-dex3.dex"),
    include_bytes!("../tests/fixtures/mkrasselt1-animo.eva_dts"),
    include_bytes!("../tests/fixtures/mkrasselt1-animo2.eva_dts"),
    include_bytes!("../tests/fixtures/mkrasselt1-rhevendors.eva_dts"),
    include_bytes!("../tests/fixtures/mkrasselt1-sielaff.eva_dts"),
];

const RUNS: usize = 3;

fn best_of(runs: usize, mut run: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(workload: &str, stage: &str, bytes: usize, elapsed: Duration) {
    let mb = bytes as f64 / 1e6;
    println!(
        "| {workload} | {stage} | {mb:.1} | {:.3} | {:.0} |",
        elapsed.as_secs_f64(),
        mb / elapsed.as_secs_f64()
    );
}

fn main() {
    let target_mib: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(128);
    let target = target_mib << 20;

    // Some samples end without a line end; keep files on lines of their own. The parser reads
    // 10 000 files of one text, so the large text holds no more.
    let mut one_text = Vec::with_capacity(target + (16 << 10));
    let mut files_in_text = 0;
    while one_text.len() < target && files_in_text + SAMPLES.len() <= 10_000 {
        for sample in SAMPLES {
            one_text.extend_from_slice(sample);
            one_text.extend_from_slice(b"\r\n");
            files_in_text += 1;
        }
    }
    let sample_bytes: usize = SAMPLES.iter().map(|s| s.len()).sum();
    let rounds = target.div_ceil(sample_bytes);
    let small_total = rounds * sample_bytes;

    let files_read = dex_parse::parse(&one_text)
        .map(|dex| dex.file_count())
        .unwrap_or(0);
    println!(
        "one large text: {files_in_text} files, {files_read} read; many small texts: {} parses of 1-8 kB",
        rounds * SAMPLES.len()
    );
    println!();
    println!("| input | stage | MB | seconds | MB/s |");
    println!("|---|---|---:|---:|---:|");

    let parse_only = best_of(RUNS, || {
        black_box(
            dex_parse::parse(black_box(&one_text))
                .map(|dex| dex.file_count())
                .ok(),
        );
    });
    report("one large text", "parse", one_text.len(), parse_only);
    let to_text = best_of(RUNS, || {
        black_box(dex_parse::parse_json_string(black_box(&one_text)).ok());
    });
    report(
        "one large text",
        "parse + JSON text",
        one_text.len(),
        to_text,
    );

    let small = |stage: fn(&[u8])| {
        best_of(RUNS, || {
            for _ in 0..rounds {
                for sample in SAMPLES {
                    stage(black_box(sample));
                }
            }
        })
    };
    let elapsed = small(|raw| {
        black_box(dex_parse::parse(raw).map(|dex| dex.file_count()).ok());
    });
    report("many small texts", "parse", small_total, elapsed);
    let elapsed = small(|raw| {
        black_box(dex_parse::parse_json_string(raw).ok());
    });
    report(
        "many small texts",
        "parse + JSON text",
        small_total,
        elapsed,
    );
    let elapsed = small(|raw| {
        black_box(dex_parse::parse_json(raw).ok());
    });
    report(
        "many small texts",
        "parse + JSON value",
        small_total,
        elapsed,
    );
    // What dex_parse() in SQL does: the parsed form straight to PostgreSQL's binary jsonb.
    let elapsed = small(|raw| {
        black_box(
            dex_parse::parse(raw)
                .ok()
                .map(|dex| jsonb_binary::to_jsonb(&dex)),
        );
    });
    report("many small texts", "parse + jsonb", small_total, elapsed);
    let elapsed = small(|raw| {
        black_box(
            dex_parse::segments(raw)
                .map(|s| s.elements.len())
                .sum::<usize>(),
        );
    });
    report("many small texts", "segments()", small_total, elapsed);
}
