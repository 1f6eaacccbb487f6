//! GEMM throughput, f32 (the `gemm` crate) against bf16 inputs (`tensor::gemm_bf16`), for the
//! shapes of a 0.6B layer at 4096 tokens: `cargo run --release -p pretrain-runtime --example gemm_speed`.
use pretrain::tensor::gemm::{matmul_as, Compute, Mat, Par};
use std::time::Instant;
fn main() {
    for &(m, k, n, tb) in &[
        (1024, 64, 151936, true),
        (1024, 151936, 64, false),
        (4096usize, 1024usize, 3072usize, true),
        (4096, 3072, 1024, false),
        (1024, 4096, 3072, false),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0f32; m * n];
        for c in [Compute::F32, Compute::Bf16, Compute::F32, Compute::Bf16] {
            let bm = if tb {
                Mat::rm(&b, n, k).t()
            } else {
                Mat::rm(&b, k, n)
            };
            let t = Instant::now();
            let reps = 3;
            for _ in 0..reps {
                matmul_as(c, &mut out, n, Mat::rm(&a, m, k), bm, false, Par::Threads);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{m}x{k}x{n} {:?}: {:.3}s {:.1} GFLOP/s",
                c,
                s,
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
    }
}
