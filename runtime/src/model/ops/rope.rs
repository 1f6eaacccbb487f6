//! Rotary position embedding, non-interleaved ("rotate_half") as in HF Qwen3: element j of a head
//! pairs with element j + d/2 and both rotate by `pos · inv_freq[j]`,
//! `inv_freq[j] = 1 / θ^(2j/d)` computed in f32.

use rayon::prelude::*;

/// cos/sin tables for the given positions: (N, d/2) each, row n for `positions[n]`.
pub fn rope_tables(positions: &[i64], d: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    // HF: 1.0 / (base ** (arange(0, d, 2).float() / d)), in f32.
    let inv_freq: Vec<f32> = (0..half)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / d as f32))
        .collect();
    let mut cos = vec![0.0; positions.len() * half];
    let mut sin = vec![0.0; positions.len() * half];
    for (n, &p) in positions.iter().enumerate() {
        for j in 0..half {
            let angle = p as f32 * inv_freq[j];
            cos[n * half + j] = angle.cos();
            sin[n * half + j] = angle.sin();
        }
    }
    (cos, sin)
}

/// Rotates x (N, heads, d) in place; cos/sin (N, d/2) from [`rope_tables`].
pub fn rope_forward(x: &mut [f32], cos: &[f32], sin: &[f32], heads: usize, d: usize) {
    rotate(x, cos, sin, heads, d, 1.0);
}

/// The inverse rotation of the gradient dx (N, heads, d), in place.
pub fn rope_backward(dx: &mut [f32], cos: &[f32], sin: &[f32], heads: usize, d: usize) {
    rotate(dx, cos, sin, heads, d, -1.0);
}

fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], heads: usize, d: usize, sign: f32) {
    let half = d / 2;
    x.par_chunks_mut(heads * d)
        .enumerate()
        .for_each(|(n, row)| {
            let (c, s) = (
                &cos[n * half..(n + 1) * half],
                &sin[n * half..(n + 1) * half],
            );
            for head in row.chunks_mut(d) {
                let (a, b) = head.split_at_mut(half);
                for j in 0..half {
                    let (x1, x2) = (a[j], b[j]);
                    let sn = sign * s[j];
                    a[j] = x1 * c[j] - x2 * sn;
                    b[j] = x2 * c[j] + x1 * sn;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::gradcheck::*;

    fn reference(x: &[f64], pos: &[i64], heads: usize, d: usize, theta: f64) -> Vec<f64> {
        let half = d / 2;
        let mut out = x.to_vec();
        for (n, &p) in pos.iter().enumerate() {
            for h in 0..heads {
                let base = (n * heads + h) * d;
                for j in 0..half {
                    let a = p as f64 / theta.powf((2 * j) as f64 / d as f64);
                    let (x1, x2) = (x[base + j], x[base + j + half]);
                    out[base + j] = x1 * a.cos() - x2 * a.sin();
                    out[base + j + half] = x2 * a.cos() + x1 * a.sin();
                }
            }
        }
        out
    }

    #[test]
    fn forward_and_gradients_match_f64() {
        let (heads, d, theta) = (2, 8, 10_000.0);
        let pos = [0i64, 1, 5, 17];
        let x = values(pos.len() * heads * d, 10);
        let lw = values(x.len(), 11);
        let (cos, sin) = rope_tables(&pos, d, theta as f32);
        let mut y = x.clone();
        rope_forward(&mut y, &cos, &sin, heads, d);
        let xs = f64s(&x);
        assert_close("out", &y, &reference(&xs, &pos, heads, d, theta), 1e-6);
        let mut dx = lw.clone();
        rope_backward(&mut dx, &cos, &sin, heads, d);
        let g = numeric_grad(&xs, &|v| dot(&reference(v, &pos, heads, d, theta), &lw));
        assert_close("dx", &dx, &g, 1e-5);
    }
}
