//! From lines to files: block splitting, segment dispatch and validation.

use std::collections::HashMap;

use crate::crc::{crc16_arc, Crc16};
use crate::elements::{
    decode_text, parse_date, parse_number, parse_time, Date, Number, TextEncoding, Time,
};
use crate::layout::{self, Kind, Layout};
use crate::lines::{strip_bom, Line, Lines};
use crate::segment::{is_segment_id, is_standard_data_segment, split_into};
use crate::DexError;

/// Line-level warnings kept per file; the rest are only counted.
const MAX_LINE_WARNINGS: usize = 100;
/// Lines outside every block kept in the result; the rest are only counted.
const MAX_OUTSIDE_LINES: usize = 100;
/// Files read from one text. Each file costs some output even when empty,
/// so this bounds what a text of nothing but `DXS` lines can blow up to.
const MAX_FILES: usize = 10_000;
/// Decimal places assumed when ID401 is absent, as EVA-DTS specifies.
const DEFAULT_DECIMAL_PLACES: u32 = 2;
/// Larger ID401 values are taken as corrupt rather than applied.
const MAX_DECIMAL_PLACES: u32 = 6;

/// The most input read: what a PostgreSQL `text` or `bytea` can hold. It
/// keeps every offset, line number and cell index within 32 bits.
pub(crate) const MAX_INPUT_BYTES: usize = 1 << 30;

/// Where a piece of the input is, in half the size of a slice: the parsed
/// form holds one per text cell, and it is most of the memory a parse takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The span of `part`, a slice of `input` (or empty).
    pub(crate) fn of(input: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            return Span::default();
        }
        let start = part.as_ptr().addr().wrapping_sub(input.as_ptr().addr());
        Span {
            start: start as u32,
            len: part.len() as u32,
        }
    }

    pub(crate) fn get(self, input: &[u8]) -> &[u8] {
        let start = self.start as usize;
        input
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }

    pub(crate) fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// One element read through its layout: 16 bytes, text as a [`Span`] of
/// the input, decoded only on output.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Cell {
    #[default]
    Null,
    Number(u64),
    Text(Span),
    Date(Date),
    Time(Time),
}

impl Cell {
    fn number(&self) -> Option<u64> {
        match self {
            Cell::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// A segment read through its [`Layout`]. Its cells live in the file's
/// [`DexFile::cells`], which keeps records small and cheap to move.
#[derive(Debug)]
pub(crate) struct Record {
    pub layout: &'static Layout,
    pub line: u32,
    /// Index of the record's first cell; it has one per field of the layout.
    pub first_cell: u32,
    /// The whole line when it has non-empty elements after the named ones
    /// (output as `extra_elements`); empty otherwise.
    pub extra_line: Span,
}

impl Record {
    /// The record's cells, one per field of its layout.
    pub(crate) fn cells<'c>(&self, arena: &'c [Cell]) -> &'c [Cell] {
        let first = self.first_cell as usize;
        arena
            .get(first..first + self.layout.fields.len())
            .unwrap_or_default()
    }

    pub(crate) fn cell(&self, arena: &[Cell], name: &str) -> Cell {
        let index = self
            .layout
            .fields
            .iter()
            .position(|(field, _)| *field == name);
        index
            .and_then(|i| self.cells(arena).get(i).copied())
            .unwrap_or_default()
    }
}

/// A segment kept as written: manufacturer segments and others not mapped.
#[derive(Debug)]
pub(crate) struct RawSegment<'a> {
    pub line: usize,
    pub content: &'a [u8],
}

#[derive(Debug, Default)]
pub(crate) struct Product<'a> {
    pub line: usize,
    pub pa1: Option<Record>,
    pub pa2: Option<Record>,
    pub pa3: Option<Record>,
    pub pa4: Option<Record>,
    pub pa5: Option<Record>,
    pub by_payment_device: Vec<Record>,
    pub other: Vec<RawSegment<'a>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ChecksumStatus {
    Valid,
    ValidByteSwapped,
    Invalid,
    #[default]
    Missing,
    Malformed,
}

