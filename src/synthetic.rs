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
    /// A vector of `len` standard normals, as f32.
    pub fn normals(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal() as f32).collect()
    }
}

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

/// Entity-tracking-like inputs: the sequence is cut into segments of random length
/// around `segment`; every token's query and key carry its segment's "topic" vector,
/// scaled so that a same-segment pair gains about `strength` in its logit (with the
/// default scale `1/sqrt(dk)`). Most attention mass then stays inside the segment,
/// with a light residue across. `strength = 0` gives plain Gaussian heads.
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
    // Segment id of each position, shared by all heads of a batch entry.
    let mut seg = vec![0usize; n];
    let mut count = 0;
    let mut i = 0;
    while i < n {
        let len = ((segment.max(1) as f64) * (0.5 + rng.uniform())).ceil() as usize;
        for s in seg.iter_mut().skip(i).take(len) {
            *s = count;
        }
        count += 1;
        i += len;
    }
    let topics: Vec<f32> = rng.normals(count * dk);
    // a²·|t|²/sqrt(dk) ≈ a²·sqrt(dk) = strength.
    let amp = (strength.max(0.0) / (dk as f32).sqrt()).sqrt();
    let mut fill = |heads: usize, with_topic: bool, width: usize| {
        let mut out = rng.normals(b * heads * n * width);
        if with_topic && strength != 0.0 {
            for row in out.chunks_exact_mut(width).enumerate() {
                let (r, x) = row;
                let t = &topics[seg[r % n] * dk..seg[r % n] * dk + dk];
                for (a, &tt) in x.iter_mut().zip(t) {
                    *a += amp * tt;
                }
            }
        }
        out
    };
    let q = fill(h, true, dk);
    let k = fill(hkv, true, dk);
    let v = fill(hkv, false, dv);
    Qkv { q, k, v, dims }
}
