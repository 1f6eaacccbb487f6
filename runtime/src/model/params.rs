//! The parameters of a Qwen3 model in one contiguous f32 buffer, in HF order and under HF names.
//! Gradients and optimizer moments use the same layout, so the optimizer, gradient all-reduce
//! and checkpointing are lockstep walks over flat buffers (as llm.c does).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::shard::Shard;
use super::{Error, Qwen3Config, Result};
use crate::data::rng::RandomState;
use crate::tensor::init::normal_;

/// Parameters per decoder layer, in layout order.
pub const LAYER_PARAMS: [&str; 11] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// Index of a parameter within a layer's [`LAYER_PARAMS`].
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub enum LayerParam {
    InputLayernorm = 0,
    QProj,
    KProj,
    VProj,
    OProj,
    QNorm,
    KNorm,
    PostAttentionLayernorm,
    GateProj,
    UpProj,
    DownProj,
}

/// One named tensor of the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// HF name.
    pub name: String,
    /// Shape (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Offset in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl ParamSpec {
    /// Whether weight decay applies by default: matrices yes, norm weights (1-D) no.
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }
}

/// An f32 tensor for safetensors' writer, converted to bytes only when written: a file is
/// written one tensor at a time, never assembled whole in memory.
pub struct F32View<'a> {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: &'a [f32],
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Writes `tensors` to `path` as safetensors (safetensors' own layout: sorted by name, header
/// padded to 8 bytes), one tensor in memory at a time, then syncs the file.
pub fn write_safetensors(
    tensors: Vec<(String, F32View<'_>)>,
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> std::result::Result<(), String> {
    safetensors::serialize_to_file(tensors, metadata, path).map_err(|e| e.to_string())?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| e.to_string())
}

/// The parameter layout of a model config.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Tensors in order.
    pub specs: Vec<ParamSpec>,
    /// Total elements.
    pub total: usize,
    n_layers: usize,
    tied: bool,
}

impl Layout {
    /// The layout of `c`.
    pub fn new(c: &Qwen3Config) -> Layout {
        Layout::with_parts(c, true, true)
    }

    /// The layout of a pipeline stage of `c` (see [`Shard`](super::shard::Shard)): without
    /// `embed` the embedding has zero rows, without `head` the final norm and an untied
    /// `lm_head` have zero rows, so every stage's layout has the same tensors in the same order.
    pub fn with_parts(c: &Qwen3Config, embed: bool, head: bool) -> Layout {
        let (v, h, f, d) = (c.vocab_size, c.hidden_size, c.intermediate_size, c.head_dim);
        let (q, kv) = (c.q_dim(), c.kv_dim());
        let mut specs = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>| {
            let len = shape.iter().product();
            specs.push(ParamSpec {
                name,
                shape,
                offset,
                len,
            });
            offset += len;
        };
        let rows = |present: bool, n: usize| if present { n } else { 0 };
        push("model.embed_tokens.weight".into(), vec![rows(embed, v), h]);
        for l in 0..c.num_hidden_layers {
            let shapes = [
                vec![h],
                vec![q, h],
                vec![kv, h],
                vec![kv, h],
                vec![h, q],
                vec![d],
                vec![d],
                vec![h],
                vec![f, h],
                vec![f, h],
                vec![h, f],
            ];
            for (name, shape) in LAYER_PARAMS.iter().zip(shapes) {
                push(format!("model.layers.{l}.{name}"), shape);
            }
        }
        push("model.norm.weight".into(), vec![rows(head, h)]);
        if !c.tie_word_embeddings {
            push("lm_head.weight".into(), vec![rows(head, v), h]);
        }
        Layout {
            specs,
            total: offset,
            n_layers: c.num_hidden_layers,
            tied: c.tie_word_embeddings,
        }
    }

    /// Index of the embedding.
    pub fn embed(&self) -> usize {
        0
    }

    /// Index of parameter `p` of layer `l`.
    pub fn layer(&self, l: usize, p: LayerParam) -> usize {
        1 + l * LAYER_PARAMS.len() + p as usize
    }

    /// Index of the final norm.
    pub fn final_norm(&self) -> usize {
        1 + self.n_layers * LAYER_PARAMS.len()
    }

    /// Index of the output projection (the embedding when tied).
    pub fn lm_head(&self) -> usize {
        if self.tied {
            0
        } else {
            self.final_norm() + 1
        }
    }

    /// The slice of parameter `i` in a flat buffer.
    pub fn get<'a>(&self, buf: &'a [f32], i: usize) -> &'a [f32] {
        let s = &self.specs[i];
        &buf[s.offset..s.offset + s.len]
    }

    /// Disjoint mutable slices of every parameter in a flat buffer, in layout order.
    pub fn split_mut<'a>(&self, mut buf: &'a mut [f32]) -> Vec<&'a mut [f32]> {
        let mut out = Vec::with_capacity(self.specs.len());
        for s in &self.specs {
            let (head, tail) = buf.split_at_mut(s.len);
            out.push(head);
            buf = tail;
        }
        out
    }

    /// HF initialisation: linear and embedding weights ~ N(0, std²), norms = 1, drawn in layout
    /// order from one seeded generator.
    pub fn init(&self, std: f32, seed: u32) -> Vec<f32> {
        let mut buf = vec![0.0; self.total];
        let mut rng = RandomState::new(seed);
        for (s, slice) in self.specs.iter().zip(self.split_mut(&mut buf)) {
            if s.shape.len() == 1 {
                slice.fill(1.0);
            } else {
                normal_(slice, std, &mut rng);
            }
        }
        buf
    }

    /// Serialises `buf` as safetensors (f32, HF names) to `path`.
    pub fn save_safetensors(
        &self,
        buf: &[f32],
        path: &Path,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<()> {
        let tensors = self
            .specs
            .iter()
            .map(|s| {
                let view = F32View {
                    shape: s.shape.clone(),
                    data: &buf[s.offset..s.offset + s.len],
                };
                (s.name.clone(), view)
            })
            .collect();
        write_safetensors(tensors, metadata, path).map_err(|reason| Error::Weights {
            path: path.into(),
            reason,
        })
    }

    /// Loads tensors named as this layout from safetensors `bytes` into a flat buffer. Every
    /// missing tensor, shape or dtype mismatch, and unexpected name is listed in the error. A
    /// tied model accepts an `lm_head.weight` only if it equals the embedding.
    pub fn load_safetensors(&self, bytes: &[u8], path: &Path) -> Result<Vec<f32>> {
        let st = self.checked_safetensors(bytes, path)?;
        let mut buf = vec![0.0f32; self.total];
        for s in &self.specs {
            buf[s.offset..s.offset + s.len].copy_from_slice(&tensor_f32(&st, &s.name, path)?);
        }
        Ok(buf)
    }

    /// The part `shard` holds (laid out as `local`) of the model these safetensors `bytes`
    /// hold for this (whole-model) layout, read one tensor at a time: the checks of
    /// [`Layout::load_safetensors`] without ever holding the whole model.
    pub fn load_safetensors_part(
        &self,
        bytes: &[u8],
        path: &Path,
        shard: &Shard,
        local: &Layout,
    ) -> Result<Vec<f32>> {
        let st = self.checked_safetensors(bytes, path)?;
        shard.read_part(local, self, |g| tensor_f32(&st, &g.name, path))
    }

    /// The safetensors header of `bytes`, checked against this layout: every missing tensor,
    /// shape or dtype mismatch, and unexpected name is listed in the error.
    fn checked_safetensors<'a>(
        &self,
        bytes: &'a [u8],
        path: &Path,
    ) -> Result<safetensors::SafeTensors<'a>> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
            path: path.into(),
            reason: format!("not safetensors: {e}"),
        })?;
        let mut problems = Vec::new();
        for s in &self.specs {
            match st.tensor(&s.name) {
                Err(_) => problems.push(format!("missing {} {:?}", s.name, s.shape)),
                Ok(t) if t.shape() != s.shape.as_slice() => problems.push(format!(
                    "{}: shape {:?}, the model needs {:?}",
                    s.name,
                    t.shape(),
                    s.shape
                )),
                Ok(t) if !matches!(t.dtype(), Dtype::F32 | Dtype::BF16) => problems.push(format!(
                    "{}: dtype {:?} is not supported",
                    s.name,
                    t.dtype()
                )),
                Ok(_) => {}
            }
        }
        for name in st.names() {
            if self.specs.iter().any(|s| s.name == *name) {
                continue;
            }
            if name == "lm_head.weight" && self.tied {
                let values = |n: &str| st.tensor(n).ok().and_then(|t| to_f32(&t));
                if values(name).is_none() || values(name) != values("model.embed_tokens.weight") {
                    problems.push(
                        "lm_head.weight differs from model.embed_tokens.weight but the config ties \
                         them (tie_word_embeddings: true)"
                            .into(),
                    );
                }
                continue;
            }
            problems.push(format!("unexpected tensor {name}"));
        }
        if problems.is_empty() {
            return Ok(st);
        }
        problems.sort();
        Err(Error::Weights {
            path: path.into(),
            reason: format!(
                "weights do not match the model config: {}",
                problems.join("; ")
            ),
        })
    }
}

