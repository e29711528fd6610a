//! Writes any `serde::Serialize` value straight into PostgreSQL's `jsonb` binary format.
//!
//! `jsonb_in` turns JSON text into a tree of `JsonbValue`s before it writes the binary form, and
//! that tree takes about fifteen times the text it comes from. Here every container is written as
//! soon as its last member is known, so the peak is about twice the finished `jsonb`. The bytes
//! are those `jsonb_in` would produce for the JSON text `serde_json` writes for the same value
//! (keys sorted and de-duplicated as PostgreSQL does, numbers as `numeric_in` reads them); the
//! extension's tests compare the two byte for byte.
//!
//! The layout is PostgreSQL's `src/include/utils/jsonb.h`: a container is a header word (count
//! and kind), one `JEntry` word per member (type bits and length, or every 32nd member its end
//! offset), then the members' data; numbers and nested containers start 4-byte aligned, the
//! padding counted in their length. An object lists its keys first, then its values, in key order.

#![forbid(unsafe_code)]

mod numeric;

use std::fmt;

use serde::ser::{self, Serialize};

use numeric::{varlena_4b_header, write_numeric};

const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;
const JB_OFFSET_STRIDE: usize = 32;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;

/// The largest container `jsonb` can hold, in bytes (`JENTRY_OFFLENMASK`).
pub const MAX_CONTAINER_BYTES: usize = JENTRY_OFFLENMASK as usize;

/// Why a value could not be written as `jsonb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A container would exceed [`MAX_CONTAINER_BYTES`] (PostgreSQL's SQLSTATE 54000).
    TooLarge { kind: &'static str },
    /// The value has no `jsonb` form (a NUL in a string, a map key that is not a string, ...).
    Unsupported(String),
}

impl Error {
    fn new(message: String) -> Error {
        Error::Unsupported(message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { kind } => write!(
                f,
                "total size of jsonb {kind} elements exceeds the maximum of {MAX_CONTAINER_BYTES} bytes"
            ),
            Error::Unsupported(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error::new(message.to_string())
    }
}

/// The whole `jsonb` datum for `value`: a 4-byte varlena header, then the root container
/// (a scalar is stored as PostgreSQL stores one: a one-element array flagged as scalar).
///
/// Memory: about the size of the result, plus the largest single member being copied into
/// place. A value whose `jsonb` would exceed [`MAX_CONTAINER_BYTES`] fails with
/// [`Error::TooLarge`] as soon as that much has been written, never after.
pub fn to_jsonb<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let budget = Budget::default();
    let root = value.serialize(ValueWriter { budget: &budget })?;
    let mut datum = if root.entry == JENTRY_ISCONTAINER {
        root.bytes.into_vec()
    } else {
        assemble(JB_FARRAY | JB_FSCALAR | 1, vec![root], "array")?
            .bytes
            .into_vec()
    };
    datum.splice(0..0, [0u8; 4]);
    let header = varlena_4b_header(datum.len());
    datum[..4].copy_from_slice(&header.to_ne_bytes());
    Ok(datum)
}

/// Bytes that fit in this many are kept inline: most keys, strings and numbers of a document.
const INLINE: usize = 22;

/// A value's bytes, short ones inline so that writing them allocates nothing.
enum Bytes {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Default for Bytes {
    fn default() -> Bytes {
        Bytes::Inline {
            len: 0,
            data: [0; INLINE],
        }
    }
}

impl Bytes {
    fn from_slice(bytes: &[u8]) -> Bytes {
        let mut out = Bytes::default();
        out.extend(bytes.iter().copied());
        out
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Bytes::Inline { len, data } => data[..usize::from(len)].to_vec(),
            Bytes::Heap(bytes) => bytes,
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, data } => &data[..usize::from(*len)],
            Bytes::Heap(bytes) => bytes,
        }
    }
}

