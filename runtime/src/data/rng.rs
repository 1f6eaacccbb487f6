//! numpy's legacy `RandomState`: MT19937 with numpy's integer seeding, `random_interval`,
//! and the 1-D `shuffle` Megatron uses to order documents and samples.
//!
//! Sources: `numpy/random/src/mt19937/mt19937.c` (seeding, generation),
//! `numpy/random/src/distributions/distributions.c` (`random_interval`) and
//! `numpy/random/mtrand.pyx` (`RandomState.shuffle`). Matching them bit for bit is what makes
//! our sample order identical to Megatron's.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The state of `numpy.random.RandomState(seed)`.
#[derive(Clone)]
pub struct RandomState {
    mt: [u32; N],
    pos: usize,
}

impl RandomState {
    /// `numpy.random.RandomState(seed)` for an integer seed in `0..2^32`.
    pub fn new(seed: u32) -> RandomState {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { mt, pos: N }
    }

    /// Regenerates the whole block of 624 words (the standard MT19937 twist).
    fn generate(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & UPPER_MASK) | (self.mt[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.mt[i] = self.mt[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64-bit output: two 32-bit outputs, the first in the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// Uniform integer in `[0, max]` by masked rejection sampling (numpy's `random_interval`).
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u32::MAX as u64 {
            loop {
                let value = (self.next_u32() as u64) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-D array: Fisher-Yates from the end. The element type does
    /// not affect the draws.
    pub fn shuffle<T>(&mut self, a: &mut [T]) {
        for i in (1..a.len()).rev() {
            let j = self.random_interval(i as u64) as usize;
            a.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_reference_mt19937() {
        // The reference MT19937 (init_genrand(5489)) starts 3499211612, 581869302, 3890346734.
        let mut rs = RandomState::new(5489);
        assert_eq!(rs.next_u32(), 3_499_211_612);
        assert_eq!(rs.next_u32(), 581_869_302);
        assert_eq!(rs.next_u32(), 3_890_346_734);
    }

    #[test]
    fn shuffle_matches_megatron_reference_vectors() {
        // megatron-data.md §5 (megatron-core 0.16.1 output): seed 7, two shuffles of 8 ids.
        let mut rs = RandomState::new(7);
        let mut first: Vec<i32> = (0..8).collect();
        rs.shuffle(&mut first);
        let mut second: Vec<i32> = (0..8).collect();
        rs.shuffle(&mut second);
        assert_eq!(first, [2, 5, 0, 6, 3, 1, 4, 7]);
        assert_eq!(second, [3, 5, 7, 4, 2, 1, 0, 6]);
    }

    #[test]
    fn random_interval_zero_draws_nothing() {
        let mut a = RandomState::new(1);
        let mut b = RandomState::new(1);
        assert_eq!(a.random_interval(0), 0);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
