//! Block-structured resolvent attention (SPEC §2) by the Woodbury/Schur reduction:
//! exact attention inside blocks of `b` tokens, block means across them, and an m×m
//! reduced system for the cross-block part. Never forms an n×n matrix.
//!
//! With `A = D + U·Fᵀ`, `M = I − γD` block diagonal and `U = diag(z)·E·G`:
//! `P = M⁻¹·A·V`, `w = M⁻¹·z`, `(I − γ·diag(c)·G)·u = p̄`, and
//! `Y_I = (1−γ)·(P_I + γ·w_I ⊗ (G·u)_I)`. G is kept shifted per block row
//! (`G̃_IJ = exp(L_IJ + ln n_J − σ_I)`), and the shift is folded into `z`, so no
//! exponential can overflow.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Head, KernelScratch, small, threads};
use crate::error::Result;

/// The block size `block_size = 0` resolves to, for sequence length `n` and head
/// width `d` (the larger of dk and dv).
///
/// The cost is about `c₁·n·b·d` for the local blocks plus `c₂·(n/b)²·d` for the
/// reduced system, minimized at `b ∝ n^{1/3}`; the constant was fitted to
/// measurements on x86-64 (see BENCHMARKS.md). Short sequences (`n ≤ 2·b`) use a
/// single block, which is the exact dense operator.
///
/// ```
/// use blockres::auto_block_size;
/// assert_eq!(auto_block_size(100, 64), 100);
/// let b = auto_block_size(1 << 20, 64);
/// assert!(b >= 64 && b <= 512);
/// ```
pub fn auto_block_size(n: usize, d: usize) -> usize {
    let _ = d;
    let b = (4.0 * (n as f64).cbrt()).round() as usize;
    let b = b.clamp(32, 512);
    if n <= 2 * b { n.max(1) } else { b }
}

fn block_means(x: &[f32], d: usize, b: usize, n: usize, out: &mut [f32]) {
    for (j, o) in out.chunks_exact_mut(d).enumerate() {
        let r0 = j * b;
        let r1 = (r0 + b).min(n);
        o.fill(0.0);
        for row in x[r0 * d..r1 * d].chunks_exact(d) {
            for (a, &v) in o.iter_mut().zip(row) {
                *a += v;
            }
        }
        let inv = 1.0 / (r1 - r0) as f32;
        o.iter_mut().for_each(|a| *a *= inv);
    }
}

/// Rows of the reduced system solved per step of the blocked forward substitution.
const REDUCED_PANEL: usize = 64;

