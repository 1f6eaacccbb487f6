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

/// A configuration the runtime cannot run: the fields involved (HF names) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// The field(s), HF names (which are also MindFormers' `model_config` keys).
    pub fields: &'static [&'static str],
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigIssue {
    /// The fields as dotted keys under `prefix` (`model.model_config`), comma-separated.
    pub fn keys(&self, prefix: &str) -> String {
        let keys: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{prefix}.{f}"))
            .collect();
        keys.join(", ")
    }
}

impl Qwen3Config {
    /// The one check of a Qwen3 model configuration, whether it comes from a training config
    /// or an HF `config.json`: what the runtime supports and what the model needs to be
    /// well-formed.
    pub fn check(&self) -> std::result::Result<(), ConfigIssue> {
        let issue = |fields, message: String| Err(ConfigIssue { fields, message });
        if self.hidden_act != "silu" {
            return issue(
                &["hidden_act"],
                format!(
                    "`{}` is not supported; Qwen3 uses silu (MindFormers: swiglu)",
                    self.hidden_act
                ),
            );
        }
        if self.attention_bias {
            return issue(
                &["attention_bias"],
                "true is not supported (no Qwen3 release uses it)".into(),
            );
        }
        let sizes: [(&'static [&'static str], usize); 8] = [
            (&["vocab_size"], self.vocab_size),
            (&["hidden_size"], self.hidden_size),
            (&["intermediate_size"], self.intermediate_size),
            (&["num_hidden_layers"], self.num_hidden_layers),
            (&["num_attention_heads"], self.num_attention_heads),
            (&["num_key_value_heads"], self.num_key_value_heads),
            (&["head_dim"], self.head_dim),
            (&["max_position_embeddings"], self.max_position_embeddings),
        ];
        for (field, v) in sizes {
            if v == 0 {
                return issue(field, "must be at least 1".into());
            }
        }
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if heads % kv != 0 {
            return issue(
                &["num_attention_heads", "num_key_value_heads"],
                format!(
                    "{heads} query heads cannot be shared evenly by {kv} key/value heads (GQA \
                     needs num_attention_heads to be a multiple of num_key_value_heads)"
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return issue(
                &["head_dim"],
                format!(
                    "{} must be even (RoPE rotates pairs of dimensions)",
                    self.head_dim
                ),
            );
        }
        let positive: [(&'static [&'static str], f64); 3] = [
            (&["rms_norm_eps"], self.rms_norm_eps),
            (&["rope_theta"], self.rope_theta),
            (&["initializer_range"], self.initializer_range),
        ];
        for (field, v) in positive {
            if v.is_nan() || v <= 0.0 {
                return issue(field, format!("{v} must be positive"));
            }
        }
        Ok(())
    }

    /// [`Qwen3Config::check`] as a model error.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|i| Error::Config(format!("{}: {}", i.fields.join(", "), i.message)))
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
    fn one_check_names_the_fields_for_either_source() {
        let ok = Qwen3Config::from_hf_json(
            r#"{"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32}"#,
        )
        .expect("valid");
        let issue = |f: fn(&mut Qwen3Config)| {
            let mut c = ok.clone();
            f(&mut c);
            c.check().expect_err("refused")
        };
        let i = issue(|c| c.num_key_value_heads = 3);
        assert_eq!(
            i.keys("model.model_config"),
            "model.model_config.num_attention_heads, model.model_config.num_key_value_heads"
        );
        assert!(i.message.contains("multiple of"), "{}", i.message);
        assert_eq!(issue(|c| c.head_dim = 15).fields, ["head_dim"]);
        assert_eq!(issue(|c| c.hidden_size = 0).fields, ["hidden_size"]);
        assert_eq!(issue(|c| c.rms_norm_eps = 0.0).fields, ["rms_norm_eps"]);
        assert_eq!(issue(|c| c.rope_theta = f64::NAN).fields, ["rope_theta"]);
        assert_eq!(
            issue(|c| c.hidden_act = "gelu".into()).fields,
            ["hidden_act"]
        );
        let e = Qwen3Config {
            attention_bias: true,
            ..ok.clone()
        }
        .validate()
        .expect_err("refused");
        assert!(
            e.to_string().starts_with("model config: attention_bias: "),
            "{e}"
        );
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