impl Extend<u8> for Bytes {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for byte in iter {
            match self {
                Bytes::Inline { len, data } if usize::from(*len) < INLINE => {
                    data[usize::from(*len)] = byte;
                    *len += 1;
                }
                Bytes::Inline { len, data } => {
                    let mut heap = Vec::with_capacity(2 * INLINE);
                    heap.extend_from_slice(&data[..usize::from(*len)]);
                    heap.push(byte);
                    *self = Bytes::Heap(heap);
                }
                Bytes::Heap(bytes) => bytes.push(byte),
            }
        }
    }
}

/// One written value: its `JEntry` type bits and its data, without any leading alignment.
#[derive(Default)]
struct Encoded {
    entry: u32,
    bytes: Bytes,
}

impl Encoded {
    fn scalar(entry: u32) -> Encoded {
        Encoded {
            entry,
            bytes: Bytes::default(),
        }
    }

    fn container(bytes: Vec<u8>) -> Encoded {
        Encoded {
            entry: JENTRY_ISCONTAINER,
            bytes: Bytes::Heap(bytes),
        }
    }

    fn string(text: &str) -> Result<Encoded, Error> {
        if text.contains('\0') {
            return Err(Error::new(
                "\\u0000 cannot be converted to text in jsonb".to_string(),
            ));
        }
        Ok(Encoded {
            entry: JENTRY_ISSTRING,
            bytes: Bytes::from_slice(text.as_bytes()),
        })
    }

    fn number(text: &str) -> Result<Encoded, Error> {
        let mut bytes = Bytes::default();
        write_numeric(text, &mut bytes)?;
        Ok(Encoded {
            entry: JENTRY_ISNUMERIC,
            bytes,
        })
    }

    /// Numbers and containers start on a 4-byte boundary.
    fn is_aligned(&self) -> bool {
        self.entry == JENTRY_ISNUMERIC || self.entry == JENTRY_ISCONTAINER
    }
}

/// Bytes of the result written so far (data, headers, `JEntry`s, padding), counted once each as
/// they are first written, so that an oversized value fails early instead of at the root.
#[derive(Default)]
struct Budget {
    written: std::cell::Cell<usize>,
}

impl Budget {
    fn spend(&self, bytes: usize, kind: &'static str) -> Result<(), Error> {
        let written = self.written.get().saturating_add(bytes);
        self.written.set(written);
        if written > MAX_CONTAINER_BYTES {
            return Err(Error::TooLarge { kind });
        }
        Ok(())
    }

    /// A scalar's data, with room for its alignment.
    fn scalar(&self, encoded: Encoded) -> Result<Encoded, Error> {
        self.spend(encoded.bytes.len() + 4 + 3, "value")?;
        Ok(encoded)
    }
}

/// Every 32nd member's `JEntry` holds the end offset of its data, the others their length.
fn entry(index: usize, type_bits: u32, len: usize, total: usize) -> u32 {
    if index % JB_OFFSET_STRIDE == 0 {
        type_bits | total as u32 | JENTRY_HAS_OFF
    } else {
        type_bits | len as u32
    }
}

/// Above this, a container is built around its largest member's buffer instead of in a new one,
/// so that a large value is never held twice.
const LARGE_MEMBER: usize = 64 << 10;

