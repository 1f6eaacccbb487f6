//! Which part of the model one rank holds under tensor and pipeline parallelism, and the maps
//! between a rank's flat buffer and the full model's.
//!
//! Megatron's split, on HF names:
//! - column-parallel (rows of `[out, in]` split by `tp`): `q_proj`, `k_proj`, `v_proj` (whole
//!   heads), `gate_proj`, `up_proj`;
//! - row-parallel (columns split): `o_proj`, `down_proj`;
//! - vocabulary-parallel (rows split): `embed_tokens`, `lm_head`;
//! - replicated: the RMSNorm weights.
//!
//! A pipeline stage holds layers `layer_start..layer_end`; the first stage holds the embedding,
//! the last the final norm and the output projection (with tied embeddings, its own copy of the
//! embedding, whose gradient is summed with the first stage's, as Megatron does). Absent
//! tensors keep their place in the layout with zero rows, so layouts stay uniform.

use crate::tensor::gemm::Compute;
use std::collections::HashMap;
use std::ops::Range;

use super::params::{LayerParam as P, Layout, ParamSpec};
use super::qwen3::Qwen3;
use super::{Error, Qwen3Config, Result};
use crate::data::rng::RandomState;
use crate::dist::Communicator;
use crate::tensor::init::normal_;

/// The part of the model one rank holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// Position in the tensor-parallel group.
    pub tp_rank: usize,
    /// Tensor-parallel group size.
    pub tp_size: usize,
    /// Decoder layers held (global indices).
    pub layers: Range<usize>,
    /// First pipeline stage: embeds the tokens.
    pub first: bool,
    /// Last pipeline stage: final norm, output projection and loss.
    pub last: bool,
}

/// How a tensor is split across the tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// Rows (dim 0) split: column-parallel linears and vocabulary-parallel tables.
    Rows,
    /// Columns (dim 1) split: row-parallel linears.
    Cols,
    /// Every rank holds all of it.
    Replicated,
}

/// The split of a parameter, by its HF name.
pub fn split_of(name: &str) -> Split {
    const ROWS: [&str; 7] = [
        "embed_tokens.weight",
        "lm_head.weight",
        "q_proj.weight",
        "k_proj.weight",
        "v_proj.weight",
        "gate_proj.weight",
        "up_proj.weight",
    ];
    if ROWS.iter().any(|s| name.ends_with(s)) {
        Split::Rows
    } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
        Split::Cols
    } else {
        Split::Replicated
    }
}

impl Shard {
    /// The whole model in one rank.
    pub fn full(c: &Qwen3Config) -> Shard {
        Shard {
            tp_rank: 0,
            tp_size: 1,
            layers: 0..c.num_hidden_layers,
            first: true,
            last: true,
        }
    }

    /// Whether this rank holds a copy of the embedding table (first stage, or last stage of a
    /// model with tied embeddings).
    pub fn has_embed(&self, c: &Qwen3Config) -> bool {
        self.first || (self.last && c.tie_word_embeddings)
    }

    /// The config of this rank's part: heads, KV heads, MLP width and vocabulary divided by
    /// `tp_size`, and its layer count. Errors explain which size does not divide.
    pub fn local_config(&self, c: &Qwen3Config) -> Result<Qwen3Config> {
        let tp = self.tp_size;
        for (what, n) in [
            ("num_attention_heads", c.num_attention_heads),
            ("num_key_value_heads", c.num_key_value_heads),
            ("intermediate_size", c.intermediate_size),
            ("vocab_size", c.vocab_size),
        ] {
            if n % tp != 0 {
                return Err(Error::Config(format!(
                    "{what} {n} is not divisible by parallel_config.model_parallel {tp}: tensor \
                     parallelism gives each rank whole heads, an equal part of the MLP and of the \
                     vocabulary; choose a model_parallel that divides {n}"
                )));
            }
        }
        let mut l = c.clone();
        l.num_attention_heads /= tp;
        l.num_key_value_heads /= tp;
        l.intermediate_size /= tp;
        l.vocab_size /= tp;
        l.num_hidden_layers = self.layers.len();
        Ok(l)
    }

