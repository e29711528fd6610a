//! Hand-made inputs for the quirks real files have, and for hostile ones.

use dex_parse::{parse_json, segments, validate, DexError};
use serde_json::Value;

/// CR LF, valid G85 over the raw bytes, SE01 wrong (54 for 58).
const CRLF_FILE: &[u8] = include_bytes!("fixtures/mdisibio-test.dex");

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn warnings(json: &Value) -> Vec<String> {
    json["validation"]["warnings"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has_warning(json: &Value, needle: &str) -> bool {
    warnings(json).iter().any(|w| w.contains(needle))
}

/// The figures of `CRLF_FILE` that every line-end variant must keep.
fn assert_same_figures(json: &Value) {
    assert_eq!(json["totals"]["paid"]["value_since_init"], 69250);
    assert_eq!(json["products"].as_array().map(Vec::len), Some(10));
    assert_eq!(json["validation"]["segment_count"]["actual"], 58);
    assert_eq!(json["additional_files"], Value::Array(vec![]));
}

#[test]
fn lf_only_bare_cr_and_doubled_cr_all_verify_with_crlf_restored() {
    for (name, terminator) in [("LF", &b"\n"[..]), ("CR", b"\r"), ("CR CR LF", b"\r\r\n")] {
        let json = parse_json(replace(CRLF_FILE, b"\r\n", terminator)).expect("DEX");
        assert_same_figures(&json);
        let checksum = &json["validation"]["checksum"];
        assert_eq!(checksum["status"], "valid", "{name}");
        assert_eq!(checksum["line_endings"], "crlf_restored", "{name}");
        assert_eq!(json["validation"]["ok"], true, "{name}");
    }
}

#[test]
fn trailing_spaces_and_blank_lines_do_not_change_figures() {
    let json = parse_json(replace(
        CRLF_FILE,
        b"\r\nVA1*69250*1306*0*0",
        b"\r\n\r\n  \r\nVA1*69250 *1306*0*0  ",
    ))
    .expect("DEX");
    assert_same_figures(&json);
    // The edit changed the bytes under the checksum.
    assert_eq!(json["validation"]["checksum"]["status"], "invalid");
}

#[test]
fn checksum_case_byte_order_and_constants() {
    let lower = parse_json(replace(CRLF_FILE, b"G85*E8BC", b"G85*e8bc")).expect("DEX");
    assert_eq!(lower["validation"]["checksum"]["status"], "valid");

    let swapped = parse_json(replace(CRLF_FILE, b"G85*E8BC", b"G85*BCE8")).expect("DEX");
    assert_eq!(
        swapped["validation"]["checksum"]["status"],
        "valid_byte_swapped"
    );
    assert_eq!(swapped["validation"]["ok"], true);
    assert!(has_warning(&swapped, "byte-swapped"));

    let constant = parse_json(replace(CRLF_FILE, b"G85*E8BC", b"G85*0000")).expect("DEX");
    assert_eq!(constant["validation"]["checksum"]["status"], "invalid");
    assert_eq!(constant["validation"]["checksum"]["computed"], "E8BC");
    assert_eq!(constant["validation"]["ok"], false);

    let malformed = parse_json(replace(CRLF_FILE, b"G85*E8BC", b"G85*E8B")).expect("DEX");
    assert_eq!(malformed["validation"]["checksum"]["status"], "malformed");
}

#[test]
fn se_count_is_checked_against_the_real_count() {
    // The file's SE declares 54 of its 58 lines from ST to SE: its 4 LS and LE left out.
    let json = parse_json(CRLF_FILE).expect("DEX");
    assert_eq!(json["validation"]["segment_count"]["declared"], 54);
    assert_eq!(json["validation"]["segment_count"]["actual"], 58);
    assert_eq!(json["validation"]["segment_count"]["loop_markers"], 4);
    assert_eq!(json["validation"]["segment_count"]["matches"], true);
    assert!(!has_warning(&json, "SE01"));
    let standard = parse_json(replace(CRLF_FILE, b"SE*54*", b"SE*58*")).expect("DEX");
    assert_eq!(standard["validation"]["segment_count"]["matches"], true);
    assert!(!has_warning(&standard, "SE01"));
    let wrong = parse_json(replace(CRLF_FILE, b"SE*54*", b"SE*55*")).expect("DEX");
    assert_eq!(wrong["validation"]["segment_count"]["matches"], false);
    assert!(has_warning(
        &wrong,
        "SE01 declares 55 segment(s), the file has 58 from ST to SE"
    ));
    let without_loops = [b"LS*", b"LE*"]
        .iter()
        .fold(CRLF_FILE.to_vec(), |text, marker| {
            text.split_inclusive(|&b| b == b'\n')
                .filter(|line| !line.starts_with(*marker))
                .flatten()
                .copied()
                .collect()
        });
    let json = parse_json(&without_loops).expect("DEX");
    assert_eq!(json["validation"]["segment_count"]["actual"], 54);
    assert_eq!(json["validation"]["segment_count"]["loop_markers"], 0);
    assert_eq!(json["validation"]["segment_count"]["matches"], true);
    let short = parse_json(replace(&without_loops, b"SE*54*", b"SE*50*")).expect("DEX");
    assert_eq!(short["validation"]["segment_count"]["matches"], false);
}

#[test]
fn several_files_keep_the_first_on_top_and_the_rest_in_order() {
    let second = replace(CRLF_FILE, b"VA1*69250", b"VA1*11111");
    let text = [
        b"HEADER FROM A GATEWAY\r\n".as_slice(),
        CRLF_FILE,
        b"junk between\r\n",
        &second,
        b"trailer\r\n",
    ]
    .concat();
    let json = parse_json(&text).expect("DEX");
    assert_eq!(json["totals"]["paid"]["value_since_init"], 69250);
    assert_eq!(json["first_line"], 2);
    let others = json["additional_files"].as_array().expect("array");
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["totals"]["paid"]["value_since_init"], 11111);
    assert_eq!(others[0]["validation"]["checksum"]["status"], "invalid");
    assert!(others[0].get("additional_files").is_none());
    let outside: Vec<_> = json["outside_lines"]
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["text"].clone())
        .collect();
    assert_eq!(
        outside,
        ["HEADER FROM A GATEWAY", "junk between", "trailer"]
    );
    assert!(has_warning(&json, "holds 2 DEX files"));

    let validation = validate(&text).expect("DEX");
    assert_eq!(validation["checksum"]["status"], "valid");
    assert_eq!(
        validation["additional_files"][0]["checksum"]["status"],
        "invalid"
    );
}

