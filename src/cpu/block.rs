//! Block-structured resolvent attention (SPEC §2) by the Woodbury/Schur reduction:
//! exact attention inside blocks of `b` tokens, block means across them, and an m×m
//! reduced system for the cross-block part. Never forms an n×n matrix.
//!
//! With `A = D + U·Fᵀ`, `M = I − γD` block diagonal and `U = diag(z)·E·G`:
//! `P = M⁻¹·A·V`, `w = M⁻¹·z`, `(I − γ·diag(c)·G)·u = p̄`, and
//! `Y_I = (1−γ)·(P_I + γ·w_I ⊗ (G·u)_I)`. G is kept shifted per block row
//! (`G̃_IJ = exp(L_IJ + ln n_J − σ_I)`), and the shift is folded into `z`, so no
//! exponential can overflow.
//!
//! The coarse logits use the mean query of each block, or with
//! [`CoarseQuery::First`] the query of its first token (SPEC §2, `coarse_query`).

use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Head, KernelScratch, simd, small, threads};
use crate::config::CoarseQuery;
use crate::error::{Error, Result};

/// The block size `block_size = 0` resolves to, for sequence length `n` and head
/// width `d` (the larger of dk and dv).
///
/// The cost is about `c₁·n·b·d` for the local blocks plus `c₂·(n/b)²·d` for the
/// reduced system, minimized at `b ∝ n^{1/3}`. The rule `b ≈ 1.5·n^{1/3}`, rounded to
/// a multiple of 16 (the SIMD-friendly widths) within [16, 512], is the optimum of
/// sweeps over b at n = 2^14, 2^16, 2^18 with d = 64 on x86-64 (BENCHMARKS.md).
/// `d` is accepted for rules fitted on other widths. Sequences of at most `2·b`
/// tokens use a single block, which is the exact dense operator.
///
/// ```
/// use blockres::auto_block_size;
/// assert_eq!(auto_block_size(20, 64), 20);
/// assert_eq!(auto_block_size(1 << 16, 64), 64);
/// let b = auto_block_size(1 << 20, 64);
/// assert!(b >= 128 && b <= 176);
/// ```
pub fn auto_block_size(n: usize, d: usize) -> usize {
    let _ = d;
    let b = ((1.5 * (n as f64).cbrt() / 16.0).round() as usize * 16).clamp(16, 512);
    if n <= 2 * b { n.max(1) } else { b }
}

simd::multiversion! {
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
}

/// One row panel of the coarse stage as the zipped iterators yield it:
/// (panel index, (((G̃ rows, H rows), σ), Σ G̃)).
type PanelItem<'a> = (
    usize,
    (
        ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]),
        &'a mut [f32],
    ),
);

/// One block of the local stage: (block index, (((P rows, w), p̄, c)).
type BlockItem<'a> = (
    usize,
    (((&'a mut [f32], &'a mut [f32]), &'a mut [f32]), &'a mut f32),
);

/// Rows of the reduced system solved per step of the blocked forward substitution.
const REDUCED_PANEL: usize = 128;

/// Rows of G̃ computed per parallel task.
const COARSE_PANEL: usize = 32;

