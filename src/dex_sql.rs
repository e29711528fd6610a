//! SQL functions over the `dex-parse` crate: DEX (EVA-DTS) audit text to
//! JSON, its validation, its raw segments, its products and the sales between two audits. All of
//! the parsing lives in the crate; this module only converts types, and errors into
//! [`DexSqlError`].
//!
//! ```sql
//! UPDATE dex_captures SET structured_data = dex_parse(raw_content);
//! SELECT dex_validate(raw_content)->>'ok' FROM dex_captures;
//! SELECT * FROM dex_segments(raw_content) WHERE segment = 'PA1';
//! ```

// A `#[pg_extern]` raises the `ErrorReport` it returns; it is large, and only ever returned once.
#![allow(clippy::result_large_err)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::DexSqlError;
use crate::pg::Jsonb;
use crate::settings;

/// Refuses input longer than `dex_collector.dex_max_bytes` before any of it is read: every role
/// may call these functions, and the parse and its output take many times the input in the
/// backend's memory.
fn check_size(len: usize) -> Result<(), DexSqlError> {
    let limit = settings::dex_max_bytes();
    if len > limit {
        return Err(DexSqlError::TooLarge { len, limit });
    }
    Ok(())
}

/// Reads `raw` as DEX (after the size check).
fn parse_checked(raw: &[u8]) -> Result<dex_parse::Dex<'_>, DexSqlError> {
    check_size(raw.len())?;
    Ok(dex_parse::parse(raw)?)
}

/// Parses `raw` and writes what `write` picks of it as jsonb. The parse is dropped before the
/// datum is copied into PostgreSQL's memory, so the two are never held together.
fn parse_to_jsonb(
    raw: &[u8],
    write: impl FnOnce(&dex_parse::Dex<'_>) -> Result<Vec<u8>, jsonb_binary::Error>,
) -> Result<Jsonb, DexSqlError> {
    let written = write(&parse_checked(raw)?);
    Ok(Jsonb(written?))
}

/// The parsed DEX text as jsonb; the shape is documented in the crate's README.
#[pg_extern(immutable, strict, parallel_safe, name = "dex_parse")]
fn dex_parse_text(raw: &str) -> Result<Jsonb, ErrorReport> {
    Ok(parse_to_jsonb(raw.as_bytes(), |dex| {
        jsonb_binary::to_jsonb(dex)
    })?)
}

/// As `dex_parse(text)`, for raw bytes in any encoding: a file's text elements are read as UTF-8
/// when the file is valid UTF-8, otherwise as Windows-1252.
#[pg_extern(immutable, strict, parallel_safe, name = "dex_parse")]
fn dex_parse_bytea(raw: &[u8]) -> Result<Jsonb, ErrorReport> {
    Ok(parse_to_jsonb(raw, |dex| jsonb_binary::to_jsonb(dex))?)
}

/// Only the `validation` part of `dex_parse()`.
#[pg_extern(immutable, strict, parallel_safe)]
fn dex_validate(raw: &str) -> Result<Jsonb, ErrorReport> {
    Ok(validation_to_jsonb(raw.as_bytes())?)
}

/// As `dex_validate(text)`, for raw bytes in any encoding, as `dex_parse(bytea)` reads them.
#[pg_extern(immutable, strict, parallel_safe, name = "dex_validate")]
fn dex_validate_bytea(raw: &[u8]) -> Result<Jsonb, ErrorReport> {
    Ok(validation_to_jsonb(raw)?)
}

fn validation_to_jsonb(raw: &[u8]) -> Result<Jsonb, DexSqlError> {
    parse_to_jsonb(raw, |dex| jsonb_binary::to_jsonb(&dex.validation()))
}

/// Money as an exact SQL numeric in currency units.
fn numeric(money: Option<dex_parse::Money>) -> Option<AnyNumeric> {
    money.and_then(|money| AnyNumeric::try_from(money.to_string().as_str()).ok())
}

/// A counter as bigint; the few beyond its range (none real) are NULL.
fn bigint(count: Option<u64>) -> Option<i64> {
    count.and_then(|count| i64::try_from(count).ok())
}

/// Defines a set-returning SQL function twice, for `text` input and for `bytea` (raw bytes in
/// any encoding), so that its columns are written once: pgrx reads them from the literal
/// signature, and rejects a type alias there.
macro_rules! for_text_and_bytea {
    (
        $(#[doc = $doc:literal])*
        $sql_name:literal as $text_fn:ident and $bytea_fn:ident
        ($($input:ident),+ $(; $flag:ident: $flag_type:ident = $flag_default:tt)?)
        -> $columns:tt from $rows:ident
    ) => {
        $(#[doc = $doc])*
        #[pg_extern(immutable, strict, parallel_safe, name = $sql_name)]
        fn $text_fn<'a>(
            $($input: &'a str,)+
            $($flag: default!($flag_type, $flag_default),)?
        ) -> Result<TableIterator<'a, $columns>, ErrorReport> {
            Ok($rows($($input.as_bytes(),)+ $($flag,)?)?)
        }

        #[doc = concat!("As `", $sql_name, "()` on text, for raw bytes in any encoding.")]
        #[pg_extern(immutable, strict, parallel_safe, name = $sql_name)]
        fn $bytea_fn<'a>(
            $($input: &'a [u8],)+
            $($flag: default!($flag_type, $flag_default),)?
        ) -> Result<TableIterator<'a, $columns>, ErrorReport> {
            Ok($rows($($input,)+ $($flag,)?)?)
        }
    };
}

for_text_and_bytea! {
    /// Every non-blank line of any text as (line number, segment id, elements), exactly as
    /// written; `elements[1]` is the segment's element 01. It reads text that is not DEX too, to
    /// show what is wrong with it. Rows are made one at a time as they are fetched.
    "dex_segments" as dex_segments and dex_segments_bytea (raw) -> (
        name!(line, i32),
        name!(segment, String),
        name!(elements, Vec<String>),
    ) from segment_rows
}

/// A row of `dex_segments()`, as its columns above name it.
type SegmentRow = (i32, String, Vec<String>);

/// The rows of `dex_segments()`, their text read in one encoding decided for the whole input (it
/// knows no files: `dex_parse()` decides for each file of an input).
fn segment_rows(raw: &[u8]) -> Result<TableIterator<'_, SegmentRow>, DexSqlError> {
    check_size(raw.len())?;
    let encoding = dex_parse::TextEncoding::of(raw);
    Ok(TableIterator::new(dex_parse::segments(raw).map(
        move |segment| {
            let elements = segment
                .elements
                .iter()
                .map(|e| encoding.decode(e).into_owned())
                .collect();
            // A text value holds at most 1 GB, so fewer lines than i32::MAX.
            let line = i32::try_from(segment.line).unwrap_or(i32::MAX);
            (line, encoding.decode(segment.id).into_owned(), elements)
        },
    )))
}

