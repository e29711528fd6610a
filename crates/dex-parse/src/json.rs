//! The JSON shape documented in the README, written through serde so that
//! the same code yields JSON text (no intermediate tree) or a `Value`.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::elements::TextEncoding;
use crate::layout::{self, Kind, Layout};
use crate::parser::{
    Cell, ChecksumStatus, DexFile, Parsed, Product, RawSegment, Record, Validation,
};
use crate::segment::split_into;

/// Text decoded on output, in its file's encoding.
struct Text<'a>(&'a [u8], TextEncoding);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.1.decode(self.0))
    }
}

/// An amount in the smallest currency unit, written in currency units.
struct Money {
    minor_units: u64,
    decimal_places: u32,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.decimal_places == 0 {
            return serializer.serialize_u64(self.minor_units);
        }
        // Exact for every amount of up to 15 significant digits.
        serializer.serialize_f64(self.minor_units as f64 / 10f64.powi(self.decimal_places as i32))
    }
}

struct CellOut<'c> {
    cell: &'c Cell,
    input: &'c [u8],
    encoding: TextEncoding,
    kind: Kind,
    decimal_places: u32,
}

impl Serialize for CellOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self.cell {
            Cell::Null => serializer.serialize_none(),
            Cell::Number(minor_units) if self.kind == Kind::Money => Money {
                minor_units,
                decimal_places: self.decimal_places,
            }
            .serialize(serializer),
            Cell::Number(n) => serializer.serialize_u64(n),
            Cell::Text(text) => Text(text.get(self.input), self.encoding).serialize(serializer),
            Cell::Date(date) => serializer.serialize_str(&date.iso()),
            Cell::Time(time) => serializer.serialize_str(&time.iso()),
        }
    }
}

/// The elements of a line after its id and its first `skip` elements.
struct Elements<'a> {
    line: &'a [u8],
    skip: usize,
    encoding: TextEncoding,
}

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut elements = Vec::new();
        split_into(self.line, &mut elements);
        let rest = elements.get(self.skip..).unwrap_or_default();
        serializer.collect_seq(rest.iter().map(|e| Text(e, self.encoding)))
    }
}

/// Writes a record's named fields from `first_field` on, leaving out those
/// without a value, and its extra elements, when present, under `extra_key`.
fn fields<M: SerializeMap>(
    map: &mut M,
    layout: &Layout,
    first_field: usize,
    record: Option<&Record>,
    file: &DexFile<'_>,
    extra_key: &str,
) -> Result<(), M::Error> {
    let decimal_places = file.decimal_places;
    let cells = record.map(|r| r.cells(&file.cells)).unwrap_or_default();
    for (index, (name, kind)) in layout.fields.iter().enumerate().skip(first_field) {
        match cells.get(index) {
            None | Some(Cell::Null) => {}
            Some(cell) => map.serialize_entry(
                name,
                &CellOut {
                    cell,
                    input: file.input,
                    encoding: file.encoding,
                    kind: *kind,
                    decimal_places,
                },
            )?,
        }
    }
    if let Some(record) = record.filter(|r| !r.extra_line.is_empty()) {
        map.serialize_entry(
            extra_key,
            &Elements {
                line: record.extra_line.get(file.input),
                skip: layout.fields.len(),
                encoding: file.encoding,
            },
        )?;
    }
    Ok(())
}

/// A record as an object, or null.
struct RecordOut<'r> {
    record: Option<&'r Record>,
    file: &'r DexFile<'r>,
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(record) = self.record else {
            return serializer.serialize_none();
        };
        let mut map = serializer.serialize_map(None)?;
        fields(
            &mut map,
            record.layout,
            0,
            Some(record),
            self.file,
            "extra_elements",
        )?;
        map.end()
    }
}

fn record<'r>(record: &'r Option<Record>, file: &'r DexFile<'r>) -> RecordOut<'r> {
    RecordOut {
        record: record.as_ref(),
        file,
    }
}

struct RecordsOut<'r> {
    records: &'r [Record],
    file: &'r DexFile<'r>,
}

impl Serialize for RecordsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let file = self.file;
        serializer.collect_seq(self.records.iter().map(|r| RecordOut {
            record: Some(r),
            file,
        }))
    }
}

fn records<'r>(records: &'r [Record], file: &'r DexFile<'r>) -> RecordsOut<'r> {
    RecordsOut { records, file }
}

struct RawSegmentOut<'r>(&'r RawSegment<'r>, TextEncoding);

impl Serialize for RawSegmentOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut elements = Vec::new();
        let id = split_into(self.0.content, &mut elements);
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("line", &self.0.line)?;
        map.serialize_entry("segment", &Text(id, self.1))?;
        map.serialize_entry(
            "elements",
            &Elements {
                line: self.0.content,
                skip: 0,
                encoding: self.1,
            },
        )?;
        map.end()
    }
}

