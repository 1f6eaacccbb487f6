//! The gated MLP activation: `out = silu(gate) · up`, silu(x) = x·σ(x).

use rayon::prelude::*;

const CHUNK: usize = 4096;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + crate::tensor::math::exp(-x))
}

/// out (N, F) from gate (N, F) and up (N, F).
pub fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .for_each(|((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
}

/// dgate, dup (N, F) written from dout (N, F).
pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(((dg, du), dy), (g, u))| {
            for k in 0..dg.len() {
                let s = sigmoid(g[k]);
                let silu = g[k] * s;
                du[k] = dy[k] * silu;
                dg[k] = dy[k] * u[k] * s * (1.0 + g[k] * (1.0 - s));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(g: &[f64], u: &[f64]) -> Vec<f64> {
        g.iter()
            .zip(u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect()
    }

    #[test]
    fn forward_and_gradients_match_f64() {
        let n = 40;
        let g: Vec<f32> = values(n, 7).iter().map(|v| v * 4.0).collect();
        let u = values(n, 8);
        let lw = values(n, 9);
        let mut out = vec![0.0; n];
        swiglu_forward(&mut out, &g, &u);
        let (gs, us) = (f64s(&g), f64s(&u));
        assert_close("out", &out, &reference(&gs, &us), 1e-6);
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&mut dg, &mut du, &lw, &g, &u);
        assert_close(
            "dgate",
            &dg,
            &numeric_grad(&gs, &|v| dot(&reference(v, &us), &lw)),
            1e-5,
        );
        assert_close(
            "dup",
            &du,
            &numeric_grad(&us, &|v| dot(&reference(&gs, v), &lw)),
            1e-5,
        );
    }
}
