//! `pretrain train`: load and validate the config with the launcher's settings, train, report
//! the outcome (stdout summary, status file for the launcher, exit code). The stop signals and
//! their deadline are handled here, not in the library.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pretrain::config::plan::LaunchSettings;
use pretrain::launch::heartbeat::{self, Progress};
use pretrain::launch::termination::{write_status, WorkerStatus};
use pretrain::train::memory::MemoryPlan;
use pretrain::{checkpoint, exit, train};

use crate::env::{Env, Worker};

#[derive(Args)]
pub struct TrainArgs {
    /// The training config (YAML)
    #[arg(long)]
    config: PathBuf,
    /// Print the memory plan (bytes per process for parameters, gradients, optimizer,
    /// activations, workspace) and whether it fits, then exit without training
    #[arg(long)]
    dry_run: bool,
    /// Dotted overrides: `--section.key value` or `--section.key=value`, applied after the file
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    overrides: Vec<String>,
}

/// Runs `pretrain train`; on failure, the exit code and message.
pub fn run(a: TrainArgs, env: &Env) -> Result<(), (i32, String)> {
    let worker = env
        .worker()
        .map_err(|e| (exit::CONFIG_INVALID, e.to_string()))?;
    pretrain::dist::set_comm_timeout(worker.comm_timeout);
    // Every log line of the runtime carries the rank.
    let _rank = tracing::info_span!("rank", rank = worker.placement.rank).entered();
    let stop = install_stop_flag(worker.stop_deadline);
    let mut root = None;
    let result = train_config(&a, &worker, &stop, &mut root);
    if let Some(path) = &worker.status_file {
        report_status(path, &result, root.as_deref());
    }
    result
}

/// Writes a heartbeat with the trainer's progress to `path` every second, from a thread of its
/// own (it stops only with the process: a stopped or frozen worker stops beating).
fn start_heartbeat(path: &Path) -> Arc<Progress> {
    let progress = Arc::new(Progress::default());
    let (p, path) = (progress.clone(), path.to_path_buf());
    let spawned = std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            for beat in 1.. {
                if let Err(e) = heartbeat::write(&path, &p.heartbeat(beat)) {
                    tracing::warn!("cannot write the heartbeat {}: {e}", path.display());
                }
                std::thread::sleep(heartbeat::INTERVAL);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no heartbeat thread: {e}");
    }
    progress
}

/// Leaves the worker's exit status and newest committed checkpoint for the launcher.
fn report_status(path: &Path, result: &Result<(), (i32, String)>, root: Option<&Path>) {
    let (code, message) = match result {
        Ok(()) => (0, "finished".to_string()),
        Err((c, m)) => (*c, m.clone()),
    };
    let step = root.and_then(|r| {
        std::fs::read_to_string(r.join(checkpoint::MARKER))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    });
    let status = WorkerStatus {
        code,
        message,
        last_checkpoint_step: step,
        last_checkpoint_path: step.zip(root).map(|(s, r)| {
            checkpoint::iteration_dir(r, s)
                .to_string_lossy()
                .into_owned()
        }),
    };
    if let Err(e) = write_status(path, &status) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

fn train_config(
    a: &TrainArgs,
    worker: &Worker,
    stop: &AtomicBool,
    root: &mut Option<PathBuf>,
) -> Result<(), (i32, String)> {
    let config_err =
        |e: pretrain::config::Error| (e.exit_code(), format!("{}: {e}", a.config.display()));
    // `--dry-run` after the overrides is still the flag (no config key has a dash).
    let dry_run = a.dry_run || a.overrides.iter().any(|o| o == "--dry-run");
    let overrides: Vec<String> = a
        .overrides
        .iter()
        .filter(|o| *o != "--dry-run")
        .cloned()
        .collect();
    let config = pretrain::config::load(&a.config, &overrides).map_err(config_err)?;
    let launch = LaunchSettings {
        resume: worker.resume,
        checkpoint_dir: worker.checkpoint_dir.clone(),
    };
    let plan = config.validate_for(&launch).map_err(config_err)?;
    if launch.checkpoint_dir.is_some() && plan.checkpoint_root != config.checkpoint_root() {
        tracing::info!(
            "checkpoints: PRETRAIN_CHECKPOINT_DIR={} (the config says {})",
            plan.checkpoint_root.display(),
            config.checkpoint_root().display()
        );
    }
    *root = Some(plan.checkpoint_root.clone());
    let available = memory_share(worker.local_world_size);
    if dry_run {
        return print_memory_plan(&plan, available);
    }
    let resolved = config.to_yaml();
    let rank0 = worker.placement.rank == 0;
    if rank0 {
        tracing::info!("resolved config:\n{resolved}");
    }
    let progress = worker.heartbeat_file.as_deref().map(start_heartbeat);
    let context = train::Context {
        placement: worker.placement.clone(),
        peak_flops: worker.peak_flops,
        memory_available: available,
        progress,
    };
    let summary =
        train::run(&plan, &resolved, &context, stop).map_err(|e| (e.exit_code(), e.to_string()))?;
    if !rank0 {
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

/// `--dry-run`: the memory plan, and whether it fits `available`.
fn print_memory_plan(
    plan: &pretrain::config::TrainPlan,
    available: Option<u64>,
) -> Result<(), (i32, String)> {
    let memory = MemoryPlan::of(plan).map_err(|e| (e.exit_code(), e.to_string()))?;
    println!(
        "memory per process (estimate; {} x {} x {} = {} processes):",
        plan.dp_size, plan.tp_size, plan.pp_size, plan.world_size
    );
    print!("{memory}");
    let Some(available) = available else {
        println!("available: unknown (no cgroup limit or /proc/meminfo); not checked");
        return Ok(());
    };
    memory
        .check(plan, available)
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    println!(
        "fits: peak {:.2} GiB of {:.2} GiB available per process",
        memory.peak() as f64 / (1u64 << 30) as f64,
        available as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

/// This process's share of the memory it may use: the smaller of the cgroup limit (v2, else
/// v1) and MemAvailable, divided among the `local` processes of the machine.
fn memory_share(local: usize) -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok());
    let meminfo = read("/proc/meminfo").and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let total = match (cgroup, meminfo) {
        (Some(c), Some(m)) => c.min(m),
        (c, m) => c.or(m)?,
    };
    Some(total / local.max(1) as u64)
}

/// Raised by SIGTERM/SIGINT: every rank finishes the current step, saves, stops. A second
/// signal exits at once, and so does the deadline ([`watch_deadline`]).
fn install_stop_flag(deadline: Duration) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registration fails only for forbidden signals, which these are not; without it the
        // default action (terminate) stays, which is safe, so a failure is only logged.
        if let Err(e) =
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())
                .and_then(|_| signal_hook::flag::register(sig, flag.clone()))
        {
            tracing::warn!("cannot handle signal {sig}: {e}");
        }
    }
    watch_deadline(flag.clone(), deadline);
    flag
}

/// After the stop flag rises, waits `deadline` and then exits (code 1, retryable) if the
/// process is still running: the final-state checkpoint could not be committed in time. A
/// checkpoint being written then stays in its temporary directory, which is never taken for a
/// complete one, and the newest committed checkpoint is intact.
fn watch_deadline(flag: Arc<AtomicBool>, deadline: Duration) {
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(deadline);
        eprintln!(
            "error: no final-state checkpoint committed within PRETRAIN_STOP_DEADLINE={}s of the \
             stop signal; exiting without it (the newest committed checkpoint is intact; resume \
             from it, or raise the deadline)",
            deadline.as_secs_f64()
        );
        std::process::exit(exit::RETRYABLE);
    });
}