/// Writes a container: `header`, one `JEntry` per member, then the members in order, the way
/// PostgreSQL's `convertJsonbArray` and `convertJsonbObject` do. Callers start it 4-byte aligned.
fn assemble(header: u32, mut members: Vec<Encoded>, kind: &'static str) -> Result<Encoded, Error> {
    let largest = members
        .iter()
        .enumerate()
        .max_by_key(|(_, member)| member.bytes.len())
        .filter(|(_, member)| member.bytes.len() >= LARGE_MEMBER)
        .map(|(index, _)| index);
    let capacity = 4 + 4 * members.len() + members.iter().map(|m| m.bytes.len() + 3).sum::<usize>();
    let mut front = Vec::with_capacity(match largest {
        Some(index) => capacity - members[index].bytes.len(),
        None => capacity,
    });
    front.extend_from_slice(&header.to_ne_bytes());
    front.resize(4 + 4 * members.len(), 0);
    // Where the data written so far would end in the finished container, the largest member's
    // bytes counted though they are not in `front`.
    let mut position = front.len();
    let mut total = 0usize;
    let mut back = Vec::new();
    for (index, member) in members.iter().enumerate() {
        let padding = if member.is_aligned() {
            position.next_multiple_of(4) - position
        } else {
            0
        };
        let len = padding + member.bytes.len();
        position += len;
        total += len;
        if position > MAX_CONTAINER_BYTES {
            return Err(Error::TooLarge { kind });
        }
        let target = match largest {
            Some(large) if index > large => &mut back,
            _ => &mut front,
        };
        target.resize(target.len() + padding, 0);
        if Some(index) != largest {
            target.extend_from_slice(&member.bytes);
        }
        let entry = entry(index, member.entry, len, total);
        front[4 + 4 * index..8 + 4 * index].copy_from_slice(&entry.to_ne_bytes());
    }
    let bytes = match largest {
        None => front,
        Some(index) => {
            let mut bytes = std::mem::take(&mut members[index].bytes).into_vec();
            bytes.splice(0..0, front);
            bytes.extend_from_slice(&back);
            bytes
        }
    };
    Ok(Encoded::container(bytes))
}

fn count(members: usize, kind: &'static str) -> Result<u32, Error> {
    u32::try_from(members)
        .ok()
        .filter(|&n| n <= JENTRY_OFFLENMASK)
        .ok_or(Error::TooLarge { kind })
}

/// Keys sorted as `jsonb` sorts them (shorter first, then bytewise); of equal keys the last
/// written wins, as in `jsonb_in`.
fn object(mut pairs: Vec<(Encoded, Encoded)>) -> Result<Encoded, Error> {
    let sorted = pairs
        .windows(2)
        .all(|w| key_order(&w[0].0, &w[1].0).is_lt());
    if !sorted {
        pairs.reverse();
        pairs.sort_by(|(a, _), (b, _)| key_order(a, b));
        pairs.dedup_by(|later, earlier| *later.0.bytes == *earlier.0.bytes);
    }
    let header = JB_FOBJECT | count(pairs.len(), "object")?;
    let mut members = Vec::with_capacity(2 * pairs.len());
    for (key, _) in &mut pairs {
        members.push(std::mem::take(key));
    }
    members.extend(pairs.into_iter().map(|(_, value)| value));
    assemble(header, members, "object")
}

/// `jsonb`'s key order: shorter first, then bytewise.
fn key_order(a: &Encoded, b: &Encoded) -> std::cmp::Ordering {
    a.bytes
        .len()
        .cmp(&b.bytes.len())
        .then_with(|| (*a.bytes).cmp(&*b.bytes))
}

fn unsigned(value: u64) -> Result<Encoded, Error> {
    let mut digits = itoa_buffer();
    Encoded::number(format_u64(value, &mut digits))
}

fn signed(value: i64) -> Result<Encoded, Error> {
    if value >= 0 {
        return unsigned(value.unsigned_abs());
    }
    let mut digits = itoa_buffer();
    let magnitude = format_u64(value.unsigned_abs(), &mut digits);
    Encoded::number(&format!("-{magnitude}"))
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

fn format_u64(mut value: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or("0")
}

/// Non-finite floats become null, as `serde_json` writes them.
fn float(text: Option<&str>) -> Result<Encoded, Error> {
    match text {
        Some(text) => Encoded::number(text),
        None => Ok(Encoded::scalar(JENTRY_ISNULL)),
    }
}

/// Writes one value; every byte it writes is charged to the budget.
#[derive(Clone, Copy)]
struct ValueWriter<'b> {
    budget: &'b Budget,
}

impl<'b> ser::Serializer for ValueWriter<'b> {
    type Ok = Encoded;
    type Error = Error;
    type SerializeSeq = ArrayWriter<'b>;
    type SerializeTuple = ArrayWriter<'b>;
    type SerializeTupleStruct = ArrayWriter<'b>;
    type SerializeTupleVariant = VariantWriter<ArrayWriter<'b>>;
    type SerializeMap = ObjectWriter<'b>;
    type SerializeStruct = ObjectWriter<'b>;
    type SerializeStructVariant = VariantWriter<ObjectWriter<'b>>;

