//! TensorBoard event files: [`EventWriter`] and the strict reader [`read_events`].
//!
//! A file is a sequence of TFRecord records (`tfrecord.rs`), each an encoded
//! [`Event`] ([`super::event`]); the first is the `file_version = "brain.Event:2"` header.
//! TensorBoard finds files by name (`events.out.tfevents.*`) in a run directory, so one
//! directory per run (per rank, in MindFormers' layout `<dir>/rank_<id>/`) is the convention.
//!
//! Every scalar or text is its own event, as tensorboardX writes them, so a reader that stops at
//! a torn trailing record loses at most one value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::event::Event;
use super::tfrecord::{self, ReadError, RecordReader};
use super::{Error, Result};

/// Writes one TensorBoard event file.
///
/// Records are buffered; call [`EventWriter::flush`] once per step so TensorBoard (and anyone
/// tailing the file) sees them, and [`EventWriter::close`] at the end to make them durable.
/// Dropping the writer flushes but ignores errors and does not sync.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` (and its parents) and a new events file in it named
    /// `events.out.tfevents.<unix secs, 10 digits>.<hostname>`, then writes the header.
    ///
    /// If that name is taken (two writers started in the same second), `.<pid>.<n>` is
    /// appended (the form test-infrastructure.md §8 allows); an existing file is never
    /// overwritten.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let now = wall_time();
        let base = events_file_name(now as u64, &hostname());
        let pid = std::process::id();
        let mut n = 0u32;
        loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{pid}.{n}")
            };
            match Self::create(dir.join(name), now) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                    n += 1;
                }
                result => return result,
            }
        }
    }

    /// Creates the events file `path` (which must not exist; its directory must) and writes
    /// the header with `start_wall_time`. For callers that choose the name and clock
    /// themselves, such as reproducible fixtures; [`EventWriter::new`] is the usual entry point.
    pub fn create(path: impl Into<PathBuf>, start_wall_time: f64) -> Result<Self> {
        let path = path.into();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        tracing::debug!(path = %path.display(), "writing TensorBoard events");
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.write_event(&Event::header(start_wall_time))?;
        Ok(writer)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the scalar `tag = value` at `step`, stamped with the current time.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<()> {
        self.write_event(&Event::scalar(wall_time(), step, tag, value))
    }

    /// Writes a text summary (rendered as Markdown by TensorBoard's text dashboard) at `step`,
    /// stamped with the current time.
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> Result<()> {
        self.write_event(&Event::text(wall_time(), step, tag, text))
    }

    /// Writes `event` as one record, as given (wall time included).
    pub fn write_event(&mut self, event: &Event) -> Result<()> {
        let record = tfrecord::frame(&event.encode());
        self.out
            .write_all(&record)
            .map_err(|source| self.io_error(source))
    }

    /// Hands buffered records to the operating system, so readers see them.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| self.io_error(source))
    }

    /// Flushes and syncs the file to disk, so the records survive a machine crash.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Reads every event of the file at `path`, checking both checksums of every record.
///
/// Unlike TensorBoard's `EventAccumulator`, which skips damaged records silently, the first
/// bad checksum, truncated record or malformed message is an [`Error::Corrupt`] naming the
/// file and the byte offset. A file that is still being written may end in a torn record;
/// that too is reported, because this reader is meant for finished files and tests.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let io_error = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let mut reader = RecordReader::new(BufReader::new(file), len);
    let mut events = Vec::new();
    loop {
        let (offset, data) = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(events),
            Err(ReadError::Io(source)) => return Err(io_error(source)),
            Err(ReadError::Corrupt { offset, reason }) => {
                return Err(Error::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                })
            }
        };
        let data_offset = offset + tfrecord::HEADER_LEN as u64;
        let event = Event::decode(&data).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            offset: data_offset + e.pos as u64,
            reason: format!("record {} is not a valid Event: {}", events.len(), e.reason),
        })?;
        events.push(event);
    }
}

/// The file name TensorBoard's writers use: `events.out.tfevents.<secs, 10 digits>.<host>`.
pub fn events_file_name(unix_secs: u64, hostname: &str) -> String {
    format!("events.out.tfevents.{unix_secs:010}.{hostname}")
}

