//! Megatron's vocabulary-parallel embedding and cross-entropy: each tensor-parallel rank holds
//! rows `lo..lo + Vl` of the (V, H) table and computes the logits of those ids only; the
//! softmax statistics are combined with three (N)-sized all-reduces instead of gathering the
//! (N, V) logits.

use rayon::prelude::*;

use crate::dist::{Communicator, Result};
use crate::tensor::math;

/// The local id of `id` in rows `lo..lo + vl`, or `u32::MAX` when another rank owns it.
fn local_id(id: u32, lo: usize, vl: usize) -> u32 {
    let i = id as usize;
    if (lo..lo + vl).contains(&i) {
        (i - lo) as u32
    } else {
        u32::MAX
    }
}

/// out (N, H) = wte[ids[n]], assembled from every rank's rows `lo..lo + Vl` of wte_local
/// (Vl, H) by an all-reduce over `tp`.
pub fn vocab_embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    wte_local: &[f32],
    h: usize,
    lo: usize,
    tp: &mut dyn Communicator,
) -> Result<()> {
    let vl = wte_local.len() / h;
    out.par_chunks_mut(h)
        .zip(ids.par_iter())
        .for_each(|(o, &id)| match local_id(id, lo, vl) {
            u32::MAX => o.fill(0.0),
            i => o.copy_from_slice(&wte_local[i as usize * h..(i as usize + 1) * h]),
        });
    tp.all_reduce_sum(out)
}

/// dwte_local (Vl, H) += the rows of the scatter of dout (N, H) that this rank owns.
pub fn vocab_embedding_backward(
    dwte_local: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    h: usize,
    lo: usize,
) {
    let vl = dwte_local.len() / h;
    let local: Vec<u32> = ids.iter().map(|&id| local_id(id, lo, vl)).collect();
    super::embedding::embedding_backward(dwte_local, dout, &local, h);
}

/// losses (N) = logsumexp over the whole vocabulary − the label's logit, from logits_local
/// (N, Vl) of ids `lo..lo + Vl`; keeps each row's global max and Σexp for the backward.
#[allow(clippy::too_many_arguments)]
pub fn vocab_cross_entropy_forward(
    losses: &mut [f32],
    maxes: &mut [f32],
    sums: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    vl: usize,
    lo: usize,
    tp: &mut dyn Communicator,
) -> Result<()> {
    maxes
        .par_iter_mut()
        .zip(logits.par_chunks(vl))
        .for_each(|(m, row)| *m = math::max(row));
    tp.all_reduce_max(maxes)?;
    sums.par_iter_mut()
        .zip(logits.par_chunks(vl))
        .zip(maxes.par_iter())
        .for_each(|((s, row), &m)| *s = math::sum_exp(row, m));
    tp.all_reduce_sum(sums)?;
    // The label's logit: from the rank that owns it, 0 elsewhere.
    for ((l, row), &y) in losses.iter_mut().zip(logits.chunks(vl)).zip(labels) {
        *l = match local_id(y, lo, vl) {
            u32::MAX => 0.0,
            i => row[i as usize],
        };
    }
    tp.all_reduce_sum(losses)?;
    for ((l, &m), &s) in losses.iter_mut().zip(maxes.iter()).zip(sums.iter()) {
        *l = m + s.ln() - *l;
    }
    Ok(())
}

/// In place: logits_local (N, Vl) become (softmax − onehot(label)) · dlosses[n], with the
/// global statistics of [`vocab_cross_entropy_forward`].
pub fn vocab_cross_entropy_backward(
    logits: &mut [f32],
    labels: &[u32],
    dlosses: &[f32],
    maxes: &[f32],
    sums: &[f32],
    lo: usize,
) {
    let vl = logits.len() / labels.len().max(1);
    logits
        .par_chunks_mut(vl)
        .zip(labels.par_iter())
        .zip(
            dlosses
                .par_iter()
                .zip(maxes.par_iter().zip(sums.par_iter())),
        )
        .for_each(|((row, &y), (&dl, (&m, &s)))| {
            if dl == 0.0 {
                row.fill(0.0);
                return;
            }
            let inv = dl / s;
            for x in row.iter_mut() {
                *x = math::exp(*x - m) * inv;
            }
            if let Some(i) = Some(local_id(y, lo, vl)).filter(|&i| i != u32::MAX) {
                row[i as usize] -= dl;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::SoloComm;
    use crate::model::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward};

    /// With one rank holding the whole vocabulary, the results equal the plain ops.
    #[test]
    fn one_rank_equals_the_plain_ops() {
        let (n, v, h) = (3, 10, 4);
        let logits: Vec<f32> = (0..n * v).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let labels = [2u32, 9, 0];
        let (mut l1, mut l2) = (vec![0.0; n], vec![0.0; n]);
        let (mut mx, mut sm) = (vec![0.0; n], vec![0.0; n]);
        cross_entropy_forward(&mut l1, &logits, &labels, v);
        vocab_cross_entropy_forward(
            &mut l2,
            &mut mx,
            &mut sm,
            &logits,
            &labels,
            v,
            0,
            &mut SoloComm,
        )
        .expect("solo");
        for (a, b) in l1.iter().zip(&l2) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        let dl = [0.5f32, 0.0, 0.25];
        let (mut d1, mut d2) = (logits.clone(), logits.clone());
        cross_entropy_backward(&mut d1, &labels, &dl, v);
        vocab_cross_entropy_backward(&mut d2, &labels, &dl, &mx, &sm, 0);
        for (a, b) in d1.iter().zip(&d2) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        let wte: Vec<f32> = (0..v * h).map(|i| i as f32).collect();
        let mut out = vec![0.0; n * h];
        vocab_embedding_forward(&mut out, &labels, &wte, h, 0, &mut SoloComm).expect("solo");
        assert_eq!(&out[h..2 * h], &wte[9 * h..10 * h]);
        // Rows of another rank are skipped by the backward.
        let mut dw = vec![0.0; 5 * h];
        vocab_embedding_backward(&mut dw, &out, &labels, h, 5);
        assert_eq!(&dw[4 * h..5 * h], &wte[9 * h..10 * h]);
        assert!(dw[..4 * h].iter().all(|&x| x == 0.0));
    }
}