#[test]
fn numbers_too_large_and_not_supported_become_null_with_a_warning() {
    let json = parse_json("DXS*X*VA*V1/1*1\r\nST*001*0001\r\nVA1*99999999999999999999999*4294967295*12*1\r\nPA1*1*abc\r\n")
        .expect("DEX");
    let paid = &json["totals"]["paid"];
    assert_eq!(paid["value_since_init"], Value::Null);
    assert_eq!(paid["count_since_init"], Value::Null);
    assert_eq!(paid["value_since_reset"], 0.12);
    assert_eq!(json["products"][0]["price"], Value::Null);
    assert!(has_warning(&json, "line 3: VA101 is too large for 64 bits"));
    assert!(has_warning(&json, "line 3: VA102 is 4294967295"));
    assert!(has_warning(&json, "line 4: PA102 is not a number"));
    assert_eq!(json["validation"]["truncated"], true);
}

#[test]
fn segments_out_of_order_still_land_where_they_belong() {
    // ID4 after the money it scales, a PA2 before any PA1, a repeated VA1.
    let json = parse_json(
        "DXS*X*VA*V1/1*1\nST*001*0001\nVA1*1234*5\nPA2*7*700\nPA1*A1*150\nPA2*3*450\nVA1*1*1\nID4*1\nSE*8*0001\nDXE*1*1\n",
    )
    .expect("DEX");
    assert_eq!(json["machine"]["decimal_places"], 1);
    assert_eq!(json["totals"]["paid"]["value_since_init"], 123.4);
    let products = json["products"].as_array().expect("array");
    assert_eq!(products.len(), 2);
    assert_eq!(products[0]["selection"], Value::Null);
    assert_eq!(products[0]["paid"]["count_since_init"], 7);
    assert_eq!(products[1]["selection"], "A1");
    assert_eq!(products[1]["price"], 15.0);
    assert_eq!(products[1]["paid"]["value_since_init"], 45.0);
    assert!(has_warning(&json, "line 4: PA2 before any PA1"));
    assert!(has_warning(
        &json,
        "line 7: repeated VA1 ignored (first at line 3)"
    ));
    assert_eq!(json["validation"]["segment_count"]["matches"], true);
    assert_eq!(json["validation"]["checksum"]["status"], "missing");
}

