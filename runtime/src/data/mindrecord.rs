//! Reading MindSpore MindRecord files: the token-id field of every record, in dataset order.
//!
//! MindSpore Transformers stores pretraining data as MindRecord shards with an integer array
//! field (usually `input_ids`, int32 or int64, shape `[-1]`). [`MindRecordReader`] reads the
//! shard files directly (never the sqlite `.db` index beside them), one page at a time, in the
//! order `mindspore.mindrecord.FileReader` and `MindDataset(..., shuffle=False)` return records:
//! shard by shard in the order of the header's `shard_addresses`, rows in write order.
//!
//! [`convert`] writes such a field to a Megatron `.bin/.idx` pair.
//!
//! On-disk layout (MindSpore `mindrecord/io/shard_writer.cc`, `meta/shard_header.cc`,
//! `meta/shard_column.cc`; `tests/assets/mindrecord/README.md` has the details):
//! - bytes `0..8`: the header JSON's length `n` (u64, little-endian), then `n` bytes of JSON:
//!   `header_size`, `page_size`, `schema`, `shard_addresses`, `shard_id` and `page`, the list of
//!   this shard's pages. Page `i` starts at `header_size + i * page_size`; its JSON `page_size` is
//!   the number of bytes used.
//! - a `BLOB_DATA` page holds rows `start_row_id..end_row_id` of row group `page_type_id`, each
//!   as a u64 little-endian length and the row's blob: the single blob field's bytes, or, with
//!   several blob fields, each field (in `blob_fields` order) as a u64 big-endian length and its
//!   bytes. When the schema has an int32/int64 array field, integer blob fields are compressed:
//!   a u32 big-endian count, a 2-bit-per-element width map (most significant bits first; 0..=3
//!   mean 1, 2, 4 or 8 bytes), then the little-endian values.
//! - a `RAW_DATA` page holds row groups starting at `row_group_ids[].offset`; each row is a u64
//!   little-endian length and the MessagePack map of the row's non-blob (scalar) fields.

mod header;
mod msgpack;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use self::header::{read_header, row_groups, SchemaJson, Shard};
use self::msgpack::MsgPack;
use super::builder::IndexedDatasetBuilder;
use super::{DType, Error, Result};

/// Hint for damaged files.
const HINT: &str = "the file is truncated or damaged; copy it again or regenerate it with \
                    mindspore.mindrecord.FileWriter";

/// What [`convert`] wrote.
#[derive(Debug)]
pub struct ConvertReport {
    /// Records converted (one document of one sequence each).
    pub records: u64,
    /// Tokens written.
    pub tokens: u64,
    /// Output index (`<prefix>.idx`).
    pub idx: PathBuf,
    /// Output data (`<prefix>.bin`).
    pub bin: PathBuf,
}

/// Converts the integer field `field` of the MindRecord dataset `input` (any of its shards) to
/// `<prefix>.bin/.idx` with tokens stored as `dtype`: each record becomes one document of one
/// sequence, in MindSpore's `MindDataset(shuffle=False)` order. Streams page by page; the
/// outputs appear under their final names only when complete.
pub fn convert(input: &Path, field: &str, prefix: &Path, dtype: DType) -> Result<ConvertReport> {
    let reader = MindRecordReader::open(input)?;
    let records = reader.token_field_records(field)?;
    let mut builder = IndexedDatasetBuilder::create(prefix, dtype)?;
    let (mut count, mut tokens) = (0u64, 0u64);
    for ids in records {
        let ids = ids?;
        builder.add_item(&ids)?;
        builder.end_document();
        count += 1;
        tokens += ids.len() as u64;
    }
    let (idx, bin) = builder.finalize()?;
    Ok(ConvertReport {
        records: count,
        tokens,
        idx,
        bin,
    })
}

/// A MindRecord dataset (one file or all shards of a multi-shard dataset), validated on open.
#[derive(Debug)]
pub struct MindRecordReader {
    path: PathBuf,
    schema: SchemaJson,
    shards: Vec<Shard>,
    num_records: u64,
}

