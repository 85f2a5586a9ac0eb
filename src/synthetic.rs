//! Deterministic synthetic inputs for demos, benchmarks and tests: random heads whose
//! attention concentrates in contiguous segments, the structure the blockwise method
//! is built for (SPEC §2), or plain Gaussian heads with no such structure.

/// A small, fast, seedable generator (SplitMix64), so demos and benchmarks in Rust
/// and Python can agree on inputs without a dependency.
///
/// ```
/// use blockres::synthetic::Rng;
/// let mut a = Rng::new(7);
/// let mut b = Rng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.uniform();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
    /// A vector of `len` standard normals, as f32.
    pub fn normals(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal() as f32).collect()
    }
}

/// Standard deviation of the token-level noise in structured queries and keys.
const NOISE: f32 = 0.5;

/// Q, K, V for `[B, H, n, dk]` / `[B, Hkv, n, dk]` / `[B, Hkv, n, dv]`, row-major f32.
#[derive(Debug, Clone)]
pub struct Qkv {
    /// Queries, `[B, H, n, dk]`.
    pub q: Vec<f32>,
    /// Keys, `[B, Hkv, n, dk]`.
    pub k: Vec<f32>,
    /// Values, `[B, Hkv, n, dv]`.
    pub v: Vec<f32>,
    /// `[B, H, Hkv, n, dk, dv]`.
    pub dims: [usize; 6],
}

impl Qkv {
    /// Shape of Q.
    pub fn q_shape(&self) -> [usize; 4] {
        let [b, h, _, n, dk, _] = self.dims;
        [b, h, n, dk]
    }
    /// Shape of K.
    pub fn k_shape(&self) -> [usize; 4] {
        let [b, _, hkv, n, dk, _] = self.dims;
        [b, hkv, n, dk]
    }
    /// Shape of V.
    pub fn v_shape(&self) -> [usize; 4] {
        let [b, _, hkv, n, _, dv] = self.dims;
        [b, hkv, n, dv]
    }
}

/// Entity-tracking-like inputs: the sequence is cut into spans of `segment` tokens
/// (one entity's context each); every token's query and key carry its span's "topic"
/// vector, scaled so that a same-span pair gains about `strength` in its logit (with
/// the default scale `1/sqrt(dk)`). Most attention mass then stays inside the span,
/// with a light residue across; values carry the span's state vector plus noise of
/// the same size. `strength = 0` gives plain Gaussian heads.
///
/// ```
/// use blockres::synthetic::segmented;
/// let x = segmented([1, 2, 1, 100, 16, 8], 20, 2.0, 42);
/// assert_eq!(x.q.len(), 2 * 100 * 16);
/// assert_eq!(x.v.len(), 100 * 8);
/// ```
pub fn segmented(dims: [usize; 6], segment: usize, strength: f32, seed: u64) -> Qkv {
    let [b, h, hkv, n, dk, dv] = dims;
    let mut rng = Rng::new(seed);
    let segment = segment.max(1);
    let count = n.div_ceil(segment);
    let seg: Vec<usize> = (0..n).map(|i| i / segment).collect();
    let topics: Vec<f32> = rng.normals(count * dk);
    // The entity's state: every value of a span carries it, beside per-token noise.
    let states: Vec<f32> = rng.normals(count * dv);
    // a²·|t|²/sqrt(dk) ≈ a²·sqrt(dk) = strength.
    let amp = (strength.max(0.0) / (dk as f32).sqrt()).sqrt();
    let mut fill = |heads: usize, table: &[f32], amp: f32, width: usize, noise: f32| {
        let mut out = rng.normals(b * heads * n * width);
        out.iter_mut().for_each(|x| *x *= noise);
        if amp != 0.0 {
            for (r, x) in out.chunks_exact_mut(width).enumerate() {
                let t = &table[seg[r % n] * width..seg[r % n] * width + width];
                for (a, &tt) in x.iter_mut().zip(t) {
                    *a += amp * tt;
                }
            }
        }
        out
    };
    // Token-level noise in queries and keys is what block means cannot represent
    // (mean of exponentials ≠ exponential of means); structured inputs keep it small.
    let qk_noise = if strength > 0.0 { NOISE } else { 1.0 };
    let q = fill(h, &topics, amp, dk, qk_noise);
    let k = fill(hkv, &topics, amp, dk, qk_noise);
    let v = fill(
        hkv,
        &states,
        if strength > 0.0 { 1.0 } else { 0.0 },
        dv,
        1.0,
    );
    Qkv { q, k, v, dims }
}