#[test]
fn repeated_selection_merges_into_one_product() {
    let json = parse_json("ST*001*0001\nPA1*7*100\nPA2*1*100\nPA1*7*100\nPA3*2*0\nSE*6*0001\n")
        .expect("DEX");
    let products = json["products"].as_array().expect("array");
    assert_eq!(products.len(), 1);
    assert_eq!(products[0]["paid"]["count_since_init"], 1);
    assert_eq!(products[0]["test"]["count_since_init"], 2);
    assert!(has_warning(&json, "selection \"7\" repeated"));
}

#[test]
fn envelope_less_data_is_parsed_with_warnings() {
    let json = parse_json("VA1*100*1\r\nPA1*1*50\r\n").expect("DEX");
    assert_eq!(json["totals"]["paid"]["value_since_init"], 1.0);
    assert!(has_warning(
        &json,
        "line 1: file starts without DXS or ST header"
    ));
    assert!(has_warning(&json, "no ST segment"));
    assert_eq!(json["validation"]["truncated"], true);

    let set_only = parse_json("ST*001*0001\r\nVA1*100*1\r\nSE*3*0001\r\n").expect("DEX");
    assert_eq!(set_only["validation"]["truncated"], false);
    assert!(has_warning(&set_only, "no DXS/DXE communication envelope"));
}

#[test]
fn text_that_is_not_dex_is_an_error() {
    assert_eq!(parse_json("").unwrap_err(), DexError::Empty);
    assert_eq!(parse_json(" \r\n\n\t\r").unwrap_err(), DexError::Empty);
    assert_eq!(
        parse_json("hello\nworld\n").unwrap_err(),
        DexError::NotDex { lines: 2 }
    );
    assert_eq!(
        parse_json("MC5*SiLine*EvaData").unwrap_err(),
        DexError::NotDex { lines: 1 }
    );
    assert_eq!(
        validate("{\"json\": true}").unwrap_err(),
        DexError::NotDex { lines: 1 }
    );
    assert!(DexError::NotDex { lines: 2 }
        .to_string()
        .starts_with("not a DEX file"));
}

