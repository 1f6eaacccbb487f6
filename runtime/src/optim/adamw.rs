//! AdamW with decoupled weight decay, as `torch.optim.AdamW`, over flat buffers, plus global
//! gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`.

use rayon::prelude::*;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Decoupled weight decay (applied to decaying parameters only).
    pub weight_decay: f32,
}

/// First and second moments, laid out like the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    /// m.
    pub m: Vec<f32>,
    /// v.
    pub v: Vec<f32>,
    /// Steps taken.
    pub step: u64,
}

impl AdamWState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> AdamWState {
        AdamWState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        }
    }
}

const CHUNK: usize = 1 << 14;

/// One update of `params` from `grads`. `decay` gives, per parameter range `(offset, len)`,
/// whether weight decay applies. Matches torch's AdamW (non-fused, non-amsgrad):
/// `p *= 1 − lr·wd; m += (g − m)(1−β1); v = β2 v + (1−β2) g²;
/// p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + ε)`.
pub fn adamw_step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut AdamWState,
    decay: &[(usize, usize, bool)],
    cfg: &AdamWConfig,
    lr: f32,
) {
    state.step += 1;
    let t = state.step as i32;
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
    let step_size = lr / bc1;
    for &(offset, len, decays) in decay {
        let wd = if decays { cfg.weight_decay } else { 0.0 };
        let range = offset..offset + len;
        params[range.clone()]
            .par_chunks_mut(CHUNK)
            .zip(grads[range.clone()].par_chunks(CHUNK))
            .zip(state.m[range.clone()].par_chunks_mut(CHUNK))
            .zip(state.v[range].par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for k in 0..p.len() {
                    p[k] *= 1.0 - lr * wd;
                    // Written as torch evaluates it (lerp_, addcmul_, addcdiv_), so the
                    // rounding matches too.
                    m[k] += (g[k] - m[k]) * (1.0 - cfg.beta1);
                    v[k] = v[k] * cfg.beta2 + (1.0 - cfg.beta2) * (g[k] * g[k]);
                    let denom = v[k].sqrt() / bc2_sqrt + cfg.eps;
                    p[k] += -step_size * (m[k] / denom);
                }
            });
    }
}

/// The global L2 norm of `grads`, summed per chunk in f64 and combined in order (deterministic).
pub fn grad_norm(grads: &[f32]) -> f32 {
    let partial: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum())
        .collect();
    partial.iter().sum::<f64>().sqrt() as f32
}

/// Scales `grads` so their norm is at most `max_norm` (torch: `clip_coef = max_norm / (norm +
/// 1e-6)`, applied when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    clip_to(grads, max_norm, norm);
    norm
}

/// Scales `grads`, whose (possibly cross-rank) norm is `norm`, as [`clip_grad_norm`] does.
pub fn clip_to(grads: &mut [f32], max_norm: f32, norm: f32) {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads
            .par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_step() {
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut p = vec![1.0f32, -2.0];
        let g = vec![0.5f32, 0.25];
        let mut st = AdamWState::new(2);
        adamw_step(
            &mut p,
            &g,
            &mut st,
            &[(0, 1, true), (1, 1, false)],
            &cfg,
            0.01,
        );
        // First step: m̂ = g, v̂ = g², update = lr · g/|g| = lr · sign(g) (up to eps).
        assert!(
            (p[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{}",
            p[0]
        );
        assert!((p[1] - (-2.0 - 0.01)).abs() < 1e-6, "{}", p[1]);
        let mut gg = vec![3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&mut gg, 1.0), 5.0);
        assert!((grad_norm(&gg) - 1.0).abs() < 1e-5);
    }
}
