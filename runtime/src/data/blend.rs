//! Blend and split descriptions, and [`BlendedDataset`]: Megatron's weighted mixture of
//! datasets (megatron-data.md §3.1, §3.4).

use std::ops::Range;
use std::path::PathBuf;

use super::gpt_dataset::{GptDataset, Sample};
use super::{Error, Result};

/// The three splits of a dataset, in Megatron's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training samples.
    Train,
    /// Validation samples.
    Valid,
    /// Test samples.
    Test,
}

impl Split {
    /// All splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// Megatron's name (`train`, `valid`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// Position in [`Split::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// numpy's float64 `sum` (pairwise summation with an 8-way unrolled base case), so that weight
/// normalisation rounds exactly as Megatron's `normalize` does.
pub fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// Megatron's `normalize`: divide by the numpy sum.
pub fn normalize(weights: &[f64]) -> Vec<f64> {
    let sum = numpy_sum(weights);
    weights.iter().map(|w| w / sum).collect()
}

/// Parses a split string such as `"969,30,1"` or `"1, 0, 0"` into normalised train/valid/test
/// fractions: every run of digits and dots is a number, missing ones are 0.
pub fn parse_split(split: &str) -> Result<[f64; 3]> {
    let mut values = Vec::new();
    let mut current = String::new();
    for c in split.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || c == '.' {
            current.push(c);
        } else if !current.is_empty() {
            let v: f64 = current.parse().map_err(|_| {
                Error::InvalidArgument(format!(
                    "split `{split}`: `{current}` is not a number; write e.g. \"969,30,1\""
                ))
            })?;
            values.push(v);
            current.clear();
        }
    }
    if values.is_empty() || values.len() > 3 {
        return Err(Error::InvalidArgument(format!(
            "split `{split}` must hold 1 to 3 numbers (train, valid, test), e.g. \"969,30,1\""
        )));
    }
    values.resize(3, 0.0);
    if numpy_sum(&values) <= 0.0 {
        return Err(Error::InvalidArgument(format!(
            "split `{split}` sums to zero; give the train share a positive weight"
        )));
    }
    let n = normalize(&values);
    Ok([n[0], n[1], n[2]])
}

/// Megatron's `convert_split_vector_to_split_matrix` for one vector: the `[begin, end)`
/// fraction of each split, `None` for an empty one.
pub fn split_matrix(split: [f64; 3]) -> [Option<(f64, f64)>; 3] {
    let mut out = [None; 3];
    let mut begin = 0.0f64;
    for (i, w) in split.iter().enumerate() {
        let end = begin + w;
        if end > begin {
            out[i] = Some((begin, end));
        }
        begin = end;
    }
    out
}

/// The sequence ids a split covers: `[round(begin * n), round(end * n))` with Python's
/// round-half-to-even.
pub fn split_range(bookends: (f64, f64), num_sequences: usize) -> Range<usize> {
    let n = num_sequences as f64;
    let begin = (bookends.0 * n).round_ties_even() as usize;
    let end = (bookends.1 * n).round_ties_even() as usize;
    begin..end
}

/// A parsed `data_path` list: prefixes and, when the list gives them, weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Blend {
    /// Dataset prefixes (without `.bin`/`.idx`).
    pub prefixes: Vec<PathBuf>,
    /// Normalised weights, one per prefix; `None` for a bare list of prefixes.
    pub weights: Option<Vec<f64>>,
}

/// Parses Megatron's blend list `['0.7', prefixA, '0.3', prefixB]` (or a bare list of
/// prefixes). An odd length or a non-numeric weight position means "prefixes only".
pub fn parse_blend(items: &[String]) -> Result<Blend> {
    if items.is_empty() {
        return Err(Error::InvalidArgument(
            "data_path is empty; give a dataset prefix, or weight/prefix pairs such as \
             ['0.7', 'a_text_document', '0.3', 'b_text_document']"
                .into(),
        ));
    }
    let paired = items.len().is_multiple_of(2)
        && items
            .iter()
            .step_by(2)
            .all(|w| w.trim().parse::<f64>().is_ok());
    if !paired {
        return Ok(Blend {
            prefixes: items.iter().map(PathBuf::from).collect(),
            weights: None,
        });
    }
    let mut weights = Vec::new();
    let mut prefixes = Vec::new();
    for pair in items.chunks(2) {
        let w: f64 = pair[0].trim().parse().unwrap_or(f64::NAN);
        if !(w.is_finite() && w >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "data_path weight `{}` for `{}` must be a non-negative number",
                pair[0], pair[1]
            )));
        }
        weights.push(w);
        prefixes.push(PathBuf::from(&pair[1]));
    }
    if numpy_sum(&weights) <= 0.0 {
        return Err(Error::InvalidArgument(
            "data_path weights sum to zero; give at least one dataset a positive weight".into(),
        ));
    }
    Ok(Blend {
        prefixes,
        weights: Some(normalize(&weights)),
    })
}

