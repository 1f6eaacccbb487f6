//! `pretrain preprocess`, `convert` and `inspect-data`: the data subcommands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pretrain::data::{self, inspect as stats, preprocess as prep, tokenizer::HfTokenizer, DType};

#[derive(Args)]
pub struct TokenizerArgs {
    /// Tokenizer implementation (only HuggingFaceTokenizer: a tokenizer.json)
    #[arg(long, default_value = "HuggingFaceTokenizer")]
    tokenizer_type: String,
    /// Directory holding tokenizer.json (and tokenizer_config.json)
    #[arg(long)]
    tokenizer_dir: Option<PathBuf>,
    /// Path of a tokenizer.json (instead of --tokenizer-dir)
    #[arg(long)]
    tokenizer_file: Option<PathBuf>,
}

impl TokenizerArgs {
    fn path(&self) -> Result<PathBuf, data::Error> {
        if self.tokenizer_type != "HuggingFaceTokenizer" {
            return Err(data::Error::InvalidArgument(format!(
                "--tokenizer-type {}: only HuggingFaceTokenizer (a tokenizer.json) is supported",
                self.tokenizer_type
            )));
        }
        data::tokenizer::resolve(
            self.tokenizer_dir.as_deref(),
            self.tokenizer_file.as_deref(),
        )
    }
}

#[derive(Args)]
pub struct PreprocessArgs {
    /// Input JSONL: a file, a directory (its *.json/*.jsonl files) or a glob; repeatable
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output prefix; writes <prefix>_<key>_document.bin/.idx
    #[arg(long)]
    output_prefix: PathBuf,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// JSON keys to tokenize, each into its own dataset
    #[arg(long, num_args = 1.., default_value = "text")]
    json_keys: Vec<String>,
    /// Append the end-of-document token (the tokenizer's eos_token) to each document
    #[arg(long)]
    append_eod: bool,
    /// End-of-document token to append instead of the tokenizer's eos_token
    #[arg(long)]
    eod_token: Option<String>,
    /// Tokenizer threads
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// Token dtype (default: uint16 below 65,500 ids, else int32, as Megatron chooses)
    #[arg(long)]
    dtype: Option<String>,
    /// Count and skip malformed lines instead of stopping at the first one
    #[arg(long)]
    skip_bad_lines: bool,
    /// Seconds between progress lines when stderr is not a terminal
    #[arg(long, default_value_t = 10)]
    log_interval: u64,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Args)]
pub struct ConvertArgs {
    /// MindRecord file (any shard of a multi-shard dataset)
    #[arg(long)]
    input: PathBuf,
    /// Output prefix; writes <prefix>.bin/.idx
    #[arg(long)]
    output_prefix: PathBuf,
    /// Field holding the token ids
    #[arg(long, default_value = "input_ids")]
    field: String,
    /// Token dtype (default int32)
    #[arg(long, default_value = "int32")]
    dtype: String,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Dataset prefix (without .bin/.idx)
    prefix: PathBuf,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Decode sequence (document) number N
    #[arg(long)]
    sequence: Option<usize>,
    /// Decode training sample N, built as training with --seq-length/--seed/--split would
    #[arg(long)]
    sample: Option<usize>,
    /// Sample length for --sample
    #[arg(long, default_value_t = 4096)]
    seq_length: usize,
    /// Shuffle seed for --sample
    #[arg(long, default_value_t = 1234)]
    seed: u32,
    /// Split string for --sample
    #[arg(long, default_value = "1,0,0")]
    split: String,
}

fn parse_dtype(name: Option<&str>) -> Result<Option<DType>, data::Error> {
    name.map(DType::from_name).transpose()
}

pub fn preprocess(a: PreprocessArgs) -> Result<(), data::Error> {
    let opts = prep::PreprocessOptions {
        inputs: a.input,
        output_prefix: a.output_prefix,
        tokenizer: a.tokenizer.path()?,
        json_keys: a.json_keys,
        append_eod: a.append_eod,
        eod_token: a.eod_token,
        workers: a.workers,
        dtype: parse_dtype(a.dtype.as_deref())?,
        skip_bad_lines: a.skip_bad_lines,
        progress_bar: None,
        log_interval: Duration::from_secs(a.log_interval),
    };
    let r = prep::run(&opts)?;
    let secs = r.elapsed.as_secs_f64();
    println!(
        "preprocessed {} documents ({} tokens, {} bytes of JSONL) from {} file(s) in {secs:.2} s: \
         {:.0} tokens/s",
        r.documents,
        r.tokens,
        r.bytes,
        r.files.len(),
        r.tokens as f64 / secs.max(1e-9)
    );
    if r.skipped_lines > 0 {
        println!(
            "skipped {} malformed lines (--skip-bad-lines)",
            r.skipped_lines
        );
    }
    match &r.eod {
        Some((t, id)) => println!("appended end-of-document token {t} (id {id}) to each document"),
        None => println!("no end-of-document token appended (pass --append-eod to add one)"),
    }
    for (idx, bin) in &r.outputs {
        println!(
            "wrote {} and {} ({})",
            bin.display(),
            idx.display(),
            r.dtype.name()
        );
    }
    Ok(())
}

pub fn convert(a: ConvertArgs) -> Result<(), data::Error> {
    let dtype = DType::from_name(&a.dtype)?;
    let r = data::mindrecord::convert(&a.input, &a.field, &a.output_prefix, dtype)?;
    println!(
        "converted {} records ({} tokens) of field `{}` from {} into {} and {}",
        r.records,
        r.tokens,
        a.field,
        a.input.display(),
        r.bin.display(),
        r.idx.display()
    );
    Ok(())
}

pub fn inspect(a: InspectArgs) -> Result<(), data::Error> {
    let ds = Arc::new(data::indexed::IndexedDataset::open(&a.prefix)?);
    println!("dataset:    {}", a.prefix.display());
    println!("{}", stats::stats(&ds)?);
    if a.sequence.is_none() && a.sample.is_none() {
        return Ok(());
    }
    let tokenizer = HfTokenizer::load(&a.tokenizer.path()?)?;
    let show = |title: String, ids: &[i64]| -> Result<(), data::Error> {
        let ids32: Vec<u32> = ids.iter().map(|&t| t.max(0) as u32).collect();
        println!("\n{title}: {} tokens", ids.len());
        println!("ids:  {:?}", &ids[..ids.len().min(32)]);
        println!("text: {}", tokenizer.decode(&ids32)?);
        Ok(())
    };
    if let Some(i) = a.sequence {
        let ids: Vec<i64> = ds.get(i, 0, None)?.iter().collect();
        show(format!("sequence {i}"), &ids)?;
    }
    if let Some(i) = a.sample {
        let eod = tokenizer.eod(None).map(|e| e.1 as i64).unwrap_or(-1);
        let config = data::gpt_dataset::GptDatasetConfig {
            sequence_length: a.seq_length,
            random_seed: a.seed,
            eod,
            ..Default::default()
        };
        let text = stats::train_sample_tokens(ds, &a.split, i + 1, &config, i)?;
        show(
            format!(
                "train sample {i} (seq_length {}, seed {}, split \"{}\")",
                a.seq_length, a.seed, a.split
            ),
            &text,
        )?;
    }
    Ok(())
}
