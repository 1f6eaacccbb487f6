//! One Qwen3 training step for a micro-batch: [`Qwen3::forward`] (whole model) or
//! [`Qwen3::forward_stage`] (a rank's part under tensor/pipeline parallelism) keeps every
//! activation the backward needs in an [`Activations`] arena allocated once per (B, T); the
//! backward is in `qwen3_backward.rs`, the parallel split in `shard.rs`.

pub use super::activations::Activations;
use super::activations::{at, at_mut};
use super::ops::attention::{attention_forward, AttnDims};
use super::ops::cross_entropy::cross_entropy_forward;
use super::ops::embedding::embedding_forward;
use super::ops::linear::linear_forward;
use super::ops::rmsnorm::rmsnorm_forward;
use super::ops::rope::{rope_forward, rope_tables};
use super::ops::swiglu::swiglu_forward;
use super::ops::vocab_parallel::{vocab_cross_entropy_forward, vocab_embedding_forward};
use super::params::{LayerParam as P, Layout};
use super::shard::Shard;
use super::{Error, Qwen3Config, Result};
use crate::dist::{Communicator, SoloComm};

/// A micro-batch in Megatron's convention: labels are already shifted, `loss_mask` selects the
/// positions that count.
pub struct Batch<'a> {
    /// Input ids (B·T).
    pub ids: &'a [u32],
    /// Target ids (B·T).
    pub labels: &'a [u32],
    /// 1.0 where the loss counts (B·T).
    pub loss_mask: &'a [f32],
    /// Position of each token (B·T).
    pub positions: &'a [i64],
    /// B.
    pub b: usize,
    /// T.
    pub t: usize,
}

/// The model (or one rank's part of it, see [`Shard`]): config, parameter layout and the flat
/// parameter buffer.
pub struct Qwen3 {
    /// Configuration of the part this process computes (the whole model unless sharded).
    pub config: Qwen3Config,
    /// Parameter layout of that part.
    pub layout: Layout,
    /// Parameters (`layout.total` elements).
    pub params: Vec<f32>,
    /// Which part of the whole model this is.
    pub shard: Shard,
    /// Vocabulary size of the whole model.
    pub full_vocab: usize,
}

impl Qwen3 {
    /// A model with HF-style random initialisation from `seed`.
    pub fn init(config: Qwen3Config, seed: u32) -> Result<Qwen3> {
        config.validate()?;
        let layout = Layout::new(&config);
        let params = layout.init(config.initializer_range as f32, seed);
        Ok(Qwen3 {
            shard: Shard::full(&config),
            full_vocab: config.vocab_size,
            config,
            layout,
            params,
        })
    }

    /// A model with the given parameters (checked against the layout size).
    pub fn with_params(config: Qwen3Config, params: Vec<f32>) -> Result<Qwen3> {
        config.validate()?;
        let layout = Layout::new(&config);
        if params.len() != layout.total {
            return Err(Error::Config(format!(
                "{} parameters given, the config needs {}",
                params.len(),
                layout.total
            )));
        }
        Ok(Qwen3 {
            shard: Shard::full(&config),
            full_vocab: config.vocab_size,
            config,
            layout,
            params,
        })
    }

    /// Forward pass of the whole model; see [`Qwen3::forward_stage`].
    pub fn forward(&self, acts: &mut Activations, batch: &Batch<'_>) -> Result<f32> {
        Ok(self
            .forward_stage(acts, batch, &mut SoloComm)?
            .unwrap_or(0.0))
    }

    /// Backward pass of the whole model; see [`Qwen3::backward_stage`].
    pub fn backward(
        &self,
        acts: &mut Activations,
        batch: &Batch<'_>,
        grads: &mut [f32],
        loss_scale: f32,
    ) {
        // A group of one performs no communication, so this cannot fail.
        let solo = self.backward_stage(acts, batch, grads, loss_scale, &mut SoloComm);
        debug_assert!(solo.is_ok());
    }

    pub(super) fn dims(&self, acts: &Activations) -> AttnDims {
        AttnDims {
            b: acts.b,
            t: acts.t,
            nq: self.config.num_attention_heads,
            nkv: self.config.num_key_value_heads,
            d: self.config.head_dim,
        }
    }

