//! `pretrain launch` arguments (msrun's option names, with `--snake_case` aliases) and the
//! worker command line they produce.

use pretrain::launch::heartbeat::Limits;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pretrain::dist::auth::Token;
use pretrain::launch::{self, termination, LaunchOptions};
use pretrain_contract::env as names;

use crate::env::Env;

/// Options not given on the command line come from the launch environment the operator sets
/// (WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT, PRETRAIN_JOB_ID), then
/// msrun's defaults.
#[derive(Args)]
pub struct LaunchArgs {
    /// Workers over all nodes [env WORLD_SIZE, default 8]
    #[arg(long, alias = "worker_num")]
    worker_num: Option<usize>,
    /// Workers on this node [env LOCAL_WORLD_SIZE, default --worker-num]
    #[arg(long, alias = "local_worker_num")]
    local_worker_num: Option<usize>,
    /// Address of node 0, which hosts the rendezvous store [env MASTER_ADDR, default 127.0.0.1]
    #[arg(long, alias = "master_addr")]
    master_addr: Option<String>,
    /// Port of the rendezvous store [env MASTER_PORT, default 8118]
    #[arg(long, alias = "master_port")]
    master_port: Option<u16>,
    /// This node's index [env NODE_RANK, default 0]
    #[arg(long, alias = "node_rank")]
    node_rank: Option<usize>,
    /// Directory of the per-worker logs worker_<rank>.log [env PRETRAIN_LOG_DIR, default
    /// output/msrun_log]
    #[arg(long, alias = "log_dir")]
    log_dir: Option<PathBuf>,
    /// Stream every worker's output here too, prefixed with its rank (True/False)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    join: Option<bool>,
    /// Seconds the nodes and workers may take to meet
    #[arg(long, alias = "cluster_time_out", default_value_t = 7200.0)]
    cluster_time_out: f64,
    /// Job id; launchers and workers of another job are refused [env PRETRAIN_JOB_ID]
    #[arg(long, alias = "job_id")]
    job_id: Option<String>,
    /// File holding the job's secret store token, the same on every node; a single node
    /// generates one when none is given [env PRETRAIN_STORE_TOKEN, PRETRAIN_STORE_TOKEN_FILE]
    #[arg(long, alias = "store_token_file")]
    store_token_file: Option<PathBuf>,
    /// Address node 0 binds its store to [env PRETRAIN_MASTER_BIND, default --master-addr]
    #[arg(long, alias = "master_bind")]
    master_bind: Option<String>,
    /// Node 0 serves rank 0's training progress (JSON) at GET /progress on this port [env
    /// PRETRAIN_PROGRESS_PORT; default: none]
    #[arg(long, alias = "progress_port")]
    progress_port: Option<u16>,
    /// Restart the workers of every node up to N times after a retryable failure; they resume
    /// from the newest complete checkpoint [env PRETRAIN_MAX_RESTARTS, default 0]
    #[arg(long, alias = "max_restarts")]
    max_restarts: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL when stopping workers
    #[arg(long, alias = "grace_period", default_value_t = 30.0)]
    grace_period: f64,
    /// Seconds without a heartbeat after which a worker is hung (stopped, frozen) [default:
    /// PRETRAIN_HEARTBEAT_TIMEOUT, else 30]
    #[arg(long, alias = "heartbeat_timeout")]
    heartbeat_timeout: Option<f64>,
    /// Seconds without a completed step (or save) after which a worker is hung; 0: ten times
    /// the longest step seen, between 5 minutes and an hour, once a step has been measured
    /// [default: PRETRAIN_HANG_TIMEOUT, else 0]
    #[arg(long, alias = "hang_timeout")]
    hang_timeout: Option<f64>,
    /// Training config: shorthand for `-- train --config <file> [overrides]`
    #[arg(long)]
    config: Option<PathBuf>,
    /// The worker command after `--` (`train --config …`, `pretrain train …`, or any program);
    /// with --config, dotted overrides
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    command: Vec<String>,
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{s}` is not True or False")),
    }
}

/// The worker command: `pretrain` subcommands run this very binary.
fn worker_command(a: &LaunchArgs) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the pretrain binary: {e}"))?
        .to_string_lossy()
        .into_owned();
    let mut cmd = a.command.clone();
    if let Some(config) = &a.config {
        let mut c = vec![exe, "train".into(), "--config".into()];
        c.push(config.to_string_lossy().into_owned());
        c.extend(cmd);
        return Ok(c);
    }
    if cmd.first().map(String::as_str) == Some("--") {
        cmd.remove(0);
    }
    const SUBCOMMANDS: [&str; 4] = ["train", "preprocess", "convert", "inspect-data"];
    match cmd.first().map(String::as_str) {
        Some("pretrain") => cmd[0] = exe,
        Some(s) if SUBCOMMANDS.contains(&s) => cmd.insert(0, exe),
        _ => {}
    }
    Ok(cmd)
}

/// The hang limits from the flags, else the environment, else the defaults.
fn hang_limits(a: &LaunchArgs, env: &Env) -> Result<Limits, crate::env::EnvError> {
    let heartbeat = env.or(a.heartbeat_timeout, names::HEARTBEAT_TIMEOUT, 30.0)?;
    let progress = env.or(a.hang_timeout, names::HANG_TIMEOUT, 0.0)?;
    for (name, v) in [
        (names::HEARTBEAT_TIMEOUT, heartbeat),
        (names::HANG_TIMEOUT, progress),
    ] {
        if !v.is_finite() {
            return Err(crate::env::EnvError {
                name,
                value: v.to_string(),
                why: "not a number of seconds (the flag or the variable)".into(),
            });
        }
    }
    Ok(Limits {
        heartbeat: Duration::from_secs_f64(heartbeat.clamp(1.0, 1e9)),
        progress: (progress > 0.0).then(|| Duration::from_secs_f64(progress.min(1e9))),
    })
}

/// The job's token: the flag's file, else the environment's, else (one node) a new one.
fn store_token(a: &LaunchArgs, env: &Env, nnodes: usize) -> Result<Token, String> {
    if let Some(path) = &a.store_token_file {
        return Token::from_file(path).map_err(|e| format!("--store-token-file: {e}"));
    }
    if let Some(token) = env.token().map_err(|e| e.to_string())? {
        return Ok(token);
    }
    if nnodes > 1 {
        return Err(format!(
            "a job of {nnodes} nodes needs a secret store token shared by every node: write \
             one (e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > token`), copy \
             it to every node and pass --store-token-file token (or set \
             PRETRAIN_STORE_TOKEN_FILE or PRETRAIN_STORE_TOKEN)"
        ));
    }
    Token::generate().map_err(|e| e.to_string())
}

