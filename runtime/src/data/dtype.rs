//! Token element types of Megatron `.bin` files and their `.idx` dtype codes.

use super::Error;

/// Element type of the tokens stored in a `.bin` file, with Megatron's dtype codes
/// (`megatron/core/datasets/indexed_dataset.py: DType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// code 1
    U8,
    /// code 2
    I8,
    /// code 3
    I16,
    /// code 4 (the builder's default, and what vocabularies of 65,500 or more use)
    I32,
    /// code 5
    I64,
    /// code 6
    F64,
    /// code 7
    F32,
    /// code 8 (chosen for vocabularies below 65,500)
    U16,
}

impl DType {
    /// All dtypes, in code order.
    pub const ALL: [DType; 8] = [
        DType::U8,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F64,
        DType::F32,
        DType::U16,
    ];

    /// The `.idx` dtype code.
    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::F64 => 6,
            DType::F32 => 7,
            DType::U16 => 8,
        }
    }

    /// The dtype for an `.idx` dtype code, if the code is valid.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// Megatron's `DType.optimal_dtype`: u16 when the vocabulary has fewer than 65,500 ids,
    /// else i32.
    pub fn optimal_for_vocab(vocab_size: usize) -> DType {
        if vocab_size < 65_500 {
            DType::U16
        } else {
            DType::I32
        }
    }

    /// Parses a user-facing name (`uint16`, `int32`, ...).
    pub fn from_name(name: &str) -> Result<DType, Error> {
        Ok(match name {
            "uint8" | "u8" => DType::U8,
            "int8" | "i8" => DType::I8,
            "int16" | "i16" => DType::I16,
            "int32" | "i32" => DType::I32,
            "int64" | "i64" => DType::I64,
            "float64" | "f64" => DType::F64,
            "float32" | "f32" => DType::F32,
            "uint16" | "u16" => DType::U16,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown dtype `{other}`; use one of uint8, int8, int16, int32, int64, \
                     float64, float32, uint16"
                )))
            }
        })
    }

    /// numpy-style name, used in messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::U16 => "uint16",
        }
    }

    /// Whether a token id can be stored exactly in this dtype.
    pub fn holds(self, id: i64) -> bool {
        match self {
            DType::U8 => (0..=u8::MAX as i64).contains(&id),
            DType::I8 => (i8::MIN as i64..=i8::MAX as i64).contains(&id),
            DType::I16 => (i16::MIN as i64..=i16::MAX as i64).contains(&id),
            DType::U16 => (0..=u16::MAX as i64).contains(&id),
            DType::I32 => (i32::MIN as i64..=i32::MAX as i64).contains(&id),
            DType::I64 => true,
            // Integers up to 2^24 (f32) and 2^53 (f64) are exact.
            DType::F32 => id.unsigned_abs() <= 1 << 24,
            DType::F64 => id.unsigned_abs() <= 1 << 53,
        }
    }

    /// Appends `id` in this dtype's little-endian encoding. The caller checks [`DType::holds`].
    pub fn encode(self, id: i64, out: &mut Vec<u8>) {
        match self {
            DType::U8 => out.push(id as u8),
            DType::I8 => out.push(id as i8 as u8),
            DType::I16 => out.extend_from_slice(&(id as i16).to_le_bytes()),
            DType::U16 => out.extend_from_slice(&(id as u16).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(id as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&id.to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(id as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&(id as f64).to_le_bytes()),
        }
    }

    /// Decodes one element from exactly `size_bytes()` little-endian bytes.
    pub fn decode(self, b: &[u8]) -> i64 {
        match self {
            DType::U8 => b[0] as i64,
            DType::I8 => b[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            DType::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            DType::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            DType::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::from_name(d.name()).ok(), Some(d));
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(9), None);
    }

    #[test]
    fn optimal_dtype_matches_megatron() {
        assert_eq!(DType::optimal_for_vocab(50_257), DType::U16);
        assert_eq!(DType::optimal_for_vocab(65_499), DType::U16);
        assert_eq!(DType::optimal_for_vocab(65_500), DType::I32);
        assert_eq!(DType::optimal_for_vocab(151_669), DType::I32);
    }

    #[test]
    fn encode_decode_every_dtype() {
        for d in DType::ALL {
            for id in [0i64, 1, 100, 127] {
                let mut buf = Vec::new();
                d.encode(id, &mut buf);
                assert_eq!(buf.len(), d.size_bytes());
                assert_eq!(d.decode(&buf), id, "{d:?}");
            }
        }
        assert!(!DType::U16.holds(70_000));
        assert!(!DType::U16.holds(-1));
        assert!(DType::I32.holds(151_935));
    }
}
