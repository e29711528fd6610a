//! Segments: one non-blank line split at `*` into an id and its elements.

use crate::lines::{strip_bom, Lines};

/// One segment as written in the file.
///
/// `elements[0]` is the segment's first element (e.g. `PA101`), so SQL's
/// 1-based `elements[1]` is element 01. Elements are exactly as in the file
/// (spaces kept); only the line terminator is removed. The id is trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 1-based physical line number in the input.
    pub line: usize,
    pub id: &'a [u8],
    pub elements: Vec<&'a [u8]>,
}

/// Splits a line into its trimmed id and its elements, reusing `elements`.
pub(crate) fn split_into<'a>(content: &'a [u8], elements: &mut Vec<&'a [u8]>) -> &'a [u8] {
    elements.clear();
    let mut parts = content.split(|&b| b == b'*');
    let id = parts.next().unwrap_or_default().trim_ascii();
    elements.extend(parts);
    id
}

/// Whether `id` can be a segment id at all: a letter, then up to seven
/// letters or digits (`ST`, `G85`, `CA17`).
pub(crate) fn is_segment_id(id: &[u8]) -> bool {
    matches!(id.first(), Some(b) if b.is_ascii_alphabetic())
        && id.len() <= 8
        && id.iter().all(u8::is_ascii_alphanumeric)
}

/// Whether `id` is an EVA-DTS audit data segment (two capital letters of a
/// standard group, then digits). Such a line outside any DXS block starts a
/// block of its own; vendor lines (`MC5`, manufacturer-specific `MA5`) do not.
pub(crate) fn is_standard_data_segment(id: &[u8]) -> bool {
    const GROUPS: [&[u8; 2]; 14] = [
        b"AM", b"BA", b"CA", b"CB", b"DA", b"DB", b"EA", b"ID", b"LA", b"PA", b"PP", b"SA", b"TA",
        b"VA",
    ];
    (3..=4).contains(&id.len())
        && GROUPS.iter().any(|group| id.starts_with(*group))
        && id[2..].iter().all(u8::is_ascii_digit)
}

/// Iterator over the segments of a raw text; see [`segments`].
pub struct Segments<'a> {
    lines: Lines<'a>,
}

/// Every non-blank line of `raw` as a [`Segment`], in order, whether or
/// not it lies inside a DXS…DXE block. Never fails: this is the raw view
/// behind `dex_segments()`.
pub fn segments(raw: &[u8]) -> Segments<'_> {
    Segments {
        lines: Lines::new(strip_bom(raw)),
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let line = self
            .lines
            .find(|line| !line.content.trim_ascii().is_empty())?;
        let mut elements = Vec::new();
        let id = split_into(line.content, &mut elements);
        Some(Segment {
            line: line.number,
            id,
            elements,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ids_and_keeps_empty_elements() {
        let all: Vec<_> = segments(b"\r\n PA1*1*500** \r\nPA2***88*34800\nDXE").collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].line, 2);
        assert_eq!(all[0].id, b"PA1");
        assert_eq!(all[0].elements, vec![&b"1"[..], b"500", b"", b" "]);
        assert_eq!(all[1].elements, vec![&b""[..], b"", b"88", b"34800"]);
        assert_eq!(all[2].id, b"DXE");
        assert!(all[2].elements.is_empty());
    }

    #[test]
    fn segment_id_shapes() {
        assert!(is_segment_id(b"G85"));
        assert!(is_segment_id(b"ST"));
        assert!(!is_segment_id(b"Slot 010: Sprite: 25"));
        assert!(!is_segment_id(b""));
        assert!(!is_segment_id(b"1A"));
        assert!(is_standard_data_segment(b"VA1"));
        assert!(is_standard_data_segment(b"CA17"));
        assert!(!is_standard_data_segment(b"MC5"));
        assert!(!is_standard_data_segment(b"MA5"));
        assert!(!is_standard_data_segment(b"PA"));
        assert!(!is_standard_data_segment(b"G85"));
    }
}
