//! `pretrain`: the command-line entry point. Thin: parse arguments, call the library, print a
//! summary, map errors to the documented exit codes (see `pretrain::exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pretrain::data::{self, inspect, preprocess, tokenizer::HfTokenizer, DType};
use pretrain::exit;

mod launch_cli;

#[derive(Parser)]
#[command(
    name = "pretrain",
    version,
    about = "Pretrain Qwen3-class language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize JSON lines into a Megatron .bin/.idx dataset
    Preprocess(PreprocessArgs),
    /// Convert MindSpore MindRecord files with a token-id field into a Megatron .bin/.idx dataset
    Convert(ConvertArgs),
    /// Show counts, length statistics and decoded samples of a .bin/.idx dataset
    InspectData(InspectArgs),
    /// Train a Qwen3 model from a YAML config (MindSpore Transformers' shape) with dotted
    /// overrides, e.g. `--runner_config.batch_size 4` or `--lr_schedule.learning_rate=1e-4`
    Train(TrainArgs),
    /// Start this node's workers of a (multi-process, multi-node) job, like msrun/torchrun:
    /// `pretrain launch --worker-num 2 -- train --config <file>`
    Launch(launch_cli::LaunchArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// The training config (YAML)
    #[arg(long)]
    config: PathBuf,
    /// Dotted overrides: `--section.key value` or `--section.key=value`, applied after the file
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    overrides: Vec<String>,
}

#[derive(Args)]
struct TokenizerArgs {
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
struct PreprocessArgs {
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
struct ConvertArgs {
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
struct InspectArgs {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preprocess(a) => {
            run_preprocess(a).map_err(|e| (exit::for_data_error(&e), e.to_string()))
        }
        Command::Convert(a) => {
            run_convert(a).map_err(|e| (exit::for_data_error(&e), e.to_string()))
        }
        Command::InspectData(a) => {
            run_inspect(a).map_err(|e| (exit::for_data_error(&e), e.to_string()))
        }
        Command::Train(a) => run_train(a),
        Command::Launch(a) => launch_cli::run(a).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code as u8)
        }
    }
}

fn run_train(a: TrainArgs) -> Result<(), (i32, String)> {
    let env = pretrain::launch::env::WorkerEnv::from_env()
        .map_err(|e| (exit::CONFIG_INVALID, e.to_string()))?;
    // Every log line of the runtime carries the rank.
    let _rank = tracing::info_span!("rank", rank = env.rank).entered();
    let mut root = None;
    let result = train_plan(&a, &env, &mut root);
    if let Some(path) = &env.status_file {
        let (code, message) = match &result {
            Ok(()) => (0, "finished".to_string()),
            Err((c, m)) => (*c, m.clone()),
        };
        let step = root.as_ref().and_then(|r: &PathBuf| {
            std::fs::read_to_string(r.join(pretrain::checkpoint::MARKER))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        });
        let status = pretrain::launch::termination::WorkerStatus {
            code,
            message,
            last_checkpoint_step: step,
            last_checkpoint_path: step.zip(root.as_ref()).map(|(s, r)| {
                pretrain::checkpoint::iteration_dir(r, s)
                    .to_string_lossy()
                    .into_owned()
            }),
        };
        if let Err(e) = pretrain::launch::termination::write_status(path, &status) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
    result
}

fn train_plan(
    a: &TrainArgs,
    env: &pretrain::launch::env::WorkerEnv,
    root: &mut Option<PathBuf>,
) -> Result<(), (i32, String)> {
    let config_err =
        |e: pretrain::config::Error| (exit::CONFIG_INVALID, format!("{}: {e}", a.config.display()));
    let config = pretrain::config::load(&a.config, &a.overrides).map_err(config_err)?;
    let mut plan = config.validate().map_err(config_err)?;
    if env.resume {
        // A restarted gang (launcher --max-restarts, operator attempt > 1) resumes from the
        // newest complete checkpoint, or starts fresh when there is none.
        plan.resume_training = true;
        if plan.load_checkpoint == pretrain::config::plan::LoadCheckpoint::None {
            plan.load_checkpoint = pretrain::config::plan::LoadCheckpoint::Auto;
        }
    }
    if let Some(dir) = &env.checkpoint_dir {
        if *dir != plan.checkpoint_root {
            tracing::info!(
                "checkpoints: PRETRAIN_CHECKPOINT_DIR={} (the config says {})",
                dir.display(),
                plan.checkpoint_root.display()
            );
        }
        plan.checkpoint_root = dir.clone();
    }
    *root = Some(plan.checkpoint_root.clone());
    let resolved = config.to_yaml();
    if env.rank == 0 {
        tracing::info!("resolved config:\n{resolved}");
    }
    let summary = pretrain::train::run(&plan, &resolved)
        .map_err(|e| (exit::for_train_error(&e), e.to_string()))?;
    if env.rank != 0 {
        return Ok(());
    }
    let first = summary.losses.first().copied().unwrap_or(f32::NAN);
    let last = summary.losses.last().copied().unwrap_or(f32::NAN);
    println!(
        "trained steps {}..{} of {}: loss {first:.4} -> {last:.4}, {:.0} tokens/s",
        summary.start_step + 1,
        summary.steps,
        plan.train_steps,
        summary.tokens_per_sec
    );
    if let Some(dir) = &summary.last_checkpoint {
        println!(
            "checkpoint: {} (Hugging Face format: config.json + model.safetensors)",
            dir.display()
        );
        println!(
            "resume:     pretrain train --config {} --resume_training True --load_checkpoint auto",
            a.config.display()
        );
    }
    println!(
        "metrics:    {}",
        plan.output_dir.join("metrics.jsonl").display()
    );
    if let Some(tb) = &plan.tensorboard {
        println!("tensorboard: tensorboard --logdir {}", tb.dir.display());
    }
    Ok(())
}

fn parse_dtype(name: Option<&str>) -> Result<Option<DType>, data::Error> {
    name.map(DType::from_name).transpose()
}

fn run_preprocess(a: PreprocessArgs) -> Result<(), data::Error> {
    let opts = preprocess::PreprocessOptions {
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
    let r = preprocess::run(&opts)?;
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

fn run_convert(a: ConvertArgs) -> Result<(), data::Error> {
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

fn run_inspect(a: InspectArgs) -> Result<(), data::Error> {
    let ds = Arc::new(data::indexed::IndexedDataset::open(&a.prefix)?);
    println!("dataset:    {}", a.prefix.display());
    println!("{}", inspect::stats(&ds)?);
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
        let text = inspect::train_sample_tokens(ds, &a.split, i + 1, &config, i)?;
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
