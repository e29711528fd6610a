//! `products()` and `sales()` on a real audit (the rhevendors sample, MIT) and on audits made
//! from it by changing single lines: every status of a sale, and both errors.

use dex_parse::{parse, sales, Money, SaleStatus, SalesError};

const AUDIT: &str = include_str!("fixtures/mkrasselt1-rhevendors.eva_dts");

/// The sample with `from` replaced by `to` (which must occur).
fn edited(from: &str, to: &str) -> String {
    assert!(AUDIT.contains(from), "{from:?} is in the sample");
    AUDIT.replacen(from, to, 1)
}

fn money(minor_units: u64) -> Option<Money> {
    Some(Money {
        minor_units,
        decimal_places: 2,
    })
}

#[test]
fn products_are_rows_with_counters_in_currency_units() {
    let dex = parse(AUDIT).unwrap();
    let products = dex.products();
    let first = &products[0];
    assert_eq!(first.selection.as_deref(), Some("1"));
    assert_eq!(first.name.as_deref(), Some("KAFFEE SCHWARZ BOHNE"));
    assert_eq!(first.price.map(|m| m.to_string()).as_deref(), Some("0.50"));
    assert_eq!(first.paid.count_since_init, Some(602));
    assert_eq!(
        first
            .paid
            .value_since_init
            .map(|m| m.to_string())
            .as_deref(),
        Some("297.90")
    );
    assert_eq!(first.paid.count_since_reset, Some(600));
    assert_eq!(dex.serial().as_deref(), Some("RHV0000000000"));
    assert_eq!(dex.read_at().as_deref(), Some("2023-11-27 10:11"));
}

#[test]
fn the_same_audit_twice_sold_nothing() {
    let dex = parse(AUDIT).unwrap();
    let rows = sales(&dex.audit(), &dex.audit(), true).unwrap();
    assert_eq!(rows.len(), dex.products().len());
    assert!(rows
        .iter()
        .all(|row| row.status == SaleStatus::Ok && row.units == Some(0)));
}

#[test]
fn sales_are_the_difference_of_the_counters_since_initialisation() {
    let older = parse(AUDIT).unwrap();
    let newer_text = edited("PA2*602*29790*600*29790", "PA2*610*30190*608*30190");
    let newer = parse(&newer_text).unwrap();
    let rows = sales(&older.audit(), &newer.audit(), true).unwrap();
    let first = &rows[0];
    assert_eq!(first.selection, "1");
    assert_eq!(
        (first.units, first.value, first.status),
        (Some(8), money(400), SaleStatus::Ok)
    );
    assert_eq!(first.value.unwrap().to_string(), "4.00");
}

#[test]
fn a_lower_counter_is_a_reset_reported_as_what_sold_since() {
    let older = parse(AUDIT).unwrap();
    let newer_text = edited("PA2*602*29790*600*29790", "PA2*5*250*5*250");
    let newer = parse(&newer_text).unwrap();
    let first = &sales(&older.audit(), &newer.audit(), true).unwrap()[0];
    assert_eq!(
        (first.units, first.value, first.status),
        (Some(5), money(250), SaleStatus::CounterReset)
    );
}

#[test]
fn a_count_that_rolled_over_leaves_the_value_sold_exact() {
    // The vend count wrapped at 65,536 (a 16-bit counter); the value went on: 12 vends of 0.50.
    let older_text = edited("PA2*602*29790*600*29790", "PA2*65530*3276500*600*29790");
    let newer_text = edited("PA2*602*29790*600*29790", "PA2*6*3277100*612*30390");
    let (older, newer) = (parse(&older_text).unwrap(), parse(&newer_text).unwrap());
    let first = &sales(&older.audit(), &newer.audit(), true).unwrap()[0];
    assert_eq!(
        (first.units, first.value, first.status),
        (Some(6), money(600), SaleStatus::CounterReset),
        "the count since its rollover, at least; the value's difference"
    );
}

