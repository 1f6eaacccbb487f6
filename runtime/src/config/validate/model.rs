//! Model and pipeline-split checks of [`Config::validate`](crate::config::Config::validate).

use super::{ensure, invalid, to_usize};
use crate::config::mindspore::{Opaque, RecomputeConfig};
use crate::config::model::{ModelConfig, Offset, Qwen3Config};
use crate::config::schema::Config;
use crate::config::{Precision, Result};

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

/// `recompute_config.recompute`, MindFormers' full recomputation: `True` (every layer),
/// `False`, or one layer count per pipeline stage (that stage's first layers). Returns the
/// recomputed layers of each stage. `select_recompute` needs nothing: what selective
/// recomputation recomputes, the attention probabilities, the attention kernel never keeps.
pub(super) fn check_recompute(
    r: Option<&RecomputeConfig>,
    layers_per_stage: &[usize],
) -> Result<Vec<usize>> {
    const KEY: &str = "recompute_config.recompute";
    let none = vec![0; layers_per_stage.len()];
    let Some(value) = r.and_then(|r| r.recompute.as_ref()) else {
        return Ok(none);
    };
    match value {
        Opaque::Null | Opaque::Bool(false) => Ok(none),
        Opaque::Bool(true) => Ok(layers_per_stage.to_vec()),
        Opaque::Seq(items) => {
            ensure(items.len() == layers_per_stage.len(), KEY, || {
                format!(
                    "has {} entries for {} pipeline stages; give one layer count per stage",
                    items.len(),
                    layers_per_stage.len()
                )
            })?;
            let count = |(stage, (item, &n)): (usize, (&Opaque, &usize))| match item {
                Opaque::Int(k) if (0..=n as i64).contains(k) => Ok(*k as usize),
                other => Err(invalid(
                    KEY,
                    format!("stage {stage}: {other:?} is not a layer count in 0..={n}"),
                )),
            };
            items
                .iter()
                .zip(layers_per_stage)
                .enumerate()
                .map(count)
                .collect()
        }
        other => Err(invalid(
            KEY,
            format!("{other:?}: expected True, False or one layer count per pipeline stage"),
        )),
    }
}

impl Config {
    /// The model as HF's [`Qwen3Config`], checked once: the model itself by
    /// [`Qwen3Config::check`] (the check an HF `config.json` gets too), then what only a
    /// training config says: the tensor-parallel split, the sequence length and MindFormers'
    /// keys the runtime does not support.
    pub(super) fn check_model(&self, tp: u64, seq_length: usize) -> Result<Qwen3Config> {
        let m = &self.model.model_config;
        let qc = self.qwen3_config()?;
        qc.check().map_err(|i| invalid(&i.keys(MC), i.message))?;
        check_tensor_parallel(&qc, tp)?;
        check_sequence(m, seq_length)?;
        check_unsupported(m)?;
        Ok(qc)
    }

    /// `model.model_config` in HF's terms: defaults of `num_key_value_heads` (= heads) and
    /// `head_dim` (= hidden / heads), the tie flag from either spelling, `swiglu` as `silu`.
    fn qwen3_config(&self) -> Result<Qwen3Config> {
        let m = &self.model.model_config;
        let heads = m.num_attention_heads;
        let head_dim = match m.head_dim {
            Some(d) => d,
            None if heads == 0 => 0, // reported by the check
            None => {
                ensure(
                    m.hidden_size.is_multiple_of(heads),
                    &format!("{MC}.head_dim"),
                    || "hidden_size is not a multiple of num_attention_heads; set head_dim".into(),
                )?;
                m.hidden_size / heads
            }
        };
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
        let act = match m.hidden_act.as_str() {
            "swiglu" => "silu",
            other => other,
        };
        Ok(Qwen3Config {
            vocab_size: to_usize(m.vocab_size),
            hidden_size: to_usize(m.hidden_size),
            intermediate_size: to_usize(m.intermediate_size),
            num_hidden_layers: to_usize(m.num_hidden_layers),
            num_attention_heads: to_usize(heads),
            num_key_value_heads: to_usize(m.num_key_value_heads.unwrap_or(heads)),
            head_dim: to_usize(head_dim),
            hidden_act: act.into(),
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

/// Tensor parallelism splits attention by heads, the MLP by width and the vocabulary by rows.
fn check_tensor_parallel(qc: &Qwen3Config, tp: u64) -> Result<()> {
    let tp = to_usize(tp);
    let (heads, kv) = (qc.num_attention_heads, qc.num_key_value_heads);
    ensure(
        heads % tp == 0 && kv % tp == 0,
        &format!("{MC}.num_key_value_heads, parallel_config.model_parallel"),
        || {
            format!(
                "tensor parallelism splits attention by heads, so both num_attention_heads \
                 ({heads}) and num_key_value_heads ({kv}) must be divisible by model_parallel \
                 ({tp}); lower model_parallel"
            )
        },
    )?;
    ensure(
        qc.intermediate_size.is_multiple_of(tp) && qc.vocab_size.is_multiple_of(tp),
        &format!("{MC}.intermediate_size, {MC}.vocab_size, parallel_config.model_parallel"),
        || {
            format!(
                "tensor parallelism splits the MLP width ({}) and the vocabulary ({}) evenly; \
                 both must be divisible by model_parallel ({tp})",
                qc.intermediate_size, qc.vocab_size
            )
        },
    )
}

/// The data's sequence length against the model's.
fn check_sequence(m: &ModelConfig, seq_length: usize) -> Result<()> {
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
                format!(
                    "model seq_length {s} differs from the data's {seq_length}; make them equal"
                )
            },
        )?;
    }
    Ok(())
}

/// MindFormers' model keys that select what the runtime does not implement.
fn check_unsupported(m: &ModelConfig) -> Result<()> {
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
            m.params_dtype != Precision::Float32,
            "params_dtype",
            "master weights are float32 (bfloat16 compute keeps them so); set float32",
        ),
        (
            m.compute_dtype == Precision::Float16,
            "compute_dtype",
            "float16 compute is not supported; use bfloat16 or float32",
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
    ];
    for (bad, key, hint) in unsupported {
        ensure(!bad, &format!("{MC}.{key}"), || hint.into())?;
    }
    Ok(())
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
            &["--recompute_config.recompute=[1, 1]"],
            "recompute",
            "2 entries for 1",
        );
        rejects(&["--recompute_config.recompute=[3]"], "recompute", "0..=2");
        rejects(
            &["--recompute_config.recompute=yes"],
            "recompute",
            "expected True",
        );
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
