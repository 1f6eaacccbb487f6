//! [`IndexedDataset`]: a memory-mapped Megatron `.bin/.idx` pair, validated on open.
//!
//! Layout (megatron-data.md §1, all little-endian): `.idx` = magic `MMIDIDX\0\0`, u64 version 1,
//! u8 dtype code, u64 sequence count N, u64 document count D, i32 lengths[N], i64 byte
//! pointers[N], i64 document_indices[D] (and, for multimodal data only, i8 modes[N]).
//! `.bin` = the tokens of all sequences back to back.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{DType, Error, Result};

/// The 9-byte magic that opens every `.idx` file.
pub const INDEX_MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only `.idx` version Megatron writes.
pub const INDEX_VERSION: u64 = 1;
/// Bytes before the arrays: magic, version, dtype code, sequence count, document count.
pub const INDEX_HEADER_BYTES: usize = 9 + 8 + 1 + 8 + 8;

/// The `.idx` and `.bin` paths of a dataset prefix.
pub fn dataset_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let mut idx = prefix.as_os_str().to_owned();
    idx.push(".idx");
    let mut bin = prefix.as_os_str().to_owned();
    bin.push(".bin");
    (PathBuf::from(idx), PathBuf::from(bin))
}

/// A read-only Megatron indexed dataset. Opening checks every structural invariant once, so
/// that [`IndexedDataset::get`] can serve token slices straight out of the mapped `.bin`.
pub struct IndexedDataset {
    prefix: PathBuf,
    dtype: DType,
    idx: Mapped,
    bin: Mapped,
    sequence_count: usize,
    document_count: usize,
}

/// A memory map, or nothing for an empty file (which cannot be mapped).
enum Mapped {
    Empty,
    Map(Mmap),
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::corrupt(
                    path,
                    "file not found; a dataset prefix names a `.bin`/`.idx` pair written by \
                     `pretrain preprocess` (give the prefix without the extension)",
                )
            } else {
                Error::io(path, e)
            }
        })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Mapped::Empty);
        }
        // SAFETY: the map is read-only and private to this process. Like every reader of
        // Megatron data we assume the files are not truncated while mapped; all offsets are
        // validated against the length seen here before any access. A file truncated anyway
        // faults (SIGBUS) when the lost pages are read: `mapped` names it for the binary's
        // handler.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        super::mapped::register(&map, path);
        Ok(Mapped::Map(map))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Mapped::Empty => &[],
            Mapped::Map(m) => m,
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Mapped::Map(m) = self {
            super::mapped::unregister(m.as_ptr() as usize);
        }
    }
}

/// A run of tokens borrowed from the mapped `.bin` file.
#[derive(Clone, Copy)]
pub struct Tokens<'a> {
    bytes: &'a [u8],
    dtype: DType,
}

impl<'a> Tokens<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size_bytes()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw little-endian bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Token `k` (panics when out of range, like slice indexing).
    pub fn get(&self, k: usize) -> i64 {
        let size = self.dtype.size_bytes();
        self.dtype.decode(&self.bytes[k * size..(k + 1) * size])
    }

    /// The tokens as i64.
    pub fn iter(&self) -> impl Iterator<Item = i64> + 'a {
        let dtype = self.dtype;
        self.bytes
            .chunks_exact(dtype.size_bytes())
            .map(move |c| dtype.decode(c))
    }

    /// Appends the tokens, widened to i64, to `out`.
    pub fn extend_into(&self, out: &mut Vec<i64>) {
        out.extend(self.iter());
    }
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    read_u64(b, at) as i64
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