/// Where a field's values live in a record, and how they are encoded.
#[derive(Debug, Clone, Copy)]
enum Location {
    /// Field `index` of `count` blob fields; `compressed`: MindSpore's integer compression.
    Blob {
        index: usize,
        count: usize,
        compressed: bool,
    },
    /// A scalar in the row's MessagePack map.
    Raw,
}

impl MindRecordReader {
    /// Opens the MindRecord file `path` and, when its header lists sibling shards, all of them
    /// (resolved in `path`'s directory), checking every header and page table against the file
    /// sizes. Errors: [`Error::Io`] if a file cannot be read, [`Error::Corrupt`] if a header or
    /// page table is malformed or a sibling belongs to another dataset.
    pub fn open(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        let schema_count = header.schema.len();
        let own = header.shard_id.unwrap_or(0);
        let addresses = header.shard_addresses.clone();
        if schema_count != 1 || addresses.is_empty() || own >= addresses.len() as u64 {
            let reason = format!(
                "the header at byte 8 has {schema_count} schemas, {} shard addresses and shard \
                 id {own}; expected 1 schema and a shard id below the address count; {HINT}",
                addresses.len()
            );
            return Err(Error::corrupt(path, reason));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards = Vec::with_capacity(addresses.len());
        let mut schema = None;
        let mut own_header = Some(header);
        for (i, name) in addresses.iter().enumerate() {
            let (shard_path, h) = match own_header.take_if(|_| i as u64 == own) {
                Some(h) => (path.to_path_buf(), h),
                None => {
                    if Path::new(name).file_name() != Some(std::ffi::OsStr::new(name)) {
                        let reason = format!(
                            "shard address {name:?} in the header at byte 8 is not a plain file \
                             name; {HINT}"
                        );
                        return Err(Error::corrupt(path, reason));
                    }
                    let p = dir.join(name);
                    let h = read_header(&p)?;
                    (p, h)
                }
            };
            let same_dataset = h.shard_addresses == addresses
                && h.shard_id.unwrap_or(0) == i as u64
                && h.schema.len() == 1;
            if !same_dataset {
                let reason = format!(
                    "the header at byte 8 does not describe shard {i} of the dataset of {}; \
                     a shard was renamed or comes from another dataset, keep the shards of one \
                     FileWriter together under their original names",
                    path.display()
                );
                return Err(Error::corrupt(&shard_path, reason));
            }
            let groups = row_groups(&shard_path, &h)?;
            let mut own_schema = h.schema;
            let s = own_schema.pop();
            if schema.is_none() {
                schema = s;
            } else if s != schema {
                let reason = format!(
                    "the schema in the header at byte 8 differs from that of {}; keep the shards \
                     of one FileWriter together under their original names",
                    path.display()
                );
                return Err(Error::corrupt(&shard_path, reason));
            }
            shards.push(Shard {
                path: shard_path,
                groups,
            });
        }
        let schema = schema.ok_or_else(|| Error::corrupt(path, format!("no schema; {HINT}")))?;
        let num_records = shards.iter().flat_map(|s| &s.groups).map(|g| g.rows).sum();
        Ok(MindRecordReader {
            path: path.to_path_buf(),
            schema,
            shards,
            num_records,
        })
    }

    /// The schema's fields as `(name, type, shape)`, sorted by name as MindSpore stores them.
    /// Types are MindRecord's (`int32`, `int64`, `float32`, `float64`, `string`, `bytes`);
    /// the shape is `None` for scalar, string and bytes fields.
    pub fn fields(&self) -> Vec<(String, String, Option<Vec<i64>>)> {
        self.schema
            .schema
            .iter()
            .map(|(n, f)| (n.clone(), f.ty.clone(), f.shape.clone()))
            .collect()
    }

    /// The number of records in all shards.
    pub fn num_records(&self) -> u64 {
        self.num_records
    }

    /// The integers of `field` for every record, in dataset order, flattened: an int32 or int64
    /// array of any shape, or a scalar int32/int64 as a length-1 array. Reads one page at a
    /// time. Errors up front: [`Error::InvalidArgument`] for an unknown or non-integer field;
    /// while iterating: [`Error::Io`] or [`Error::Corrupt`], after which the iterator ends.
    pub fn token_field_records(
        &self,
        field: &str,
    ) -> Result<impl Iterator<Item = Result<Vec<i64>>> + '_> {
        let Some(spec) = self.schema.schema.get(field) else {
            let names: Vec<&str> = self.schema.schema.keys().map(String::as_str).collect();
            return Err(Error::InvalidArgument(format!(
                "mindrecord field `{field}` not found in {}; available fields: {}",
                self.path.display(),
                names.join(", ")
            )));
        };
        let wide = match spec.ty.as_str() {
            "int32" => false,
            "int64" => true,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "mindrecord field `{field}` in {} has type {other}; only int32 and int64 \
                     fields (arrays or scalars) can be read as token ids",
                    self.path.display()
                )))
            }
        };
        let blob = &self.schema.blob_fields;
        let loc = match blob.iter().position(|b| b == field) {
            Some(index) => {
                let compressed = self
                    .schema
                    .schema
                    .values()
                    .any(|f| f.shape.is_some() && (f.ty == "int32" || f.ty == "int64"));
                Location::Blob {
                    index,
                    count: blob.len(),
                    compressed,
                }
            }
            None => Location::Raw,
        };
        Ok(TokenRecords {
            reader: self,
            field: field.to_owned(),
            loc,
            wide,
            shard: 0,
            group: 0,
            file: None,
            buf: Vec::new(),
            buf_offset: 0,
            pos: 0,
            rows_left: 0,
            done: false,
        })
    }
}

