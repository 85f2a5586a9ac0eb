//! `strided`'s far part, computed ahead for the ~32·l rows that share its reads
//! ([`FarLogits`]).

use faer::Par;
use rayon::prelude::*;

use super::compact::Compact;
use crate::cpu::simd::{dot, gather_axpy, multiversion};
use crate::cpu::{Head, small, threads};

/// `strided` only: the far part of a chunk of rows `c0..c1`, computed ahead in
/// residue order. Row `i`'s far columns are `j = i mod l + t·l`, t < ⌊i/l⌋, a
/// contiguous run of the compact copies; the ~32 rows of one residue in a chunk share
/// that run, so taking them together reads it from cache instead of memory.
///
/// Per row: the far logits, and for the *old* far columns (`j < c0`, settled before the
/// chunk: all but the last ~32) their softmax pieces relative to their own maximum
/// `m_old`: `z_old = Σ exp(ℓ_j − m_old)` and `s_old = Σ exp(ℓ_j − m_old)·u_j`. The panel
/// pass rescales these into the row's softmax, so the old `u_j` (the bulk of the memory
/// traffic at large n) are read once per residue and chunk, not once per row.
#[derive(Default)]
pub(super) struct FarLogits {
    pub(super) c0: usize,
    pub(super) c1: usize,
    /// Per chunk row: offset of its logits in `buf` (laid out residue by residue).
    pub(super) off: Vec<usize>,
    /// Per chunk row: its number of old far columns.
    pub(super) told: Vec<usize>,
    /// Per chunk row: its record in `mz`/`sold` (residue by residue).
    pub(super) rec: Vec<usize>,
    pub(super) buf: Vec<f32>,
    /// `(m_old, z_old)` per record.
    pub(super) mz: Vec<f32>,
    /// `s_old` per record, `dv` wide.
    pub(super) sold: Vec<f32>,
}

/// Rows of a residue class taken together by [`FarLogits`].
pub(super) const FAR_ROWS_PER_RESIDUE: usize = 32;

impl FarLogits {
    /// `u_c`: the compact `U` (`V` when γ = 0), settled for rows before `c0`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
        &mut self,
        h: &Head<'_>,
        l: usize,
        compact: &Compact,
        [kc, u_c]: [&[f32]; 2],
        c0: usize,
        c1: usize,
        par: Par,
    ) {
        let (dk, dv) = (h.dk, h.dv);
        self.c0 = c0;
        self.c1 = c1;
        let rows = c1 - c0;
        for v in [&mut self.off, &mut self.told, &mut self.rec] {
            v.clear();
            v.resize(rows, 0);
        }
        // Rows of residue r in the chunk: the first at or after c0, then every l.
        let first = |r: usize| c0 + (r + l - c0 % l) % l;
        let old = |r: usize| if r < c0 { (c0 - r).div_ceil(l) } else { 0 };
        let mut sizes = Vec::with_capacity(l);
        let (mut total, mut nrec) = (0, 0);
        for r in 0..l {
            let (start, rstart) = (total, nrec);
            for i in (first(r)..c1).step_by(l) {
                self.off[i - c0] = total;
                self.told[i - c0] = old(r);
                self.rec[i - c0] = nrec;
                total += i / l;
                nrec += 1;
            }
            sizes.push((total - start, nrec - rstart));
        }
        self.buf.resize(total, 0.0);
        self.mz.resize(2 * nrec, 0.0);
        self.sold.resize(nrec * dv, 0.0);
        let (mut rb, mut rm, mut rs) = (&mut self.buf[..], &mut self.mz[..], &mut self.sold[..]);
        let mut tasks = Vec::with_capacity(l);
        for (r, &(len, nr)) in sizes.iter().enumerate() {
            let (a, b) = std::mem::take(&mut rb).split_at_mut(len);
            let (ma, mb) = std::mem::take(&mut rm).split_at_mut(2 * nr);
            let (sa, sb) = std::mem::take(&mut rs).split_at_mut(nr * dv);
            (rb, rm, rs) = (b, mb, sb);
            if nr > 0 {
                tasks.push((r, a, ma, sa));
            }
        }
        let one = |(r, out, mz, sold): (usize, &mut [f32], &mut [f32], &mut [f32])| {
            let base = compact.start[r];
            let t_old = old(r);
            let mut o = 0;
            for (x, i) in (first(r)..c1).step_by(l).enumerate() {
                let far = i / l;
                far_row(
                    &h.q[i * dk..i * dk + dk],
                    &kc[base * dk..(base + far) * dk],
                    &u_c[base * dv..(base + t_old) * dv],
                    h.scale,
                    &mut out[o..o + far],
                    t_old,
                    &mut mz[2 * x..2 * x + 2],
                    &mut sold[x * dv..x * dv + dv],
                );
                o += far;
            }
        };
        if threads(par) > 1 {
            tasks.into_par_iter().for_each(one);
        } else {
            tasks.into_iter().for_each(one);
        }
    }
}

multiversion! {
    /// One row of [`FarLogits`]: `out[t] = scale·q·k_t` for the consecutive rows `k_t` of
    /// `keys`; then, over the first `t_old`, `mz = (m_old, z_old)` and `s_old` from the
    /// consecutive rows of `uold`. The old entries of `out` are left as weights.
    fn far_row(
        q: &[f32],
        keys: &[f32],
        uold: &[f32],
        scale: f32,
        out: &mut [f32],
        t_old: usize,
        mz: &mut [f32],
        sold: &mut [f32],
    ) {
        let dk = q.len();
        let dv = sold.len();
        for (o, kt) in out.iter_mut().zip(keys.chunks_exact(dk)) {
            *o = scale * dot::<FMA>(q, kt);
        }
        sold.fill(0.0);
        if t_old == 0 {
            mz[0] = f32::NEG_INFINITY;
            mz[1] = 0.0;
            return;
        }
        let w = &mut out[..t_old];
        let m = small::max_f32(w);
        for a in w.iter_mut() {
            *a = small::exp(*a - m);
        }
        mz[0] = m;
        mz[1] = small::sum_f32(w);
        gather_axpy::<FMA>(sold, w, |t| &uold[t * dv..t * dv + dv]);
    }
}