/// Seconds since the Unix epoch; 0 if the clock is before it.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's host name, reduced to characters safe in a file name.
///
/// Read from the kernel rather than the environment (`HOSTNAME` is a shell variable, usually
/// not exported); `localhost` if it cannot be read, which only affects the file name.
fn hostname() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "localhost".to_owned());
    raw.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::event::{scalars, texts, SummaryData};
    use super::*;

    /// The committed fixture, checked by `scripts/tensorboard-check/verify_events.py`.
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/assets/tensorboard/events.out.tfevents.1700000000.fixture"
    );

    /// Writes the fixture's events to `path`; fixed clocks make the bytes reproducible.
    fn write_fixture(path: &Path) -> Result<()> {
        let t0 = 1_700_000_000.0;
        let mut writer = EventWriter::create(path, t0)?;
        writer.write_event(&Event::text(
            t0,
            0,
            "config/model",
            "qwen3-tiny: *4 layers*",
        ))?;
        for (step, loss, lr) in [(1i64, 10.5f32, 1e-4f32), (2, 9.25, 2e-4), (3, 8.0, 3e-4)] {
            let t = t0 + step as f64;
            writer.write_event(&Event::scalar(t, step, "loss", loss))?;
            writer.write_event(&Event::scalar(t, step, "learning-rate", lr))?;
            writer.write_event(&Event::scalar(t, step * 8, "loss vs samples", loss))?;
        }
        writer.close()
    }

    #[test]
    fn write_then_read_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run/rank_0");
        let mut writer = EventWriter::new(&run)?;
        writer.add_scalar("loss", 2.5, 1)?;
        writer.add_scalar("loss", 2.25, 2)?;
        writer.add_text("config/seed", "1234", 0)?;
        writer.flush()?;
        let path = writer.path().to_owned();
        writer.close()?;

        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let secs = name
            .strip_prefix("events.out.tfevents.")
            .and_then(|r| r.split('.').next());
        assert!(secs.is_some_and(|s| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit())));

        let events = read_events(&path)?;
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(scalars(&events, "loss"), [(1, 2.5), (2, 2.25)]);
        assert_eq!(texts(&events, "config/seed"), [(0, "1234")]);
        let now = wall_time();
        assert!(events.iter().all(|e| (now - e.wall_time).abs() < 600.0));
        Ok(())
    }

    #[test]
    fn second_writer_in_same_second_gets_a_new_file() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = EventWriter::new(dir.path())?;
        let second = EventWriter::new(dir.path())?;
        assert_ne!(first.path(), second.path());
        Ok(())
    }

    #[test]
    fn corrupted_byte_is_reported_with_offset() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.out.tfevents.0000000001.test");
        write_fixture(&path)?;
        let mut bytes = fs::read(&path).expect("read fixture copy");
        // The header record is 12 + 24 + 4 = 40 bytes; byte 60 is inside the second record's data.
        bytes[60] ^= 0x40;
        fs::write(&path, &bytes).expect("write corrupted copy");
        match read_events(&path) {
            Err(Error::Corrupt {
                path: p,
                offset,
                reason,
            }) => {
                assert_eq!((p, offset), (path.clone(), 52));
                assert!(reason.contains("checksum"), "{reason}");
                let message = read_events(&path).expect_err("still corrupt").to_string();
                assert!(
                    message.contains("events.out.tfevents.0000000001.test"),
                    "{message}"
                );
                assert!(message.contains("offset 52"), "{message}");
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn truncated_file_is_an_error() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.out.tfevents.0000000001.test");
        write_fixture(&path)?;
        let bytes = fs::read(&path).expect("read fixture copy");
        for cut in [bytes.len() - 1, bytes.len() - 5, 45] {
            fs::write(&path, &bytes[..cut]).expect("write truncated copy");
            match read_events(&path) {
                Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("truncated")),
                other => panic!("cut at {cut}: expected truncation, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn committed_fixture_decodes() -> Result<()> {
        let events = read_events(FIXTURE)?;
        assert_eq!(events.len(), 11);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events[0].wall_time, 1_700_000_000.0);
        assert_eq!(scalars(&events, "loss"), [(1, 10.5), (2, 9.25), (3, 8.0)]);
        assert_eq!(
            scalars(&events, "learning-rate"),
            [(1, 1e-4), (2, 2e-4), (3, 3e-4)]
        );
        assert_eq!(
            scalars(&events, "loss vs samples"),
            [(8, 10.5), (16, 9.25), (24, 8.0)]
        );
        assert_eq!(
            texts(&events, "config/model"),
            [(0, "qwen3-tiny: *4 layers*")]
        );
        assert_eq!(events[10].wall_time, 1_700_000_003.0);
        assert!(matches!(events[1].values[0].data, SummaryData::Text(_)));
        Ok(())
    }

    #[test]
    fn committed_fixture_is_what_the_writer_produces() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events");
        write_fixture(&path)?;
        let ours = fs::read(&path).expect("read regenerated fixture");
        let committed = fs::read(FIXTURE).expect("read committed fixture");
        assert!(
            ours == committed,
            "writer output changed; see tests/assets/tensorboard/README.md"
        );
        Ok(())
    }

    /// Regenerates the committed fixture (then rerun `verify_events.py`, see its README).
    #[test]
    #[ignore = "writes tests/assets/tensorboard; run by hand"]
    fn regenerate_fixture() -> Result<()> {
        let _ = fs::remove_file(FIXTURE);
        write_fixture(Path::new(FIXTURE))
    }
}
