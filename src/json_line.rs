//! Compact JSON, byte for byte what `serde_json::to_writer` writes, into a
//! `Vec<u8>`, with strings escaped a word at a time.
//!
//! Why not serde_json itself: it looks up every byte of every string in a
//! table, and a finding is ~1.8 KB of strings (~80 keys and values). That
//! loop was 14% of a finding's userspace cost; here a string with nothing to
//! escape (nearly all of them) is checked 8 bytes per step and copied once.
//! Every serde type maps to the JSON serde_json writes for it (tests compare
//! the two on the golden findings and on every escape class).
//!
//! A finding's line is written by hand (`classify::finding::json`) with this
//! module's string writer; this module writes the parts that keep serde (pod
//! facts once a container, configuration findings, other records).

use serde::ser::{self, Serialize};
use std::fmt;

/// Why a value could not be written (only what serde_json refuses too:
/// a map key that is not a string or a number, or a type's own error).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Appends `v` as compact JSON to `out`. On error `out` may hold part of it.
pub fn append<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    v.serialize(&mut Writer { out })
}

/// `v`'s JSON object without its braces (`"a":1,"b":2`), to be copied into
/// others (`classify::finding::SharedPodFacts`); None when `v` is not an object.
pub fn entries_of<T: Serialize + ?Sized>(v: &T) -> Option<Box<str>> {
    let mut out = Vec::with_capacity(256);
    append_entries(&mut out, v).ok()?;
    // Only UTF-8 was written: &str copied whole or cut at ASCII bytes.
    let s = String::from_utf8(out).ok()?;
    Some(s.strip_prefix(',').unwrap_or_default().into())
}

/// Appends `v`'s JSON entries after a comma (`,"a":1,"b":2`), as serde
/// writes a struct flattened into another after its first key; nothing when
/// `v` is an empty object. An error if `v` is not an object.
pub fn append_entries<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    let start = out.len();
    append(out, v)?;
    if out.len() < start + 2 || out[start] != b'{' || out.last() != Some(&b'}') {
        out.truncate(start);
        return Err(Error("flattened entries must be an object".into()));
    }
    out.pop();
    if out.len() == start + 1 {
        out.truncate(start);
    } else {
        out[start] = b',';
    }
    Ok(())
}

/// `v` as a compact JSON string.
pub fn to_string<T: Serialize + ?Sized>(v: &T) -> Result<String, Error> {
    let mut out = Vec::with_capacity(256);
    append(&mut out, v)?;
    // Only UTF-8 was written: &str copied whole or cut at ASCII bytes.
    String::from_utf8(out).map_err(|e| Error(e.to_string()))
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is a control character, `"` or `\\` (the
/// subtraction's borrow can only flag bytes above a true one: the answer for
/// the word is exact).
#[inline]
fn needs_escape(w: u64) -> bool {
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    (control | zero(w ^ (LO * b'"' as u64)) | zero(w ^ (LO * b'\\' as u64))) != 0
}

#[inline]
fn escape_of(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0..0x20 => return Some(&[]), // \u00XX, written by the caller
        _ => return None,
    })
}

/// Whether any byte of `b` must be escaped: 16 bytes per step with SSE2
/// (part of every x86_64 CPU), the last 16 read again overlapping; shorter
/// strings a word at a time.
#[cfg(target_arch = "x86_64")]
#[inline]
fn any_escape(b: &[u8]) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    if b.len() < 16 {
        return any_escape_words(b);
    }
    // SAFETY: SSE2 is in the x86_64 baseline; every load reads 16 bytes inside
    // `b` (unaligned loads allowed), the last one at `len - 16 >= 0`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let control = _mm_set1_epi8(0x1f);
        let hit = |at: usize| {
            let v = _mm_loadu_si128(b.as_ptr().add(at).cast::<__m128i>());
            // min(v, 0x1f) == v exactly for the bytes 0x00-0x1f (unsigned).
            let m = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
            );
            _mm_movemask_epi8(m) != 0
        };
        let mut at = 0;
        while at + 16 <= b.len() {
            if hit(at) {
                return true;
            }
            at += 16;
        }
        at != b.len() && hit(b.len() - 16)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn any_escape(b: &[u8]) -> bool {
    any_escape_words(b)
}

