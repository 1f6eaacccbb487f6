//! Optimizer, learning-rate schedule and callback checks of
//! [`Config::validate`](crate::config::Config::validate).

use std::path::PathBuf;

use super::{ensure, invalid, to_usize};
use crate::config::mindspore::Opaque;
use crate::config::plan::{AdamWPlan, CheckpointPlan, HealthPlan, LrSchedule};
use crate::config::schema::{
    CallbackConfig, CallbackKind, CheckpointFormat, Config, LrScheduleKind,
};
use crate::config::Result;

impl Config {
    pub(super) fn check_optimizer(&self) -> Result<AdamWPlan> {
        let o = &self.optimizer;
        let [beta1, beta2] = o.betas.as_slice() else {
            return Err(invalid(
                "optimizer.betas",
                format!("expected [beta1, beta2], got {} values", o.betas.len()),
            ));
        };
        for b in [beta1, beta2] {
            ensure((0.0..1.0).contains(b), "optimizer.betas", || {
                format!("{b} is outside [0, 1); typical values are [0.9, 0.95]")
            })?;
        }
        ensure(o.eps > 0.0 && o.eps.is_finite(), "optimizer.eps", || {
            format!("{} must be positive (typically 1e-8)", o.eps)
        })?;
        ensure(
            o.weight_decay >= 0.0 && o.weight_decay.is_finite(),
            "optimizer.weight_decay",
            || format!("{} must be zero or positive", o.weight_decay),
        )?;
        ensure(
            o.no_decay_params.iter().all(|p| !p.is_empty()),
            "optimizer.no_decay_params",
            || "holds an empty pattern; remove it".into(),
        )?;
        Ok(AdamWPlan {
            beta1: *beta1,
            beta2: *beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            no_decay_params: o.no_decay_params.clone(),
        })
    }

    pub(super) fn check_lr(&self, train_steps: u64) -> Result<LrSchedule> {
        let l = &self.lr_schedule;
        ensure(
            l.learning_rate > 0.0 && l.learning_rate.is_finite(),
            "lr_schedule.learning_rate",
            || format!("{} must be positive", l.learning_rate),
        )?;
        ensure(
            (0.0..=l.learning_rate).contains(&l.lr_end),
            "lr_schedule.lr_end",
            || {
                format!(
                    "{} must be between 0 and learning_rate {}",
                    l.lr_end, l.learning_rate
                )
            },
        )?;
        ensure(
            l.lr_end == 0.0 || l.kind == LrScheduleKind::CosineWithWarmUpLR,
            "lr_schedule.lr_end",
            || "only CosineWithWarmUpLR has a floor; remove lr_end or switch the type".into(),
        )?;
        ensure(
            (0.0..=l.learning_rate).contains(&l.warmup_lr_init),
            "lr_schedule.warmup_lr_init",
            || format!("{} must be between 0 and learning_rate", l.warmup_lr_init),
        )?;
        ensure(l.num_cycles > 0.0, "lr_schedule.num_cycles", || {
            "must be positive".into()
        })?;
        let total_steps = match l.total_steps {
            -1 => train_steps,
            t if t >= 1 => t as u64,
            t => {
                return Err(invalid(
                    "lr_schedule.total_steps",
                    format!("{t}: use -1 (= the training steps) or a positive count"),
                ))
            }
        };
        let warmup_steps = match (l.warmup_ratio, l.warmup_steps) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "lr_schedule.warmup_ratio, lr_schedule.warmup_steps",
                    "set only one of them",
                ))
            }
            (Some(r), None) => {
                ensure((0.0..=1.0).contains(&r), "lr_schedule.warmup_ratio", || {
                    format!("{r} is outside [0, 1]")
                })?;
                (total_steps as f64 * r) as u64
            }
            (None, Some(s)) => s,
            (None, None) => 0,
        };
        ensure(
            warmup_steps <= total_steps,
            "lr_schedule.warmup_steps",
            || format!("{warmup_steps} warm-up steps exceed the schedule's {total_steps} steps"),
        )?;
        let decay_steps = l.decay_steps.unwrap_or(total_steps).max(1);
        Ok(LrSchedule {
            kind: l.kind,
            learning_rate: l.learning_rate,
            warmup_lr_init: l.warmup_lr_init,
            warmup_steps,
            total_steps,
            lr_end: l.lr_end,
            num_cycles: l.num_cycles,
            decay_steps,
        })
    }

    /// The spike checks of `runner_wrapper` and `monitor_config`.
    pub(super) fn check_health(&self) -> Result<HealthPlan> {
        let w = &self.runner_wrapper;
        ensure(
            w.global_norm_spike_threshold > 0.0 && w.global_norm_spike_threshold.is_finite(),
            "runner_wrapper.global_norm_spike_threshold",
            || {
                format!(
                    "{} must be a positive number",
                    w.global_norm_spike_threshold
                )
            },
        )?;
        if let Some(f) = w.loss_spike_factor {
            ensure(
                f > 1.0 && f.is_finite(),
                "runner_wrapper.loss_spike_factor",
                || format!("{f} must be a number above 1 (e.g. 3.0)"),
            )?;
        }
        let count = self
            .monitor_config
            .as_ref()
            .and_then(|m| m.global_norm_spike_count_threshold.as_ref());
        let max_in_a_row = match count {
            None => 10,
            Some(Opaque::Int(n)) if *n >= 1 => *n as u64,
            Some(other) => {
                return Err(invalid(
                    "monitor_config.global_norm_spike_count_threshold",
                    format!("{other:?} must be a positive integer (default 10)"),
                ))
            }
        };
        Ok(HealthPlan {
            norm_threshold: w
                .use_skip_data_by_global_norm
                .then_some(w.global_norm_spike_threshold),
            loss_spike_factor: w.loss_spike_factor,
            max_in_a_row,
        })
    }

    /// Returns (log every N steps, checkpoint plan).
    pub(super) fn check_callbacks(&self) -> Result<(u64, Option<CheckpointPlan>)> {
        let mut log_every = None;
        let mut checkpoint = None;
        for (i, c) in self.callbacks.iter().enumerate() {
            let key = format!("callbacks[{i}]");
            check_callback_keys(c, &key)?;
            match c.kind {
                CallbackKind::MFLossMonitor => {
                    ensure(log_every.is_none(), &key, || {
                        "a second MFLossMonitor; keep one".into()
                    })?;
                    let every = c.per_print_times.unwrap_or(1);
                    ensure(every >= 1, &format!("{key}.per_print_times"), || {
                        "must be at least 1".into()
                    })?;
                    log_every = Some(every);
                }
                CallbackKind::CheckpointMonitor => {
                    ensure(checkpoint.is_none(), &key, || {
                        "a second CheckpointMonitor; keep one".into()
                    })?;
                    let every = c.save_checkpoint_steps.unwrap_or(1);
                    ensure(every >= 1, &format!("{key}.save_checkpoint_steps"), || {
                        "must be at least 1".into()
                    })?;
                    let keep = c.keep_checkpoint_max.unwrap_or(5);
                    ensure(keep >= 1, &format!("{key}.keep_checkpoint_max"), || {
                        "must be at least 1".into()
                    })?;
                    checkpoint = Some(CheckpointPlan {
                        prefix: c.prefix.clone().unwrap_or_else(|| "qwen3".into()),
                        every_steps: every,
                        keep_max: to_usize(keep),
                        async_save: c.async_save.unwrap_or(false),
                        mindspore_ckpt: c.checkpoint_format == Some(CheckpointFormat::Ckpt),
                    });
                }
            }
        }
        Ok((log_every.unwrap_or(1), checkpoint))
    }

    /// The `CheckpointMonitor`'s `directory`, else `<output_dir>/checkpoint`.
    pub fn checkpoint_root(&self) -> PathBuf {
        self.callbacks
            .iter()
            .filter(|c| c.kind == CallbackKind::CheckpointMonitor)
            .find_map(|c| c.directory.as_deref().filter(|d| !d.is_empty()))
            .map_or_else(
                || PathBuf::from(&self.output_dir).join("checkpoint"),
                PathBuf::from,
            )
    }
}