/// The iterator of [`MindRecordReader::token_field_records`].
struct TokenRecords<'a> {
    reader: &'a MindRecordReader,
    field: String,
    loc: Location,
    /// int64 field (else int32).
    wide: bool,
    /// Index of the next shard / group to load.
    shard: usize,
    group: usize,
    file: Option<File>,
    /// The current group's blob or raw bytes, read from `buf_offset` of the shard file.
    buf: Vec<u8>,
    buf_offset: u64,
    pos: usize,
    rows_left: u64,
    done: bool,
}

impl Iterator for TokenRecords<'_> {
    type Item = Result<Vec<i64>>;

    fn next(&mut self) -> Option<Result<Vec<i64>>> {
        while !self.done {
            if self.rows_left > 0 {
                self.rows_left -= 1;
                let result = self.record();
                self.done = result.is_err();
                return Some(result);
            }
            if let Err(e) = self.load_next_group() {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }
}

impl TokenRecords<'_> {
    fn path(&self) -> &Path {
        let shard = self
            .reader
            .shards
            .get(self.shard)
            .or(self.reader.shards.last());
        shard.map_or(self.reader.path.as_path(), |s| s.path.as_path())
    }

    /// Reads the next row group's bytes for this field; sets `done` after the last one.
    fn load_next_group(&mut self) -> Result<()> {
        let shards = &self.reader.shards;
        while shards
            .get(self.shard)
            .is_some_and(|s| self.group >= s.groups.len())
        {
            self.shard += 1;
            self.group = 0;
            self.file = None;
        }
        let Some(shard) = shards.get(self.shard) else {
            self.done = true;
            return Ok(());
        };
        let group = &shard.groups[self.group];
        self.group += 1;
        let span = if matches!(self.loc, Location::Raw) {
            group.raw
        } else {
            group.blob
        };
        let path = &shard.path;
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(File::open(path).map_err(|e| Error::io(path, e))?),
        };
        file.seek(SeekFrom::Start(span.offset))
            .map_err(|e| Error::io(path, e))?;
        self.buf.resize(span.len as usize, 0);
        file.read_exact(&mut self.buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::corrupt(
                path,
                format!(
                    "file ends inside the page at byte {}; it shrank after open",
                    span.offset
                ),
            ),
            _ => Error::io(path, e),
        })?;
        self.buf_offset = span.offset;
        self.pos = 0;
        self.rows_left = group.rows;
        Ok(())
    }

    fn corrupt(&self, at: usize, what: String) -> Error {
        let byte = self.buf_offset + at as u64;
        Error::corrupt(self.path(), format!("{what} at byte {byte}; {HINT}"))
    }

    /// Takes `n` bytes at `*pos` of the buffer, not past `end`, or explains what is missing.
    fn bytes_at(&self, pos: &mut usize, end: usize, n: u64, what: &str) -> Result<&[u8]> {
        let avail = end.saturating_sub(*pos) as u64;
        if n > avail {
            return Err(self.corrupt(*pos, format!("{what} needs {n} bytes but {avail} remain")));
        }
        let start = *pos;
        *pos += n as usize;
        Ok(&self.buf[start..*pos])
    }

    fn record(&mut self) -> Result<Vec<i64>> {
        let (mut pos, page_end) = (self.pos, self.buf.len());
        let len_at = pos;
        let len = u64_le(self.bytes_at(&mut pos, page_end, 8, "record length")?);
        let start = pos;
        if self.bytes_at(&mut pos, page_end, len, "record").is_err() {
            let what = format!(
                "record length {len} overruns the page ({} bytes left)",
                page_end - start
            );
            return Err(self.corrupt(len_at, what));
        }
        self.pos = pos;
        let (mut at, mut end) = (start, pos);
        let Location::Blob {
            index,
            count,
            compressed,
        } = self.loc
        else {
            return self.raw_value(at, end);
        };
        if count > 1 {
            let (mut cur, record_end) = (start, end);
            for _ in 0..=index {
                let len_at = cur;
                let n = self.bytes_at(&mut cur, record_end, 8, "blob field length")?;
                let n = u64::from_be_bytes(arr8(n));
                at = cur;
                if self
                    .bytes_at(&mut cur, record_end, n, "blob field")
                    .is_err()
                {
                    let left = record_end - at;
                    let what =
                        format!("blob field length {n} overruns its record ({left} bytes left)");
                    return Err(self.corrupt(len_at, what));
                }
                end = cur;
            }
        }
        self.ints(at, end, compressed)
    }

    /// Decodes the integer array in `buf[at..end]`.
    fn ints(&self, at: usize, end: usize, compressed: bool) -> Result<Vec<i64>> {
        let width = if self.wide { 8 } else { 4 };
        if !compressed {
            if !self.buf[at..end].chunks_exact(width).remainder().is_empty() {
                let what = format!("{}-byte field is not a multiple of {width}", end - at);
                return Err(self.corrupt(at, what));
            }
            return Ok(self.buf[at..end].chunks(width).map(le_signed).collect());
        }
        let mut pos = at;
        let count = u32::from_be_bytes(arr4(self.bytes_at(&mut pos, end, 4, "element count")?));
        let count = count as usize;
        let map = self.bytes_at(&mut pos, end, count.div_ceil(4) as u64, "width map")?;
        let mut out = Vec::with_capacity(count.min(end - at));
        for i in 0..count {
            let code = (map[i / 4] >> (6 - 2 * (i % 4))) & 3;
            let v = le_signed(self.bytes_at(&mut pos, end, 1 << code, "element")?);
            if !self.wide && i32::try_from(v).is_err() {
                return Err(self.corrupt(pos, format!("element {v} does not fit int32")));
            }
            out.push(v);
        }
        if pos != end {
            let what = format!(
                "{count} compressed elements leave {} bytes unused",
                end - pos
            );
            return Err(self.corrupt(pos, what));
        }
        Ok(out)
    }

    /// Finds the field in the raw row `buf[at..end]`, a MessagePack map.
    fn raw_value(&self, at: usize, end: usize) -> Result<Vec<i64>> {
        let mut mp = MsgPack {
            b: &self.buf[..end],
            pos: at,
        };
        match mp.find_int(self.field.as_bytes()) {
            Ok(Some(v)) if self.wide || i32::try_from(v).is_ok() => Ok(vec![v]),
            Ok(Some(v)) => Err(self.corrupt(at, format!("value {v} does not fit int32"))),
            Ok(None) => Err(self.corrupt(at, format!("raw row has no `{}` value", self.field))),
            Err(what) => Err(self.corrupt(mp.pos, format!("raw row {what}"))),
        }
    }
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(arr8(b))
}

/// Sign-extends a 1-, 2-, 4- or 8-byte little-endian integer.
fn le_signed(b: &[u8]) -> i64 {
    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) {
        [0xffu8; 8]
    } else {
        [0u8; 8]
    };
    a[..b.len()].copy_from_slice(b);
    i64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
