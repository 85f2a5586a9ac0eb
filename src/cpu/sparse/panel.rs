//! The loop over panels: phase 1 ([`panel_rows`]) in parallel, then phase 2, the
//! sequential substitution inside the panel ([`substitute`]).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::Pattern;
use super::compact::{Compact, gather_rows};
use super::far::{FAR_ROWS_PER_RESIDUE, FarLogits};
use super::rows::{PanelRows, panel_rows};
use crate::cpu::simd::{axpy, multiversion};
use crate::cpu::{Head, KernelScratch, grow, threads};
use crate::error::Result;

/// Rows per panel. Entries of a panel's rows on columns before the panel (the far
/// part: almost all of them) are settled in the parallel phase; only entries inside
/// the panel wait for the sequential substitution, O(n·PANEL·dv) in all, so the panel
/// is kept short.
const PANEL: usize = 64;

/// The resolvent of `pattern` for one head, into `y` (see the module's description).
pub(super) fn run(
    h: &Head<'_>,
    pattern: Pattern,
    y: &mut [f32],
    s: &mut KernelScratch,
    par: Par,
) -> Result<()> {
    let Head {
        k,
        v,
        n,
        dk,
        dv,
        gamma,
        ..
    } = *h;
    let t = threads(par);
    let panel = PANEL.min(n);
    // Not monotone in i for `fixed` (a block's last row is longer than the next one).
    let max_row = (0..n).map(|i| pattern.row_len(i)).max().unwrap_or(0);
    let compact = Compact::new(pattern, n);
    let nc = compact.rows.len();
    let logit_len = if pattern.is_static() { 0 } else { panel * n };
    // U = V + γ·W for settled rows (the far entries' right-side term), regular and
    // compact; with γ = 0 it is V itself and needs no buffer.
    let ulen = if gamma == 0.0 { 0 } else { n * dv };
    let uclen = if gamma == 0.0 { 0 } else { nc * dv };
    let [vals, logits, kc, vc, u, uc] =
        s.parts([panel * max_row, logit_len, nc * dk, nc * dv, ulen, uclen])?;
    gather_rows(k, dk, &compact.rows, kc);
    gather_rows(v, dv, &compact.rows, vc);
    // Sized by the input (a panel of the longest row): grown fallibly like the rest.
    let mut cols: Vec<u32> = Vec::new();
    grow(
        &mut cols,
        panel * max_row,
        "the sparse kernel's column lists",
    )?;
    let mut offs: Vec<usize> = Vec::new();
    grow(&mut offs, panel + 1, "the sparse kernel's row offsets")?;
    let mut far = FarLogits::default();
    let far_l = match pattern {
        Pattern::Strided { l } if l < n => Some(l),
        _ => None,
    };
    for p0 in (0..n).step_by(panel) {
        let p1 = (p0 + panel).min(n);
        let rows = p1 - p0;
        if let Some(l) = far_l
            && p0 >= far.c1
        {
            let c1 = (p0 + (FAR_ROWS_PER_RESIDUE * l).next_multiple_of(panel)).min(n);
            let u_c: &[f32] = if gamma == 0.0 { vc } else { uc };
            far.fill(h, l, &compact, [kc, u_c], p0, c1, par);
        }
        for (r, i) in (p0..p1).enumerate() {
            offs[r + 1] = offs[r] + pattern.row_len(i);
        }
        let nz = offs[rows];
        if !pattern.is_static() {
            // One GEMM scores the whole panel against every key before its end; row r
            // reads columns 0..=p0 + r of it.
            matmul(
                MatMut::from_row_major_slice_mut(&mut logits[..rows * p1], rows, p1),
                Accum::Replace,
                MatRef::from_row_major_slice(&h.q[p0 * dk..p1 * dk], rows, dk),
                MatRef::from_row_major_slice(&k[..p1 * dk], p1, dk).transpose(),
                h.scale,
                par,
            );
        }
        let (ur, ucr): (&[f32], &[f32]) = if gamma == 0.0 { (v, vc) } else { (u, uc) };
        let phase1 = PanelRows {
            h,
            pattern,
            compact: &compact,
            kc,
            vc,
            u: ur,
            uc: ucr,
            p0,
            offs: &offs,
            logits: &logits[..if pattern.is_static() { 0 } else { rows * p1 }],
            ld: p1,
            far: far_l.map(|_| &far),
        };
        let yp = &mut y[p0 * dv..p1 * dv];
        let (cp, vp) = (&mut cols[..nz], &mut vals[..nz]);
        if t > 1 && rows > 1 {
            // Split the panel into row groups with their entries, one task each.
            let groups = (t * 2).min(rows);
            let per = rows.div_ceil(groups);
            let mut tasks = Vec::with_capacity(groups);
            let (mut yr, mut cr, mut vr) = (yp, cp, vp);
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + per).min(rows);
                let len = offs[r1] - offs[r0];
                let (ya, yb) = std::mem::take(&mut yr).split_at_mut((r1 - r0) * dv);
                let (ca, cb) = std::mem::take(&mut cr).split_at_mut(len);
                let (va, vb) = std::mem::take(&mut vr).split_at_mut(len);
                tasks.push((r0, r1, ya, ca, va));
                (yr, cr, vr) = (yb, cb, vb);
                r0 = r1;
            }
            tasks
                .into_par_iter()
                .for_each(|(r0, r1, ya, ca, va)| panel_rows(&phase1, r0, r1, ya, ca, va));
        } else {
            panel_rows(&phase1, 0, rows, yp, cp, vp);
        }
        if gamma != 0.0 {
            substitute(
                &cols[..nz],
                &vals[..nz],
                &offs,
                p0,
                p1,
                gamma,
                &mut y[p0 * dv..p1 * dv],
                dv,
            );
            // Settle the panel's U rows, regular and compact.
            for i in p0..p1 {
                let (vi, wi) = (&v[i * dv..i * dv + dv], &y[i * dv..i * dv + dv]);
                let ui = &mut u[i * dv..i * dv + dv];
                for ((o, &a), &b) in ui.iter_mut().zip(vi).zip(wi) {
                    *o = a + gamma * b;
                }
                if let Some(&c) = compact.pos.get(i).filter(|&&c| c != u32::MAX) {
                    let c = c as usize;
                    uc[c * dv..c * dv + dv].copy_from_slice(&u[i * dv..i * dv + dv]);
                }
            }
        }
    }
    if gamma != 0.0 {
        let c = 1.0 - gamma;
        if t > 1 {
            y.par_chunks_mut(1 << 14)
                .for_each(|b| b.iter_mut().for_each(|x| *x *= c));
        } else {
            y.iter_mut().for_each(|x| *x *= c);
        }
    }
    Ok(())
}

