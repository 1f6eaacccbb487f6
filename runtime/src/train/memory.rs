//! The memory plan: what each rank will hold, computed from the plan before anything is
//! allocated, with checked arithmetic (a config too large to count is an error, never an
//! overflow or an allocator abort). `pretrain train --dry-run` prints it; every run checks it
//! against the memory the binary found available.

use std::fmt;

use crate::config::plan::LoadCheckpoint;
use crate::config::TrainPlan;
use crate::model::activations::Activations;
use crate::model::Qwen3Config;
use crate::parallel::schedule;
use crate::parallel::Topology;

use super::{cluster, Error};

/// Bytes one rank holds, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankMemory {
    /// Pipeline stage.
    pub stage: usize,
    /// The rank's parameters (f32).
    pub parameters: u64,
    /// Their gradient.
    pub gradients: u64,
    /// AdamW moments (the rank's share under ZeRO-1).
    pub optimizer: u64,
    /// Activation arenas of the micro-batches in flight.
    pub activations: u64,
    /// Checkpoint buffers (one tensor's bytes; rank 0: the whole model gathered), the snapshot
    /// of a background save (`async_save`), ZeRO-1's full-size buffers.
    pub workspace: u64,
    /// At start, beside the part: one whole tensor at a time, twice that when loading (a
    /// tensor and the part of it read).
    pub startup: u64,
}

impl RankMemory {
    /// The steady state: parameters, gradients, optimizer, activations and workspace.
    pub fn steady(&self) -> u64 {
        [
            self.parameters,
            self.gradients,
            self.optimizer,
            self.activations,
            self.workspace,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// The larger of the start and the steady state.
    pub fn peak(&self) -> u64 {
        self.steady()
            .max(self.startup.saturating_add(self.parameters))
    }
}

/// The memory plan of a training plan: the rank of each pipeline stage (tensor-parallel ranks
/// of a stage hold the same amounts), rank 0 with its checkpoint workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// One entry per pipeline stage.
    pub stages: Vec<RankMemory>,
}

/// Parameters of a rank's part, counted with checked arithmetic.
fn part_parameters(local: &Qwen3Config, embed: bool, head: bool) -> Option<u64> {
    let u = |x: usize| x as u64;
    let (v, h, f, d) = (
        u(local.vocab_size),
        u(local.hidden_size),
        u(local.intermediate_size),
        u(local.head_dim),
    );
    let q = u(local.num_attention_heads).checked_mul(d)?;
    let kv = u(local.num_key_value_heads).checked_mul(d)?;
    // Norms (2h + 2d), q and o (2qh), k and v (2kv·h), the MLP (3fh).
    let per_layer = [
        Some(2 * h),
        Some(2 * d),
        q.checked_mul(h)?.checked_mul(2),
        kv.checked_mul(h)?.checked_mul(2),
        f.checked_mul(h)?.checked_mul(3),
    ]
    .iter()
    .try_fold(0u64, |a, x| a.checked_add((*x)?))?;
    let table = v.checked_mul(h)?;
    let mut total = u(local.num_hidden_layers).checked_mul(per_layer)?;
    if embed {
        total = total.checked_add(table)?;
    }
    if head {
        total = total.checked_add(h)?;
        if !local.tie_word_embeddings {
            total = total.checked_add(table)?;
        }
    }
    Some(total)
}

/// Buffers beside the steady state: ZeRO-1's padded buffer and slice (kept for the run);
/// for checkpoints, ZeRO-1's gathered moments, one tensor's bytes while a file is written
/// (the largest: the embedding, `table`), on rank 0 of a multi-process job one tensor of the
/// unified file assembled from the parts, and the snapshot a background save writes from (the rank's parameters
/// and moments).
fn workspace(plan: &TrainPlan, stage: usize, params: u64, table: u64) -> u64 {
    let mut w = 0u64;
    if plan.zero1 {
        w = w.saturating_add(params.saturating_add(params / plan.dp_size as u64));
    }
    let Some(ck) = &plan.checkpoint else {
        return w;
    };
    if plan.zero1 {
        w = w.saturating_add(params.saturating_mul(2));
    }
    w = w.saturating_add(table);
    if stage == 0 && plan.world_size > 1 {
        // Rank 0 assembles the unified file a tensor at a time: the tensor and a part of it.
        w = w.saturating_add(table.saturating_mul(2));
    }
    if ck.async_save {
        w = w.saturating_add(params.saturating_mul(3));
    }
    w
}

/// "needs more than 16 EiB": what a count that overflows means.
fn too_large(what: &str) -> Error {
    Error::Memory(format!(
        "{what} cannot even be counted in 64 bits; the model sizes in model.model_config (or \
         batch_size x seq_length) are far beyond any machine; check them"
    ))
}

impl MemoryPlan {
    /// The plan's memory per rank.
    pub fn of(plan: &TrainPlan) -> Result<MemoryPlan, Error> {
        // Sizes that overflow are refused here, whatever the layout.
        part_parameters(&plan.model, true, true)
            .and_then(|p| p.checked_mul(4))
            .ok_or_else(|| too_large("the model's parameters"))?;
        let mut stages = Vec::with_capacity(plan.pp_size);
        for stage in 0..plan.pp_size {
            // The first rank of the stage: data-parallel index 0, tensor rank 0.
            let rank = stage * plan.tp_size;
            let topo = Topology::new(rank, plan.dp_size, plan.tp_size, plan.pp_size);
            let shard = cluster::shard_of(plan, &topo);
            let local = shard.local_config(&plan.model)?;
            let params = part_parameters(&local, shard.has_embed(&plan.model), shard.last)
                .and_then(|p| p.checked_mul(4))
                .ok_or_else(|| too_large("a rank's parameters"))?;
            let arenas = schedule::arenas(stage, plan.pp_size, plan.micro_batches_per_step) as u64;
            let (b, t) = (plan.micro_batch_size, plan.seq_length);
            let recompute = plan.recompute_layers[stage];
            let activations = Activations::bytes(&local, b, t, recompute)
                .and_then(|a| a.checked_mul(arenas))
                .ok_or_else(|| too_large("the activations"))?;
            let optimizer = match plan.zero1 {
                true => params.saturating_mul(2) / plan.dp_size as u64,
                false => params.saturating_mul(2),
            };
            let table = (plan.model.vocab_size as u64)
                .saturating_mul(plan.model.hidden_size as u64)
                .saturating_mul(4);
            let workspace = workspace(plan, stage, params, table);
            // Loading reads the rank's part one whole tensor at a time (assembling a moment
            // from saved parts: the tensor and the part read); a fresh start draws one whole
            // tensor at a time. The largest tensor is the embedding.
            let startup = match plan.load_checkpoint != LoadCheckpoint::None {
                true => table.saturating_mul(2),
                false => table,
            };
            stages.push(RankMemory {
                stage,
                parameters: params,
                gradients: params,
                optimizer,
                activations,
                workspace,
                startup,
            });
        }
        Ok(MemoryPlan { stages })
    }

