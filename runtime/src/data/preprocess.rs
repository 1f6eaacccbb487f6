//! `pretrain preprocess`: JSON lines → Megatron `.bin/.idx`, as Megatron's
//! `tools/preprocess_data.py` does it, but streaming, multithreaded and fast.
//!
//! One reader thread cuts the input into batches of lines, `workers` threads parse and tokenize
//! them, and the calling thread writes documents in input order. A fixed number of batch
//! "credits" bounds the batches in flight, so memory stays bounded however large the corpus.
//! Outputs appear under their final names only when complete (see [`super::builder`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::builder::IndexedDatasetBuilder;
use super::tokenizer::{HfTokenizer, WorkerEncoder};
use super::{DType, Error, Result};

/// Lines per batch handed to a worker.
const BATCH_LINES: usize = 64;
/// Bytes per batch handed to a worker (whichever limit comes first).
const BATCH_BYTES: usize = 1 << 20;

/// Options of `pretrain preprocess`.
#[derive(Debug, Clone)]
pub struct PreprocessOptions {
    /// Input files, directories (their `*.json`/`*.jsonl` files) or glob patterns.
    pub inputs: Vec<String>,
    /// Output prefix: writes `<prefix>_<key>_document.{bin,idx}` per JSON key.
    pub output_prefix: PathBuf,
    /// The `tokenizer.json` to use.
    pub tokenizer: PathBuf,
    /// JSON keys to extract (each gets its own output).
    pub json_keys: Vec<String>,
    /// Append the end-of-document token to every non-empty document.
    pub append_eod: bool,
    /// Override of the end-of-document token (default: the tokenizer's `eos_token`).
    pub eod_token: Option<String>,
    /// Tokenizer threads.
    pub workers: usize,
    /// Output dtype; `None` picks Megatron's optimal dtype from the vocabulary size.
    pub dtype: Option<DType>,
    /// Count and skip malformed lines instead of stopping at the first.
    pub skip_bad_lines: bool,
    /// Show a progress bar (`Some(true)`), log lines (`Some(false)`), or decide by terminal.
    pub progress_bar: Option<bool>,
    /// Seconds between progress log lines when there is no bar.
    pub log_interval: Duration,
}

/// What a preprocessing run produced.
#[derive(Debug, Clone)]
pub struct PreprocessReport {
    /// Input files read, in order.
    pub files: Vec<PathBuf>,
    /// Documents written (JSON lines accepted).
    pub documents: u64,
    /// Malformed lines skipped (with `skip_bad_lines`).
    pub skipped_lines: u64,
    /// Tokens written, over all keys.
    pub tokens: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// `(idx, bin)` per JSON key.
    pub outputs: Vec<(PathBuf, PathBuf)>,
    /// Token dtype of the outputs.
    pub dtype: DType,
    /// The end-of-document token appended, if any.
    pub eod: Option<(String, u32)>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Expands files, directories and globs into a sorted, de-duplicated list of files.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("json" | "jsonl")
                        )
                })
                .collect();
            if found.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "--input {input}: the directory holds no *.json or *.jsonl files"
                )));
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.to_path_buf());
        } else if input.contains(['*', '?', '[']) {
            let pattern = glob::glob(input).map_err(|e| {
                Error::InvalidArgument(format!("--input {input}: invalid glob pattern: {e}"))
            })?;
            let mut found: Vec<PathBuf> = pattern
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "--input {input}: the pattern matches no files"
                )));
            }
            found.sort();
            files.extend(found);
        } else if path.exists() {
            return Err(Error::InvalidArgument(format!(
                "--input {input}: not a regular file (a device, pipe or socket); give a JSONL \
                 file, a directory of them, or a glob"
            )));
        } else {
            return Err(Error::InvalidArgument(format!(
                "--input {input}: no such file or directory"
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok(files)
}

/// A batch of raw lines from one file.
struct Batch {
    seq: u64,
    file: usize,
    first_line: u64,
    lines: Vec<Vec<u8>>,
    bytes: u64,
}

/// One parsed line: per key, the token ids and the length of each sentence.
type Doc = Vec<(Vec<u32>, Vec<usize>)>;

/// A tokenized batch.
struct Encoded {
    seq: u64,
    docs: Vec<std::result::Result<Option<Doc>, Error>>,
    bytes: u64,
}

fn read_batches(files: &[PathBuf], work: Sender<Batch>, credits: Receiver<()>) -> Result<()> {
    let mut seq = 0u64;
    for (file_idx, path) in files.iter().enumerate() {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let mut line_no = 0u64;
        loop {
            let mut batch = Batch {
                seq,
                file: file_idx,
                first_line: line_no + 1,
                lines: Vec::with_capacity(BATCH_LINES),
                bytes: 0,
            };
            while batch.lines.len() < BATCH_LINES && (batch.bytes as usize) < BATCH_BYTES {
                let mut line = Vec::new();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                batch.bytes += n as u64;
                batch.lines.push(line);
            }
            if batch.lines.is_empty() {
                break;
            }
            // A closed credit channel means the writer stopped: end quietly.
            if credits.recv().is_err() || work.send(batch).is_err() {
                return Ok(());
            }
            seq += 1;
        }
    }
    Ok(())
}

fn parse_line(
    line: &[u8],
    keys: &[String],
    encoder: &mut WorkerEncoder<'_>,
    eod: Option<u32>,
) -> std::result::Result<Option<Doc>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("expected a JSON object such as {\"text\": \"...\"}")?;
    let mut doc = Vec::with_capacity(keys.len());
    for key in keys {
        let field = object.get(key).ok_or_else(|| {
            let present: Vec<&str> = object.keys().map(String::as_str).collect();
            format!(
                "missing key `{key}` (keys present: {}); choose keys with --json-keys",
                present.join(", ")
            )
        })?;
        let sentences: Vec<&str> = match field {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().ok_or(()))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("key `{key}` must be a string or a list of strings"))?,
            _ => return Err(format!("key `{key}` must be a string or a list of strings")),
        };
        let mut ids = Vec::new();
        let mut lens = Vec::new();
        for s in sentences {
            let before = ids.len();
            encoder.encode(s, &mut ids).map_err(|e| e.to_string())?;
            if ids.len() > before {
                lens.push(ids.len() - before);
            }
        }
        if let (Some(eod), Some(last)) = (eod, lens.last_mut()) {
            ids.push(eod);
            *last += 1;
        }
        doc.push((ids, lens));
    }
    Ok(Some(doc))
}

