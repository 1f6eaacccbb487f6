//! [`IndexedDatasetBuilder`]: writes a Megatron `.bin/.idx` pair byte-identical to
//! megatron-core's `IndexedDatasetBuilder` for the same token ids.
//!
//! Tokens stream to `<prefix>.bin` under a temporary name; only the per-sequence lengths and
//! document boundaries stay in memory (12 bytes per sequence, as in Megatron). `finalize`
//! writes the index, syncs both files and renames them into place, so a crash or an error never
//! leaves a file under the final name. Dropping an unfinished builder removes its temporaries.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::indexed::{dataset_paths, INDEX_MAGIC, INDEX_VERSION};
use super::{DType, Error, Result};

/// Streaming writer of one indexed dataset.
pub struct IndexedDatasetBuilder {
    dtype: DType,
    idx_path: PathBuf,
    bin_path: PathBuf,
    idx_tmp: PathBuf,
    bin_tmp: PathBuf,
    bin: Option<BufWriter<File>>,
    sequence_lengths: Vec<i32>,
    document_indices: Vec<i64>,
    encoded: Vec<u8>,
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

impl IndexedDatasetBuilder {
    /// Starts `<prefix>.bin/.idx` with tokens stored as `dtype`. Creates missing parent
    /// directories.
    pub fn create(prefix: impl AsRef<Path>, dtype: DType) -> Result<IndexedDatasetBuilder> {
        let (idx_path, bin_path) = dataset_paths(prefix.as_ref());
        if let Some(parent) = bin_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let bin_tmp = tmp_name(&bin_path);
        let file = File::create(&bin_tmp).map_err(|e| Error::io(&bin_tmp, e))?;
        Ok(IndexedDatasetBuilder {
            dtype,
            idx_tmp: tmp_name(&idx_path),
            idx_path,
            bin_path,
            bin_tmp,
            bin: Some(BufWriter::with_capacity(1 << 20, file)),
            sequence_lengths: Vec::new(),
            document_indices: vec![0],
            encoded: Vec::new(),
        })
    }

    /// The dtype tokens are stored as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Final `.bin` path.
    pub fn bin_path(&self) -> &Path {
        &self.bin_path
    }

    /// Number of sequences added so far.
    pub fn sequence_count(&self) -> usize {
        self.sequence_lengths.len()
    }

    /// Appends one sequence (Megatron's `add_item`). Every id must fit the dtype.
    pub fn add_item(&mut self, tokens: &[i64]) -> Result<()> {
        self.add_ids(tokens.iter().copied())
    }

    /// Appends one sequence of unsigned ids, as tokenizers produce them.
    pub fn add_item_u32(&mut self, tokens: &[u32]) -> Result<()> {
        self.add_ids(tokens.iter().map(|&t| t as i64))
    }