#[test]
fn added_and_removed_selections_say_so() {
    let older = parse(AUDIT).unwrap();
    let newer_text = edited(
        "PA1*2*60*KAFFEE WEISS BOHNE   \nPA2*1176*70440*1175*70440\n",
        "PA1*99*120*HOT CHOCOLATE\nPA2*3*360*3*360\n",
    );
    let newer = parse(&newer_text).unwrap();
    let rows = sales(&older.audit(), &newer.audit(), true).unwrap();
    let added = rows.iter().find(|r| r.selection == "99").unwrap();
    assert_eq!(
        (added.units, added.value, added.status),
        (Some(3), money(360), SaleStatus::NewSelection)
    );
    assert_eq!(added.name.as_deref(), Some("HOT CHOCOLATE"));
    let removed = rows.last().unwrap();
    assert_eq!(removed.selection, "2");
    assert_eq!(
        (removed.units, removed.value, removed.status),
        (None, None, SaleStatus::RemovedSelection)
    );
    assert_eq!(rows.len(), older.products().len() + 1);
}

#[test]
fn audits_of_two_machines_or_in_the_wrong_order_are_refused_unless_told() {
    let older = parse(AUDIT).unwrap();
    let other_text = edited("ID1*RHV0000000000*", "ID1*RHV0000000042*");
    let other_machine = parse(&other_text).unwrap();
    assert_eq!(
        sales(&older.audit(), &other_machine.audit(), true),
        Err(SalesError::DifferentMachines {
            older: "RHV0000000000".into(),
            newer: "RHV0000000042".into()
        })
    );
    assert!(sales(&older.audit(), &other_machine.audit(), false).is_ok());

    let earlier_text = edited("EA3*2*231127*1011*", "EA3*2*231020*0900*");
    let earlier = parse(&earlier_text).unwrap();
    let error = sales(&older.audit(), &earlier.audit(), true).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the audits are in the wrong order: the older one was read at 2023-11-27 10:11, the newer one at 2023-10-20 09:00"
    );
    assert!(sales(&earlier.audit(), &older.audit(), true).is_ok());
    assert!(sales(&older.audit(), &earlier.audit(), false).is_ok());

    // A read date without its time says nothing of the hour: the same day is no wrong order.
    let same_day_text = edited("EA3*2*231127*1011*", "EA3*2*231127**");
    let same_day = parse(&same_day_text).unwrap();
    assert_eq!(same_day.read_at().as_deref(), Some("2023-11-27"));
    assert!(sales(&older.audit(), &same_day.audit(), true).is_ok());
    assert!(sales(&same_day.audit(), &older.audit(), true).is_ok());
    let later_text = edited("EA3*2*231127*1011*", "EA3*2*231127*1012*");
    let later_same_day = parse(&later_text).unwrap();
    assert!(sales(&later_same_day.audit(), &older.audit(), true).is_err());
    // A minute says nothing of its seconds.
    let with_seconds_text = edited("EA3*2*231127*1011*", "EA3*2*231127*101105*");
    let with_seconds = parse(&with_seconds_text).unwrap();
    assert_eq!(
        with_seconds.read_at().as_deref(),
        Some("2023-11-27 10:11:05")
    );
    assert!(sales(&with_seconds.audit(), &older.audit(), true).is_ok());
    assert!(sales(&older.audit(), &with_seconds.audit(), true).is_ok());
}

/// A file cut off after the third selection's PA2: the two before it are whole and compared; the
/// third may lack its later lines, and those after it are missing.
#[test]
fn an_audit_cut_off_gives_numbers_only_for_its_whole_selections() {
    let complete = parse(AUDIT).unwrap();
    let third = "PA2*359*24990*358*24990";
    let cut_at = AUDIT.find(third).unwrap() + third.len();
    // Whatever a gateway writes after the cut (a DXE, a checksum) does not make it whole.
    for after_the_cut in ["", "\r\nG85*1234\r\nDXE*1*1\r\n"] {
        let cut_text = format!("{}{after_the_cut}", &AUDIT[..cut_at]);
        let cut = parse(&cut_text).unwrap();
        assert_eq!(cut.audit().cut_selection.as_deref(), Some("3"));
        for (older, newer) in [(&cut, &complete), (&complete, &cut)] {
            let rows = sales(&older.audit(), &newer.audit(), true).unwrap();
            assert_eq!(rows.len(), complete.products().len());
            for row in rows {
                let expected = if row.selection == "1" || row.selection == "2" {
                    (SaleStatus::Ok, Some(0))
                } else {
                    (SaleStatus::Truncated, None)
                };
                assert_eq!((row.status, row.units), expected, "{row:?}");
            }
        }
    }
}

