//! Tight kernels for the small per-block problems, where faer's general path costs
//! more in dispatch than the arithmetic (measured in `benches/attention.rs`).

/// Masked, shifted row softmax of `s` (`rows×cols`, row stride `ld`) in place.
/// Row `r` keeps columns `< limit(r)`, later ones become 0. `extra` is an extra
/// logit `x` with multiplicity weight `wsum` (the coarse, cross-block mass): it takes
/// part in the max and in the normalizer. Writes `z[r]` (when `z` is not empty), the
/// weight `exp(x − μ)/Z` each unit of extra mass gets.
#[inline]
pub(crate) fn softmax_rows(
    s: &mut [f32],
    ld: usize,
    rows: usize,
    limit: impl Fn(usize) -> usize,
    extra: f32,
    wsum: f32,
    z: &mut [f32],
) {
    for r in 0..rows {
        let row = &mut s[r * ld..r * ld + ld];
        let lim = limit(r);
        let (keep, drop) = row.split_at_mut(lim);
        drop.fill(0.0);
        let mut mx = extra;
        for &x in keep.iter() {
            mx = mx.max(x);
        }
        let mut sum = 0.0f32;
        for x in keep.iter_mut() {
            let e = exp(*x - mx);
            *x = e;
            sum += e;
        }
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

/// exp for arguments ≤ 0 (shifted logits); f32's own is accurate and the cost is
/// O(n·b), dominated by the products.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    x.exp()
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

/// Solve `T·X_out = X` in place for `T = I − γ·D`, `D` full (`n×n`, stride `ldd`),
/// by Gaussian elimination without pivoting. `T` is strictly diagonally dominant by
/// rows (`D` is sub-stochastic, γ < 1), so no pivot is needed for stability.
/// `t` (`n×n`) is scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unit_minus_full_solve(
    d: &[f32],
    ldd: usize,
    gamma: f32,
    x: &mut [f32],
    ldx: usize,
    n: usize,
    w: usize,
    t: &mut [f32],
) {
    let t = &mut t[..n * n];
    for i in 0..n {
        for j in 0..n {
            t[i * n + j] = -gamma * d[i * ldd + j] + if i == j { 1.0 } else { 0.0 };
        }
    }
    // Row-oriented elimination: eliminate below the pivot, updating the right side.
    for p in 0..n {
        let inv = 1.0 / t[p * n + p];
        let (top, bottom) = t.split_at_mut((p + 1) * n);
        let prow = &top[p * n..p * n + n];
        let (xtop, xbot) = x.split_at_mut((p + 1) * ldx);
        let xp = &xtop[p * ldx..p * ldx + w];
        for (r, row) in bottom.chunks_exact_mut(n).enumerate() {
            let f = row[p] * inv;
            if f == 0.0 {
                continue;
            }
            for (a, &b) in row[p..].iter_mut().zip(&prow[p..]) {
                *a -= f * b;
            }
            let xr = &mut xbot[r * ldx..r * ldx + w];
            for (a, &b) in xr.iter_mut().zip(xp) {
                *a -= f * b;
            }
        }
    }
    for p in (0..n).rev() {
        let (xtop, xbot) = x.split_at_mut((p + 1) * ldx);
        let xp = &mut xtop[p * ldx..p * ldx + w];
        for j in p + 1..n {
            let f = t[p * n + j];
            if f != 0.0 {
                let xj = &xbot[(j - p - 1) * ldx..(j - p - 1) * ldx + w];
                for (a, &b) in xp.iter_mut().zip(xj) {
                    *a -= f * b;
                }
            }
        }
        let inv = 1.0 / t[p * n + p];
        for a in xp.iter_mut() {
            *a *= inv;
        }
    }
}