    fn add_ids(&mut self, ids: impl ExactSizeIterator<Item = i64>) -> Result<()> {
        let len = ids.len();
        if len > i32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{}: a sequence of {len} tokens exceeds the format's i32 length field",
                self.bin_path.display()
            )));
        }
        self.encoded.clear();
        self.encoded.reserve(len * self.dtype.size_bytes());
        for id in ids {
            if !self.dtype.holds(id) {
                return Err(Error::TokenOutOfRange {
                    path: self.bin_path.clone(),
                    id,
                    dtype: self.dtype.name(),
                    document: (self.document_indices.len() - 1) as u64,
                    hint: "choose a wider --dtype (int32 holds every vocabulary)".into(),
                });
            }
            self.dtype.encode(id, &mut self.encoded);
        }
        let bin = self.bin.as_mut().ok_or_else(|| finished(&self.bin_path))?;
        bin.write_all(&self.encoded)
            .map_err(|e| Error::io(&self.bin_tmp, e))?;
        self.sequence_lengths.push(len as i32);
        Ok(())
    }

    /// Closes the current document (Megatron's `end_document`). A document with no sequences
    /// is recorded as an empty document, as Megatron does.
    pub fn end_document(&mut self) {
        self.document_indices
            .push(self.sequence_lengths.len() as i64);
    }

    /// Writes the index, syncs both files and moves them to their final names. Returns the
    /// final `(idx, bin)` paths.
    pub fn finalize(mut self) -> Result<(PathBuf, PathBuf)> {
        let bin = self.bin.take().ok_or_else(|| finished(&self.bin_path))?;
        let file = bin
            .into_inner()
            .map_err(|e| Error::io(&self.bin_tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.bin_tmp, e))?;
        drop(file);
        self.write_index()?;
        std::fs::rename(&self.bin_tmp, &self.bin_path).map_err(|e| Error::io(&self.bin_path, e))?;
        std::fs::rename(&self.idx_tmp, &self.idx_path).map_err(|e| Error::io(&self.idx_path, e))?;
        Ok((self.idx_path.clone(), self.bin_path.clone()))
    }

    fn write_index(&self) -> Result<()> {
        let io = |e| Error::io(&self.idx_tmp, e);
        let file = File::create(&self.idx_tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(INDEX_MAGIC).map_err(io)?;
        w.write_all(&INDEX_VERSION.to_le_bytes()).map_err(io)?;
        w.write_all(&[self.dtype.code()]).map_err(io)?;
        w.write_all(&(self.sequence_lengths.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&(self.document_indices.len() as u64).to_le_bytes())
            .map_err(io)?;
        for len in &self.sequence_lengths {
            w.write_all(&len.to_le_bytes()).map_err(io)?;
        }
        let size = self.dtype.size_bytes() as i64;
        let mut pointer = 0i64;
        for len in &self.sequence_lengths {
            w.write_all(&pointer.to_le_bytes()).map_err(io)?;
            pointer += *len as i64 * size;
        }
        for d in &self.document_indices {
            w.write_all(&d.to_le_bytes()).map_err(io)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }
}

fn finished(path: &Path) -> Error {
    Error::InvalidArgument(format!("{}: builder already finalized", path.display()))
}

impl Drop for IndexedDatasetBuilder {
    fn drop(&mut self) {
        // Unfinished or failed: remove the temporaries so nothing half-written remains.
        // After a successful finalize both were renamed and removal fails harmlessly.
        let _ = std::fs::remove_file(&self.bin_tmp);
        let _ = std::fs::remove_file(&self.idx_tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_reference_bytes() {
        // megatron-data.md §1: three documents as i32 give this 102-byte index.
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("ref");
        let mut b = IndexedDatasetBuilder::create(&prefix, DType::I32).expect("create");
        for doc in [&[5i64, 6, 7, 1][..], &[8, 9, 1], &[10, 11, 12, 13, 14, 1]] {
            b.add_item(doc).expect("add");
            b.end_document();
        }
        let (idx, bin) = b.finalize().expect("finalize");
        let idx = std::fs::read(idx).expect("idx");
        let mut expect = b"MMIDIDX\0\0".to_vec();
        expect.extend(1u64.to_le_bytes());
        expect.push(4);
        expect.extend(3u64.to_le_bytes());
        expect.extend(4u64.to_le_bytes());
        for l in [4i32, 3, 6] {
            expect.extend(l.to_le_bytes());
        }
        for p in [0i64, 16, 28] {
            expect.extend(p.to_le_bytes());
        }
        for d in [0i64, 1, 2, 3] {
            expect.extend(d.to_le_bytes());
        }
        assert_eq!(idx, expect);
        assert_eq!(std::fs::read(bin).expect("bin").len(), 52);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn out_of_range_token_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("small");
        let mut b = IndexedDatasetBuilder::create(&prefix, DType::U16).expect("create");
        b.add_item(&[1, 2, 3]).expect("add");
        b.end_document();
        let err = b.add_item(&[151_643]).expect_err("must not fit uint16");
        assert!(err
            .to_string()
            .contains("token id 151643 does not fit uint16 (document 1)"));
        drop(b);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
