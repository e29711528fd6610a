//! Splitting raw bytes into physical lines.
//!
//! A line ends at CR LF, at a lone LF or at a lone CR: files that lost their
//! CRs, files with stray bare CRs and old CR-only files all split the same way.

/// One physical line, without its terminator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    /// 1-based line number, counting every terminator.
    pub number: usize,
    /// Byte offset of the line's first byte in the input.
    pub start: usize,
    pub content: &'a [u8],
}

pub(crate) struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
    number: usize,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Lines {
            bytes,
            pos: 0,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let rest = self.bytes.get(self.pos..).filter(|rest| !rest.is_empty())?;
        let start = self.pos;
        self.number += 1;
        let (content, consumed) = match memchr::memchr2(b'\r', b'\n', rest) {
            None => (rest, rest.len()),
            Some(end) => {
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                (&rest[..end], end + if crlf { 2 } else { 1 })
            }
        };
        self.pos += consumed;
        Some(Line {
            number: self.number,
            start,
            content,
        })
    }
}

/// The input without a leading UTF-8 byte order mark.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8]) -> Vec<(usize, usize, &[u8])> {
        Lines::new(bytes)
            .map(|l| (l.number, l.start, l.content))
            .collect()
    }

    #[test]
    fn every_terminator_style_ends_a_line() {
        assert_eq!(
            split(b"a\r\nb\nc\rd"),
            vec![
                (1, 0, &b"a"[..]),
                (2, 3, &b"b"[..]),
                (3, 5, &b"c"[..]),
                (4, 7, &b"d"[..])
            ]
        );
    }

    #[test]
    fn blank_lines_are_counted_and_a_final_terminator_adds_none() {
        assert_eq!(
            split(b"a\r\r\nb\r\n"),
            vec![(1, 0, &b"a"[..]), (2, 2, &b""[..]), (3, 4, &b"b"[..])]
        );
        assert!(split(b"").is_empty());
        assert_eq!(split(b"\n"), vec![(1, 0, &b""[..])]);
    }

    #[test]
    fn bom_is_removed_only_at_the_start() {
        assert_eq!(strip_bom(b"\xEF\xBB\xBFDXS"), b"DXS");
        assert_eq!(strip_bom(b"DXS\xEF\xBB\xBF"), b"DXS\xEF\xBB\xBF");
    }
}
