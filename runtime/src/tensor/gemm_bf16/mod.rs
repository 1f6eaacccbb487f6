//! Matrix products with bfloat16 inputs and float32 accumulation, for `compute_dtype:
//! bfloat16`: both operands are rounded to bf16 (nearest even) as they are packed, and their
//! products are summed in f32. On CPUs with AVX512-BF16 the micro-kernel is `vdpbf16ps` (32
//! multiply-adds per instruction, twice an f32 FMA's); elsewhere a portable kernel computes
//! the same operations in the same order, so the bits do not depend on the CPU (tested).
//!
//! Blocking as in GotoBLAS: for each `NC`-column block of B and each `KC`-deep slice, B is
//! packed once into `NR`-column panels of bf16 pairs; row blocks of `MC` rows of A are packed
//! and multiplied in parallel, one block per task, against every B panel. Every element of C
//! sums its terms in one order (the `KC` slices in turn, the pairs within) on one thread, so
//! the bits do not depend on the thread count either.

mod kernel;
#[cfg(test)]
mod tests;

pub use kernel::has_native_bf16;

use super::bf16::{pair, to_bf16};
use super::gemm::{Mat, Par};
use kernel::Kernel;
use rayon::prelude::*;

/// Rows of a micro-tile.
const MR: usize = 12;
/// Columns of a micro-tile (two vectors of 16 floats).
const NR: usize = 32;
/// Depth of a packed slice (even: pairs).
const KC: usize = 256;
/// Rows of A per task (a multiple of MR).
const MC: usize = 96;
/// Columns of a packed B block (a multiple of NR).
const NC: usize = 4096;

/// `dst = a · b` (or `dst += a · b` with `accumulate`) with bf16-rounded inputs and f32 sums;
/// the shapes and checks of [`super::gemm::matmul`].
pub fn matmul_bf16(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
    par: Par,
) {
    if super::gemm::check_shapes(dst, dst_rs, a, b, accumulate) {
        matmul_with(kernel::select(), dst, dst_rs, a, b, accumulate, par);
    }
}

/// [`matmul_bf16`] with the micro-kernel `kern`, on shapes already checked.
fn matmul_with(
    kern: Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
    par: Par,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let threads = par == Par::Threads && rayon::current_num_threads() > 1;
    let widest = NC.min(n.div_ceil(NR) * NR);
    let mut bpack = vec![0u32; KC / 2 * widest];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let kp = kc.div_ceil(2);
            let bp = &mut bpack[..nc.div_ceil(NR) * kp * NR];
            pack_b(bp, b, pc, kc, jc, threads);
            let slice = Slice {
                pc,
                kc,
                jc,
                nc,
                load: accumulate || pc > 0,
            };
            let task = |(ib, rows): (usize, &mut [f32])| {
                let mc = MC.min(m - ib * MC);
                row_block(kern, rows, dst_rs, a, ib * MC, mc, bp, &slice);
            };
            let blocks = m.div_ceil(MC);
            if threads {
                let rows = dst.par_chunks_mut(MC * dst_rs).enumerate().take(blocks);
                rows.for_each(task);
            } else {
                dst.chunks_mut(MC * dst_rs)
                    .enumerate()
                    .take(blocks)
                    .for_each(task);
            }
        }
    }
}

/// One packed slice of B: depth `pc..pc+kc`, columns `jc..jc+nc`; `load` when C already
/// holds partial sums (an earlier slice, or `accumulate`).
struct Slice {
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    load: bool,
}

/// Rows `i0..i0+mc` of C (`c` starts at row `i0`) against every panel of the packed slice.
#[allow(clippy::too_many_arguments)]
fn row_block(
    kern: Kernel,
    c: &mut [f32],
    ldc: usize,
    a: Mat<'_>,
    i0: usize,
    mc: usize,
    bp: &[u32],
    s: &Slice,
) {
    let kp = s.kc.div_ceil(2);
    let mut ap = vec![0u32; mc.div_ceil(MR) * kp * MR];
    pack_a(&mut ap, a, i0, mc, s.pc, s.kc);
    for (jp, bpanel) in bp.chunks_exact(kp * NR).enumerate() {
        let j0 = s.jc + jp * NR;
        let nr = NR.min(s.jc + s.nc - j0);
        for (ip, apanel) in ap.chunks_exact(kp * MR).enumerate() {
            let r0 = ip * MR;
            let mr = MR.min(mc - r0);
            let off = r0 * ldc + j0;
            if mr == MR && nr == NR {
                assert!(off + (MR - 1) * ldc + NR <= c.len(), "micro-tile exceeds C");
                // SAFETY: the panels hold kp·MR and kp·NR words (chunks_exact), and the
                // assert proves the MR × NR tile at `off` lies inside `c`.
                unsafe {
                    kern(
                        kp,
                        apanel.as_ptr(),
                        bpanel.as_ptr(),
                        c.as_mut_ptr().add(off),
                        ldc,
                        s.load,
                    )
                };
            } else {
                let mut tile = [0f32; MR * NR];
                for r in 0..mr {
                    let row = &mut c[off + r * ldc..off + r * ldc + nr];
                    tile[r * NR..r * NR + nr].copy_from_slice(row);
                }
                // SAFETY: the panels as above; the tile is a local MR × NR array.
                unsafe {
                    kern(
                        kp,
                        apanel.as_ptr(),
                        bpanel.as_ptr(),
                        tile.as_mut_ptr(),
                        NR,
                        s.load,
                    )
                };
                for r in 0..mr {
                    c[off + r * ldc..off + r * ldc + nr]
                        .copy_from_slice(&tile[r * NR..r * NR + nr]);
                }
            }
        }
    }
}

