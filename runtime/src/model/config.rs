//! `Qwen3Config`: the fields of Hugging Face's `config.json` for Qwen3 (`model_type: qwen3`).
//! Accepts both transformers 4.x (`rope_theta`) and 5.x (`rope_parameters`) files.

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The model configuration, with HF field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3Config {
    /// V.
    pub vocab_size: usize,
    /// H.
    pub hidden_size: usize,
    /// F.
    pub intermediate_size: usize,
    /// L.
    pub num_hidden_layers: usize,
    /// Nq.
    pub num_attention_heads: usize,
    /// Nkv.
    pub num_key_value_heads: usize,
    /// d (explicit in Qwen3, not H/Nq).
    pub head_dim: usize,
    /// Longest sequence the model is configured for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// RoPE base θ.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// ε of every RMSNorm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Whether lm_head shares the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Std of the normal initialisation.
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    /// Only `silu` (the gated MLP) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Biases on q/k/v/o: not supported (no Qwen3 release uses them).
    #[serde(default)]
    pub attention_bias: bool,
    /// Beginning-of-sequence id (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence id (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<i64>,
}

fn default_max_positions() -> usize {
    40_960
}
fn default_theta() -> f64 {
    1_000_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_init() -> f64 {
    0.02
}
fn default_act() -> String {
    "silu".into()
}

impl Qwen3Config {
    /// Checks what the runtime supports; errors say which field and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act `{}` is not supported; Qwen3 uses silu",
                self.hidden_act
            ));
        }
        if self.attention_bias {
            return bad("attention_bias: true is not supported (no Qwen3 release uses it)".into());
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "num_attention_heads {} must be a multiple of num_key_value_heads {} (grouped-query \
                 attention shares each KV head among a whole number of query heads)",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }

    /// Parses an HF `config.json`, accepting 5.x's `rope_parameters` and rejecting what the
    /// runtime cannot run (sliding windows, RoPE scaling).
    pub fn from_hf_json(text: &str) -> Result<Qwen3Config> {
        let mut v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        if let Some(rp) = v.get("rope_parameters").cloned() {
            if let Some(kind) = rp.get("rope_type").and_then(|t| t.as_str()) {
                if kind != "default" {
                    return Err(Error::Config(format!(
                        "rope_type `{kind}` is not supported"
                    )));
                }
            }
            if let (Some(theta), Some(obj)) = (rp.get("rope_theta").cloned(), v.as_object_mut()) {
                obj.insert("rope_theta".into(), theta);
            }
        }
        if v.get("rope_scaling").is_some_and(|s| !s.is_null()) {
            return Err(Error::Config("rope_scaling is not supported".into()));
        }
        if v.get("use_sliding_window").and_then(|s| s.as_bool()) == Some(true) {
            return Err(Error::Config(
                "use_sliding_window: true is not supported".into(),
            ));
        }
        let c: Qwen3Config =
            serde_json::from_value(v).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// The `config.json` transformers loads (`Qwen3ForCausalLM`, f32 storage).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "architectures".into(),
                serde_json::json!(["Qwen3ForCausalLM"]),
            );
            obj.insert("model_type".into(), "qwen3".into());
            obj.insert("torch_dtype".into(), "float32".into());
            obj.insert("attention_dropout".into(), 0.0.into());
            obj.insert("use_sliding_window".into(), false.into());
            obj.insert("use_cache".into(), true.into());
            obj.insert("rope_scaling".into(), serde_json::Value::Null);
        }
        v
    }

    /// Query-projection width Nq·d.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key/value-projection width Nkv·d.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Training FLOPs per token, `6·N_mm + 12·L·Nq·d·T` (qwen3-model.md §4): N_mm counts every
    /// parameter but the input embedding, plus the lm_head matmul even when tied.
    pub fn flops_per_token(&self, seq_length: usize) -> f64 {
        let (h, f, l) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
        );
        let per_layer = h * self.q_dim() * 2 + h * self.kv_dim() * 2 + 3 * h * f;
        let n_mm = (l * per_layer + self.vocab_size * h) as f64;
        6.0 * n_mm + 12.0 * (l * self.q_dim() * seq_length) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_4_and_5_files() {
        let v4 = r#"{"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "rope_theta": 10000.0, "rope_scaling": null, "model_type": "qwen3"}"#;
        let c = Qwen3Config::from_hf_json(v4).expect("4.x");
        assert_eq!(c.rope_theta, 10_000.0);
        let v5 = v4.replace(
            r#""rope_theta": 10000.0, "rope_scaling": null"#,
            r#""rope_parameters": {"rope_theta": 500.0, "rope_type": "default"}"#,
        );
        assert_eq!(
            Qwen3Config::from_hf_json(&v5).expect("5.x").rope_theta,
            500.0
        );
        let bad = v4.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#);
        assert!(Qwen3Config::from_hf_json(&bad).is_err());
    }

    #[test]
    fn flops_match_the_reference_for_0_6b() {
        let c = Qwen3Config {
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            head_dim: 128,
            max_position_embeddings: 40_960,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            initializer_range: 0.02,
            hidden_act: "silu".into(),
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: None,
        };
        // qwen3-model.md §4: 4.99 GFLOP/token at T = 2048, 6.39 at 4096 (norms excluded here).
        assert!((c.flops_per_token(2048) / 1e9 - 4.99).abs() < 0.01);
        assert!((c.flops_per_token(4096) / 1e9 - 6.39).abs() < 0.01);
    }
}
