//! Linear layer without bias, as `nn.Linear(bias=False)`: `out = inp · Wᵀ`, W stored `[OC, C]`.

use crate::tensor::gemm::{matmul_as, Compute, Mat, Par};

/// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ, with inputs in `compute`'s precision.
pub fn linear_forward(
    compute: Compute,
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    matmul_as(
        compute,
        out,
        oc,
        Mat::rm(inp, n, c),
        Mat::rm(weight, oc, c).t(),
        false,
        Par::Threads,
    );
}

/// dinp (N, C) = dout (N, OC) · weight (OC, C) (written, or added with `accumulate_dinp`);
/// dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C); inputs in `compute`'s precision (the
/// gradient `dout` too, as autocast's bf16 outputs give bf16 gradients).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    compute: Compute,
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    accumulate_dinp: bool,
) {
    matmul_as(
        compute,
        dinp,
        c,
        Mat::rm(dout, n, oc),
        Mat::rm(weight, oc, c),
        accumulate_dinp,
        Par::Threads,
    );
    matmul_as(
        compute,
        dweight,
        c,
        Mat::rm(dout, n, oc).t(),
        Mat::rm(inp, n, c),
        true,
        Par::Threads,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(x: &[f64], w: &[f64], n: usize, c: usize, oc: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * oc];
        for i in 0..n {
            for o in 0..oc {
                out[i * oc + o] = (0..c).map(|k| x[i * c + k] * w[o * c + k]).sum();
            }
        }
        out
    }

    #[test]
    fn forward_and_gradients_match_f64() {
        let (n, c, oc) = (5, 7, 3);
        let x = values(n * c, 1);
        let w = values(oc * c, 2);
        let lw = values(n * oc, 3);
        let mut out = vec![0.0; n * oc];
        linear_forward(Compute::F32, &mut out, &x, &w, n, c, oc);
        assert_close(
            "out",
            &out,
            &reference(&f64s(&x), &f64s(&w), n, c, oc),
            1e-6,
        );
        let mut dx = vec![0.0; n * c];
        let mut dw = vec![0.0; oc * c];
        linear_backward(Compute::F32, &mut dx, &mut dw, &lw, &x, &w, n, c, oc, false);
        let (xs, ws) = (f64s(&x), f64s(&w));
        let gx = numeric_grad(&xs, &|xv| dot(&reference(xv, &ws, n, c, oc), &lw));
        let gw = numeric_grad(&ws, &|wv| dot(&reference(&xs, wv, n, c, oc), &lw));
        assert_close("dx", &dx, &gx, 1e-6);
        assert_close("dw", &dw, &gw, 1e-6);
    }
}
