//! MindSpore `.ckpt` files (`checkpoint_format: ckpt`): model weights in the format that
//! `mindspore.save_checkpoint` writes and `mindspore.load_checkpoint` reads.
//!
//! # Format (checked against MindSpore 2.10.0)
//!
//! MindSpore's `mindspore/train/checkpoint_pb2.py` is compiled from this proto2 schema:
//!
//! ```text
//! message Checkpoint {
//!   message Value {
//!     required string tag = 1;
//!     oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
//!   }
//!   repeated Value value = 1;
//! }
//! message TensorProto {
//!   repeated int64 dims = 1;          // proto2: not packed, one varint field per dim
//!   required string tensor_type = 2;  // "Float32", "BFloat16", "Float16", "Int32", ...
//!   required bytes tensor_content = 3; // row-major, little-endian
//! }
//! message MapTensorProto { repeated TensorProto tensor = 1; }
//! ```
//!
//! There is no header, magic number or index. `save_checkpoint` (`_exec_save` in
//! `mindspore/train/serialization.py`) writes, for each parameter in order, one serialized
//! `Checkpoint` holding a single `Value`, and simply concatenates them; protobuf parses a
//! concatenation of messages as one message whose repeated field holds all values, and
//! `load_checkpoint` reads the whole file into memory and parses it that way. A tensor of more
//! than 512 MiB of content is split into 512 MiB byte slices, each written as its own `Value`
//! with the same tag and the *full* dims; the loader joins consecutive values with the same tag.
//! Fields are written in field-number order (tag, tensor; dims, type, content). Scalars have no
//! dims; a tensor with zero elements is not written at all by MindSpore (see below).
//!
//! Optional extras, both off by default in `save_checkpoint` and not written here: with
//! `crc_check=True` the file ends with the 7 bytes `crc_num` and a 10-byte big-endian CRC-32 of
//! everything before it (the loader strips this trailer whenever it is present); with `enc_key`
//! the whole protobuf stream is encrypted (AES-GCM/AES-CBC/SM4 blocks), which this module does not
//! support. MindSpore also leaves its files read-only (mode 0400); this module does not.
//!
//! `load_checkpoint` maps `tensor_type` through a fixed table; the strings used here are
//! `"Float32"` and `"BFloat16"` (`str(mindspore.float32)` / `str(mindspore.bfloat16)`); any other
//! spelling (`"float32"`, `"F32"`) fails with a `KeyError`.
//!
//! Byte identity: given the same names, shapes and values in the same order, [`write_ckpt`] and
//! [`write_ckpt_as`] produce exactly the bytes of `mindspore.save_checkpoint` (checked against
//! `tests/assets/mindspore_ckpt/`, written by `scripts/mindspore-ckpt/gen_fixture.py`).
//! bfloat16 conversion rounds to nearest even and writes every NaN as `0x7fc0`, as MindSpore's
//! float32 → bfloat16 cast does.
//!
//! # Parameter names
//!
//! Names are written as given; the runtime passes Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`). MindSpore Transformers' Qwen3 networks use
//! other names: `Qwen3PreTrainedModel.weight_mapping` in `mindformers/models/qwen3/utils.py`
//! lists substring renames such as `model.embed_tokens.` → `embedding.word_embeddings.`,
//! `.self_attn.q_proj.` → `.self_attention.linear_q.`, `.mlp.gate_proj.` → `.mlp.gating.`,
//! `model.norm.` → `decoder.final_layernorm.`, `lm_head.` → `output_layer.`, `model.layers.` →
//! `decoder.layers.`, but its training network also fuses q/k/v into `linear_qkv` and gate/up into
//! `linear_fc1` when it loads weights, and the prefix under which it saves them could not be
//! established from the source at hand. So no name mapping is offered here: a `.ckpt` from this
//! module loads with `mindspore.load_checkpoint` under HF names, and a MindSpore Transformers
//! user converts names (or loads the HF safetensors checkpoint, which it supports directly).
//!
//! # Errors
//!
//! All functions return [`std::io::Error`]: I/O errors as they come, malformed input to the writer
//! (shape not matching the data, empty or duplicate names) as [`ErrorKind::InvalidInput`], and
//! files the reader cannot decode as [`ErrorKind::InvalidData`], each with a message naming the
//! file and the tensor.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The `tensor_type` string MindSpore writes for float32 tensors.
pub const FLOAT32: &str = "Float32";
/// The `tensor_type` string MindSpore writes for bfloat16 tensors.
pub const BFLOAT16: &str = "BFloat16";