impl IndexedDataset {
    /// Opens `<prefix>.idx` and `<prefix>.bin` and validates them: magic, version, dtype code,
    /// array sizes against the `.idx` length, document indices (start at 0, non-decreasing, end
    /// at the sequence count), non-negative lengths, pointers that are the running byte offsets
    /// of the sequences, and a `.bin` size equal to the sum of lengths times the item size.
    pub fn open(prefix: impl AsRef<Path>) -> Result<IndexedDataset> {
        let prefix = prefix.as_ref().to_path_buf();
        let (idx_path, bin_path) = dataset_paths(&prefix);
        let idx = Mapped::open(&idx_path)?;
        let b = idx.bytes();
        let bad = |reason: String| Error::corrupt(&idx_path, reason);
        if b.len() < INDEX_HEADER_BYTES {
            return Err(bad(format!(
                "truncated index: {} bytes, the header alone needs {INDEX_HEADER_BYTES}; \
                 re-run `pretrain preprocess` to rebuild it",
                b.len()
            )));
        }
        if &b[..9] != INDEX_MAGIC {
            return Err(bad(format!(
                "not a Megatron index: magic at offset 0 is {:02x?}, expected \"MMIDIDX\\0\\0\"; \
                 is this a `.idx` written by Megatron or `pretrain preprocess`?",
                &b[..9]
            )));
        }
        let version = read_u64(b, 9);
        if version != INDEX_VERSION {
            return Err(bad(format!(
                "unsupported index version {version} at offset 9, only version 1 exists; \
                 rebuild the dataset with `pretrain preprocess`"
            )));
        }
        let dtype = DType::from_code(b[17]).ok_or_else(|| {
            bad(format!(
                "invalid dtype code {} at offset 17; valid codes are 1-8 (4 = int32, 8 = uint16)",
                b[17]
            ))
        })?;
        let n = read_u64(b, 18);
        let d = read_u64(b, 26);
        let need = (n as u128) * 12 + (d as u128) * 8 + INDEX_HEADER_BYTES as u128;
        let with_modes = need + n as u128;
        if (b.len() as u128) != need && (b.len() as u128) != with_modes {
            let what = if (b.len() as u128) < need {
                "truncated index"
            } else {
                "index has trailing bytes"
            };
            return Err(bad(format!(
                "{what}: {} bytes, but {n} sequences and {d} document boundaries need {need}; \
                 the file was cut short or overwritten, re-run `pretrain preprocess`",
                b.len()
            )));
        }
        let (n, d) = (n as usize, d as usize);
        if d == 0 {
            return Err(bad(
                "document count at offset 26 is 0, but the document index always holds at \
                 least the leading 0; rebuild the dataset"
                    .into(),
            ));
        }
        let ds = IndexedDataset {
            prefix,
            dtype,
            idx,
            bin: Mapped::Empty,
            sequence_count: n,
            document_count: d,
        };
        ds.check_document_indices(&idx_path)?;
        let bin = Mapped::open(&bin_path)?;
        let total = ds.check_lengths_and_pointers(&idx_path)?;
        if bin.bytes().len() as u128 != total {
            return Err(Error::corrupt(
                &bin_path,
                format!(
                    "size is {} bytes but its index describes {total} bytes ({} sequences of {}); \
                     the `.bin` and `.idx` do not belong together or one was truncated",
                    bin.bytes().len(),
                    n,
                    dtype.name()
                ),
            ));
        }
        Ok(IndexedDataset { bin, ..ds })
    }

    fn check_document_indices(&self, idx_path: &Path) -> Result<()> {
        let mut prev = 0i64;
        for k in 0..self.document_count {
            let v = self.document_index_entry(k);
            let at = self.doc_off() + 8 * k;
            if k == 0 && v != 0 {
                return Err(Error::corrupt(
                    idx_path,
                    format!("document_indices[0] at offset {at} is {v}, expected 0; rebuild the dataset"),
                ));
            }
            if v < prev || v as u64 > self.sequence_count as u64 {
                return Err(Error::corrupt(
                    idx_path,
                    format!(
                        "document_indices[{k}] at offset {at} is {v}: entries must be \
                         non-decreasing and at most the sequence count {}; rebuild the dataset",
                        self.sequence_count
                    ),
                ));
            }
            prev = v;
        }
        if prev as usize != self.sequence_count {
            return Err(Error::corrupt(
                idx_path,
                format!(
                    "the last document index is {prev} but there are {} sequences; rebuild the \
                     dataset",
                    self.sequence_count
                ),
            ));
        }
        Ok(())
    }

    /// Returns the `.bin` size the index describes.
    fn check_lengths_and_pointers(&self, idx_path: &Path) -> Result<u128> {
        let size = self.dtype.size_bytes() as i64;
        let mut offset: i64 = 0;
        for i in 0..self.sequence_count {
            let len = self.sequence_length_raw(i);
            if len < 0 {
                return Err(Error::corrupt(
                    idx_path,
                    format!(
                        "sequence_lengths[{i}] at offset {} is negative ({len}); rebuild the dataset",
                        INDEX_HEADER_BYTES + 4 * i
                    ),
                ));
            }
            let ptr = self.sequence_pointer(i);
            if ptr != offset {
                return Err(Error::corrupt(
                    idx_path,
                    format!(
                        "sequence_pointers[{i}] at offset {} is {ptr}, expected {offset} (the sum \
                         of the previous lengths times {size} bytes); rebuild the dataset",
                        self.ptr_off() + 8 * i
                    ),
                ));
            }
            offset = offset
                .checked_add(len as i64 * size)
                .ok_or_else(|| Error::corrupt(idx_path, "sequence pointers overflow i64"))?;
        }
        Ok(offset as u128)
    }

    fn ptr_off(&self) -> usize {
        INDEX_HEADER_BYTES + 4 * self.sequence_count
    }

    fn doc_off(&self) -> usize {
        INDEX_HEADER_BYTES + 12 * self.sequence_count
    }

