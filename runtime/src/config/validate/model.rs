//! Model and pipeline-split checks of [`Config::validate`](crate::config::Config::validate).

use super::{ensure, invalid, to_usize};
use crate::config::model::{ModelConfig, Offset, Qwen3Config};
use crate::config::schema::Config;
use crate::config::{Precision, Result};

/// True for zero, negative and NaN values.
fn not_positive(x: f64) -> bool {
    x.is_nan() || x <= 0.0
}

const MC: &str = "model.model_config";

/// Decoder layers per pipeline stage: L / pp + offset[s], as MindFormers splits them.
pub(super) fn check_layers(m: &ModelConfig, pp: u64) -> Result<Vec<usize>> {
    let layers = m.num_hidden_layers as i64;
    let pp_i = pp as i64;
    let offsets = match &m.offset {
        Offset::Uniform(0) => vec![0; to_usize(pp)],
        Offset::Uniform(o) => {
            return Err(invalid(
                "model.model_config.offset",
                format!(
                    "a single offset {o} shifts every stage and breaks the layer total; use 0 or \
                     a list of {pp} per-stage offsets summing to 0"
                ),
            ))
        }
        Offset::PerStage(v) => {
            ensure(
                v.len() as u64 == pp,
                "model.model_config.offset, parallel_config.pipeline_stage",
                || {
                    format!(
                        "offset has {} entries but pipeline_stage is {pp}; give one per stage",
                        v.len()
                    )
                },
            )?;
            v.clone()
        }
    };
    let base = layers / pp_i;
    let stages: Vec<i64> = offsets.iter().map(|o| base + o).collect();
    let total: i64 = stages.iter().sum();
    ensure(
        total == layers,
        "model.model_config.num_hidden_layers, parallel_config.pipeline_stage, model.model_config.offset",
        || {
            format!(
                "{layers} layers over {pp} stages: {layers} / {pp} = {base} per stage plus offsets \
                 {offsets:?} gives {total} layers; make the offsets sum to {} (e.g. add 1 to the \
                 last stages)",
                layers - base * pp_i
            )
        },
    )?;
    ensure(
        stages.iter().all(|s| *s >= 1),
        "model.model_config.offset",
        || format!("stage layer counts {stages:?} must all be at least 1"),
    )?;
    Ok(stages.into_iter().map(|s| s as usize).collect())
}