    /// Forward pass of this rank's part; on the last pipeline stage returns the masked mean
    /// loss `Σ mask·CE / Σ mask` (0 when the mask is empty), elsewhere `None` with the output
    /// in [`Activations::stage_output`]. A stage that does not embed reads its input from
    /// [`Activations::stage_input_mut`]. Leaves every activation the backward needs in `acts`.
    /// `tp` is the tensor-parallel group (all-reduces after row-parallel projections).
    pub fn forward_stage(
        &self,
        acts: &mut Activations,
        batch: &Batch<'_>,
        tp: &mut dyn Communicator,
    ) -> Result<Option<f32>> {
        let c = &self.config;
        let tp_on = tp.size() > 1;
        let (lay, w) = (&self.layout, &self.params);
        let n = batch.b * batch.t;
        assert_eq!(
            (batch.b, batch.t),
            (acts.b, acts.t),
            "activation arena shape"
        );
        let (h, f, d, v) = (c.hidden_size, c.intermediate_size, c.head_dim, c.vocab_size);
        let (qd, kvd, nq, nkv) = (
            c.q_dim(),
            c.kv_dim(),
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let eps = c.rms_norm_eps as f32;
        for (position, &id) in batch.ids.iter().chain(batch.labels).enumerate() {
            if id as usize >= self.full_vocab {
                return Err(Error::TokenOutOfRange {
                    id,
                    position: position % n,
                    vocab_size: self.full_vocab,
                });
            }
        }
        let (cos, sin) = rope_tables(batch.positions, d, c.rope_theta as f32);
        acts.cos.copy_from_slice(&cos);
        acts.sin.copy_from_slice(&sin);
        let dims = self.dims(acts);
        if !self.shard.first {
            // The input was received from the previous stage.
        } else if tp_on {
            vocab_embedding_forward(
                at_mut(&mut acts.resid, 0, n * h),
                batch.ids,
                lay.get(w, lay.embed()),
                h,
                self.vocab_start(),
                tp,
            )?;
        } else {
            embedding_forward(
                at_mut(&mut acts.resid, 0, n * h),
                batch.ids,
                lay.get(w, lay.embed()),
                h,
            );
        }
        for l in 0..c.num_hidden_layers {
            let p = |x: P| lay.get(w, lay.layer(l, x));
            let a = &mut *acts;
            let x = at(&a.resid, l, n * h);
            // Attention block: ln1 -> q/k/v -> q_norm/k_norm -> RoPE -> attention -> o_proj.
            let ln1 = at_mut(&mut a.ln1, l, n * h);
            rmsnorm_forward(
                ln1,
                at_mut(&mut a.ln1_rstd, l, n),
                x,
                p(P::InputLayernorm),
                h,
                eps,
            );
            let ln1 = at(&a.ln1, l, n * h);
            linear_forward(at_mut(&mut a.q_raw, l, n * qd), ln1, p(P::QProj), n, h, qd);
            linear_forward(
                at_mut(&mut a.k_raw, l, n * kvd),
                ln1,
                p(P::KProj),
                n,
                h,
                kvd,
            );
            linear_forward(at_mut(&mut a.v, l, n * kvd), ln1, p(P::VProj), n, h, kvd);
            let q = at_mut(&mut a.q, l, n * qd);
            rmsnorm_forward(
                q,
                at_mut(&mut a.q_rstd, l, n * nq),
                at(&a.q_raw, l, n * qd),
                p(P::QNorm),
                d,
                eps,
            );
            rope_forward(at_mut(&mut a.q, l, n * qd), &a.cos, &a.sin, nq, d);
            let k = at_mut(&mut a.k, l, n * kvd);
            rmsnorm_forward(
                k,
                at_mut(&mut a.k_rstd, l, n * nkv),
                at(&a.k_raw, l, n * kvd),
                p(P::KNorm),
                d,
                eps,
            );
            rope_forward(at_mut(&mut a.k, l, n * kvd), &a.cos, &a.sin, nkv, d);
            attention_forward(
                at_mut(&mut a.attn_out, l, n * qd),
                at_mut(&mut a.att, l, a.b * nq * a.t * a.t),
                &mut a.grads.head_q,
                at(&a.q, l, n * qd),
                at(&a.k, l, n * kvd),
                at(&a.v, l, n * kvd),
                dims,
            );
            let o = &mut a.grads.dx; // scratch (N, H)
            linear_forward(o, at(&a.attn_out, l, n * qd), p(P::OProj), n, qd, h);
            if tp_on {
                tp.all_reduce_sum(o)?;
            }
            let mid = at_mut(&mut a.resid_mid, l, n * h);
            for ((m, &x), &o) in mid.iter_mut().zip(at(&a.resid, l, n * h)).zip(o.iter()) {
                *m = x + o;
            }
            // MLP block: ln2 -> gate/up -> silu(gate)·up -> down_proj.
            let mid = at(&a.resid_mid, l, n * h);
            rmsnorm_forward(
                at_mut(&mut a.ln2, l, n * h),
                at_mut(&mut a.ln2_rstd, l, n),
                mid,
                p(P::PostAttentionLayernorm),
                h,
                eps,
            );
            let ln2 = at(&a.ln2, l, n * h);
            linear_forward(at_mut(&mut a.gate, l, n * f), ln2, p(P::GateProj), n, h, f);
            linear_forward(at_mut(&mut a.up, l, n * f), ln2, p(P::UpProj), n, h, f);
            swiglu_forward(
                at_mut(&mut a.act, l, n * f),
                at(&a.gate, l, n * f),
                at(&a.up, l, n * f),
            );
            let o = &mut a.grads.dx;
            linear_forward(o, at(&a.act, l, n * f), p(P::DownProj), n, f, h);
            if tp_on {
                tp.all_reduce_sum(o)?;
            }
            let (before, after) = a.resid.split_at_mut((l + 1) * n * h);
            let mid = at(&a.resid_mid, l, n * h);
            for ((y, &m), &o) in after[..n * h].iter_mut().zip(mid).zip(o.iter()) {
                *y = m + o;
            }
            let _ = before;
        }
        if !self.shard.last {
            return Ok(None);
        }
        let last = at(&acts.resid, c.num_hidden_layers, n * h);
        rmsnorm_forward(
            &mut acts.lnf,
            &mut acts.lnf_rstd,
            last,
            lay.get(w, lay.final_norm()),
            h,
            eps,
        );
        linear_forward(
            &mut acts.logits,
            &acts.lnf,
            lay.get(w, lay.lm_head()),
            n,
            h,
            v,
        );
        if tp_on {
            vocab_cross_entropy_forward(
                &mut acts.losses,
                &mut acts.ce_max,
                &mut acts.ce_sum,
                &acts.logits,
                batch.labels,
                v,
                self.vocab_start(),
                tp,
            )?;
        } else {
            cross_entropy_forward(&mut acts.losses, &acts.logits, batch.labels, v);
        }
        let total: f32 = batch.loss_mask.iter().sum();
        if total == 0.0 {
            return Ok(Some(0.0));
        }
        let sum: f32 = acts
            .losses
            .iter()
            .zip(batch.loss_mask)
            .map(|(l, m)| l * m)
            .sum();
        Ok(Some(sum / total))
    }
}