    /// The most any rank needs.
    pub fn peak(&self) -> u64 {
        self.stages.iter().map(RankMemory::peak).max().unwrap_or(0)
    }

    /// Refuses a plan whose largest rank needs more than `available` bytes per process, with
    /// the fixes that apply.
    pub fn check(&self, plan: &TrainPlan, available: u64) -> Result<(), Error> {
        let Some(worst) = self.stages.iter().max_by_key(|s| s.peak()) else {
            return Ok(());
        };
        if worst.peak() <= available {
            return Ok(());
        }
        let mut fixes = Vec::new();
        if worst.activations > worst.peak() / 4 {
            if plan.micro_batch_size > 1 {
                fixes.push("a smaller runner_config.batch_size");
            }
            if plan.recompute_layers[worst.stage] < plan.layers_per_stage[worst.stage] {
                fixes.push("recompute_config.recompute: True");
            }
            fixes.push("a shorter seq_length");
        }
        fixes.push("more pipeline stages or model_parallel (each rank holds less)");
        if !plan.zero1 && plan.dp_size > 1 {
            fixes.push("parallel.enable_parallel_optimizer: True (ZeRO-1)");
        }
        Err(Error::Memory(format!(
            "stage {} needs {} per process ({}), but {} is available; try {}",
            worst.stage,
            gib(worst.peak()),
            breakdown(worst),
            gib(available),
            fixes.join(", or ")
        )))
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn breakdown(r: &RankMemory) -> String {
    format!(
        "parameters {}, gradients {}, optimizer {}, activations {}, workspace {}, startup {}",
        gib(r.parameters),
        gib(r.gradients),
        gib(r.optimizer),
        gib(r.activations),
        gib(r.workspace),
        gib(r.startup)
    )
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>10}",
            "stage", "params", "grads", "optimizer", "activations", "workspace", "startup", "peak"
        )?;
        for r in &self.stages {
            writeln!(
                f,
                "{:>5} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>10}",
                r.stage,
                gib(r.parameters),
                gib(r.gradients),
                gib(r.optimizer),
                gib(r.activations),
                gib(r.workspace),
                gib(r.startup),
                gib(r.peak())
            )?;
        }
        Ok(())
    }
}
