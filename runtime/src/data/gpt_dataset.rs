//! [`GptDataset`]: Megatron-Core's GPT sample building over one split of an indexed dataset
//! (megatron-data.md §3.2-3.3): document index, sample index and shuffle index, built with
//! numpy's legacy RandomState so the sample order is Megatron's, and `__getitem__`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::blend::Split;
use super::indexed::IndexedDataset;
use super::rng::RandomState;
use super::{Error, Result};

/// Options that shape samples, with Megatron's `GPTDatasetConfig` names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GptDatasetConfig {
    /// S: tokens per sample (each sample reads S+1 tokens with the extra token).
    pub sequence_length: usize,
    /// Seed of the RandomState that shuffles documents and samples (Megatron default 1234).
    pub random_seed: u32,
    /// End-of-document token id.
    pub eod: i64,
    /// Padding token id (-1 when the tokenizer has no distinct pad).
    pub pad: i64,
    /// Zero the loss mask where the token is EOD.
    pub eod_mask_loss: bool,
    /// Restart position ids after each EOD.
    pub reset_position_ids: bool,
    /// Stop attention across EODs (needs `create_attention_mask` to be materialised).
    pub reset_attention_mask: bool,
    /// Return the (S, S) attention mask with each sample.
    pub create_attention_mask: bool,
    /// Read S+1 tokens per sample so labels are the next tokens (Megatron default true).
    pub add_extra_token_to_sequence: bool,
    /// Drop the last, partial sample of the validation split (Megatron default true); when
    /// false it is kept and padded.
    pub drop_last_partial_validation_sequence: bool,
}

impl Default for GptDatasetConfig {
    fn default() -> Self {
        GptDatasetConfig {
            sequence_length: 4096,
            random_seed: 1234,
            eod: 0,
            pad: -1,
            eod_mask_loss: false,
            reset_position_ids: false,
            reset_attention_mask: false,
            create_attention_mask: false,
            add_extra_token_to_sequence: true,
            drop_last_partial_validation_sequence: true,
        }
    }
}

/// One training sample, as Megatron's `GPTDataset.__getitem__` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Input ids, length S.
    pub tokens: Vec<i64>,
    /// Target ids (already shifted), length S.
    pub labels: Vec<i64>,
    /// 1.0 where the label counts towards the loss.
    pub loss_mask: Vec<f32>,
    /// Position of each token, length S.
    pub position_ids: Vec<i64>,
    /// Row-major (S, S) mask, `true` = masked (Megatron's convention), when requested.
    pub attention_mask: Option<Vec<bool>>,
}

/// The three index arrays of a [`GptDataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct GptIndices {
    /// Sequence ids in reading order over all epochs (i32, as Megatron stores them).
    pub document_index: Vec<i32>,
    /// (n + 1) pairs of (position in `document_index`, token offset), flattened.
    pub sample_index: Vec<i64>,
    /// Permutation of `0..n`.
    pub shuffle_index: Vec<u32>,
}

/// How many epochs and whether the last one is shuffled separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    /// E.
    pub num_epochs: usize,
    /// Whether the final epoch gets its own document and sample shuffles.
    pub separate_final_epoch: bool,
    /// Samples in the first E-1 epochs (the first shuffle's length when separated).
    pub num_samples_sans_final_epoch: usize,
}

/// Plans epochs for `num_samples` samples of length `seq_length` from `tokens_per_epoch`
/// tokens (`None` = one epoch). Errors where Megatron would loop forever (an empty split asked
/// for samples).
pub fn plan_epochs(
    tokens_per_epoch: u64,
    num_samples: Option<usize>,
    seq_length: usize,
    extra: usize,
) -> Result<EpochPlan> {
    let Some(num_samples) = num_samples else {
        return Ok(EpochPlan {
            num_epochs: 1,
            separate_final_epoch: false,
            num_samples_sans_final_epoch: 0,
        });
    };
    let requested = num_samples as u64 * seq_length as u64 + extra as u64;
    if tokens_per_epoch == 0 {
        return Err(Error::InvalidArgument(format!(
            "a dataset split holds no tokens but {num_samples} samples were requested from it; \
             widen the split (e.g. split \"969,30,1\" needs enough documents for each part) or \
             request 0 samples for it"
        )));
    }
    let num_epochs = requested.div_ceil(tokens_per_epoch).max(1) as usize;
    let (t, s, x) = (tokens_per_epoch, seq_length as u64, extra as u64);
    if num_epochs == 1 {
        return Ok(EpochPlan {
            num_epochs,
            separate_final_epoch: false,
            num_samples_sans_final_epoch: 0,
        });
    }
    let sans = ((num_epochs as u64 - 1) * t - x) / s;
    let per_epoch = (t - x) / s;
    let from_final = num_samples as u64 - sans;
    let threshold = (0.80 * per_epoch as f64) as u64;
    Ok(EpochPlan {
        num_epochs,
        separate_final_epoch: from_final < threshold,
        num_samples_sans_final_epoch: sans as usize,
    })
}

