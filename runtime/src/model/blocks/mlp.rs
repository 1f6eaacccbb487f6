//! The MLP block: `y = down_proj(silu(gate_proj(ln2(x))) · up_proj(ln2(x)))` (SwiGLU), with
//! gate/up column-parallel and down row-parallel under tensor parallelism.

use super::super::activations::{add_into, LayerActs, LayerScratch};
use super::super::ops::linear::{linear_backward, linear_forward};
use super::super::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::super::ops::swiglu::{swiglu_backward, swiglu_forward};
use super::super::params::LayerParam as P;
use super::super::Result;
use super::{Dims, TensorParallel};

/// Forward from the attention residual `a.mid`: writes the block's output (N, H), reduced
/// over the tensor-parallel group, to `s.proj`.
pub(crate) fn mlp_block_forward(
    a: &mut LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    let (n, h, f) = (dm.n, dm.h, dm.f);
    let ln = w[P::PostAttentionLayernorm as usize];
    rmsnorm_forward(a.ln2, a.ln2_rstd, a.mid, ln, h, dm.eps);
    linear_forward(dm.compute, a.gate, a.ln2, w[P::GateProj as usize], n, h, f);
    linear_forward(dm.compute, a.up, a.ln2, w[P::UpProj as usize], n, h, f);
    swiglu_forward(a.act, a.gate, a.up);
    linear_forward(dm.compute, s.proj, a.act, w[P::DownProj as usize], n, f, h);
    tp.row_parallel_output(s.proj)
}

/// Backward: from the gradient of the block's output in `s.grads.dresid`, accumulates the
/// weights' gradients into `gw` and adds the gradient of the block's input to `dresid`.
pub(crate) fn mlp_block_backward(
    a: &LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    gw: &mut [&mut [f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    let (n, h, f) = (dm.n, dm.h, dm.f);
    let g = &mut *s.grads;
    let down = w[P::DownProj as usize];
    linear_backward(
        dm.compute,
        &mut g.dact,
        gw[P::DownProj as usize],
        &g.dresid,
        a.act,
        down,
        n,
        f,
        h,
        false,
    );
    swiglu_backward(&mut g.dgate, &mut g.dup, &g.dact, a.gate, a.up);
    let (gate, up) = (w[P::GateProj as usize], w[P::UpProj as usize]);
    linear_backward(
        dm.compute,
        &mut g.dln,
        gw[P::GateProj as usize],
        &g.dgate,
        a.ln2,
        gate,
        n,
        h,
        f,
        false,
    );
    linear_backward(
        dm.compute,
        &mut g.dln,
        gw[P::UpProj as usize],
        &g.dup,
        a.ln2,
        up,
        n,
        h,
        f,
        true,
    );
    tp.column_parallel_input_grad(&mut g.dln)?;
    let ln = w[P::PostAttentionLayernorm as usize];
    let gln = &mut *gw[P::PostAttentionLayernorm as usize];
    rmsnorm_backward(&mut g.dx, gln, &g.dln, a.mid, ln, a.ln2_rstd, h);
    add_into(&mut g.dresid, &g.dx);
    Ok(())
}