    /// This rank's parameter layout (HF names with local layer indices; absent tensors have
    /// zero rows).
    pub fn layout(&self, c: &Qwen3Config) -> Result<Layout> {
        let local = self.local_config(c)?;
        Ok(Layout::with_parts(&local, self.has_embed(c), self.last))
    }

    /// The global name of a local tensor name (layer indices shifted by the stage's start).
    fn global_name(&self, name: &str) -> String {
        match name.strip_prefix("model.layers.") {
            Some(rest) => {
                let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
                let l: usize = idx.parse().unwrap_or(0);
                format!("model.layers.{}.{tail}", l + self.layers.start)
            }
            None => name.to_string(),
        }
    }

    /// Visits every (local tensor, its global tensor) pair with a non-empty local part.
    fn pairs<'a>(
        &'a self,
        local: &'a Layout,
        global: &'a Layout,
    ) -> impl Iterator<Item = (&'a ParamSpec, &'a ParamSpec)> + 'a {
        local
            .specs
            .iter()
            .filter(|s| s.len > 0)
            .filter_map(move |s| {
                let name = self.global_name(&s.name);
                global.specs.iter().find(|g| g.name == name).map(|g| (s, g))
            })
    }

    /// Copies this rank's part of a full-model buffer (`global` layout) into a local buffer.
    pub fn extract(&self, local: &Layout, global: &Layout, full: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; local.total];
        for (s, g) in self.pairs(local, global) {
            let dst = &mut out[s.offset..s.offset + s.len];
            let src = &full[g.offset..g.offset + g.len];
            self.copy_part(split_of(&s.name), s, g, |li, gi| dst[li] = src[gi]);
        }
        out
    }

    /// This rank's part (laid out as `local`) of a model laid out as `global`, read one global
    /// tensor at a time from `tensor` (which gives the whole tensor), so that the whole model
    /// is never held.
    pub fn read_part<E>(
        &self,
        local: &Layout,
        global: &Layout,
        mut tensor: impl FnMut(&ParamSpec) -> std::result::Result<Vec<f32>, E>,
    ) -> std::result::Result<Vec<f32>, E> {
        let mut out = vec![0.0; local.total];
        for (s, g) in self.pairs(local, global) {
            let whole = tensor(g)?;
            let dst = &mut out[s.offset..s.offset + s.len];
            self.copy_part(split_of(&s.name), s, g, |li, gi| dst[li] = whole[gi]);
        }
        Ok(out)
    }

    /// The local tensor of this part that holds some of the global tensor `g`, if any.
    pub fn local_of<'a>(&self, local: &'a Layout, g: &ParamSpec) -> Option<&'a ParamSpec> {
        local
            .specs
            .iter()
            .find(|s| s.len > 0 && self.global_name(&s.name) == g.name)
    }

    /// Writes the values `part` of the local tensor `s` into their places in the whole global
    /// tensor `g` (`whole`, `g.len` long), marking them in `covered`.
    pub fn scatter_tensor(
        &self,
        s: &ParamSpec,
        g: &ParamSpec,
        part: &[f32],
        whole: &mut [f32],
        covered: &mut [bool],
    ) {
        self.copy_part(split_of(&s.name), s, g, |li, gi| {
            whole[gi] = part[li];
            covered[gi] = true;
        });
    }

    /// This rank's part of [`Layout::init`] of `global`: every tensor is drawn in order from
    /// the one seeded generator, one at a time, and only this rank's part of it is kept, so
    /// the values are those of initialising the whole model and extracting the part, without
    /// ever holding the whole model.
    pub fn init_part(&self, local: &Layout, global: &Layout, std: f32, seed: u32) -> Vec<f32> {
        let mut out = vec![0.0; local.total];
        let owned: HashMap<&str, &ParamSpec> = self
            .pairs(local, global)
            .map(|(s, g)| (g.name.as_str(), s))
            .collect();
        let mut rng = RandomState::new(seed);
        let mut tensor = Vec::new();
        for g in &global.specs {
            tensor.clear();
            tensor.resize(g.len, 0.0f32);
            if g.shape.len() == 1 {
                tensor.fill(1.0);
            } else {
                normal_(&mut tensor, std, &mut rng);
            }
            if let Some(s) = owned.get(g.name.as_str()) {
                let dst = &mut out[s.offset..s.offset + s.len];
                self.copy_part(split_of(&s.name), s, g, |li, gi| dst[li] = tensor[gi]);
            }
        }
        out
    }

    /// Writes a local buffer into its place in a full-model buffer.
    pub fn scatter_into(&self, local: &Layout, global: &Layout, part: &[f32], full: &mut [f32]) {
        for (s, g) in self.pairs(local, global) {
            let src = &part[s.offset..s.offset + s.len];
            let dst = &mut full[g.offset..g.offset + g.len];
            self.copy_part(split_of(&s.name), s, g, |li, gi| dst[gi] = src[li]);
        }
    }

    /// Calls `f(local_index, global_index)` for every element of the local part, row by row.
    fn copy_part(
        &self,
        split: Split,
        s: &ParamSpec,
        g: &ParamSpec,
        mut f: impl FnMut(usize, usize),
    ) {
        let (r, tp) = (self.tp_rank, self.tp_size);
        match split {
            Split::Replicated => (0..s.len).for_each(|i| f(i, i)),
            Split::Rows => {
                let base = r * s.len;
                (0..s.len).for_each(|i| f(i, base + i));
            }
            Split::Cols => {
                let (rows, gcols) = (g.shape[0], g.shape[1]);
                let lcols = gcols / tp;
                for row in 0..rows {
                    for c in 0..lcols {
                        f(row * lcols + c, row * gcols + r * lcols + c);
                    }
                }
            }
        }
    }

    /// Whether this rank's copy of local tensor `name` counts in a global reduction (the
    /// gradient norm): replicated tensors count on tensor-parallel rank 0 only, the last
    /// stage's copy of a tied embedding not at all.
    pub fn owns(&self, name: &str) -> bool {
        if name == "model.embed_tokens.weight" && !self.first {
            return false;
        }
        split_of(name) != Split::Replicated || self.tp_rank == 0
    }
}

