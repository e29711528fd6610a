//! Products as rows, and what sold between two audits of one machine.
//!
//! A machine's PA2 counters count since its initialisation and since the last reset; what sold
//! between two audits is the difference of the since-initialisation counters. Where that is not
//! a difference (a selection added or removed, a counter that went down because the machine was
//! re-initialised or the counter rolled over) the row says so in its status instead of
//! reporting a wrong number.

use std::collections::HashMap;
use std::fmt;

use crate::parser::{Cell, DexFile, Record};
use crate::Dex;

/// An amount in the currency's smallest unit, shown with the file's decimal places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub minor_units: u64,
    pub decimal_places: u32,
}

impl fmt::Display for Money {
    /// `297.90` for 29790 minor units and 2 decimal places: exact, for a SQL `numeric`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places = self.decimal_places as usize;
        let digits = format!("{:0width$}", self.minor_units, width = places + 1);
        if places == 0 {
            return f.write_str(&digits);
        }
        let (whole, fraction) = digits.split_at(digits.len() - places);
        write!(f, "{whole}.{fraction}")
    }
}

/// One PA2, PA3 or PA4 record: vends and their value since initialisation and since reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub count_since_init: Option<u64>,
    pub value_since_init: Option<Money>,
    pub count_since_reset: Option<u64>,
    pub value_since_reset: Option<Money>,
}

/// One product selection of an audit (PA1 with its PA2 to PA4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// PA101, the selection number as written (`None` for PA2 lines without a PA1).
    pub selection: Option<String>,
    /// PA103, the product identification (machines write a name or a code).
    pub name: Option<String>,
    /// PA102.
    pub price: Option<Money>,
    /// PA2: paid vends.
    pub paid: Counters,
    /// PA3: test vends.
    pub test: Counters,
    /// PA4: free vends.
    pub free: Counters,
}

/// How one selection's sales between two audits were worked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleStatus {
    /// Present in both, counters not lower: the difference.
    Ok,
    /// Only in the newer audit: its counters since initialisation (they started at zero when the
    /// selection was set up).
    NewSelection,
    /// Only in the older audit: nothing can be said; units and value are `None`.
    RemovedSelection,
    /// The newer count or value is lower (the machine was re-initialised, or a counter rolled
    /// over): each counter that went down, the newer one since initialisation (what sold at
    /// least); one that did not, the difference.
    CounterReset,
    /// An audit was cut off (no SE, or data after its SE and no DXE) and wrote this selection
    /// last, its last line perhaps cut mid-number; or the selection is in one audit only and the
    /// other was cut off, so that it may be among the lines missing. Units and value are `None`.
    Truncated,
}

impl SaleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SaleStatus::Ok => "ok",
            SaleStatus::NewSelection => "new_selection",
            SaleStatus::RemovedSelection => "removed_selection",
            SaleStatus::CounterReset => "counter_reset",
            SaleStatus::Truncated => "truncated",
        }
    }
}

/// What sold of one selection between two audits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub selection: String,
    /// The newer audit's PA103, else the older's.
    pub name: Option<String>,
    /// Paid vends (PA201).
    pub units: Option<u64>,
    /// Their value (PA202).
    pub value: Option<Money>,
    pub status: SaleStatus,
}

/// Why two audits cannot be compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SalesError {
    /// Their ID101 serial numbers differ.
    DifferentMachines { older: String, newer: String },
    /// The "older" audit was read after the "newer" one (EA302/EA303).
    WrongOrder { older: String, newer: String },
}

impl fmt::Display for SalesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SalesError::DifferentMachines { older, newer } => write!(
                f,
                "the two audits are from different machines: serial {older:?}, then {newer:?}"
            ),
            SalesError::WrongOrder { older, newer } => write!(
                f,
                "the audits are in the wrong order: the older one was read at {older}, the newer one at {newer}"
            ),
        }
    }
}

impl std::error::Error for SalesError {}

impl Dex<'_> {
    /// The products of the text's first file, in the order of their first PA1.
    pub fn products(&self) -> Vec<Product> {
        self.first_file()
            .map(|file| products_of(file).collect())
            .unwrap_or_default()
    }

    /// ID101 of the text's first file.
    pub fn serial(&self) -> Option<String> {
        let file = self.first_file()?;
        text(file, file.id1.as_ref(), "serial")
    }

    /// EA302 and EA303 of the text's first file, as `YYYY-MM-DD HH:MM[:SS]`.
    pub fn read_at(&self) -> Option<String> {
        let file = self.first_file()?;
        let ea3 = file.ea3.as_ref()?;
        let Cell::Date(date) = ea3.cell(&file.cells, "read_date") else {
            return None;
        };
        Some(match ea3.cell(&file.cells, "read_time") {
            Cell::Time(time) => format!("{} {}", date.iso(), time.iso()),
            _ => date.iso(),
        })
    }

    fn first_file(&self) -> Option<&DexFile<'_>> {
        self.parsed.files.first()
    }
}