/// Tensor `name` of a checked file as f32.
fn tensor_f32(st: &safetensors::SafeTensors<'_>, name: &str, path: &Path) -> Result<Vec<f32>> {
    st.tensor(name)
        .ok()
        .and_then(|t| to_f32(&t))
        .ok_or_else(|| Error::Weights {
            path: path.into(),
            reason: format!("{name}: missing or of an unsupported dtype"),
        })
}

fn to_f32(t: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = t.data();
    match t.dtype() {
        Dtype::F32 => Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::BF16 => Some(
            b.chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny(tied: bool) -> Qwen3Config {
        Qwen3Config {
            vocab_size: 256,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 32,
            max_position_embeddings: 128,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: tied,
            initializer_range: 0.02,
            hidden_act: "silu".into(),
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn counts_and_round_trip() {
        // qwen3-model.md §5 counts for V=128: tied 94,656, untied 102,848.
        let mut c = tiny(true);
        c.vocab_size = 128;
        assert_eq!(Layout::new(&c).total, 94_656);
        c.tie_word_embeddings = false;
        let layout = Layout::new(&c);
        assert_eq!(layout.total, 102_848);
        let buf = layout.init(0.02, 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.safetensors");
        layout.save_safetensors(&buf, &p, None).expect("save");
        let back = layout
            .load_safetensors(&std::fs::read(&p).expect("read"), &p)
            .expect("load");
        assert_eq!(back, buf);
        let mut other = c.clone();
        other.intermediate_size = 100;
        let err = Layout::new(&other).load_safetensors(&std::fs::read(&p).expect("read"), &p);
        let msg = err.expect_err("mismatch").to_string();
        assert!(
            msg.contains(
                "model.layers.0.mlp.gate_proj.weight: shape [96, 64], the model needs [100, 64]"
            ),
            "{msg}"
        );
    }
}
