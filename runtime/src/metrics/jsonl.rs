//! [`JsonlWriter`]: one JSON object per line, for metrics that scripts (pandas, jq) read.
//!
//! Each record is serialized in full and handed to the operating system in a single `write`
//! on a file opened for appending, so a crash leaves at most one torn last line and never
//! interleaves records. Reopening an existing file appends (a resumed run continues the same
//! file). After a resume from step N the file may already hold lines for steps after N from the
//! interrupted run; readers should keep the last line per step.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Error, Result};

/// Appends JSON lines to one file.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: File,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it and its parent directories if needed.
    ///
    /// If the file ends in a torn line (the previous writer died mid-write), a newline is added
    /// first so the next record starts on a line of its own; the torn line stays, and a warning
    /// is logged.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let io_error = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io_error)?;
        if ends_in_torn_line(&mut file).map_err(io_error)? {
            tracing::warn!(path = %path.display(), "metrics file ends in a torn line; appending after it");
            file.write_all(b"\n").map_err(io_error)?;
        }
        Ok(JsonlWriter { path, file })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line. `record` should serialize to a JSON object; non-finite
    /// floats become `null`, as JSON has no NaN.
    pub fn write<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|source| Error::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Syncs the file to disk.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Whether `file` is non-empty and its last byte is not a newline.
fn ends_in_torn_line(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn lines(path: &Path) -> Vec<Value> {
        let text = fs::read_to_string(path).expect("read jsonl");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    #[test]
    fn writes_one_object_per_line_and_appends_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/metrics.jsonl");
        let mut writer = JsonlWriter::open(&path).expect("open");
        writer
            .write(&json!({"step": 1, "loss": 2.5}))
            .expect("write");
        writer
            .write(&json!({"step": 2, "loss": f64::NAN}))
            .expect("write");
        drop(writer);
        // Visible without closing: every line is flushed.
        assert_eq!(lines(&path).len(), 2);

        let mut writer = JsonlWriter::open(&path).expect("reopen");
        writer.write(&json!({"step": 3})).expect("write");
        writer.sync().expect("sync");
        assert_eq!(
            lines(&path),
            [
                json!({"step": 1, "loss": 2.5}),
                json!({"step": 2, "loss": null}),
                json!({"step": 3})
            ]
        );
    }

    #[test]
    fn torn_last_line_is_terminated_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\": 1}\n{\"step\": 2, \"lo").expect("write torn file");
        let mut writer = JsonlWriter::open(&path).expect("open");
        writer.write(&json!({"step": 2})).expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"step\": 1}\n{\"step\": 2, \"lo\n{\"step\":2}\n");
    }

    #[test]
    fn unserializable_record_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.jsonl");
        let mut writer = JsonlWriter::open(&path).expect("open");
        let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = writer.write(&bad).expect_err("tuple keys are not JSON");
        assert!(err.to_string().contains("metrics.jsonl"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "");
    }
}