    fn sequence_length_raw(&self, i: usize) -> i32 {
        read_i32(self.idx.bytes(), INDEX_HEADER_BYTES + 4 * i)
    }

    fn document_index_entry(&self, k: usize) -> i64 {
        read_i64(self.idx.bytes(), self.doc_off() + 8 * k)
    }

    /// The dataset prefix this was opened from.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Token dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of sequences (what GPT sample building calls documents).
    pub fn len(&self) -> usize {
        self.sequence_count
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.sequence_count == 0
    }

    /// Number of documents (the `.idx` document count minus the leading 0).
    pub fn document_count(&self) -> usize {
        self.document_count - 1
    }

    /// `document_indices[k]`: the first sequence of document `k` (`k == document_count()` gives
    /// the sequence count).
    pub fn document_index(&self, k: usize) -> usize {
        self.document_index_entry(k) as usize
    }

    /// Length in tokens of sequence `i` (panics if `i >= len()`).
    pub fn sequence_length(&self, i: usize) -> usize {
        assert!(i < self.sequence_count, "sequence {i} out of range");
        self.sequence_length_raw(i) as usize
    }

    /// All sequence lengths.
    pub fn sequence_lengths(&self) -> Vec<u32> {
        (0..self.sequence_count)
            .map(|i| self.sequence_length_raw(i) as u32)
            .collect()
    }

    /// Byte offset of sequence `i` in the `.bin`.
    pub fn sequence_pointer(&self, i: usize) -> i64 {
        read_i64(self.idx.bytes(), self.ptr_off() + 8 * i)
    }

    /// Total number of tokens.
    pub fn num_tokens(&self) -> u64 {
        (self.bin.bytes().len() / self.dtype.size_bytes()) as u64
    }

    /// The first sequence holding a token id outside `0..vocab`, with that id, or `None`;
    /// scans the whole `.bin`, sequences in parallel.
    pub fn find_token_outside(&self, vocab: u64) -> Result<Option<(usize, i64)>> {
        use rayon::prelude::*;
        let bad = (0..self.sequence_count)
            .into_par_iter()
            .with_min_len(1024)
            .map(|i| {
                let tokens = self.get(i, 0, None)?;
                Ok(tokens
                    .iter()
                    .find(|&t| t < 0 || t as u64 >= vocab)
                    .map(|t| (i, t)))
            })
            .filter_map(|r: Result<Option<(usize, i64)>>| r.transpose())
            .min_by_key(|r| r.as_ref().map_or(0, |(i, _)| *i));
        bad.transpose()
    }

    /// Tokens `[offset, offset + length)` of sequence `i` (the whole remainder with `None`),
    /// borrowed from the mapped `.bin` without copying. Errors name the dataset when `i`,
    /// `offset` or `length` fall outside the sequence.
    pub fn get(&self, i: usize, offset: usize, length: Option<usize>) -> Result<Tokens<'_>> {
        if i >= self.sequence_count {
            return Err(Error::InvalidArgument(format!(
                "{}: sequence {i} out of range, the dataset has {} sequences",
                self.prefix.display(),
                self.sequence_count
            )));
        }
        let seq_len = self.sequence_length_raw(i) as usize;
        let length = length.unwrap_or(seq_len.saturating_sub(offset));
        if offset + length > seq_len {
            return Err(Error::InvalidArgument(format!(
                "{}: tokens [{offset}, {}) requested from sequence {i} of length {seq_len}",
                self.prefix.display(),
                offset + length
            )));
        }
        let size = self.dtype.size_bytes();
        let start = self.sequence_pointer(i) as usize + offset * size;
        Ok(Tokens {
            bytes: &self.bin.bytes()[start..start + length * size],
            dtype: self.dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::builder::IndexedDatasetBuilder;

    fn three_docs(dir: &Path) -> PathBuf {
        let prefix = dir.join("ds");
        let mut b = IndexedDatasetBuilder::create(&prefix, DType::I32).expect("create");
        for doc in [&[5i64, 6, 7, 1][..], &[8, 9, 1], &[10, 11, 12, 13, 14, 1]] {
            b.add_item(doc).expect("add");
            b.end_document();
        }
        b.finalize().expect("finalize");
        prefix
    }

    /// Fuzzing, bounded: 3,000 random corruptions of a valid `.idx`/`.bin` pair (bytes
    /// flipped, set to extremes, files cut short or extended) never panic or read out of
    /// bounds: `open` refuses the file, or every document reads back within the `.bin`.
    #[test]
    fn tokens_outside_the_vocabulary_are_found_in_their_first_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ds = IndexedDataset::open(three_docs(dir.path())).expect("open");
        assert_eq!(ds.find_token_outside(15).expect("scan"), None);
        assert_eq!(ds.find_token_outside(12).expect("scan"), Some((2, 12)));
        assert_eq!(ds.find_token_outside(9).expect("scan"), Some((1, 9)));
    }

    #[test]
    fn corrupted_files_are_refused_or_read_safely() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = three_docs(dir.path());
        let (idx, bin) = dataset_paths(&prefix);
        let (idx0, bin0) = (
            std::fs::read(&idx).expect("idx"),
            std::fs::read(&bin).expect("bin"),
        );
        let mut rng = crate::data::rng::RandomState::new(7);
        let mut refused = 0;
        for case in 0..3000 {
            let (mut i, mut b) = (idx0.clone(), bin0.clone());
            let target = if case % 4 == 3 { &mut b } else { &mut i };
            for _ in 0..1 + rng.next_u32() % 4 {
                let at = rng.next_u32() as usize % target.len();
                target[at] = match rng.next_u32() % 4 {
                    0 => 0xff,
                    1 => 0x00,
                    2 => 0x80,
                    _ => rng.next_u32() as u8,
                };
            }
            match rng.next_u32() % 8 {
                0 => target.truncate(rng.next_u32() as usize % target.len()),
                1 => target.extend(std::iter::repeat_n(0x7f, (rng.next_u32() % 64) as usize)),
                _ => {}
            }
            let p = dir.path().join(format!("c{case}"));
            let (pi, pb) = dataset_paths(&p);
            std::fs::write(&pi, &i).expect("write");
            std::fs::write(&pb, &b).expect("write");
            match IndexedDataset::open(&p) {
                Err(_) => refused += 1,
                Ok(ds) => {
                    for d in 0..ds.len() {
                        if let Ok(t) = ds.get(d, 0, None) {
                            let _ = t.iter().count();
                        }
                    }
                }
            }
            let _ = std::fs::remove_file(&pi);
            let _ = std::fs::remove_file(&pb);
        }
        assert!(refused > 1000, "only {refused} of 3000 corruptions refused");
    }