/// A file whose set ended with its SE, the envelope's DXE missing after it: every selection came
/// whole, the last one too.
#[test]
fn an_audit_without_its_dxe_after_its_se_is_whole() {
    let complete = parse(AUDIT).unwrap();
    let without_dxe = &AUDIT[..AUDIT.find("DXE*").unwrap()];
    let dex = parse(without_dxe).unwrap();
    assert!(!dex.audit().truncated);
    assert_eq!(dex.audit().cut_selection, None);
    for row in sales(&complete.audit(), &dex.audit(), true).unwrap() {
        assert_eq!(row.status, SaleStatus::Ok, "{row:?}");
    }
    // But data the file took in after its SE, and no DXE after that, may be cut off.
    let data_after = format!("{without_dxe}PA1*99*50*TEA\r\nPA2*12");
    let cut = parse(&data_after).unwrap();
    assert!(cut.audit().truncated);
    assert_eq!(cut.audit().cut_selection.as_deref(), Some("99"));
}

/// A selection whose NUL byte reads as U+FFFD, and one written with U+FFFD, read the same: it is one
/// selection, the first.
#[test]
fn a_selection_that_reads_the_same_twice_is_compared_once() {
    let text: &[u8] =
        b"ST*001*0001\nPA1*A\0*10\nPA2*5*50\nPA1*A\xEF\xBF\xBD*10\nPA2*7*70\nSE*6*0001\n";
    let audit = parse(text).unwrap().audit();
    assert_eq!(audit.products.len(), 1);
    let rows = sales(&audit, &audit, true).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status, rows[0].units), (SaleStatus::Ok, Some(0)));
}

/// A file that is not UTF-8 is read as Windows-1252 throughout: a selection valid as UTF-8 on its
/// own is not read as UTF-8, and two selections whose bytes differ stay two.
#[test]
fn a_file_that_is_not_utf8_is_read_as_windows_1252_throughout() {
    let text: &[u8] = b"ST*001*0001\nPA1*\xC3\xA9*10\nPA2*5*50\nPA1*\xE9*10\nPA2*7*70\nSE*6*0001\n";
    let audit = parse(text).unwrap().audit();
    let selections: Vec<_> = audit
        .products
        .iter()
        .map(|product| product.selection.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(selections, ["Ã©", "é"]);
}

/// A file cut off mid-line: its last PA2 may be cut mid-number, and what follows it is missing.
#[test]
fn an_audit_cut_off_gives_no_numbers() {
    let complete = parse(AUDIT).unwrap();
    let cut_at = AUDIT.find("PA2*602*29790").unwrap() + "PA2*602*297".len();
    let cut = parse(&AUDIT[..cut_at]).unwrap();
    assert!(cut.audit().truncated);
    for (older, newer) in [(&cut, &complete), (&complete, &cut)] {
        let rows = sales(&older.audit(), &newer.audit(), true).unwrap();
        assert_eq!(rows.len(), complete.products().len());
        for row in rows {
            assert_eq!(row.status, SaleStatus::Truncated, "{row:?}");
            assert_eq!((row.units, row.value), (None, None), "{row:?}");
        }
    }
}

#[test]
fn every_sample_compares_with_itself() {
    for sample in [
        include_str!("fixtures/mdisibio-test.dex"),
        include_str!("fixtures/mdisibio-test2.dex"),
        include_str!("fixtures/tmdroid-dex3.dex"),
    ] {
        let dex = parse(sample).unwrap();
        for row in sales(&dex.audit(), &dex.audit(), true).unwrap() {
            assert_eq!(row.status, SaleStatus::Ok, "{row:?}");
            assert!(row.units.is_none_or(|units| units == 0), "{row:?}");
        }
    }
}
