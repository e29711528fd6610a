//! Golden-file tests over the real files in `tests/fixtures/`, plus checks
//! of key figures read by hand from the raw files.
//!
//! `DEX_BLESS=1 cargo test -p dex-parse --test fixtures` rewrites the
//! `*.expected.json` files.

use std::path::PathBuf;

use serde_json::Value;

const FIXTURES: [&str; 7] = [
    "mdisibio-test.dex",
    "mdisibio-test2.dex",
    "tmdroid-dex3.dex",
    "mkrasselt1-animo.eva_dts",
    "mkrasselt1-animo2.eva_dts",
    "mkrasselt1-rhevendors.eva_dts",
    "mkrasselt1-sielaff.eva_dts",
];

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn parsed(name: &str) -> Value {
    let raw = std::fs::read(fixture_path(name)).expect("fixture is readable");
    dex_parse::parse_json(&raw).expect("fixture is DEX")
}

#[test]
fn output_matches_the_expected_json() {
    let bless = std::env::var_os("DEX_BLESS").is_some_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for name in FIXTURES {
        let actual = serde_json::to_string_pretty(&parsed(name)).expect("JSON serialises") + "\n";
        let expected_path = fixture_path(&format!("{name}.expected.json"));
        if bless {
            std::fs::write(&expected_path, &actual).expect("expected file is writable");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|err| {
            panic!(
                "{}: {err} (run with DEX_BLESS=1 to create it)",
                expected_path.display()
            )
        });
        if expected != actual {
            mismatches.push(name);
        }
    }
    assert!(
        mismatches.is_empty(),
        "output differs from the expected JSON for {mismatches:?}; check the change and run with DEX_BLESS=1"
    );
}

#[test]
fn checksums_verify_as_the_sample_readme_says() {
    let status = |name: &str| {
        let json = parsed(name);
        let checksum = &json["validation"]["checksum"];
        (
            checksum["status"].as_str().unwrap_or_default().to_owned(),
            checksum["line_endings"].clone(),
        )
    };
    assert_eq!(
        status("mdisibio-test.dex"),
        ("valid".to_owned(), Value::from("as_received"))
    );
    for lf_only in [
        "tmdroid-dex3.dex",
        "mkrasselt1-animo.eva_dts",
        "mkrasselt1-rhevendors.eva_dts",
    ] {
        assert_eq!(
            status(lf_only),
            ("valid".to_owned(), Value::from("crlf_restored")),
            "{lf_only}"
        );
    }
    for without_g85 in [
        "mdisibio-test2.dex",
        "mkrasselt1-animo2.eva_dts",
        "mkrasselt1-sielaff.eva_dts",
    ] {
        assert_eq!(
            status(without_g85),
            ("missing".to_owned(), Value::Null),
            "{without_g85}"
        );
    }
}

#[test]
fn segment_counts_and_truncation() {
    let rhe = parsed("mkrasselt1-rhevendors.eva_dts");
    assert_eq!(rhe["validation"]["segment_count"]["declared"], 349);
    assert_eq!(rhe["validation"]["segment_count"]["actual"], 369);
    let test = parsed("mdisibio-test.dex");
    assert_eq!(test["validation"]["segment_count"]["actual"], 58);
    assert_eq!(test["validation"]["ok"], true);
    for truncated in ["mkrasselt1-animo2.eva_dts", "mkrasselt1-sielaff.eva_dts"] {
        let json = parsed(truncated);
        assert_eq!(json["validation"]["truncated"], true, "{truncated}");
        assert_eq!(json["validation"]["ok"], false, "{truncated}");
    }
    assert_eq!(
        parsed("mdisibio-test2.dex")["validation"]["truncated"],
        false
    );
}

#[test]
fn money_uses_the_files_decimal_places() {
    // ID4*0: whole units.
    let test = parsed("mdisibio-test.dex");
    assert_eq!(test["totals"]["paid"]["value_since_init"], 69250);
    assert_eq!(test["totals"]["cash"]["value_since_init"], 54400);
    assert_eq!(test["products"][0]["price"], 500);
    // ID4*2: VA1*586530*9612*586530*9592...
    let rhe = parsed("mkrasselt1-rhevendors.eva_dts");
    assert_eq!(rhe["totals"]["paid"]["value_since_init"], 5865.3);
    assert_eq!(rhe["totals"]["paid"]["count_since_reset"], 9592);
    assert_eq!(rhe["totals"]["cashless1"]["value_since_reset"], 2742.0);
    assert_eq!(rhe["cash"]["cash_in"]["to_tubes_since_init"], 1624.65);
}

#[test]
fn pa2_counters_are_read_by_position() {
    // PA1*111*300 / PA2***88*34800: only the since-reset pair is present.
    let dex3 = parsed("tmdroid-dex3.dex");
    let first = &dex3["products"][0];
    assert_eq!(first["selection"], "111");
    assert_eq!(first["price"], 3.0);
    assert_eq!(first["paid"]["count_since_init"], Value::Null);
    assert_eq!(first["paid"]["count_since_reset"], 88);
    assert_eq!(first["paid"]["value_since_reset"], 348.0);
    // PA1*5*80*LATTE MACCHIATO BOHNE / PA2*1859*148400*1858*148400, with PA7 per device.
    let rhe = parsed("mkrasselt1-rhevendors.eva_dts");
    let latte = &rhe["products"][4];
    assert_eq!(latte["name"], "LATTE MACCHIATO BOHNE");
    assert_eq!(latte["price"], 0.8);
    assert_eq!(latte["paid"]["count_since_init"], 1859);
    assert_eq!(latte["paid"]["value_since_init"], 1484.0);
    assert_eq!(latte["by_payment_device"].as_array().map(Vec::len), Some(8));
    assert_eq!(latte["by_payment_device"][2]["payment_device"], "DA");
    assert_eq!(latte["by_payment_device"][2]["count_since_init"], 951);
    assert_eq!(latte["other_segments"][0]["segment"], "PA8");
}

#[test]
fn wrapper_lines_stay_outside() {
    let test2 = parsed("mdisibio-test2.dex");
    assert_eq!(test2["outside_lines"].as_array().map(Vec::len), Some(10));
    assert_eq!(test2["outside_lines"][0]["text"], "Slot 010: Sprite: 25");
    assert_eq!(test2["first_line"], 12);
    assert_eq!(test2["machine"]["serial"], "WTN11082110074");
    assert_eq!(test2["machine"]["model"], "GVC1");
    let sielaff = parsed("mkrasselt1-sielaff.eva_dts");
    assert_eq!(sielaff["outside_lines"][0]["line"], 1);
    assert_eq!(sielaff["machine"]["date"], "2023-08-21");
    assert_eq!(sielaff["machine"]["time"], "17:53:47");
    assert_eq!(sielaff["machine"]["currency_alpha_code"], "EUR");
}
