//! `dex_parse()`, `dex_validate()` and `dex_segments()` under `dex_collector.dex_max_bytes`, on a
//! real cluster: input over the limit is refused before it is read, the worst inputs at the
//! highest limit still fit in jsonb, and memory is returned after every call.

use dex_collector_e2e::backend_memory::BackendMemory;
use dex_collector_e2e::deployment::{Deployment, DeploymentOptions};
use dex_collector_e2e::synthetic_dex::{dex_text, DexShape};
use postgres::error::SqlState;

const DEFAULT_LIMIT: usize = 1 << 20;
const HIGHEST_LIMIT: usize = 4 << 20;
/// A real 7.9 kB audit (MIT; licence beside it).
const RHEVENDORS: &str =
    include_str!("../../../crates/dex-parse/tests/fixtures/mkrasselt1-rhevendors.eva_dts");

fn deployment() -> Deployment {
    Deployment::start(DeploymentOptions {
        sample_schema: false,
        ..DeploymentOptions::default()
    })
    .unwrap()
}

/// Fails if the server log holds a panic, a backtrace or any WARNING.
fn assert_clean_log(deployment: &Deployment) {
    let log = deployment.cluster.log_contents();
    for needle in [
        "panicked",
        "stack backtrace",
        "WARNING",
        "terminated by signal",
    ] {
        assert!(
            !log.contains(needle),
            "the server log has {needle:?}:\n{log}"
        );
    }
}

#[test]
fn input_one_byte_over_the_limit_is_refused_unread_by_every_function() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute("SELECT dex_parse('ST*001*0001'::text)")
        .unwrap();
    let over = dex_text(DexShape::Products, DEFAULT_LIMIT + 1);
    // What receiving the input costs by itself: the message, the parameter, the cast.
    client
        .query_one(
            "SELECT octet_length($1::text), octet_length($2::bytea)",
            &[&over, &over.as_bytes()],
        )
        .unwrap();
    let received = BackendMemory::of_session(&mut client).unwrap();
    let expected = format!(
        "DEX input of {} bytes exceeds dex_collector.dex_max_bytes ({DEFAULT_LIMIT} bytes)",
        DEFAULT_LIMIT + 1
    );
    let text_calls = [
        "SELECT dex_parse($1::text)::text",
        "SELECT dex_validate($1::text)::text",
        "SELECT count(*)::text FROM dex_segments($1::text)",
    ];
    for call in text_calls {
        let error = client.query_one(call, &[&over]).unwrap_err();
        let db = error.as_db_error().expect("a server error");
        assert_eq!(db.code(), &SqlState::PROGRAM_LIMIT_EXCEEDED, "{call}");
        assert_eq!(db.message(), expected, "{call}");
        assert!(
            db.hint()
                .unwrap_or_default()
                .contains("SET dex_collector.dex_max_bytes"),
            "{call}: {:?}",
            db.hint()
        );
    }
    let error = client
        .query_one("SELECT dex_parse($1::bytea)::text", &[&over.as_bytes()])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED));
    let refused = BackendMemory::of_session(&mut client).unwrap();

    // The same text parses once the limit is raised, and that costs many times what refusing it did.
    client
        .batch_execute("SET dex_collector.dex_max_bytes = '2MB'")
        .unwrap();
    let jsonb_bytes: i32 = client
        .query_one("SELECT pg_column_size(dex_parse($1::text))", &[&over])
        .unwrap()
        .get(0);
    let parsed = BackendMemory::of_session(&mut client).unwrap();
    let refusing_kb = refused.peak_kb.saturating_sub(received.peak_kb);
    let parsing_kb = parsed.peak_kb.saturating_sub(refused.peak_kb);
    println!(
        "{} byte input: receiving it raised the backend's peak to {} kB, refusing it five times \
         by {refusing_kb} kB more, parsing it by {parsing_kb} kB more ({jsonb_bytes} bytes of jsonb)",
        over.len(),
        received.peak_kb
    );
    // Refusing costs a few copies of the input at most (the allocator lays out each statement's
    // message and parameter differently); a parse costs many times the input.
    assert!(
        refusing_kb * 1024 < 4 * DEFAULT_LIMIT as u64,
        "refusing took {refusing_kb} kB"
    );
    assert!(
        parsing_kb * 1024 > 8 * DEFAULT_LIMIT as u64,
        "parsing took only {parsing_kb} kB: was the refused input parsed already?"
    );
    assert_clean_log(&deployment);
}