impl Qwen3 {
    /// This rank's part of a freshly initialised model: the values of [`Qwen3::init`] followed
    /// by [`Qwen3::sharded`], holding only the part (and one whole tensor at a time).
    pub fn init_sharded(config: &Qwen3Config, shard: Shard, seed: u32) -> Result<Qwen3> {
        config.validate()?;
        let global = Layout::new(config);
        let layout = shard.layout(config)?;
        let std = config.initializer_range as f32;
        let params = shard.init_part(&layout, &global, std, seed);
        Qwen3::with_part(config, shard, params)
    }

    /// The part `shard` of a model of `config` with the part's parameters `params` (laid out
    /// as `shard.layout(config)`, e.g. from [`crate::checkpoint::load_part`]).
    pub fn with_part(config: &Qwen3Config, shard: Shard, params: Vec<f32>) -> Result<Qwen3> {
        config.validate()?;
        let layout = shard.layout(config)?;
        if params.len() != layout.total {
            return Err(Error::Config(format!(
                "{} parameters given, the part needs {}",
                params.len(),
                layout.total
            )));
        }
        Ok(Qwen3 {
            config: shard.local_config(config)?,
            layout,
            params,
            full_vocab: config.vocab_size,
            shard,
            compute: Compute::F32,
        })
    }

    /// This rank's part of a whole model whose parameters are `full` (laid out for `config`).
    pub fn sharded(config: &Qwen3Config, shard: Shard, full: &[f32]) -> Result<Qwen3> {
        let global = Layout::new(config);
        let params = shard.extract(&shard.layout(config)?, &global, full);
        Qwen3::with_part(config, shard, params)
    }

    /// First vocabulary id of this rank's rows of the embedding and output projection.
    pub(super) fn vocab_start(&self) -> usize {
        self.shard.tp_rank * self.config.vocab_size
    }