/// Runs the launcher; returns its exit code.
pub fn run(a: LaunchArgs, env: &Env) -> Result<i32, (i32, String)> {
    let invalid = |m: String| (pretrain::exit::CONFIG_INVALID, m);
    let bad_env = |e: crate::env::EnvError| invalid(e.to_string());
    let worker_num = env
        .or(a.worker_num, names::WORLD_SIZE, 8)
        .map_err(bad_env)?;
    let local_worker_num = env
        .or(a.local_worker_num, names::LOCAL_WORLD_SIZE, worker_num)
        .map_err(bad_env)?;
    // Share the cores between the local workers, as torchrun does with OMP_NUM_THREADS.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nnodes = worker_num / local_worker_num.max(1);
    let token = store_token(&a, env, nnodes).map_err(invalid)?;
    let opts = LaunchOptions {
        worker_num,
        local_worker_num,
        master_addr: env
            .or(
                a.master_addr.clone(),
                names::MASTER_ADDR,
                "127.0.0.1".into(),
            )
            .map_err(bad_env)?,
        master_port: env
            .or(a.master_port, names::MASTER_PORT, 8118)
            .map_err(bad_env)?,
        node_rank: env.or(a.node_rank, names::NODE_RANK, 0).map_err(bad_env)?,
        log_dir: env
            .or(a.log_dir.clone(), names::LOG_DIR, "output/msrun_log".into())
            .map_err(bad_env)?,
        join: a.join.unwrap_or(false),
        cluster_timeout: Duration::from_secs_f64(a.cluster_time_out.max(0.1)),
        job_id: env
            .or(a.job_id.clone(), names::JOB_ID, "pretrain".into())
            .map_err(bad_env)?,
        token,
        master_bind: a.master_bind.clone().or_else(|| env.master_bind()),
        log_keep: env.parse_opt(names::LOG_KEEP).map_err(bad_env)?,
        progress_port: match a.progress_port {
            Some(p) => Some(p),
            None => env.parse_opt(names::PROGRESS_PORT).map_err(bad_env)?,
        },
        max_restarts: env
            .or(a.max_restarts, names::MAX_RESTARTS, 0)
            .map_err(bad_env)?,
        grace: Duration::from_secs_f64(a.grace_period.max(0.0)),
        command: worker_command(&a).map_err(invalid)?,
        worker_threads: (!env.has_thread_count()).then(|| (cores / local_worker_num.max(1)).max(1)),
        hang: hang_limits(&a, env).map_err(bad_env)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            tracing::warn!("cannot handle signal {sig}: {e}");
        }
    }
    let outcome = launch::run(&opts, stop).map_err(|e| (e.exit_code(), e.to_string()))?;
    if let Some(path) = env.get(names::TERMINATION_LOG).map(PathBuf::from) {
        if let Err(e) = termination::write(&path, &outcome, &opts.log_dir) {
            tracing::warn!(
                "cannot write the termination message to {}: {e}",
                path.display()
            );
        }
    }
    if outcome.code != 0 {
        return Err((outcome.code, outcome.message));
    }
    println!("{} ({} restarts)", outcome.message, outcome.restarts);
    Ok(0)
}
