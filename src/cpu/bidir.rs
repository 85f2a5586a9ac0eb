//! Bidirectional block-structured resolvent attention (SPEC §2 with `causal = 0`),
//! evaluated in f64.
//!
//! Why f64: without a mask every row of `I − γA` feels the whole sequence, and as
//! γ → 1 the reduced m×m system `R = I − γ·diag(c)·G̃` inherits the near-singularity
//! of `I − γA` (its smallest singular value shrinks like 1 − γ). A relative error ε in
//! `c` or `G̃` then moves the solution by about ε/(1 − γ): in f32 that was 1e-3 at
//! γ = 0.9999 and 0.3 at γ = 0.99999 (b = 1024), against 7e-6 for the dense LU. In f64
//! the same steps stay near 1e-12. The cost is O(n·b² + m³) as before, in f64.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::lu::partial_pivoting::{factor, solve};
use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Head, grow, threads};
use crate::config::CoarseQuery;
use crate::error::{Error, Result};

/// One block of the local stage: (block index, (([P | w] rows, p̄), c)).
type BlockItem<'a> = (usize, ((&'a mut [f64], &'a mut [f64]), &'a mut f64));

fn buffer(len: usize, what: &'static str) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    grow(&mut v, len, what)?;
    Ok(v)
}

/// Solve `T·X = B` in place (`T` row-major `n×n`, destroyed; `X` row-major `n×w`) by
/// faer's in-place partial-pivoting LU on the caller's `par`. The row-major buffer
/// read column-major is `Tᵀ`, so factoring that and solving with the transpose
/// avoids a copy; the pivot arrays and faer's scratch are fallible allocations.
fn lu_solve(t: &mut [f64], n: usize, x: &mut [f64], w: usize, par: Par) -> Result<()> {
    let oom = |bytes: usize| Error::OutOfMemory {
        what: "a bidirectional LU's pivots and scratch",
        bytes,
    };
    let req = StackReq::all_of(&[
        StackReq::new::<usize>(n).array(2),
        factor::lu_in_place_scratch::<usize, f64>(n, n, par, Default::default()),
        solve::solve_transpose_in_place_scratch::<usize, f64>(n, w, par),
    ]);
    let mut mem = MemBuffer::try_new(req).map_err(|_| oom(req.unaligned_bytes_required()))?;
    let stack = MemStack::new(&mut mem);
    let (mut perm, stack) = stack.make_with(n, |_| 0usize);
    let (mut perm_inv, stack) = stack.make_with(n, |_| 0usize);
    let mut lu = MatMut::from_column_major_slice_mut(t, n, n);
    let (_, p) = factor::lu_in_place(
        lu.rb_mut(),
        &mut perm,
        &mut perm_inv,
        par,
        stack,
        Default::default(),
    );
    let lu = lu.rb();
    solve::solve_transpose_in_place(
        lu,
        lu,
        p,
        MatMut::from_row_major_slice_mut(x, n, w),
        par,
        stack,
    );
    Ok(())
}

