//! SplitMix64, seeded: a fixed seed gives every run of a benchmark the same endpoint times and
//! results. Shared by the benchmarks that draw random numbers and the core crate's model of an
//! endpoint with a capacity (`#[path]` in each).

// Each benchmark draws with a part of it.
#![allow(dead_code)]

pub struct Random(pub u64);

/// The seed of the capacity benchmark's companies' times (`dex-adaptive-bench`), which the model
/// test also runs: the same times, at the endpoint and in the model.
pub const CAPACITY_BENCHMARK_SEED: u64 = 20_261_203;

impl Random {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() <= probability
    }

    /// Uniform in 0..n (the modulo's bias is far below what matters here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Log-normal with the given median and shape (Box-Muller).
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        let normal =
            (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos();
        median * (sigma * normal).exp()
    }

    pub fn log_uniform(&mut self, (low, high): (f64, f64)) -> f64 {
        (low.ln() + (high.ln() - low.ln()) * self.unit()).exp()
    }
}
