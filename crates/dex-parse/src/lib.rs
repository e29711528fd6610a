#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod crc;
mod elements;
mod json;
mod layout;
mod lines;
mod parser;
mod sales;
mod segment;

use std::fmt;

use serde_json::Value;

pub use elements::{decode_text, TextEncoding};
pub use sales::{sales, Audit, Counters, Money, Product, Sale, SaleStatus, SalesError};
pub use segment::{segments, Segment, Segments};

/// Why a text could not be read as DEX at all. Anything that looks like DEX,
/// however damaged, parses instead, with its problems in `validation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DexError {
    /// The input is empty or holds only whitespace.
    Empty,
    /// No DXS, ST or EVA-DTS data segment in any of the input's `lines`
    /// non-blank lines.
    NotDex { lines: usize },
    /// The input is longer than 1 GiB, the most a PostgreSQL value holds.
    TooLong { bytes: usize },
}

impl fmt::Display for DexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DexError::Empty => write!(f, "not a DEX file: the input is empty"),
            DexError::NotDex { lines } => write!(
                f,
                "not a DEX file: none of its {lines} non-blank line(s) is a DXS, ST or EVA-DTS data segment"
            ),
            DexError::TooLong { bytes } => write!(
                f,
                "the input is {bytes} bytes; at most {} are read",
                parser::MAX_INPUT_BYTES
            ),
        }
    }
}

impl std::error::Error for DexError {}

/// A parsed text: one or more DEX files and the lines around them. It
/// borrows the input; text is decoded when the JSON is written.
#[derive(Debug)]
pub struct Dex<'a> {
    parsed: parser::Parsed<'a>,
}

impl Dex<'_> {
    /// How many DEX files (DXS…DXE blocks, or what is left of them) the text holds.
    pub fn file_count(&self) -> usize {
        self.parsed.files.len()
    }

    /// Whether every file in the text is complete and its checksum verified.
    pub fn is_ok(&self) -> bool {
        self.parsed.files.iter().all(|f| f.validation.ok())
    }

    /// The whole result, in the shape described in the crate documentation.
    pub fn to_json(&self) -> Value {
        to_value(&json::DocumentOut(&self.parsed))
    }

    /// [`Dex::to_json`] as JSON text, written without building a `Value`.
    pub fn to_json_string(&self) -> String {
        // The JSON is several times larger than the DEX text it comes from.
        let mut out = Vec::with_capacity(self.parsed.input_len.saturating_mul(4));
        match serde_json::to_writer(&mut out, &json::DocumentOut(&self.parsed)) {
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Only the `validation` objects (the first file's at the top level),
    /// with `additional_files` and `outside_lines` as in [`Dex::to_json`].
    pub fn validation_json(&self) -> Value {
        to_value(&self.validation())
    }

    /// [`Dex::validation_json`] for any serde serializer.
    pub fn validation(&self) -> impl serde::Serialize + '_ {
        json::ValidationDocumentOut(&self.parsed)
    }
}

/// The whole result for any serde serializer: the same as [`Dex::to_json`].
impl serde::Serialize for Dex<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json::DocumentOut(&self.parsed).serialize(serializer)
    }
}

// Serialising the output cannot fail: every map key is a string, every
// number finite and every string valid UTF-8. The fallbacks only keep the
// signatures free of `Result`.
fn to_value(output: &impl serde::Serialize) -> Value {
    serde_json::to_value(output).unwrap_or(Value::Null)
}

/// Parses DEX text given as `&str`, `&[u8]`, `&String` or `&Vec<u8>`.
///
/// Time and memory are linear in the input's size; no input panics.
pub fn parse<T: AsRef<[u8]> + ?Sized>(raw: &T) -> Result<Dex<'_>, DexError> {
    parser::parse_bytes(raw.as_ref()).map(|parsed| Dex { parsed })
}

/// [`parse`] straight to a JSON `Value`.
pub fn parse_json(raw: impl AsRef<[u8]>) -> Result<Value, DexError> {
    parse(raw.as_ref()).map(|dex| dex.to_json())
}

/// [`parse`] straight to JSON text.
pub fn parse_json_string(raw: impl AsRef<[u8]>) -> Result<String, DexError> {
    parse(raw.as_ref()).map(|dex| dex.to_json_string())
}

/// [`parse`] to the validation JSON only.
pub fn validate(raw: impl AsRef<[u8]>) -> Result<Value, DexError> {
    parse(raw.as_ref()).map(|dex| dex.validation_json())
}
