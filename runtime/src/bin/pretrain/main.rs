//! `pretrain`: the command-line entry point, and the only part of the runtime that reads the
//! environment (`env`, once), handles signals, and turns errors into exit codes (each error
//! type knows its own; ARCHITECTURE.md, "Exit codes").
//!
//! Modules: `data` (preprocess, convert, inspect-data), `train`, `launch`, `env`, `bus` (the
//! SIGBUS of a dataset file truncated while mapped).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bus;
mod data;
mod env;
mod launch;
mod train;

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
    Preprocess(data::PreprocessArgs),
    /// Convert MindSpore MindRecord files with a token-id field into a Megatron .bin/.idx dataset
    Convert(data::ConvertArgs),
    /// Show counts, length statistics and decoded samples of a .bin/.idx dataset
    InspectData(data::InspectArgs),
    /// Train a Qwen3 model from a YAML config (MindSpore Transformers' shape) with dotted
    /// overrides, e.g. `--runner_config.batch_size 4` or `--lr_schedule.learning_rate=1e-4`
    Train(train::TrainArgs),
    /// Start this node's workers of a (multi-process, multi-node) job, like msrun/torchrun:
    /// `pretrain launch --worker-num 2 -- train --config <file>`
    Launch(launch::LaunchArgs),
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
    bus::install();
    let env = env::Env::capture();
    let data_err = |e: pretrain::data::Error| (e.exit_code(), e.to_string());
    let result = match cli.command {
        Command::Preprocess(a) => data::preprocess(a).map_err(data_err),
        Command::Convert(a) => data::convert(a).map_err(data_err),
        Command::InspectData(a) => data::inspect(a),
        Command::Train(a) => train::run(a, &env),
        Command::Launch(a) => launch(a, &env),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code as u8)
        }
    }
}

/// `pretrain launch`, with the store's and the launcher's own waits bounded by
/// `PRETRAIN_COMM_TIMEOUT`.
fn launch(a: launch::LaunchArgs, env: &env::Env) -> Result<(), (i32, String)> {
    let timeout = env
        .comm_timeout()
        .map_err(|e| (pretrain::exit::CONFIG_INVALID, e.to_string()))?;
    pretrain::dist::set_comm_timeout(timeout);
    launch::run(a, env).map(|_| ())
}
