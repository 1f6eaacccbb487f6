//! Training. A [`Trainer`] is built from a validated plan (data, model and optimizer: fresh,
//! from an HF directory, or resumed), then stepped and saved; [`run`] is the loop that does
//! both until the plan's last step or a stop request. The library neither reads the
//! environment nor handles signals: the binary passes a [`Placement`] and a stop flag.
//!
//! Files: `trainer` (build and step), `memory` (the memory plan, checked before anything is
//! allocated), `start` (where a run starts: checkpoint or fresh),
//! `output` (the output directories' lock and checks), `save` (checkpoints of any layout),
//! `report` (metrics files and the step log), `step` (one
//! step's forward/backward passes over the pipeline schedule), `batch` (micro-batches),
//! `cluster` (rendezvous, groups and shards).

pub mod batch;
pub mod cluster;
pub mod memory;
pub mod output;
mod report;
mod save;
mod start;
pub mod step;
mod trainer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::TrainPlan;
pub use cluster::Placement;
pub use trainer::{StepOutcome, Trainer};

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
    /// A plan that does not fit the memory available (see [`memory::MemoryPlan`]).
    #[error("memory: {0}")]
    Memory(String),
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

impl Error {
    /// The process exit code (ARCHITECTURE.md, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Data(e) => e.exit_code(),
            Error::Model(e) => e.exit_code(),
            Error::Checkpoint(e) => e.exit_code(),
            Error::Metrics(e) => e.exit_code(),
            Error::Dist(e) => e.exit_code(),
            Error::Unsupported(_) | Error::Memory(_) => crate::exit::CONFIG_INVALID,
            Error::Diverged { .. } | Error::Unhealthy { .. } => crate::exit::DIVERGED,
            Error::Stopped { .. } => crate::exit::STOPPED,
        }
    }
}

/// What the run is given besides its plan.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// This process's place in the job.
    pub placement: Placement,
    /// Peak FLOP/s per device for MFU; `None`: ~160 GFLOP/s per compute thread (compute.md's
    /// measurement of AVX-512 GEMM on this machine class).
    pub peak_flops: Option<f64>,
    /// Memory this process may use (its share of the cgroup limit or of the available memory);
    /// a plan that needs more is refused before anything is allocated. `None`: not checked.
    pub memory_available: Option<u64>,
    /// Where to report completed steps and saves (the binary's heartbeat reads it).
    pub progress: Option<std::sync::Arc<crate::launch::heartbeat::Progress>>,
}

/// Trains `plan` to its last step; `resolved_config` (YAML) is stored in every checkpoint.
/// Once `stop` is raised on any rank, every rank finishes the current step, saves a
/// final-state checkpoint and returns [`Error::Stopped`].
pub fn run(
    plan: &TrainPlan,
    resolved_config: &str,
    context: &Context,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    let mut trainer = Trainer::build(plan, resolved_config, context)?;
    if let Some(p) = &context.progress {
        p.plan(
            plan.train_steps,
            (plan.global_batch_size * plan.seq_length) as u64,
        );
    }
    while !trainer.finished() {
        let outcome = trainer.step(stop.load(Ordering::SeqCst))?;
        if let Some(p) = &context.progress {
            p.step_done(outcome.step, outcome.loss);
        }
        if outcome.checkpoint_due || outcome.stopping {
            let checkpoint = trainer.save()?;
            if let Some(p) = &context.progress {
                p.saved(outcome.step);
            }
            if outcome.stopping {
                trainer.settle()?;
                tracing::warn!(step = outcome.step, "stop signal: final state saved");
                return Err(Error::Stopped {
                    step: outcome.step,
                    checkpoint,
                });
            }
        }
    }
    trainer.finish()
}
