//! Exact ChaCAL (SPEC §1). Causal: row panels streamed against the keys before them,
//! so memory stays O(n·(panel + d)) while time is O(n²·d); bidirectional: the full
//! n×n system solved by LU in f64.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Head, KernelScratch, small, threads};
use crate::config::CoarseQuery;
use crate::error::{Error, Result};

/// Rows per panel. Large enough that the panel products run at GEMM speed, small
/// enough that the in-panel forward substitution (O(n·panel·d)) stays negligible.
const PANEL: usize = 128;

/// Largest n for the bidirectional dense path (its n×n f64 matrix is 8 GiB there).
pub const MAX_BIDIRECTIONAL_N: usize = 32768;

pub(crate) fn evaluate(
    h: &Head<'_>,
    causal: bool,
    y: &mut [f32],
    s: &mut KernelScratch,
    par: Par,
) -> Result<()> {
    if causal {
        causal_panels(h, y, s, par)
    } else {
        bidirectional(h, y, par)
    }
}

fn rows_of(x: &[f32], d: usize, r0: usize, r1: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(&x[r0 * d..r1 * d], r1 - r0, d)
}

/// Row softmax of a `rows × ld` panel whose row `r` may see columns `< limit(r)`,
/// spread over threads when there are enough rows.
fn softmax_panel(
    sm: &mut [f32],
    ld: usize,
    rows: usize,
    limit: impl Fn(usize) -> usize + Sync,
    par: Par,
) {
    let t = threads(par);
    if t > 1 && rows * ld >= 1 << 15 {
        let per = rows.div_ceil(t * 4).max(1);
        sm.par_chunks_mut(per * ld)
            .enumerate()
            .for_each(|(c, chunk)| {
                let r0 = c * per;
                small::softmax_rows(
                    chunk,
                    ld,
                    chunk.len() / ld,
                    |r| limit(r0 + r),
                    f32::NEG_INFINITY,
                    0.0,
                    &mut [],
                );
            });
    } else {
        small::softmax_rows(sm, ld, rows, limit, f32::NEG_INFINITY, 0.0, &mut []);
    }
}

fn causal_panels(h: &Head<'_>, y: &mut [f32], s: &mut KernelScratch, par: Par) -> Result<()> {
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
    let p = PANEL.min(n);
    let [sbuf, vp] = s.parts([p * n, n * dv])?;
    for start in (0..n).step_by(p) {
        let end = (start + p).min(n);
        let rows = end - start;
        let sm = &mut sbuf[..rows * end];
        matmul(
            MatMut::from_row_major_slice_mut(sm, rows, end),
            Accum::Replace,
            rows_of(q, dk, start, end),
            rows_of(k, dk, 0, end).transpose(),
            scale,
            par,
        );
        softmax_panel(sm, end, rows, |r| start + r + 1, par);
        let sm: &[f32] = sm;
        let a = MatRef::from_row_major_slice(sm, rows, end);
        let yp = &mut y[start * dv..end * dv];
        matmul(
            MatMut::from_row_major_slice_mut(yp, rows, dv),
            Accum::Replace,
            a.subcols(start, rows),
            rows_of(v, dv, start, end),
            1.0,
            par,
        );
        if start > 0 {
            matmul(
                MatMut::from_row_major_slice_mut(yp, rows, dv),
                Accum::Add,
                a.subcols(0, start),
                rows_of(vp, dv, 0, start),
                1.0,
                par,
            );
        }
        small::unit_minus_lower_solve(&sm[start..], end, gamma, yp, dv, rows, dv);
        // Later panels need V + γ·W for these rows: their right side is
        // A_past·V_past + γ·A_past·W_past.
        for ((o, &w), &vv) in vp[start * dv..end * dv]
            .iter_mut()
            .zip(yp.iter())
            .zip(&v[start * dv..end * dv])
        {
            *o = vv + gamma * w;
        }
    }
    let c = 1.0 - gamma;
    y.iter_mut().for_each(|x| *x *= c);
    Ok(())
}

/// The whole `n×n` system: the block path with one block, in f64 (see `bidir`: the
/// f32 LU lost 2.7e-4 at γ = 0.99999).
fn bidirectional(h: &Head<'_>, y: &mut [f32], par: Par) -> Result<()> {
    let n = h.n;
    if n > MAX_BIDIRECTIONAL_N {
        return Err(Error::Unsupported(format!(
            "structure 'dense' with causal = 0 forms an n×n matrix; n = {n} exceeds {MAX_BIDIRECTIONAL_N}, use structure 'block'"
        )));
    }
    super::bidir::evaluate(h, n, CoarseQuery::Mean, y, par)
}
