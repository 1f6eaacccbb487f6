//! Causal grouped-query attention in O(T) memory, FlashAttention-2 style: the same function as
//! [`super::attention`] (`P = softmax(Q_h·K_gᵀ·d^-0.5 + causal mask)`, `O_h = P·V_g`), computed
//! over tiles of [`TILE`] queries × [`TILE`] keys with an online softmax, keeping of the
//! probabilities only each row's log-sum-exp `lse` (B, Nq, T). The backward recomputes every
//! probability tile from `q`, `k` and `lse`; nothing of size T × T exists at any time.
//!
//! Parallel tasks: the forward runs one task per (batch, query head); the backward one per
//! (batch, KV head), which owns the gradients of its K/V head and of the query heads sharing
//! it, so every task writes only its own memory. Within a task the order of every sum is
//! fixed, so results do not depend on the thread count.

use rayon::prelude::*;

use super::attention::{heads_to_tokens, AttnDims};
use crate::tensor::gemm::{matmul, Mat, Par};
use crate::tensor::math::exp;

/// Queries and keys per tile.
pub const TILE: usize = 64;

/// Head `h` of (B, T, N, d) activations, rows `from..from + rows` of batch `bi`, as a strided view.
fn rows_of(
    x: &[f32],
    bi: usize,
    h: usize,
    from: usize,
    rows: usize,
    dm: (usize, usize, usize),
) -> Mat<'_> {
    let (t, n, d) = dm;
    Mat::strided(&x[((bi * t + from) * n + h) * d..], rows, d, n * d)
}

/// Scales the scores of one tile row `s` (keys `kj..kj + s.len()`, query position `i`) and
/// masks the keys after `i`; returns the row maximum over the valid keys (−∞ when none).
fn scale_and_mask(s: &mut [f32], i: usize, kj: usize, scale: f32) -> f32 {
    let valid = (i + 1).saturating_sub(kj).min(s.len());
    let mut max = f32::NEG_INFINITY;
    for x in &mut s[..valid] {
        *x *= scale;
        max = max.max(*x);
    }
    s[valid..].fill(f32::NEG_INFINITY);
    max
}

/// out (B, T, Nq, d) and the row log-sum-exps `lse` (B, Nq, T) from q (B, T, Nq, d) (after
/// q_norm and RoPE), k, v (B, T, Nkv, d). `scratch` is (B, Nq, T, d).
pub fn flash_attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
) {
    let AttnDims { t, nq, nkv, d, .. } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let r = nq / nkv;
    scratch
        .par_chunks_mut(t * d)
        .zip(lse.par_chunks_mut(t))
        .enumerate()
        .for_each(|(bh, (o, lse))| {
            let (bi, h) = (bh / nq, bh % nq);
            let g = h / r;
            let mut s = vec![0.0f32; TILE * TILE];
            let (mut m, mut l) = ([0.0f32; TILE], [0.0f32; TILE]);
            for qi in (0..t).step_by(TILE) {
                let br = TILE.min(t - qi);
                let oi = &mut o[qi * d..(qi + br) * d];
                oi.fill(0.0);
                m[..br].fill(f32::NEG_INFINITY);
                l[..br].fill(0.0);
                let qv = rows_of(q, bi, h, qi, br, (t, nq, d));
                for kj in (0..qi + br).step_by(TILE) {
                    let bc = TILE.min(t - kj);
                    let st = &mut s[..br * bc];
                    let kv = rows_of(k, bi, g, kj, bc, (t, nkv, d));
                    matmul(st, bc, qv, kv.t(), false, Par::Single);
                    for (row, srow) in st.chunks_mut(bc).enumerate() {
                        let max = scale_and_mask(srow, qi + row, kj, scale);
                        let m_new = m[row].max(max);
                        // The first tile always holds key 0, so m_new is finite from here on.
                        let keep = if m[row] == f32::NEG_INFINITY {
                            0.0
                        } else {
                            exp(m[row] - m_new)
                        };
                        let mut sum = 0.0f32;
                        for x in srow.iter_mut() {
                            *x = if *x == f32::NEG_INFINITY {
                                0.0
                            } else {
                                exp(*x - m_new)
                            };
                            sum += *x;
                        }
                        l[row] = l[row] * keep + sum;
                        m[row] = m_new;
                        for x in &mut oi[row * d..(row + 1) * d] {
                            *x *= keep;
                        }
                    }
                    let vv = rows_of(v, bi, g, kj, bc, (t, nkv, d));
                    matmul(oi, d, Mat::rm(st, br, bc), vv, true, Par::Single);
                }
                for row in 0..br {
                    let inv = 1.0 / l[row];
                    for x in &mut oi[row * d..(row + 1) * d] {
                        *x *= inv;
                    }
                    lse[qi + row] = m[row] + l[row].ln();
                }
            }
        });
    heads_to_tokens(out, scratch, dims.b, t, nq, d);
}

