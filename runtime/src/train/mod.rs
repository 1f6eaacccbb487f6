//! The training loop, readable top to bottom: build data and model (fresh, from an HF
//! directory, or resumed), then per step: micro-batches forward/backward with accumulation,
//! clip, AdamW, log, checkpoint.

pub mod batch;
pub mod cluster;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{self, SaveRequest, TrainerState};
use crate::config::plan::LoadCheckpoint;
use crate::config::TrainPlan;
use crate::data::sampling::build_datasets;
use crate::metrics::{log_to_tensorboard, EventWriter, JsonlWriter, StepMetrics};
use crate::model::qwen3::Qwen3;
use crate::optim::adamw::{AdamWConfig, AdamWState};
use crate::parallel::zero::DistOptimizer;
use cluster::Cluster;
use step::StepPlan;

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid data.
    #[error(transparent)]
    Data(#[from] crate::data::Error),
    /// A model that cannot run or weights that do not fit.
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    /// A checkpoint that cannot be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// Metrics files.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
    /// Rendezvous or a collective failed (a lost peer, a timeout, another job's peer).
    #[error(transparent)]
    Dist(#[from] crate::dist::Error),
    /// A plan the trainer cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// SIGTERM or SIGINT arrived; the final state was saved at `step`.
    #[error("stopped by a signal after step {step}; final-state checkpoint {} (resume with resume_training: True)", checkpoint.display())]
    Stopped {
        /// Last completed step.
        step: u64,
        /// The checkpoint holding it.
        checkpoint: PathBuf,
    },
    /// Too many loss or gradient-norm spikes in a row (the spike checks).
    #[error("step {step}: {why}; {count} steps in a row were skipped, stopping (the last checkpoint is kept); lower the learning rate, check the data, or raise the thresholds")]
    Unhealthy {
        /// 1-based step.
        step: u64,
        /// Skipped steps in a row.
        count: u64,
        /// The last spike.
        why: String,
    },
    /// The loss or gradient became NaN or infinite.
    #[error("step {step}: {what} is {value}; stopping without updating the weights (the last checkpoint is kept); lower the learning rate or check the data")]
    Diverged {
        /// 1-based step.
        step: u64,
        /// `loss` or `grad norm`.
        what: &'static str,
        /// The value.
        value: f32,
    },
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Steps completed (including resumed ones).
    pub steps: u64,
    /// Step the run started from.
    pub start_step: u64,
    /// Per-step losses of this run.
    pub losses: Vec<f32>,
    /// Newest checkpoint written or loaded.
    pub last_checkpoint: Option<PathBuf>,
    /// Mean tokens per second over this run's steps.
    pub tokens_per_sec: f64,
}

/// Resident memory of this process in bytes (Linux), for the step log.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Peak f32 FLOP/s assumed for MFU on CPU: ~160 GFLOP/s per core (compute.md's measurement of
/// AVX-512 GEMM on this machine class), times the threads in use. Override with
/// `PRETRAIN_PEAK_FLOPS`.
fn peak_flops() -> f64 {
    std::env::var("PRETRAIN_PEAK_FLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160e9 * rayon::current_num_threads() as f64)
}

/// Seconds from a stop signal to a forced exit: `PRETRAIN_STOP_DEADLINE` (default 300; set it
/// below the pod's `terminationGracePeriodSeconds`).
fn stop_deadline() -> std::time::Duration {
    std::env::var("PRETRAIN_STOP_DEADLINE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .map_or(
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs_f64,
        )
}

/// After the stop flag rises, waits `deadline` and then exits (code 1, retryable) if the
/// process is still running: the final-state checkpoint could not be committed in time. A
/// checkpoint being written then stays in its temporary directory, which is never taken for a
/// complete one, and the newest committed checkpoint is intact.
fn watch_deadline(flag: Arc<AtomicBool>, deadline: std::time::Duration) {
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(deadline);
        eprintln!(
            "error: no final-state checkpoint committed within PRETRAIN_STOP_DEADLINE={}s of the \
             stop signal; exiting without it (the newest committed checkpoint is intact; resume \
             from it, or raise the deadline)",
            deadline.as_secs_f64()
        );
        std::process::exit(crate::exit::RETRYABLE);
    });
}

/// Set by SIGTERM/SIGINT: finish the current step, save, stop. A second signal exits at once,
/// and so does the deadline ([`watch_deadline`]).
fn install_stop_flag() -> Arc<AtomicBool> {
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
    watch_deadline(flag.clone(), stop_deadline());
    flag
}