    #[test]
    fn reads_the_reference_example() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = three_docs(dir.path());
        let (idx, bin) = dataset_paths(&prefix);
        assert_eq!(std::fs::metadata(idx).expect("idx").len(), 102);
        assert_eq!(std::fs::metadata(bin).expect("bin").len(), 52);
        let ds = IndexedDataset::open(&prefix).expect("open");
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.document_count(), 3);
        assert_eq!(ds.sequence_lengths(), vec![4, 3, 6]);
        assert_eq!(ds.sequence_pointer(2), 28);
        let t = ds.get(2, 1, Some(3)).expect("get");
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![11, 12, 13]);
        assert_eq!(
            ds.get(1, 1, None).expect("get").iter().collect::<Vec<_>>(),
            vec![9, 1]
        );
        assert!(ds.get(1, 2, Some(2)).is_err());
        assert!(ds.get(3, 0, None).is_err());
    }

    fn expect_corrupt(prefix: &Path, needle: &str) {
        match IndexedDataset::open(prefix) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains(needle), "`{reason}` lacks `{needle}`")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a corrupt dataset"),
        }
    }

    #[test]
    fn rejects_corrupt_files_with_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = three_docs(dir.path());
        let (idx, bin) = dataset_paths(&prefix);
        let good = std::fs::read(&idx).expect("read");

        let mut b = good.clone();
        b[0] = b'X';
        std::fs::write(&idx, &b).expect("write");
        expect_corrupt(&prefix, "magic at offset 0");

        let mut b = good.clone();
        b[9] = 2;
        std::fs::write(&idx, &b).expect("write");
        expect_corrupt(&prefix, "version 2 at offset 9");

        let mut b = good.clone();
        b[17] = 9;
        std::fs::write(&idx, &b).expect("write");
        expect_corrupt(&prefix, "dtype code 9");

        std::fs::write(&idx, &good[..60]).expect("write");
        expect_corrupt(&prefix, "truncated index");

        std::fs::write(&idx, &good[..20]).expect("write");
        expect_corrupt(&prefix, "header alone");

        let mut b = good.clone();
        b[INDEX_HEADER_BYTES + 12 + 8] = 17; // pointer of sequence 1
        std::fs::write(&idx, &b).expect("write");
        expect_corrupt(&prefix, "sequence_pointers[1]");

        std::fs::write(&idx, &good).expect("write");
        let bin_bytes = std::fs::read(&bin).expect("read");
        std::fs::write(&bin, &bin_bytes[..48]).expect("write");
        match IndexedDataset::open(&prefix) {
            Err(Error::Corrupt { path, reason }) => {
                assert_eq!(path, bin);
                assert!(reason.contains("describes 52 bytes"), "{reason}");
            }
            _ => panic!("accepted a short .bin"),
        }
    }
}