multiversion! {
    /// The sequential part of a panel, in place on its rows `yp` (holding `x_i` on entry,
    /// `w_i` on return): `w_i = (x_i + γ·Σ_{p0 ≤ j < i} a_ij·w_j) / (1 − γ·a_ii)`.
    fn substitute(
        cols: &[u32],
        vals: &[f32],
        offs: &[usize],
        p0: usize,
        p1: usize,
        gamma: f32,
        yp: &mut [f32],
        dv: usize,
    ) {
        for i in p0..p1 {
            let r = i - p0;
            let (done, cur) = yp.split_at_mut(r * dv);
            let wi = &mut cur[..dv];
            let (cs, vs) = (&cols[offs[r]..offs[r + 1]], &vals[offs[r]..offs[r + 1]]);
            // Columns increase: the in-panel entries are a suffix, the diagonal (when in
            // S_i) its last element.
            let first = cs.partition_point(|&j| (j as usize) < p0);
            let mut diag = 0.0;
            for (&j, &a) in cs[first..].iter().zip(&vs[first..]) {
                let j = j as usize;
                if j == i {
                    diag = a;
                } else {
                    axpy::<FMA>(wi, gamma * a, &done[(j - p0) * dv..(j - p0) * dv + dv]);
                }
            }
            let inv = 1.0 / (1.0 - gamma * diag);
            wi.iter_mut().for_each(|x| *x *= inv);
        }
    }
}
