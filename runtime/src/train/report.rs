//! What each step reports: JSONL metrics and TensorBoard events (written by rank 0, which
//! holds the global loss) and the step log line.

use std::time::Instant;

use crate::config::TrainPlan;
use crate::metrics::{log_to_tensorboard, EventWriter, JsonlWriter, StepMetrics};

use super::Error;

/// One finished step, as measured by the trainer.
pub(super) struct StepRecord {
    /// 1-based step.
    pub step: u64,
    /// Global mean loss.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Seconds the step took.
    pub secs: f64,
    /// Samples consumed after it.
    pub consumed_samples: u64,
    /// Samples in the train split (for the epoch).
    pub train_samples: u64,
}

/// Metrics writers and throughput counters of a run.
pub(super) struct Reporter {
    jsonl: Option<JsonlWriter>,
    tb: Option<EventWriter>,
    rank0: bool,
    flops_per_token: f64,
    devices: f64,
    peak_flops: f64,
    start_step: u64,
    started: Instant,
    /// Tokens trained by this run.
    pub tokens: u64,
}

/// Resident memory of this process in bytes (Linux), for the step log.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

impl Reporter {
    /// Opens the metrics files on rank 0 (appending to those of an earlier run) and records the
    /// resolved config in TensorBoard. `peak_flops` is per device.
    pub fn open(
        plan: &TrainPlan,
        resolved_config: &str,
        rank0: bool,
        devices: usize,
        peak_flops: f64,
        start_step: u64,
    ) -> Result<Reporter, Error> {
        std::fs::create_dir_all(&plan.output_dir)
            .map_err(|e| crate::data::Error::io(&plan.output_dir, e))?;
        let jsonl = match rank0 {
            true => Some(JsonlWriter::open(plan.output_dir.join("metrics.jsonl"))?),
            false => None,
        };
        let mut tb = match (&plan.tensorboard, rank0) {
            (Some(t), true) => Some(EventWriter::new(t.dir.join("rank_0"))?),
            _ => None,
        };
        if let Some(tb) = tb.as_mut() {
            tb.add_text("config", resolved_config, start_step as i64)?;
        }
        Ok(Reporter {
            jsonl,
            tb,
            rank0,
            flops_per_token: plan.model.flops_per_token(plan.seq_length),
            devices: devices as f64,
            peak_flops,
            start_step,
            started: Instant::now(),
            tokens: 0,
        })
    }

    /// Records a step: metrics files, and the log line every `log_every_steps`, at the first
    /// step of the run and at the last.
    pub fn record(&mut self, plan: &TrainPlan, r: &StepRecord) -> Result<(), Error> {
        let t = plan.seq_length;
        let tokens = (plan.global_batch_size * t) as u64;
        self.tokens += tokens;
        let tps = tokens as f64 / r.secs;
        let eta = (plan.train_steps - r.step) as f64 * self.started.elapsed().as_secs_f64()
            / (r.step - self.start_step) as f64;
        let flops = tps * self.flops_per_token / self.devices;
        let metrics = StepMetrics {
            step: r.step,
            epoch: Some(r.consumed_samples.saturating_sub(1) / r.train_samples),
            loss: Some(r.loss as f64),
            lr: r.lr as f64,
            grad_norm: Some(r.grad_norm as f64),
            step_time_ms: r.secs * 1e3,
            samples_consumed: r.consumed_samples,
            tokens_consumed: r.consumed_samples * t as u64,
            samples_per_sec_per_device: Some(plan.global_batch_size as f64 / r.secs / self.devices),
            tokens_per_sec: Some(tps),
            flops_per_sec_per_device: Some(flops),
            mfu: Some(flops / self.peak_flops),
            memory_rss_bytes: rss_bytes(),
            eta_secs: Some(eta),
        };
        if let Some(jsonl) = self.jsonl.as_mut() {
            jsonl.write(&metrics)?;
        }
        if let Some(tb) = self.tb.as_mut() {
            log_to_tensorboard(tb, &metrics, plan.global_batch_size as u64)?;
            tb.flush()?;
        }
        let step = r.step;
        if self.rank0
            && (step.is_multiple_of(plan.log_every_steps.max(1))
                || step == plan.train_steps
                || step == self.start_step + 1)
        {
            tracing::info!(
                "step {step}/{} | loss {:.4} | lr {:.3e} | grad_norm {:.3} | {tps:.0} tokens/s | mfu {:.1}% | rss {} MiB | eta {eta:.0}s",
                plan.train_steps,
                r.loss,
                r.lr,
                r.grad_norm,
                100.0 * flops / self.peak_flops,
                rss_bytes().unwrap_or(0) >> 20,
            );
        }
        Ok(())
    }

    /// Mean tokens per second over this run.
    pub fn tokens_per_sec(&self) -> f64 {
        self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Closes the TensorBoard file.
    pub fn close(self) -> Result<(), Error> {
        if let Some(tb) = self.tb {
            tb.close()?;
        }
        Ok(())
    }
}
