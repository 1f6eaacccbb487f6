//! One optimizer step's forward and backward passes on one rank, for any parallel layout:
//! the rank's micro-batches run in the pipeline schedule ([`crate::parallel::schedule`]), with
//! tensor-parallel collectives inside the model; then the gradients are summed where copies
//! of a parameter live on several ranks (tensor-parallel norms, a tied embedding split over
//! the first and last stage, data-parallel replicas).

use crate::data::sampling::MegatronDataset;
use crate::model::qwen3::{Activations, Batch, Qwen3};
use crate::parallel::schedule::{self, Op};
use crate::parallel::{Groups, Topology};

use super::batch::MicroBatch;
use super::Error;

/// Activations and input of one in-flight micro-batch.
pub struct Arena {
    acts: Activations,
    mb: MicroBatch,
}

/// The per-rank buffers and schedule of a training step.
pub struct StepPlan {
    arenas: Vec<Arena>,
    ops: Vec<Op>,
    /// Micro-batches this rank runs per step.
    pub micro_batches: usize,
    b: usize,
    t: usize,
    dp: usize,
    dp_rank: usize,
}

impl StepPlan {
    /// Buffers for `micro_batches` micro-batches of `b` × `t` tokens per step on `topo`, the
    /// first `recompute` layers of the rank's part recomputed in the backward.
    pub fn new(
        model: &Qwen3,
        topo: &Topology,
        micro_batches: usize,
        (b, t): (usize, usize),
        recompute: usize,
    ) -> Self {
        let n = schedule::arenas(topo.pp_rank, topo.pp, micro_batches);
        StepPlan {
            arenas: (0..n)
                .map(|_| Arena {
                    acts: Activations::with_recompute(&model.config, b, t, recompute),
                    mb: MicroBatch::new(b, t),
                })
                .collect(),
            ops: schedule::one_f_one_b(topo.pp_rank, topo.pp, micro_batches),
            micro_batches,
            b,
            t,
            dp: topo.dp,
            dp_rank: topo.dp_rank,
        }
    }

    /// Runs the step's forward and backward passes from global sample `consumed`, accumulating
    /// into `grads` this replica's share of the gradient of the mean loss over the global
    /// batch, summed over the copies within the replica. Returns the sum of this rank's micro-batch losses (0 except on the last stage).
    pub fn run(
        &mut self,
        model: &Qwen3,
        data: &MegatronDataset,
        consumed: u64,
        grads: &mut [f32],
        groups: &mut Groups,
    ) -> Result<f32, Error> {
        let n = self.arenas.len();
        let scale = 1.0 / (self.micro_batches * self.dp) as f32;
        let mut loss_sum = 0.0f32;
        // Megatron's sampler: global micro-batch m is samples consumed + m·b·dp …, of which
        // data-parallel rank r takes the r-th b.
        let first_sample = |m: usize| consumed + ((m * self.dp + self.dp_rank) * self.b) as u64;
        let pp = &mut *groups.pp;
        let stage = pp.rank();
        for &op in &self.ops {
            match op {
                Op::Forward(m) => {
                    let a = &mut self.arenas[m % n];
                    a.mb.fill(data, first_sample(m), self.t, model.full_vocab)?;
                    let batch = batch_of(&a.mb, self.b, self.t);
                    if let Some(loss) = model.forward_stage(&mut a.acts, &batch, &mut *groups.tp)? {
                        loss_sum += loss;
                    }
                }
                Op::Backward(m) => {
                    let a = &mut self.arenas[m % n];
                    let batch = batch_of(&a.mb, self.b, self.t);
                    model.backward_stage(&mut a.acts, &batch, grads, scale, &mut *groups.tp)?;
                }
                Op::RecvForward(m) => {
                    pp.recv(self.arenas[m % n].acts.stage_input_mut(), stage - 1)?;
                }
                Op::SendForward(m) => pp.send(self.arenas[m % n].acts.stage_output(), stage + 1)?,
                Op::RecvBackward(m) => {
                    pp.recv(self.arenas[m % n].acts.stage_grad_mut(), stage + 1)?;
                }
                Op::SendBackward(m) => pp.send(self.arenas[m % n].acts.stage_grad(), stage - 1)?,
                Op::SendForwardRecvBackward { send, recv } => {
                    let (s, r) = pair(&mut self.arenas, send % n, recv % n);
                    pp.send_recv(
                        s.acts.stage_output(),
                        stage + 1,
                        r.stage_grad_mut(),
                        stage + 1,
                    )?;
                }
                Op::SendBackwardRecvForward { send, recv } => {
                    // In 1F1B these share an arena: the finished micro-batch's gradient goes
                    // out while the next one's input comes into the same arena.
                    debug_assert_eq!(send % n, recv % n);
                    let (grad, input) = self.arenas[send % n].acts.stage_grad_and_input_mut();
                    pp.send_recv(grad, stage - 1, input, stage - 1)?;
                }
            }
        }
        sync_grads(model, grads, groups)?;
        Ok(loss_sum)
    }
}

fn batch_of(mb: &MicroBatch, b: usize, t: usize) -> Batch<'_> {
    Batch {
        ids: &mb.ids,
        labels: &mb.labels,
        loss_mask: &mb.loss_mask,
        positions: &mb.positions,
        b,
        t,
    }
}

/// `(&arenas[i], &mut arenas[j].acts)` for i ≠ j.
fn pair(arenas: &mut [Arena], i: usize, j: usize) -> (&Arena, &mut Activations) {
    if i < j {
        let (lo, hi) = arenas.split_at_mut(j);
        (&lo[i], &mut hi[0].acts)
    } else {
        let (lo, hi) = arenas.split_at_mut(i);
        (&hi[0], &mut lo[j].acts)
    }
}

/// Sums gradients over the copies of each parameter within a replica: tensor-parallel norms
/// and the tied embedding's first- and last-stage copies (the data-parallel sum is the
/// optimizer's, see [`crate::parallel::zero`]).
fn sync_grads(model: &Qwen3, grads: &mut [f32], groups: &mut Groups) -> Result<(), Error> {
    model.reduce_tp_grads(grads, &mut *groups.tp)?;
    if let Some(embed) = groups.embed.as_mut() {
        let s = &model.layout.specs[model.layout.embed()];
        embed.all_reduce_sum(&mut grads[s.offset..s.offset + s.len])?;
    }
    Ok(())
}
