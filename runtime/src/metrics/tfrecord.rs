//! TFRecord framing, the container of TensorBoard event files.
//!
//! Each record is `u64 length (LE) | u32 masked_crc32c(length bytes) | data | u32
//! masked_crc32c(data)`. The reader checks both checksums and reports the byte offset of the
//! first problem; it never skips a bad record (TensorBoard's `EventAccumulator` silently does).

use std::io::{self, Read};

use super::crc32c::masked_crc32c;

/// Bytes of framing before the data: the length and its checksum.
pub const HEADER_LEN: usize = 12;
/// Bytes of framing after the data: the data checksum.
pub const FOOTER_LEN: usize = 4;

/// Frames `data` as one complete record.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(HEADER_LEN + data.len() + FOOTER_LEN);
    record.extend_from_slice(&len);
    record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// Why a record could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The operating system failed to read.
    Io(io::Error),
    /// The framing is damaged at `offset` (bytes from the start of the stream).
    Corrupt {
        /// Byte offset of the damaged part.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Reads records one by one from a stream of known length.
pub struct RecordReader<R> {
    inner: R,
    offset: u64,
    len: u64,
}

impl<R: Read> RecordReader<R> {
    /// Reads from `inner`, whose total length is `len` bytes (used to reject impossible record
    /// lengths before allocating).
    pub fn new(inner: R, len: u64) -> Self {
        RecordReader {
            inner,
            offset: 0,
            len,
        }
    }

    /// The next record as `(offset of its first framing byte, data)`, or `None` at a clean end.
    pub fn next_record(&mut self) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        match self.fill(&mut header)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            got => {
                return Err(corrupt(
                    start,
                    format!(
                        "truncated record header: {got} of {HEADER_LEN} bytes \
                         (the writer stopped mid-record)"
                    ),
                ))
            }
        }
        let (len_bytes, len_crc) = header.split_at(8);
        let expected = masked_crc32c(len_bytes);
        let stored = u32::from_le_bytes(len_crc.try_into().expect("header is 12 bytes"));
        if stored != expected {
            return Err(corrupt(
                start,
                format!(
                    "length checksum mismatch: stored {stored:#010x}, computed {expected:#010x}"
                ),
            ));
        }
        let data_len = u64::from_le_bytes(len_bytes.try_into().expect("header is 12 bytes"));
        let data_start = start + HEADER_LEN as u64;
        let remaining = self.len.saturating_sub(data_start);
        if data_len.saturating_add(FOOTER_LEN as u64) > remaining {
            return Err(corrupt(
                data_start,
                format!(
                    "truncated record: it declares {data_len} data bytes + {FOOTER_LEN} checksum \
                     bytes but only {remaining} bytes remain"
                ),
            ));
        }
        // Fits in memory: it is no longer than the file.
        let mut data = vec![0u8; data_len as usize];
        let mut footer = [0u8; FOOTER_LEN];
        if self.fill(&mut data)? != data.len() || self.fill(&mut footer)? != FOOTER_LEN {
            return Err(corrupt(
                data_start,
                "truncated record: the file shrank while reading",
            ));
        }
        let expected = masked_crc32c(&data);
        let stored = u32::from_le_bytes(footer);
        if stored != expected {
            return Err(corrupt(
                data_start,
                format!(
                    "data checksum mismatch over {data_len} bytes: stored {stored:#010x}, \
                     computed {expected:#010x}"
                ),
            ));
        }
        Ok(Some((start, data)))
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }
}

fn corrupt(offset: u64, reason: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as `(offset, data)`, or the first error as `(offset, reason)`.
    type Records = Result<Vec<(u64, Vec<u8>)>, (u64, String)>;

    fn read_all(bytes: &[u8]) -> Records {
        let mut reader = RecordReader::new(bytes, bytes.len() as u64);
        let mut records = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => return Ok(records),
                Err(ReadError::Corrupt { offset, reason }) => return Err((offset, reason)),
                Err(ReadError::Io(e)) => panic!("slices do not fail: {e}"),
            }
        }
    }

    #[test]
    fn reference_framing() {
        // test-infrastructure.md §8: the 26-byte scalar event and its framing.
        let event: [u8; 26] = [
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x10, 0x02, 0x2a, 0x0d, 0x0a,
            0x0b, 0x0a, 0x04, 0x6c, 0x6f, 0x73, 0x73, 0x15, 0x00, 0x00, 0xc0, 0x3f,
        ];
        let framed = frame(&event);
        assert_eq!(
            framed[..12],
            [0x1a, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x9b, 0xd8, 0x2d]
        );
        assert_eq!(framed[12..38], event);
        assert_eq!(framed[38..], [0xef, 0x0a, 0x4a, 0x59]);
    }

    #[test]
    fn records_round_trip_with_offsets() {
        let mut stream = frame(b"first");
        stream.extend(frame(b""));
        stream.extend(frame(b"third"));
        let records = read_all(&stream).expect("valid stream");
        assert_eq!(
            records,
            [
                (0, b"first".to_vec()),
                (21, Vec::new()),
                (37, b"third".to_vec())
            ]
        );
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let mut stream = frame(b"first");
        stream.extend(frame(b"second"));
        for i in 0..stream.len() {
            let mut bad = stream.clone();
            bad[i] ^= 0x01;
            let (offset, reason) = read_all(&bad).expect_err("corruption detected");
            // The error points at the damaged record: its header, or its data.
            let record_start = if i < 21 { 0 } else { 21 };
            assert!(
                offset == record_start || offset == record_start + 12,
                "byte {i}: offset {offset}, {reason}"
            );
        }
    }

    #[test]
    fn truncation_is_an_error_at_every_cut() {
        let stream = frame(b"payload");
        for cut in 1..stream.len() {
            let (offset, reason) = read_all(&stream[..cut]).expect_err("truncation detected");
            assert!(reason.contains("truncated"), "cut {cut}: {reason}");
            assert!(offset == 0 || offset == 12, "cut {cut}: offset {offset}");
        }
    }
}
