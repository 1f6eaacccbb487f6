//! The Qwen3 blocks as forward/backward pairs, side by side: [`attention`] (input norm, q/k/v
//! projections, q/k norms, RoPE, the attention kernel, output projection), [`mlp`] (post-
//! attention norm and SwiGLU), [`decoder`] (a decoder layer: both blocks with their residual
//! adds) and [`head`] (embedding, final norm, LM head and loss).
//!
//! Tensor parallelism enters at named points only, through [`TensorParallel`]: Megatron's
//! conjugate operators around column-parallel (q/k/v, gate/up) and row-parallel (o, down)
//! projections, and the vocabulary-parallel embedding and loss. With one rank they do nothing,
//! so the blocks read the same with and without it.

pub(super) mod attention;
pub(super) mod decoder;
pub(super) mod head;
pub(super) mod mlp;

use super::ops::attention::AttnDims;
use super::{Qwen3Config, Result};
use crate::dist::Communicator;
use crate::tensor::gemm::Compute;

/// The tensor-parallel group as the blocks see it.
pub(crate) struct TensorParallel<'a> {
    comm: &'a mut dyn Communicator,
}

impl<'a> TensorParallel<'a> {
    /// The blocks' view of the group `comm` (a group of one disables every point).
    pub(crate) fn new(comm: &'a mut dyn Communicator) -> Self {
        TensorParallel { comm }
    }

    /// Whether the model is split over more than one rank.
    pub(crate) fn active(&self) -> bool {
        self.comm.size() > 1
    }

    /// Megatron's `g` forward: sums over the group the partial outputs (N, H) of a
    /// row-parallel projection (o_proj, down_proj), each rank holding some input columns.
    pub(crate) fn row_parallel_output(&mut self, y: &mut [f32]) -> Result<()> {
        if self.active() {
            self.comm.all_reduce_sum(y)?;
        }
        Ok(())
    }

    /// Megatron's `f` backward: sums over the group the input gradients (N, H) of
    /// column-parallel projections (q/k/v, gate/up), each rank holding some output rows.
    pub(crate) fn column_parallel_input_grad(&mut self, dx: &mut [f32]) -> Result<()> {
        if self.active() {
            self.comm.all_reduce_sum(dx)?;
        }
        Ok(())
    }

    /// The group itself, for the vocabulary-parallel embedding and loss.
    pub(crate) fn comm(&mut self) -> &mut dyn Communicator {
        &mut *self.comm
    }
}

/// Sizes of one micro-batch through one rank's part of a layer.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    /// Tokens, B·T.
    pub n: usize,
    /// Hidden size.
    pub h: usize,
    /// MLP width (of this rank's part).
    pub f: usize,
    /// Query width Nq·d and key/value width Nkv·d.
    pub qd: usize,
    pub kvd: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// The attention kernel's sizes.
    pub attn: AttnDims,
    /// The projections' matmul precision (`compute_dtype`).
    pub compute: Compute,
}

impl Dims {
    /// The sizes of `config` (a rank's part) for micro-batches of `b` × `t` tokens.
    pub(super) fn new(c: &Qwen3Config, b: usize, t: usize, compute: Compute) -> Dims {
        Dims {
            n: b * t,
            h: c.hidden_size,
            f: c.intermediate_size,
            qd: c.q_dim(),
            kvd: c.kv_dim(),
            eps: c.rms_norm_eps as f32,
            attn: AttnDims {
                b,
                t,
                nq: c.num_attention_heads,
                nkv: c.num_key_value_heads,
                d: c.head_dim,
            },
            compute,
        }
    }
}