/// Largest tensor content of one `Value` record (MindSpore's `1024 * SLICE_SIZE`, 512 MiB).
const SLICE_BYTES: usize = 512 * 1024 * 1024;

/// The trailer that `save_checkpoint(..., crc_check=True)` appends before the CRC.
const CRC_MARK: &[u8] = b"crc_num";

/// A tensor read back by [`read_ckpt`]: name, shape and row-major values (as f32).
pub type CkptTensor = (String, Vec<usize>, Vec<f32>);

/// Element type in which [`write_ckpt_as`] stores the tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CkptDtype {
    /// IEEE float32, `tensor_type` `"Float32"`, 4 bytes per element.
    #[default]
    Float32,
    /// bfloat16 (the upper half of a float32, rounded to nearest even), `tensor_type`
    /// `"BFloat16"`, 2 bytes per element.
    BFloat16,
}

impl CkptDtype {
    /// The `tensor_type` string MindSpore uses for this type.
    pub fn tensor_type(self) -> &'static str {
        match self {
            CkptDtype::Float32 => FLOAT32,
            CkptDtype::BFloat16 => BFLOAT16,
        }
    }

    fn size(self) -> usize {
        match self {
            CkptDtype::Float32 => 4,
            CkptDtype::BFloat16 => 2,
        }
    }

    fn from_tensor_type(s: &str) -> Option<Self> {
        match s {
            FLOAT32 => Some(CkptDtype::Float32),
            BFLOAT16 => Some(CkptDtype::BFloat16),
            _ => None,
        }
    }
}

