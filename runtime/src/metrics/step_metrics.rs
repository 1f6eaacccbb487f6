//! [`StepMetrics`], the per-step record of the training loop, and its TensorBoard tags.
//!
//! The tags and units follow MindFormers' `MFLossMonitor` (mindformers-conventions.md §7) so
//! dashboards built for MindFormers runs work unchanged:
//!
//! | tag | value | x |
//! |---|---|---|
//! | `learning-rate`, `learning-rate vs samples` | learning rate | step, samples |
//! | `batch-size`, `batch-size vs samples` | global batch size (samples) | step, samples |
//! | `loss`, `loss vs samples` | training loss | step, samples |
//! | `grad-norm`, `grad-norm vs samples` | global gradient norm (before clipping) | step, samples |
//! | `iteration-time`, `iteration-time vs samples` | step time in **ms** | step, samples |
//! | `throughput`, `throughput vs samples` | samples/s **per device** | step, samples |
//! | `model-flops-throughput-per-npu` | model **TFLOPS** per device | step |
//! | `tokens-per-second` (ours) | tokens/s, whole job | step |
//! | `mfu` (ours) | model FLOPs utilization, 0..1 | step |
//!
//! "samples" is `step × global_batch_size`, as in MindFormers (not the exact samples consumed,
//! which [`StepMetrics::samples_consumed`] carries for resumed or batch-size-ramped runs).
//! Optional fields that are `None` are not written.

use serde::{Deserialize, Serialize};

use super::tensorboard::EventWriter;
use super::Result;

/// What the training loop knows after one optimizer step; logged by rank 0.
///
/// Serialized (JSONL) with these field names; `None` fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The optimizer step just completed, counting from 1.
    pub step: u64,
    /// The epoch the step belongs to, counting from 1, when the loop tracks epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Mean training loss over the global batch; `None` where this rank does not see it
    /// (e.g. not the last pipeline stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Wall-clock duration of the step in milliseconds.
    pub step_time_ms: f64,
    /// Training samples per second per device (MindFormers' `throughput`, "samples/s/p").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_sec_per_device: Option<f64>,
    /// Training tokens per second across the whole job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    /// Model FLOPs per second achieved per device, if the model's FLOPs per token are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_per_sec_per_device: Option<f64>,
    /// Model FLOPs utilization (achieved / peak FLOPs per device), 0..1, if the peak is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// Samples consumed since the start of training (including before a resume).
    pub samples_consumed: u64,
    /// Tokens consumed since the start of training (including before a resume).
    pub tokens_consumed: u64,
    /// Resident memory of this process in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_rss_bytes: Option<u64>,
    /// Estimated seconds until the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
}

impl StepMetrics {
    /// The JSON object written to the metrics JSONL file.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing a struct of numbers and options cannot fail (NaN becomes null).
        serde_json::to_value(self).expect("StepMetrics always serializes")
    }
}

/// Writes `metrics` under MindFormers' tag names (table in the module docs).
///
/// `global_batch_size` is in samples; the `vs samples` variants use
/// `step × global_batch_size` as x. Does not flush: call [`EventWriter::flush`] once per step.
pub fn log_to_tensorboard(
    writer: &mut EventWriter,
    metrics: &StepMetrics,
    global_batch_size: u64,
) -> Result<()> {
    let step = to_i64(metrics.step);
    let samples = to_i64(metrics.step.saturating_mul(global_batch_size));
    // Each tag: (name, value, also as "<name> vs samples").
    let tags = [
        ("learning-rate", Some(metrics.lr), true),
        ("batch-size", Some(global_batch_size as f64), true),
        ("loss", metrics.loss, true),
        ("grad-norm", metrics.grad_norm, true),
        ("iteration-time", Some(metrics.step_time_ms), true),
        ("throughput", metrics.samples_per_sec_per_device, true),
        (
            "model-flops-throughput-per-npu",
            metrics.flops_per_sec_per_device.map(|f| f / 1e12),
            false,
        ),
        ("tokens-per-second", metrics.tokens_per_sec, false),
        ("mfu", metrics.mfu, false),
    ];
    for (tag, value, vs_samples) in tags {
        let Some(value) = value else { continue };
        // TensorBoard stores scalars as f32.
        writer.add_scalar(tag, value as f32, step)?;
        if vs_samples {
            writer.add_scalar(&format!("{tag} vs samples"), value as f32, samples)?;
        }
    }
    Ok(())
}

