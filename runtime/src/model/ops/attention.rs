//! The explicit attention kernel, O(T²) memory: the reference [`super::flash_attention`] (which
//! training uses) is tested against. Causal grouped-query attention as HF Qwen3 (eager): per
//! query head h with KV head
//! g = h / (Nq/Nkv), `P = softmax(Q_h·K_gᵀ·d^-0.5 + causal mask)`, `O_h = P·V_g`.
//!
//! Heads are multiplied in place inside the `(B, T, N, d)` activations through strided GEMM
//! views; per-head results go through head-major scratch buffers, `(B, N, T, d)`, and are then
//! interleaved back, so every parallel task owns the memory it writes.

use rayon::prelude::*;

use crate::tensor::gemm::{matmul, Mat, Par};

/// Dimensions of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    /// Batch size.
    pub b: usize,
    /// Sequence length.
    pub t: usize,
    /// Query heads.
    pub nq: usize,
    /// Key/value heads.
    pub nkv: usize,
    /// Head dimension.
    pub d: usize,
}

impl AttnDims {
    fn group(&self) -> usize {
        self.nq / self.nkv
    }
}

/// Copies head-major `src` (B, N, T, d) into token-major `dst` (B, T, N, d).
pub(super) fn heads_to_tokens(
    dst: &mut [f32],
    src: &[f32],
    b: usize,
    t: usize,
    n: usize,
    d: usize,
) {
    dst.par_chunks_mut(n * d)
        .enumerate()
        .for_each(|(row, out)| {
            let (bi, ti) = (row / t, row % t);
            for h in 0..n {
                let s = ((bi * n + h) * t + ti) * d;
                out[h * d..(h + 1) * d].copy_from_slice(&src[s..s + d]);
            }
        });
    let _ = b;
}

/// out (B, T, Nq, d) and the probabilities att (B, Nq, T, T) from q (B, T, Nq, d) (after
/// q_norm and RoPE), k, v (B, T, Nkv, d). `scratch` is (B, Nq, T, d).
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    scratch: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
) {
    let AttnDims { t, nq, nkv, d, .. } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let r = dims.group();
    att.par_chunks_mut(t * t)
        .zip(scratch.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(bh, (p, o))| {
            let (bi, h) = (bh / nq, bh % nq);
            let g = h / r;
            let qh = Mat::strided(&q[bi * t * nq * d + h * d..], t, d, nq * d);
            let kg = Mat::strided(&k[bi * t * nkv * d + g * d..], t, d, nkv * d);
            let vg = Mat::strided(&v[bi * t * nkv * d + g * d..], t, d, nkv * d);
            matmul(p, t, qh, kg.t(), false, Par::Single);
            for (i, row) in p.chunks_mut(t).enumerate() {
                let valid = &mut row[..=i];
                let mut max = f32::NEG_INFINITY;
                for x in valid.iter_mut() {
                    *x *= scale;
                    max = max.max(*x);
                }
                let mut sum = 0.0f32;
                for x in valid.iter_mut() {
                    *x = crate::tensor::math::exp(*x - max);
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for x in valid.iter_mut() {
                    *x *= inv;
                }
                row[i + 1..].fill(0.0);
            }
            matmul(o, d, Mat::rm(p, t, t), vg, false, Par::Single);
        });
    heads_to_tokens(out, scratch, dims.b, t, nq, d);
}

/// Scratch buffers of [`attention_backward`].
pub struct AttnBackwardScratch<'a> {
    /// (B, Nq, T, T): gradient of the probabilities, then of the scores.
    pub datt: &'a mut [f32],
    /// (B, Nq, T, d)
    pub dq: &'a mut [f32],
    /// (B, Nkv, T, d)
    pub dk: &'a mut [f32],
    /// (B, Nkv, T, d)
    pub dv: &'a mut [f32],
}

