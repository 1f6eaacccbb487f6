//! `pretrain preprocess`, `convert` and `inspect-data`: the data subcommands.

use std::path::{Path, PathBuf};
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
    /// Whether a tokenizer was named on the command line.
    fn is_given(&self) -> bool {
        self.tokenizer_dir.is_some() || self.tokenizer_file.is_some()
    }

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
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Training config: --sample then shows what training reads (its data_path with blends,
    /// split, sizes, seq_length and seed, after the dotted overrides that follow the options)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Decode sequence (document) number N of the prefix
    #[arg(long)]
    sequence: Option<usize>,
    /// Decode training sample N (without --config: built with --seq-length/--seed/--split)
    #[arg(long)]
    sample: Option<usize>,
    /// Sample length for --sample without --config
    #[arg(long, default_value_t = 4096)]
    seq_length: usize,
    /// Shuffle seed for --sample without --config
    #[arg(long, default_value_t = 1234)]
    seed: u32,
    /// Split string for --sample without --config
    #[arg(long, default_value = "1,0,0")]
    split: String,
    /// Dataset prefix (without .bin/.idx); with --config, dotted overrides instead
    #[arg(allow_hyphen_values = true)]
    prefix: Option<String>,
    /// With --config: more dotted overrides
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    overrides: Vec<String>,
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

/// `pretrain inspect-data`: a prefix's statistics, sequences and samples, or with `--config`
/// the training data of a config.
pub fn inspect(a: InspectArgs) -> Result<(), (i32, String)> {
    let data_err = |e: data::Error| (e.exit_code(), e.to_string());
    if let Some(config) = &a.config {
        let overrides: Vec<String> = a.prefix.iter().chain(&a.overrides).cloned().collect();
        return inspect_config(&a, config, &overrides);
    }
    let invalid = |m: String| (pretrain::exit::CONFIG_INVALID, m);
    let prefix = match (&a.prefix, a.overrides.first()) {
        (None, _) => return Err(invalid("give a dataset prefix, or --config <file>".into())),
        (Some(p), _) if p.starts_with('-') => {
            return Err(invalid(format!(
                "`{p}` is not an option of inspect-data; overrides need --config <file>"
            )))
        }
        (Some(_), Some(extra)) => {
            return Err(invalid(format!(
                "`{extra}`: inspect-data takes one dataset prefix; overrides need --config <file>"
            )))
        }
        (Some(p), None) => PathBuf::from(p),
    };
    inspect_prefix(&a, &prefix).map_err(data_err)
}

/// Prints `ids` under `title` (their text too when a tokenizer is given).
fn show(tokenizer: Option<&HfTokenizer>, title: &str, ids: &[i64]) -> Result<(), data::Error> {
    println!("\n{title}: {} tokens", ids.len());
    println!("ids:  {:?}", &ids[..ids.len().min(32)]);
    if let Some(t) = tokenizer {
        let ids32: Vec<u32> = ids.iter().map(|&t| t.max(0) as u32).collect();
        println!("text: {}", t.decode(&ids32)?);
    }
    Ok(())
}

fn inspect_prefix(a: &InspectArgs, prefix: &Path) -> Result<(), data::Error> {
    let ds = Arc::new(data::indexed::IndexedDataset::open(prefix)?);
    println!("dataset:    {}", prefix.display());
    println!("{}", stats::stats(&ds)?);
    if a.sequence.is_none() && a.sample.is_none() {
        return Ok(());
    }
    let tokenizer = HfTokenizer::load(&a.tokenizer.path()?)?;
    if let Some(i) = a.sequence {
        let ids: Vec<i64> = ds.get(i, 0, None)?.iter().collect();
        show(Some(&tokenizer), &format!("sequence {i}"), &ids)?;
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
        let title = format!(
            "train sample {i} (seq_length {}, seed {}, split \"{}\")",
            a.seq_length, a.seed, a.split
        );
        show(Some(&tokenizer), &title, &text)?;
    }
    Ok(())
}

/// The training data of `config` with `overrides`: the datasets training builds and, with
/// `--sample N`, the sample training reads as global sample N, where it comes from and at which
/// step, micro-batch and data-parallel rank it is read.
fn inspect_config(
    a: &InspectArgs,
    config: &Path,
    overrides: &[String],
) -> Result<(), (i32, String)> {
    let config_err =
        |e: pretrain::config::Error| (e.exit_code(), format!("{}: {e}", config.display()));
    let data_err = |e: data::Error| (e.exit_code(), e.to_string());
    let plan = pretrain::config::load(config, overrides)
        .and_then(|c| c.validate())
        .map_err(config_err)?;
    let d = &plan.data;
    println!("config:     {}", config.display());
    println!("data_path:  {:?}", d.data_path);
    println!("split:      {}", d.split);
    println!(
        "seq_length: {}, seed {}",
        d.gpt.sequence_length, d.gpt.random_seed
    );
    let datasets = data::sampling::build_datasets(d).map_err(data_err)?;
    for (name, ds) in ["train", "valid", "test"].iter().zip(&datasets) {
        match ds {
            Some(ds) => println!(
                "{name}:{:pad$}{} samples",
                "",
                ds.len(),
                pad = 7 - name.len()
            ),
            None => println!(
                "{name}:{:pad$}no share in the split",
                "",
                pad = 7 - name.len()
            ),
        }
    }
    let Some(n) = a.sample else {
        return Ok(());
    };
    let [Some(train), _, _] = &datasets else {
        return Err(data_err(data::Error::InvalidArgument(
            "the split gives the train split no documents".into(),
        )));
    };
    if train.is_empty() {
        return Err(data_err(data::Error::InvalidArgument(
            "the train split has no samples".into(),
        )));
    }
    // As training reads it: consecutive global samples, wrapping around the dataset.
    let index = n % train.len();
    let sample = train.get(index).map_err(data_err)?;
    let (source, within) = train.source(index).map_err(data_err)?;
    let per_micro = plan.micro_batch_size * plan.dp_size;
    let offset = n % plan.global_batch_size;
    println!(
        "\nglobal sample {n}: read at step {} (micro-batch {}, data-parallel rank {}); \
         sample {within} of {}{}",
        n / plan.global_batch_size + 1,
        offset / per_micro,
        offset % per_micro / plan.micro_batch_size,
        source.display(),
        if index != n {
            format!(" (dataset sample {index}: the run wraps around)")
        } else {
            String::new()
        }
    );
    // The tokenizer named here, else the config's, else ids only.
    let path = match &plan.tokenizer_dir {
        _ if a.tokenizer.is_given() => Some(a.tokenizer.path()),
        Some(dir) => Some(data::tokenizer::resolve(Some(dir), None)),
        None => None,
    };
    let tokenizer = path
        .transpose()
        .and_then(|p| p.map(|p| HfTokenizer::load(&p)).transpose())
        .map_err(data_err)?;
    let mut ids = sample.tokens.clone();
    ids.extend(sample.labels.last());
    show(tokenizer.as_ref(), &format!("train sample {n}"), &ids).map_err(data_err)
}