#[derive(Debug, Default)]
pub(crate) struct Checksum {
    pub status: ChecksumStatus,
    pub declared: Option<String>,
    pub computed: Option<u16>,
    /// Whether the checksum matched only after restoring CR LF line ends.
    pub crlf_restored: Option<bool>,
}

#[derive(Debug, Default)]
pub(crate) struct Validation {
    pub checksum: Checksum,
    pub declared_segment_count: Option<u64>,
    pub actual_segment_count: usize,
    /// LS and LE lines among them: some machines leave the loop markers out of SE01.
    pub loop_markers: usize,
    /// Whether SE01 matches either count; `None` without an SE01.
    pub segment_count_matches: Option<bool>,
    pub truncated: bool,
    pub has_dxs: bool,
    pub has_st: bool,
    pub has_g85: bool,
    pub has_se: bool,
    pub has_dxe: bool,
    /// File-level findings first, then line-level ones (capped).
    pub warnings: Vec<String>,
    pub warnings_omitted: usize,
}

impl Validation {
    /// Complete and its checksum verified (byte-swapped counts as verified).
    pub(crate) fn ok(&self) -> bool {
        !self.truncated
            && matches!(
                self.checksum.status,
                ChecksumStatus::Valid | ChecksumStatus::ValidByteSwapped
            )
    }
}

/// Whether SE01 counts the segments from ST to SE as the standard does, LS and LE included, or as
/// some machines do, without them (a real file's SE declares 54 of its 58 lines, its 4 loop markers
/// left out).
fn segment_count_matches(declared: u64, actual: usize, loop_markers: usize) -> bool {
    declared == actual as u64
        || (loop_markers > 0 && declared == actual.saturating_sub(loop_markers) as u64)
}

/// One DXS…DXE block (or what is left of one).
#[derive(Debug, Default)]
pub(crate) struct DexFile<'a> {
    /// The text the file's spans point into (the input without its byte order mark).
    pub input: &'a [u8],
    /// How its text elements are read: UTF-8 unless the file's lines are not valid UTF-8 (see
    /// [`TextEncoding::of`]).
    pub encoding: TextEncoding,
    /// The cells of all records, in the order read.
    pub cells: Vec<Cell>,
    pub first_line: usize,
    pub last_line: usize,
    pub dxs: Option<Record>,
    pub st: Option<Record>,
    pub se: Option<Record>,
    pub dxe: Option<Record>,
    pub id1: Option<Record>,
    pub id4: Option<Record>,
    pub id5: Option<Record>,
    pub cb1: Option<Record>,
    pub va1: Option<Record>,
    pub va2: Option<Record>,
    pub va3: Option<Record>,
    pub ca2: Option<Record>,
    pub da2: Option<Record>,
    pub db2: Option<Record>,
    pub ta2: Option<Record>,
    pub ca1: Option<Record>,
    pub ba1: Option<Record>,
    pub da1: Option<Record>,
    pub db1: Option<Record>,
    pub ca3: Option<Record>,
    pub ca4: Option<Record>,
    pub ca10: Option<Record>,
    pub tube_contents: Vec<Record>,
    pub tubes: Vec<Record>,
    pub products: Vec<Product<'a>>,
    pub events: Vec<Record>,
    pub event_counters: Vec<Record>,
    pub ea3: Option<Record>,
    pub ea7: Option<Record>,
    pub other: Vec<RawSegment<'a>>,
    pub decimal_places: u32,
    /// Filled in when the file is complete.
    pub validation: Validation,
}

/// A parsed text: its files in order and the lines outside all of them.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// Length of the input in bytes.
    pub input_len: usize,
    pub files: Vec<DexFile<'a>>,
    /// The first lines outside every file, as [`RawSegment`]s.
    pub outside_lines: Vec<RawSegment<'a>>,
    pub outside_line_count: usize,
}

