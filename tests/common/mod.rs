//! Float64 reference for the tests: the attention matrix materialized n×n, straight
//! from the SPEC's definitions, and the resolvent by Gaussian elimination.
#![allow(dead_code)]

/// Dense attention (SPEC §1), n×n row-major, float64.
pub fn dense_a(q: &[f64], k: &[f64], n: usize, dk: usize, scale: f64, causal: bool) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        let hi = if causal { i + 1 } else { n };
        let logits: Vec<f64> = (0..hi)
            .map(|j| scale * (0..dk).map(|t| q[i * dk + t] * k[j * dk + t]).sum::<f64>())
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for j in 0..hi {
            a[i * n + j] = (logits[j] - mx).exp() / z;
        }
    }
    a
}

/// Block-structured attention (SPEC §2), materialized n×n, float64, with mean coarse
/// queries.
pub fn block_a(
    q: &[f64],
    k: &[f64],
    n: usize,
    dk: usize,
    b: usize,
    scale: f64,
    causal: bool,
) -> Vec<f64> {
    block_a_with(q, k, n, dk, b, scale, causal, blockres::CoarseQuery::Mean)
}

/// [`block_a`] with the coarse query of SPEC §2's `coarse_query`: the block's mean
/// query, or the query of its first token.
#[allow(clippy::too_many_arguments)]
pub fn block_a_with(
    q: &[f64],
    k: &[f64],
    n: usize,
    dk: usize,
    b: usize,
    scale: f64,
    causal: bool,
    coarse_query: blockres::CoarseQuery,
) -> Vec<f64> {
    let m = n.div_ceil(b);
    let blk = |i: usize| i / b;
    let size = |j: usize| (((j + 1) * b).min(n) - j * b) as f64;
    let mean = |x: &[f64], j: usize| -> Vec<f64> {
        let (r0, r1) = (j * b, ((j + 1) * b).min(n));
        (0..dk)
            .map(|t| (r0..r1).map(|r| x[r * dk + t]).sum::<f64>() / (r1 - r0) as f64)
            .collect()
    };
    let qb: Vec<Vec<f64>> = (0..m)
        .map(|j| match coarse_query {
            blockres::CoarseQuery::Mean => mean(q, j),
            blockres::CoarseQuery::First => q[j * b * dk..(j * b + 1) * dk].to_vec(),
        })
        .collect();
    let kb: Vec<Vec<f64>> = (0..m).map(|j| mean(k, j)).collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        let bi = blk(i);
        // (column range, logit, multiplicity) for every term of Z_i.
        let mut terms: Vec<(usize, usize, f64, f64)> = Vec::new();
        for j in bi * b..((bi + 1) * b).min(n) {
            if !causal || j <= i {
                terms.push((
                    j,
                    j + 1,
                    scale * dot(&q[i * dk..i * dk + dk], &k[j * dk..j * dk + dk]),
                    1.0,
                ));
            }
        }
        for (bj, kbj) in kb.iter().enumerate() {
            if bj != bi && (!causal || bj < bi) {
                let l = scale * dot(&qb[bi], kbj);
                terms.push((bj * b, ((bj + 1) * b).min(n), l, size(bj)));
            }
        }
        let mx = terms.iter().map(|t| t.2).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = terms.iter().map(|t| t.3 * (t.2 - mx).exp()).sum();
        for &(c0, c1, l, _) in &terms {
            for j in c0..c1 {
                a[i * n + j] = (l - mx).exp() / z;
            }
        }
    }
    a
}

/// `Y = (1−γ)·(I − γA)⁻¹·A·V`, by Gaussian elimination with partial pivoting.
pub fn resolvent(a: &[f64], v: &[f64], n: usize, dv: usize, gamma: f64) -> Vec<f64> {
    let mut x = vec![0.0; n * dv];
    for i in 0..n {
        for j in 0..n {
            let aij = a[i * n + j];
            if aij != 0.0 {
                for t in 0..dv {
                    x[i * dv + t] += aij * v[j * dv + t];
                }
            }
        }
    }
    let mut t: Vec<f64> = a.iter().map(|&x| -gamma * x).collect();
    for i in 0..n {
        t[i * n + i] += 1.0;
    }
    for p in 0..n {
        let piv = (p..n)
            .max_by(|&r, &s| t[r * n + p].abs().total_cmp(&t[s * n + p].abs()))
            .unwrap();
        if piv != p {
            for c in 0..n {
                t.swap(p * n + c, piv * n + c);
            }
            for c in 0..dv {
                x.swap(p * dv + c, piv * dv + c);
            }
        }
        for r in p + 1..n {
            let f = t[r * n + p] / t[p * n + p];
            if f != 0.0 {
                for c in p..n {
                    t[r * n + c] -= f * t[p * n + c];
                }
                for c in 0..dv {
                    x[r * dv + c] -= f * x[p * dv + c];
                }
            }
        }
    }
    for p in (0..n).rev() {
        for c in 0..dv {
            let mut s = x[p * dv + c];
            for j in p + 1..n {
                s -= t[p * n + j] * x[j * dv + c];
            }
            x[p * dv + c] = s / t[p * n + p];
        }
    }
    x.iter().map(|&y| (1.0 - gamma) * y).collect()
}

/// The float64 reference of a whole `[B, H, n, d]` call: per (batch, head), the
/// attention matrix `a(q_head, k_head)` against its key/value head (grouped-query
/// attention), then the resolvent with that head's values. `dims` is
/// `[B, H, Hkv, n, dk, dv]`.
pub fn reference_by_head(
    [q, k, v]: [&[f64]; 3],
    [batch, heads, kv_heads, n, dk, dv]: [usize; 6],
    gamma: f64,
    a: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> Vec<f64> {
    let group = heads / kv_heads;
    let mut out = Vec::new();
    for bh in 0..batch * heads {
        let kvh = (bh / heads) * kv_heads + (bh % heads) / group;
        let qh = &q[bh * n * dk..(bh + 1) * n * dk];
        let kh = &k[kvh * n * dk..(kvh + 1) * n * dk];
        let vh = &v[kvh * n * dv..(kvh + 1) * n * dv];
        out.extend(resolvent(&a(qh, kh), vh, n, dv, gamma));
    }
    out
}

/// `‖y − r‖ / ‖r‖` (Frobenius).
pub fn rel_err(y: &[f64], r: &[f64]) -> f64 {
    assert_eq!(y.len(), r.len());
    let num: f64 = y.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = r.iter().map(|b| b * b).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A fresh seed per run (the standards ask for fresh random inputs); printed by the
/// tests so a failure can be replayed with `BLOCKRES_SEED`.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("BLOCKRES_SEED") {
        return s.parse().expect("BLOCKRES_SEED must be an integer");
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
