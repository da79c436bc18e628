//! The metrics' random draws: a counter-based splitmix64 stream. Draw `i` of a stream seeded
//! `s` is `mix(s + (i + 1)·γ)`, so a batch of draws is one vectorised expression in NumPy and the
//! parity fixture (`fixtures/metrics/generate.py`) feeds Quantus exactly the draws we make, in
//! the same order. Uniforms are `(u64 >> 11)·2⁻⁵³`; normals are Box–Muller on two uniforms (cosine
//! branch); a sample without replacement is the `k` smallest of `n` uniform keys, in key order.

/// splitmix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seeded stream of draws.
#[derive(Clone, Debug)]
pub struct Draws {
    seed: u64,
    counter: u64,
}

impl Draws {
    /// A fresh stream.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut z = self.seed.wrapping_add(self.counter.wrapping_mul(GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One uniform draw in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `n` uniform draws in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64, n: usize) -> Vec<f64> {
        (0..n).map(|_| low + (high - low) * self.unit()).collect()
    }

    /// `n` normal draws: all first uniforms of the pairs, then all second ones.
    pub fn normal(&mut self, mean: f64, std: f64, n: usize) -> Vec<f64> {
        let first: Vec<f64> = (0..n).map(|_| self.unit()).collect();
        first
            .into_iter()
            .map(|u1| {
                let u2 = self.unit();
                let radius = (-2.0 * (1.0 - u1).ln()).sqrt();
                mean + std * (radius * (2.0 * std::f64::consts::PI * u2).cos())
            })
            .collect()
    }

    /// `k` distinct indices of `0..n` (the `k` smallest of `n` uniform keys, in key order). Only
    /// the `k` chosen are sorted: FaithfulnessCorrelation draws 224 of 50,176 pixels 100 times,
    /// and sorting every key took a third of its time.
    pub fn choice(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut keyed = self.keyed(n);
        if k < n {
            keyed.select_nth_unstable(k);
            keyed.truncate(k);
        }
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// A random order of `0..n` (indices sorted by `n` uniform keys).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut keyed = self.keyed(n);
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// `n` uniform keys, each with its index: distinct pairs, so any sort of them is one order.
    fn keyed(&mut self, n: usize) -> Vec<(u64, usize)> {
        (0..n).map(|i| (self.next_u64() >> 11, i)).collect()
    }

    /// One index of `0..n`.
    pub fn index(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // splitmix64 seeded 1234567: the first outputs of the reference C implementation.
        let mut draws = Draws::new(1_234_567);
        assert_eq!(draws.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(draws.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn choice_is_distinct_and_reproducible() {
        let a = Draws::new(5).choice(1000, 100);
        let b = Draws::new(5).choice(1000, 100);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert!(a.iter().all(|&i| i < 1000));
        assert_ne!(a, Draws::new(6).choice(1000, 100));
        // The first k of the whole order, whatever k (all, none, one).
        let order = Draws::new(5).permutation(1000);
        assert_eq!(a, order[..100]);
        assert_eq!(Draws::new(5).choice(1000, 1000), order);
        assert_eq!(Draws::new(5).choice(1000, 1), order[..1]);
        assert!(Draws::new(5).choice(1000, 0).is_empty());
        assert_eq!(Draws::new(5).choice(3, 7).len(), 3);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut draws = Draws::new(9);
        let u = draws.uniform(-1.0, 3.0, 20_000);
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        assert!(u.iter().all(|v| (-1.0..3.0).contains(v)));
        let n = draws.normal(2.0, 0.5, 20_000);
        let mean = n.iter().sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!((mean - 2.0).abs() < 0.02 && (var.sqrt() - 0.5).abs() < 0.02);
    }
}
