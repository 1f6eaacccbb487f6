//! The backward pass of [`Qwen3`], walking the layers of a rank's part in reverse: it
//! accumulates parameter gradients into a flat buffer laid out like the parameters and leaves,
//! on a pipeline stage that does not embed, the gradient of its input for the previous stage.

use super::activations::{add_into, at, Activations};
use super::ops::attention::{attention_backward, AttnBackwardScratch};
use super::ops::cross_entropy::cross_entropy_backward;
use super::ops::embedding::embedding_backward;
use super::ops::linear::linear_backward;
use super::ops::rmsnorm::rmsnorm_backward;
use super::ops::rope::rope_backward;
use super::ops::swiglu::swiglu_backward;
use super::ops::vocab_parallel::{vocab_cross_entropy_backward, vocab_embedding_backward};
use super::params::LayerParam as P;
use super::qwen3::{Batch, Qwen3};
use super::Result;
use crate::dist::Communicator;

impl Qwen3 {
    /// Backward pass after [`Qwen3::forward_stage`] on the same batch: accumulates into
    /// `grads` (layout-shaped) the gradient of `loss_scale · loss`. The logits buffer is
    /// consumed. A stage without the loss reads the gradient of its output from
    /// [`Activations::stage_grad_mut`]; a stage that does not embed leaves the gradient of its
    /// input in [`Activations::stage_grad`].
    pub fn backward_stage(
        &self,
        acts: &mut Activations,
        batch: &Batch<'_>,
        grads: &mut [f32],
        loss_scale: f32,
        tp: &mut dyn Communicator,
    ) -> Result<()> {
        let c = &self.config;
        let tp_on = tp.size() > 1;
        let (lay, w) = (&self.layout, &self.params);
        let n = batch.b * batch.t;
        let (h, f, d, v) = (c.hidden_size, c.intermediate_size, c.head_dim, c.vocab_size);
        let (qd, kvd, nq, nkv) = (
            c.q_dim(),
            c.kv_dim(),
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let dims = self.dims(acts);
        let total: f32 = batch.loss_mask.iter().sum();
        let mut g = lay.split_mut(grads);
        let a = &mut *acts;
        let s = &mut a.grads;
        if self.shard.last {
            for (dl, &m) in s.dlosses.iter_mut().zip(batch.loss_mask) {
                *dl = if total > 0.0 {
                    m * loss_scale / total
                } else {
                    0.0
                };
            }
            if tp_on {
                let lo = self.vocab_start();
                let (mx, sm) = (&a.ce_max, &a.ce_sum);
                vocab_cross_entropy_backward(&mut a.logits, batch.labels, &s.dlosses, mx, sm, lo);
            } else {
                cross_entropy_backward(&mut a.logits, batch.labels, &s.dlosses, v);
            }
            // lm_head (the embedding when tied) and the final norm.
            linear_backward(
                &mut s.dln,
                g[lay.lm_head()],
                &a.logits,
                &a.lnf,
                lay.get(w, lay.lm_head()),
                n,
                h,
                v,
                false,
            );
            if tp_on {
                tp.all_reduce_sum(&mut s.dln)?;
            }
            let last = at(&a.resid, c.num_hidden_layers, n * h);
            rmsnorm_backward(
                &mut s.dresid,
                g[lay.final_norm()],
                &s.dln,
                last,
                lay.get(w, lay.final_norm()),
                &a.lnf_rstd,
                h,
            );
        }
        for l in (0..c.num_hidden_layers).rev() {
            let p = |x: P| lay.get(w, lay.layer(l, x));
            let gi = |x: P| lay.layer(l, x);
            // MLP block.
            linear_backward(
                &mut s.dact,
                g[gi(P::DownProj)],
                &s.dresid,
                at(&a.act, l, n * f),
                p(P::DownProj),
                n,
                f,
                h,
                false,
            );
            swiglu_backward(
                &mut s.dgate,
                &mut s.dup,
                &s.dact,
                at(&a.gate, l, n * f),
                at(&a.up, l, n * f),
            );
            let ln2 = at(&a.ln2, l, n * h);
            linear_backward(
                &mut s.dln,
                g[gi(P::GateProj)],
                &s.dgate,
                ln2,
                p(P::GateProj),
                n,
                h,
                f,
                false,
            );
            linear_backward(
                &mut s.dln,
                g[gi(P::UpProj)],
                &s.dup,
                ln2,
                p(P::UpProj),
                n,
                h,
                f,
                true,
            );
            if tp_on {
                tp.all_reduce_sum(&mut s.dln)?;
            }
            let mid = at(&a.resid_mid, l, n * h);
            rmsnorm_backward(
                &mut s.dx,
                g[gi(P::PostAttentionLayernorm)],
                &s.dln,
                mid,
                p(P::PostAttentionLayernorm),
                at(&a.ln2_rstd, l, n),
                h,
            );
            add_into(&mut s.dresid, &s.dx);
            // Attention block.
            linear_backward(
                &mut s.dattn,
                g[gi(P::OProj)],
                &s.dresid,
                at(&a.attn_out, l, n * qd),
                p(P::OProj),
                n,
                qd,
                h,
                false,
            );
            let scratch = AttnBackwardScratch {
                datt: &mut s.datt,
                dq: &mut s.head_q,
                dk: &mut s.head_k,
                dv: &mut s.head_v,
            };
            attention_backward(
                &mut s.dq,
                &mut s.dk,
                &mut s.dv,
                scratch,
                &s.dattn,
                at(&a.q, l, n * qd),
                at(&a.k, l, n * kvd),
                at(&a.v, l, n * kvd),
                at(&a.att, l, a.b * nq * a.t * a.t),
                dims,
            );
            rope_backward(&mut s.dq, &a.cos, &a.sin, nq, d);
            rope_backward(&mut s.dk, &a.cos, &a.sin, nkv, d);
            rmsnorm_backward(
                &mut s.dq_raw,
                g[gi(P::QNorm)],
                &s.dq,
                at(&a.q_raw, l, n * qd),
                p(P::QNorm),
                at(&a.q_rstd, l, n * nq),
                d,
            );
            rmsnorm_backward(
                &mut s.dk_raw,
                g[gi(P::KNorm)],
                &s.dk,
                at(&a.k_raw, l, n * kvd),
                p(P::KNorm),
                at(&a.k_rstd, l, n * nkv),
                d,
            );
            let ln1 = at(&a.ln1, l, n * h);
            linear_backward(
                &mut s.dln,
                g[gi(P::QProj)],
                &s.dq_raw,
                ln1,
                p(P::QProj),
                n,
                h,
                qd,
                false,
            );
            linear_backward(
                &mut s.dln,
                g[gi(P::KProj)],
                &s.dk_raw,
                ln1,
                p(P::KProj),
                n,
                h,
                kvd,
                true,
            );
            linear_backward(
                &mut s.dln,
                g[gi(P::VProj)],
                &s.dv,
                ln1,
                p(P::VProj),
                n,
                h,
                kvd,
                true,
            );
            if tp_on {
                tp.all_reduce_sum(&mut s.dln)?;
            }
            let x = at(&a.resid, l, n * h);
            rmsnorm_backward(
                &mut s.dx,
                g[gi(P::InputLayernorm)],
                &s.dln,
                x,
                p(P::InputLayernorm),
                at(&a.ln1_rstd, l, n),
                h,
            );
            add_into(&mut s.dresid, &s.dx);
        }
        let embed = lay.embed();
        if !self.shard.first {
            // The gradient of the input stays in `dresid` for the previous stage.
        } else if tp_on {
            vocab_embedding_backward(g[embed], &s.dresid, batch.ids, h, self.vocab_start());
        } else {
            embedding_backward(g[embed], &s.dresid, batch.ids, h);
        }
        let _ = &mut g;
        Ok(())
    }
}