pub(crate) fn evaluate(
    h: &Head<'_>,
    b: usize,
    causal: bool,
    coarse_query: CoarseQuery,
    y: &mut [f32],
    s: &mut KernelScratch,
    par: Par,
) -> Result<()> {
    if !causal {
        return super::bidir::evaluate(h, b, coarse_query, y, par);
    }
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
    let [qbar, kbar, vbar, g, hm, pbar, cvec, sred, u, w, gsum, sigma] = s.parts([
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
    ])?;

    // 1. Block means (q̄ is used only by the coarse logits; with `First` the buffer
    // holds each block's first query instead) and the shifted coarse matrix G̃.
    for (name, x, d, out) in [
        ("Q", q, dk, &mut *qbar),
        ("K", k, dk, &mut *kbar),
        ("V", v, dv, &mut *vbar),
    ] {
        let bad = if name == "Q" && coarse_query == CoarseQuery::First {
            for (j, o) in out.chunks_exact_mut(dk).enumerate() {
                o.copy_from_slice(&q[j * b * dk..][..dk]);
            }
            // The means would have caught a non-finite query anywhere; so must this.
            small::any_non_finite(q)
        } else {
            block_means(x, d, b, n, out);
            small::any_non_finite(out)
        };
        if bad {
            // The caller locates the offending element.
            return Err(Error::NonFinite {
                tensor: name,
                index: 0,
            });
        }
    }
    // Row panels of G̃ are independent: logits, shift and exponentials, and their
    // share of H = G̃·v̄, computed panel by panel in parallel. Causal rows need only
    // the columns before the panel's end.
    let ln_b = (b as f32).ln();
    let ln_last = ((n - (m - 1) * b) as f32).ln();
    let (qbar, kbar, vbar): (&[f32], &[f32], &[f32]) = (qbar, kbar, vbar);
    let coarse_panel = |(p, (((gp, hp), sp), gsp)): PanelItem<'_>| {
        let a = p * COARSE_PANEL;
        let rows = sp.len();
        // Causal rows need only the columns before the panel's end.
        let cols = a + rows;
        let mut tmp = vec![0.0f32; rows * cols];
        matmul(
            MatMut::from_row_major_slice_mut(&mut tmp, rows, cols),
            Accum::Replace,
            MatRef::from_row_major_slice(&qbar[a * dk..(a + rows) * dk], rows, dk),
            MatRef::from_row_major_slice(&kbar[..cols * dk], cols, dk).transpose(),
            scale,
            Par::Seq,
        );
        for (r, (row, t)) in gp.chunks_mut(m).zip(tmp.chunks_exact(cols)).enumerate() {
            let i = a + r;
            let row = &mut row[..cols];
            row.copy_from_slice(t);
            // Fold ln n_J in (every block has b tokens but the last), mask, shift, exp.
            if cols == m {
                row[m - 1] += ln_last - ln_b;
            }
            row[i..].fill(f32::NEG_INFINITY);
            let mx = small::max_f32(row) + ln_b;
            if mx == f32::NEG_INFINITY {
                // No block is visible (the first block, when causal).
                row.fill(0.0);
                sp[r] = mx;
                gsp[r] = 0.0;
                continue;
            }
            sp[r] = mx;
            gsp[r] = small::exp_shift_sum(row, mx - ln_b);
        }
        matmul(
            MatMut::from_row_major_slice_mut(hp, rows, dv),
            Accum::Replace,
            MatRef::from_row_major_slice_with_stride(gp, rows, cols, m),
            MatRef::from_row_major_slice(&vbar[..cols * dv], cols, dv),
            1.0,
            Par::Seq,
        );
    };
    let panels = g
        .chunks_mut(COARSE_PANEL * m)
        .zip(hm.chunks_mut(COARSE_PANEL * dv))
        .zip(sigma.chunks_mut(COARSE_PANEL))
        .zip(gsum.chunks_mut(COARSE_PANEL))
        .enumerate();
    if threads(par) > 1 && m > COARSE_PANEL {
        panels.par_bridge().for_each(coarse_panel);
    } else {
        panels.for_each(coarse_panel);
    }
    let g: &[f32] = g;
    let gm = MatRef::from_row_major_slice(g, m, m);

    // 2.–5. Per block: local softmax with the coarse normalizer, X = A·V, local
    // solves for P (into y) and w, and their block means.
    let (hm, sigma, gsum): (&[f32], &[f32], &[f32]) = (hm, sigma, gsum);
    let local = |buf: &mut Vec<f32>, (bi, (((yb, wb), pb), cb)): BlockItem<'_>| -> Result<()> {
        let nb = wb.len();
        let r0 = bi * b;
        let ldx = dv + 1;
        let need = nb * nb + nb * ldx + nb * nb.max(dk);
        super::grow(buf, need, "a block's local system")?;
        let (sblk, rest) = buf.split_at_mut(nb * nb);
        let (xb, tb) = rest.split_at_mut(nb * ldx);
        let qb = &q[r0 * dk..(r0 + nb) * dk];
        let kb = &k[r0 * dk..(r0 + nb) * dk];
        let vb = &v[r0 * dv..(r0 + nb) * dv];
        // Kᵀ of the block (dk × nb), so both products stream rows of B.
        let kt = &mut tb[..dk * nb];
        for (j, row) in kb.chunks_exact(dk).enumerate() {
            for (t, &x) in row.iter().enumerate() {
                kt[t * nb + j] = x;
            }
        }
        let upto = |iend: usize| iend;
        small::gemm_rm(sblk, nb, qb, dk, kt, nb, nb, nb, scale, upto, |_| dk);
        small::softmax_rows(sblk, nb, nb, |r| r + 1, sigma[bi], gsum[bi], wb);
        small::gemm_rm(yb, dv, sblk, nb, vb, dv, nb, dv, 1.0, |_| dv, upto);
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
        // faer's blocked triangular solve (GEMM updates in its own SIMD dispatch)
        // beat the row-by-row substitution by ~4× at b ≥ 64 (perf, n = 65536).
        let t = &mut tb[..nb * nb];
        for (i, (tr, dr)) in t
            .chunks_exact_mut(nb)
            .zip(sblk.chunks_exact(nb))
            .enumerate()
        {
            for (a, &d) in tr[..=i].iter_mut().zip(&dr[..=i]) {
                *a = -gamma * d;
            }
            tr[i] += 1.0;
        }
        solve_lower_triangular_in_place(
            MatRef::from_row_major_slice(t, nb, nb),
            MatMut::from_row_major_slice_mut(xb, nb, ldx),
            Par::Seq,
        );
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
        Ok(())
    };
    if threads(par) > 1 && m > 1 {
        y.par_chunks_mut(b * dv)
            .zip(w.par_chunks_mut(b))
            .zip(pbar.par_chunks_mut(dv))
            .zip(cvec.par_iter_mut())
            .enumerate()
            .with_min_len(4)
            .try_for_each_init(Vec::new, local)?;
    } else {
        let mut buf = Vec::new();
        y.chunks_mut(b * dv)
            .zip(w.chunks_mut(b))
            .zip(pbar.chunks_mut(dv))
            .zip(cvec.iter_mut())
            .enumerate()
            .try_for_each(|item| local(&mut buf, item))?;
    }

    // 6. Reduced system (I − γ·diag(c)·G̃)·u = p̄, and s = G̃·u.
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