/// `y ← (1−γ)·(I − γA)⁻¹·A·V` for the bidirectional block matrix of one head.
pub(crate) fn evaluate(
    h: &Head<'_>,
    b: usize,
    coarse_query: CoarseQuery,
    y: &mut [f32],
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
    for (tensor, x) in [("Q", q), ("K", k), ("V", v)] {
        if super::small::any_non_finite(x) {
            // The caller locates the offending element.
            return Err(Error::NonFinite { tensor, index: 0 });
        }
    }
    let (scale, gamma) = (f64::from(scale), f64::from(gamma));
    let b = b.clamp(1, n);
    let m = n.div_ceil(b);
    let rows = |j: usize| j * b..((j + 1) * b).min(n);

    // 1. Block means (or first queries), coarse logits with ln n_J, shifted G̃.
    let what = "the bidirectional coarse stage (f64)";
    let (mut qbar, mut kbar, mut vbar) = (
        buffer(m * dk, what)?,
        buffer(m * dk, what)?,
        buffer(m * dv, what)?,
    );
    for j in 0..m {
        let r = rows(j);
        let inv = 1.0 / r.len() as f64;
        let mean = |x: &[f32], d: usize, out: &mut [f64]| {
            for row in x[r.start * d..r.end * d].chunks_exact(d) {
                for (o, &a) in out.iter_mut().zip(row) {
                    *o += f64::from(a);
                }
            }
            out.iter_mut().for_each(|o| *o *= inv);
        };
        match coarse_query {
            CoarseQuery::First => {
                for (o, &a) in qbar[j * dk..(j + 1) * dk]
                    .iter_mut()
                    .zip(&q[r.start * dk..])
                {
                    *o = f64::from(a);
                }
            }
            CoarseQuery::Mean => mean(q, dk, &mut qbar[j * dk..(j + 1) * dk]),
        }
        mean(k, dk, &mut kbar[j * dk..(j + 1) * dk]);
        mean(v, dv, &mut vbar[j * dv..(j + 1) * dv]);
    }
    let mut g = buffer(m * m, what)?;
    matmul(
        MatMut::from_row_major_slice_mut(&mut g, m, m),
        Accum::Replace,
        MatRef::from_row_major_slice(&qbar, m, dk),
        MatRef::from_row_major_slice(&kbar, m, dk).transpose(),
        scale,
        par,
    );
    let ln_count: Vec<f64> = (0..m).map(|j| (rows(j).len() as f64).ln()).collect();
    let mut sigma = vec![f64::NEG_INFINITY; m];
    let mut gsum = vec![0.0f64; m];
    for (i, row) in g.chunks_exact_mut(m).enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = if j == i {
                f64::NEG_INFINITY
            } else {
                *x + ln_count[j]
            };
        }
        sigma[i] = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for x in row.iter_mut() {
            *x = if sigma[i].is_finite() {
                (*x - sigma[i]).exp()
            } else {
                0.0
            };
        }
        gsum[i] = row.iter().sum();
    }
    let mut hm = buffer(m * dv, what)?; // G̃·v̄
    matmul(
        MatMut::from_row_major_slice_mut(&mut hm, m, dv),
        Accum::Replace,
        MatRef::from_row_major_slice(&g, m, m),
        MatRef::from_row_major_slice(&vbar, m, dv),
        1.0,
        par,
    );

    // 2.–5. Per block: local softmax with the coarse normalizer, X = A·V, the full
    // local solve M_I·[P_I, w_I] = [X_I, z̃_I] (LU), and the block means p̄_I, c_I.
    let ldx = dv + 1;
    let mut pw = buffer(n * ldx, "the bidirectional local solutions (f64)")?;
    let mut pbar = buffer(m * dv, what)?;
    let mut cvec = vec![0.0f64; m];
    // One block (m = 1, the dense operator) gets the threads inside its products and
    // LU; several blocks are spread over the threads instead.
    let inner = if m > 1 { Par::Seq } else { par };
    let local = |buf: &mut Vec<f64>, (j, ((x, pb), cb)): BlockItem<'_>| -> Result<()> {
        let r = rows(j);
        let nb = r.len();
        grow(
            buf,
            nb * (nb + 2 * dk + 2 * dv),
            "a bidirectional block's local system (f64)",
        )?;
        let (t, rest) = buf.split_at_mut(nb * nb);
        let (qb, rest) = rest.split_at_mut(nb * dk);
        let (kb, rest) = rest.split_at_mut(nb * dk);
        let (vb, rest) = rest.split_at_mut(nb * dv);
        let dvb = &mut rest[..nb * dv];
        for (o, &a) in qb.iter_mut().zip(&q[r.start * dk..r.end * dk]) {
            *o = f64::from(a);
        }
        for (o, &a) in kb.iter_mut().zip(&k[r.start * dk..r.end * dk]) {
            *o = f64::from(a);
        }
        for (o, &a) in vb.iter_mut().zip(&v[r.start * dv..r.end * dv]) {
            *o = f64::from(a);
        }
        matmul(
            MatMut::from_row_major_slice_mut(t, nb, nb),
            Accum::Replace,
            MatRef::from_row_major_slice(qb, nb, dk),
            MatRef::from_row_major_slice(kb, nb, dk).transpose(),
            scale,
            inner,
        );
        // Row softmax over the local logits and the shifted coarse weights; x starts
        // as z̃ ⊗ (G̃·v̄) and gets D·V added below.
        for (trow, xr) in t.chunks_exact_mut(nb).zip(x.chunks_exact_mut(ldx)) {
            let mx = trow.iter().copied().fold(sigma[j], f64::max);
            let cross = if sigma[j].is_finite() {
                (sigma[j] - mx).exp()
            } else {
                0.0
            };
            let mut z = cross * gsum[j];
            for e in trow.iter_mut() {
                *e = (*e - mx).exp();
                z += *e;
            }
            let inv = 1.0 / z;
            trow.iter_mut().for_each(|e| *e *= inv);
            let zt = cross * inv;
            for (o, &hh) in xr[..dv].iter_mut().zip(&hm[j * dv..(j + 1) * dv]) {
                *o = zt * hh;
            }
            xr[dv] = zt;
        }
        matmul(
            MatMut::from_row_major_slice_mut(dvb, nb, dv),
            Accum::Replace,
            MatRef::from_row_major_slice(t, nb, nb),
            MatRef::from_row_major_slice(vb, nb, dv),
            1.0,
            inner,
        );
        for (xr, dr) in x.chunks_exact_mut(ldx).zip(dvb.chunks_exact(dv)) {
            for (o, &a) in xr[..dv].iter_mut().zip(dr) {
                *o += a;
            }
        }
        for (i, trow) in t.chunks_exact_mut(nb).enumerate() {
            trow.iter_mut().for_each(|e| *e *= -gamma);
            trow[i] += 1.0;
        }
        lu_solve(t, nb, x, ldx, inner)?;
        pb.fill(0.0);
        let mut csum = 0.0;
        for xr in x.chunks_exact(ldx) {
            for (a, &p) in pb.iter_mut().zip(&xr[..dv]) {
                *a += p;
            }
            csum += xr[dv];
        }
        let inv = 1.0 / nb as f64;
        pb.iter_mut().for_each(|a| *a *= inv);
        *cb = csum * inv;
        Ok(())
    };
    let items = pw
        .chunks_mut(b * ldx)
        .zip(pbar.chunks_mut(dv))
        .zip(cvec.iter_mut())
        .enumerate();
    if threads(par) > 1 && m > 1 {
        items
            .collect::<Vec<_>>()
            .into_par_iter()
            .try_for_each_init(Vec::new, local)?;
    } else {
        let mut buf = Vec::new();
        for item in items {
            local(&mut buf, item)?;
        }
    }

    // 6. Reduced system (I − γ·diag(c)·G̃)·u = p̄, then s = G̃·u.
    let mut rmat = buffer(m * m, what)?;
    for (i, (row, grow_)) in rmat.chunks_exact_mut(m).zip(g.chunks_exact(m)).enumerate() {
        let f = -gamma * cvec[i];
        for (o, &gg) in row.iter_mut().zip(grow_) {
            *o = f * gg;
        }
        row[i] += 1.0;
    }
    lu_solve(&mut rmat, m, &mut pbar, dv, par)?;
    let mut s = buffer(m * dv, what)?;
    matmul(
        MatMut::from_row_major_slice_mut(&mut s, m, dv),
        Accum::Replace,
        MatRef::from_row_major_slice(&g, m, m),
        MatRef::from_row_major_slice(&pbar, m, dv),
        1.0,
        par,
    );

    // 7. Y_I = (1−γ)·(P_I + γ·w_I ⊗ s_I).
    for (i, (yr, xr)) in y.chunks_exact_mut(dv).zip(pw.chunks_exact(ldx)).enumerate() {
        let sj = &s[(i / b) * dv..(i / b + 1) * dv];
        let f = gamma * xr[dv];
        for ((o, &p), &ss) in yr.iter_mut().zip(&xr[..dv]).zip(sj) {
            *o = ((1.0 - gamma) * (p + f * ss)) as f32;
        }
    }
    Ok(())
}