/// Scratch buffers of [`flash_attention_backward`], head-major.
pub struct FlashBackwardScratch<'a> {
    /// (B, Nq, T, d)
    pub dq: &'a mut [f32],
    /// (B, Nkv, T, d)
    pub dk: &'a mut [f32],
    /// (B, Nkv, T, d)
    pub dv: &'a mut [f32],
}

/// dq (B, T, Nq, d), dk, dv (B, T, Nkv, d), all written, from dout (B, T, Nq, d) and what the
/// forward left: its output `out` and `lse`.
#[allow(clippy::too_many_arguments)] // the kernel's tensors, each a different one
pub fn flash_attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: FlashBackwardScratch<'_>,
    dout: &[f32],
    out: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    dims: AttnDims,
) {
    let AttnDims { b, t, nq, nkv, d } = dims;
    let r = nq / nkv;
    scratch
        .dq
        .par_chunks_mut(r * t * d)
        .zip(
            scratch
                .dk
                .par_chunks_mut(t * d)
                .zip(scratch.dv.par_chunks_mut(t * d)),
        )
        .enumerate()
        .for_each(|(bg, (dq_group, (dkg, dvg)))| {
            let (bi, g) = (bg / nkv, bg % nkv);
            dkg.fill(0.0);
            dvg.fill(0.0);
            for j in 0..r {
                let h = g * r + j;
                let head = HeadGrads {
                    dq: &mut dq_group[j * t * d..(j + 1) * t * d],
                    dk: &mut *dkg,
                    dv: &mut *dvg,
                };
                let lse = &lse[(bi * nq + h) * t..(bi * nq + h + 1) * t];
                let ins = HeadInputs {
                    dout,
                    out,
                    q,
                    k,
                    v,
                    lse,
                };
                head_backward(head, &ins, bi, h, g, dims);
            }
        });
    heads_to_tokens(dq, scratch.dq, b, t, nq, d);
    heads_to_tokens(dk, scratch.dk, b, t, nkv, d);
    heads_to_tokens(dv, scratch.dv, b, t, nkv, d);
}

/// One query head's gradient (written) and its K/V head's (accumulated), head-major (T, d).
struct HeadGrads<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

/// The backward's inputs, token-major as the forward had them; `lse` is the head's (T).
struct HeadInputs<'a> {
    dout: &'a [f32],
    out: &'a [f32],
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    lse: &'a [f32],
}

