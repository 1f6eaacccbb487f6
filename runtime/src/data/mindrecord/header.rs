//! The shard header: its JSON, the page table, and the row groups built from it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Error, Result, HINT};

/// MindSpore's `kMaxHeaderSize` (128 MiB): a larger header length means a damaged file.
const MAX_HEADER_BYTES: u64 = 128 << 20;
/// MindSpore's `kMaxPageSize` (256 MiB): this bounds the reader's buffer.
const MAX_PAGE_BYTES: u64 = 256 << 20;

/// The header JSON of one shard (the fields this reader needs).
#[derive(Debug, Deserialize)]
pub(super) struct HeaderJson {
    pub(super) header_size: u64,
    pub(super) page_size: u64,
    #[serde(default)]
    pub(super) page: Option<Vec<PageJson>>,
    pub(super) schema: Vec<SchemaJson>,
    pub(super) shard_addresses: Vec<String>,
    #[serde(default)]
    pub(super) shard_id: Option<u64>,
}

/// One entry of the header's `page` list.
#[derive(Debug, Deserialize)]
pub(super) struct PageJson {
    pub(super) page_id: u64,
    pub(super) page_type: String,
    pub(super) page_type_id: i64,
    pub(super) start_row_id: u64,
    pub(super) end_row_id: u64,
    pub(super) page_size: u64,
    #[serde(default)]
    pub(super) row_group_ids: Option<Vec<RowGroupJson>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RowGroupJson {
    pub(super) id: i64,
    pub(super) offset: u64,
}

/// The dataset schema: field types and which fields are stored as blobs.
#[derive(Debug, PartialEq, Deserialize)]
pub(super) struct SchemaJson {
    pub(super) blob_fields: Vec<String>,
    pub(super) schema: BTreeMap<String, FieldJson>,
}

#[derive(Debug, PartialEq, Deserialize)]
pub(super) struct FieldJson {
    #[serde(rename = "type")]
    pub(super) ty: String,
    #[serde(default)]
    pub(super) shape: Option<Vec<i64>>,
}

/// A byte range of a shard file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) offset: u64,
    pub(super) len: u64,
}

/// One row group: `rows` records whose blobs fill `blob` and whose raw rows fill `raw`.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) rows: u64,
    pub(super) blob: Span,
    pub(super) raw: Span,
}

/// One shard file and its row groups in row order.
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) path: PathBuf,
    pub(super) groups: Vec<Group>,
}

/// Reads and parses the header of one shard file, checking its size fields.
pub(super) fn read_header(path: &Path) -> Result<HeaderJson> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        let reason = format!("file is {file_len} bytes, too short for the header length at byte 0");
        return Err(Error::corrupt(
            path,
            format!("{reason}; not a MindRecord file or {HINT}"),
        ));
    }
    file.read_exact(&mut len_bytes)
        .map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(len_bytes);
    if n == 0 || n > MAX_HEADER_BYTES || n > file_len - 8 {
        let reason = format!(
            "header length {n} at byte 0 is impossible for a file of {file_len} bytes; not a \
             MindRecord file (or encrypted with mindspore.mindrecord.set_enc_key) or {HINT}"
        );
        return Err(Error::corrupt(path, reason));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).map_err(|e| Error::io(path, e))?;
    let header: HeaderJson = serde_json::from_slice(&json).map_err(|e| {
        let reason = format!(
            "header json at byte 8 is invalid ({e}); not a MindRecord file (or encrypted with \
             mindspore.mindrecord.set_enc_key) or {HINT}"
        );
        Error::corrupt(path, reason)
    })?;
    let sizes_ok = header.header_size >= n + 8
        && header.page_size > 0
        && header.page_size <= MAX_PAGE_BYTES
        && header
            .page
            .as_ref()
            .is_none_or(|p| p.is_empty() || header.header_size <= file_len);
    if !sizes_ok {
        let reason = format!(
            "header at byte 8 gives header_size {} and page_size {} for a {n}-byte header in a \
             {file_len}-byte file; {HINT}",
            header.header_size, header.page_size
        );
        return Err(Error::corrupt(path, reason));
    }
    if let Some(pages) = &header.page {
        check_pages(path, pages, &header, file_len)?;
    }
    Ok(header)
}

/// Checks that every page lies inside the file.
fn check_pages(path: &Path, pages: &[PageJson], h: &HeaderJson, file_len: u64) -> Result<()> {
    for p in pages {
        let start = p
            .page_id
            .checked_mul(h.page_size)
            .and_then(|o| o.checked_add(h.header_size));
        let end = start.and_then(|s| s.checked_add(p.page_size));
        let fits = p.page_size <= h.page_size && p.end_row_id >= p.start_row_id;
        match (start, end) {
            (Some(_), Some(end)) if fits && end <= file_len => {}
            _ => {
                let reason = format!(
                    "page {} (header at byte 8) uses {} bytes at byte {} but the file is \
                     {file_len} bytes and pages hold {}; {HINT}",
                    p.page_id,
                    p.page_size,
                    start.map_or("(overflow)".to_owned(), |s| s.to_string()),
                    h.page_size
                );
                return Err(Error::corrupt(path, reason));
            }
        }
    }
    Ok(())
}

/// Pairs each blob page (a row group) with its rows in the raw pages, in row order.
pub(super) fn row_groups(path: &Path, h: &HeaderJson) -> Result<Vec<Group>> {
    let pages = h.page.as_deref().unwrap_or_default();
    let base = |p: &PageJson| h.header_size + p.page_id * h.page_size; // checked in check_pages
    let mut raw: BTreeMap<i64, Span> = BTreeMap::new();
    let mut blobs = Vec::new();
    for p in pages {
        match p.page_type.as_str() {
            "BLOB_DATA" => blobs.push(p),
            "RAW_DATA" => {
                let mut ids: Vec<&RowGroupJson> = p.row_group_ids.iter().flatten().collect();
                ids.sort_by_key(|g| g.offset);
                for (k, g) in ids.iter().enumerate() {
                    let end = ids.get(k + 1).map_or(p.page_size, |next| next.offset);
                    if end > p.page_size || g.offset > end {
                        let reason = format!(
                            "row group {} of raw page {} starts at offset {} beyond the page's \
                             {} bytes (header at byte 8); {HINT}",
                            g.id, p.page_id, g.offset, p.page_size
                        );
                        return Err(Error::corrupt(path, reason));
                    }
                    let span = Span {
                        offset: base(p) + g.offset,
                        len: end - g.offset,
                    };
                    raw.insert(g.id, span);
                }
            }
            other => {
                let reason = format!(
                    "page {} has unknown page_type {other:?} (header at byte 8); {HINT}",
                    p.page_id
                );
                return Err(Error::corrupt(path, reason));
            }
        }
    }
    blobs.sort_by_key(|p| p.page_type_id);
    let mut groups = Vec::with_capacity(blobs.len());
    for p in blobs {
        let Some(raw) = raw.get(&p.page_type_id).copied() else {
            let reason = format!(
                "blob page {} (row group {}) has no row group in any raw page (header at byte \
                 8); {HINT}",
                p.page_id, p.page_type_id
            );
            return Err(Error::corrupt(path, reason));
        };
        let blob = Span {
            offset: base(p),
            len: p.page_size,
        };
        groups.push(Group {
            rows: p.end_row_id - p.start_row_id,
            blob,
            raw,
        });
    }
    Ok(groups)
}