/// dq (B, T, Nq, d), dk, dv (B, T, Nkv, d), all written, from dout (B, T, Nq, d).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: AttnBackwardScratch<'_>,
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    att: &[f32],
    dims: AttnDims,
) {
    let AttnDims { b, t, nq, nkv, d } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let r = dims.group();
    // One task per (batch, KV head): it owns the r query heads of its group.
    scratch
        .datt
        .par_chunks_mut(r * t * t)
        .zip(scratch.dq.par_chunks_mut(r * t * d))
        .zip(
            scratch
                .dk
                .par_chunks_mut(t * d)
                .zip(scratch.dv.par_chunks_mut(t * d)),
        )
        .enumerate()
        .for_each(|(bg, ((dp_group, dq_group), (dkg, dvg)))| {
            let (bi, g) = (bg / nkv, bg % nkv);
            let kg = Mat::strided(&k[bi * t * nkv * d + g * d..], t, d, nkv * d);
            let vg = Mat::strided(&v[bi * t * nkv * d + g * d..], t, d, nkv * d);
            for j in 0..r {
                let h = g * r + j;
                let p = &att[(bi * nq + h) * t * t..(bi * nq + h + 1) * t * t];
                let doh = Mat::strided(&dout[bi * t * nq * d + h * d..], t, d, nq * d);
                let qh = Mat::strided(&q[bi * t * nq * d + h * d..], t, d, nq * d);
                let ds = &mut dp_group[j * t * t..(j + 1) * t * t];
                // dV_g += Pᵀ·dO_h
                matmul(dvg, d, Mat::rm(p, t, t).t(), doh, j > 0, Par::Single);
                // dP = dO_h·V_gᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale
                matmul(ds, t, doh, vg.t(), false, Par::Single);
                for i in 0..t {
                    let (pr, dr) = (&p[i * t..(i + 1) * t], &mut ds[i * t..(i + 1) * t]);
                    let dot: f32 = (0..=i).map(|s| pr[s] * dr[s]).sum();
                    for s in 0..=i {
                        dr[s] = pr[s] * (dr[s] - dot) * scale;
                    }
                    dr[i + 1..].fill(0.0);
                }
                let dsm = Mat::rm(ds, t, t);
                // dQ_h = dS·K_g ; dK_g += dSᵀ·Q_h
                matmul(
                    &mut dq_group[j * t * d..(j + 1) * t * d],
                    d,
                    dsm,
                    kg,
                    false,
                    Par::Single,
                );
                matmul(dkg, d, dsm.t(), qh, j > 0, Par::Single);
            }
        });
    heads_to_tokens(dq, scratch.dq, b, t, nq, d);
    heads_to_tokens(dk, scratch.dk, b, t, nkv, d);
    heads_to_tokens(dv, scratch.dv, b, t, nkv, d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(q: &[f64], k: &[f64], v: &[f64], dm: AttnDims) -> Vec<f64> {
        let AttnDims { b, t, nq, nkv, d } = dm;
        let r = nq / nkv;
        let mut out = vec![0.0; b * t * nq * d];
        for bi in 0..b {
            for h in 0..nq {
                let g = h / r;
                for i in 0..t {
                    let qi = &q[((bi * t + i) * nq + h) * d..][..d];
                    let scores: Vec<f64> = (0..=i)
                        .map(|s| {
                            let ks = &k[((bi * t + s) * nkv + g) * d..][..d];
                            qi.iter().zip(ks).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for s in 0..=i {
                        let vs = &v[((bi * t + s) * nkv + g) * d..][..d];
                        for c in 0..d {
                            out[((bi * t + i) * nq + h) * d + c] += e[s] / z * vs[c];
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn forward_and_gradients_match_f64() {
        let dm = AttnDims {
            b: 2,
            t: 5,
            nq: 4,
            nkv: 2,
            d: 6,
        };
        let (nq_len, nkv_len) = (dm.b * dm.t * dm.nq * dm.d, dm.b * dm.t * dm.nkv * dm.d);
        let q = values(nq_len, 12);
        let k = values(nkv_len, 13);
        let v = values(nkv_len, 14);
        let lw = values(nq_len, 15);
        let mut out = vec![0.0; nq_len];
        let mut att = vec![0.0; dm.b * dm.nq * dm.t * dm.t];
        let mut scratch = vec![0.0; nq_len];
        attention_forward(&mut out, &mut att, &mut scratch, &q, &k, &v, dm);
        let (qs, ks, vs) = (f64s(&q), f64s(&k), f64s(&v));
        assert_close("out", &out, &reference(&qs, &ks, &vs, dm), 1e-6);
        let (mut dq, mut dk, mut dv) = (vec![0.0; nq_len], vec![0.0; nkv_len], vec![0.0; nkv_len]);
        let mut datt = vec![0.0; att.len()];
        let (mut s1, mut s2, mut s3) = (vec![0.0; nq_len], vec![0.0; nkv_len], vec![0.0; nkv_len]);
        let scratch = AttnBackwardScratch {
            datt: &mut datt,
            dq: &mut s1,
            dk: &mut s2,
            dv: &mut s3,
        };
        attention_backward(
            &mut dq, &mut dk, &mut dv, scratch, &lw, &q, &k, &v, &att, dm,
        );
        let gq = numeric_grad(&qs, &|x| dot(&reference(x, &ks, &vs, dm), &lw));
        let gk = numeric_grad(&ks, &|x| dot(&reference(&qs, x, &vs, dm), &lw));
        let gv = numeric_grad(&vs, &|x| dot(&reference(&qs, &ks, x, dm), &lw));
        assert_close("dq", &dq, &gq, 1e-5);
        assert_close("dk", &dk, &gk, 1e-5);
        assert_close("dv", &dv, &gv, 1e-5);
    }
}