    /// Sums the gradients of tensors that every tensor-parallel rank holds but computes from
    /// its own heads only (`q_norm`, `k_norm`) over the group.
    pub fn reduce_tp_grads(&self, grads: &mut [f32], tp: &mut dyn Communicator) -> Result<()> {
        if tp.size() == 1 {
            return Ok(());
        }
        let lay = &self.layout;
        let idx: Vec<usize> = (0..self.config.num_hidden_layers)
            .flat_map(|l| [lay.layer(l, P::QNorm), lay.layer(l, P::KNorm)])
            .collect();
        let mut packed: Vec<f32> = idx
            .iter()
            .flat_map(|&i| lay.get(grads, i).to_vec())
            .collect();
        tp.all_reduce_sum(&mut packed)?;
        let mut at = 0;
        for &i in &idx {
            let s = &lay.specs[i];
            grads[s.offset..s.offset + s.len].copy_from_slice(&packed[at..at + s.len]);
            at += s.len;
        }
        Ok(())
    }
}

/// Layers of each pipeline stage: `L / pp` each, plus MindSpore Transformers' `offset[s]`.
pub fn stage_layers(layers_per_stage: &[usize], stage: usize) -> Range<usize> {
    let start: usize = layers_per_stage[..stage].iter().sum();
    start..start + layers_per_stage[stage]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Qwen3Config {
        Qwen3Config::from_hf_json(
            r#"{"vocab_size": 64, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "tie_word_embeddings": false}"#,
        )
        .expect("config")
    }

    #[test]
    fn extract_and_scatter_partition_the_model() {
        for tied in [true, false] {
            let mut c = tiny();
            c.tie_word_embeddings = tied;
            let global = Layout::new(&c);
            let full: Vec<f32> = (0..global.total).map(|i| i as f32).collect();
            let mut back = vec![-1.0f32; global.total];
            for (tp, pp) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                back.fill(-1.0);
                for stage in 0..pp {
                    for r in 0..tp {
                        let shard = Shard {
                            tp_rank: r,
                            tp_size: tp,
                            layers: stage_layers(&vec![4 / pp; pp], stage),
                            first: stage == 0,
                            last: stage == pp - 1,
                        };
                        let local = shard.layout(&c).expect("layout");
                        let part = shard.extract(&local, &global, &full);
                        shard.scatter_into(&local, &global, &part, &mut back);
                    }
                }
                assert_eq!(back, full, "tp {tp} pp {pp} tied {tied}");
            }
        }
    }

    /// A part initialised alone, and a part read alone from the whole model's file, equal the
    /// part extracted from the whole model.
    #[test]
    fn a_part_initialised_or_read_alone_equals_the_part_of_the_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        for tied in [false, true] {
            let mut c = tiny();
            c.tie_word_embeddings = tied;
            let whole = Qwen3::init(c.clone(), 11).expect("whole");
            let file = dir.path().join(format!("tied-{tied}.safetensors"));
            whole
                .layout
                .save_safetensors(&whole.params, &file, None)
                .expect("save");
            let bytes = std::fs::read(&file).expect("read");
            for (tp_rank, tp_size, layers, first, last) in [
                (0, 1, 0..4, true, true),
                (1, 2, 0..4, true, true),
                (0, 2, 0..2, true, false),
                (1, 2, 2..4, false, true),
                (0, 1, 1..3, false, false),
            ] {
                let shard = Shard {
                    tp_rank,
                    tp_size,
                    layers,
                    first,
                    last,
                };
                let want = Qwen3::sharded(&c, shard.clone(), &whole.params).expect("extract");
                let got = Qwen3::init_sharded(&c, shard.clone(), 11).expect("alone");
                assert_eq!(got.layout, want.layout);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got.params),
                    bits(&want.params),
                    "{shard:?}, tied {tied}"
                );
                let read = whole
                    .layout
                    .load_safetensors_part(&bytes, &file, &shard, &want.layout)
                    .expect("read part");
                assert_eq!(
                    bits(&read),
                    bits(&want.params),
                    "read {shard:?}, tied {tied}"
                );
            }
        }
    }

    #[test]
    fn indivisible_heads_are_explained() {
        let shard = Shard {
            tp_rank: 0,
            tp_size: 3,
            layers: 0..4,
            first: true,
            last: true,
        };
        let msg = shard.local_config(&tiny()).expect_err("3").to_string();
        assert!(
            msg.contains(
                "num_attention_heads 4 is not divisible by parallel_config.model_parallel 3"
            ),
            "{msg}"
        );
    }
}
