//! A decoder layer: `mid = x + attention(x)`, `out = mid + mlp(mid)`.

use super::super::activations::{LayerActs, LayerScratch};
use super::super::Result;
use super::attention::{attention_block_backward, attention_block_forward};
use super::mlp::{mlp_block_backward, mlp_block_forward};
use super::{Dims, TensorParallel};

/// Forward of one layer from `a.x` to `a.out`, keeping what the backward needs in `a`.
pub(crate) fn decoder_layer_forward(
    a: &mut LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    attention_block_forward(a, s, w, dm, tp)?;
    for ((m, &x), &y) in a.mid.iter_mut().zip(a.x).zip(s.proj.iter()) {
        *m = x + y;
    }
    mlp_block_forward(a, s, w, dm, tp)?;
    for ((o, &m), &y) in a.out.iter_mut().zip(a.mid.iter()).zip(s.proj.iter()) {
        *o = m + y;
    }
    Ok(())
}

/// Backward of one layer: `s.grads.dresid` holds the gradient of `a.out` and is left holding
/// the gradient of `a.x` (the residual stream carries it through both blocks).
pub(crate) fn decoder_layer_backward(
    a: &LayerActs<'_>,
    s: &mut LayerScratch<'_>,
    w: &[&[f32]],
    gw: &mut [&mut [f32]],
    dm: Dims,
    tp: &mut TensorParallel<'_>,
) -> Result<()> {
    mlp_block_backward(a, s, w, gw, dm, tp)?;
    attention_block_backward(a, s, w, gw, dm, tp)
}