#[test]
fn the_limit_is_per_session_and_at_most_4mb() {
    let deployment = deployment();
    let mut client = deployment.client();
    let at_limit = dex_text(DexShape::Products, 1024);
    let over = dex_text(DexShape::Products, 1025);
    client
        .batch_execute("SET dex_collector.dex_max_bytes = '1kB'")
        .unwrap();
    client
        .query_one("SELECT dex_parse($1::text)::text", &[&at_limit])
        .unwrap();
    let error = client
        .query_one("SELECT dex_parse($1::text)::text", &[&over])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED));
    let error = client
        .batch_execute("SET dex_collector.dex_max_bytes = '5MB'")
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));

    // A plain role may set it for itself: it guards that role's own backend.
    client
        .batch_execute("CREATE ROLE dex_reader LOGIN")
        .unwrap();
    let mut reader = deployment.cluster.connect_as("dex_reader", "dex").unwrap();
    reader
        .batch_execute("SET dex_collector.dex_max_bytes = '2MB'")
        .unwrap();
    let big = dex_text(DexShape::Products, DEFAULT_LIMIT + 1);
    let products: i32 = reader
        .query_one(
            "SELECT jsonb_array_length(dex_parse($1::text)->'products')",
            &[&big],
        )
        .unwrap()
        .get(0);
    assert!(products > 10_000, "{products} products");
    assert_clean_log(&deployment);
}

#[test]
fn the_worst_inputs_at_the_highest_limit_fit_in_jsonb() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute("SET dex_collector.dex_max_bytes = '4MB'")
        .unwrap();
    for shape in DexShape::ALL {
        let text = dex_text(shape, HIGHEST_LIMIT);
        let jsonb_bytes: i32 = client
            .query_one("SELECT pg_column_size(dex_parse($1::text))", &[&text])
            .unwrap_or_else(|e| panic!("{}: {e:?}", shape.name()))
            .get(0);
        println!(
            "{}: {} bytes of DEX, {jsonb_bytes} bytes of jsonb ({:.1} times)",
            shape.name(),
            text.len(),
            f64::from(jsonb_bytes) / text.len() as f64
        );
        client
            .query_one("SELECT dex_validate($1::text)::text", &[&text])
            .unwrap();
    }
    assert_clean_log(&deployment);
}

#[test]
fn ten_thousand_calls_leave_private_memory_flat() {
    let deployment = deployment();
    let mut client = deployment.client();
    client
        .batch_execute("CREATE TABLE dex_captures (raw_content text)")
        .unwrap();
    client
        .execute(
            "INSERT INTO dex_captures SELECT $1 FROM generate_series(1, 9000)",
            &[&RHEVENDORS],
        )
        .unwrap();
    client
        .query_one("SELECT dex_parse($1::text)::text", &[&RHEVENDORS])
        .unwrap();
    let after_first = BackendMemory::of_session(&mut client).unwrap();
    // 1,000 calls a statement each, then 9,000 of each function in one statement (a row each),
    // then dex_segments() over 100 rows.
    for _ in 0..1_000 {
        client
            .query_one("SELECT pg_column_size(dex_parse($1::text))", &[&RHEVENDORS])
            .unwrap();
    }
    let calls: i64 = client
        .query_one(
            "SELECT count(dex_parse(raw_content)) + count(dex_validate(raw_content)) \
             FROM dex_captures",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(calls, 18_000);
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT raw_content FROM dex_captures LIMIT 100) AS c, \
             dex_segments(c.raw_content)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 100 * 371);
    let after_all = BackendMemory::of_session(&mut client).unwrap();
    let growth_kb = after_all.private_kb as i64 - after_first.private_kb as i64;
    println!(
        "private memory after the first call {} kB, after 19,100 more {} kB ({growth_kb:+} kB)",
        after_first.private_kb, after_all.private_kb
    );
    assert!(
        growth_kb < 4 * 1024,
        "private memory grew by {growth_kb} kB"
    );
    assert_clean_log(&deployment);
}
