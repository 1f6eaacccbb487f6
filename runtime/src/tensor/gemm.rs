//! Matrix products through the `gemm` crate (AVX-512 kernels with its `x86-v4` feature, chosen at
//! run time, so the binary also runs on CPUs without AVX-512).
//!
//! Matrices are described by a slice plus row and column strides, so that heads inside a
//! `(B, T, N, d)` activation can be multiplied in place without copies.

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows x cols` matrix.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// A row-major `rows x cols` matrix whose rows are `rs` apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Mat<'a> {
        Mat {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Mat<'a> {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// Whether a product may use several threads (`Threads`) or must stay on the calling thread
/// (`Single`, for products issued from inside an already parallel loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// All threads of the current rayon pool.
    Threads,
    /// The calling thread only.
    Single,
}

/// The element type the inputs of a product are rounded to (`compute_dtype`); sums are f32
/// either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// f32 inputs: the `gemm` crate.
    F32,
    /// bf16-rounded inputs: [`super::gemm_bf16`].
    Bf16,
}

/// [`matmul`] with inputs in `compute`'s precision.
pub fn matmul_as(
    compute: Compute,
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
    par: Par,
) {
    match compute {
        Compute::F32 => matmul(dst, dst_rs, a, b, accumulate, par),
        Compute::Bf16 => super::gemm_bf16::matmul_bf16(dst, dst_rs, a, b, accumulate, par),
    }
}

/// Checks that the views fit their slices (panics otherwise: a programming error, never
/// input) and handles the empty cases: returns whether a product remains to be computed.
pub(super) fn check_shapes(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(a.span() <= a.data.len(), "lhs view exceeds its slice");
    assert!(b.span() <= b.data.len(), "rhs view exceeds its slice");
    let dst_span = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * dst_rs + n
    };
    assert!(dst_span <= dst.len(), "dst view exceeds its slice");
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return false;
    }
    true
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major `m x n` with row stride
/// `dst_rs`. Panics if the views do not fit their slices (a programming error, never input).
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat<'_>, b: Mat<'_>, accumulate: bool, par: Par) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !check_shapes(dst, dst_rs, a, b, accumulate) {
        return;
    }
    let parallelism = match par {
        Par::Threads if rayon::current_num_threads() > 1 => {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the asserts above prove that every element the three strided views address lies
    // inside its slice; `dst` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                out[i * b.cols + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn strided_and_transposed_products() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..42).map(|i| (i as f32 * 0.11).cos()).collect();
        // a as 5x7, b as 7x6; and b^T stored as 6x7.
        let (am, bm) = (Mat::rm(&a, 5, 7), Mat::rm(&b, 7, 6));
        let mut out = vec![0.0; 30];
        matmul(&mut out, 6, am, bm, false, Par::Threads);
        for (x, y) in out.iter().zip(naive(am, bm)) {
            assert!((x - y).abs() < 1e-5);
        }
        let bt = Mat::rm(&b, 6, 7).t();
        matmul(&mut out, 6, am, bt, false, Par::Single);
        for (x, y) in out.iter().zip(naive(am, bt)) {
            assert!((x - y).abs() < 1e-5);
        }
        let before = out.clone();
        matmul(&mut out, 6, am, bt, true, Par::Single);
        for (x, y) in out.iter().zip(before) {
            assert!((x - 2.0 * y).abs() < 1e-5);
        }
    }

    /// The shapes of a weight gradient (long inner dimension) and of the vocabulary projection:
    /// gemm splits rows and columns among threads, never the inner sum, so the bits are those
    /// of one thread (exact resume on nodes with other core counts relies on it).
    #[test]
    fn product_bits_do_not_depend_on_the_thread_count() {
        for (m, k, n) in [(64, 2048, 96), (512, 64, 1500)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let with = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                let mut out = vec![0.0f32; m * n];
                pool.install(|| {
                    let (am, bm) = (Mat::rm(&a, m, k), Mat::rm(&b, k, n));
                    matmul(&mut out, n, am, bm, false, Par::Threads)
                });
                out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            };
            let one = with(1);
            assert!(one == with(3), "{m}x{k}x{n}: 1 vs 3 threads");
            assert!(one == with(8), "{m}x{k}x{n}: 1 vs 8 threads");
        }
    }
}