/// Samples requested from each dataset of a blend for one split:
/// `ceil(ceil(size * w) * (1 + surplus))`.
pub fn size_per_dataset(weights: &[f64], size: usize, surplus: f64) -> Vec<usize> {
    weights
        .iter()
        .map(|w| (((size as f64) * w).ceil() * (1.0 + surplus)).ceil() as usize)
        .collect()
}

/// `helpers.cpp: build_blending_indices`: for each sample pick the dataset whose share lags
/// its weight the most (ties to the lowest index). Returns `(dataset_index, dataset_sample_index)`.
pub fn build_blending_indices(weights: &[f64], size: usize) -> (Vec<i16>, Vec<i64>) {
    let mut current = vec![0i64; weights.len()];
    let mut dataset_index = Vec::with_capacity(size);
    let mut dataset_sample_index = Vec::with_capacity(size);
    for i in 0..size {
        let x = (i as f64).max(1.0);
        let mut best = 0usize;
        let mut best_error = weights[0] * x - current[0] as f64;
        for (d, w) in weights.iter().enumerate().skip(1) {
            let error = w * x - current[d] as f64;
            if error > best_error {
                best_error = error;
                best = d;
            }
        }
        dataset_index.push(best as i16);
        dataset_sample_index.push(current[best]);
        current[best] += 1;
    }
    (dataset_index, dataset_sample_index)
}

/// `helpers.cpp: build_exhaustive_blending_indices`: exactly `sizes[d]` samples of each
/// dataset, interleaved in proportion to the sizes (the same lag rule as
/// [`build_blending_indices`] over the datasets not yet used up; ties to the lowest index).
pub fn build_exhaustive_blending_indices(sizes: &[usize]) -> (Vec<i16>, Vec<i64>) {
    let total: usize = sizes.iter().sum();
    let weights: Vec<f64> = sizes.iter().map(|&n| n as f64 / total as f64).collect();
    let mut current = vec![0i64; sizes.len()];
    let mut unspent: Vec<usize> = (0..sizes.len()).filter(|&d| sizes[d] > 0).collect();
    let mut dataset_index = Vec::with_capacity(total);
    let mut dataset_sample_index = Vec::with_capacity(total);
    for i in 0..total {
        let x = (i as f64).max(1.0);
        let mut best = None;
        let mut best_error = f64::MIN;
        for &d in &unspent {
            let error = weights[d] * x - current[d] as f64;
            if error > best_error {
                best_error = error;
                best = Some(d);
            }
        }
        let Some(best) = best else { break };
        dataset_index.push(best as i16);
        dataset_sample_index.push(current[best]);
        current[best] += 1;
        if current[best] as usize == sizes[best] {
            unspent.retain(|&d| d != best);
        }
    }
    (dataset_index, dataset_sample_index)
}

/// Checks that a blend has 1 to 32767 datasets and one weight each.
fn check_parts(datasets: &[GptDataset], weights: usize) -> Result<()> {
    if datasets.len() != weights || datasets.is_empty() || datasets.len() > 32_767 {
        return Err(Error::InvalidArgument(format!(
            "a blend needs 1 to 32767 datasets with one weight each, got {} datasets and \
             {weights} weights",
            datasets.len(),
        )));
    }
    Ok(())
}

/// A weighted mixture of GPT datasets for one split.
pub struct BlendedDataset {
    datasets: Vec<GptDataset>,
    /// Which dataset each sample comes from.
    pub dataset_index: Vec<i16>,
    /// The sample of that dataset.
    pub dataset_sample_index: Vec<i64>,
}

impl BlendedDataset {
    /// Blends `datasets` with normalised `weights` into `size` samples. Errors if a dataset
    /// would be asked for more samples than it holds.
    pub fn new(datasets: Vec<GptDataset>, weights: &[f64], size: usize) -> Result<BlendedDataset> {
        check_parts(&datasets, weights.len())?;
        let (dataset_index, dataset_sample_index) = build_blending_indices(weights, size);
        BlendedDataset::checked(datasets, dataset_index, dataset_sample_index)
    }

