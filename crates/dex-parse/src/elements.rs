//! Reading single elements: text, numbers, dates and times.

use std::borrow::Cow;

/// How the text elements of one file are read, decided once for the whole file: UTF-8 when it is
/// valid UTF-8, otherwise Windows-1252 (one byte per character: Latin-1 with printable characters
/// where Latin-1 has C1 controls, as the files of Windows tools that are not UTF-8 mean them). Not
/// element by element: in a Windows-1252 file, an element such as `JOSÉ’S` is valid UTF-8 by
/// chance (`C9 92` is U+0252), and would be read as `JOSɒS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextEncoding {
    #[default]
    Utf8,
    Windows1252,
}

impl TextEncoding {
    /// The encoding `bytes` are read in: UTF-8 also when they end in the middle of a character, as
    /// a file cut off does (its last element alone is then read as Windows-1252).
    pub fn of(bytes: &[u8]) -> TextEncoding {
        match std::str::from_utf8(bytes) {
            Ok(_) => TextEncoding::Utf8,
            Err(error) if error.error_len().is_none() => TextEncoding::Utf8,
            Err(_) => TextEncoding::Windows1252,
        }
    }

    /// Decodes an element of text in this encoding (one that is not valid UTF-8 as Windows-1252
    /// all the same). NUL bytes become U+FFFD, because PostgreSQL `text` and `jsonb` cannot hold
    /// them.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        let utf8 = match self {
            TextEncoding::Utf8 => std::str::from_utf8(bytes).ok(),
            TextEncoding::Windows1252 => None,
        };
        let text = match utf8 {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(bytes.iter().map(|&b| windows_1252(b)).collect()),
        };
        if text.contains('\0') {
            Cow::Owned(text.replace('\0', "\u{FFFD}"))
        } else {
            text
        }
    }
}

/// Decodes `bytes` on their own: UTF-8 when they are valid UTF-8, otherwise Windows-1252 (what
/// [`TextEncoding::of`] them would choose, checked once).
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    TextEncoding::Utf8.decode(bytes)
}

/// Windows-1252's characters for 0x80 to 0x9F, as the WHATWG Encoding Standard maps them: its five
/// unassigned bytes stay the C1 controls Latin-1 has there. Every other byte is Latin-1's.
const WINDOWS_1252_80_TO_9F: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

