//! One Qwen3 training step for a micro-batch: [`Qwen3::forward_stage`] (a rank's part under
//! tensor/pipeline parallelism; [`Qwen3::forward`] for the whole model) runs the embedding,
//! the decoder layers and the head (`blocks/`), keeping every activation the backward needs in
//! an [`Activations`] arena allocated once per (B, T); [`Qwen3::backward_stage`] walks them
//! back. The parallel split is in `shard.rs`.

pub use super::activations::Activations;
use super::blocks::decoder::{decoder_layer_backward, decoder_layer_forward};
use super::blocks::head::{
    embed_backward, embed_forward, head_backward, head_forward, HeadWeights,
};
use super::blocks::{Dims, TensorParallel};
use super::ops::rope::rope_tables;
use super::params::{Layout, LAYER_PARAMS};
use super::shard::Shard;
use super::{Error, Qwen3Config, Result};
use crate::dist::{Communicator, SoloComm};
use crate::tensor::gemm::Compute;

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
    /// The projections' matmul precision (`compute_dtype`; f32 unless set): master weights,
    /// norms, softmax, loss and optimizer stay f32 either way.
    pub compute: Compute,
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
            compute: Compute::F32,
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
            compute: Compute::F32,
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

    /// The weights of layer `l`, in [`LAYER_PARAMS`] order.
    fn layer_weights(&self, l: usize) -> Vec<&[f32]> {
        let first = self
            .layout
            .layer(l, super::params::LayerParam::InputLayernorm);
        (first..first + LAYER_PARAMS.len())
            .map(|i| self.layout.get(&self.params, i))
            .collect()
    }

    fn head_weights(&self) -> HeadWeights<'_> {
        let lay = &self.layout;
        HeadWeights {
            norm: lay.get(&self.params, lay.final_norm()),
            lm_head: lay.get(&self.params, lay.lm_head()),
            vocab_start: self.vocab_start(),
            v: self.config.vocab_size,
            compute: self.compute,
        }
    }

    /// Forward pass of this rank's part; on the last pipeline stage returns the masked mean
    /// loss `Σ mask·CE / Σ mask` (0 when the mask is empty), elsewhere `None` with the output
    /// in [`Activations::stage_output`]. A stage that does not embed reads its input from
    /// [`Activations::stage_input_mut`]. Leaves every activation the backward needs in `acts`.
    /// `tp` is the tensor-parallel group.
    pub fn forward_stage(
        &self,
        acts: &mut Activations,
        batch: &Batch<'_>,
        tp: &mut dyn Communicator,
    ) -> Result<Option<f32>> {
        let c = &self.config;
        assert_eq!(
            (batch.b, batch.t),
            (acts.b, acts.t),
            "activation arena shape"
        );
        self.check_tokens(batch)?;
        let mut tp = TensorParallel::new(tp);
        let dm = Dims::new(c, batch.b, batch.t, self.compute);
        let (cos, sin) = rope_tables(batch.positions, c.head_dim, c.rope_theta as f32);
        acts.cos.copy_from_slice(&cos);
        acts.sin.copy_from_slice(&sin);
        if self.shard.first {
            let wte = self.layout.get(&self.params, self.layout.embed());
            let x = acts.stage_input_mut();
            embed_forward(x, batch.ids, wte, dm.h, self.vocab_start(), &mut tp)?;
        }
        for l in 0..c.num_hidden_layers {
            let (mut a, mut s) = acts.layer(l);
            decoder_layer_forward(&mut a, &mut s, &self.layer_weights(l), dm, &mut tp)?;
        }
        if !self.shard.last {
            return Ok(None);
        }
        let w = self.head_weights();
        let loss = head_forward(acts, &w, batch.labels, batch.loss_mask, dm.eps, &mut tp)?;
        Ok(Some(loss))
    }

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
        let lay = &self.layout;
        let mut tp = TensorParallel::new(tp);
        let dm = Dims::new(c, batch.b, batch.t, self.compute);
        let mut g = lay.split_mut(grads);
        if self.shard.last {
            let (norm, head) = (lay.final_norm(), lay.lm_head());
            let pair = two_mut(&mut g, norm, head);
            let (labels, mask) = (batch.labels, batch.loss_mask);
            let w = self.head_weights();
            head_backward(acts, &w, pair, labels, mask, loss_scale, &mut tp)?;
        }
        for l in (0..c.num_hidden_layers).rev() {
            let acts_recomputed = acts.recomputed(l);
            let first = lay.layer(l, super::params::LayerParam::InputLayernorm);
            let gw = &mut g[first..first + LAYER_PARAMS.len()];
            let w = self.layer_weights(l);
            let (mut a, mut s) = acts.layer(l);
            if acts_recomputed {
                // The same inputs and ops as the forward: the same bits, so the gradients
                // equal those without recomputation.
                decoder_layer_forward(&mut a, &mut s, &w, dm, &mut tp)?;
            }
            decoder_layer_backward(&a, &mut s, &w, gw, dm, &mut tp)?;
        }
        if self.shard.first {
            let dx = &acts.grads.dresid;
            embed_backward(g[lay.embed()], dx, batch.ids, dm.h, self.vocab_start(), &tp);
        }
        Ok(())
    }

    /// Refuses input or label ids outside the whole model's vocabulary.
    fn check_tokens(&self, batch: &Batch<'_>) -> Result<()> {
        let n = batch.b * batch.t;
        for (position, &id) in batch.ids.iter().chain(batch.labels).enumerate() {
            if id as usize >= self.full_vocab {
                return Err(Error::TokenOutOfRange {
                    id,
                    position: position % n,
                    vocab_size: self.full_vocab,
                });
            }
        }
        Ok(())
    }
}

