//! [`Trainer`]: built once from a validated plan, then stepped; `save.rs` adds its checkpoints.

use crate::tensor::gemm::Compute;
use crate::tensor::gemm_bf16::has_native_bf16;
use std::path::PathBuf;
use std::time::Instant;

use crate::checkpoint::TrainerState;
use crate::config::TrainPlan;
use crate::data::sampling::{build_datasets, check_vocabulary, MegatronDataset};
use crate::data::tokenizer::HfTokenizer;
use crate::model::qwen3::Qwen3;
use crate::optim::adamw::{AdamWConfig, AdamWState};
use crate::parallel::zero::DistOptimizer;
use crate::parallel::Topology;

use super::cluster::{self, Cluster};
use super::memory::MemoryPlan;
use super::output;
use super::report::{Reporter, StepRecord};
use super::save::{PendingSave, Spare};
use super::step::StepPlan;
use super::{start, Context, Error, Summary};

/// One rank's training state: its place in the job, the train split, its part of the model and
/// optimizer, the step buffers and the metrics writers.
pub struct Trainer<'a> {
    pub(super) plan: &'a TrainPlan,
    pub(super) resolved_config: &'a str,
    pub(super) cluster: Cluster,
    train: MegatronDataset,
    pub(super) model: Qwen3,
    pub(super) optimizer: DistOptimizer,
    /// (offset, length, decays) of every parameter of the rank's part.
    decay: Vec<(usize, usize, bool)>,
    adamw: AdamWConfig,
    steps: StepPlan,
    grads: Vec<f32>,
    pub(super) state: TrainerState,
    pub(super) last_checkpoint: Option<PathBuf>,
    report: Reporter,
    start_step: u64,
    losses: Vec<f32>,
    spikes_in_a_row: u64,
    /// A checkpoint being written in the background.
    pub(super) pending: Option<PendingSave>,
    /// Snapshot buffers kept for the next background save.
    pub(super) spare: Spare,
    /// Rank 0: the output directories' lock, held until the trainer is dropped.
    _output_lock: Option<output::OutputLock>,
}

/// Peak FLOP/s per process for MFU: the context's, else 160 GFLOP/s per compute thread, twice
/// that for bf16 products on `vdpbf16ps` (twice the multiply-adds of an f32 FMA).
fn peak_flops(context: &Context, model: &Qwen3) -> f64 {
    let bf16_rate = match model.compute == Compute::Bf16 && has_native_bf16() {
        true => 2.0,
        false => 1.0,
    };
    context
        .peak_flops
        .unwrap_or(160e9 * bf16_rate * rayon::current_num_threads() as f64)
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The step just completed (1-based).
    pub step: u64,
    /// Its global mean loss.
    pub loss: f32,
    /// Whether any rank asked to stop: every rank sees the same answer.
    pub stopping: bool,
    /// Whether the plan saves a checkpoint at this step.
    pub checkpoint_due: bool,
}

