//! The few pieces of the protobuf wire format that TensorBoard events need.
//!
//! Encoding writes fields in ascending field-number order and leaves out proto3 defaults, so
//! the bytes equal those of Python's `SerializeToString()` for the same message. Decoding is a
//! cursor over one message that yields `(field number, value)` pairs and lets the caller skip
//! fields it does not know, as every protobuf reader must.

/// Wire type of varint fields (`int64`, `enum`, `bool`).
const WIRE_VARINT: u8 = 0;
/// Wire type of 8-byte fields (`double`, `fixed64`).
const WIRE_FIXED64: u8 = 1;
/// Wire type of length-delimited fields (`string`, `bytes`, messages, packed repeats).
const WIRE_LEN: u8 = 2;
/// Wire type of 4-byte fields (`float`, `fixed32`).
const WIRE_FIXED32: u8 = 5;

/// Appends `value` as a base-128 varint (negative `int64` values are cast, taking 10 bytes).
pub fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, u64::from(field) << 3 | u64::from(wire_type));
}

/// Appends a varint field.
pub fn put_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    put_key(buf, field, WIRE_VARINT);
    put_varint(buf, value);
}

/// Appends a `double` field.
pub fn put_double_field(buf: &mut Vec<u8>, field: u32, value: f64) {
    put_key(buf, field, WIRE_FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `float` field.
pub fn put_float_field(buf: &mut Vec<u8>, field: u32, value: f32) {
    put_key(buf, field, WIRE_FIXED32);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Appends a length-delimited field (a string, bytes or an encoded sub-message).
pub fn put_bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// One decoded field value, still in its wire representation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1, as the raw little-endian bits.
    Fixed64(u64),
    /// Wire type 2: the payload bytes.
    Bytes(&'a [u8]),
    /// Wire type 5, as the raw little-endian bits.
    Fixed32(u32),
}

impl Field<'_> {
    /// The wire type's name, for error messages.
    pub fn wire_name(&self) -> &'static str {
        match self {
            Field::Varint(_) => "varint",
            Field::Fixed64(_) => "fixed64",
            Field::Bytes(_) => "length-delimited",
            Field::Fixed32(_) => "fixed32",
        }
    }
}

/// A malformed message: what is wrong and the byte position inside the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte position in the message being decoded (not in the file).
    pub pos: usize,
    /// What is wrong.
    pub reason: String,
}

/// A cursor over the fields of one encoded message.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `data`, one complete message.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    fn error(&self, pos: usize, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            pos,
            reason: reason.into(),
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(self.error(start, "varint runs past the end of the message"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(start, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        match start.checked_add(n).filter(|&end| end <= self.data.len()) {
            Some(end) => {
                self.pos = end;
                Ok(&self.data[start..end])
            }
            None => Err(self.error(
                start,
                format!(
                    "field needs {n} bytes but only {} remain",
                    self.data.len() - start
                ),
            )),
        }
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>, DecodeError> {
        if self.pos == self.data.len() {
            return Ok(None);
        }
        let key_pos = self.pos;
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|&f| f != 0)
            .ok_or_else(|| self.error(key_pos, format!("invalid field number {}", key >> 3)))?;
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Field::Varint(self.varint()?),
            WIRE_FIXED64 => {
                let bytes = self.take(8)?;
                Field::Fixed64(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
            }
            WIRE_LEN => {
                let len_pos = self.pos;
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.error(len_pos, "length does not fit in memory"))?;
                Field::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => {
                let bytes = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")))
            }
            other => {
                return Err(self.error(
                    key_pos,
                    format!(
                        "field {field} has unsupported wire type {other} (groups are not used)"
                    ),
                ))
            }
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (300, &[0xAC, 0x02]),
            (
                (-1i64) as u64,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
            (u64::from(u32::MAX), &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ];
        for (value, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf, bytes, "encoding {value}");
            let mut message = Vec::new();
            put_varint_field(&mut message, 2, value);
            let mut decoder = Decoder::new(&message);
            assert_eq!(decoder.next_field(), Ok(Some((2, Field::Varint(value)))));
            assert_eq!(decoder.next_field(), Ok(None));
        }
    }

    #[test]
    fn all_wire_types_round_trip() {
        let mut buf = Vec::new();
        put_double_field(&mut buf, 1, 1.0);
        put_float_field(&mut buf, 2, 1.5);
        put_bytes_field(&mut buf, 3, b"abc");
        put_varint_field(&mut buf, 16, 7);
        let mut decoder = Decoder::new(&buf);
        let mut fields = Vec::new();
        while let Some(field) = decoder.next_field().expect("valid message") {
            fields.push(field);
        }
        assert_eq!(
            fields,
            [
                (1, Field::Fixed64(1.0f64.to_bits())),
                (2, Field::Fixed32(1.5f32.to_bits())),
                (3, Field::Bytes(b"abc")),
                (16, Field::Varint(7)),
            ]
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        // A length that runs past the end, a truncated varint, a group wire type, field 0.
        let cases: [(&[u8], usize); 4] = [
            (&[0x1A, 0x05, b'a'], 2),
            (&[0x10, 0x80], 1),
            (&[0x0B], 0),
            (&[0x00, 0x00], 0),
        ];
        for (bytes, pos) in cases {
            let err = Decoder::new(bytes).next_field().expect_err("malformed");
            assert_eq!(err.pos, pos, "{bytes:02x?}: {}", err.reason);
        }
    }
}