/// Writes `tensors` (name, shape, row-major values) as float32 to the MindSpore checkpoint
/// `path`, in the given order; see [`write_ckpt_as`].
pub fn write_ckpt(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> io::Result<()> {
    write_ckpt_as(path, tensors, CkptDtype::Float32)
}

/// Writes `tensors` (name, shape, row-major values) to the MindSpore checkpoint `path`, in the
/// given order, stored as `dtype`.
///
/// The file is written as `<path>.tmp`, synced, renamed to `path` (replacing an existing file)
/// and the directory synced, so `path` is never left half-written. Names must be unique and
/// non-empty and each shape's product must equal its value count, else
/// [`ErrorKind::InvalidInput`] before anything is written. `mindspore.load_checkpoint` needs
/// the file name to end in `.ckpt`; that is left to the caller.
pub fn write_ckpt_as(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: CkptDtype,
) -> io::Result<()> {
    validate(tensors)?;
    let tmp = tmp_path(path);
    let written = File::create(&tmp).and_then(|file| {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write_records(&mut w, tensors, dtype, SLICE_BYTES)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(with_path(e, &tmp));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

/// Reads a MindSpore checkpoint of float32 and bfloat16 tensors: (name, shape, values as f32),
/// in file order, slices of one tensor joined as `load_checkpoint` joins them.
///
/// A `crc_num` trailer is checked and removed. Unknown fields are skipped; map tensors, other
/// element types and content whose length does not match the shape are
/// [`ErrorKind::InvalidData`]. Meant for tests and tools: it reads the whole file into memory.
pub fn read_ckpt(path: &Path) -> io::Result<Vec<CkptTensor>> {
    let bytes = std::fs::read(path).map_err(|e| with_path(e, path))?;
    parse(&bytes)
        .map_err(|msg| io::Error::new(ErrorKind::InvalidData, format!("{}: {msg}", path.display())))
}

fn validate(tensors: &[(String, Vec<usize>, &[f32])]) -> io::Result<()> {
    let mut seen = HashSet::new();
    for (name, shape, data) in tensors {
        let invalid = |msg: String| Err(io::Error::new(ErrorKind::InvalidInput, msg));
        if name.is_empty() {
            return invalid("MindSpore checkpoint: empty tensor name".into());
        }
        if !seen.insert(name.as_str()) {
            // load_checkpoint would concatenate adjacent duplicates into one tensor.
            return invalid(format!(
                "MindSpore checkpoint: duplicate tensor name {name:?}"
            ));
        }
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count != Some(data.len()) {
            return invalid(format!(
                "MindSpore checkpoint: tensor {name:?} has shape {shape:?} but {} values",
                data.len()
            ));
        }
        if shape.iter().any(|&d| i64::try_from(d).is_err()) {
            return invalid(format!(
                "MindSpore checkpoint: tensor {name:?} dims exceed int64"
            ));
        }
    }
    Ok(())
}

/// The protobuf stream, one `Checkpoint { value: [Value] }` per slice of at most `slice_bytes`
/// of content, exactly as `_write_parameter_bytes_data` emits it.
pub(crate) fn write_records<W: Write>(
    w: &mut W,
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: CkptDtype,
    slice_bytes: usize,
) -> io::Result<()> {
    let elem = dtype.size();
    let per_slice = (slice_bytes / elem).max(1);
    let tensor_type = dtype.tensor_type().as_bytes();
    let mut buf = Vec::new();
    for (name, shape, data) in tensors {
        // A zero-element tensor gives no slice, so MindSpore writes nothing for it; do the same.
        for slice in data.chunks(per_slice) {
            let content_len = slice.len() * elem;
            let dims_len: usize = shape.iter().map(|&d| 1 + varint_len(d as u64)).sum();
            let tensor_len = dims_len + field_len(tensor_type.len()) + field_len(content_len);
            let value_len = field_len(name.len()) + field_len(tensor_len);

            buf.clear();
            key_len(&mut buf, 1, value_len); // Checkpoint.value
            key_len(&mut buf, 1, name.len()); // Value.tag
            buf.extend_from_slice(name.as_bytes());
            key_len(&mut buf, 2, tensor_len); // Value.tensor
            for &d in shape {
                buf.push(1 << 3); // TensorProto.dims, varint
                put_varint(&mut buf, d as u64);
            }
            key_len(&mut buf, 2, tensor_type.len()); // TensorProto.tensor_type
            buf.extend_from_slice(tensor_type);
            key_len(&mut buf, 3, content_len); // TensorProto.tensor_content
            w.write_all(&buf)?;
            write_content(w, slice, dtype, &mut buf)?;
        }
    }
    w.flush()
}

fn write_content<W: Write>(
    w: &mut W,
    data: &[f32],
    dtype: CkptDtype,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    for block in data.chunks(16 * 1024) {
        buf.clear();
        match dtype {
            CkptDtype::Float32 => block
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            CkptDtype::BFloat16 => block
                .iter()
                .for_each(|&x| buf.extend_from_slice(&f32_to_bf16(x).to_le_bytes())),
        }
        w.write_all(buf)?;
    }
    Ok(())
}

/// float32 → bfloat16 bits, rounding to nearest even; NaN → `0x7fc0` (as MindSpore's cast).
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let bits = x.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited field with a one-byte key (field numbers below 16).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Key of length-delimited field `field` (below 16) and the length.
fn key_len(buf: &mut Vec<u8>, field: u8, len: usize) {
    buf.push((field << 3) | 2);
    put_varint(buf, len as u64);
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads protobuf wire format from a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A field's payload: a varint's value, or a length-delimited field's bytes.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("field of {n} bytes runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field number and payload, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows usize")?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        Ok(Some((key >> 3, payload)))
    }
}

/// One decoded `Value` with a tensor.
struct Record<'a> {
    tag: String,
    dims: Vec<usize>,
    dtype: CkptDtype,
    content: &'a [u8],
}

fn parse(bytes: &[u8]) -> Result<Vec<CkptTensor>, String> {
    let body = strip_crc(bytes)?;
    let mut out: Vec<CkptTensor> = Vec::new();
    // Bytes of the tensor being assembled from slices, and its dtype.
    let mut pending: Option<(CkptDtype, Vec<u8>)> = None;
    let mut r = Reader::new(body);
    while let Some((num, field)) = r.field()? {
        let (1, Field::Bytes(value)) = (num, field) else {
            continue;
        };
        let rec = parse_value(value)?;
        let joins = matches!(out.last(), Some((tag, dims, _)) if *tag == rec.tag && *dims == rec.dims)
            && matches!(&pending, Some((d, _)) if *d == rec.dtype);
        if joins {
            if let Some((_, content)) = pending.as_mut() {
                content.extend_from_slice(rec.content);
            }
        } else {
            finish(&mut out, pending.take())?;
            out.push((rec.tag, rec.dims, Vec::new()));
            pending = Some((rec.dtype, rec.content.to_vec()));
        }
    }
    finish(&mut out, pending)?;
    Ok(out)
}

/// Decodes the assembled content of the last tensor in `out`.
fn finish(out: &mut [CkptTensor], pending: Option<(CkptDtype, Vec<u8>)>) -> Result<(), String> {
    let (Some((name, dims, values)), Some((dtype, content))) = (out.last_mut(), pending) else {
        return Ok(());
    };
    let count: usize = dims.iter().product();
    if count.checked_mul(dtype.size()) != Some(content.len()) {
        return Err(format!(
            "tensor {name:?}: shape {dims:?} of {} needs {} bytes, content has {}",
            dtype.tensor_type(),
            count.saturating_mul(dtype.size()),
            content.len()
        ));
    }
    *values = match dtype {
        CkptDtype::Float32 => content
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        CkptDtype::BFloat16 => content
            .chunks_exact(2)
            .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    };
    Ok(())
}

fn parse_value(value: &[u8]) -> Result<Record<'_>, String> {
    let mut tag = None;
    let mut tensor = None;
    let mut r = Reader::new(value);
    while let Some((num, field)) = r.field()? {
        match (num, field) {
            (1, Field::Bytes(b)) => {
                tag = Some(String::from_utf8(b.to_vec()).map_err(|_| "tag is not UTF-8")?)
            }
            (2, Field::Bytes(b)) => tensor = Some(b),
            (3, _) => {
                let tag = tag.unwrap_or_default();
                return Err(format!("{tag:?} is a map tensor, which is not supported"));
            }
            _ => {}
        }
    }
    let tag = tag.ok_or("value without a tag")?;
    let tensor = tensor.ok_or_else(|| format!("{tag:?} has no tensor"))?;
    let (mut dims, mut tensor_type, mut content) = (Vec::new(), None, None);
    let mut r = Reader::new(tensor);
    while let Some((num, field)) = r.field()? {
        match (num, field) {
            (1, Field::Varint(d)) => dims.push(dim(d, &tag)?),
            (1, Field::Bytes(packed)) => {
                let mut p = Reader::new(packed);
                while p.pos < packed.len() {
                    dims.push(dim(p.varint()?, &tag)?);
                }
            }
            (2, Field::Bytes(b)) => tensor_type = Some(String::from_utf8_lossy(b).into_owned()),
            (3, Field::Bytes(b)) => content = Some(b),
            _ => {}
        }
    }
    let tensor_type = tensor_type.ok_or_else(|| format!("{tag:?} has no tensor_type"))?;
    let dtype = CkptDtype::from_tensor_type(&tensor_type).ok_or_else(|| {
        format!("{tag:?} has tensor_type {tensor_type:?}; only {FLOAT32} and {BFLOAT16} are read")
    })?;
    let content = content.ok_or_else(|| format!("{tag:?} has no tensor_content"))?;
    Ok(Record {
        tag,
        dims,
        dtype,
        content,
    })
}

fn dim(d: u64, tag: &str) -> Result<usize, String> {
    // int64 dims: a negative one is a 10-byte varint with the top bit set.
    usize::try_from(d)
        .ok()
        .filter(|_| i64::try_from(d).is_ok())
        .ok_or_else(|| format!("{tag:?} has a negative or huge dim {}", d as i64))
}

/// Removes and checks the `crc_num` + 10-byte big-endian CRC-32 trailer, if present.
fn strip_crc(bytes: &[u8]) -> Result<&[u8], String> {
    let Some(split) = bytes.len().checked_sub(17) else {
        return Ok(bytes);
    };
    if &bytes[split..split + 7] != CRC_MARK {
        return Ok(bytes);
    }
    let stored = bytes[split + 7..]
        .iter()
        .fold(0u128, |v, &b| (v << 8) | u128::from(b));
    let body = &bytes[..split];
    if stored != u128::from(crc32(body)) {
        return Err(format!(
            "CRC mismatch: file says {stored}, content has {}",
            crc32(body)
        ));
    }
    Ok(body)
}

/// CRC-32 (IEEE, as Python's `binascii.crc32`), bitwise; the reader is for tests and tools.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