/// `_build_document_index`: E copies of the split's sequence ids, shuffled as a whole, or
/// E-1 copies and then 1 copy shuffled separately.
fn build_document_index(
    documents: &Range<usize>,
    plan: &EpochPlan,
    rng: &mut RandomState,
) -> Result<Vec<i32>> {
    if documents.end > i32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{} sequences exceed Megatron's i32 document index",
            documents.end
        )));
    }
    let copies = |epochs: usize, rng: &mut RandomState| {
        let mut v: Vec<i32> = Vec::with_capacity(epochs * documents.len());
        for _ in 0..epochs {
            v.extend(documents.clone().map(|d| d as i32));
        }
        rng.shuffle(&mut v);
        v
    };
    if !plan.separate_final_epoch || plan.num_epochs == 1 {
        return Ok(copies(plan.num_epochs, rng));
    }
    let mut first = copies(plan.num_epochs - 1, rng);
    first.extend(copies(1, rng));
    Ok(first)
}

/// `helpers.cpp: build_sample_idx`: walk the document index consuming S+extra tokens per
/// sample; each sample starts at the last token of the previous. With `drop_last` the final
/// partial sample is dropped, otherwise kept (and padded when read).
fn build_sample_index(
    lengths: &[u32],
    document_index: &[i32],
    seq_length: usize,
    num_epochs: usize,
    tokens_per_epoch: u64,
    extra: usize,
    drop_last: bool,
) -> Vec<i64> {
    let available = (num_epochs as u64 * tokens_per_epoch) as i64 - extra as i64;
    let n = if drop_last {
        // C++ integer division truncates towards zero (an empty split gives 0, not -1).
        available / seq_length as i64
    } else {
        // helpers.cpp computes this ceiling in single precision; so do we.
        ((available as f32) / (seq_length as f32)).ceil() as i64
    };
    let n = n.max(0) as usize;
    let mut out = Vec::with_capacity(2 * (n + 1));
    let mut doc_pos = 0usize;
    let mut doc_offset = 0i64;
    out.extend([0, 0]);
    for sample in 1..=n {
        let mut remaining = (seq_length + extra) as i64;
        while remaining != 0 {
            let doc_len = lengths[document_index[doc_pos] as usize] as i64 - doc_offset;
            remaining -= doc_len;
            if remaining <= 0 {
                doc_offset += remaining + doc_len - extra as i64;
                remaining = 0;
            } else {
                if doc_pos == document_index.len() - 1 {
                    debug_assert_eq!(sample, n);
                    doc_offset = lengths[document_index[doc_pos] as usize] as i64 - extra as i64;
                    break;
                }
                doc_pos += 1;
                doc_offset = 0;
            }
        }
        out.extend([doc_pos as i64, doc_offset]);
    }
    out
}

/// `_build_shuffle_index`: a shuffled `0..num_samples`, then, if `total > num_samples`, a
/// separately shuffled `num_samples..total`.
fn build_shuffle_index(
    num_samples: usize,
    total: usize,
    rng: &mut RandomState,
) -> Result<Vec<u32>> {
    if total as u64 >= u32::MAX as u64 - 1 {
        return Err(Error::InvalidArgument(format!(
            "{total} samples exceed the u32 shuffle index; lower the sample count"
        )));
    }
    let mut first: Vec<u32> = (0..num_samples as u32).collect();
    rng.shuffle(&mut first);
    if num_samples == total {
        return Ok(first);
    }
    let mut last: Vec<u32> = (num_samples as u32..total as u32).collect();
    rng.shuffle(&mut last);
    first.extend(last);
    Ok(first)
}

/// Builds the three indices for `num_samples` samples over `documents` (a range of sequence
/// ids of `dataset`).
pub fn build_indices(
    dataset: &IndexedDataset,
    documents: &Range<usize>,
    num_samples: Option<usize>,
    split: Split,
    config: &GptDatasetConfig,
) -> Result<GptIndices> {
    if config.sequence_length == 0 {
        return Err(Error::InvalidArgument(
            "seq_length must be at least 1".into(),
        ));
    }
    let extra = config.add_extra_token_to_sequence as usize;
    let lengths = dataset.sequence_lengths();
    let tokens_per_epoch: u64 = lengths[documents.clone()].iter().map(|&l| l as u64).sum();
    let plan = plan_epochs(tokens_per_epoch, num_samples, config.sequence_length, extra)?;
    let mut rng = RandomState::new(config.random_seed);
    let document_index = build_document_index(documents, &plan, &mut rng)?;
    let sample_index = build_sample_index(
        &lengths,
        &document_index,
        config.sequence_length,
        plan.num_epochs,
        tokens_per_epoch,
        extra,
        split != Split::Valid || config.drop_last_partial_validation_sequence,
    );
    let total = sample_index.len() / 2 - 1;
    let first = if plan.separate_final_epoch {
        plan.num_samples_sans_final_epoch
    } else {
        total
    };
    let shuffle_index = build_shuffle_index(first, total, &mut rng)?;
    Ok(GptIndices {
        document_index,
        sample_index,
        shuffle_index,
    })
}

