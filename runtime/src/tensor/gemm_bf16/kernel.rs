//! The micro-kernels: `C[MR×NR] (+)= A-panel · B-panel` over `kp` packed bf16 pairs. Both
//! compute what `vdpbf16ps` documents, per lane and pair: `acc += a_hi·b_hi`, then
//! `acc += a_lo·b_lo`, each a float32 fused multiply-add rounded to nearest even, with
//! bfloat16 subnormal inputs read as zero and subnormal results flushed to zero.

use super::{MR, NR};

/// A micro-kernel: `kp` pairs of the packed panels `a` (`kp × MR` words) and `b` (`kp × NR`
/// words) into the `MR × NR` tile at `c` (row stride `ldc`), added to the tile's values when
/// `load`, written over them otherwise.
///
/// # Safety
/// `a` and `b` must hold `kp·MR` and `kp·NR` words, and `c` must address `MR` rows of `NR`
/// writable floats `ldc` apart.
pub(super) type Kernel =
    unsafe fn(kp: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, load: bool);

/// The fastest kernel this CPU runs: `vdpbf16ps` where AVX512-BF16 is present, the portable
/// kernel (with FMA where present) otherwise. Both give the same bits.
pub(super) fn select() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16") {
            return x86::dpbf16;
        }
        if std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2") {
            return x86::portable_fma;
        }
    }
    portable
}

/// Whether [`select`] picks the `vdpbf16ps` kernel on this CPU.
pub fn has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A bfloat16 half of a pair as float32, subnormals read as zero (`vdpbf16ps`'s DAZ).
#[inline(always)]
fn half(word: u32, high: bool) -> f32 {
    let bits = if high { word & 0xffff_0000 } else { word << 16 };
    if bits & 0x7f80_0000 == 0 {
        f32::from_bits(bits & 0x8000_0000)
    } else {
        f32::from_bits(bits)
    }
}

/// `acc + a·b` in one rounding, a subnormal result flushed to a signed zero (FTZ).
#[inline(always)]
fn fma_ftz(acc: f32, a: f32, b: f32) -> f32 {
    let r = a.mul_add(b, acc);
    if r.to_bits() & 0x7f80_0000 == 0 {
        f32::from_bits(r.to_bits() & 0x8000_0000)
    } else {
        r
    }
}

/// The portable kernel, written so that the compiler vectorises the NR lanes.
#[inline(always)]
unsafe fn portable_body(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    let mut acc = [[0f32; NR]; MR];
    if load {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller guarantees MR rows of NR floats at c, ldc apart.
            row.copy_from_slice(unsafe { std::slice::from_raw_parts(c.add(r * ldc), NR) });
        }
    }
    for p in 0..kp {
        // SAFETY: the caller guarantees kp·MR words at a and kp·NR words at b.
        let (ap, bp) = unsafe {
            (
                std::slice::from_raw_parts(a.add(p * MR), MR),
                std::slice::from_raw_parts(b.add(p * NR), NR),
            )
        };
        for (row, &aw) in acc.iter_mut().zip(ap) {
            let (a_hi, a_lo) = (half(aw, true), half(aw, false));
            for (x, &bw) in row.iter_mut().zip(bp) {
                let t = fma_ftz(*x, a_hi, half(bw, true));
                *x = fma_ftz(t, a_lo, half(bw, false));
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), NR) }.copy_from_slice(row);
    }
}

/// The portable kernel for any CPU (`mul_add` in software where there is no FMA).
unsafe fn portable(kp: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, load: bool) {
    // SAFETY: forwarded from the caller.
    unsafe { portable_body(kp, a, b, c, ldc, load) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{portable_body, MR, NR};
    use std::arch::x86_64::*;

    /// The portable kernel compiled for AVX2 + FMA.
    pub(super) unsafe fn portable_fma(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn inner(
            kp: usize,
            a: *const u32,
            b: *const u32,
            c: *mut f32,
            ldc: usize,
            load: bool,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { portable_body(kp, a, b, c, ldc, load) }
        }
        // SAFETY: selected only where the CPU has AVX2 and FMA; the rest is the caller's.
        unsafe { inner(kp, a, b, c, ldc, load) }
    }

    /// `vdpbf16ps`: 12 rows × 32 columns in 24 accumulators, a pair of each A row broadcast
    /// against two vectors of 16 B column pairs.
    pub(super) unsafe fn dpbf16(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        // SAFETY: selected only where the CPU has AVX-512F and AVX512-BF16.
        unsafe { dpbf16_inner(kp, a, b, c, ldc, load) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dpbf16_inner(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        const _: () = assert!(NR == 32);
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        // SAFETY (whole body): the caller guarantees the panel and tile extents.
        unsafe {
            if load {
                for (r, v) in acc.iter_mut().enumerate() {
                    v[0] = _mm512_loadu_ps(c.add(r * ldc));
                    v[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
                }
            }
            let (mut ap, mut bp) = (a, b);
            for _ in 0..kp {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16).cast()));
                for (r, v) in acc.iter_mut().enumerate() {
                    let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
                    v[0] = _mm512_dpbf16_ps(v[0], ar, b0);
                    v[1] = _mm512_dpbf16_ps(v[1], ar, b1);
                }
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
            for (r, v) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc), v[0]);
                _mm512_storeu_ps(c.add(r * ldc + 16), v[1]);
            }
        }
    }
}

#[cfg(test)]
pub(super) fn portable_kernel() -> Kernel {
    portable
}
