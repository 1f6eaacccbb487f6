//! The optimizer across data-parallel replicas: replicated (every replica all-reduces the
//! gradients and updates all parameters), or ZeRO-1 (`parallel.enable_parallel_optimizer`):
//! gradients are reduce-scattered, each replica keeps the AdamW moments of and updates only
//! its 1/dp slice of the flat parameter buffer, and the updated slices are all-gathered, so
//! optimizer memory falls by dp at the same communication volume.

use std::borrow::Cow;

use crate::dist::{Communicator, Result};
use crate::model::qwen3::Qwen3;
use crate::optim::adamw::{adamw_step, clip_to, grad_norm, AdamWConfig, AdamWState};

/// AdamW state of one rank, replicated or sharded over its data-parallel group.
pub enum DistOptimizer {
    /// Whole moments on every replica.
    Replicated(AdamWState),
    /// Moments of elements `lo..hi` only; slices are `chunk` long (the last one padded).
    /// Two buffers live as long as the optimizer, so that no step allocates: `padded`
    /// (`chunk · dp`, the reduce-scatter's input and the all-gather's output) and `slice`.
    Sharded {
        /// Moments of the slice.
        state: AdamWState,
        /// First element.
        lo: usize,
        /// One past the last element.
        hi: usize,
        /// Slice length (the buffer is padded to `chunk · dp`).
        chunk: usize,
        /// Elements of the whole buffer.
        total: usize,
        /// The whole buffer padded to `chunk · dp`.
        padded: Vec<f32>,
        /// This rank's padded slice.
        slice: Vec<f32>,
    },
}

impl DistOptimizer {
    /// From the whole moments of this rank's parameters; sharded when `zero` and dp > 1.
    pub fn new(full: AdamWState, zero: bool, dp_rank: usize, dp: usize) -> DistOptimizer {
        if !zero || dp == 1 {
            return DistOptimizer::Replicated(full);
        }
        let total = full.m.len();
        let chunk = total.div_ceil(dp);
        let lo = (dp_rank * chunk).min(total);
        let hi = ((dp_rank + 1) * chunk).min(total);
        DistOptimizer::Sharded {
            state: AdamWState {
                m: full.m[lo..hi].to_vec(),
                v: full.v[lo..hi].to_vec(),
                step: full.step,
            },
            lo,
            hi,
            chunk,
            total,
            padded: vec![0.0; chunk * dp],
            slice: vec![0.0; chunk],
        }
    }

    /// Sums the gradients over the replicas (sharded: only this rank's slice is summed, and
    /// only it is meaningful afterwards).
    pub fn reduce_grads(&mut self, grads: &mut [f32], dp: &mut dyn Communicator) -> Result<()> {
        match self {
            DistOptimizer::Replicated(_) => dp.all_reduce_sum(grads),
            DistOptimizer::Sharded {
                lo,
                hi,
                total,
                padded,
                slice,
                ..
            } => {
                padded[..*total].copy_from_slice(grads);
                padded[*total..].fill(0.0);
                dp.reduce_scatter_sum(padded, slice)?;
                grads[*lo..*hi].copy_from_slice(&slice[..*hi - *lo]);
                Ok(())
            }
        }
    }

    /// The global gradient norm, each distinct element counted once: `model` sums a replica's
    /// parts, `world` every rank's slice.
    pub fn grad_norm<'a>(
        &self,
        model: &Qwen3,
        grads: &[f32],
        model_group: &'a mut dyn Communicator,
        world: &'a mut dyn Communicator,
    ) -> Result<f32> {
        let (range, group) = match self {
            DistOptimizer::Replicated(_) if model_group.size() == 1 => {
                return Ok(grad_norm(grads));
            }
            DistOptimizer::Replicated(_) => (0..grads.len(), model_group),
            DistOptimizer::Sharded { lo, hi, .. } => (*lo..*hi, world),
        };
        let mut sq = 0.0f64;
        for s in &model.layout.specs {
            if !model.shard.owns(&s.name) {
                continue;
            }
            let (a, b) = (s.offset.max(range.start), (s.offset + s.len).min(range.end));
            if a < b {
                sq += grads[a..b]
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>();
            }
        }
        let mut buf = [sq as f32];
        group.all_reduce_sum(&mut buf)?;
        Ok(buf[0].sqrt())
    }

    /// Clips the part of `grads` this rank updates.
    pub fn clip(&self, grads: &mut [f32], max_norm: f32, norm: f32) {
        match self {
            DistOptimizer::Replicated(_) => clip_to(grads, max_norm, norm),
            DistOptimizer::Sharded { lo, hi, .. } => clip_to(&mut grads[*lo..*hi], max_norm, norm),
        }
    }

    /// One AdamW update; sharded, then every replica gathers the updated slices.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        decay: &[(usize, usize, bool)],
        cfg: &AdamWConfig,
        lr: f32,
        dp: &mut dyn Communicator,
    ) -> Result<()> {
        match self {
            DistOptimizer::Replicated(state) => {
                adamw_step(params, grads, state, decay, cfg, lr);
                Ok(())
            }
            DistOptimizer::Sharded {
                state,
                lo,
                hi,
                total,
                padded,
                slice,
                ..
            } => {
                let (lo, hi) = (*lo, *hi);
                let local: Vec<(usize, usize, bool)> = decay
                    .iter()
                    .filter_map(|&(off, len, d)| {
                        let (a, b) = (off.max(lo), (off + len).min(hi));
                        // Lazily: `b - a` underflows for tensors outside the shard.
                        (a < b).then(|| (a - lo, b - a, d))
                    })
                    .collect();
                adamw_step(&mut params[lo..hi], &grads[lo..hi], state, &local, cfg, lr);
                slice[..hi - lo].copy_from_slice(&params[lo..hi]);
                slice[hi - lo..].fill(0.0);
                dp.all_gather(slice, padded)?;
                params.copy_from_slice(&padded[..*total]);
                Ok(())
            }
        }
    }

    /// The whole moments of this rank's parameters (sharded: gathered over the replicas), for
    /// a checkpoint: borrowed when this rank holds them all.
    pub fn full_state(&self, dp: &mut dyn Communicator) -> Result<Cow<'_, AdamWState>> {
        match self {
            DistOptimizer::Replicated(s) => Ok(Cow::Borrowed(s)),
            DistOptimizer::Sharded {
                state,
                chunk,
                total,
                ..
            } => {
                let mut out = AdamWState {
                    m: Vec::new(),
                    v: Vec::new(),
                    step: state.step,
                };
                for (src, dst) in [(&state.m, &mut out.m), (&state.v, &mut out.v)] {
                    let mut mine = src.clone();
                    mine.resize(*chunk, 0.0);
                    let mut all = vec![0.0f32; *chunk * dp.size()];
                    dp.all_gather(&mine, &mut all)?;
                    all.truncate(*total);
                    *dst = all;
                }
                Ok(Cow::Owned(out))
            }
        }
    }
}
