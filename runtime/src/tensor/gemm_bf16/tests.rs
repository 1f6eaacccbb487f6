use super::*;
use crate::tensor::bf16::round_bf16;

fn values(len: usize, seed: u32) -> Vec<f32> {
    // Magnitudes over several octaves, both signs.
    (0..len)
        .map(|i| {
            let x = ((i as f32 + 1.0) * (0.37 + seed as f32 * 0.11)).sin();
            x * (1.0 + (i % 7) as f32 * 3.0)
        })
        .collect()
}

/// The product of the bf16-rounded inputs in f64.
fn reference(a: Mat<'_>, b: Mat<'_>) -> Vec<f64> {
    let mut out = vec![0.0; a.rows * b.cols];
    for i in 0..a.rows {
        for j in 0..b.cols {
            out[i * b.cols + j] = (0..a.cols)
                .map(|p| {
                    let x = round_bf16(a.data[i * a.rs + p * a.cs]) as f64;
                    x * round_bf16(b.data[p * b.rs + j * b.cs]) as f64
                })
                .sum();
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Shapes across every blocking edge: partial micro-tiles, odd depth, more than one KC slice,
/// MC block and NC block; row-major, transposed and strided operands; accumulation.
#[test]
fn products_of_rounded_inputs_in_f32() {
    for &(m, k, n) in &[(1, 1, 1), (13, 7, 33), (97, 515, 70), (25, 64, 2049)] {
        let a = values(m * k, 1);
        let bt = values(n * k, 2);
        let (am, bm) = (Mat::rm(&a, m, k), Mat::rm(&bt, n, k).t());
        let want = reference(am, bm);
        let mut out = vec![0.0f32; m * n];
        matmul_bf16(&mut out, n, am, bm, false, Par::Threads);
        let scale = (k as f64).sqrt() * 1e-6 * want.iter().fold(1.0f64, |x, w| x.max(w.abs()));
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= scale,
                "{m}x{k}x{n} [{i}]: {g} vs {w}"
            );
        }
        // A transposed view on the left, a row-major one on the right, into a wider C.
        let at = values(k * m, 3);
        let b = values(k * n, 4);
        let (am, bm) = (Mat::rm(&at, k, m).t(), Mat::rm(&b, k, n));
        let mut wide = vec![1.0f32; m * (n + 3)];
        matmul_bf16(&mut wide, n + 3, am, bm, true, Par::Single);
        for (i, w) in reference(am, bm).iter().enumerate() {
            let g = wide[(i / n) * (n + 3) + i % n] as f64;
            assert!(
                (g - (w + 1.0)).abs() <= scale.max(1e-6),
                "accumulate {m}x{k}x{n} [{i}]"
            );
        }
        assert!(
            wide.chunks(n + 3).all(|row| row[n..] == [1.0; 3]),
            "padding columns untouched"
        );
    }
}

/// The portable kernel computes what `vdpbf16ps` does, bit for bit: the same training on CPUs
/// with and without AVX512-BF16 (and the qemu run of the parity tests exercises the former).
#[test]
fn portable_kernel_has_the_bits_of_vdpbf16ps() {
    if !has_native_bf16() {
        eprintln!("no AVX512-BF16 here: the portable kernel is the one in use");
        return;
    }
    let (m, k, n) = (37, 301, 75);
    let mut a = values(m * k, 5);
    // Large, tiny and subnormal values and cancellations, as training meets them.
    a[0] = 1e30;
    a[1] = -1e30;
    a[2] = 1e-39;
    a[3] = 3e-20;
    let mut b = values(k * n, 6);
    b[0] = 1e-20;
    b[n] = 2e-20;
    let (am, bm) = (Mat::rm(&a, m, k), Mat::rm(&b, k, n));
    let (mut native, mut portable) = (vec![0.5f32; m * n], vec![0.5f32; m * n]);
    matmul_with(kernel::select(), &mut native, n, am, bm, true, Par::Threads);
    let port = kernel::portable_kernel();
    matmul_with(port, &mut portable, n, am, bm, true, Par::Threads);
    let diff = native
        .iter()
        .zip(&portable)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(diff, 0, "{diff} of {} elements differ", m * n);
}

#[test]
fn bits_do_not_depend_on_the_thread_count() {
    let (m, k, n) = (300, 700, 150);
    let a = values(m * k, 7);
    let b = values(k * n, 8);
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let mut out = vec![0.0f32; m * n];
        pool.install(|| {
            let (am, bm) = (Mat::rm(&a, m, k), Mat::rm(&b, k, n));
            matmul_bf16(&mut out, n, am, bm, false, Par::Threads)
        });
        bits(&out)
    };
    let one = with(1);
    assert!(one == with(3), "1 vs 3 threads");
    assert!(one == with(8), "1 vs 8 threads");
}