pub(crate) fn parse_bytes(raw: &[u8]) -> Result<Parsed<'_>, DexError> {
    if raw.len() > MAX_INPUT_BYTES {
        return Err(DexError::TooLong { bytes: raw.len() });
    }
    let bytes = strip_bom(raw);
    let mut parsed = Parsed {
        input_len: raw.len(),
        files: Vec::new(),
        outside_lines: Vec::new(),
        outside_line_count: 0,
    };
    // Most texts are UTF-8 throughout: then no file needs its own check.
    let all_utf8 = std::str::from_utf8(bytes).is_ok();
    let mut current: Option<FileBuilder> = None;
    let mut elements = Vec::new();
    let mut non_blank_lines = 0usize;
    let mut unread_from_line = None;

    for line in Lines::new(bytes) {
        if line.content.trim_ascii().is_empty() {
            continue;
        }
        non_blank_lines += 1;
        let id = split_into(line.content, &mut elements);
        let starts_file = match id {
            b"DXS" => true,
            // A second transaction set, or a set whose DXS was lost.
            b"ST" => current
                .as_ref()
                .is_none_or(|file| file.st_start.is_some() || file.after_se),
            _ => current.is_none() && is_standard_data_segment(id),
        };
        if starts_file {
            if let Some(file) = current.take() {
                // One DXS may carry several ST...SE sets: a set followed by the next one is complete.
                let next_set_follows = id == b"ST" && file.after_se;
                parsed.files.push(file.finish(next_set_follows));
            }
            if parsed.files.len() == MAX_FILES {
                unread_from_line = Some(line.number);
                break;
            }
            current = Some(FileBuilder::new(bytes, all_utf8, &line, id));
        }
        match current.as_mut() {
            Some(file) => {
                file.segment(&line, id, &elements);
                if id == b"DXE" {
                    if let Some(file) = current.take() {
                        parsed.files.push(file.finish(false));
                    }
                }
            }
            None => {
                parsed.outside_line_count += 1;
                if parsed.outside_lines.len() < MAX_OUTSIDE_LINES {
                    parsed.outside_lines.push(RawSegment {
                        line: line.number,
                        content: line.content,
                    });
                }
            }
        }
    }
    if let Some(file) = current.take() {
        parsed.files.push(file.finish(false));
    }
    match parsed.files.first_mut() {
        None if non_blank_lines == 0 => Err(DexError::Empty),
        None => Err(DexError::NotDex {
            lines: non_blank_lines,
        }),
        Some(first) => {
            // Findings about the whole text go with the file at the top level.
            if parsed.outside_line_count > 0 {
                let message = format!(
                    "{} line(s) outside any DXS...DXE block were not parsed (see outside_lines)",
                    parsed.outside_line_count
                );
                first.validation.warnings.insert(0, message);
            }
            if let Some(line) = unread_from_line {
                let message = format!(
                    "more than {MAX_FILES} DEX files: the text from line {line} on was not read"
                );
                first.validation.warnings.insert(0, message);
            }
            let file_count = parsed.files.len();
            if file_count > 1 {
                let message = format!(
                    "the text holds {file_count} DEX files; the first is at the top level, the others in additional_files"
                );
                parsed.files[0].validation.warnings.insert(0, message);
            }
            Ok(parsed)
        }
    }
}

struct FileBuilder<'a> {
    bytes: &'a [u8],
    all_utf8: bool,
    /// Byte range of the file's lines in `bytes`.
    start: usize,
    end: usize,
    file: DexFile<'a>,
    /// Offset of the first segment after DXS: where the checksum starts when ST is missing.
    data_start: Option<usize>,
    st_start: Option<usize>,
    /// Offset of the G85 line and its declared value.
    g85: Option<(usize, &'a [u8])>,
    counted_segments: usize,
    counted_loop_markers: usize,
    after_se: bool,
    /// EVA-DTS data (a PA2, say) after the SE, which the file takes in too: with no DXE after it,
    /// its last line may be cut off as any set's without its SE.
    data_after_se: bool,
    current_product: Option<usize>,
    product_by_selection: HashMap<&'a [u8], usize>,
    invalid_lines: usize,
    file_warnings: Vec<String>,
    line_warnings: Vec<String>,
    line_warnings_omitted: usize,
}