/// Runs the plan; `resolved_config` (YAML) is stored in every checkpoint. SIGTERM or SIGINT
/// ends the run after the current step with a final-state checkpoint ([`Error::Stopped`]).
pub fn run(plan: &TrainPlan, resolved_config: &str) -> Result<Summary, Error> {
    run_with_stop(plan, resolved_config, install_stop_flag())
}

/// [`run`] with an explicit stop flag (tests set it instead of sending signals).
pub fn run_with_stop(
    plan: &TrainPlan,
    resolved_config: &str,
    stop: Arc<AtomicBool>,
) -> Result<Summary, Error> {
    // 0. The job: layout checks before any work, then rendezvous.
    let topo0 = crate::parallel::Topology::new(0, plan.dp_size, plan.tp_size, plan.pp_size);
    cluster::shard_of(plan, &topo0).local_config(&plan.model)?;
    let mut cluster = Cluster::join(plan)?;
    let root = plan.checkpoint_root.clone();
    if let Some(dir) = &plan.tokenizer_dir {
        let tok = crate::data::tokenizer::HfTokenizer::load(&dir.join("tokenizer.json"))?;
        if tok.vocab_size > plan.model.vocab_size {
            return Err(Error::Unsupported(format!(
                "{}: the tokenizer has {} ids but model.model_config.vocab_size is {}; the model \
                 cannot embed every token (raise vocab_size or use the model's tokenizer)",
                dir.display(),
                tok.vocab_size,
                plan.model.vocab_size
            )));
        }
    }
    let topo = cluster.topo;
    let rank0 = topo.rank == 0;
    // 1. Data (rank 0 builds the index cache first; the others then read it).
    if !rank0 {
        cluster.groups.world.barrier()?;
    }
    let [train, _, _] = build_datasets(&plan.data)?;
    if rank0 {
        cluster.groups.world.barrier()?;
    }
    let train = train.ok_or_else(|| {
        Error::Unsupported("the split string gives the train split no documents".into())
    })?;
    tracing::info!(samples = train.len(), "train dataset ready");
    // 2. Model and optimizer: resumed, initialised from a checkpoint, or fresh; every rank
    // builds the whole model and keeps its part, so any layout starts from the same weights.
    let full = Qwen3::init(plan.model.clone(), plan.seed as u32)?;
    let mut full_params = full.params;
    let mut full_opt: Option<AdamWState> = None;
    let mut state = TrainerState {
        step: 0,
        consumed_samples: 0,
        last_loss: f32::NAN,
    };
    let mut last_checkpoint: Option<PathBuf> = None;
    let source = match &plan.load_checkpoint {
        LoadCheckpoint::None => None,
        LoadCheckpoint::Auto => checkpoint::latest(&root)?,
        LoadCheckpoint::Path(p) if p.join(checkpoint::MARKER).is_file() => checkpoint::latest(p)?,
        LoadCheckpoint::Path(p) => Some(p.clone()),
    };
    if let Some(dir) = source {
        let loaded = checkpoint::load(&dir, &full.config, &full.layout)?;
        full_params = loaded.params;
        if plan.resume_training {
            match (loaded.optimizer, loaded.state) {
                (Some(o), Some(s)) => {
                    full_opt = Some(o);
                    state = s;
                }
                _ => {
                    return Err(Error::Unsupported(format!(
                        "{}: resume_training needs optimizer.safetensors and trainer_state.json; \
                         this directory only has weights (set resume_training: False to \
                         fine-tune from it)",
                        dir.display()
                    )))
                }
            }
            tracing::info!(step = state.step, dir = %dir.display(), "resumed");
        } else {
            tracing::info!(dir = %dir.display(), "initialised weights from checkpoint");
        }
        last_checkpoint = Some(dir);
    } else if plan.load_checkpoint == LoadCheckpoint::Auto {
        tracing::info!(root = %root.display(), "no committed checkpoint: starting fresh");
    }
    let shard = cluster::shard_of(plan, &topo);
    let mut model = Qwen3::sharded(&plan.model, shard, &full_params)?;
    drop(full_params);
    let optimizer = match full_opt {
        Some(o) => {
            let g = crate::model::params::Layout::new(&plan.model);
            AdamWState {
                m: model.shard.extract(&model.layout, &g, &o.m),
                v: model.shard.extract(&model.layout, &g, &o.v),
                step: o.step,
            }
        }
        None => AdamWState::new(model.layout.total),
    };
    let mut optimizer = DistOptimizer::new(optimizer, plan.zero1, topo.dp_rank, topo.dp);
    if let DistOptimizer::Sharded { lo, hi, .. } = &optimizer {
        tracing::info!("ZeRO-1: this replica keeps the AdamW state of parameters {lo}..{hi}");
    }
    let decay: Vec<(usize, usize, bool)> = model
        .layout
        .specs
        .iter()
        .map(|s| (s.offset, s.len, plan.optimizer.decays(&s.name)))
        .collect();
    let adamw = AdamWConfig {
        beta1: plan.optimizer.beta1 as f32,
        beta2: plan.optimizer.beta2 as f32,
        eps: plan.optimizer.eps as f32,
        weight_decay: plan.optimizer.weight_decay as f32,
    };
    // 3. Outputs (metrics from rank 0, which holds the global loss).
    let (b, t) = (plan.micro_batch_size, plan.seq_length);
    let mut steps = StepPlan::new(&model, &topo, plan.micro_batches_per_step, b, t);
    let mut grads = vec![0.0f32; model.layout.total];
    std::fs::create_dir_all(&plan.output_dir)
        .map_err(|e| crate::data::Error::io(&plan.output_dir, e))?;
    let mut jsonl = match rank0 {
        true => Some(JsonlWriter::open(plan.output_dir.join("metrics.jsonl"))?),
        false => None,
    };
    let mut tb = match (&plan.tensorboard, rank0) {
        (Some(t), true) => Some(EventWriter::new(t.dir.join("rank_0"))?),
        _ => None,
    };
    if let Some(tb) = tb.as_mut() {
        tb.add_text("config", resolved_config, state.step as i64)?;
    }
    let flops_per_token = plan.model.flops_per_token(t);
    let devices = topo.world() as f64;
    let start_step = state.step;
    let mut losses = Vec::new();
    let run_started = Instant::now();
    let mut tokens_done = 0u64;
    let loss_owner = model.shard.last && topo.tp_rank == 0;
    let mut spikes_in_a_row = 0u64;
    // 4. Steps.
    while state.step < plan.train_steps {
        let started = Instant::now();
        let step = state.step + 1;
        let lr = plan.lr_schedule.lr_at(state.step) as f32;
        grads.fill(0.0);
        let loss_sum = steps.run(
            &model,
            &train,
            state.consumed_samples,
            &mut grads,
            &mut cluster.groups,
        )?;
        // One all-reduce tells every rank the global loss and whether any rank was signalled,
        // so all of them stop (and save) after the same step.
        let mut shared = [
            if loss_owner { loss_sum } else { 0.0 },
            stop.load(Ordering::SeqCst) as u8 as f32,
        ];
        cluster.groups.world.all_reduce_sum(&mut shared)?;
        let loss = shared[0] / (plan.micro_batches_per_step * topo.dp) as f32;
        let stopping = shared[1] > 0.0;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "loss",
                value: loss,
            });
        }
        let groups = &mut cluster.groups;
        optimizer.reduce_grads(&mut grads, &mut *groups.dp)?;
        let norm = optimizer.grad_norm(&model, &grads, &mut *groups.model, &mut *groups.world)?;
        if !norm.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "grad norm",
                value: norm,
            });
        }
        // Spike checks (every rank sees the same loss and norm, so all skip alike).
        let skip = plan.health.spike(loss, norm, &losses);
        if let Some(why) = &skip {
            spikes_in_a_row += 1;
            if spikes_in_a_row >= plan.health.max_in_a_row {
                return Err(Error::Unhealthy {
                    step,
                    count: spikes_in_a_row,
                    why: why.clone(),
                });
            }
            tracing::warn!(
                "step {step}: {why}; skipping its update ({spikes_in_a_row} in a row, stopping at {})",
                plan.health.max_in_a_row
            );
        } else {
            spikes_in_a_row = 0;
            if let Some(max) = plan.max_grad_norm {
                optimizer.clip(&mut grads, max as f32, norm);
            }
            let dp = &mut *cluster.groups.dp;
            optimizer.step(&mut model.params, &grads, &decay, &adamw, lr, dp)?;
        }
        state.step = step;
        state.consumed_samples += plan.global_batch_size as u64;
        state.last_loss = loss;
        losses.push(loss);
        // Metrics.
        let secs = started.elapsed().as_secs_f64();
        let tokens = (plan.global_batch_size * t) as u64;
        tokens_done += tokens;
        let tps = tokens as f64 / secs;
        let eta = (plan.train_steps - step) as f64 * run_started.elapsed().as_secs_f64()
            / (step - start_step) as f64;
        let metrics = StepMetrics {
            step,
            epoch: Some(state.consumed_samples.saturating_sub(1) / train.len() as u64),
            loss: Some(loss as f64),
            lr: lr as f64,
            grad_norm: Some(norm as f64),
            step_time_ms: secs * 1e3,
            samples_consumed: state.consumed_samples,
            tokens_consumed: state.consumed_samples * t as u64,
            samples_per_sec_per_device: Some(plan.global_batch_size as f64 / secs / devices),
            tokens_per_sec: Some(tps),
            flops_per_sec_per_device: Some(tps * flops_per_token / devices),
            mfu: Some(tps * flops_per_token / devices / peak_flops()),
            memory_rss_bytes: rss_bytes(),
            eta_secs: Some(eta),
        };
        if let Some(jsonl) = jsonl.as_mut() {
            jsonl.write(&metrics)?;
        }
        if let Some(tb) = tb.as_mut() {
            log_to_tensorboard(tb, &metrics, plan.global_batch_size as u64)?;
            tb.flush()?;
        }
        if rank0
            && (step % plan.log_every_steps.max(1) == 0
                || step == plan.train_steps
                || step == start_step + 1)
        {
            tracing::info!(
                "step {step}/{} | loss {loss:.4} | lr {lr:.3e} | grad_norm {norm:.3} | {tps:.0} tokens/s | mfu {:.1}% | rss {} MiB | eta {eta:.0}s",
                plan.train_steps,
                100.0 * tps * flops_per_token / devices / peak_flops(),
                rss_bytes().unwrap_or(0) >> 20,
            );
        }
        // Checkpoint: periodic, final, or final-state on a stop signal.
        let due = plan
            .checkpoint
            .as_ref()
            .is_some_and(|ck| step % ck.every_steps.max(1) == 0 || step == plan.train_steps);
        if due || stopping {
            let dir = save_checkpoint(
                plan,
                resolved_config,
                &model,
                &optimizer,
                &state,
                &topo,
                &mut cluster,
            )?;
            last_checkpoint = Some(dir.clone());
            if stopping {
                tracing::warn!(step, "stop signal: final state saved");
                return Err(Error::Stopped {
                    step,
                    checkpoint: dir,
                });
            }
        }
    }
    if let Some(tb) = tb {
        tb.close()?;
    }
    Ok(Summary {
        steps: state.step,
        start_step,
        losses,
        last_checkpoint,
        tokens_per_sec: tokens_done as f64 / run_started.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Writes a checkpoint. One process: the single-file layout. Several: every rank of
/// data-parallel index 0 writes its part of the weights and moments into the shared staging
/// directory (temporary name, fsync, rename); after a barrier rank 0 adds the unified HF weights
/// (gathered over the network), config, trainer state and checksums of everything, renames the
/// directory and writes the commit marker; a last barrier holds every rank until the commit.
fn save_checkpoint(
    plan: &TrainPlan,
    resolved_config: &str,
    model: &Qwen3,
    optimizer: &DistOptimizer,
    state: &TrainerState,
    topo: &crate::parallel::Topology,
    cluster: &mut Cluster,
) -> Result<PathBuf, Error> {
    let root = plan.checkpoint_root.clone();
    let local = optimizer.full_state(&mut *cluster.groups.dp)?;
    let multi = topo.world() > 1;
    let staging = checkpoint::sharded::staging_dir(&root, state.step);
    if multi {
        if topo.rank == 0 {
            std::fs::create_dir_all(&root).map_err(|e| crate::data::Error::io(&root, e))?;
            checkpoint::sharded::begin(&root, state.step)?;
        }
        cluster.groups.world.barrier()?;
        if topo.dp_rank == 0 {
            checkpoint::sharded::write_shard(
                &staging,
                &model.shard,
                topo.pp_rank,
                &model.layout,
                &model.params,
                &local,
            )?;
        }
    }
    let gathered = cluster::gather_params(model, plan, topo, &mut *cluster.groups.world)?;
    // Every part is on disk (renamed) before rank 0 commits.
    cluster.groups.world.barrier()?;
    if let Some(params) = gathered {
        let ck = plan.checkpoint.as_ref();
        let layout = crate::model::params::Layout::new(&plan.model);
        let dir = checkpoint::save(&SaveRequest {
            root: &root,
            config: &plan.model,
            layout: &layout,
            params: &params,
            optimizer: (!multi).then_some(&local),
            staging: multi.then_some(staging.as_path()),
            state,
            resolved_config,
            tokenizer_dir: plan.tokenizer_dir.as_deref(),
            keep_max: ck.map_or(1, |c| c.keep_max),
            mindspore_ckpt: ck.is_some_and(|c| c.mindspore_ckpt),
        })?;
        tracing::info!(dir = %dir.display(), "checkpoint committed");
    }
    cluster.groups.world.barrier()?;
    Ok(checkpoint::iteration_dir(&root, state.step))
}

/// Whether `dir` holds a committed checkpoint.
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(checkpoint::MARKER).is_file()
}