for_text_and_bytea! {
    /// One row per product selection of the text's first file (PA1 with its PA2 to PA4); money in
    /// currency units as `numeric`, counters as `bigint`.
    "dex_products" as dex_products_text and dex_products_bytea (raw) -> (
        name!(selection, Option<String>),
        name!(name, Option<String>),
        name!(price, Option<AnyNumeric>),
        name!(vends_since_init, Option<i64>),
        name!(value_since_init, Option<AnyNumeric>),
        name!(vends_since_reset, Option<i64>),
        name!(value_since_reset, Option<AnyNumeric>),
        name!(test_vends_since_init, Option<i64>),
        name!(free_vends_since_init, Option<i64>),
    ) from product_rows
}

/// A row of `dex_products()`, as its columns above name it.
type ProductRow = (
    Option<String>,
    Option<String>,
    Option<AnyNumeric>,
    Option<i64>,
    Option<AnyNumeric>,
    Option<i64>,
    Option<AnyNumeric>,
    Option<i64>,
    Option<i64>,
);

fn product_rows(raw: &[u8]) -> Result<TableIterator<'static, ProductRow>, DexSqlError> {
    // The parsed text goes before the rows are made, and each row is made as it is returned:
    // the products are all that is held.
    let products = parse_checked(raw)?.products();
    Ok(TableIterator::new(products.into_iter().map(|p| {
        (
            p.selection,
            p.name,
            numeric(p.price),
            bigint(p.paid.count_since_init),
            numeric(p.paid.value_since_init),
            bigint(p.paid.count_since_reset),
            numeric(p.paid.value_since_reset),
            bigint(p.test.count_since_init),
            bigint(p.free.count_since_init),
        )
    })))
}

