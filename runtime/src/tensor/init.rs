//! Deterministic random initialisation: normal samples from MT19937 (numpy's generator, see
//! `data::rng`) by the Box-Muller transform, so the same seed gives the same weights anywhere.

use crate::data::rng::RandomState;

/// Fills `out` with N(0, std^2) samples drawn from `rng`.
pub fn normal_(out: &mut [f32], std: f32, rng: &mut RandomState) {
    let mut i = 0;
    while i < out.len() {
        // 53-bit uniforms in (0, 1]: u1 must not be 0 for the logarithm.
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out[i] = (r * theta.cos()) as f32 * std;
        if i + 1 < out.len() {
            out[i + 1] = (r * theta.sin()) as f32 * std;
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_the_right_moments_and_is_reproducible() {
        let mut a = vec![0.0; 100_000];
        normal_(&mut a, 0.02, &mut RandomState::new(3));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 3e-4, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 3e-4, "{}", var.sqrt());
        let mut b = vec![0.0; 100_000];
        normal_(&mut b, 0.02, &mut RandomState::new(3));
        assert_eq!(a, b);
    }
}