struct RawSegmentsOut<'r>(&'r [RawSegment<'r>], TextEncoding);

impl Serialize for RawSegmentsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|segment| RawSegmentOut(segment, self.1)))
    }
}

struct ProductOut<'p> {
    product: &'p Product<'p>,
    file: &'p DexFile<'p>,
}

impl Serialize for ProductOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (p, file) = (self.product, self.file);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("line", &p.line)?;
        fields(
            &mut map,
            &layout::PA1,
            0,
            p.pa1.as_ref(),
            file,
            "pa1_extra_elements",
        )?;
        map.serialize_entry("paid", &record(&p.pa2, file))?;
        map.serialize_entry("test", &record(&p.pa3, file))?;
        map.serialize_entry("free", &record(&p.pa4, file))?;
        map.serialize_entry("pa5", &record(&p.pa5, file))?;
        map.serialize_entry("by_payment_device", &records(&p.by_payment_device, file))?;
        map.serialize_entry("other_segments", &RawSegmentsOut(&p.other, file.encoding))?;
        map.end()
    }
}

/// A JSON object built from `(key, value)` pairs of one value type.
struct Object<'k, V, const N: usize>([(&'k str, V); N]);

impl<V: Serialize, const N: usize> Serialize for Object<'_, V, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(N))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

fn validation_entries<M: SerializeMap>(
    map: &mut M,
    validation: &Validation,
) -> Result<(), M::Error> {
    let checksum = &validation.checksum;
    let status = match checksum.status {
        ChecksumStatus::Valid => "valid",
        ChecksumStatus::ValidByteSwapped => "valid_byte_swapped",
        ChecksumStatus::Invalid => "invalid",
        ChecksumStatus::Missing => "missing",
        ChecksumStatus::Malformed => "malformed",
    };
    let line_endings = checksum.crlf_restored.map(|restored| {
        if restored {
            "crlf_restored"
        } else {
            "as_received"
        }
    });
    let declared_count = validation.declared_segment_count;
    let actual_count = validation.actual_segment_count;
    map.serialize_entry("ok", &validation.ok())?;
    map.serialize_entry("truncated", &validation.truncated)?;
    map.serialize_entry(
        "checksum",
        &Object([
            ("status", Some(status.to_owned())),
            ("declared", checksum.declared.clone()),
            (
                "computed",
                checksum.computed.map(|crc| format!("{crc:04X}")),
            ),
            ("line_endings", line_endings.map(str::to_owned)),
        ]),
    )?;
    map.serialize_entry(
        "segment_count",
        &Object([
            ("declared", declared_count.map(serde_json::Value::from)),
            ("actual", Some(serde_json::Value::from(actual_count))),
            (
                "loop_markers",
                Some(serde_json::Value::from(validation.loop_markers)),
            ),
            (
                "matches",
                validation
                    .segment_count_matches
                    .map(serde_json::Value::from),
            ),
        ]),
    )?;
    map.serialize_entry(
        "envelope",
        &Object([
            ("dxs", validation.has_dxs),
            ("st", validation.has_st),
            ("g85", validation.has_g85),
            ("se", validation.has_se),
            ("dxe", validation.has_dxe),
        ]),
    )?;
    map.serialize_entry("warnings", &validation.warnings)?;
    map.serialize_entry("warnings_omitted", &validation.warnings_omitted)
}

struct ValidationOut<'v>(&'v Validation);

impl Serialize for ValidationOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        validation_entries(&mut map, self.0)?;
        map.end()
    }
}

fn file_entries<M: SerializeMap>(map: &mut M, file: &DexFile<'_>) -> Result<(), M::Error> {
    map.serialize_entry("first_line", &file.first_line)?;
    map.serialize_entry("last_line", &file.last_line)?;
    map.serialize_entry(
        "envelope",
        &Object([
            ("dxs", record(&file.dxs, file)),
            ("st", record(&file.st, file)),
            ("se", record(&file.se, file)),
            ("dxe", record(&file.dxe, file)),
        ]),
    )?;
    map.serialize_entry("machine", &MachineOut(file))?;
    map.serialize_entry(
        "totals",
        &Object([
            ("paid", record(&file.va1, file)),
            ("test", record(&file.va2, file)),
            ("free", record(&file.va3, file)),
            ("cash", record(&file.ca2, file)),
            ("cashless1", record(&file.da2, file)),
            ("cashless2", record(&file.db2, file)),
            ("token", record(&file.ta2, file)),
        ]),
    )?;
    map.serialize_entry("cash", &CashOut(file))?;
    let products: Vec<ProductOut<'_>> = file
        .products
        .iter()
        .map(|product| ProductOut { product, file })
        .collect();
    map.serialize_entry("products", &products)?;
    map.serialize_entry("events", &EventsOut(file))?;
    map.serialize_entry(
        "other_segments",
        &RawSegmentsOut(&file.other, file.encoding),
    )?;
    map.serialize_entry("validation", &ValidationOut(&file.validation))
}