/// Steps and sample counts beyond `i64::MAX` do not occur; saturate rather than wrap.
fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::event::scalars;
    use super::super::tensorboard::read_events;
    use super::*;
    use serde_json::json;

    fn full() -> StepMetrics {
        StepMetrics {
            step: 3,
            epoch: Some(1),
            loss: Some(7.5),
            lr: 3e-4,
            grad_norm: Some(1.25),
            step_time_ms: 250.0,
            samples_per_sec_per_device: Some(16.0),
            tokens_per_sec: Some(131_072.0),
            flops_per_sec_per_device: Some(2.5e14),
            mfu: Some(0.4),
            samples_consumed: 96,
            tokens_consumed: 393_216,
            memory_rss_bytes: Some(1 << 30),
            eta_secs: Some(3600.0),
        }
    }

    #[test]
    fn tags_values_and_x_axes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = EventWriter::new(dir.path()).expect("writer");
        log_to_tensorboard(&mut writer, &full(), 32).expect("log");
        let path = writer.path().to_owned();
        writer.close().expect("close");
        let events = read_events(&path).expect("read back");

        let expected: [(&str, i64, f32); 15] = [
            ("learning-rate", 3, 3e-4),
            ("learning-rate vs samples", 96, 3e-4),
            ("batch-size", 3, 32.0),
            ("batch-size vs samples", 96, 32.0),
            ("loss", 3, 7.5),
            ("loss vs samples", 96, 7.5),
            ("grad-norm", 3, 1.25),
            ("grad-norm vs samples", 96, 1.25),
            ("iteration-time", 3, 250.0),
            ("iteration-time vs samples", 96, 250.0),
            ("throughput", 3, 16.0),
            ("throughput vs samples", 96, 16.0),
            ("model-flops-throughput-per-npu", 3, 250.0),
            ("tokens-per-second", 3, 131_072.0),
            ("mfu", 3, 0.4),
        ];
        for (tag, x, value) in expected {
            assert_eq!(scalars(&events, tag), [(x, value)], "{tag}");
        }
        // The header plus one event per expected scalar, nothing else.
        assert_eq!(events.len(), 1 + expected.len());
    }

    #[test]
    fn missing_values_are_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = EventWriter::new(dir.path()).expect("writer");
        let metrics = StepMetrics {
            step: 1,
            lr: 1e-3,
            step_time_ms: 10.0,
            ..Default::default()
        };
        log_to_tensorboard(&mut writer, &metrics, 8).expect("log");
        writer.flush().expect("flush");
        let events = read_events(writer.path()).expect("read back");
        let tags: Vec<&str> = events
            .iter()
            .flat_map(|e| e.values.iter().map(|v| v.tag.as_str()))
            .collect();
        assert_eq!(
            tags,
            [
                "learning-rate",
                "learning-rate vs samples",
                "batch-size",
                "batch-size vs samples",
                "iteration-time",
                "iteration-time vs samples"
            ]
        );
    }

    #[test]
    fn json_leaves_out_missing_fields_and_round_trips() {
        let minimal = StepMetrics {
            step: 2,
            lr: 0.5,
            ..Default::default()
        };
        assert_eq!(
            minimal.to_json(),
            json!({"step": 2, "lr": 0.5, "step_time_ms": 0.0, "samples_consumed": 0,
                   "tokens_consumed": 0})
        );
        let metrics = full();
        let back: StepMetrics = serde_json::from_value(metrics.to_json()).expect("round trip");
        assert_eq!(back, metrics);
        assert_eq!(metrics.to_json()["memory_rss_bytes"], json!(1u64 << 30));
    }
}