/// Two different elements of `v`, both mutable.
fn two_mut<'a>(v: &'a mut [&mut [f32]], i: usize, j: usize) -> (&'a mut [f32], &'a mut [f32]) {
    assert_ne!(i, j, "two_mut needs two different elements");
    if i < j {
        let (lo, hi) = v.split_at_mut(j);
        (&mut *lo[i], &mut *hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(i);
        (&mut *hi[0], &mut *lo[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::values;

    fn tiny(tied: bool) -> Qwen3 {
        let c = Qwen3Config::from_hf_json(&format!(
            r#"{{"vocab_size": 96, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "tie_word_embeddings": {tied}}}"#
        ))
        .expect("config");
        Qwen3::init(c, 7).expect("model")
    }

    /// Loss and gradients of one micro-batch (B 2, T 9) through `acts`.
    fn step(model: &Qwen3, acts: &mut Activations) -> (f32, Vec<f32>) {
        let (b, t) = (2, 9);
        let ids: Vec<u32> = (0..b * t).map(|i| (i * 37 % 96) as u32).collect();
        let labels: Vec<u32> = (0..b * t).map(|i| (i * 53 % 96) as u32).collect();
        let mask: Vec<f32> = values(b * t, 3)
            .iter()
            .map(|x| (*x > -0.5) as u8 as f32)
            .collect();
        let positions: Vec<i64> = (0..b * t).map(|i| (i % t) as i64).collect();
        let batch = Batch {
            ids: &ids,
            labels: &labels,
            loss_mask: &mask,
            positions: &positions,
            b,
            t,
        };
        let loss = model.forward(acts, &batch).expect("forward");
        let mut grads = vec![0.0; model.layout.total];
        model.backward(acts, &batch, &mut grads, 1.0);
        (loss, grads)
    }

    #[test]
    fn recomputed_layers_give_bit_identical_gradients() {
        let model = tiny(false);
        let c = &model.config;
        let kept = step(&model, &mut Activations::new(c, 2, 9));
        for recompute in [1, 3] {
            let got = step(&model, &mut Activations::with_recompute(c, 2, 9, recompute));
            assert_eq!(
                got.0.to_bits(),
                kept.0.to_bits(),
                "loss, {recompute} recomputed"
            );
            assert!(
                got.1
                    .iter()
                    .zip(&kept.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "gradients, {recompute} recomputed"
            );
        }
    }

    #[test]
    fn chunked_logits_give_the_same_loss_and_gradients() {
        for tied in [false, true] {
            let model = tiny(tied);
            let c = &model.config;
            let whole = step(&model, &mut Activations::new(c, 2, 9));
            for chunk in [1, 4, 7] {
                let mut acts = Activations::new(c, 2, 9);
                acts.set_loss_chunk(chunk);
                assert_eq!(acts.logits.len(), chunk * 96);
                let got = step(&model, &mut acts);
                // Every row's loss is computed alike; only the LM head's weight gradient sums
                // the chunks in another order.
                assert_eq!(got.0.to_bits(), whole.0.to_bits(), "loss, chunk {chunk}");
                for (i, (a, b)) in got.1.iter().zip(&whole.1).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "grad {i}: {a} vs {b}, chunk {chunk}"
                    );
                }
            }
        }
    }
}
