//! Test support: f64 finite differences and tolerant comparisons.

/// Central finite-difference gradient of `f` at `x` (f64 throughout).
pub fn numeric_grad(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let fp = f(&xp);
            xp[i] = orig - h;
            let fm = f(&xp);
            xp[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Asserts `got` (f32) matches `want` (f64) within `rtol` of the largest magnitude.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-12f64, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / scale;
        assert!(
            err <= rtol,
            "{what}[{i}]: got {g}, want {w} (rel err {err:e} > {rtol:e})"
        );
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut rs = crate::data::rng::RandomState::new(seed);
    (0..n)
        .map(|_| (rs.next_u32() as f64 / 2f64.powi(31) - 1.0) as f32)
        .collect()
}

/// f32 -> f64 copy.
pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Σ out·w: a scalar loss with fixed random weights `w`, so every output element matters.
pub fn dot(out: &[f64], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(o, &w)| o * w as f64).sum()
}