/// Rejects keys that belong to another callback type.
fn check_callback_keys(c: &CallbackConfig, key: &str) -> Result<()> {
    let checkpoint_keys = [
        ("prefix", c.prefix.is_some()),
        ("save_checkpoint_steps", c.save_checkpoint_steps.is_some()),
        ("keep_checkpoint_max", c.keep_checkpoint_max.is_some()),
        ("integrated_save", c.integrated_save.is_some()),
        ("async_save", c.async_save.is_some()),
        ("checkpoint_format", c.checkpoint_format.is_some()),
        ("directory", c.directory.is_some()),
    ];
    let foreign: Vec<&str> = match c.kind {
        CallbackKind::MFLossMonitor => checkpoint_keys
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect(),
        CallbackKind::CheckpointMonitor => {
            if c.per_print_times.is_some() {
                vec!["per_print_times"]
            } else {
                vec![]
            }
        }
    };
    ensure(foreign.is_empty(), key, || {
        format!(
            "{} not an option of {:?}; move it to the right callback",
            foreign.join(", ") + if foreign.len() == 1 { " is" } else { " are" },
            c.kind
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::rejects;

    #[test]
    fn optimizer_and_schedule_errors() {
        rejects(
            &["--lr_schedule.learning_rate=0"],
            "learning_rate",
            "positive",
        );
        rejects(
            &["--lr_schedule.lr_end=1.0"],
            "lr_end",
            "between 0 and learning_rate",
        );
        rejects(
            &["--lr_schedule.warmup_ratio=0.1"],
            "warmup_ratio, lr_schedule.warmup_steps",
            "only one",
        );
        rejects(
            &["--lr_schedule.warmup_steps=500"],
            "warmup_steps",
            "exceed",
        );
        rejects(&["--lr_schedule.total_steps=0"], "total_steps", "-1");
        rejects(&["--optimizer.betas=[0.9, 1.0]"], "betas", "outside [0, 1)");
        rejects(&["--optimizer.betas=[0.9]"], "betas", "got 1 values");
        rejects(&["--optimizer.eps=0"], "eps", "positive");
        rejects(
            &["--runner_wrapper.max_grad_norm=0"],
            "max_grad_norm",
            "positive",
        );
        rejects(
            &["--runner_config.batch_size=0"],
            "batch_size",
            "at least 1",
        );
        rejects(
            &["--load_ckpt_format=ckpt"],
            "load_ckpt_format",
            "safetensors",
        );
    }

    #[test]
    fn callback_errors() {
        rejects(
            &["--callbacks.0.prefix=x"],
            "callbacks[0]",
            "prefix is not an option of MFLossMonitor",
        );
        rejects(
            &["--callbacks.1.save_checkpoint_steps=0"],
            "save_checkpoint_steps",
            "at least 1",
        );
        rejects(
            &[
                "--callbacks.1.type=MFLossMonitor",
                "--callbacks.1.prefix=null",
                "--callbacks.1.save_checkpoint_steps=null",
                "--callbacks.1.keep_checkpoint_max=null",
                "--callbacks.1.checkpoint_format=null",
            ],
            "callbacks[1]",
            "second MFLossMonitor",
        );
    }
}
