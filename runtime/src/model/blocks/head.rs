//! The ends of the model: the token embedding (first pipeline stage) and the head (last
//! stage): final norm, LM head and the masked mean cross-entropy. Under tensor parallelism
//! both are vocabulary-parallel: each rank holds the rows `vocab_start..vocab_start + V/tp`.

use super::super::activations::Activations;
use super::super::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use super::super::ops::embedding::{embedding_backward, embedding_forward};
use super::super::ops::linear::{linear_backward, linear_forward};
use super::super::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::super::ops::vocab_parallel::{
    vocab_cross_entropy_backward, vocab_cross_entropy_forward, vocab_embedding_backward,
    vocab_embedding_forward,
};
use super::super::Result;
use super::TensorParallel;
use crate::tensor::gemm::Compute;

/// The head's weights and this rank's vocabulary rows.
pub(crate) struct HeadWeights<'a> {
    /// `model.norm.weight` (H).
    pub norm: &'a [f32],
    /// `lm_head.weight` (V/tp, H), the embedding when tied.
    pub lm_head: &'a [f32],
    /// First vocabulary row this rank holds.
    pub vocab_start: usize,
    /// Rows this rank holds.
    pub v: usize,
    /// The LM head's matmul precision.
    pub compute: Compute,
}

/// Embeds `ids` (N) into `out` (N, H).
pub(crate) fn embed_forward(
    out: &mut [f32],
    ids: &[u32],
    wte: &[f32],
    h: usize,
    vocab_start: usize,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    if tp.active() {
        vocab_embedding_forward(out, ids, wte, h, vocab_start, tp.comm())?;
    } else {
        embedding_forward(out, ids, wte, h);
    }
    Ok(())
}

/// Accumulates into `dwte` the gradient of the embedding from `dout` (N, H).
pub(crate) fn embed_backward(
    dwte: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    h: usize,
    vocab_start: usize,
    tp: &TensorParallel<'_>,
) {
    if tp.active() {
        vocab_embedding_backward(dwte, dout, ids, h, vocab_start);
    } else {
        embedding_backward(dwte, dout, ids, h);
    }
}

/// Head forward from the last layer's output ([`Activations::stage_output`]): the masked
/// mean loss `Σ mask·CE / Σ mask` (0 when the mask is empty). The LM head and the loss run over
/// chunks of `loss_chunk` tokens (see [`loss_chunk`](crate::model::activations::loss_chunk)); the last chunk's logits stay in `a.logits`.
pub(crate) fn head_forward(
    a: &mut Activations,
    w: &HeadWeights<'_>,
    labels: &[u32],
    loss_mask: &[f32],
    eps: f32,
    tp: &mut TensorParallel<'_>,
) -> Result<f32> {
    let (n, h, v) = (labels.len(), w.norm.len(), w.v);
    let x = &a.resid[a.resid.len() - n * h..];
    rmsnorm_forward(&mut a.lnf, &mut a.lnf_rstd, x, w.norm, h, eps);
    for (r0, r1) in chunks(n, a.loss_chunk) {
        let logits = &mut a.logits[..(r1 - r0) * v];
        linear_forward(
            w.compute,
            logits,
            &a.lnf[r0 * h..r1 * h],
            w.lm_head,
            r1 - r0,
            h,
            v,
        );
        let (losses, y) = (&mut a.losses[r0..r1], &labels[r0..r1]);
        if tp.active() {
            let (mx, sm) = (&mut a.ce_max[r0..r1], &mut a.ce_sum[r0..r1]);
            let lo = w.vocab_start;
            vocab_cross_entropy_forward(losses, mx, sm, logits, y, v, lo, tp.comm())?;
        } else {
            cross_entropy_forward(losses, logits, y, v);
        }
    }
    let total: f32 = loss_mask.iter().sum();
    if total == 0.0 {
        return Ok(0.0);
    }
    let sum: f32 = a.losses.iter().zip(loss_mask).map(|(l, m)| l * m).sum();
    Ok(sum / total)
}

/// `(first, end)` token ranges of the logits chunks.
fn chunks(
    n: usize,
    chunk: usize,
) -> impl DoubleEndedIterator<Item = (usize, usize)> + ExactSizeIterator {
    (0..n.div_ceil(chunk)).map(move |k| (k * chunk, ((k + 1) * chunk).min(n)))
}

/// Head backward of `loss_scale · loss`: accumulates the norm's and LM head's gradients and
/// writes the gradient of the last layer's output to `grads.dresid`. Chunks run last to first;
/// every chunk but the last recomputes its logits (the last is still in `a.logits`).
pub(crate) fn head_backward(
    a: &mut Activations,
    w: &HeadWeights<'_>,
    (gnorm, glm_head): (&mut [f32], &mut [f32]),
    labels: &[u32],
    loss_mask: &[f32],
    loss_scale: f32,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    let (n, h, v) = (labels.len(), w.norm.len(), w.v);
    let x = &a.resid[a.resid.len() - n * h..];
    let g = &mut a.grads;
    let total: f32 = loss_mask.iter().sum();
    for (dl, &m) in g.dlosses.iter_mut().zip(loss_mask) {
        *dl = if total > 0.0 {
            m * loss_scale / total
        } else {
            0.0
        };
    }
    let last = n.div_ceil(a.loss_chunk) - 1;
    for (k, (r0, r1)) in chunks(n, a.loss_chunk).enumerate().rev() {
        let (rows, lnf) = (r1 - r0, &a.lnf[r0 * h..r1 * h]);
        let logits = &mut a.logits[..rows * v];
        if k != last {
            linear_forward(w.compute, logits, lnf, w.lm_head, rows, h, v);
        }
        let (y, dl) = (&labels[r0..r1], &g.dlosses[r0..r1]);
        if tp.active() {
            let (mx, sm) = (&a.ce_max[r0..r1], &a.ce_sum[r0..r1]);
            vocab_cross_entropy_backward(logits, y, dl, mx, sm, w.vocab_start);
        } else {
            cross_entropy_backward(logits, y, dl, v);
        }
        let dln = &mut g.dln[r0 * h..r1 * h];
        linear_backward(
            w.compute, dln, glm_head, logits, lnf, w.lm_head, rows, h, v, false,
        );
    }
    tp.column_parallel_input_grad(&mut g.dln)?;
    rmsnorm_backward(&mut g.dresid, gnorm, &g.dln, x, w.norm, &a.lnf_rstd, h);
    Ok(())
}