/// The backward of query head `h` (KV head `g`) of batch `bi`, tile by tile: for query tile i
/// and key tile j ≤ i, `P = exp(S − lse)`, `dV_j += Pᵀ·dO_i`, `dP = dO_i·V_jᵀ`,
/// `dS = P ⊙ (dP − D_i)·d^-0.5` with `D = rowsum(dO ⊙ O)`, `dQ_i += dS·K_j`, `dK_j += dSᵀ·Q_i`.
fn head_backward(
    gr: HeadGrads<'_>,
    x: &HeadInputs<'_>,
    bi: usize,
    h: usize,
    g: usize,
    dm: AttnDims,
) {
    let AttnDims { t, nq, nkv, d, .. } = dm;
    let scale = 1.0 / (d as f32).sqrt();
    let (qd, kvd) = ((t, nq, d), (t, nkv, d));
    gr.dq.fill(0.0);
    let mut p = vec![0.0f32; TILE * TILE];
    let mut ds = vec![0.0f32; TILE * TILE];
    let mut dsum = [0.0f32; TILE];
    for qi in (0..t).step_by(TILE) {
        let br = TILE.min(t - qi);
        for (row, dr) in dsum[..br].iter_mut().enumerate() {
            let at = ((bi * t + qi + row) * nq + h) * d;
            let (o, dout) = (&x.out[at..at + d], &x.dout[at..at + d]);
            *dr = o.iter().zip(dout).map(|(a, b)| a * b).sum();
        }
        let qv = rows_of(x.q, bi, h, qi, br, qd);
        let dov = rows_of(x.dout, bi, h, qi, br, qd);
        for kj in (0..qi + br).step_by(TILE) {
            let bc = TILE.min(t - kj);
            let (pt, dst) = (&mut p[..br * bc], &mut ds[..br * bc]);
            let kv = rows_of(x.k, bi, g, kj, bc, kvd);
            let vv = rows_of(x.v, bi, g, kj, bc, kvd);
            matmul(pt, bc, qv, kv.t(), false, Par::Single);
            for (row, prow) in pt.chunks_mut(bc).enumerate() {
                scale_and_mask(prow, qi + row, kj, scale);
                let lse = x.lse[qi + row];
                for v in prow.iter_mut() {
                    *v = if *v == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp(*v - lse)
                    };
                }
            }
            let pm = Mat::rm(pt, br, bc);
            matmul(
                &mut gr.dv[kj * d..(kj + bc) * d],
                d,
                pm.t(),
                dov,
                true,
                Par::Single,
            );
            matmul(dst, bc, dov, vv.t(), false, Par::Single);
            for (row, (drow, prow)) in dst.chunks_mut(bc).zip(pt.chunks(bc)).enumerate() {
                for (dv, &pv) in drow.iter_mut().zip(prow) {
                    *dv = pv * (*dv - dsum[row]) * scale;
                }
            }
            let dsm = Mat::rm(dst, br, bc);
            matmul(
                &mut gr.dq[qi * d..(qi + br) * d],
                d,
                dsm,
                kv,
                true,
                Par::Single,
            );
            matmul(
                &mut gr.dk[kj * d..(kj + bc) * d],
                d,
                dsm.t(),
                qv,
                true,
                Par::Single,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::attention::{attention_backward, attention_forward, AttnBackwardScratch};
    use super::*;
    use crate::model::ops::gradcheck::*;

    /// The flash kernel forward and backward: out, dq, dk, dv.
    fn flash(dm: AttnDims, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> [Vec<f32>; 4] {
        let (nq_len, nkv_len) = (q.len(), k.len());
        let z = |n: usize| vec![0.0f32; n];
        let (mut out, mut lse, mut sc) = (z(nq_len), z(dm.b * dm.nq * dm.t), z(nq_len));
        flash_attention_forward(&mut out, &mut lse, &mut sc, q, k, v, dm);
        let (mut dq, mut dk, mut dv) = (z(nq_len), z(nkv_len), z(nkv_len));
        let (mut s1, mut s2, mut s3) = (z(nq_len), z(nkv_len), z(nkv_len));
        let scratch = FlashBackwardScratch {
            dq: &mut s1,
            dk: &mut s2,
            dv: &mut s3,
        };
        flash_attention_backward(
            &mut dq, &mut dk, &mut dv, scratch, dout, &out, q, k, v, &lse, dm,
        );
        [out, dq, dk, dv]
    }

    /// Runs both kernels on the same inputs; returns (explicit, flash) of out, dq, dk, dv.
    fn both(dm: AttnDims, seed: u32) -> [(Vec<f32>, Vec<f32>); 4] {
        let (nq_len, nkv_len) = (dm.b * dm.t * dm.nq * dm.d, dm.b * dm.t * dm.nkv * dm.d);
        let q = values(nq_len, seed);
        let k = values(nkv_len, seed + 1);
        let v = values(nkv_len, seed + 2);
        let dout = values(nq_len, seed + 3);
        let z = |n: usize| vec![0.0f32; n];
        // Explicit.
        let (mut out_e, mut att, mut sc) = (z(nq_len), z(dm.b * dm.nq * dm.t * dm.t), z(nq_len));
        attention_forward(&mut out_e, &mut att, &mut sc, &q, &k, &v, dm);
        let (mut dq_e, mut dk_e, mut dv_e) = (z(nq_len), z(nkv_len), z(nkv_len));
        let (mut datt, mut s1, mut s2, mut s3) = (z(att.len()), z(nq_len), z(nkv_len), z(nkv_len));
        let scratch = AttnBackwardScratch {
            datt: &mut datt,
            dq: &mut s1,
            dk: &mut s2,
            dv: &mut s3,
        };
        attention_backward(
            &mut dq_e, &mut dk_e, &mut dv_e, scratch, &dout, &q, &k, &v, &att, dm,
        );
        let [out_f, dq_f, dk_f, dv_f] = flash(dm, &q, &k, &v, &dout);
        [(out_e, out_f), (dq_e, dq_f), (dk_e, dk_f), (dv_e, dv_f)]
    }

    #[test]
    fn matches_the_explicit_kernel_across_tile_edges() {
        // T below, at and across tile boundaries (one, two and three tiles, a partial last one).
        for (t, nq, nkv, d) in [(5, 4, 2, 6), (64, 2, 2, 8), (130, 4, 1, 16), (200, 6, 3, 8)] {
            let dm = AttnDims {
                b: 2,
                t,
                nq,
                nkv,
                d,
            };
            for (name, (e, f)) in ["out", "dq", "dk", "dv"].iter().zip(both(dm, 40)) {
                let worst = e
                    .iter()
                    .zip(&f)
                    .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
                    .fold(0.0f32, f32::max);
                assert!(worst < 2e-5, "T {t}: {name} differs by {worst}");
            }
        }
    }

    #[test]
    fn gradients_match_f64_finite_differences() {
        let dm = AttnDims {
            b: 1,
            t: 70,
            nq: 2,
            nkv: 1,
            d: 4,
        };
        let (nq_len, nkv_len) = (dm.t * dm.nq * dm.d, dm.t * dm.nkv * dm.d);
        let (q, k, v, lw) = (
            values(nq_len, 3),
            values(nkv_len, 4),
            values(nkv_len, 5),
            values(nq_len, 6),
        );
        let reference = |q: &[f64], k: &[f64], v: &[f64]| -> Vec<f64> {
            let (t, nq, d) = (dm.t, dm.nq, dm.d);
            let mut out = vec![0.0; t * nq * d];
            for h in 0..nq {
                for i in 0..t {
                    let qi = &q[(i * nq + h) * d..][..d];
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[j * d..][..d];
                            qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for c in 0..d {
                            out[(i * nq + h) * d + c] += ej / z * v[j * d + c];
                        }
                    }
                }
            }
            out
        };
        let [out, dq, dk, dv] = flash(dm, &q, &k, &v, &lw);
        let (qs, ks, vs) = (f64s(&q), f64s(&k), f64s(&v));
        assert_close("out", &out, &reference(&qs, &ks, &vs), 1e-6);
        let gq = numeric_grad(&qs, &|x| dot(&reference(x, &ks, &vs), &lw));
        let gk = numeric_grad(&ks, &|x| dot(&reference(&qs, x, &vs), &lw));
        let gv = numeric_grad(&vs, &|x| dot(&reference(&qs, &ks, x), &lw));
        assert_close("dq", &dq, &gq, 1e-5);
        assert_close("dk", &dk, &gk, 1e-5);
        assert_close("dv", &dv, &gv, 1e-5);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let dm = AttnDims {
            b: 2,
            t: 150,
            nq: 4,
            nkv: 2,
            d: 8,
        };
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| both(dm, 7))
        };
        let (one, three) = (run(1), run(3));
        for ((_, a), (_, b)) in one.iter().zip(three.iter()) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