    fn serialize_bool(self, v: bool) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::scalar(if v {
            JENTRY_ISBOOL_TRUE
        } else {
            JENTRY_ISBOOL_FALSE
        }))
    }
    fn serialize_i8(self, v: i8) -> Result<Encoded, Error> {
        self.budget.scalar(signed(v.into())?)
    }
    fn serialize_i16(self, v: i16) -> Result<Encoded, Error> {
        self.budget.scalar(signed(v.into())?)
    }
    fn serialize_i32(self, v: i32) -> Result<Encoded, Error> {
        self.budget.scalar(signed(v.into())?)
    }
    fn serialize_i64(self, v: i64) -> Result<Encoded, Error> {
        self.budget.scalar(signed(v)?)
    }
    fn serialize_i128(self, v: i128) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::number(&v.to_string())?)
    }
    fn serialize_u8(self, v: u8) -> Result<Encoded, Error> {
        self.budget.scalar(unsigned(v.into())?)
    }
    fn serialize_u16(self, v: u16) -> Result<Encoded, Error> {
        self.budget.scalar(unsigned(v.into())?)
    }
    fn serialize_u32(self, v: u32) -> Result<Encoded, Error> {
        self.budget.scalar(unsigned(v.into())?)
    }
    fn serialize_u64(self, v: u64) -> Result<Encoded, Error> {
        self.budget.scalar(unsigned(v)?)
    }
    fn serialize_u128(self, v: u128) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::number(&v.to_string())?)
    }
    fn serialize_f32(self, v: f32) -> Result<Encoded, Error> {
        let mut buffer = ryu::Buffer::new();
        self.budget
            .scalar(float(v.is_finite().then(|| buffer.format_finite(v)))?)
    }
    fn serialize_f64(self, v: f64) -> Result<Encoded, Error> {
        let mut buffer = ryu::Buffer::new();
        self.budget
            .scalar(float(v.is_finite().then(|| buffer.format_finite(v)))?)
    }
    fn serialize_char(self, v: char) -> Result<Encoded, Error> {
        self.budget
            .scalar(Encoded::string(v.encode_utf8(&mut [0; 4]))?)
    }
    fn serialize_str(self, v: &str) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::string(v)?)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Encoded, Error> {
        use ser::SerializeSeq;
        let mut array = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            array.serialize_element(byte)?;
        }
        array.end()
    }
    fn serialize_none(self) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::scalar(JENTRY_ISNULL))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Encoded, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::scalar(JENTRY_ISNULL))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::scalar(JENTRY_ISNULL))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Encoded, Error> {
        self.budget.scalar(Encoded::string(variant)?)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Encoded, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Encoded, Error> {
        self.budget.spend(4 + 4 + 3 + 8 + variant.len(), "object")?;
        object(vec![(Encoded::string(variant)?, value.serialize(self)?)])
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<ArrayWriter<'b>, Error> {
        // Its header, and its own JEntry and alignment in its parent.
        self.budget.spend(4 + 4 + 3, "array")?;
        Ok(ArrayWriter {
            writer: self,
            entries: Vec::with_capacity(len.unwrap_or(0)),
            data: Vec::new(),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<ArrayWriter<'b>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<ArrayWriter<'b>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantWriter<ArrayWriter<'b>>, Error> {
        self.budget.spend(4 + 4 + 3 + 8 + variant.len(), "object")?;
        Ok(VariantWriter {
            variant,
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<ObjectWriter<'b>, Error> {
        self.budget.spend(4 + 4 + 3, "object")?;
        Ok(ObjectWriter {
            writer: self,
            pairs: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<ObjectWriter<'b>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantWriter<ObjectWriter<'b>>, Error> {
        self.budget.spend(4 + 4 + 3 + 8 + variant.len(), "object")?;
        Ok(VariantWriter {
            variant,
            inner: self.serialize_map(Some(len))?,
        })
    }
}

/// An array written as its members come: their data into one buffer (aligned relative to it,
/// which is aligned in the result), their `JEntry`s aside, the two joined at the end.
struct ArrayWriter<'b> {
    writer: ValueWriter<'b>,
    entries: Vec<u32>,
    data: Vec<u8>,
}

impl ser::SerializeSeq for ArrayWriter<'_> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let member = value.serialize(self.writer)?;
        let start = self.data.len();
        if member.is_aligned() {
            self.data.resize(start.next_multiple_of(4), 0);
        }
        self.data.extend_from_slice(&member.bytes);
        let len = self.data.len() - start;
        if 4 + 4 * (self.entries.len() + 1) + self.data.len() > MAX_CONTAINER_BYTES {
            return Err(Error::TooLarge { kind: "array" });
        }
        self.entries.push(entry(
            self.entries.len(),
            member.entry,
            len,
            self.data.len(),
        ));
        Ok(())
    }
    fn end(self) -> Result<Encoded, Error> {
        let header = JB_FARRAY | count(self.entries.len(), "array")?;
        let mut front = Vec::with_capacity(4 + 4 * self.entries.len());
        front.extend_from_slice(&header.to_ne_bytes());
        for entry in &self.entries {
            front.extend_from_slice(&entry.to_ne_bytes());
        }
        let mut bytes = self.data;
        bytes.splice(0..0, front);
        Ok(Encoded::container(bytes))
    }
}

impl ser::SerializeTuple for ArrayWriter<'_> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Encoded, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for ArrayWriter<'_> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Encoded, Error> {
        ser::SerializeSeq::end(self)
    }
}

struct ObjectWriter<'b> {
    writer: ValueWriter<'b>,
    pairs: Vec<(Encoded, Encoded)>,
    key: Option<Encoded>,
}

impl ser::SerializeMap for ObjectWriter<'_> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let key = key.serialize(KeyWriter)?;
        self.writer.budget.spend(key.bytes.len() + 4, "object")?;
        self.key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::new("a map value without its key".to_string()))?;
        self.pairs.push((key, value.serialize(self.writer)?));
        Ok(())
    }
    fn end(self) -> Result<Encoded, Error> {
        object(self.pairs)
    }
}

