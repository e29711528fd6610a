//! Any bytes: no panic, no hang, output that PostgreSQL can store, and sales that add up.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Equal documents. serde_json reads floats back to within one ulp only
/// (PostgreSQL's jsonb reads them exactly), so floats may differ by that.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON,
                _ => false,
            }
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let segment_count = dex_parse::segments(data).count();
    match dex_parse::parse(data) {
        Ok(dex) => {
            let json = dex.to_json();
            let text = dex.to_json_string();
            // The streamed text and the Value are the same document.
            let reread = serde_json::from_str::<Value>(&text).expect("the JSON text parses");
            assert!(same(&reread, &json), "JSON text and Value differ");
            // jsonb rejects \u0000.
            assert!(!text.contains("\\u0000"));
            assert!(json["validation"]["ok"].is_boolean());
            assert_eq!(
                json["additional_files"].as_array().map(Vec::len),
                Some(dex.file_count() - 1)
            );
            assert!(dex.validation_json()["checksum"].is_object());
            assert!(segment_count > 0);
            // An audit compared with itself sold nothing, whatever its counters; one cut off
            // gives no numbers for the selection it ends in.
            let products = dex.products();
            let audit = dex.audit();
            let sales = dex_parse::sales(&audit, &audit, true).expect("one audit is one machine");
            assert!(sales.len() <= products.len());
            for sale in sales {
                let status = if audit.cut_selection.as_ref() == Some(&sale.selection) {
                    dex_parse::SaleStatus::Truncated
                } else {
                    dex_parse::SaleStatus::Ok
                };
                assert_eq!(sale.status, status);
                assert!(sale.units.is_none_or(|units| units == 0));
            }
        }
        Err(dex_parse::DexError::Empty) => assert_eq!(segment_count, 0),
        Err(dex_parse::DexError::NotDex { lines }) => assert_eq!(lines, segment_count),
        Err(dex_parse::DexError::TooLong { .. }) => unreachable!("fuzz inputs are small"),
    }
});