/// What [`sales`] compares of one audit: the machine, when it was read, and the products that
/// have a selection (a PA2 without its PA1 has nothing to be compared by). The parsed text it was
/// taken from can go once it is taken: two audits' parsed texts at once would take twice the
/// memory of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub serial: Option<String>,
    pub read_at: Option<String>,
    pub products: Vec<Product>,
    /// The file was cut off (see [`SaleStatus::Truncated`]).
    pub truncated: bool,
    /// The selection a cut-off file wrote last.
    pub cut_selection: Option<String>,
}

impl Dex<'_> {
    pub fn audit(&self) -> Audit {
        Audit {
            serial: self.serial(),
            read_at: self.read_at(),
            products: self
                .first_file()
                .map(|file| {
                    // A selection once, as read: two spellings that read the same (a NUL byte,
                    // read as U+FFFD, and U+FFFD) would otherwise be compared crosswise.
                    let mut seen = std::collections::HashSet::new();
                    products_of(file)
                        .filter(|product| {
                            product
                                .selection
                                .as_ref()
                                .is_some_and(|selection| seen.insert(selection.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            truncated: self
                .first_file()
                .is_some_and(|file| file.validation.truncated),
            cut_selection: self.first_file().and_then(cut_selection),
        }
    }
}

/// The selection of the product a cut-off file wrote last: its last line may be cut mid-number,
/// and its later lines (PA3, PA4) missing. Whatever follows it (a DXE, a G85, a gateway's footer,
/// event lines) does not make it whole: what was lost may be inside it. None where the file is
/// whole.
fn cut_selection(file: &DexFile<'_>) -> Option<String> {
    if !file.validation.truncated {
        return None;
    }
    // The product written last, by its latest line: a repeated PA1 goes on with an earlier one.
    let last_written = file.products.iter().max_by_key(|product| {
        [
            &product.pa1,
            &product.pa2,
            &product.pa3,
            &product.pa4,
            &product.pa5,
        ]
        .into_iter()
        .flatten()
        .chain(&product.by_payment_device)
        .map(|record| record.line as usize)
        .chain(product.other.iter().map(|segment| segment.line))
        .chain([product.line])
        .max()
    })?;
    text(file, last_written.pa1.as_ref(), "selection")
}

/// What sold of each selection between the `older` and the `newer` audit of one machine: the
/// newer's selections in their order, then those only the older has. With `check`, two audits
/// of different machines (ID101) or in the wrong order (EA302/EA303) are an error; where either
/// lacks the serial or the read date, that check is skipped, and the read times are compared only
/// where both have one. Where an audit was cut off, the selection it wrote last, and those only
/// the other audit has, are [`SaleStatus::Truncated`].
pub fn sales(older: &Audit, newer: &Audit, check: bool) -> Result<Vec<Sale>, SalesError> {
    if check {
        if let (Some(older), Some(newer)) = (&older.serial, &newer.serial) {
            if older != newer {
                return Err(SalesError::DifferentMachines {
                    older: older.clone(),
                    newer: newer.clone(),
                });
            }
        }
        if let (Some(older), Some(newer)) = (&older.read_at, &newer.read_at) {
            if read_later(older, newer) {
                return Err(SalesError::WrongOrder {
                    older: older.clone(),
                    newer: newer.clone(),
                });
            }
        }
    }
    let cut = |selection: &str| {
        [&older.cut_selection, &newer.cut_selection]
            .into_iter()
            .any(|cut| cut.as_deref() == Some(selection))
    };
    let (before, after) = (&older.products, &newer.products);
    let before_by_selection: HashMap<&str, &Product> = before
        .iter()
        .filter_map(|p| Some((p.selection.as_deref()?, p)))
        .collect();
    let mut rows = Vec::with_capacity(after.len());
    for product in after {
        let Some(selection) = product.selection.as_deref() else {
            continue;
        };
        rows.push(match before_by_selection.get(selection) {
            _ if cut(selection) => untrusted(selection, product),
            Some(previous) => compare(selection, previous, product),
            None if older.truncated => untrusted(selection, product),
            None => Sale {
                selection: selection.to_string(),
                name: product.name.clone(),
                units: product.paid.count_since_init,
                value: product.paid.value_since_init,
                status: SaleStatus::NewSelection,
            },
        });
    }
    let in_newer: std::collections::HashSet<&str> = after
        .iter()
        .filter_map(|p| p.selection.as_deref())
        .collect();
    for product in before {
        let Some(selection) = product.selection.as_deref() else {
            continue;
        };
        if !in_newer.contains(selection) {
            let unknown = untrusted(selection, product);
            rows.push(if newer.truncated || cut(selection) {
                unknown
            } else {
                Sale {
                    status: SaleStatus::RemovedSelection,
                    ..unknown
                }
            });
        }
    }
    Ok(rows)
}

/// Whether `older` (`YYYY-MM-DD[ HH:MM[:SS]]`) was read after `newer`: by date, then by time
/// where both have one, to the precision both have (a date alone says nothing of the hour, a
/// minute nothing of its seconds).
fn read_later(older: &str, newer: &str) -> bool {
    fn date_and_time(at: &str) -> (&str, Option<&str>) {
        match at.split_once(' ') {
            Some((date, time)) => (date, Some(time)),
            None => (at, None),
        }
    }
    let ((older_date, older_time), (newer_date, newer_time)) =
        (date_and_time(older), date_and_time(newer));
    // ISO text sorts as time does.
    let time_later = match (older_time, newer_time) {
        (Some(older), Some(newer)) => {
            let precision = older.len().min(newer.len());
            older.get(..precision) > newer.get(..precision)
        }
        _ => false,
    };
    older_date > newer_date || (older_date == newer_date && time_later)
}

/// A selection whose sales cannot be told: no units, no value.
fn untrusted(selection: &str, product: &Product) -> Sale {
    Sale {
        selection: selection.to_string(),
        name: product.name.clone(),
        units: None,
        value: None,
        status: SaleStatus::Truncated,
    }
}

/// Each counter on its own: one that went down (a re-initialisation, or a rollover of that counter)
/// gives what the newer audit counted since, the least that sold; one that did not, the difference.
/// A 16-bit vend count that rolls over leaves the value's difference exact.
fn compare(selection: &str, older: &Product, newer: &Product) -> Sale {
    let (before, after) = (&older.paid, &newer.paid);
    let (units, count_went_down) = match (before.count_since_init, after.count_since_init) {
        (Some(b), Some(a)) if a < b => (Some(a), true),
        (Some(b), Some(a)) => (Some(a - b), false),
        _ => (None, false),
    };
    let (value, value_went_down) = match (before.value_since_init, after.value_since_init) {
        (Some(b), Some(a)) if a.decimal_places == b.decimal_places => {
            if a.minor_units < b.minor_units {
                (Some(a), true)
            } else {
                let sold = Money {
                    minor_units: a.minor_units - b.minor_units,
                    decimal_places: a.decimal_places,
                };
                (Some(sold), false)
            }
        }
        _ => (None, false),
    };
    Sale {
        selection: selection.to_string(),
        name: newer.name.clone().or_else(|| older.name.clone()),
        units,
        value,
        status: if count_went_down || value_went_down {
            SaleStatus::CounterReset
        } else {
            SaleStatus::Ok
        },
    }
}

fn products_of<'f>(file: &'f DexFile<'_>) -> impl Iterator<Item = Product> + 'f {
    file.products.iter().map(|product| Product {
        selection: text(file, product.pa1.as_ref(), "selection"),
        name: text(file, product.pa1.as_ref(), "name"),
        price: money(file, product.pa1.as_ref(), "price"),
        paid: counters(file, product.pa2.as_ref()),
        test: counters(file, product.pa3.as_ref()),
        free: counters(file, product.pa4.as_ref()),
    })
}

fn counters(file: &DexFile<'_>, record: Option<&Record>) -> Counters {
    Counters {
        count_since_init: count(file, record, "count_since_init"),
        value_since_init: money(file, record, "value_since_init"),
        count_since_reset: count(file, record, "count_since_reset"),
        value_since_reset: money(file, record, "value_since_reset"),
    }
}

fn text(file: &DexFile<'_>, record: Option<&Record>, field: &str) -> Option<String> {
    match record?.cell(&file.cells, field) {
        Cell::Text(span) => Some(file.encoding.decode(span.get(file.input)).into_owned()),
        _ => None,
    }
}

fn count(file: &DexFile<'_>, record: Option<&Record>, field: &str) -> Option<u64> {
    match record?.cell(&file.cells, field) {
        Cell::Number(n) => Some(n),
        _ => None,
    }
}

fn money(file: &DexFile<'_>, record: Option<&Record>, field: &str) -> Option<Money> {
    count(file, record, field).map(|minor_units| Money {
        minor_units,
        decimal_places: file.decimal_places,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_exactly_with_its_decimal_places() {
        let money = |minor_units, decimal_places| {
            Money {
                minor_units,
                decimal_places,
            }
            .to_string()
        };
        assert_eq!(money(29790, 2), "297.90");
        assert_eq!(money(5, 2), "0.05");
        assert_eq!(money(0, 2), "0.00");
        assert_eq!(money(150, 0), "150");
        assert_eq!(money(1, 6), "0.000001");
        assert_eq!(money(u64::MAX, 2), "184467440737095516.15");
    }
}