impl<'a> Trainer<'a> {
    /// Joins the job, builds the train split (rank 0 builds the index cache first), and the
    /// rank's part of the model and optimizer from where the plan starts (fresh, a checkpoint's
    /// weights, or resumed). `resolved_config` (YAML) is stored in every checkpoint.
    pub fn build(
        plan: &'a TrainPlan,
        resolved_config: &'a str,
        context: &Context,
    ) -> Result<Trainer<'a>, Error> {
        // Layout and memory checks before any work, then rendezvous.
        let topo0 = Topology::new(0, plan.dp_size, plan.tp_size, plan.pp_size);
        cluster::shard_of(plan, &topo0).local_config(&plan.model)?;
        let memory = MemoryPlan::of(plan)?;
        if let Some(available) = context.memory_available {
            memory.check(plan, available)?;
        }
        if context.placement.rank == 0 {
            tracing::info!("memory per process (estimate):\n{memory}");
        }
        // One run per output directory; rank 0 holds the lock for the job.
        let output_lock = match context.placement.rank {
            0 => Some(output::lock(plan)?),
            _ => None,
        };
        let mut cluster = Cluster::join(plan, &context.placement)?;
        check_tokenizer(plan)?;
        let topo = cluster.topo;
        let rank0 = topo.rank == 0;
        if !rank0 {
            cluster.groups.world.barrier()?;
        }
        let [train, _, _] = build_datasets(&plan.data)?;
        if rank0 {
            check_vocabulary(&plan.data, plan.model.vocab_size)?;
            cluster.groups.world.barrier()?;
        }
        let train = train.ok_or_else(|| {
            Error::Unsupported("the split string gives the train split no documents".into())
        })?;
        tracing::info!(samples = train.len(), "train dataset ready");
        let start = start::load(plan, cluster::shard_of(plan, &topo))?;
        if plan.overwrite_output_dir {
            // Every rank has read what it starts from before old checkpoints may go.
            cluster.groups.world.barrier()?;
        }
        if rank0 {
            output::check_fresh_start(plan, start.state.step)?;
        }
        let model = start.model;
        let optimizer = start
            .optimizer
            .unwrap_or_else(|| AdamWState::new(model.layout.total));
        let optimizer = DistOptimizer::new(optimizer, plan.zero1, topo.dp_rank, topo.dp);
        if let DistOptimizer::Sharded { lo, hi, .. } = &optimizer {
            tracing::info!("ZeRO-1: this replica keeps the AdamW state of parameters {lo}..{hi}");
        }
        let decay = model
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
        let (b, t) = (plan.micro_batch_size, plan.seq_length);
        let recompute = plan.recompute_layers[topo.pp_rank];
        let steps = StepPlan::new(
            &model,
            &topo,
            plan.micro_batches_per_step,
            (b, t),
            recompute,
        );
        if recompute > 0 {
            tracing::info!("recompute: {recompute} layer(s) of this stage keep only their input");
        }
        let peak = peak_flops(context, &model);
        let start_step = start.state.step;
        let report = Reporter::open(plan, resolved_config, rank0, topo.world(), peak, start_step)?;
        Ok(Trainer {
            plan,
            resolved_config,
            cluster,
            train,
            grads: vec![0.0f32; model.layout.total],
            model,
            optimizer,
            decay,
            adamw,
            steps,
            state: start.state,
            last_checkpoint: start.from,
            report,
            start_step,
            losses: Vec::new(),
            spikes_in_a_row: 0,
            pending: None,
            spare: Spare::default(),
            _output_lock: output_lock,
        })
    }

    /// Whether the plan's last step is done.
    pub fn finished(&self) -> bool {
        self.state.step >= self.plan.train_steps
    }

    /// Trains one step: the micro-batches' forward and backward passes, the global loss (one
    /// all-reduce that also tells every rank whether any was asked to stop), gradient
    /// reduction, norm, health checks, clipping and AdamW, then metrics.
    pub fn step(&mut self, stop_requested: bool) -> Result<StepOutcome, Error> {
        let plan = self.plan;
        let started = Instant::now();
        let step = self.state.step + 1;
        let lr = plan.lr_schedule.lr_at(self.state.step) as f32;
        self.grads.fill(0.0);
        let groups = &mut self.cluster.groups;
        let consumed = self.state.consumed_samples;
        let loss_sum =
            self.steps
                .run(&self.model, &self.train, consumed, &mut self.grads, groups)?;
        let topo = self.cluster.topo;
        let loss_owner = self.model.shard.last && topo.tp_rank == 0;
        let mut shared = [
            if loss_owner { loss_sum } else { 0.0 },
            stop_requested as u8 as f32,
        ];
        groups.world.all_reduce_sum(&mut shared)?;
        let loss = shared[0] / (plan.micro_batches_per_step * topo.dp) as f32;
        let stopping = shared[1] > 0.0;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "loss",
                value: loss,
            });
        }
        self.optimizer
            .reduce_grads(&mut self.grads, &mut *groups.dp)?;
        let norm = self.optimizer.grad_norm(
            &self.model,
            &self.grads,
            &mut *groups.model,
            &mut *groups.world,
        )?;
        if !norm.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "grad norm",
                value: norm,
            });
        }
        self.update(step, loss, norm, lr)?;
        self.state.step = step;
        self.state.consumed_samples += plan.global_batch_size as u64;
        self.state.last_loss = loss;
        self.losses.push(loss);
        let record = StepRecord {
            step,
            loss,
            lr,
            grad_norm: norm,
            secs: started.elapsed().as_secs_f64(),
            consumed_samples: self.state.consumed_samples,
            train_samples: self.train.len() as u64,
        };
        self.report.record(plan, &record)?;
        let checkpoint_due = plan.checkpoint.as_ref().is_some_and(|ck| {
            step.is_multiple_of(ck.every_steps.max(1)) || step == plan.train_steps
        });
        Ok(StepOutcome {
            step,
            loss,
            stopping,
            checkpoint_due,
        })
    }

    /// Clips and applies the update, unless the spike checks skip it (every rank sees the same
    /// loss and norm, so all skip alike).
    fn update(&mut self, step: u64, loss: f32, norm: f32, lr: f32) -> Result<(), Error> {
        let health = &self.plan.health;
        if let Some(why) = health.spike(loss, norm, &self.losses) {
            self.spikes_in_a_row += 1;
            if self.spikes_in_a_row >= health.max_in_a_row {
                return Err(Error::Unhealthy {
                    step,
                    count: self.spikes_in_a_row,
                    why,
                });
            }
            tracing::warn!(
                "step {step}: {why}; skipping its update ({} in a row, stopping at {})",
                self.spikes_in_a_row,
                health.max_in_a_row
            );
            return Ok(());
        }
        self.spikes_in_a_row = 0;
        if let Some(max) = self.plan.max_grad_norm {
            self.optimizer.clip(&mut self.grads, max as f32, norm);
        }
        let dp = &mut *self.cluster.groups.dp;
        let (params, grads) = (&mut self.model.params, &self.grads);
        self.optimizer
            .step(params, grads, &self.decay, &self.adamw, lr, dp)?;
        Ok(())
    }

    /// Ends the run: waits for the last checkpoint, closes the metrics files and summarises.
    pub fn finish(mut self) -> Result<Summary, Error> {
        self.settle()?;
        let tokens_per_sec = self.report.tokens_per_sec();
        self.report.close()?;
        Ok(Summary {
            steps: self.state.step,
            start_step: self.start_step,
            losses: self.losses,
            last_checkpoint: self.last_checkpoint,
            tokens_per_sec,
        })
    }
}

/// Refuses a tokenizer with more ids than the model's vocabulary.
fn check_tokenizer(plan: &TrainPlan) -> Result<(), Error> {
    let Some(dir) = &plan.tokenizer_dir else {
        return Ok(());
    };
    let tok = HfTokenizer::load(&dir.join("tokenizer.json"))?;
    if tok.vocab_size > plan.model.vocab_size {
        return Err(Error::Unsupported(format!(
            "{}: the tokenizer has {} ids but model.model_config.vocab_size is {}; the model \
             cannot embed every token (raise vocab_size or use the model's tokenizer)",
            dir.display(),
            tok.vocab_size,
            plan.model.vocab_size
        )));
    }
    Ok(())
}
