//! Micro-batches from a Megatron dataset: consecutive samples in the dataset's (already
//! shuffled) order, as Megatron's pretraining sampler serves them, into buffers allocated once.

use crate::data::sampling::MegatronDataset;
use std::path::PathBuf;

use crate::data::{Error, Result};

/// Buffers of one micro-batch (B·T each).
pub struct MicroBatch {
    /// Input ids.
    pub ids: Vec<u32>,
    /// Target ids.
    pub labels: Vec<u32>,
    /// Loss mask.
    pub loss_mask: Vec<f32>,
    /// Position ids.
    pub positions: Vec<i64>,
    /// Tokens that count towards the loss.
    pub loss_tokens: usize,
}

impl MicroBatch {
    /// Buffers for `b` samples of `t` tokens.
    pub fn new(b: usize, t: usize) -> MicroBatch {
        MicroBatch {
            ids: vec![0; b * t],
            labels: vec![0; b * t],
            loss_mask: vec![0.0; b * t],
            positions: vec![0; b * t],
            loss_tokens: 0,
        }
    }

    /// Fills the buffers with samples `first, first + 1, …` (modulo the dataset length, so a
    /// run longer than the dataset starts another pass). Megatron has already mapped padding to
    /// id 0 with a zero loss mask. A token id not below `vocab` is an error naming the dataset's
    /// file and the sample.
    pub fn fill(
        &mut self,
        dataset: &MegatronDataset,
        first: u64,
        t: usize,
        vocab: usize,
    ) -> Result<()> {
        let b = self.ids.len() / t;
        let len = dataset.len() as u64;
        self.loss_tokens = 0;
        for k in 0..b {
            let index = ((first + k as u64) % len) as usize;
            let sample = dataset.get(index)?;
            let too_big = sample
                .tokens
                .iter()
                .chain(&sample.labels)
                .find(|&&s| s >= vocab as i64);
            if let Some(&id) = too_big {
                let (prefix, at) = dataset.source(index)?;
                return Err(Error::Corrupt {
                    path: PathBuf::from(format!("{}.bin", prefix.display())),
                    reason: format!(
                        "token id {id} in training sample {at} is not below the model's \
                         vocab_size {vocab}: the data was tokenized for another vocabulary; \
                         tokenize it with the model's tokenizer, or fix \
                         model.model_config.vocab_size"
                    ),
                });
            }
            let range = k * t..(k + 1) * t;
            for (d, &s) in self.ids[range.clone()].iter_mut().zip(&sample.tokens) {
                *d = s.max(0) as u32;
            }
            for (d, &s) in self.labels[range.clone()].iter_mut().zip(&sample.labels) {
                *d = s.max(0) as u32;
            }
            self.loss_mask[range.clone()].copy_from_slice(&sample.loss_mask);
            self.positions[range].copy_from_slice(&sample.position_ids);
            self.loss_tokens += sample.loss_mask.iter().filter(|&&m| m > 0.0).count();
        }
        Ok(())
    }
}
