//! The attention block: `y = o_proj(attention(rope(k_norm(k_proj(ln1(x)))), ...))`, with
//! q/k RMSNorm per head before RoPE (Qwen3), grouped-query heads, and the causal kernel
//! behind [`core_attention_forward`]/[`core_attention_backward`]: FlashAttention-2 style
//! tiles that keep only each row's log-sum-exp, so no T × T buffer exists in a training step.

use super::super::activations::{add_into, HeadScratch, LayerActs, LayerScratch};
use super::super::ops::attention::AttnDims;
use super::super::ops::flash_attention::{
    flash_attention_backward, flash_attention_forward, FlashBackwardScratch,
};
use super::super::ops::linear::{linear_backward, linear_forward};
use super::super::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::super::ops::rope::{rope_backward, rope_forward};
use super::super::params::LayerParam as P;
use super::super::Result;
use super::{Dims, TensorParallel};

/// Forward: writes the block's output (N, H), reduced over the tensor-parallel group, to
/// `s.proj` and keeps in `a` what the backward needs. `w` are the layer's weights.
pub(crate) fn attention_block_forward(
    a: &mut LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    let (n, h, qd, kvd, eps) = (dm.n, dm.h, dm.qd, dm.kvd, dm.eps);
    let (nq, nkv, d) = (dm.attn.nq, dm.attn.nkv, dm.attn.d);
    rmsnorm_forward(
        a.ln1,
        a.ln1_rstd,
        a.x,
        w[P::InputLayernorm as usize],
        h,
        eps,
    );
    linear_forward(dm.compute, a.q_raw, a.ln1, w[P::QProj as usize], n, h, qd);
    linear_forward(dm.compute, a.k_raw, a.ln1, w[P::KProj as usize], n, h, kvd);
    linear_forward(dm.compute, a.v, a.ln1, w[P::VProj as usize], n, h, kvd);
    rmsnorm_forward(a.q, a.q_rstd, a.q_raw, w[P::QNorm as usize], d, eps);
    rope_forward(a.q, s.cos, s.sin, nq, d);
    rmsnorm_forward(a.k, a.k_rstd, a.k_raw, w[P::KNorm as usize], d, eps);
    rope_forward(a.k, s.cos, s.sin, nkv, d);
    core_attention_forward(a.attn_out, a.lse, s.heads, a.q, a.k, a.v, dm.attn);
    linear_forward(
        dm.compute,
        s.proj,
        a.attn_out,
        w[P::OProj as usize],
        n,
        qd,
        h,
    );
    tp.row_parallel_output(s.proj)
}

/// Backward: from the gradient of the block's output in `s.grads.dresid`, accumulates the
/// weights' gradients into `gw` and adds the gradient of the block's input to `dresid`.
pub(crate) fn attention_block_backward(
    a: &LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    gw: &mut [&mut [f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    let (n, h, qd, kvd) = (dm.n, dm.h, dm.qd, dm.kvd);
    let (nq, nkv, d) = (dm.attn.nq, dm.attn.nkv, dm.attn.d);
    let g = &mut *s.grads;
    let o = w[P::OProj as usize];
    linear_backward(
        dm.compute,
        &mut g.dattn,
        gw[P::OProj as usize],
        &g.dresid,
        a.attn_out,
        o,
        n,
        qd,
        h,
        false,
    );
    core_attention_backward(
        (&mut g.dq, &mut g.dk, &mut g.dv),
        s.heads,
        &g.dattn,
        a.attn_out,
        (a.q, a.k, a.v),
        a.lse,
        dm.attn,
    );
    rope_backward(&mut g.dq, s.cos, s.sin, nq, d);
    rope_backward(&mut g.dk, s.cos, s.sin, nkv, d);
    let (qn, kn) = (w[P::QNorm as usize], w[P::KNorm as usize]);
    rmsnorm_backward(
        &mut g.dq_raw,
        gw[P::QNorm as usize],
        &g.dq,
        a.q_raw,
        qn,
        a.q_rstd,
        d,
    );
    rmsnorm_backward(
        &mut g.dk_raw,
        gw[P::KNorm as usize],
        &g.dk,
        a.k_raw,
        kn,
        a.k_rstd,
        d,
    );
    // q, k and v share their input: their input gradients add up in dln.
    let qkv = [
        (P::QProj as usize, &g.dq_raw, qd, false),
        (P::KProj as usize, &g.dk_raw, kvd, true),
        (P::VProj as usize, &g.dv, kvd, true),
    ];
    for (p, dout, oc, add) in qkv {
        let (wp, gwp) = (w[p], &mut *gw[p]);
        linear_backward(dm.compute, &mut g.dln, gwp, dout, a.ln1, wp, n, h, oc, add);
    }
    tp.column_parallel_input_grad(&mut g.dln)?;
    let ln = w[P::InputLayernorm as usize];
    let gln = &mut *gw[P::InputLayernorm as usize];
    rmsnorm_backward(&mut g.dx, gln, &g.dln, a.x, ln, a.ln1_rstd, h);
    add_into(&mut g.dresid, &g.dx);
    Ok(())
}

/// The attention kernel, forward: `out` (N, Nq·d) from q, k (after norm and RoPE) and v,
/// keeping in `saved` what its backward needs: each row's log-sum-exp (B, Nq, T).
fn core_attention_forward(
    out: &mut [f32],
    saved: &mut [f32],
    heads: &mut HeadScratch,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
) {
    flash_attention_forward(out, saved, &mut heads.q, q, k, v, dims);
}

/// The attention kernel, backward: `(dq, dk, dv)` from `dout`, the forward's output and what
/// it saved.
fn core_attention_backward(
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    heads: &mut HeadScratch,
    dout: &[f32],
    out: &[f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    saved: &[f32],
    dims: AttnDims,
) {
    let scratch = FlashBackwardScratch {
        dq: &mut heads.q,
        dk: &mut heads.k,
        dv: &mut heads.v,
    };
    flash_attention_backward(dq, dk, dv, scratch, dout, out, q, k, v, saved, dims);
}