#[test]
fn windows_1252_text_and_nul_bytes_are_decoded_safely() {
    let json = parse_json(
        b"ST*001*0001\r\nPA1*1*100*CAF\xC9 CR\xC8ME\r\nPA1*2*120*JOE\x92S \x80 DEAL\r\nID1*A\0B\r\nSE*5*0001\r\n",
    )
    .expect("DEX");
    assert_eq!(json["products"][0]["name"], "CAFÉ CRÈME");
    assert_eq!(json["products"][1]["name"], "JOE’S € DEAL");
    assert_eq!(json["machine"]["serial"], "A\u{FFFD}B");
    assert!(has_warning(&json, "decoded as Windows-1252"));
    // The file is Windows-1252, so is each of its elements, those valid UTF-8 by chance too.
    let by_chance =
        parse_json(b"ST*001*0001\r\nPA1*1*100*JOS\xC9\x92S\r\nPA1*2*100*\x80 2\r\nSE*4*0001\r\n")
            .expect("DEX");
    assert_eq!(by_chance["products"][0]["name"], "JOSÉ’S");
    // A UTF-8 file cut off in the middle of a character stays UTF-8 but for that last element.
    let cut = parse_json(b"ST*001*0001\r\nPA1*1*100*CAF\xC3\x89\r\nPA1*2*100*CR\xC3").expect("DEX");
    assert_eq!(cut["products"][0]["name"], "CAFÉ");
    assert_eq!(cut["products"][1]["name"], "CR\u{C3}");
    assert!(!has_warning(&cut, "Windows-1252"));
    let utf8 = parse_json("ST*001*0001\r\nPA1*1*100*CAFÉ\r\nSE*3*0001\r\n").expect("DEX");
    assert_eq!(utf8["products"][0]["name"], "CAFÉ");
    assert!(!has_warning(&utf8, "Windows-1252"));
}

#[test]
fn binary_junk_never_panics() {
    // xorshift: deterministic bytes, with a DEX line thrown in now and then.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        let mut junk = Vec::new();
        for _ in 0..(round * 37 % 4096) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            junk.push((state >> 24) as u8);
        }
        if round % 3 == 0 {
            junk.extend_from_slice(b"\nPA1*1*50\nG85*ZZZZ\nSE*x\nDXE\n");
        }
        if let Ok(json) = parse_json(&junk) {
            assert!(json["validation"].is_object());
            assert!(serde_json::to_string(&json).is_ok_and(|text| !text.contains("\\u0000")));
        }
        let _ = segments(&junk).count();
    }
}

#[test]
fn many_warnings_are_capped_and_counted() {
    let mut text = String::from("ST*001*0001\n");
    for _ in 0..250 {
        text.push_str("VA1*x\n");
    }
    let json = parse_json(&text).expect("DEX");
    let line_warnings = warnings(&json)
        .iter()
        .filter(|w| w.starts_with("line "))
        .count();
    assert_eq!(line_warnings, 100);
    // One VA101 warning and 249 "repeated VA1" warnings.
    assert_eq!(json["validation"]["warnings_omitted"], 150);
}

#[test]
fn segments_view_is_raw_and_numbered() {
    let all: Vec<_> =
        segments(b"\xEF\xBB\xBFDXS*A\r\n\r\nST*001*0001\r\nPA1*1*50*NAME \r\nnot dex").collect();
    let ids: Vec<&[u8]> = all.iter().map(|s| s.id).collect();
    assert_eq!(ids, [&b"DXS"[..], b"ST", b"PA1", b"not dex"]);
    let lines: Vec<usize> = all.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1, 3, 4, 5]);
    assert_eq!(all[2].elements, [&b"1"[..], b"50", b"NAME "]);
}

#[test]
fn files_per_text_are_bounded() {
    let text = "DXS*X*VA*V1/1*1\n".repeat(10_001);
    let dex = dex_parse::parse(&text).expect("DEX");
    assert_eq!(dex.file_count(), 10_000);
    let json = dex.to_json();
    assert_eq!(
        json["validation"]["warnings"][1],
        "more than 10000 DEX files: the text from line 10001 on was not read"
    );
}

#[test]
fn two_sets_in_one_transmission_are_two_complete_files() {
    let json = parse_json("DXS*X*VA*V1/1*1\nST*001*0001\nVA1*100*1\nSE*3*0001\nST*001*0002\nVA1*200*2\nSE*3*0002\nDXE*1*2\n")
        .expect("DEX");
    assert_eq!(json["validation"]["truncated"], false);
    assert_eq!(json["totals"]["paid"]["value_since_init"], 1.0);
    let second = &json["additional_files"][0];
    assert_eq!(second["totals"]["paid"]["value_since_init"], 2.0);
    assert_eq!(second["validation"]["truncated"], false);
    assert_eq!(second["envelope"]["dxe"]["set_count"], 2);
}