/// Whether any byte of `b` must be escaped, 8 bytes per step.
#[inline]
fn any_escape_words(b: &[u8]) -> bool {
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or_default());
    let half = |c: &[u8]| u64::from(u32::from_le_bytes(c.try_into().unwrap_or_default()));
    let n = b.len();
    // The tail is read with loads that overlap bytes already seen (copying
    // it into a padded word stalled on store forwarding: 40% of the time).
    let tail = match n {
        0 => return false,
        1..=3 => u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16 | (LO * u64::from(b'a')) << 24,
        4..=7 => half(&b[..4]) | half(&b[n - 4..]) << 32,
        _ => word(&b[n - 8..]),
    };
    needs_escape(tail) || b.chunks_exact(8).any(|c| needs_escape(word(c)))
}

/// Writes `s` quoted and escaped as serde_json does (`\u00XX` in lower-case hex).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if any_escape(bytes) {
        out.push(b'"');
        write_escaped(out, bytes);
        out.push(b'"');
        return;
    }
    // One capacity check for the quotes and the text (three pushes checked
    // three times: a finding writes ~80 strings).
    out.reserve(bytes.len() + 2);
    let len = out.len();
    // SAFETY: `reserve` made room for `bytes.len() + 2` bytes past `len`;
    // they are all written before `set_len`, and `bytes` cannot overlap `out`.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        dst.write(b'"');
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(1), bytes.len());
        dst.add(bytes.len() + 1).write(b'"');
        out.set_len(len + bytes.len() + 2);
    }
}