fn windows_1252(byte: u8) -> char {
    match byte {
        0x80..=0x9F => WINDOWS_1252_80_TO_9F[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// The value machines write into a 32-bit field they do not support.
pub(crate) const NOT_SUPPORTED: u64 = u32::MAX as u64;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Number {
    Absent,
    Value(u64),
    NotSupported,
    TooLarge,
    NotNumeric,
}

/// Parses an unsigned decimal element; surrounding spaces are ignored.
pub(crate) fn parse_number(raw: &[u8]) -> Number {
    let digits = raw.trim_ascii();
    if digits.is_empty() {
        return Number::Absent;
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Number::NotNumeric;
        }
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    match value {
        _ if overflow => Number::TooLarge,
        NOT_SUPPORTED => Number::NotSupported,
        v => Number::Value(v),
    }
}

fn two_digits(bytes: &[u8]) -> u8 {
    (bytes[0] - b'0') * 10 + (bytes[1] - b'0')
}

/// A calendar date as written, checked for plausible month and day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

/// A time of day; seconds only when the file wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Time {
    pub hour: u8,
    pub minute: u8,
    pub second: Option<u8>,
}

/// `YYMMDD` or `CCYYMMDD`. Two-digit years below 70 are 20xx, the others 19xx.
pub(crate) fn parse_date(raw: &[u8]) -> Option<Date> {
    let digits = raw.trim_ascii();
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (year, rest) = match digits.len() {
        6 => {
            let yy = u16::from(two_digits(digits));
            (if yy < 70 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        8 => (
            u16::from(two_digits(digits)) * 100 + u16::from(two_digits(&digits[2..])),
            &digits[4..],
        ),
        _ => return None,
    };
    let (month, day) = (two_digits(rest), two_digits(&rest[2..]));
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Date { year, month, day })
}

/// `HHMM` or `HHMMSS`.
pub(crate) fn parse_time(raw: &[u8]) -> Option<Time> {
    let digits = raw.trim_ascii();
    if !(digits.len() == 4 || digits.len() == 6) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (hour, minute) = (two_digits(digits), two_digits(&digits[2..]));
    let second = (digits.len() == 6).then(|| two_digits(&digits[4..]));
    // 60 is a leap second.
    (hour <= 23 && minute <= 59 && second.is_none_or(|s| s <= 60)).then_some(Time {
        hour,
        minute,
        second,
    })
}

/// Writes `n` as two ASCII digits (`n` < 100).
fn push_two_digits(out: &mut String, n: u8) {
    out.push(char::from(b'0' + n / 10));
    out.push(char::from(b'0' + n % 10));
}

impl Date {
    /// `YYYY-MM-DD`.
    pub(crate) fn iso(self) -> String {
        let mut out = String::with_capacity(10);
        push_two_digits(&mut out, (self.year / 100) as u8);
        push_two_digits(&mut out, (self.year % 100) as u8);
        out.push('-');
        push_two_digits(&mut out, self.month);
        out.push('-');
        push_two_digits(&mut out, self.day);
        out
    }
}

impl Time {
    /// `HH:MM` or `HH:MM:SS`.
    pub(crate) fn iso(self) -> String {
        let mut out = String::with_capacity(8);
        push_two_digits(&mut out, self.hour);
        out.push(':');
        push_two_digits(&mut out, self.minute);
        if let Some(second) = self.second {
            out.push(':');
            push_two_digits(&mut out, second);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_or_windows_1252_and_never_holds_nul() {
        assert_eq!(decode_text(b"CAF\xC3\xA9"), "CAFé");
        assert_eq!(decode_text(b"CAF\xE9"), "CAFé");
        assert_eq!(decode_text(b"A\0B"), "A\u{FFFD}B");
        assert_eq!(
            decode_text(b"\x80 1,50 \x96 JOE\x92S \x93BEST\x94 \xFF"),
            "€ 1,50 – JOE’S “BEST” ÿ"
        );
        assert_eq!(
            decode_text(b"\x81\x8D\x8F\x90\x9D"),
            "\u{81}\u{8D}\u{8F}\u{90}\u{9D}"
        );
        assert_eq!(
            TextEncoding::Windows1252.decode(b"JOS\xC9\x92S"),
            "JOSÉ’S",
            "valid UTF-8 by chance"
        );
        assert_eq!(
            decode_text(b"JOS\xC9\x92S"),
            "JOSɒS",
            "on its own, it is UTF-8"
        );
        assert_eq!(
            TextEncoding::of(b"CAF\xC3\x89*CR\xC3"),
            TextEncoding::Utf8,
            "cut off"
        );
        assert_eq!(
            TextEncoding::of(b"CAF\xC9*CR\xC3"),
            TextEncoding::Windows1252
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b""), Number::Absent);
        assert_eq!(parse_number(b"  "), Number::Absent);
        assert_eq!(parse_number(b"0001 "), Number::Value(1));
        assert_eq!(
            parse_number(b"18446744073709551615"),
            Number::Value(u64::MAX)
        );
        assert_eq!(parse_number(b"18446744073709551616"), Number::TooLarge);
        assert_eq!(
            parse_number(b"99999999999999999999999999"),
            Number::TooLarge
        );
        assert_eq!(parse_number(b"4294967295"), Number::NotSupported);
        assert_eq!(parse_number(b"-5"), Number::NotNumeric);
        assert_eq!(parse_number(b"1 2"), Number::NotNumeric);
    }

    #[test]
    fn dates_and_times() {
        let iso_date = |raw: &[u8]| parse_date(raw).map(Date::iso);
        let iso_time = |raw: &[u8]| parse_time(raw).map(Time::iso);
        assert_eq!(iso_date(b"231127").as_deref(), Some("2023-11-27"));
        assert_eq!(iso_date(b"980829").as_deref(), Some("1998-08-29"));
        assert_eq!(iso_date(b"20100119").as_deref(), Some("2010-01-19"));
        assert_eq!(parse_date(b"20101319"), None);
        assert_eq!(parse_date(b"000000"), None);
        assert_eq!(parse_date(b"2010011"), None);
        assert_eq!(iso_time(b"1011").as_deref(), Some("10:11"));
        assert_eq!(iso_time(b"230111").as_deref(), Some("23:01:11"));
        assert_eq!(parse_time(b"2460"), None);
        assert_eq!(parse_time(b"12a0"), None);
    }
}