impl<'a> FileBuilder<'a> {
    fn new(bytes: &'a [u8], all_utf8: bool, line: &Line<'a>, first_id: &[u8]) -> Self {
        let mut builder = FileBuilder {
            bytes,
            all_utf8,
            start: line.start,
            end: line.start,
            file: DexFile {
                input: bytes,
                first_line: line.number,
                ..DexFile::default()
            },
            data_start: None,
            st_start: None,
            g85: None,
            counted_segments: 0,
            counted_loop_markers: 0,
            after_se: false,
            data_after_se: false,
            current_product: None,
            product_by_selection: HashMap::new(),
            invalid_lines: 0,
            file_warnings: Vec::new(),
            line_warnings: Vec::new(),
            line_warnings_omitted: 0,
        };
        if first_id != b"DXS" && first_id != b"ST" {
            builder.file_warnings.push(format!(
                "line {}: file starts without DXS or ST header",
                line.number
            ));
        }
        builder
    }

    fn warn(&mut self, message: String) {
        if self.line_warnings.len() < MAX_LINE_WARNINGS {
            self.line_warnings.push(message);
        } else {
            self.line_warnings_omitted += 1;
        }
    }

    fn segment(&mut self, line: &Line<'a>, id: &[u8], elements: &[&'a [u8]]) {
        self.file.last_line = line.number;
        self.end = line.start + line.content.len();
        if id != b"DXS" && self.data_start.is_none() {
            self.data_start = Some(line.start);
        }
        if !matches!(id, b"DXS" | b"DXE") {
            if self.after_se {
                self.warn(format!("line {}: segment after SE", line.number));
                self.data_after_se |= is_standard_data_segment(id);
            } else {
                self.counted_segments += 1;
                if matches!(id, b"LS" | b"LE") {
                    self.counted_loop_markers += 1;
                }
            }
        }
        if !is_segment_id(id) {
            self.invalid_lines += 1;
            self.warn(format!("line {}: not a DEX segment", line.number));
            return;
        }
        match id {
            b"ST" => {
                self.st_start = Some(line.start);
                self.single(line, elements, &layout::ST, |f| &mut f.st);
            }
            b"SE" => {
                self.after_se = true;
                self.single(line, elements, &layout::SE, |f| &mut f.se);
            }
            b"G85" => match self.g85 {
                Some(_) => self.warn(format!("line {}: second G85 ignored", line.number)),
                None => {
                    let declared = elements.first().map(|e| e.trim_ascii()).unwrap_or_default();
                    self.g85 = Some((line.start, declared));
                }
            },
            b"DXS" => self.single(line, elements, &layout::DXS, |f| &mut f.dxs),
            b"DXE" => self.single(line, elements, &layout::DXE, |f| &mut f.dxe),
            b"ID1" => self.single(line, elements, &layout::ID1, |f| &mut f.id1),
            b"ID4" => self.single(line, elements, &layout::ID4, |f| &mut f.id4),
            b"ID5" => self.single(line, elements, &layout::ID5, |f| &mut f.id5),
            b"CB1" => self.single(line, elements, &layout::CB1, |f| &mut f.cb1),
            b"VA1" => self.single(line, elements, &layout::VA1, |f| &mut f.va1),
            b"VA2" => self.single(line, elements, &layout::VA2, |f| &mut f.va2),
            b"VA3" => self.single(line, elements, &layout::VA3, |f| &mut f.va3),
            b"CA2" => self.single(line, elements, &layout::CA2, |f| &mut f.ca2),
            b"DA2" => self.single(line, elements, &layout::DA2, |f| &mut f.da2),
            b"DB2" => self.single(line, elements, &layout::DB2, |f| &mut f.db2),
            b"TA2" => self.single(line, elements, &layout::TA2, |f| &mut f.ta2),
            b"CA1" => self.single(line, elements, &layout::CA1, |f| &mut f.ca1),
            b"BA1" => self.single(line, elements, &layout::BA1, |f| &mut f.ba1),
            b"DA1" => self.single(line, elements, &layout::DA1, |f| &mut f.da1),
            b"DB1" => self.single(line, elements, &layout::DB1, |f| &mut f.db1),
            b"CA3" => self.single(line, elements, &layout::CA3, |f| &mut f.ca3),
            b"CA4" => self.single(line, elements, &layout::CA4, |f| &mut f.ca4),
            b"CA10" => self.single(line, elements, &layout::CA10, |f| &mut f.ca10),
            b"EA3" => self.single(line, elements, &layout::EA3, |f| &mut f.ea3),
            b"EA7" => self.single(line, elements, &layout::EA7, |f| &mut f.ea7),
            b"CA15" => {
                let record = self.record(&layout::CA15, line, elements);
                self.file.tube_contents.push(record);
            }
            b"CA17" => {
                let record = self.record(&layout::CA17, line, elements);
                self.file.tubes.push(record);
            }
            b"EA1" => {
                let record = self.record(&layout::EA1, line, elements);
                self.file.events.push(record);
            }
            b"EA2" => {
                let record = self.record(&layout::EA2, line, elements);
                self.file.event_counters.push(record);
            }
            b"PA1" => self.start_product(line, elements),
            b"PA2" => self.product_part(line, elements, &layout::PA2, |p| &mut p.pa2),
            b"PA3" => self.product_part(line, elements, &layout::PA3, |p| &mut p.pa3),
            b"PA4" => self.product_part(line, elements, &layout::PA4, |p| &mut p.pa4),
            b"PA5" => self.product_part(line, elements, &layout::PA5, |p| &mut p.pa5),
            b"PA7" => {
                let record = self.record(&layout::PA7, line, elements);
                let index = self.product_for(line, id);
                self.file.products[index].by_payment_device.push(record);
            }
            // Other product segments (PA6, PA8, PA9…) stay with their product, raw.
            _ if id.starts_with(b"PA") => {
                let index = self.product_for(line, id);
                self.file.products[index].other.push(RawSegment {
                    line: line.number,
                    content: line.content,
                });
            }
            // Loop markers carry no data.
            b"LS" | b"LE" => {}
            _ => self.file.other.push(RawSegment {
                line: line.number,
                content: line.content,
            }),
        }
    }

    fn record(
        &mut self,
        layout: &'static Layout,
        line: &Line<'a>,
        elements: &[&'a [u8]],
    ) -> Record {
        // The input is at most MAX_INPUT_BYTES, so cell indexes and line numbers fit 32 bits.
        let first_cell = self.file.cells.len() as u32;
        for (index, (_, kind)) in layout.fields.iter().enumerate() {
            let raw = elements.get(index).copied().unwrap_or_default();
            let cell = self.cell(*kind, raw, layout, index, line.number);
            self.file.cells.push(cell);
        }
        let rest = elements.get(layout.fields.len()..).unwrap_or_default();
        let extra_line = if rest.iter().any(|e| !e.trim_ascii().is_empty()) {
            Span::of(self.bytes, line.content)
        } else {
            Span::default()
        };
        Record {
            layout,
            line: line.number as u32,
            first_cell,
            extra_line,
        }
    }

    fn cell(
        &mut self,
        kind: Kind,
        raw: &'a [u8],
        layout: &Layout,
        index: usize,
        line: usize,
    ) -> Cell {
        let element = || format!("line {line}: {}{:02}", layout.id, index + 1);
        let trimmed = raw.trim_ascii();
        match kind {
            Kind::Text if trimmed.is_empty() => Cell::Null,
            Kind::Text => Cell::Text(Span::of(self.bytes, trimmed)),
            Kind::Count | Kind::Money => match parse_number(raw) {
                Number::Value(n) => Cell::Number(n),
                Number::Absent => Cell::Null,
                Number::NotSupported => {
                    self.warn(format!(
                        "{} is 4294967295 ('not supported'), taken as null",
                        element()
                    ));
                    Cell::Null
                }
                Number::TooLarge => {
                    self.warn(format!(
                        "{} is too large for 64 bits, taken as null",
                        element()
                    ));
                    Cell::Null
                }
                Number::NotNumeric => {
                    self.warn(format!(
                        "{} is not a number ({:?}), taken as null",
                        element(),
                        decode_text(trimmed)
                    ));
                    Cell::Null
                }
            },
            Kind::Date | Kind::Time if trimmed.is_empty() => Cell::Null,
            Kind::Date | Kind::Time => {
                let parsed = if kind == Kind::Date {
                    parse_date(trimmed).map(Cell::Date)
                } else {
                    parse_time(trimmed).map(Cell::Time)
                };
                parsed.unwrap_or_else(|| {
                    let what = if kind == Kind::Date { "date" } else { "time" };
                    self.warn(format!(
                        "{} is not a valid {what} ({:?}), taken as null",
                        element(),
                        decode_text(trimmed)
                    ));
                    Cell::Null
                })
            }
        }
    }

    /// Stores a segment that should occur once; a repeat is reported and dropped.
    fn single(
        &mut self,
        line: &Line<'a>,
        elements: &[&'a [u8]],
        layout: &'static Layout,
        slot: for<'f> fn(&'f mut DexFile<'a>) -> &'f mut Option<Record>,
    ) {
        if let Some(first) = slot(&mut self.file) {
            let message = format!(
                "line {}: repeated {} ignored (first at line {})",
                line.number, layout.id, first.line
            );
            self.warn(message);
            return;
        }
        let record = self.record(layout, line, elements);
        *slot(&mut self.file) = Some(record);
    }

    fn start_product(&mut self, line: &Line<'a>, elements: &[&'a [u8]]) {
        let record = self.record(&layout::PA1, line, elements);
        let selection = match record.cell(&self.file.cells, "selection") {
            Cell::Text(selection) => Some(selection.get(self.bytes)),
            _ => None,
        };
        if let Some((selection, &index)) =
            selection.and_then(|s| Some((s, self.product_by_selection.get(s)?)))
        {
            let message = format!(
                "line {}: selection {:?} repeated (first at line {}); its repeated PA1 is ignored",
                line.number,
                decode_text(selection),
                self.file.products[index].line
            );
            self.warn(message);
            self.current_product = Some(index);
            return;
        }
        let index = self.file.products.len();
        if let Some(selection) = selection {
            self.product_by_selection.insert(selection, index);
        }
        self.file.products.push(Product {
            line: line.number,
            pa1: Some(record),
            ..Product::default()
        });
        self.current_product = Some(index);
    }

    /// The product that PA2…PA9 on this line belong to: the last PA1's.
    fn product_for(&mut self, line: &Line<'a>, id: &[u8]) -> usize {
        if let Some(index) = self.current_product {
            return index;
        }
        self.warn(format!(
            "line {}: {} before any PA1, kept as a product without selection",
            line.number,
            decode_text(id)
        ));
        self.file.products.push(Product {
            line: line.number,
            ..Product::default()
        });
        let index = self.file.products.len() - 1;
        self.current_product = Some(index);
        index
    }

    fn product_part(
        &mut self,
        line: &Line<'a>,
        elements: &[&'a [u8]],
        layout: &'static Layout,
        slot: for<'f> fn(&'f mut Product<'a>) -> &'f mut Option<Record>,
    ) {
        let index = self.product_for(line, layout.id.as_bytes());
        if let Some(first) = slot(&mut self.file.products[index]) {
            let message = format!(
                "line {}: repeated {} for one selection ignored (first at line {})",
                line.number, layout.id, first.line
            );
            self.warn(message);
            return;
        }
        let record = self.record(layout, line, elements);
        *slot(&mut self.file.products[index]) = Some(record);
    }

    /// Completes the file; `next_set_follows` when an ST right after its SE ended it.
    fn finish(mut self, next_set_follows: bool) -> DexFile<'a> {
        let mut findings = std::mem::take(&mut self.file_warnings);
        let file = &mut self.file;

        let has_dxs = file.dxs.is_some();
        let has_se = file.se.is_some();
        let has_dxe = file.dxe.is_some();
        // Cut off where no SE closed the set: its last line may end mid-number. An SE says the set
        // came whole, whatever came of the envelope's DXE after it, unless data the file took in
        // came after the SE, and no DXE or next set after that data.
        let truncated = !has_se || (self.data_after_se && !has_dxe && !next_set_follows);
        if truncated {
            let mut missing: Vec<&str> = Vec::new();
            if self.g85.is_none() {
                missing.push("G85");
            }
            if !has_se {
                missing.push("SE");
            }
            if !has_dxe {
                missing.push("DXE");
            }
            findings.push(format!(
                "truncated: the file ends at line {} without {}",
                file.last_line,
                missing.join(", ")
            ));
        } else if !has_dxs && !has_dxe {
            findings.push("no DXS/DXE communication envelope".to_owned());
        } else if !has_dxs {
            findings.push("no DXS header".to_owned());
        } else if !has_dxe && !next_set_follows {
            findings.push(format!(
                "the file ends at line {} without DXE: the transmission's trailer is missing, its set came whole (SE)",
                file.last_line
            ));
        }
        if file.st.is_none() {
            findings.push("no ST segment".to_owned());
        }

        let checksum = match &self.g85 {
            None => Checksum::default(),
            Some((g85_start, declared)) => {
                let start = self
                    .st_start
                    .or(self.data_start)
                    .unwrap_or(*g85_start)
                    .min(*g85_start);
                let region = self.bytes.get(start..*g85_start).unwrap_or_default();
                check_checksum(region, &decode_text(declared))
            }
        };
        match checksum.status {
            ChecksumStatus::Valid | ChecksumStatus::Missing => {}
            ChecksumStatus::ValidByteSwapped => findings.push(format!(
                "G85 checksum {} is byte-swapped (computed {:04X})",
                checksum.declared.as_deref().unwrap_or_default(),
                checksum.computed.unwrap_or_default()
            )),
            ChecksumStatus::Invalid => findings.push(format!(
                "G85 checksum {} does not match the computed {:04X}",
                checksum.declared.as_deref().unwrap_or_default(),
                checksum.computed.unwrap_or_default()
            )),
            ChecksumStatus::Malformed => findings.push(format!(
                "G85 checksum {:?} is not four hex digits",
                checksum.declared.as_deref().unwrap_or_default()
            )),
        }
        if checksum.status == ChecksumStatus::Missing && !truncated {
            findings.push("no G85 checksum".to_owned());
        }
        if checksum.crlf_restored == Some(true) {
            findings.push("G85 checksum matches only with CR LF line ends restored: the line ends were changed".to_owned());
        }

        let declared_segment_count = file
            .se
            .as_ref()
            .and_then(|se| se.cell(&file.cells, "segment_count").number());
        let actual_segment_count = self.counted_segments;
        let loop_markers = self.counted_loop_markers;
        let segment_count_matches = declared_segment_count
            .map(|declared| segment_count_matches(declared, actual_segment_count, loop_markers));
        if let (Some(declared), Some(false)) = (declared_segment_count, segment_count_matches) {
            findings.push(format!(
                "SE01 declares {declared} segment(s), the file has {actual_segment_count} from ST to SE"
            ));
        }

        let id401 = file
            .id4
            .as_ref()
            .and_then(|id4| id4.cell(&file.cells, "decimal_places").number());
        file.decimal_places = match id401 {
            None => {
                findings.push(format!(
                    "no ID401 decimal places: money assumes {DEFAULT_DECIMAL_PLACES}"
                ));
                DEFAULT_DECIMAL_PLACES
            }
            Some(places) if places <= u64::from(MAX_DECIMAL_PLACES) => places as u32,
            Some(places) => {
                findings.push(format!(
                    "ID401 decimal places {places} is implausible: money assumes {DEFAULT_DECIMAL_PLACES}"
                ));
                DEFAULT_DECIMAL_PLACES
            }
        };
        let reset_above_init: Vec<&Product<'_>> = file
            .products
            .iter()
            .filter(|p| {
                let pa2 = p.pa2.as_ref();
                let count = |name| pa2.and_then(|r: &Record| r.cell(&file.cells, name).number());
                matches!((count("count_since_init"), count("count_since_reset")), (Some(init), Some(reset)) if reset > init)
            })
            .collect();
        if let Some(first) = reset_above_init.first() {
            // Either a counter wrapped or the machine writes its own PA2 layout.
            findings.push(format!(
                "{} selection(s) count more sales since reset than since initialisation in PA2 (first at line {})",
                reset_above_init.len(),
                first.line
            ));
        }
        if self.invalid_lines > 0 {
            findings.push(format!(
                "{} line(s) are not DEX segments",
                self.invalid_lines
            ));
        }
        if !self.all_utf8 {
            let file_bytes = self.bytes.get(self.start..self.end).unwrap_or_default();
            file.encoding = TextEncoding::of(file_bytes);
        }
        if file.encoding == TextEncoding::Windows1252 {
            findings.push("text that is not UTF-8 was decoded as Windows-1252".to_owned());
        }

        findings.append(&mut self.line_warnings);
        file.validation = Validation {
            checksum,
            declared_segment_count,
            actual_segment_count,
            loop_markers,
            segment_count_matches,
            truncated,
            has_dxs,
            has_st: file.st.is_some(),
            has_g85: self.g85.is_some(),
            has_se,
            has_dxe,
            warnings: findings,
            warnings_omitted: self.line_warnings_omitted,
        };
        self.file
    }
}

