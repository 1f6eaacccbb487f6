//! Just enough MessagePack (the encoding of raw rows) to find one integer in a map.

use super::le_signed;

/// Just enough MessagePack to find one integer in a map of a raw row.
pub(super) struct MsgPack<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
}

impl MsgPack<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("ends inside a {n}-byte msgpack item"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Reads one value: `Some(int)` for an integer, `None` after skipping anything else.
    fn value(&mut self, depth: u32) -> Result<Option<i64>, String> {
        let tag = self.uint(1)? as u8;
        let (skip, items) = match tag {
            0x00..=0x7f => return Ok(Some(i64::from(tag))),
            0xe0..=0xff => return Ok(Some(i64::from(tag as i8))),
            0xcc..=0xcf => {
                let v = self.uint(1 << (tag - 0xcc))?;
                return i64::try_from(v)
                    .map(Some)
                    .map_err(|_| format!("integer {v} exceeds i64"));
            }
            0xd0..=0xd3 => return Ok(Some(le_signed(&self.be_to_le(1 << (tag - 0xd0))?))),
            0xc0 | 0xc2 | 0xc3 => (0, 0),
            0xa0..=0xbf => (u64::from(tag & 0x1f), 0),
            0xd9 | 0xc4 => (self.uint(1)?, 0),
            0xda | 0xc5 => (self.uint(2)?, 0),
            0xdb | 0xc6 => (self.uint(4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xd4..=0xd8 => (1 + (1u64 << (tag - 0xd4)), 0),
            0xc7 => (self.uint(1)? + 1, 0),
            0xc8 => (self.uint(2)? + 1, 0),
            0xc9 => (self.uint(4)? + 1, 0),
            0x90..=0x9f => (0, u64::from(tag & 0x0f)),
            0xdc => (0, self.uint(2)?),
            0xdd => (0, self.uint(4)?),
            0x80..=0x8f => (0, 2 * u64::from(tag & 0x0f)),
            0xde => (0, 2 * self.uint(2)?),
            0xdf => (0, 2 * self.uint(4)?),
            0xc1 => return Err("has the reserved msgpack byte 0xc1".into()),
        };
        if depth > 64 {
            return Err("nests msgpack values too deeply".into());
        }
        self.bytes(usize::try_from(skip).map_err(|_| "has an oversized msgpack item")?)?;
        for _ in 0..items {
            self.value(depth + 1)?;
        }
        Ok(None)
    }

    /// Reads `n` big-endian bytes and returns them little-endian.
    fn be_to_le(&mut self, n: usize) -> Result<Vec<u8>, String> {
        Ok(self.bytes(n)?.iter().rev().copied().collect())
    }

    /// Finds key `key` in the top-level map; `Some(int)` if present and an integer.
    pub(super) fn find_int(&mut self, key: &[u8]) -> Result<Option<i64>, String> {
        let tag = self.uint(1)? as u8;
        let entries = match tag {
            0x80..=0x8f => u64::from(tag & 0x0f),
            0xde => self.uint(2)?,
            0xdf => self.uint(4)?,
            _ => return Err(format!("is not a msgpack map (tag 0x{tag:02x})")),
        };
        for _ in 0..entries {
            let tag = self.uint(1)? as u8;
            let n = match tag {
                0xa0..=0xbf => u64::from(tag & 0x1f),
                0xd9 => self.uint(1)?,
                0xda => self.uint(2)?,
                0xdb => self.uint(4)?,
                _ => return Err(format!("has a non-string msgpack key (tag 0x{tag:02x})")),
            };
            let name = self.bytes(usize::try_from(n).map_err(|_| "has an oversized key")?)?;
            if name == key {
                let start = self.pos;
                return match self.value(0)? {
                    Some(v) => Ok(Some(v)),
                    None => {
                        self.pos = start;
                        Err("value of the field is not an integer".into())
                    }
                };
            }
            self.value(0)?;
        }
        Ok(None)
    }
}
