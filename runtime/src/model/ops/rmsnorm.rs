//! RMSNorm as Qwen3RMSNorm: `out = (x · rsqrt(mean(x²) + ε)) · w`, over the last dimension C.
//! Used for the layer norms (C = H) and, per head, for q_norm/k_norm (C = d).

use rayon::prelude::*;

/// out (N, C), rstd (N) from inp (N, C) and weight (C).
pub fn rmsnorm_forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    c: usize,
    eps: f32,
) {
    out.par_chunks_mut(c)
        .zip(rstd.par_iter_mut())
        .zip(inp.par_chunks(c))
        .for_each(|((o, r), x)| {
            let ms = x.iter().map(|&v| v * v).sum::<f32>() / c as f32;
            let s = 1.0 / (ms + eps).sqrt();
            *r = s;
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
                *o = (x * s) * w;
            }
        });
}

/// dinp (N, C) written; dweight (C) accumulated.
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    c: usize,
) {
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &s)| {
            // y = x̂·w with x̂ = x·s: dx = s·(g − x̂·mean(g·x̂)), g = dy·w.
            let mut dot = 0.0f32;
            for k in 0..c {
                dot += dy[k] * weight[k] * x[k] * s;
            }
            let mean = dot / c as f32;
            for k in 0..c {
                dx[k] = s * (dy[k] * weight[k] - x[k] * s * mean);
            }
        });
    // The weight gradient reduces over rows: fixed chunks of rows, then the partial sums added
    // in order, so the result depends neither on scheduling nor on the number of threads.
    let (rows, chunk) = (rstd.len(), 64);
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .map(|ci| {
            let mut acc = vec![0.0f32; c];
            for r in ci * chunk..((ci + 1) * chunk).min(rows) {
                let s = rstd[r];
                let (dy, x) = (&dout[r * c..(r + 1) * c], &inp[r * c..(r + 1) * c]);
                for k in 0..c {
                    acc[k] += dy[k] * x[k] * s;
                }
            }
            acc
        })
        .collect();
    for p in partials {
        for (d, v) in dweight.iter_mut().zip(p) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(x: &[f64], w: &[f64], c: usize, eps: f64) -> Vec<f64> {
        x.chunks(c)
            .flat_map(|row| {
                let s = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / c as f64 + eps).sqrt();
                row.iter()
                    .zip(w)
                    .map(move |(v, w)| v * s * w)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn weight_gradient_bits_do_not_depend_on_the_thread_count() {
        let (n, c) = (517, 24);
        let (x, dy) = (values(n * c, 7), values(n * c, 8));
        let w = values(c, 9);
        let mut rstd = vec![0.0; n];
        rmsnorm_forward(&mut vec![0.0; n * c], &mut rstd, &x, &w, c, 1e-6);
        let dw_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let mut dw = vec![0.0f32; c];
            pool.install(|| {
                rmsnorm_backward(&mut vec![0.0; n * c], &mut dw, &dy, &x, &w, &rstd, c)
            });
            dw.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(dw_with(1), dw_with(3));
        assert_eq!(dw_with(1), dw_with(8));
    }

    #[test]
    fn forward_and_gradients_match_f64() {
        let (n, c, eps) = (6, 8, 1e-6);
        let x = values(n * c, 4);
        let w: Vec<f32> = values(c, 5).iter().map(|v| 1.0 + 0.5 * v).collect();
        let lw = values(n * c, 6);
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm_forward(&mut out, &mut rstd, &x, &w, c, eps as f32);
        let (xs, ws) = (f64s(&x), f64s(&w));
        assert_close("out", &out, &reference(&xs, &ws, c, eps), 1e-6);
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        rmsnorm_backward(&mut dx, &mut dw, &lw, &x, &w, &rstd, c);
        let gx = numeric_grad(&xs, &|v| dot(&reference(v, &ws, c, eps), &lw));
        let gw = numeric_grad(&ws, &|v| dot(&reference(&xs, v, c, eps), &lw));
        assert_close("dx", &dx, &gx, 1e-5);
        assert_close("dw", &dw, &gw, 1e-5);
    }
}
