//! bfloat16: the upper half of an IEEE float32 (8 exponent bits, 7 mantissa bits). Conversions
//! round to nearest even, as PyTorch's `tensor.to(torch.bfloat16)` and MindSpore's cast do.

/// float32 → bfloat16 bits, rounding to nearest even; a NaN stays a (quiet) NaN.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    // Branch-free, so that packing loops vectorise.
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet = (bits >> 16) | 0x0040;
    (if x.is_nan() { quiet } else { rounded }) as u16
}

/// bfloat16 bits → float32 (exact).
#[inline]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x` rounded to the nearest bfloat16 value, as a float32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Two bfloat16 values in one 32-bit word, `lo` in the low half: the pair layout of
/// `vdpbf16ps`, which multiplies pairs lane by lane.
#[inline]
pub fn pair(lo: f32, hi: f32) -> u32 {
    (to_bf16(lo) as u32) | ((to_bf16(hi) as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(
            round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(from_bf16(to_bf16(3.140625)), 3.140625);
        assert_eq!(pair(1.0, -2.0), 0xc000_3f80);
    }
}
