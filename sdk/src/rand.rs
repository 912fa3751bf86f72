//! A small, fast generator for policies that draw at random (p2c).

/// xorshift64* — statistically fine for load balancing, not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed; zero is replaced by a fixed odd constant.
    pub fn from_seed(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// A generator seeded by the host's entropy.
    pub fn from_host() -> Self {
        Self::from_seed(crate::host::random_u64())
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32) * n as u64 >> 32) as usize
    }

    /// Two distinct indices drawn uniformly from `0..n` (n >= 2): sampling
    /// without replacement, as power-of-two-choices needs.
    pub fn two_distinct(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let mut b = self.below(n - 1);
        if b >= a {
            b += 1;
        }
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_distinct_never_repeats_and_covers_all() {
        let mut r = Rng::from_seed(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let (a, b) = r.two_distinct(5);
            assert_ne!(a, b);
            seen[a] += 1;
            seen[b] += 1;
        }
        assert!(seen.iter().all(|&c| c > 3000), "{seen:?}");
    }
}