pub(crate) fn evaluate(
    h: &Head<'_>,
    b: usize,
    causal: bool,
    y: &mut [f32],
    s: &mut KernelScratch,
    par: Par,
) -> Result<()> {
    let Head {
        q,
        k,
        v,
        n,
        dk,
        dv,
        scale,
        gamma,
    } = *h;
    let b = b.clamp(1, n);
    let m = n.div_ceil(b);
    let rsize = if causal { 0 } else { m * m };
    let [
        qbar,
        kbar,
        vbar,
        g,
        hm,
        pbar,
        cvec,
        sred,
        u,
        w,
        gsum,
        sigma,
        rmat,
    ] = s.parts([
        m * dk,
        m * dk,
        m * dv,
        m * m,
        m * dv,
        m * dv,
        m,
        m * dv,
        m * dv,
        n,
        m,
        m,
        rsize,
    ]);

    // 1. Block means and the shifted coarse matrix G̃.
    block_means(q, dk, b, n, qbar);
    block_means(k, dk, b, n, kbar);
    block_means(v, dv, b, n, vbar);
    matmul(
        MatMut::from_row_major_slice_mut(g, m, m),
        Accum::Replace,
        MatRef::from_row_major_slice(qbar, m, dk),
        MatRef::from_row_major_slice(kbar, m, dk).transpose(),
        scale,
        par,
    );
    let ln_b = (b as f32).ln();
    let ln_last = ((n - (m - 1) * b) as f32).ln();
    let shift_row = |(i, ((row, sg), gs)): (usize, ((&mut [f32], &mut f32), &mut f32))| {
        let allowed = |j: usize| if causal { j < i } else { j != i };
        let mut mx = f32::NEG_INFINITY;
        for (j, x) in row.iter_mut().enumerate() {
            if allowed(j) {
                *x += if j + 1 == m { ln_last } else { ln_b };
                mx = mx.max(*x);
            }
        }
        let mut sum = 0.0f32;
        for (j, x) in row.iter_mut().enumerate() {
            *x = if allowed(j) { small::exp(*x - mx) } else { 0.0 };
            sum += *x;
        }
        *sg = mx;
        *gs = sum;
    };
    if threads(par) > 1 && m >= 256 {
        g.par_chunks_mut(m)
            .zip(sigma.par_iter_mut())
            .zip(gsum.par_iter_mut())
            .enumerate()
            .for_each(shift_row);
    } else {
        g.chunks_mut(m)
            .zip(sigma.iter_mut())
            .zip(gsum.iter_mut())
            .enumerate()
            .for_each(shift_row);
    }
    let g: &[f32] = g;
    let gm = MatRef::from_row_major_slice(g, m, m);
    matmul(
        MatMut::from_row_major_slice_mut(hm, m, dv),
        Accum::Replace,
        gm,
        MatRef::from_row_major_slice(vbar, m, dv),
        1.0,
        par,
    );

    // 2.–5. Per block: local softmax with the coarse normalizer, X = A·V, local
    // solves for P (into y) and w, and their block means.
    let (hm, sigma, gsum): (&[f32], &[f32], &[f32]) = (hm, sigma, gsum);
    let local = |buf: &mut Vec<f32>,
                 (bi, (((yb, wb), pb), cb)): (
        usize,
        (((&mut [f32], &mut [f32]), &mut [f32]), &mut f32),
    )| {
        let nb = wb.len();
        let r0 = bi * b;
        let ldx = dv + 1;
        let need = nb * nb + nb * ldx + nb * nb * usize::from(!causal);
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        let (sblk, rest) = buf.split_at_mut(nb * nb);
        let (xb, tb) = rest.split_at_mut(nb * ldx);
        matmul(
            MatMut::from_row_major_slice_mut(sblk, nb, nb),
            Accum::Replace,
            MatRef::from_row_major_slice(&q[r0 * dk..(r0 + nb) * dk], nb, dk),
            MatRef::from_row_major_slice(&k[r0 * dk..(r0 + nb) * dk], nb, dk).transpose(),
            scale,
            Par::Seq,
        );
        small::softmax_rows(
            sblk,
            nb,
            nb,
            |r| if causal { r + 1 } else { nb },
            sigma[bi],
            gsum[bi],
            wb,
        );
        // The product goes to the contiguous output block first: faer's small-matrix
        // kernels may store whole vectors past the last column of a strided row.
        matmul(
            MatMut::from_row_major_slice_mut(yb, nb, dv),
            Accum::Replace,
            MatRef::from_row_major_slice(sblk, nb, nb),
            MatRef::from_row_major_slice(&v[r0 * dv..(r0 + nb) * dv], nb, dv),
            1.0,
            Par::Seq,
        );
        let hrow = &hm[bi * dv..(bi + 1) * dv];
        for ((xr, &z), yr) in xb
            .chunks_exact_mut(ldx)
            .zip(wb.iter())
            .zip(yb.chunks_exact(dv))
        {
            for ((a, &hh), &p) in xr[..dv].iter_mut().zip(hrow).zip(yr) {
                *a = p + z * hh;
            }
            xr[dv] = z;
        }
        if causal {
            small::unit_minus_lower_solve(sblk, nb, gamma, xb, ldx, nb, ldx);
        } else {
            small::unit_minus_full_solve(sblk, nb, gamma, xb, ldx, nb, ldx, tb);
        }
        pb.fill(0.0);
        let mut csum = 0.0f32;
        for ((xr, yr), wr) in xb
            .chunks_exact(ldx)
            .zip(yb.chunks_exact_mut(dv))
            .zip(wb.iter_mut())
        {
            yr.copy_from_slice(&xr[..dv]);
            *wr = xr[dv];
            csum += xr[dv];
            for (a, &p) in pb.iter_mut().zip(yr.iter()) {
                *a += p;
            }
        }
        let inv = 1.0 / nb as f32;
        pb.iter_mut().for_each(|a| *a *= inv);
        *cb = csum * inv;
    };
    if threads(par) > 1 && m > 1 {
        y.par_chunks_mut(b * dv)
            .zip(w.par_chunks_mut(b))
            .zip(pbar.par_chunks_mut(dv))
            .zip(cvec.par_iter_mut())
            .enumerate()
            .for_each_init(Vec::new, local);
    } else {
        let mut buf = Vec::new();
        y.chunks_mut(b * dv)
            .zip(w.chunks_mut(b))
            .zip(pbar.chunks_mut(dv))
            .zip(cvec.iter_mut())
            .enumerate()
            .for_each(|item| local(&mut buf, item));
    }

    // 6. Reduced system (I − γ·diag(c)·G̃)·u = p̄, and s = G̃·u.
    if causal {
        for a in (0..m).step_by(REDUCED_PANEL) {
            let e = (a + REDUCED_PANEL).min(m);
            let sp = &mut sred[a * dv..e * dv];
            if a > 0 {
                matmul(
                    MatMut::from_row_major_slice_mut(sp, e - a, dv),
                    Accum::Replace,
                    gm.submatrix(a, 0, e - a, a),
                    MatRef::from_row_major_slice(&u[..a * dv], a, dv),
                    1.0,
                    par,
                );
            } else {
                sp.fill(0.0);
            }
            for i in a..e {
                let (done, cur) = u.split_at_mut(i * dv);
                let si = &mut sred[i * dv..(i + 1) * dv];
                for j in a..i {
                    let gij = g[i * m + j];
                    if gij != 0.0 {
                        for (o, &uu) in si.iter_mut().zip(&done[j * dv..(j + 1) * dv]) {
                            *o += gij * uu;
                        }
                    }
                }
                let f = gamma * cvec[i];
                for ((o, &p), &ss) in cur[..dv]
                    .iter_mut()
                    .zip(&pbar[i * dv..(i + 1) * dv])
                    .zip(si.iter())
                {
                    *o = p + f * ss;
                }
            }
        }
    } else {
        for (i, row) in rmat.chunks_exact_mut(m).enumerate() {
            let f = -gamma * cvec[i];
            for (r, &gg) in row.iter_mut().zip(&g[i * m..(i + 1) * m]) {
                *r = f * gg;
            }
            row[i] += 1.0;
        }
        u.copy_from_slice(pbar);
        let lu = MatRef::from_row_major_slice(rmat, m, m).partial_piv_lu();
        lu.solve_in_place(MatMut::from_row_major_slice_mut(u, m, dv));
        matmul(
            MatMut::from_row_major_slice_mut(sred, m, dv),
            Accum::Replace,
            gm,
            MatRef::from_row_major_slice(u, m, dv),
            1.0,
            par,
        );
    }

    // 7. Y_I = (1−γ)·(P_I + γ·w_I ⊗ s_I).
    let sred: &[f32] = sred;
    let combine = |(bi, (yb, wb)): (usize, (&mut [f32], &mut [f32]))| {
        let si = &sred[bi * dv..(bi + 1) * dv];
        for (yr, &wt) in yb.chunks_exact_mut(dv).zip(wb.iter()) {
            let f = gamma * wt;
            for (a, &ss) in yr.iter_mut().zip(si) {
                *a = (1.0 - gamma) * (*a + f * ss);
            }
        }
    };
    if threads(par) > 1 && m > 1 {
        y.par_chunks_mut(b * dv)
            .zip(w.par_chunks_mut(b))
            .enumerate()
            .for_each(combine);
    } else {
        y.chunks_mut(b * dv)
            .zip(w.chunks_mut(b))
            .enumerate()
            .for_each(combine);
    }
    Ok(())
}
