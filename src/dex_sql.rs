//! SQL functions over the `dex-parse` crate: DEX (EVA-DTS) audit text to
//! JSON, its validation, and its raw segments. All of the parsing lives in
//! the crate; this module only converts types and errors.
//!
//! ```sql
//! UPDATE dex_captures SET structured_data = dex_parse(raw_content);
//! SELECT dex_validate(raw_content)->>'ok' FROM dex_captures;
//! SELECT * FROM dex_segments(raw_content) WHERE segment = 'PA1';
//! ```

use std::ffi::CString;

use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

/// JSON text handed straight to `jsonb_in`: the parser writes the text itself, which is about
/// three times faster than building a `serde_json::Value` that pgrx's `JsonB` then writes out.
struct JsonbText(String);

impl IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // The parser's JSON escapes every control character, so the text holds no NUL.
        let text = CString::new(self.0).ok()?;
        // SAFETY: jsonb_in takes one C string argument and returns a jsonb datum.
        unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())])
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: returns the datum made above (or NULL when there is none), as pgrx does for JsonB.
unsafe impl pgrx::callconv::BoxRet for JsonbText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: the datum produced above is a jsonb, as this mapping declares.
unsafe impl SqlTranslatable for JsonbText {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(JsonbText);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// Raises `error` (text with no DEX in it at all) as SQLSTATE 22P02.
fn raise_not_dex(error: dex_parse::DexError) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        error.to_string(),
        "Damaged DEX still parses, with its problems in \"validation\"; dex_segments() shows how the text splits into segments."
    );
}

/// The parsed DEX text as jsonb; the shape is documented in the crate's README.
#[pg_extern(immutable, strict, parallel_safe, name = "dex_parse")]
fn dex_parse_text(raw: &str) -> JsonbText {
    match dex_parse::parse_json_string(raw) {
        Ok(json) => JsonbText(json),
        Err(error) => raise_not_dex(error),
    }
}

/// As `dex_parse(text)`, for raw bytes in any encoding: text elements are
/// read as UTF-8 when valid, otherwise as Latin-1.
#[pg_extern(immutable, strict, parallel_safe, name = "dex_parse")]
fn dex_parse_bytea(raw: &[u8]) -> JsonbText {
    match dex_parse::parse_json_string(raw) {
        Ok(json) => JsonbText(json),
        Err(error) => raise_not_dex(error),
    }
}

/// Only the `validation` part of `dex_parse()`.
#[pg_extern(immutable, strict, parallel_safe)]
fn dex_validate(raw: &str) -> JsonB {
    match dex_parse::validate(raw) {
        Ok(json) => JsonB(json),
        Err(error) => raise_not_dex(error),
    }
}

/// Every non-blank line of any text as (line number, segment id, elements),
/// exactly as written; `elements[1]` is the segment's element 01. It reads
/// text that is not DEX too, to show what is wrong with it.
#[pg_extern(immutable, strict, parallel_safe)]
fn dex_segments(
    raw: &str,
) -> TableIterator<
    'static,
    (
        name!(line, i32),
        name!(segment, String),
        name!(elements, Vec<String>),
    ),
> {
    let rows: Vec<(i32, String, Vec<String>)> = dex_parse::segments(raw.as_bytes())
        .map(|segment| {
            let elements = segment
                .elements
                .iter()
                .map(|e| dex_parse::decode_text(e).into_owned())
                .collect();
            // A text value holds at most 1 GB, so fewer lines than i32::MAX.
            let line = i32::try_from(segment.line).unwrap_or(i32::MAX);
            (
                line,
                dex_parse::decode_text(segment.id).into_owned(),
                elements,
            )
        })
        .collect();
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// LF only, G85 valid once CR LF is restored, VA1*586530*9612*586530*9592, 371 lines.
    const RHEVENDORS: &str =
        include_str!("../crates/dex-parse/tests/fixtures/mkrasselt1-rhevendors.eva_dts");

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