/// Packs rows `i0..i0+mc`, depth `p0..p0+kc` of A into MR-row panels: word `(panel, pair,
/// row)` holds A[row, 2·pair] (low half) and A[row, 2·pair+1] (high half), zero past the
/// edges.
fn pack_a(ap: &mut [u32], a: Mat<'_>, i0: usize, mc: usize, p0: usize, kc: usize) {
    let kp = kc.div_ceil(2);
    for (ip, panel) in ap.chunks_exact_mut(kp * MR).enumerate() {
        let rows = MR.min(mc - ip * MR);
        let first = i0 + ip * MR;
        // (row, depth) of A is at data[row·rs + depth·cs].
        pack_panel(
            panel,
            MR,
            rows,
            kp,
            kc,
            a.data,
            (first * a.rs + p0 * a.cs, a.rs, a.cs),
        );
    }
}

/// Packs depth `p0..p0+kc` of B's columns `j0..` into NR-column panels (the slice's length
/// says how many): word `(panel, pair, column)` holds B[2·pair, column] (low half) and
/// B[2·pair+1, column] (high half), zero past the edges.
fn pack_b(bp: &mut [u32], b: Mat<'_>, p0: usize, kc: usize, j0: usize, threads: bool) {
    let kp = kc.div_ceil(2);
    let fill = |(jp, panel): (usize, &mut [u32])| {
        let first = j0 + jp * NR;
        let cols = NR.min(b.cols - first);
        // (column, depth) of B is at data[column·cs + depth·rs].
        pack_panel(
            panel,
            NR,
            cols,
            kp,
            kc,
            b.data,
            (first * b.cs + p0 * b.rs, b.cs, b.rs),
        );
    };
    if threads {
        bp.par_chunks_mut(kp * NR).enumerate().for_each(fill);
    } else {
        bp.chunks_mut(kp * NR).enumerate().for_each(fill);
    }
}

/// [`pack_body`], compiled for AVX-512 where the CPU has it (the conversions vectorise 16
/// wide), else for the baseline.
#[allow(clippy::too_many_arguments)]
fn pack_panel(
    panel: &mut [u32],
    width: usize,
    lanes: usize,
    kp: usize,
    kc: usize,
    data: &[f32],
    at: (usize, usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn wide(
            p: &mut [u32],
            w: usize,
            l: usize,
            kp: usize,
            kc: usize,
            d: &[f32],
            at: (usize, usize, usize),
        ) {
            pack_body(p, w, l, kp, kc, d, at)
        }
        // SAFETY: the CPU has the features `wide` is compiled for.
        return unsafe { wide(panel, width, lanes, kp, kc, data, at) };
    }
    pack_body(panel, width, lanes, kp, kc, data, at)
}

/// One panel `width` lanes wide: word `q·width + lane` pairs the values at depths 2q and 2q+1
/// of `lane`, read from `data[base + lane·lane_stride + depth·depth_stride]`; lanes from
/// `lanes` on and depths from `kc` on are zero. Walks the source along its contiguous
/// dimension.
#[inline(always)]
fn pack_body(
    panel: &mut [u32],
    width: usize,
    lanes: usize,
    kp: usize,
    kc: usize,
    data: &[f32],
    (base, lane_stride, depth_stride): (usize, usize, usize),
) {
    panel.fill(0);
    let at = |lane: usize, depth: usize| data[base + lane * lane_stride + depth * depth_stride];
    if depth_stride == 1 {
        // Convert each lane's run (vectorised), then spread its pairs over the panel.
        let mut halves = [0u16; KC + 1];
        for lane in 0..lanes {
            let src = &data[base + lane * lane_stride..][..kc];
            for (h, &x) in halves.iter_mut().zip(src) {
                *h = to_bf16(x);
            }
            halves[kc] = 0;
            for (q, two) in halves[..2 * kp].chunks_exact(2).enumerate() {
                panel[q * width + lane] = two[0] as u32 | (two[1] as u32) << 16;
            }
        }
    } else if lane_stride == 1 {
        for q in 0..kp {
            let out = &mut panel[q * width..q * width + lanes];
            let lo = &data[base + 2 * q * depth_stride..][..lanes];
            if 2 * q + 1 < kc {
                let hi = &data[base + (2 * q + 1) * depth_stride..][..lanes];
                for ((w, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                    *w = pair(l, h);
                }
            } else {
                for (w, &l) in out.iter_mut().zip(lo) {
                    *w = pair(l, 0.0);
                }
            }
        }
    } else {
        for lane in 0..lanes {
            for q in 0..kp {
                let hi = if 2 * q + 1 < kc {
                    at(lane, 2 * q + 1)
                } else {
                    0.0
                };
                panel[q * width + lane] = pair(at(lane, 2 * q), hi);
            }
        }
    }
}
