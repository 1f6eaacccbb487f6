//! `model.model_config` as written (Hugging Face `config.json` field names plus MindFormers'
//! extras) and [`Qwen3Config`], the resolved architecture written as an HF `config.json`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The architecture.
    pub model_config: ModelConfig,
}

/// `model.model_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// MindFormers' legacy config class name (e.g. `Qwen3Config`); ignored.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// V.
    pub vocab_size: u64,
    /// H.
    pub hidden_size: u64,
    /// F (MLP width).
    pub intermediate_size: u64,
    /// L.
    pub num_hidden_layers: u64,
    /// Nq.
    pub num_attention_heads: u64,
    /// Nkv (GQA); default Nq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<u64>,
    /// d; default H / Nq (Qwen3 releases set it explicitly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<u64>,
    /// `silu` (HF) or `swiglu` (MindFormers); both mean the gated SiLU MLP.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Maximum context.
    pub max_position_embeddings: u64,
    /// MindFormers: training sequence length; must equal the data's `seq_length` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_length: Option<u64>,
    /// Init std.
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Ignored (inference KV cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cache: Option<bool>,
    /// lm_head shares the embedding (HF); see `untie_embeddings_and_output_weights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Only `null` (no RoPE scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<super::mindspore::Opaque>,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Ignored (MindSpore flash-attention switch; the kernel choice is the runtime's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_flash_attention: Option<bool>,
    /// MindFormers: biases on the linear layers; only `false`.
    #[serde(default)]
    pub add_bias_linear: bool,
    /// Token ids written to `config.json`.
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
    /// Padding token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    /// Beginning-of-sequence token id.
    #[serde(default = "default_bos")]
    pub bos_token_id: i64,
    /// Attention dropout; only 0.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Residual dropout; only 0.
    #[serde(default)]
    pub hidden_dropout: f64,
    /// Ignored (MindFormers input slicing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_sliced_sig: Option<bool>,
    /// MindFormers' inverse of `tie_word_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untie_embeddings_and_output_weights: Option<bool>,
    /// Only `rope`.
    #[serde(default = "default_rope")]
    pub position_embedding_type: String,
    /// Per-head RMSNorm of q and k (Qwen3's q_norm/k_norm); only `true`.
    #[serde(default = "default_true")]
    pub qk_layernorm: bool,
    /// Ignored (MindFormers fused-weight layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_contiguous_weight_layout_attention: Option<bool>,
    /// Ignored (MindFormers fused q/k/v weights; checkpoints use unfused HF names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_concat: Option<bool>,
    /// Pipeline layer offsets: layers of stage `s` = `L / pp + offset[s]`.
    #[serde(default)]
    pub offset: Offset,
    /// Master-weight dtype.
    #[serde(default = "default_params_dtype")]
    pub params_dtype: Precision,
    /// Matmul dtype.
    #[serde(default = "default_compute_dtype")]
    pub compute_dtype: Precision,
    /// RMSNorm dtype; only float32 (HF computes norms in f32).
    #[serde(default = "default_params_dtype")]
    pub layernorm_compute_dtype: Precision,
    /// Softmax dtype; only float32.
    #[serde(default = "default_params_dtype")]
    pub softmax_compute_dtype: Precision,
    /// RoPE table dtype; only float32.
    #[serde(default = "default_params_dtype")]
    pub rotary_dtype: Precision,
    /// Keep the residual stream in f32.
    #[serde(default)]
    pub fp32_residual_connection: bool,
    /// Only `qwen3`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Only `[Qwen3ForCausalLM]`.
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    /// Sliding-window attention; only `false` (dense Qwen3).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Unused by dense releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u64>,
    /// Unused by dense releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<u64>,
}

fn default_act() -> String {
    "silu".into()
}
fn default_init() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    1_000_000.0
}
fn default_eos() -> i64 {
    151645
}
fn default_bos() -> i64 {
    151643
}
fn default_rope() -> String {
    "rope".into()
}
fn default_true() -> bool {
    true
}
fn default_params_dtype() -> Precision {
    Precision::Float32
}
fn default_compute_dtype() -> Precision {
    Precision::Bfloat16
}
fn default_model_type() -> String {
    "qwen3".into()
}
fn default_architectures() -> Vec<String> {
    vec!["Qwen3ForCausalLM".into()]
}

/// Floating-point precisions of parameters and compute, with MindFormers' (and torch's) names
/// (`float32`, `bfloat16`, `float16`); not to be confused with the token dtypes of datasets
/// (`data::DType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32.
    Float32,
    /// bf16.
    Bfloat16,
    /// f16.
    Float16,
}

impl Precision {
    /// The name used in configs and HF `torch_dtype`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Bfloat16 => "bfloat16",
            Precision::Float16 => "float16",
        }
    }
}

/// `offset`: an integer added to every stage's layer count, or one integer per stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offset {
    /// The same offset for every stage (normally 0).
    Uniform(i64),
    /// One offset per pipeline stage.
    PerStage(Vec<i64>),
}

impl Default for Offset {
    fn default() -> Self {
        Offset::Uniform(0)
    }
}

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Offset::Uniform(o) => serializer.serialize_i64(*o),
            Offset::PerStage(v) => v.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OffsetVisitor;
        impl<'de> Visitor<'de> for OffsetVisitor {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a list of integers, one per pipeline stage")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Offset, E> {
                Ok(Offset::Uniform(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Offset, E> {
                i64::try_from(v)
                    .map(Offset::Uniform)
                    .map_err(|_| E::custom("offset is too large"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Offset, A::Error> {
                let mut v = Vec::new();
                while let Some(o) = seq.next_element::<i64>()? {
                    v.push(o);
                }
                Ok(Offset::PerStage(v))
            }
        }
        deserializer.deserialize_any(OffsetVisitor)
    }
}

/// The resolved architecture: the model's own HF `config.json` type.
pub use crate::model::Qwen3Config;