/// The rare string with something to escape, a byte at a time.
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let Some(esc) = escape_of(b) else { continue };
        out.extend_from_slice(&bytes[run..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn int(&mut self, v: impl itoa::Integer) {
        self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

/// A `[...]` or `{...}` being written: whether a comma goes before the next item.
pub struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// Bytes to close with (`]`, `}`, or `]}`/`}}` for an enum variant).
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.w.out.push(b',');
        }
    }

    fn end(self) -> Result<(), Error> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        if v.is_finite() {
            self.out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if v.is_finite() {
            self.out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = ser::Serializer::serialize_seq(self, Some(v.len()))?;
        for b in v {
            ser::SerializeSeq::serialize_element(&mut seq, b)?;
        }
        ser::SerializeSeq::end(seq)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        v.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        self.out.push(b'[');
        Ok(Compound { w: self, first: true, close: b"]" })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.extend_from_slice(b":[");
        Ok(Compound { w: self, first: true, close: b"]}" })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        self.out.push(b'{');
        Ok(Compound { w: self, first: true, close: b"}" })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.extend_from_slice(b":{");
        Ok(Compound { w: self, first: true, close: b"}}" })
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, v: &T) -> Result<(), Error> {
        self.serialize_str(&v.to_string())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.comma();
        v.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.comma();
        k.serialize(MapKey { w: &mut *self.w })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.w.out.push(b':');
        v.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        self.comma();
        write_str(self.w.out, key);
        self.w.out.push(b':');
        v.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, v)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

/// A map key: a string, or a number, bool or char written as a string (as serde_json).
struct MapKey<'w, 'a> {
    w: &'w mut Writer<'a>,
}

fn key_must_be_a_string() -> Error {
    Error("key must be a string".into())
}

impl MapKey<'_, '_> {
    fn quoted(self, text: &str) -> Result<(), Error> {
        write_str(self.w.out, text);
        Ok(())
    }
}

impl ser::Serializer for MapKey<'_, '_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.quoted(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.quoted(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.quoted(if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        if !v.is_finite() {
            return Err(Error("float key must be finite (got NaN or +/-inf)".into()));
        }
        self.quoted(zmij::Buffer::new().format_finite(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if !v.is_finite() {
            return Err(Error("float key must be finite (got NaN or +/-inf)".into()));
        }
        self.quoted(zmij::Buffer::new().format_finite(v))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.quoted(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, v: &T) -> Result<(), Error> {
        self.quoted(&v.to_string())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn same<T: Serialize + ?Sized>(v: &T) {
        let ours = to_string(v).expect("serializable");
        let theirs = serde_json::to_string(v).expect("serializable");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn every_byte_and_position_escapes_as_serde_json() {
        // Each ASCII byte alone, at every offset of a word, and a run of all of them.
        for b in 0u8..0x80 {
            for pad in 0..17 {
                let s = format!("{}{}{}", "a".repeat(pad), b as char, "z".repeat(17 - pad));
                same(&s);
            }
        }
        let all: String = (0u8..0x80).map(char::from).collect();
        same(&all);
        same(&all.repeat(3));
        for s in ["", "é", "日本語\u{1}x", "\u{7f}\u{80}\u{10ffff}", "\"\\\"\\", "tab\there\nand\r\u{c}\u{8}"] {
            same(s);
            same(&s.repeat(9));
        }
        same(&'"');
        same(&'\u{1f}');
    }

    #[test]
    fn every_length_and_position_of_the_16_byte_scan() {
        // Strings of every length around the word and 16-byte steps (and the
        // overlapping last step), with an edge byte at each position.
        for len in 1..=49 {
            for at in 0..len {
                for b in [0u8, 0x1f, b' ', b'"', b'\\', b'~', 0x7f] {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    same(std::str::from_utf8(&s).expect("ascii"));
                }
                let s: String = (0..len).map(|i| if i == at { 'é' } else { 'a' }).collect();
                same(&s);
            }
        }
    }

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tup(i8, String),
        Rec { a: Option<u32>, b: Vec<bool> },
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Wrap(&'static str);

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Untagged {
        S { x: u16 },
    }

    #[derive(Serialize)]
    struct Flat {
        top: &'static str,
        #[serde(flatten)]
        inner: BTreeMap<String, i64>,
        #[serde(flatten)]
        u: Untagged,
        #[serde(skip_serializing_if = "Option::is_none")]
        none: Option<u8>,
        null: Option<u8>,
    }

    #[test]
    fn every_serde_type_as_serde_json() {
        same(&(true, false, (), Unit, Wrap("w\n")));
        same(&(i8::MIN, i16::MIN, i32::MIN, i64::MIN, i128::MIN));
        same(&(u8::MAX, u16::MAX, u32::MAX, u64::MAX, u128::MAX, 0u8));
        same(&[0.0f64, -0.0, 1.5, 1e300, f64::MIN_POSITIVE, f64::NAN, f64::INFINITY]);
        same(&[0.1f32, f32::NEG_INFINITY]);
        same(&vec![E::Unit, E::New(7), E::Tup(-1, "t".into()), E::Rec { a: Some(3), b: vec![true, false] }]);
        same(&E::Rec { a: None, b: vec![] });
        same(&serde_bytes_like());
        let mut m = BTreeMap::new();
        m.insert("k\"ey".to_string(), -5i64);
        m.insert("".to_string(), 0);
        same(&Flat { top: "t", inner: m, u: Untagged::S { x: 9 }, none: None, null: None });
        let keys: BTreeMap<i32, &str> = [(-3, "a"), (40, "b")].into();
        same(&keys);
        let keys: BTreeMap<bool, ()> = [(true, ())].into();
        same(&keys);
        let keys: BTreeMap<char, u8> = [('\n', 1)].into();
        same(&keys);
        let empty: Vec<u8> = vec![];
        same(&empty);
        same(&BTreeMap::<String, String>::new());
    }

    fn serde_bytes_like() -> impl Serialize {
        struct B;
        impl Serialize for B {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&[0, 1, 255])
            }
        }
        B
    }

    #[test]
    fn a_key_that_is_not_a_string_is_an_error_as_in_serde_json() {
        let m: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(serde_json::to_string(&m).is_err());
        assert!(to_string(&m).unwrap_err().to_string().contains("key must be a string"));
    }

    #[test]
    fn every_golden_finding_is_the_same_bytes() {
        // The golden files are serde_json's output for real findings; the
        // round trip through Value would reorder nothing (preserve order is
        // not needed: only compare bytes of a re-serialization of a Value).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/findings");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("golden findings").flatten() {
            let text = std::fs::read_to_string(e.path()).expect("golden file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("golden JSON");
            same(&v);
            n += 1;
        }
        assert!(n > 10, "{n} golden findings");
    }
}