impl ser::SerializeStruct for ObjectWriter<'_> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.writer.budget.spend(key.len() + 4, "object")?;
        self.pairs
            .push((Encoded::string(key)?, value.serialize(self.writer)?));
        Ok(())
    }
    fn end(self) -> Result<Encoded, Error> {
        object(self.pairs)
    }
}

/// `{"variant": inner}`, as `serde_json` writes enum variants with fields.
struct VariantWriter<W> {
    variant: &'static str,
    inner: W,
}

impl ser::SerializeTupleVariant for VariantWriter<ArrayWriter<'_>> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.inner, value)
    }
    fn end(self) -> Result<Encoded, Error> {
        object(vec![(
            Encoded::string(self.variant)?,
            ser::SerializeSeq::end(self.inner)?,
        )])
    }
}

impl ser::SerializeStructVariant for VariantWriter<ObjectWriter<'_>> {
    type Ok = Encoded;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Result<Encoded, Error> {
        object(vec![(
            Encoded::string(self.variant)?,
            ser::SerializeStruct::end(self.inner)?,
        )])
    }
}

/// Map keys: strings, and numbers, booleans and chars written as strings (as `serde_json` does).
struct KeyWriter;

fn key_only<T>() -> Result<T, Error> {
    Err(Error::new(
        "a jsonb object key must be a string".to_string(),
    ))
}

impl ser::Serializer for KeyWriter {
    type Ok = Encoded;
    type Error = Error;
    type SerializeSeq = ser::Impossible<Encoded, Error>;
    type SerializeTuple = ser::Impossible<Encoded, Error>;
    type SerializeTupleStruct = ser::Impossible<Encoded, Error>;
    type SerializeTupleVariant = ser::Impossible<Encoded, Error>;
    type SerializeMap = ser::Impossible<Encoded, Error>;
    type SerializeStruct = ser::Impossible<Encoded, Error>;
    type SerializeStructVariant = ser::Impossible<Encoded, Error>;

