//! Tight kernels for the small per-block problems, where faer's general path costs
//! more in dispatch than the arithmetic (measured in `benches/attention.rs`).

use super::simd::{self, multiversion};

multiversion! {
    /// Masked, shifted row softmax of `s` (`rows×cols`, row stride `ld`) in place.
    /// Row `r` keeps columns `< limit(r)`, later ones become 0. `extra` is an extra
    /// logit `x` with multiplicity weight `wsum` (the coarse, cross-block mass): it takes
    /// part in the max and in the normalizer. Writes `z[r]` (when `z` is not empty), the
    /// weight `exp(x − μ)/Z` each unit of extra mass gets.
pub(crate) fn softmax_rows<L: Fn(usize) -> usize>(
    s: &mut [f32],
    ld: usize,
    rows: usize,
    limit: L,
    extra: f32,
    wsum: f32,
    z: &mut [f32],
) {
    for r in 0..rows {
        let row = &mut s[r * ld..r * ld + ld];
        let lim = limit(r);
        let (keep, drop) = row.split_at_mut(lim);
        drop.fill(0.0);
        let mx = max_f32(keep).max(extra);
        for x in keep.iter_mut() {
            *x = exp(*x - mx);
        }
        let sum = sum_f32(keep);
        let ecross = if wsum > 0.0 { exp(extra - mx) } else { 0.0 };
        let inv = 1.0 / (sum + ecross * wsum);
        for x in keep.iter_mut() {
            *x *= inv;
        }
        if let Some(zr) = z.get_mut(r) {
            *zr = ecross * inv;
        }
    }
}
}

multiversion! {
    /// `row[j] = exp(row[j] − shift)` in place; returns the sum.
    pub(crate) fn exp_shift_sum(row: &mut [f32], shift: f32) -> f32 {
        for x in row.iter_mut() {
            *x = exp(*x - shift);
        }
        sum_f32(row)
    }
}

multiversion! {
    /// Whether any element is NaN or ±∞ (exponent bits all ones). An OR of integer
    /// flags vectorizes, unlike an early-exit search.
    pub(crate) fn any_non_finite(x: &[f32]) -> bool {
        x.chunks(4096).any(|c| {
            c.iter()
                .fold(0u32, |a, v| a | u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000))
                != 0
        })
    }
}

/// Sum with eight independent accumulators, so it vectorizes (a plain fold is a
/// serial chain of dependent adds).
#[inline]
pub(crate) fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Maximum (NEG_INFINITY for an empty slice), vectorized like [`sum_f32`].
#[inline]
pub(crate) fn max_f32(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter().fold(tail, |a, &v| a.max(v))
}

/// `exp(x)` for f32, branch-free so that loops over slices vectorize (libm's `expf`
/// is a call per element and dominated the softmax). Cephes' range reduction
/// `x = k·ln2 + r` and degree-6 polynomial: relative error ≤ 2 ulp on [-87, 88];
/// arguments below -87.3 give 0 (a shifted logit that small has no weight in f32).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    // Round to nearest by the 1.5·2²³ trick, which also leaves k in the low mantissa
    // bits: no `round()` (a libm call on baseline x86-64) and no saturating float→int
    // cast, so loops over slices vectorize.
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * LOG2E + MAGIC;
    let k = shifted - MAGIC;
    let ki = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = x - k * C1 - k * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_66;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^k from its exponent bits; k ∈ [-126, 128) after the clamp.
    let bits = ((ki + 127) as u32) << 23;
    let y = e * f32::from_bits(bits);
    if x <= -87.3 { 0.0 } else { y }
}

/// Forward substitution `(I − γ·D)·X_out = X` in place for lower-triangular `D`
/// (`n×n`, row stride `ldd`) and `X` (`n×w`, row stride `ldx`).
pub(crate) fn unit_minus_lower_solve(
    d: &[f32],
    ldd: usize,
    gamma: f32,
    x: &mut [f32],
    ldx: usize,
    n: usize,
    w: usize,
) {
    for i in 0..n {
        let (done, cur) = x.split_at_mut(i * ldx);
        let xi = &mut cur[..w];
        let drow = &d[i * ldd..i * ldd + i + 1];
        for j in 0..i {
            let a = gamma * drow[j];
            if a != 0.0 {
                let xj = &done[j * ldx..j * ldx + w];
                for (o, &p) in xi.iter_mut().zip(xj) {
                    *o += a * p;
                }
            }
        }
        let inv = 1.0 / (1.0 - gamma * drow[i]);
        for o in xi.iter_mut() {
            *o *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(
            worst <= 4.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }
}

/// Register tile of [`gemm_rm`]: 4 rows × 16 columns of C, 8 AVX2 accumulators.
const MR: usize = 4;
const NR: usize = 16;

multiversion! {
    /// `C = alpha·A·B` for small row-major matrices (`A: m×k`, `B: k×n`, `C: m×n`
    /// with leading dimensions `lda`, `ldb`, `ldc`), by 4×16 register tiles.
    ///
    /// Causal blocks need only part of each product: the tile of rows ending at
    /// `iend` computes columns `< ncols(iend)` (rounded up to whole tiles where the
    /// matrix allows; the extra columns are masked by the caller) and sums over
    /// `p < kdepth(iend)` (entries of A past that are zero). faer's general path
    /// packs and dispatches per call, which at b ≈ 100 cost more than the arithmetic.
    pub(crate) fn gemm_rm<NC: Fn(usize) -> usize, KD: Fn(usize) -> usize>(
        c: &mut [f32],
        ldc: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        m: usize,
        n: usize,
        alpha: f32,
        ncols: NC,
        kdepth: KD,
    ) {
        let mut i = 0;
        while i < m {
            let mr = (m - i).min(MR);
            let iend = i + mr;
            let nn = ncols(iend).min(n);
            let kk = kdepth(iend);
            let mut j = 0;
            while j < nn && j + NR <= n {
                let mut acc = [[0.0f32; NR]; MR];
                for p in 0..kk {
                    let brow: &[f32; NR] = b[p * ldb + j..p * ldb + j + NR].try_into().unwrap();
                    for (r, accr) in acc.iter_mut().enumerate() {
                        // Rows past the matrix repeat its last row; they are not stored.
                        let av = a[(i + r.min(mr - 1)) * lda + p];
                        for (x, &bv) in accr.iter_mut().zip(brow) {
                            *x = simd::fmadd::<FMA>(av, bv, *x);
                        }
                    }
                }
                for (r, accr) in acc.iter().enumerate().take(mr) {
                    let crow = &mut c[(i + r) * ldc + j..(i + r) * ldc + j + NR];
                    for (x, &v) in crow.iter_mut().zip(accr) {
                        *x = alpha * v;
                    }
                }
                j += NR;
            }
            // Columns at the right edge of the matrix, narrower than a tile.
            for jj in j..nn {
                for r in 0..mr {
                    let arow = &a[(i + r) * lda..(i + r) * lda + kk];
                    let mut s = 0.0f32;
                    for (p, &av) in arow.iter().enumerate() {
                        s += av * b[p * ldb + jj];
                    }
                    c[(i + r) * ldc + jj] = alpha * s;
                }
            }
            i += MR;
        }
    }
}