    /// Every sample of every dataset once, interleaved in proportion to their lengths
    /// (megatron-core's blend of an unweighted `data_path` without a sample count).
    pub fn exhaustive(datasets: Vec<GptDataset>) -> Result<BlendedDataset> {
        check_parts(&datasets, datasets.len())?;
        let sizes: Vec<usize> = datasets.iter().map(GptDataset::len).collect();
        let (dataset_index, dataset_sample_index) = build_exhaustive_blending_indices(&sizes);
        BlendedDataset::checked(datasets, dataset_index, dataset_sample_index)
    }

    /// The blend of these indices, unless they ask a dataset for more samples than it holds.
    fn checked(
        datasets: Vec<GptDataset>,
        dataset_index: Vec<i16>,
        dataset_sample_index: Vec<i64>,
    ) -> Result<BlendedDataset> {
        let mut needed = vec![0usize; datasets.len()];
        for (&d, &s) in dataset_index.iter().zip(&dataset_sample_index) {
            needed[d as usize] = needed[d as usize].max(s as usize + 1);
        }
        for (ds, need) in datasets.iter().zip(needed) {
            if need > ds.len() {
                return Err(Error::InvalidArgument(format!(
                    "blend oversamples {}: needs {need} samples, it has {}",
                    ds.prefix().display(),
                    ds.len()
                )));
            }
        }
        Ok(BlendedDataset {
            datasets,
            dataset_index,
            dataset_sample_index,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.dataset_index.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.dataset_index.is_empty()
    }

    /// The component datasets.
    pub fn datasets(&self) -> &[GptDataset] {
        &self.datasets
    }

    /// Sample `i`: sample `dataset_sample_index[i]` of dataset `dataset_index[i]`.
    pub fn get(&self, i: usize) -> Result<Sample> {
        let (d, s) = self.locate(i)?;
        self.datasets[d].get(s)
    }

    /// The `d`-th dataset of the blend.
    pub fn part(&self, d: usize) -> &GptDataset {
        &self.datasets[d]
    }

    /// `(dataset, sample within it)` for blended sample `i`.
    pub fn locate(&self, i: usize) -> Result<(usize, usize)> {
        if i >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "sample {i} out of range, the blended dataset has {}",
                self.len()
            )));
        }
        Ok((
            self.dataset_index[i] as usize,
            self.dataset_sample_index[i] as usize,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_strings() {
        let s = parse_split("969,30,1").expect("parse");
        assert_eq!(s, [0.969, 0.03, 0.001]);
        let m = split_matrix(s);
        assert_eq!(m[0], Some((0.0, 0.969)));
        assert_eq!(m[1], Some((0.969, 0.999)));
        assert!(m[2].is_some());
        let m = split_matrix(parse_split("1, 0, 0").expect("parse"));
        assert_eq!(m, [Some((0.0, 1.0)), None, None]);
        assert!(parse_split("0,0,0").is_err());
        assert!(parse_split("abc").is_err());
        assert_eq!(split_range((0.0, 0.5), 5), 0..2); // round(2.5) = 2
        assert_eq!(split_range((0.5, 1.0), 7), 4..7); // round(3.5) = 4
    }

    #[test]
    fn blend_lists() {
        let b = parse_blend(&["0.7".into(), "a".into(), "0.3".into(), "b".into()]).expect("blend");
        assert_eq!(b.prefixes, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(b.weights, Some(vec![0.7, 0.3]));
        let b = parse_blend(&["a".into(), "b".into()]).expect("prefixes");
        assert_eq!(b.weights, None);
        assert!(parse_blend(&[]).is_err());
        assert!(parse_blend(&["-1".into(), "a".into()]).is_err());
    }

    #[test]
    fn blending_matches_megatron_reference() {
        // megatron-data.md §5: weights [0.3, 0.7], size 20 (megatron-core 0.16.1).
        let (d, s) = build_blending_indices(&normalize(&[0.3, 0.7]), 20);
        assert_eq!(
            d,
            [1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1]
        );
        assert_eq!(&s[..5], &[0, 0, 1, 2, 1]);
    }

    #[test]
    fn numpy_pairwise_sum_blocks() {
        let a: Vec<f64> = (0..300).map(|i| 0.1 * i as f64).collect();
        let naive: f64 = a.iter().sum();
        assert!((numpy_sum(&a) - naive).abs() < 1e-9);
        assert_eq!(size_per_dataset(&[0.5, 0.5], 5, 0.005), vec![4, 4]);
        assert_eq!(size_per_dataset(&[1.0], 5, 0.005), vec![6]);
    }
}
