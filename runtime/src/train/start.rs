//! Where a run starts: the newest committed checkpoint (resume), a checkpoint's or HF
//! directory's weights (fine-tuning), or fresh initialisation.

use std::path::PathBuf;

use crate::checkpoint::{self, TrainerState};
use crate::config::plan::LoadCheckpoint;
use crate::config::TrainPlan;
use crate::model::qwen3::Qwen3;
use crate::optim::adamw::AdamWState;

use super::Error;

/// The whole model's state a run starts from.
pub(super) struct Start {
    /// Every parameter of the whole model, in layout order.
    pub params: Vec<f32>,
    /// The whole model's AdamW moments when resuming.
    pub optimizer: Option<AdamWState>,
    /// Step and samples consumed (zero for a fresh start or fine-tuning).
    pub state: TrainerState,
    /// The checkpoint it came from.
    pub from: Option<PathBuf>,
}

/// The start of `plan`: every rank builds the whole model (initialised from `plan.seed`, or
/// loaded) so that any layout starts from the same weights.
pub(super) fn load(plan: &TrainPlan) -> Result<Start, Error> {
    let full = Qwen3::init(plan.model.clone(), plan.seed as u32)?;
    let root = &plan.checkpoint_root;
    let mut start = Start {
        params: full.params,
        optimizer: None,
        state: TrainerState {
            step: 0,
            consumed_samples: 0,
            last_loss: f32::NAN,
        },
        from: None,
    };
    let source = match &plan.load_checkpoint {
        LoadCheckpoint::None => None,
        LoadCheckpoint::Auto => checkpoint::latest(root)?,
        LoadCheckpoint::Path(p) if p.join(checkpoint::MARKER).is_file() => checkpoint::latest(p)?,
        LoadCheckpoint::Path(p) => Some(p.clone()),
    };
    let Some(dir) = source else {
        if plan.load_checkpoint == LoadCheckpoint::Auto {
            tracing::info!(root = %root.display(), "no committed checkpoint: starting fresh");
        }
        return Ok(start);
    };
    let loaded = checkpoint::load(&dir, &full.config, &full.layout)?;
    start.params = loaded.params;
    if plan.resume_training {
        let (Some(optimizer), Some(state)) = (loaded.optimizer, loaded.state) else {
            return Err(Error::Unsupported(format!(
                "{}: resume_training needs optimizer.safetensors and trainer_state.json; this \
                 directory only has weights (set resume_training: False to fine-tune from it)",
                dir.display()
            )));
        };
        start.optimizer = Some(optimizer);
        start.state = state;
        tracing::info!(step = start.state.step, dir = %dir.display(), "resumed");
    } else {
        tracing::info!(dir = %dir.display(), "initialised weights from checkpoint");
    }
    start.from = Some(dir);
    Ok(start)
}