/// One split of one indexed dataset, served as GPT samples in Megatron's order.
pub struct GptDataset {
    dataset: Arc<IndexedDataset>,
    split: Split,
    config: GptDatasetConfig,
    indices: GptIndices,
}

impl GptDataset {
    /// Wraps prebuilt indices (from [`build_indices`] or the cache).
    pub fn new(
        dataset: Arc<IndexedDataset>,
        split: Split,
        config: GptDatasetConfig,
        indices: GptIndices,
    ) -> GptDataset {
        GptDataset {
            dataset,
            split,
            config,
            indices,
        }
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.indices.shuffle_index.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The dataset prefix.
    pub fn prefix(&self) -> &Path {
        self.dataset.prefix()
    }

    /// The underlying indexed dataset.
    pub fn indexed(&self) -> &IndexedDataset {
        &self.dataset
    }

    /// The index arrays.
    pub fn indices(&self) -> &GptIndices {
        &self.indices
    }

    /// The sample config.
    pub fn config(&self) -> &GptDatasetConfig {
        &self.config
    }

    /// The S+1 raw tokens of sample `i` (after the shuffle), padded with `pad` if short.
    pub fn text(&self, i: usize, out: &mut Vec<i64>) -> Result<()> {
        if i >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "{}: sample {i} out of range, the {} split has {} samples",
                self.prefix().display(),
                self.split.name(),
                self.len()
            )));
        }
        out.clear();
        let extra = self.config.add_extra_token_to_sequence as usize;
        let j = self.indices.shuffle_index[i] as usize;
        let si = &self.indices.sample_index;
        let (beg, beg_off) = (si[2 * j] as usize, si[2 * j + 1] as usize);
        let (end, end_off) = (si[2 * j + 2] as usize, si[2 * j + 3] as usize);
        let doc = |p: usize| self.indices.document_index[p] as usize;
        if beg == end {
            let len = end_off - beg_off + extra;
            self.dataset
                .get(doc(beg), beg_off, Some(len))?
                .extend_into(out);
        } else {
            for p in beg..=end {
                let offset = if p > beg { 0 } else { beg_off };
                let length = if p < end { None } else { Some(end_off + extra) };
                self.dataset.get(doc(p), offset, length)?.extend_into(out);
            }
        }
        let want = self.config.sequence_length + extra;
        if out.len() < want {
            out.resize(want, self.config.pad);
        }
        Ok(())
    }

    /// Sample `i` with labels, loss mask, position ids and (optionally) attention mask.
    pub fn get(&self, i: usize) -> Result<Sample> {
        let mut text = Vec::with_capacity(self.config.sequence_length + 1);
        self.text(i, &mut text)?;
        Ok(make_sample(&text, &self.config))
    }
}