fn encode_batches(
    work: Receiver<Batch>,
    done: Sender<Encoded>,
    files: &[PathBuf],
    keys: &[String],
    tokenizer: &HfTokenizer,
    eod: Option<u32>,
) {
    let mut encoder = tokenizer.worker();
    for batch in work {
        let docs = batch
            .lines
            .iter()
            .enumerate()
            .map(|(k, line)| {
                parse_line(line, keys, &mut encoder, eod).map_err(|reason| Error::BadLine {
                    path: files[batch.file].clone(),
                    line: batch.first_line + k as u64,
                    reason,
                })
            })
            .collect();
        let out = Encoded {
            seq: batch.seq,
            docs,
            bytes: batch.bytes,
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Progress output: a bar on a terminal, periodic log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total_bytes: u64,
    started: Instant,
    last_log: Instant,
    interval: Duration,
}

impl Progress {
    fn new(total_bytes: u64, bar: Option<bool>, interval: Duration) -> Progress {
        let use_bar = bar.unwrap_or_else(|| std::io::stderr().is_terminal());
        let bar = use_bar.then(|| {
            let b = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        let now = Instant::now();
        Progress {
            bar,
            total_bytes,
            started: now,
            last_log: now,
            interval,
        }
    }

    fn update(&mut self, bytes: u64, docs: u64, tokens: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = tokens as f64 / secs;
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{docs} docs, {tokens} tokens, {rate:.0} tokens/s"));
        } else if self.last_log.elapsed() >= self.interval {
            self.last_log = Instant::now();
            let frac = bytes as f64 / self.total_bytes.max(1) as f64;
            let eta = if frac > 0.0 { secs / frac - secs } else { 0.0 };
            tracing::info!(
                "preprocess: {docs} documents, {tokens} tokens, {rate:.0} tokens/s, {:.1}% of \
                 input, ETA {eta:.0}s",
                100.0 * frac
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What the writer has written so far.
#[derive(Default)]
struct Written {
    documents: u64,
    skipped: u64,
    tokens: u64,
    bytes: u64,
}

/// Writes the workers' batches in input order (batch 0, 1, 2, ... whatever order they finish
/// in), handing the reader one credit back per batch, until the workers are done. A malformed
/// line stops the job unless `skip_bad_lines`.
fn write_in_order(
    done_rx: &Receiver<Encoded>,
    credit_tx: &Sender<()>,
    builders: &mut [IndexedDatasetBuilder],
    skip_bad_lines: bool,
    progress: &mut Progress,
    w: &mut Written,
) -> Result<()> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for encoded in done_rx {
        pending.insert(encoded.seq, encoded);
        while let Some(batch) = pending.remove(&next) {
            next += 1;
            w.bytes += batch.bytes;
            for doc in batch.docs {
                match doc {
                    Ok(Some(doc)) => {
                        for ((ids, lens), builder) in doc.iter().zip(builders.iter_mut()) {
                            let mut start = 0;
                            for &len in lens {
                                builder.add_item_u32(&ids[start..start + len])?;
                                start += len;
                            }
                            builder.end_document();
                            w.tokens += ids.len() as u64;
                        }
                        w.documents += 1;
                    }
                    Ok(None) => {}
                    Err(e) if skip_bad_lines => {
                        w.skipped += 1;
                        if w.skipped <= 10 {
                            tracing::warn!("skipping {e}");
                        }
                    }
                    Err(Error::BadLine { path, line, reason }) => {
                        return Err(Error::BadLine {
                            path,
                            line,
                            reason: format!(
                                "{reason}; fix the line, or pass --skip-bad-lines to count and \
                                 skip such lines"
                            ),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            let _ = credit_tx.send(());
            progress.update(w.bytes, w.documents, w.tokens);
        }
    }
    Ok(())
}

/// Runs the whole preprocessing job.
pub fn run(opts: &PreprocessOptions) -> Result<PreprocessReport> {
    let started = Instant::now();
    if opts.json_keys.is_empty() {
        return Err(Error::InvalidArgument(
            "--json-keys needs at least one key".into(),
        ));
    }
    let files = expand_inputs(&opts.inputs)?;
    let tokenizer = HfTokenizer::load(&opts.tokenizer)?;
    let dtype = opts
        .dtype
        .unwrap_or_else(|| DType::optimal_for_vocab(tokenizer.vocab_size));
    let eod = if opts.append_eod {
        Some(tokenizer.eod(opts.eod_token.as_deref())?)
    } else {
        None
    };
    let eod_id = eod.as_ref().map(|e| e.1);
    let total_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let mut builders = opts
        .json_keys
        .iter()
        .map(|key| {
            let mut prefix = opts.output_prefix.as_os_str().to_owned();
            prefix.push(format!("_{key}_document"));
            IndexedDatasetBuilder::create(PathBuf::from(prefix), dtype)
        })
        .collect::<Result<Vec<_>>>()?;
    let workers = opts.workers.max(1);
    let in_flight = 4 * workers;
    let (work_tx, work_rx) = bounded::<Batch>(in_flight);
    let (done_tx, done_rx) = bounded::<Encoded>(in_flight);
    let (credit_tx, credit_rx) = bounded::<()>(in_flight);
    for _ in 0..in_flight {
        // The channel has exactly this capacity, so the sends cannot block or fail.
        let _ = credit_tx.send(());
    }
    let mut progress = Progress::new(total_bytes, opts.progress_bar, opts.log_interval);
    let mut written = Written::default();
    let outcome: Result<()> = std::thread::scope(|scope| {
        let reader = scope.spawn({
            let files = &files;
            move || read_batches(files, work_tx, credit_rx)
        });
        for _ in 0..workers {
            let (rx, tx) = (work_rx.clone(), done_tx.clone());
            let (files, keys, tok) = (&files, &opts.json_keys, &tokenizer);
            scope.spawn(move || encode_batches(rx, tx, files, keys, tok, eod_id));
        }
        drop(work_rx);
        drop(done_tx);
        let result = write_in_order(
            &done_rx,
            &credit_tx,
            &mut builders,
            opts.skip_bad_lines,
            &mut progress,
            &mut written,
        );
        // On error, closing our ends stops the reader and the workers.
        drop(done_rx);
        drop(credit_tx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("the input reader panicked".into())));
        result.and(read)
    });
    progress.finish();
    outcome?;
    if written.documents == 0 {
        return Err(Error::InvalidArgument(format!(
            "no documents found in {} input file(s); check --input and --json-keys",
            files.len()
        )));
    }
    let outputs = builders
        .into_iter()
        .map(IndexedDatasetBuilder::finalize)
        .collect::<Result<Vec<_>>>()?;
    Ok(PreprocessReport {
        files,
        documents: written.documents,
        skipped_lines: written.skipped,
        tokens: written.tokens,
        bytes: written.bytes,
        outputs,
        dtype,
        eod,
        elapsed: started.elapsed(),
    })
}