impl Config {
    pub(super) fn check_model(&self, tp: u64, seq_length: usize) -> Result<Qwen3Config> {
        let m = &self.model.model_config;
        for (key, v) in [
            ("vocab_size", m.vocab_size),
            ("hidden_size", m.hidden_size),
            ("intermediate_size", m.intermediate_size),
            ("num_hidden_layers", m.num_hidden_layers),
            ("num_attention_heads", m.num_attention_heads),
            ("max_position_embeddings", m.max_position_embeddings),
        ] {
            ensure(v >= 1, &format!("{MC}.{key}"), || {
                "must be at least 1".into()
            })?;
        }
        let heads = m.num_attention_heads;
        let kv_heads = m.num_key_value_heads.unwrap_or(heads);
        ensure(
            kv_heads >= 1 && heads % kv_heads == 0,
            &format!("{MC}.num_attention_heads, {MC}.num_key_value_heads"),
            || {
                format!(
                "{heads} query heads cannot be shared evenly by {kv_heads} key/value heads (GQA \
                 needs num_attention_heads to be a multiple of num_key_value_heads)"
            )
            },
        )?;
        ensure(
            heads % tp == 0 && kv_heads % tp == 0,
            &format!("{MC}.num_key_value_heads, parallel_config.model_parallel"),
            || {
                format!(
                    "tensor parallelism splits attention by heads, so both num_attention_heads \
                 ({heads}) and num_key_value_heads ({kv_heads}) must be divisible by \
                 model_parallel ({tp}); lower model_parallel"
                )
            },
        )?;
        ensure(
            m.intermediate_size % tp == 0 && m.vocab_size % tp == 0,
            &format!("{MC}.intermediate_size, {MC}.vocab_size, parallel_config.model_parallel"),
            || {
                format!(
                    "tensor parallelism splits the MLP width ({}) and the vocabulary ({}) evenly; \
                 both must be divisible by model_parallel ({tp})",
                    m.intermediate_size, m.vocab_size
                )
            },
        )?;
        let head_dim = match m.head_dim {
            Some(d) => d,
            None => {
                ensure(
                    m.hidden_size % heads == 0,
                    &format!("{MC}.head_dim"),
                    || "hidden_size is not a multiple of num_attention_heads; set head_dim".into(),
                )?;
                m.hidden_size / heads
            }
        };
        ensure(
            head_dim >= 2 && head_dim % 2 == 0,
            &format!("{MC}.head_dim"),
            || format!("{head_dim} must be even (RoPE rotates pairs of dimensions)"),
        )?;
        ensure(
            seq_length as u64 <= m.max_position_embeddings,
            &format!("train_dataset.data_loader.config.seq_length, {MC}.max_position_embeddings"),
            || {
                format!(
                    "seq_length {seq_length} exceeds max_position_embeddings {}; shorten the \
                 sequences or raise max_position_embeddings",
                    m.max_position_embeddings
                )
            },
        )?;
        if let Some(s) = m.seq_length {
            ensure(
                s == seq_length as u64,
                &format!("{MC}.seq_length, train_dataset.data_loader.config.seq_length"),
                || {
                    format!("model seq_length {s} differs from the data's {seq_length}; make them equal")
                },
            )?;
        }
        let tie = match (m.tie_word_embeddings, m.untie_embeddings_and_output_weights) {
            (Some(tie), Some(untie)) => {
                ensure(
                    tie != untie,
                    &format!("{MC}.tie_word_embeddings, {MC}.untie_embeddings_and_output_weights"),
                    || {
                        "contradict each other (untie is the inverse of tie); set one of them"
                            .into()
                    },
                )?;
                tie
            }
            (Some(tie), None) => tie,
            (None, Some(untie)) => !untie,
            (None, None) => false,
        };
        ensure(
            matches!(m.hidden_act.as_str(), "silu" | "swiglu"),
            &format!("{MC}.hidden_act"),
            || {
                format!(
                    "`{}` is not supported; Qwen3 uses silu (MindFormers: swiglu)",
                    m.hidden_act
                )
            },
        )?;
        let unsupported = [
            (
                !m.qk_layernorm,
                "qk_layernorm",
                "Qwen3 always normalises q and k; set True",
            ),
            (
                m.add_bias_linear,
                "add_bias_linear",
                "Qwen3 linears have no bias; set False",
            ),
            (
                m.attention_dropout != 0.0,
                "attention_dropout",
                "dropout is not supported; set 0.0",
            ),
            (
                m.hidden_dropout != 0.0,
                "hidden_dropout",
                "dropout is not supported; set 0.0",
            ),
            (
                m.position_embedding_type != "rope",
                "position_embedding_type",
                "only rope",
            ),
            (m.model_type != "qwen3", "model_type", "only qwen3"),
            (
                m.architectures != ["Qwen3ForCausalLM"],
                "architectures",
                "only [Qwen3ForCausalLM]",
            ),
            (
                m.rope_scaling
                    .as_ref()
                    .is_some_and(|r| *r != crate::config::mindspore::Opaque::Null),
                "rope_scaling",
                "RoPE scaling is not supported; remove it",
            ),
            (
                m.use_sliding_window,
                "use_sliding_window",
                "dense Qwen3 uses full attention; set False",
            ),
            (
                m.layernorm_compute_dtype != Precision::Float32,
                "layernorm_compute_dtype",
                "norms run in float32 as in HF; set float32",
            ),
            (
                m.softmax_compute_dtype != Precision::Float32,
                "softmax_compute_dtype",
                "softmax runs in float32 as in HF; set float32",
            ),
            (
                m.rotary_dtype != Precision::Float32,
                "rotary_dtype",
                "RoPE tables are float32 as in HF; set float32",
            ),
            (
                not_positive(m.rms_norm_eps),
                "rms_norm_eps",
                "must be positive",
            ),
            (not_positive(m.rope_theta), "rope_theta", "must be positive"),
            (
                not_positive(m.initializer_range),
                "initializer_range",
                "must be positive",
            ),
        ];
        for (bad, key, hint) in unsupported {
            ensure(!bad, &format!("{MC}.{key}"), || hint.into())?;
        }
        Ok(Qwen3Config {
            vocab_size: to_usize(m.vocab_size),
            hidden_size: to_usize(m.hidden_size),
            intermediate_size: to_usize(m.intermediate_size),
            num_hidden_layers: to_usize(m.num_hidden_layers),
            num_attention_heads: to_usize(heads),
            num_key_value_heads: to_usize(kv_heads),
            head_dim: to_usize(head_dim),
            hidden_act: "silu".into(),
            max_position_embeddings: to_usize(m.max_position_embeddings),
            initializer_range: m.initializer_range,
            rms_norm_eps: m.rms_norm_eps,
            rope_theta: m.rope_theta,
            tie_word_embeddings: tie,
            attention_bias: m.attention_bias,
            bos_token_id: Some(m.bos_token_id),
            eos_token_id: Some(m.eos_token_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::rejects;

    #[test]
    fn model_errors() {
        rejects(
            &["--model.model_config.num_key_value_heads=3"],
            "num_key_value_heads",
            "multiple of",
        );
        rejects(
            &["--model.model_config.max_position_embeddings=64"],
            "max_position_embeddings",
            "exceeds",
        );
        rejects(
            &["--model.model_config.seq_length=256"],
            "seq_length",
            "differs",
        );
        rejects(
            &["--model.model_config.untie_embeddings_and_output_weights=True"],
            "untie",
            "contradict",
        );
        rejects(
            &["--model.model_config.hidden_act=gelu"],
            "hidden_act",
            "silu",
        );
        rejects(
            &["--model.model_config.qk_layernorm=False"],
            "qk_layernorm",
            "set True",
        );
        rejects(&["--model.model_config.head_dim=15"], "head_dim", "even");
        rejects(
            &["--model.model_config.hidden_size=0"],
            "hidden_size",
            "at least 1",
        );
        rejects(
            &["--model.model_config.rope_scaling={type: yarn}"],
            "rope_scaling",
            "not supported",
        );
    }
}