/// Checks the declared G85 value against `region`, the bytes from ST up to
/// the G85 line: first as received, then with every line ended by CR LF.
fn check_checksum(region: &[u8], declared: &str) -> Checksum {
    let declared_value = (declared.len() == 4 && declared.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(declared, 16).ok())
        .flatten();
    let declared_text = Some(declared.to_owned());
    let as_received = crc16_arc(region);
    if declared_value == Some(as_received) {
        return Checksum {
            status: ChecksumStatus::Valid,
            declared: declared_text,
            computed: Some(as_received),
            crlf_restored: Some(false),
        };
    }
    // Only files whose line ends were changed need the second pass.
    let mut restored = Crc16::default();
    for line in Lines::new(region).filter(|line| !line.content.trim_ascii().is_empty()) {
        restored.update(line.content);
        restored.update(b"\r\n");
    }
    let restored = restored.value();
    let Some(declared_value) = declared_value else {
        return Checksum {
            status: ChecksumStatus::Malformed,
            declared: declared_text,
            computed: Some(restored),
            crlf_restored: None,
        };
    };
    let candidates = [
        (restored, true, ChecksumStatus::Valid),
        (
            as_received.swap_bytes(),
            false,
            ChecksumStatus::ValidByteSwapped,
        ),
        (
            restored.swap_bytes(),
            true,
            ChecksumStatus::ValidByteSwapped,
        ),
    ];
    match candidates.iter().find(|(crc, _, _)| *crc == declared_value) {
        Some(&(_, crlf_restored, status)) => {
            let computed = if crlf_restored { restored } else { as_received };
            Checksum {
                status,
                declared: declared_text,
                computed: Some(computed),
                crlf_restored: Some(crlf_restored),
            }
        }
        None => Checksum {
            status: ChecksumStatus::Invalid,
            declared: declared_text,
            computed: Some(restored),
            crlf_restored: None,
        },
    }
}
