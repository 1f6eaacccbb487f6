//! Where a run starts: the newest committed checkpoint (resume), a checkpoint's or HF
//! directory's weights (fine-tuning), or fresh initialisation. Either way a rank only ever
//! holds its part: a fresh start initialises the part (the same values as the whole model's),
//! loading reads the part from the mapped files one tensor at a time.

use std::path::PathBuf;

use crate::checkpoint::{self, TrainerState};
use crate::config::plan::LoadCheckpoint;
use crate::config::{Precision, TrainPlan};
use crate::model::qwen3::Qwen3;
use crate::model::shard::Shard;
use crate::optim::adamw::AdamWState;
use crate::tensor::gemm::Compute;
use crate::tensor::gemm_bf16::has_native_bf16;

use super::Error;

/// The rank's part of the state a run starts from.
pub(super) struct Start {
    /// The rank's part of the model.
    pub model: Qwen3,
    /// Its AdamW moments when resuming.
    pub optimizer: Option<AdamWState>,
    /// Step and samples consumed (zero for a fresh start or fine-tuning).
    pub state: TrainerState,
    /// The checkpoint it came from.
    pub from: Option<PathBuf>,
}

/// The start of `plan` for the rank holding `shard`, computing in `compute_dtype`.
pub(super) fn load(plan: &TrainPlan, shard: Shard) -> Result<Start, Error> {
    let mut start = load_state(plan, shard)?;
    start.model.compute = match plan.compute_dtype {
        Precision::Bfloat16 => {
            if !has_native_bf16() {
                tracing::warn!(
                    "compute_dtype bfloat16: this CPU has no AVX512-BF16, so bf16 products are \
                     emulated (same bits, slower than float32)"
                );
            }
            Compute::Bf16
        }
        _ => Compute::F32,
    };
    Ok(start)
}

/// The rank's part of the state `plan` starts from.
fn load_state(plan: &TrainPlan, shard: Shard) -> Result<Start, Error> {
    let root = &plan.checkpoint_root;
    let fresh = TrainerState {
        step: 0,
        consumed_samples: 0,
        last_loss: f32::NAN,
    };
    let source = match &plan.load_checkpoint {
        LoadCheckpoint::None => None,
        LoadCheckpoint::Auto => checkpoint::latest(root)?,
        LoadCheckpoint::Path(p) if p.join(checkpoint::MARKER).is_file() => checkpoint::latest(p)?,
        LoadCheckpoint::Path(p) if !p.exists() => {
            return Err(Error::Unsupported(format!(
                "load_checkpoint: {} does not exist; give a checkpoint directory (iteration_N, \
                 or the directory holding latest_checkpointed_iteration.txt), auto, or ''",
                p.display()
            )))
        }
        LoadCheckpoint::Path(p) => Some(p.clone()),
    };
    let Some(dir) = source else {
        if plan.load_checkpoint == LoadCheckpoint::Auto {
            tracing::info!(root = %root.display(), "no committed checkpoint: starting fresh");
        }
        return Ok(Start {
            model: Qwen3::init_sharded(&plan.model, shard, plan.seed as u32)?,
            optimizer: None,
            state: fresh,
            from: None,
        });
    };
    let local = shard.layout(&plan.model)?;
    let loaded = checkpoint::load_part(&dir, &plan.model, &shard, &local)?;
    let mut start = Start {
        model: Qwen3::with_part(&plan.model, shard, loaded.params)?,
        optimizer: None,
        state: fresh,
        from: Some(dir.clone()),
    };
    if !plan.resume_training {
        tracing::info!(dir = %dir.display(), "initialised weights from checkpoint");
        return Ok(start);
    }
    let (Some(o), Some(state)) = (loaded.optimizer, loaded.state) else {
        return Err(Error::Unsupported(format!(
            "{}: resume_training needs optimizer.safetensors and trainer_state.json; this \
             directory only has weights (set resume_training: False to fine-tune from it)",
            dir.display()
        )));
    };
    start.optimizer = Some(o);
    start.state = state;
    tracing::info!(step = start.state.step, dir = %dir.display(), "resumed");
    Ok(start)
}