struct MachineOut<'f>(&'f DexFile<'f>);

impl Serialize for MachineOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let file = self.0;
        let mut map = serializer.serialize_map(None)?;
        fields(
            &mut map,
            &layout::ID1,
            0,
            file.id1.as_ref(),
            file,
            "id1_extra_elements",
        )?;
        // ID401 as applied (the default when absent), not as written.
        map.serialize_entry("decimal_places", &file.decimal_places)?;
        fields(
            &mut map,
            &layout::ID4,
            1,
            file.id4.as_ref(),
            file,
            "id4_extra_elements",
        )?;
        fields(
            &mut map,
            &layout::ID5,
            0,
            file.id5.as_ref(),
            file,
            "id5_extra_elements",
        )?;
        map.serialize_entry("control_board", &record(&file.cb1, file))?;
        map.end()
    }
}

struct CashOut<'f>(&'f DexFile<'f>);

impl Serialize for CashOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let file = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("coin_mechanism", &record(&file.ca1, file))?;
        map.serialize_entry("bill_validator", &record(&file.ba1, file))?;
        map.serialize_entry("cashless1_device", &record(&file.da1, file))?;
        map.serialize_entry("cashless2_device", &record(&file.db1, file))?;
        map.serialize_entry("cash_in", &record(&file.ca3, file))?;
        map.serialize_entry("cash_out", &record(&file.ca4, file))?;
        map.serialize_entry("cash_filled", &record(&file.ca10, file))?;
        map.serialize_entry("tube_contents", &records(&file.tube_contents, file))?;
        map.serialize_entry("tubes", &records(&file.tubes, file))?;
        map.end()
    }
}

struct EventsOut<'f>(&'f DexFile<'f>);

impl Serialize for EventsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let file = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("occurrences", &records(&file.events, file))?;
        map.serialize_entry("counters", &records(&file.event_counters, file))?;
        map.serialize_entry("audit_reads", &record(&file.ea3, file))?;
        map.serialize_entry("power_outages", &record(&file.ea7, file))?;
        map.end()
    }
}

struct OutsideLinesOut<'p>(&'p [RawSegment<'p>]);

impl Serialize for OutsideLinesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for line in self.0 {
            seq.serialize_element(&LineText(line))?;
        }
        seq.end()
    }
}

struct LineText<'r>(&'r RawSegment<'r>);

impl Serialize for LineText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("line", &self.0.line)?;
        // A line outside every file, read on its own: UTF-8 if it is, else Windows-1252.
        map.serialize_entry("text", &Text(self.0.content, TextEncoding::Utf8))?;
        map.end()
    }
}

struct FileOut<'f>(&'f DexFile<'f>);

impl Serialize for FileOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        file_entries(&mut map, self.0)?;
        map.end()
    }
}

/// The whole result: the first file's keys, then `additional_files` and
/// `outside_lines`.
pub(crate) struct DocumentOut<'p>(pub &'p Parsed<'p>);

impl Serialize for DocumentOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let files = &self.0.files;
        let mut map = serializer.serialize_map(None)?;
        if let Some(first) = files.first() {
            file_entries(&mut map, first)?;
        }
        let others = files.get(1..).unwrap_or_default();
        map.serialize_entry(
            "additional_files",
            &others.iter().map(FileOut).collect::<Vec<_>>(),
        )?;
        map.serialize_entry("outside_lines", &OutsideLinesOut(&self.0.outside_lines))?;
        map.end()
    }
}

/// The first file's validation keys, then the others' validations in
/// `additional_files`, and `outside_lines`.
pub(crate) struct ValidationDocumentOut<'p>(pub &'p Parsed<'p>);

impl Serialize for ValidationDocumentOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let validations: Vec<&Validation> = self.0.files.iter().map(|f| &f.validation).collect();
        let mut map = serializer.serialize_map(None)?;
        if let Some(first) = validations.first() {
            validation_entries(&mut map, first)?;
        }
        let others = validations.get(1..).unwrap_or_default();
        map.serialize_entry(
            "additional_files",
            &others.iter().map(|v| ValidationOut(v)).collect::<Vec<_>>(),
        )?;
        map.serialize_entry("outside_lines", &OutsideLinesOut(&self.0.outside_lines))?;
        map.end()
    }
}