/// Megatron's `__getitem__` after the token lookup, including
/// `_get_ltor_masks_and_position_ids` and the pad handling.
pub fn make_sample(text: &[i64], config: &GptDatasetConfig) -> Sample {
    let (mut tokens, mut labels) = if config.add_extra_token_to_sequence {
        (text[..text.len() - 1].to_vec(), text[1..].to_vec())
    } else {
        let mut labels = text[1..].to_vec();
        labels.push(config.pad);
        (text.to_vec(), labels)
    };
    let s = tokens.len();
    let eod = config.eod;
    let mut loss_mask = vec![1.0f32; s];
    if config.eod_mask_loss {
        for (m, &t) in loss_mask.iter_mut().zip(&tokens) {
            if t == eod {
                *m = 0.0;
            }
        }
    }
    let mut position_ids: Vec<i64> = (0..s as i64).collect();
    // Row-major (S, S); `true` = may attend, inverted to Megatron's "true = masked" at the end.
    let mut attend = config.create_attention_mask.then(|| {
        let mut m = vec![false; s * s];
        for r in 0..s {
            m[r * s..r * s + r + 1].fill(true);
        }
        m
    });
    if config.reset_position_ids || config.reset_attention_mask {
        let mut prev = 0i64;
        for i in (0..s).filter(|&i| tokens[i] == eod) {
            if config.reset_attention_mask {
                if let Some(m) = attend.as_mut() {
                    for r in i + 1..s {
                        m[r * s..r * s + i + 1].fill(false);
                    }
                }
            }
            if config.reset_position_ids {
                let shift = i as i64 + 1 - prev;
                for p in &mut position_ids[i + 1..] {
                    *p -= shift;
                }
                prev = i as i64 + 1;
            }
        }
    }
    let pad = config.pad;
    for (m, &l) in loss_mask.iter_mut().zip(&labels) {
        if l == pad {
            *m = 0.0;
        }
    }
    for t in tokens.iter_mut().chain(labels.iter_mut()) {
        if *t == pad {
            *t = 0;
        }
    }
    Sample {
        tokens,
        labels,
        loss_mask,
        position_ids,
        attention_mask: attend.map(|m| m.into_iter().map(|a| !a).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::builder::IndexedDatasetBuilder;
    use crate::data::DType;

    fn dataset(dir: &Path, docs: &[Vec<i64>]) -> Arc<IndexedDataset> {
        let prefix = dir.join("d");
        let mut b = IndexedDatasetBuilder::create(&prefix, DType::I32).expect("create");
        for d in docs {
            b.add_item(d).expect("add");
            b.end_document();
        }
        b.finalize().expect("finalize");
        Arc::new(IndexedDataset::open(&prefix).expect("open"))
    }

    #[test]
    fn reference_vectors_of_megatron_core() {
        // megatron-data.md §5, megatron-core 0.16.1.
        let dir = tempfile::tempdir().expect("tempdir");
        let ds = dataset(
            dir.path(),
            &[vec![5, 6, 7, 1], vec![8, 9, 1], vec![10, 11, 12, 13, 14, 1]],
        );
        let config = GptDatasetConfig {
            sequence_length: 4,
            eod: 1,
            eod_mask_loss: true,
            reset_position_ids: true,
            ..GptDatasetConfig::default()
        };
        let idx = build_indices(&ds, &(0..3), Some(6), Split::Train, &config).expect("indices");
        assert_eq!(idx.document_index, [2, 1, 2, 0, 1, 0]);
        assert_eq!(idx.sample_index, [0, 0, 0, 4, 1, 2, 2, 3, 3, 1, 4, 1, 5, 2]);
        assert_eq!(idx.shuffle_index, [0, 4, 3, 2, 5, 1]);
        let gpt = GptDataset::new(ds, Split::Train, config, idx);
        let s = gpt.get(1).expect("get");
        assert_eq!(s.tokens, [6, 7, 1, 8]);
        assert_eq!(s.labels, [7, 1, 8, 9]);
        assert_eq!(s.loss_mask, [1.0, 1.0, 0.0, 1.0]);
        assert_eq!(s.position_ids, [0, 1, 2, 0]);
    }

    #[test]
    fn separated_final_epoch_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs: Vec<Vec<i64>> = [4, 5, 6, 7, 4, 5, 6, 7]
            .iter()
            .map(|&n| (0..n).map(|t| t + 2).collect())
            .collect();
        let ds = dataset(dir.path(), &docs);
        let config = GptDatasetConfig {
            sequence_length: 4,
            random_seed: 7,
            ..GptDatasetConfig::default()
        };
        let plan = plan_epochs(44, Some(12), 4, 1).expect("plan");
        assert_eq!(plan.num_epochs, 2);
        assert!(plan.separate_final_epoch);
        assert_eq!(plan.num_samples_sans_final_epoch, 10);
        let idx = build_indices(&ds, &(0..8), Some(12), Split::Train, &config).expect("indices");
        assert_eq!(
            idx.document_index,
            [2, 5, 0, 6, 3, 1, 4, 7, 3, 5, 7, 4, 2, 1, 0, 6]
        );
        assert_eq!(
            idx.shuffle_index,
            [1, 5, 2, 9, 3, 7, 8, 0, 4, 6, 14, 12, 16, 11, 20, 17, 19, 10, 18, 15, 13]
        );
    }

    #[test]
    fn empty_split_is_an_error_not_a_hang() {
        let err = plan_epochs(0, Some(5), 4, 1).expect_err("must fail");
        assert!(err.to_string().contains("no tokens"));
    }

    #[test]
    fn attention_mask_resets_at_eod() {
        let config = GptDatasetConfig {
            sequence_length: 4,
            eod: 1,
            reset_attention_mask: true,
            create_attention_mask: true,
            ..GptDatasetConfig::default()
        };
        let s = make_sample(&[5, 1, 6, 7, 8], &config);
        let m = s.attention_mask.expect("mask");
        // Row 2 (token 6) may attend to itself only among 0..=2: columns 0,1 masked.
        assert_eq!(&m[8..12], &[true, true, false, true]);
        assert_eq!(&m[0..4], &[false, true, true, true]);
        assert_eq!(s.position_ids, [0, 1, 2, 3]);
    }
}