    fn serialize_str(self, v: &str) -> Result<Encoded, Error> {
        Encoded::string(v)
    }
    fn serialize_char(self, v: char) -> Result<Encoded, Error> {
        Encoded::string(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> Result<Encoded, Error> {
        Encoded::string(if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<Encoded, Error> {
        Encoded::string(&v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Encoded, Error> {
        Encoded::string(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Encoded, Error> {
        value.serialize(self)
    }
    fn serialize_f32(self, _v: f32) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_f64(self, _v: f64) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_none(self) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_unit(self) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Encoded, Error> {
        key_only()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        key_only()
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        key_only()
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        key_only()
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        key_only()
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        key_only()
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        key_only()
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        key_only()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|w| {
                let mut word = [0u8; 4];
                word[..w.len()].copy_from_slice(w);
                u32::from_ne_bytes(word)
            })
            .collect()
    }

    #[test]
    fn the_datum_starts_with_its_varlena_length() {
        let datum = to_jsonb(&json!({})).unwrap();
        assert_eq!(datum.len(), 8);
        assert_eq!(words(&datum), vec![varlena_4b_header(8), JB_FOBJECT]);
    }

    #[test]
    fn a_scalar_is_a_one_element_array_flagged_scalar() {
        let datum = to_jsonb(&json!(true)).unwrap();
        assert_eq!(
            words(&datum[4..]),
            vec![
                JB_FARRAY | JB_FSCALAR | 1,
                JENTRY_ISBOOL_TRUE | JENTRY_HAS_OFF
            ]
        );
    }

    #[test]
    fn object_keys_are_sorted_shorter_first_and_the_last_duplicate_wins() {
        let pairs: Vec<(&str, i32)> = vec![("bb", 1), ("a", 2), ("ab", 3), ("a", 4)];
        let map = Pairs(pairs);
        let datum = to_jsonb(&map).unwrap();
        let container = &datum[4..];
        assert_eq!(words(&container[..4])[0], JB_FOBJECT | 3);
        // Keys "a", "ab", "bb" follow the six JEntries.
        assert_eq!(&container[28..33], b"aabbb");
        // "a"'s value is the numeric 4, the last one written.
        let numeric_start = 36;
        assert_eq!(
            &container[numeric_start + 4..numeric_start + 8],
            &[0, 0x80, 4, 0]
        );
    }

    /// A map that writes its pairs in the given order, duplicates included.
    struct Pairs(Vec<(&'static str, i32)>);

    impl Serialize for Pairs {
        fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (key, value) in &self.0 {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }

    #[test]
    fn every_32nd_entry_holds_an_end_offset() {
        let strings: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
        let datum = to_jsonb(&strings).unwrap();
        let entries = words(&datum[8..8 + 4 * 40]);
        assert_eq!(entries[0], JENTRY_HAS_OFF | 3);
        assert_eq!(entries[1], 3);
        assert_eq!(entries[32], JENTRY_HAS_OFF | (33 * 3));
        assert_eq!(entries[33], 3);
    }

    #[test]
    fn numbers_and_nested_containers_are_aligned_and_count_their_padding() {
        let datum = to_jsonb(&json!(["x", 1])).unwrap();
        let container = &datum[4..];
        // header, two JEntries, "x" at 12, padding to 16, then the numeric (4 + 2 + 2 bytes).
        let entries = words(&container[4..12]);
        assert_eq!(entries[0], JENTRY_ISSTRING | JENTRY_HAS_OFF | 1);
        assert_eq!(entries[1], JENTRY_ISNUMERIC | (3 + 8));
        assert_eq!(container.len(), 16 + 8);
    }

    #[test]
    fn non_finite_floats_are_null_and_nul_is_refused() {
        let datum = to_jsonb(&f64::NAN).unwrap();
        assert_eq!(words(&datum[8..12])[0], JENTRY_ISNULL | JENTRY_HAS_OFF);
        assert!(matches!(to_jsonb("a\0b"), Err(Error::Unsupported(_))));
    }
}
