//! Fused softmax + cross-entropy over the vocabulary, with Megatron's pre-shifted labels and a
//! loss mask. The backward overwrites the logits with their gradient, so the (N, V) buffer is
//! allocated once.

use rayon::prelude::*;

use crate::tensor::math;

/// losses (N) = logsumexp(logits[n]) − logits[n, labels[n]] for logits (N, V).
pub fn cross_entropy_forward(losses: &mut [f32], logits: &[f32], labels: &[u32], v: usize) {
    losses
        .par_iter_mut()
        .zip(logits.par_chunks(v))
        .zip(labels.par_iter())
        .for_each(|((l, row), &y)| {
            let max = math::max(row);
            let sum = math::sum_exp(row, max);
            *l = max + sum.ln() - row[y as usize];
        });
}

/// In place: logits (N, V) become dlogits = (softmax − onehot(label)) · dlosses[n].
pub fn cross_entropy_backward(logits: &mut [f32], labels: &[u32], dlosses: &[f32], v: usize) {
    logits
        .par_chunks_mut(v)
        .zip(labels.par_iter())
        .zip(dlosses.par_iter())
        .for_each(|((row, &y), &dl)| {
            if dl == 0.0 {
                row.fill(0.0);
                return;
            }
            let max = math::max(row);
            for x in row.iter_mut() {
                *x = math::exp(*x - max);
            }
            let sum = math::sum(row);
            let inv = dl / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
            row[y as usize] -= dl;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(logits: &[f64], labels: &[u32], mask: &[f32], v: usize) -> f64 {
        let total: f64 = mask.iter().map(|&m| m as f64).sum();
        logits
            .chunks(v)
            .zip(labels)
            .zip(mask)
            .map(|((row, &y), &m)| {
                let max = row.iter().cloned().fold(f64::MIN, f64::max);
                let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                (lse - row[y as usize]) * m as f64
            })
            .sum::<f64>()
            / total
    }

    #[test]
    fn masked_mean_loss_and_gradient_match_f64() {
        let (n, v) = (4, 11);
        let logits: Vec<f32> = values(n * v, 16).iter().map(|x| x * 5.0).collect();
        let labels = [3u32, 0, 10, 7];
        let mask = [1.0f32, 0.0, 1.0, 1.0];
        let mut losses = vec![0.0; n];
        cross_entropy_forward(&mut losses, &logits, &labels, v);
        let total: f32 = mask.iter().sum();
        let loss: f32 = losses.iter().zip(&mask).map(|(l, m)| l * m).sum::<f32>() / total;
        let ls = f64s(&logits);
        let want = reference(&ls, &labels, &mask, v);
        assert!(
            ((loss as f64 - want) / want).abs() < 1e-6,
            "{loss} vs {want}"
        );
        let dl: Vec<f32> = mask.iter().map(|m| m / total).collect();
        let mut d = logits.clone();
        cross_entropy_backward(&mut d, &labels, &dl, v);
        let g = numeric_grad(&ls, &|x| reference(x, &labels, &mask, v));
        assert_close("dlogits", &d, &g, 1e-5);
    }
}