for_text_and_bytea! {
    /// What sold of each selection between two audits of one machine, from the counters since
    /// initialisation, with a status per row: `ok`, `new_selection`, `removed_selection`,
    /// `counter_reset`, `truncated`. Audits of different machines (ID101) or in the wrong order
    /// (EA3) are an error unless `ignore_mismatch`.
    "dex_sales" as dex_sales_text and dex_sales_bytea (older, newer; ignore_mismatch: bool = false) -> (
        name!(selection, String),
        name!(name, Option<String>),
        name!(units, Option<i64>),
        name!(value, Option<AnyNumeric>),
        name!(status, String),
    ) from sale_rows
}

/// A row of `dex_sales()`, as its columns above name it.
type SaleRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<AnyNumeric>,
    String,
);

fn sale_rows(
    older: &[u8],
    newer: &[u8],
    ignore_mismatch: bool,
) -> Result<TableIterator<'static, SaleRow>, DexSqlError> {
    // One parsed text at a time, each gone once its audit is taken; the audits go before the
    // rows are returned, each made as it is.
    let older = parse_checked(older)
        .map_err(|error| error.in_argument("older"))?
        .audit();
    let newer = parse_checked(newer)
        .map_err(|error| error.in_argument("newer"))?
        .audit();
    let sales = dex_parse::sales(&older, &newer, !ignore_mismatch)?;
    drop((older, newer));
    Ok(TableIterator::new(sales.into_iter().map(|sale| {
        (
            sale.selection,
            sale.name,
            bigint(sale.units),
            numeric(sale.value),
            sale.status.as_str().to_string(),
        )
    })))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::pg::jsonb_in_bytes;

    /// LF only, G85 valid once CR LF is restored, VA1*586530*9612*586530*9592, 371 lines.
    const RHEVENDORS: &str =
        include_str!("../crates/dex-parse/tests/fixtures/mkrasselt1-rhevendors.eva_dts");

    /// The seven real files of the parser's tests.
    const SAMPLES: [&[u8]; 7] = [
        include_bytes!("../crates/dex-parse/tests/fixtures/mdisibio-test.dex"),
        include_bytes!("../crates/dex-parse/tests/fixtures/mdisibio-test2.dex"),
        include_bytes!("../crates/dex-parse/tests/fixtures/tmdroid-dex3.dex"),
        include_bytes!("../crates/dex-parse/tests/fixtures/mkrasselt1-animo.eva_dts"),
        include_bytes!("../crates/dex-parse/tests/fixtures/mkrasselt1-animo2.eva_dts"),
        include_bytes!("../crates/dex-parse/tests/fixtures/mkrasselt1-rhevendors.eva_dts"),
        include_bytes!("../crates/dex-parse/tests/fixtures/mkrasselt1-sielaff.eva_dts"),
    ];

    /// Fails unless the jsonb written without jsonb_in is byte for byte jsonb_in's.
    fn assert_same_as_jsonb_in(what: &str, ours: Vec<u8>, json: &str) {
        assert!(
            ours == jsonb_in_bytes(json),
            "{what}: jsonb differs from jsonb_in's for {json}"
        );
    }

    #[pg_test]
    fn the_jsonb_is_byte_for_byte_what_jsonb_in_makes_of_the_json_text() {
        let damaged: [&[u8]; 4] = [
            b"DXS\nDXS\nST\nZ*1*2\nPA1*1\nPA1\nPA2\n",
            b"ST*001*0001\nPA1*1*150*CAF\xC9\r\nID4*6\nVA1*1\nSE*4*0001\n",
            b"junk before\nDXS*X\nST*001*0001\nCA17*0*5*12\nEA1*EGS*240101*1200\nDXE*1*1\ntrailing\n",
            b"ST*001*0001\nVA1*18446744073709551615*4294967295*99999999999999999999*x\nSE*2*0001\n",
        ];
        for raw in SAMPLES.iter().chain(damaged.iter()) {
            let dex = dex_parse::parse(raw).expect("the samples are DEX");
            let json = dex.to_json_string();
            assert_same_as_jsonb_in("dex_parse", jsonb_binary::to_jsonb(&dex).unwrap(), &json);
            let validation = serde_json::to_string(&dex.validation()).unwrap();
            assert_same_as_jsonb_in(
                "dex_validate",
                jsonb_binary::to_jsonb(&dex.validation()).unwrap(),
                &validation,
            );
        }
        // Numbers, strings and nesting beyond what DEX output holds.
        for json in [
            r#"{"a": 0.05, "b": 1e-6, "c": 1e300, "d": -3, "e": 0, "f": -0.0, "g": 1234.0}"#,
            r#"[1, "x", null, true, false, [], {}, [[["deep"]]], 18446744073709551615, 5865.3]"#,
            r#"{"longer key": {"k": [0.1, 0.25, 100, 10000, 99999999, 123456789.123456789]}, "é": "ü\n\t\"q\""}"#,
            r#""a lone string""#,
            r#"42"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let text = serde_json::to_string(&value).unwrap();
            assert_same_as_jsonb_in("value", jsonb_binary::to_jsonb(&value).unwrap(), &text);
        }
        // Members of 64 kB and more are built around: before, between and after other members.
        let large: Vec<u64> = (0..20_000).collect();
        let around_large = serde_json::json!({
            "a": 1, "big": large, "zz": "x", "numbers": [1.5, 2], "big2": large, "e": [0.25]
        });
        assert_same_as_jsonb_in(
            "around large members",
            jsonb_binary::to_jsonb(&around_large).unwrap(),
            &serde_json::to_string(&around_large).unwrap(),
        );
        let many: Vec<u64> = (0..1000).map(|n| n * 7919).collect();
        assert_same_as_jsonb_in(
            "array of 1000",
            jsonb_binary::to_jsonb(&many).unwrap(),
            &serde_json::to_string(&many).unwrap(),
        );
        let wide: std::collections::BTreeMap<String, u64> =
            (0..100).map(|n| (format!("key{n}"), n)).collect();
        assert_same_as_jsonb_in(
            "object of 100",
            jsonb_binary::to_jsonb(&wide).unwrap(),
            &serde_json::to_string(&wide).unwrap(),
        );
    }

    /// A DEX text of exactly `len` bytes (blank lines pad it).
    fn dex_of_len(len: usize) -> String {
        let mut text = String::from("ST*001*0001\nPA1*1*150*COFFEE\nPA2*3*450*3*450\nSE*4*0001\n");
        while text.len() < len {
            text.push('\n');
        }
        text
    }

    /// Runs `call` (a SELECT with $1) on `raw` and returns the SQLSTATE and message it raised.
    fn error_of(call: &str, raw: &str) -> Option<(String, String)> {
        Spi::get_two_with_args::<String, String>(
            "SELECT * FROM dex_test_error_of($1, $2)",
            &[call.into(), raw.into()],
        )
        .ok()
        .and_then(|(state, message)| state.zip(message))
    }

    #[pg_test]
    fn input_over_dex_max_bytes_gets_54000_from_every_function_and_set_raises_it() {
        Spi::run(
            "CREATE FUNCTION dex_test_error_of(call text, raw text, OUT state text, OUT message text)
             LANGUAGE plpgsql AS $$
             BEGIN
                 EXECUTE call USING raw;
             EXCEPTION WHEN OTHERS THEN
                 GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
             END $$",
        )
        .unwrap();
        Spi::run("SET dex_collector.dex_max_bytes = '1kB'").unwrap();
        let calls = [
            "SELECT dex_parse($1)",
            "SELECT dex_parse(convert_to($1, 'UTF8'))",
            "SELECT dex_validate($1)",
            "SELECT count(*) FROM dex_segments($1)",
        ];
        for call in calls {
            assert_eq!(
                error_of(call, &dex_of_len(1024)),
                None,
                "{call} at the limit"
            );
            let (state, message) = error_of(call, &dex_of_len(1025)).expect("refused");
            assert_eq!(state, "54000", "{call}");
            assert_eq!(
                message,
                "DEX input of 1025 bytes exceeds dex_collector.dex_max_bytes (1024 bytes)"
            );
        }
        Spi::run("SET dex_collector.dex_max_bytes = '2kB'").unwrap();
        for call in calls {
            assert_eq!(error_of(call, &dex_of_len(1025)), None, "{call} after SET");
        }
        Spi::run("RESET dex_collector.dex_max_bytes").unwrap();
        let default = Spi::get_one::<String>("SHOW dex_collector.dex_max_bytes").unwrap();
        assert_eq!(default.as_deref(), Some("1MB"));
        Spi::run(
            "DO $$
             BEGIN
                 SET dex_collector.dex_max_bytes = '5MB';
                 RAISE EXCEPTION 'dex_collector.dex_max_bytes accepted more than 4MB';
             EXCEPTION WHEN invalid_parameter_value THEN NULL;
             END $$",
        )
        .unwrap();
    }

    #[pg_test]
    fn dex_products_gives_a_row_per_selection_with_exact_money() {
        let selections = dex_parse::parse(RHEVENDORS).unwrap().products().len() as i64;
        let rows = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM dex_products($1)",
            &[RHEVENDORS.into()],
        );
        assert_eq!(rows, Ok(Some(selections)));
        let first = Spi::get_one_with_args::<String>(
            "SELECT concat_ws('/', name, price, vends_since_init, value_since_init,
                              vends_since_reset, value_since_reset, pg_typeof(value_since_init))
               FROM dex_products($1) WHERE selection = '1'",
            &[RHEVENDORS.into()],
        );
        assert_eq!(
            first,
            Ok(Some(
                "KAFFEE SCHWARZ BOHNE/0.50/602/297.90/600/297.90/numeric".to_owned()
            ))
        );
        let latin1: Vec<u8> =
            b"ST*001*0001\r\nPA1*1*150*CAF\xC9\r\nPA2*3*450*3*450\r\nSE*4*0001\r\n".to_vec();
        let name = Spi::get_one_with_args::<String>(
            "SELECT name || ' ' || value_since_init FROM dex_products($1)",
            &[latin1.into()],
        );
        assert_eq!(name, Ok(Some("CAFÉ 4.50".to_owned())));
        let none = Spi::get_one::<i64>("SELECT count(*) FROM dex_products(NULL::text)");
        assert_eq!(none, Ok(Some(0)), "strict: NULL in, no rows out");
        // Damaged DEX (no SE, no checksum) still gives its products.
        let damaged = Spi::get_one::<i64>(
            "SELECT count(*) FROM dex_products('ST*001*0001\nPA1*7*100\nPA2*1*100')",
        );
        assert_eq!(damaged, Ok(Some(1)));
        Spi::run(
            "DO $$
             BEGIN
                 PERFORM * FROM dex_products(''::text);
                 RAISE EXCEPTION 'dex_products() accepted empty text';
             EXCEPTION WHEN invalid_text_representation THEN NULL;
             END $$",
        )
        .unwrap();
    }

    #[pg_test]
    fn dex_sales_compares_two_audits_of_one_machine() {
        let later = RHEVENDORS.replacen("PA2*602*29790*600*29790", "PA2*640*31690*638*31690", 1);
        let sold = Spi::get_one_with_args::<String>(
            "SELECT string_agg(DISTINCT status, ',') || ' ' || sum(units) || ' ' || sum(value)
               FROM dex_sales($1, $2)",
            &[RHEVENDORS.into(), later.as_str().into()],
        );
        assert_eq!(sold, Ok(Some("ok 38 19.00".to_owned())));
        let other = RHEVENDORS.replacen("ID1*RHV0000000000*", "ID1*RHV9999999999*", 1);
        Spi::run(
            "CREATE FUNCTION dex_test_sales_error(older text, newer text) RETURNS text
             LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM * FROM dex_sales(older, newer);
                 RETURN 'no error';
             EXCEPTION WHEN OTHERS THEN
                 RETURN SQLSTATE || ': ' || SQLERRM;
             END $$",
        )
        .unwrap();
        let refused = Spi::get_one_with_args::<String>(
            "SELECT dex_test_sales_error($1, $2)",
            &[RHEVENDORS.into(), other.as_str().into()],
        );
        assert_eq!(
            refused,
            Ok(Some(
                "22023: the two audits are from different machines: serial \"RHV0000000000\", then \"RHV9999999999\""
                    .to_owned()
            ))
        );
        let forced = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM dex_sales($1, $2, ignore_mismatch => true)",
            &[RHEVENDORS.into(), other.as_str().into()],
        );
        assert!(forced.unwrap().unwrap() > 0);
        let none = Spi::get_one::<i64>("SELECT count(*) FROM dex_sales(NULL::text, 'x')");
        assert_eq!(none, Ok(Some(0)));
        let empty = Spi::get_one::<String>("SELECT dex_test_sales_error('', 'ST*001*0001')");
        assert_eq!(
            empty,
            Ok(Some(
                "22P02: older: not a DEX file: the input is empty".to_owned()
            ))
        );
        let empty = Spi::get_one::<String>("SELECT dex_test_sales_error('ST*001*0001', '')");
        assert_eq!(
            empty,
            Ok(Some(
                "22P02: newer: not a DEX file: the input is empty".to_owned()
            ))
        );
        // Damaged DEX and Latin-1 bytes: two audits cut off (no SE) after selection 3. Selection 1
        // is whole in both; 3 is where they end, 2 may be among the older one's missing lines.
        let older: Vec<u8> =
            b"ST*001*0001\nPA1*1*150*CAF\xC9\nPA2*3*450\nPA1*3*100*X\nPA2*1*100".to_vec();
        let newer: Vec<u8> = b"ST*001*0001\nPA1*1*150*CAF\xC9\nPA2*5*750\n\
                                PA1*2*90*TH\xC9\nPA2*1*90\nPA1*3*100*X\nPA2*2*200"
            .to_vec();
        let rows = Spi::get_one_with_args::<String>(
            "SELECT string_agg(concat_ws(' ', selection, name, units, value, status), '; ' ORDER BY selection)
               FROM dex_sales($1, $2)",
            &[older.into(), newer.into()],
        );
        assert_eq!(
            rows,
            Ok(Some(
                "1 CAFÉ 2 3.00 ok; 2 THÉ truncated; 3 X truncated".to_owned()
            ))
        );
    }

    #[pg_test]
    fn dex_parse_reads_a_real_file() {
        let paid = Spi::get_one_with_args::<String>(
            "SELECT dex_parse($1)->'totals'->'paid'->>'value_since_init'",
            &[RHEVENDORS.into()],
        );
        assert_eq!(paid, Ok(Some("5865.3".to_owned())));
        let checksum = Spi::get_one_with_args::<String>(
            "SELECT dex_validate($1)->'checksum'->>'status'",
            &[RHEVENDORS.into()],
        );
        assert_eq!(checksum, Ok(Some("valid".to_owned())));
    }

    #[pg_test]
    fn dex_parse_reads_latin1_bytes() {
        let raw: Vec<u8> =
            b"ST*001*0001\r\nPA1*1*150*CAF\xC9\r\nPA2*3*450*3*450\r\nSE*4*0001\r\n".to_vec();
        let name = Spi::get_one_with_args::<String>(
            "SELECT dex_parse($1)->'products'->0->>'name'",
            &[raw.into()],
        );
        assert_eq!(name, Ok(Some("CAFÉ".to_owned())));
    }

    #[pg_test]
    fn text_that_is_not_dex_raises_22p02() {
        // Fails unless dex_parse() raises invalid_text_representation with the crate's message.
        Spi::run(
            "DO $$
             BEGIN
                 PERFORM dex_parse('hello, world'::text);
                 RAISE EXCEPTION 'dex_parse() accepted text that is not DEX';
             EXCEPTION WHEN invalid_text_representation THEN
                 IF SQLERRM NOT LIKE 'not a DEX file%' THEN
                     RAISE EXCEPTION 'unexpected message: %', SQLERRM;
                 END IF;
             END
             $$",
        )
        .expect("dex_parse('hello, world') raises SQLSTATE 22P02");
    }

    #[pg_test]
    fn dex_segments_returns_one_row_per_line() {
        let rows = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM dex_segments($1)",
            &[RHEVENDORS.into()],
        );
        assert_eq!(rows, Ok(Some(371)));
        let name = Spi::get_one_with_args::<String>(
            "SELECT elements[3] FROM dex_segments($1) WHERE line = 56 AND segment = 'PA1'",
            &[RHEVENDORS.into()],
        );
        assert_eq!(name, Ok(Some("KAFFEE SCHWARZ BOHNE ".to_owned())));
    }
}
