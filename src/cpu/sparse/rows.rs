//! Phase 1 of a panel: what is independent per row.

use super::Pattern;
use super::compact::Compact;
use super::far::FarLogits;
use super::select::{SelectScratch, select_top, softmax};
use crate::cpu::simd::{dot, gather_axpy, multiversion};
use crate::cpu::{Head, small};

/// Phase 1 of a panel: everything that is independent per row.
pub(super) struct PanelRows<'a> {
    pub(super) h: &'a Head<'a>,
    pub(super) pattern: Pattern,
    pub(super) compact: &'a Compact,
    /// Compact copies of K and V (see [`Compact`]).
    pub(super) kc: &'a [f32],
    pub(super) vc: &'a [f32],
    /// `U = V + γ·W`, regular and compact; rows before `p0` are settled.
    pub(super) u: &'a [f32],
    pub(super) uc: &'a [f32],
    pub(super) p0: usize,
    pub(super) offs: &'a [usize],
    /// `topk` only: the panel's scaled logits, row stride `ld`.
    pub(super) logits: &'a [f32],
    pub(super) ld: usize,
    /// `strided` only: the far logits, computed ahead for the chunk holding the panel.
    pub(super) far: Option<&'a FarLogits>,
}

multiversion! {
    /// Rows `r0..r1` of the panel: `y` holds their right sides on return,
    /// `x_i = Σ_{j<p0} a_ij·u_j + Σ_{j≥p0} a_ij·v_j`, and `cols`/`vals` their entries
    /// (starting at `offs[r0]`).
    pub(super) fn panel_rows(
        p: &PanelRows<'_>,
        r0: usize,
        r1: usize,
        y: &mut [f32],
        cols: &mut [u32],
        vals: &mut [f32],
    ) {
        let Head {
            q,
            k,
            v,
            dk,
            dv,
            scale,
            ..
        } = *p.h;
        let (p0, u, uc) = (p.p0, p.u, p.uc);
        let base = p.offs[r0];
        let mut order = SelectScratch::default();
        for r in r0..r1 {
            let i = p0 + r;
            let (o0, o1) = (p.offs[r] - base, p.offs[r + 1] - base);
            let (cs, vs) = (&mut cols[o0..o1], &mut vals[o0..o1]);
            // The first `nk` entries are read from the compact copies at `cb..`; with
            // `far`, the first `t_old` of them are already summed in `far`.
            let (nk, cb) = p.compact.prefix(p.pattern, i);
            let mut t_old = 0;
            if p.pattern.is_static() {
                p.pattern.fill_columns(i, cs);
                let qi = &q[i * dk..i * dk + dk];
                match p.far {
                    Some(f) => {
                        let (o, t) = (f.off[i - f.c0], f.told[i - f.c0]);
                        t_old = t;
                        vs[t..nk].copy_from_slice(&f.buf[o + t..o + nk]);
                    }
                    None => {
                        for (t, a) in vs[..nk].iter_mut().enumerate() {
                            let c = cb + t;
                            *a = scale * dot::<FMA>(qi, &p.kc[c * dk..c * dk + dk]);
                        }
                    }
                }
                for (a, &j) in vs[nk..].iter_mut().zip(cs[nk..].iter()) {
                    let j = j as usize;
                    *a = scale * dot::<FMA>(qi, &k[j * dk..j * dk + dk]);
                }
            } else {
                let row = &p.logits[r * p.ld..r * p.ld + i + 1];
                select_top(row, cs, &mut order);
                for (a, &j) in vs.iter_mut().zip(cs.iter()) {
                    *a = row[j as usize];
                }
            }
            let xi = &mut y[(r - r0) * dv..(r - r0 + 1) * dv];
            match p.far {
                Some(f) if t_old > 0 => {
                    // Softmax over the entries after the old ones, with the old ones'
                    // (m_old, z_old, s_old) folded in; `vs[..t_old]` is left unused
                    // (those columns precede the panel, so the substitution never
                    // reads them).
                    let x = f.rec[i - f.c0];
                    let (m_old, z_old) = (f.mz[2 * x], f.mz[2 * x + 1]);
                    let rest = &mut vs[t_old..];
                    let m = m_old.max(small::max_f32(rest));
                    for a in rest.iter_mut() {
                        *a = small::exp(*a - m);
                    }
                    let sc = small::exp(m_old - m);
                    let inv = 1.0 / (z_old * sc + small::sum_f32(rest));
                    rest.iter_mut().for_each(|a| *a *= inv);
                    let w = sc * inv;
                    for (o, &s) in xi.iter_mut().zip(&f.sold[x * dv..x * dv + dv]) {
                        *o = w * s;
                    }
                }
                _ => {
                    softmax(vs);
                    xi.fill(0.0);
                }
            }
            let (vc, cf, cw) = (p.vc, &cs[..nk], &cs[nk..]);
            gather_axpy::<FMA>(xi, &vs[t_old..nk], |t| {
                let c = cb + t_old + t;
                let src = if (cf[t_old + t] as usize) < p0 {
                    uc
                } else {
                    vc
                };
                &src[c * dv..c * dv + dv]
            });
            gather_axpy::<FMA>(xi, &vs[nk..], |t| {
                let j = cw[t] as usize;
                let src = if j < p0 { u } else { v };
                &src[j * dv..j * dv + dv]
            });
        }
    }
}
