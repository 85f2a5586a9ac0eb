//! Sparse causal structures (SPEC §3): the Sparse Transformer's `strided` and `fixed`
//! factorized patterns and the `topk` dynamic window. Each row `i` attends to an
//! allowed set `S_i` of columns `j ≤ i` with a softmax over that set, and the
//! resolvent `Y = (1−γ)·(I − γA)⁻¹·A·V` is evaluated by sparse forward substitution
//! in O(nnz·d); no n×n matrix is formed.
//!
//! With `W = (I − γA)⁻¹·A·V` row `i` is `w_i = (Σ_j a_ij·v_j + γ·Σ_{j<i} a_ij·w_j) /
//! (1 − γ·a_ii)`. The rows run in panels of `PANEL` (64) rows `p0..p1`, two phases each:
//!
//! 1. rows in parallel: the allowed columns, their logits (gathered dot products, or
//!    one GEMM per panel for `topk`, which must score every `j ≤ i` to choose), the
//!    softmax over the set, and the right side `x_i = Σ_{j<p0} a_ij·u_j +
//!    Σ_{j≥p0} a_ij·v_j` with `u_j = v_j + γ·w_j`: every entry on a row finished
//!    before the panel (nearly all of them) is settled here, in parallel;
//! 2. sequentially, only the entries inside the panel:
//!    `w_i = (x_i + γ·Σ_{p0≤j<i} a_ij·w_j) / (1 − γ·a_ii)`, O(n·PANEL·d) in all.
//!
//! `strided` reaches its far columns `i − t·l` one every `l` rows, `fixed` its summary
//! columns likewise; compact copies of K, V and U ordered by residue (resp. holding
//! the summary rows only) make those reads contiguous (`Compact`). For `strided`, the
//! far part of ~32·l rows at a time is computed ahead residue by residue, so each
//! compact run is read from cache by the ~32 rows that share it (`FarLogits`); the
//! settled far columns enter each row's softmax as one rescaled partial sum.
//!
//! γ = 0 needs no substitution: `Y = X` is the Sparse Transformer's own attention and
//! every row is independent.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Head, KernelScratch, small, threads};
use crate::config::Structure;
use crate::error::{Error, Result};

/// α used by [`Structure::TopK`] when `alpha = 0`: with [`DEFAULT_TOPK_C_EXP`] the
/// window `k = ceil(2·√n)` keeps about as many entries per row as the default
/// `strided` and `fixed` patterns, so the three compare at equal cost.
pub const DEFAULT_TOPK_ALPHA: f32 = 2.0;

/// Exponent `C` used by [`Structure::TopK`] when both `alpha` and `c_exp` are 0
/// (see [`topk_window`]).
pub const DEFAULT_TOPK_C_EXP: f32 = 0.5;

/// `ceil(sqrt(n))`, the default stride / block length `l` of `strided` and `fixed`
/// (SPEC §3), computed exactly in integers.
///
/// ```
/// use blockres::cpu::sparse::default_stride;
/// assert_eq!(default_stride(1), 1);
/// assert_eq!(default_stride(16), 4);
/// assert_eq!(default_stride(17), 5);
/// assert_eq!(default_stride(1 << 18), 512);
/// ```
pub fn default_stride(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    while r * r > n {
        r -= 1;
    }
    while r * r < n {
        r += 1;
    }
    r.max(1)
}

/// The top-k window `ceil(α·n^C)` (clamped to `1..=n`) for `n` tokens, with the
/// defaults resolved:
///
/// - `alpha = 0` selects α = [`DEFAULT_TOPK_ALPHA`] (2); if `c_exp` is 0 as well (both
///   attributes left unset) it selects C = [`DEFAULT_TOPK_C_EXP`] (½), so the default
///   window is `k = ceil(2·√n)`;
/// - with `alpha > 0`, `c_exp` is taken as given, and `c_exp = 0` is the constant
///   window `k = ceil(α)`.
///
/// Row `i` keeps `min(i + 1, k)` entries.
///
/// ```
/// use blockres::cpu::sparse::topk_window;
/// assert_eq!(topk_window(1024, 0.0, 0.0), 64); // 2·√1024
/// assert_eq!(topk_window(1024, 3.0, 0.0), 3); // constant window
/// assert_eq!(topk_window(1000, 1.0, 1.0), 1000); // everything: dense
/// assert_eq!(topk_window(10, 100.0, 0.5), 10); // never more than n
/// ```
pub fn topk_window(n: usize, alpha: f32, c_exp: f32) -> usize {
    let (alpha, c_exp) = if alpha == 0.0 {
        let c = if c_exp == 0.0 {
            DEFAULT_TOPK_C_EXP
        } else {
            c_exp
        };
        (DEFAULT_TOPK_ALPHA, c)
    } else {
        (alpha, c_exp)
    };
    let k = (alpha as f64 * (n as f64).powf(c_exp as f64)).ceil();
    if k.is_finite() {
        (k as usize).clamp(1, n.max(1))
    } else {
        n.max(1)
    }
}

/// A sparse structure with its parameters resolved for one sequence length: the
/// allowed set `S_i` of every row (SPEC §3).
///
/// ```
/// use blockres::Structure;
/// use blockres::cpu::sparse::Pattern;
/// let p = Pattern::resolve(Structure::Strided { stride: 0 }, 100).unwrap();
/// assert_eq!(p, Pattern::Strided { l: 10 });
/// assert_eq!(p.columns(25), vec![5, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
/// assert!(Pattern::resolve(Structure::Block, 100).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `j ≤ i` and (`i − j < l` or `(i − j) mod l = 0`).
    Strided {
        /// Stride `l ≥ 1`.
        l: usize,
    },
    /// `j ≤ i` and (`⌊j/l⌋ = ⌊i/l⌋` or `j mod l ≥ l − c`). `c ≥ l` makes every
    /// column a summary column: dense causal attention.
    Fixed {
        /// Block length `l ≥ 1`.
        l: usize,
        /// Summary columns per block, `c ≥ 1`.
        c: usize,
    },
    /// The `min(i + 1, k)` largest logits among `j ≤ i`, ties broken by lower `j`.
    TopK {
        /// Window `k ≥ 1`.
        k: usize,
    },
}

impl Pattern {
    /// The pattern of a sparse [`Structure`] for `n` tokens (defaults resolved: `l =
    /// ceil(sqrt(n))` for `stride`/`block` 0, `c = 1` for `summary` 0, the top-k
    /// window of [`topk_window`]); `None` for `Dense` and `Block`.
    pub fn resolve(structure: Structure, n: usize) -> Option<Self> {
        let auto = |l: usize| if l == 0 { default_stride(n) } else { l };
        match structure {
            Structure::Strided { stride } => Some(Pattern::Strided { l: auto(stride) }),
            Structure::Fixed { block, summary } => Some(Pattern::Fixed {
                l: auto(block),
                c: summary.max(1),
            }),
            Structure::TopK { alpha, c_exp } => Some(Pattern::TopK {
                k: topk_window(n, alpha, c_exp),
            }),
            _ => None,
        }
    }

    /// `|S_i|`, the number of columns row `i` attends to.
    pub fn row_len(&self, i: usize) -> usize {
        match *self {
            Pattern::Strided { l } => (i + 1).min(l) + i / l,
            Pattern::Fixed { l, c } => {
                let blk = i / l;
                blk * c.min(l) + (i - blk * l + 1)
            }
            Pattern::TopK { k } => (i + 1).min(k),
        }
    }

    /// Stored entries of `A` for `n` tokens, `Σ_i |S_i|`.
    pub fn nnz(&self, n: usize) -> usize {
        (0..n).map(|i| self.row_len(i)).sum()
    }

    /// The columns of row `i` in increasing order, for the structures whose set does
    /// not depend on the data; `topk`'s depends on the logits and gives an empty list.
    pub fn columns(&self, i: usize) -> Vec<u32> {
        let mut out = vec![0; if self.is_static() { self.row_len(i) } else { 0 }];
        self.fill_columns(i, &mut out);
        out
    }

    fn is_static(&self) -> bool {
        !matches!(self, Pattern::TopK { .. })
    }

    /// Write row `i`'s columns (increasing) into `out`, of length `row_len(i)`.
    #[inline(always)]
    fn fill_columns(&self, i: usize, out: &mut [u32]) {
        match *self {
            Pattern::Strided { l } => {
                // Strided columns i − t·l (t ≥ 1, below the local window) start at i mod l.
                let far = i / l;
                let r = i % l;
                for (t, o) in out[..far].iter_mut().enumerate() {
                    *o = (r + t * l) as u32;
                }
                let lo = (i + 1).saturating_sub(l);
                for (o, j) in out[far..].iter_mut().zip(lo..=i) {
                    *o = j as u32;
                }
            }
            Pattern::Fixed { l, c } => {
                let c = c.min(l);
                let blk = i / l;
                let mut t = 0;
                for b in 0..blk {
                    for j in b * l + l - c..b * l + l {
                        out[t] = j as u32;
                        t += 1;
                    }
                }
                for j in blk * l..=i {
                    out[t] = j as u32;
                    t += 1;
                }
            }
            Pattern::TopK { .. } => {}
        }
    }
}

/// Rows per panel. Entries of a panel's rows on columns before the panel (the far
/// part: almost all of them) are settled in the parallel phase; only entries inside
/// the panel wait for the sequential substitution, O(n·PANEL·dv) in all, so the panel
/// is kept short.
const PANEL: usize = 64;

/// Evaluate the resolvent of a sparse causal structure for one head.
pub(crate) fn evaluate(
    h: &Head<'_>,
    structure: Structure,
    causal: bool,
    y: &mut [f32],
    s: &mut KernelScratch,
    par: Par,
) -> Result<()> {
    if !causal {
        return Err(Error::Param {
            name: "structure",
            message: format!(
                "'{}' is defined for causal attention only; set causal = 1 or use 'block' or 'dense'",
                structure.name()
            ),
        });
    }
    let pattern = Pattern::resolve(structure, h.n).ok_or_else(|| {
        Error::Unsupported(format!("'{}' is not a sparse structure", structure.name()))
    })?;
    run(h, pattern, y, s, par)
}

/// A compact copy of the rows a pattern reaches with a stride, so that each row's far
/// entries read one contiguous run of memory instead of one row every `l` rows (a
/// cache miss and a TLB miss each, at large n).
///
/// - `strided`: every row, ordered by residue `j mod l` then `j`: row `i`'s strided
///   columns `i mod l + t·l` are `start[i mod l] + t`, t = 0..⌊i/l⌋.
/// - `fixed`: the summary columns only, block by block: row `i`'s are `0..⌊i/l⌋·c`.
/// - `topk`: none.
struct Compact {
    /// Original row of each compact row.
    rows: Vec<u32>,
    /// Compact position of each original row (`u32::MAX`: not kept).
    pos: Vec<u32>,
    /// `strided`: first compact row of each residue class.
    start: Vec<usize>,
}

impl Compact {
    fn new(p: Pattern, n: usize) -> Self {
        let mut rows = Vec::new();
        let mut start = Vec::new();
        match p {
            Pattern::Strided { l } => {
                for r in 0..l.min(n) {
                    start.push(rows.len());
                    rows.extend((r..n).step_by(l).map(|j| j as u32));
                }
            }
            Pattern::Fixed { l, c } => {
                let c = c.min(l);
                for b in 0..n.div_ceil(l) {
                    rows.extend((b * l + l - c..(b * l + l).min(n)).map(|j| j as u32));
                }
            }
            Pattern::TopK { .. } => {}
        }
        let mut pos = vec![u32::MAX; if rows.is_empty() { 0 } else { n }];
        for (t, &j) in rows.iter().enumerate() {
            pos[j as usize] = t as u32;
        }
        Self { rows, pos, start }
    }

    /// Row `i`'s leading entries that live in the compact copy: `(count, first)`.
    #[inline(always)]
    fn prefix(&self, p: Pattern, i: usize) -> (usize, usize) {
        match p {
            Pattern::Strided { l } if i >= l => (i / l, self.start[i % l]),
            Pattern::Fixed { l, c } => ((i / l) * c.min(l), 0),
            _ => (0, 0),
        }
    }
}

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
struct FarLogits {
    c0: usize,
    c1: usize,
    /// Per chunk row: offset of its logits in `buf` (laid out residue by residue).
    off: Vec<usize>,
    /// Per chunk row: its number of old far columns.
    told: Vec<usize>,
    /// Per chunk row: its record in `mz`/`sold` (residue by residue).
    rec: Vec<usize>,
    buf: Vec<f32>,
    /// `(m_old, z_old)` per record.
    mz: Vec<f32>,
    /// `s_old` per record, `dv` wide.
    sold: Vec<f32>,
}

/// Rows of a residue class taken together by [`FarLogits`].
const FAR_ROWS_PER_RESIDUE: usize = 32;

impl FarLogits {
    /// `u_c`: the compact `U` (`V` when γ = 0), settled for rows before `c0`.
    #[allow(clippy::too_many_arguments)]
    fn fill(
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

crate::cpu::small::fma_dispatch! {
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
    ) => far_row_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn far_row_body<const FMA: bool>(
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

fn gather_rows(x: &[f32], d: usize, rows: &[u32], out: &mut [f32]) {
    for (o, &j) in out.chunks_exact_mut(d).zip(rows) {
        o.copy_from_slice(&x[j as usize * d..j as usize * d + d]);
    }
}

fn run(
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
    super::grow(
        &mut cols,
        panel * max_row,
        "the sparse kernel's column lists",
    )?;
    let mut offs: Vec<usize> = Vec::new();
    super::grow(&mut offs, panel + 1, "the sparse kernel's row offsets")?;
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
                .for_each(|(r0, r1, ya, ca, va)| phase1.rows(r0, r1, ya, ca, va));
        } else {
            phase1.rows(0, rows, yp, cp, vp);
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

crate::cpu::small::fma_dispatch! {
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
    ) => substitute_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn substitute_body<const FMA: bool>(
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

/// Phase 1 of a panel: everything that is independent per row.
struct PanelRows<'a> {
    h: &'a Head<'a>,
    pattern: Pattern,
    compact: &'a Compact,
    /// Compact copies of K and V (see [`Compact`]).
    kc: &'a [f32],
    vc: &'a [f32],
    /// `U = V + γ·W`, regular and compact; rows before `p0` are settled.
    u: &'a [f32],
    uc: &'a [f32],
    p0: usize,
    offs: &'a [usize],
    /// `topk` only: the panel's scaled logits, row stride `ld`.
    logits: &'a [f32],
    ld: usize,
    /// `strided` only: the far logits, computed ahead for the chunk holding the panel.
    far: Option<&'a FarLogits>,
}

impl PanelRows<'_> {
    /// Rows `r0..r1` of the panel: `y` holds their right sides on return,
    /// `x_i = Σ_{j<p0} a_ij·u_j + Σ_{j≥p0} a_ij·v_j`, and `cols`/`vals` their entries
    /// (starting at `offs[r0]`).
    fn rows(&self, r0: usize, r1: usize, y: &mut [f32], cols: &mut [u32], vals: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { self.rows_avx2(r0, r1, y, cols, vals) };
            return;
        }
        self.rows_body::<false>(r0, r1, y, cols, vals);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(
        &self,
        r0: usize,
        r1: usize,
        y: &mut [f32],
        cols: &mut [u32],
        vals: &mut [f32],
    ) {
        self.rows_body::<true>(r0, r1, y, cols, vals);
    }

    #[inline(always)]
    fn rows_body<const FMA: bool>(
        &self,
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
        } = *self.h;
        let (p0, u, uc) = (self.p0, self.u, self.uc);
        let base = self.offs[r0];
        let mut order = SelectScratch::default();
        for r in r0..r1 {
            let i = p0 + r;
            let (o0, o1) = (self.offs[r] - base, self.offs[r + 1] - base);
            let (cs, vs) = (&mut cols[o0..o1], &mut vals[o0..o1]);
            // The first `nk` entries are read from the compact copies at `cb..`; with
            // `far`, the first `t_old` of them are already summed in `far`.
            let (nk, cb) = self.compact.prefix(self.pattern, i);
            let mut t_old = 0;
            if self.pattern.is_static() {
                self.pattern.fill_columns(i, cs);
                let qi = &q[i * dk..i * dk + dk];
                match self.far {
                    Some(f) => {
                        let (o, t) = (f.off[i - f.c0], f.told[i - f.c0]);
                        t_old = t;
                        vs[t..nk].copy_from_slice(&f.buf[o + t..o + nk]);
                    }
                    None => {
                        for (t, a) in vs[..nk].iter_mut().enumerate() {
                            let c = cb + t;
                            *a = scale * dot::<FMA>(qi, &self.kc[c * dk..c * dk + dk]);
                        }
                    }
                }
                for (a, &j) in vs[nk..].iter_mut().zip(cs[nk..].iter()) {
                    let j = j as usize;
                    *a = scale * dot::<FMA>(qi, &k[j * dk..j * dk + dk]);
                }
            } else {
                let row = &self.logits[r * self.ld..r * self.ld + i + 1];
                select_top(row, cs, &mut order);
                for (a, &j) in vs.iter_mut().zip(cs.iter()) {
                    *a = row[j as usize];
                }
            }
            let xi = &mut y[(r - r0) * dv..(r - r0 + 1) * dv];
            match self.far {
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
            let (vc, cf, cw) = (self.vc, &cs[..nk], &cs[nk..]);
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

/// Largest value of `x` (NaN ignored), in 8 independent lanes so it vectorizes.
#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let (c, t) = x.split_at(x.len() / 8 * 8);
    for v in c.chunks_exact(8) {
        for l in 0..8 {
            m[l] = m[l].max(v[l]);
        }
    }
    t.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Scratch of [`select_top`].
#[derive(Default)]
struct SelectScratch {
    vals: Vec<f32>,
    cols: Vec<u32>,
}

/// Values compared as numbers: −0 and +0 are one value (`x + 0.0` maps −0 to +0) and
/// a NaN ranks lowest, so the order below is total and matches `>` on logits.
#[inline(always)]
fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x + 0.0
    }
}

/// The `out.len()` largest entries of `row` (ties: lower index first), written to
/// `out` in increasing column order: exactly SPEC §3's set.
///
/// A lower bound first: the k-th largest of the maxima of 8-wide chunks is at most the
/// k-th largest entry (k chunks each hold an entry at least that large). One scan keeps
/// the candidates at or above it (few, when k is much smaller than the row), a
/// quickselect among them finds the k-th largest value `t`, and a scan of the
/// candidates in column order keeps those above `t` and the first ties at `t`.
fn select_top(row: &[f32], out: &mut [u32], s: &mut SelectScratch) {
    const CHUNK: usize = 8;
    let k = out.len();
    if k >= row.len() {
        for (j, o) in out.iter_mut().enumerate() {
            *o = j as u32;
        }
        return;
    }
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    let bound = if row.len() / CHUNK >= 2 * k {
        s.vals.clear();
        s.vals.extend(row.chunks(CHUNK).map(|c| key(max8(c))));
        *s.vals.select_nth_unstable_by(k - 1, desc).1
    } else {
        f32::NEG_INFINITY
    };
    s.vals.clear();
    s.cols.clear();
    for (j, &x) in row.iter().enumerate() {
        let x = key(x);
        if x >= bound {
            s.vals.push(x);
            s.cols.push(j as u32);
        }
    }
    let (before, t, _) = s.vals.select_nth_unstable_by(k - 1, desc);
    let t = *t;
    let mut ties = k - before.iter().filter(|&&x| x > t).count();
    let mut o = 0;
    for &j in &s.cols {
        let x = key(row[j as usize]);
        if x > t || (x == t && ties > 0) {
            if x == t {
                ties -= 1;
            }
            out[o] = j;
            o += 1;
        }
    }
    debug_assert_eq!(o, k);
}

/// Shifted softmax of a row's logits, in place.
#[inline(always)]
fn softmax(x: &mut [f32]) {
    // Separate max, exp and sum passes: each vectorizes (a running sum inside the exp
    // loop would be a serial chain).
    let mx = small::max_f32(x);
    for a in x.iter_mut() {
        *a = small::exp(*a - mx);
    }
    let inv = 1.0 / small::sum_f32(x);
    x.iter_mut().for_each(|a| *a *= inv);
}

/// Columns of `x_i` kept in registers while [`gather_axpy`] sweeps a row's entries.
const XBLOCK: usize = 32;

/// `x += Σ_t coefs[t]·row(t)`, with `x` held in registers `XBLOCK` columns at a time
/// (one pass over the entries per block) instead of loaded and stored per entry.
#[inline(always)]
fn gather_axpy<'s, const FMA: bool>(
    x: &mut [f32],
    coefs: &[f32],
    row: impl Fn(usize) -> &'s [f32],
) {
    let d = x.len();
    let mut c0 = 0;
    while c0 + XBLOCK <= d {
        let mut acc = [0.0f32; XBLOCK];
        for (t, &a) in coefs.iter().enumerate() {
            let r: &[f32; XBLOCK] = row(t)[c0..c0 + XBLOCK].try_into().expect("XBLOCK wide");
            for c in 0..XBLOCK {
                acc[c] = fmadd::<FMA>(a, r[c], acc[c]);
            }
        }
        for (o, a) in x[c0..c0 + XBLOCK].iter_mut().zip(acc) {
            *o += a;
        }
        c0 += XBLOCK;
    }
    if c0 < d {
        for (t, &a) in coefs.iter().enumerate() {
            axpy::<FMA>(&mut x[c0..], a, &row(t)[c0..d]);
        }
    }
}

/// `a·b + c`, fused where the caller was compiled with FMA (`FMA = true` only inside
/// `#[target_feature(enable = "fma")]` functions: elsewhere `mul_add` is a slow libm
/// call on x86-64).
#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Whether the AVX2 + FMA versions of the hot loops can run (cached by std).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Dot product. `FMA = true` (only inside the AVX2 + FMA functions, entered after the
/// runtime check) uses the explicit 256-bit kernel: the compiler's own vectorization
/// of the portable loop measured poor (128-bit halves with 64-bit loads).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true is instantiated only by the `*_avx2` functions, which run
        // after `has_avx2_fma()` returned true.
        return unsafe { dot_avx2_fma(a, b) };
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load reads 8 floats at offsets i..i + 8 ≤ n of both slices.
    unsafe {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        let mut r = _mm_cvtss_f32(h);
        while i < n {
            r = a[i].mul_add(b[i], r);
            i += 1;
        }
        r
    }
}

/// Dot product with 16 independent partial sums, so it vectorizes (a plain fold is a
/// serial dependency chain the compiler may not reorder).
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, at) = a.split_at(a.len() / 16 * 16);
    let (bc, bt) = b[..a.len()].split_at(ac.len());
    for (x, y) in ac.chunks_exact(16).zip(bc.chunks_exact(16)) {
        for t in 0..16 {
            acc[t] += x[t] * y[t];
        }
    }
    let mut s = 0.0f32;
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    for t in 0..8 {
        acc[t] += acc[t + 8];
    }
    for t in 0..4 {
        acc[t] += acc[t + 4];
    }
    s + (acc[0] + acc[2]) + (acc[1] + acc[3])
}

#[inline(always)]
fn axpy<const FMA: bool>(o: &mut [f32], a: f32, x: &[f32]) {
    for (o, &x) in o.iter_mut().zip(x) {
        *o = fmadd::<FMA>(a, x, *o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set by [`portable_path_matches_the_vectorized_one`]: the kernels take their
    /// portable bodies (what a CPU without AVX2/FMA runs). Other tests running
    /// meanwhile only change path, not results.
    pub(super) static PORTABLE: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    #[test]
    fn portable_path_matches_the_vectorized_one() {
        use std::sync::atomic::Ordering;
        let (n, dk, dv) = (900, 24, 40);
        let mut rng = crate::synthetic::Rng::new(17);
        let (q, k, v) = (
            rng.normals(n * dk),
            rng.normals(n * dk),
            rng.normals(n * dv),
        );
        let head = Head {
            q: &q,
            k: &k,
            v: &v,
            n,
            dk,
            dv,
            scale: 1.0 / (dk as f32).sqrt(),
            gamma: 0.0,
        };
        for structure in [
            Structure::Strided { stride: 7 },
            Structure::Fixed {
                block: 0,
                summary: 2,
            },
            Structure::TopK {
                alpha: 0.0,
                c_exp: 0.0,
            },
        ] {
            for gamma in [0.0f32, 0.7] {
                let h = Head { gamma, ..head };
                let mut out = [vec![0.0f32; n * dv], vec![0.0f32; n * dv]];
                for (path, y) in out.iter_mut().enumerate() {
                    PORTABLE.store(path == 1, Ordering::Relaxed);
                    let mut s = KernelScratch::default();
                    evaluate(&h, structure, true, y, &mut s, Par::rayon(2)).unwrap();
                }
                PORTABLE.store(false, Ordering::Relaxed);
                let num: f64 = out[0]
                    .iter()
                    .zip(&out[1])
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                let den: f64 = out[0].iter().map(|a| (*a as f64).powi(2)).sum();
                // FMA rounds differently; both are within f32 accuracy of each other.
                assert!((num / den).sqrt() < 1e-5, "{structure:?} γ={gamma}");
            }
        }
    }

    fn member(p: Pattern, i: usize, j: usize) -> bool {
        match p {
            Pattern::Strided { l } => j <= i && (i - j < l || (i - j).is_multiple_of(l)),
            Pattern::Fixed { l, c } => j <= i && (j / l == i / l || j % l + c >= l),
            Pattern::TopK { .. } => unreachable!(),
        }
    }

    #[test]
    fn static_columns_match_the_spec_predicates() {
        for n in [1usize, 2, 7, 30, 65] {
            for l in [1usize, 2, 3, 5, 8, 70] {
                for p in [
                    Pattern::Strided { l },
                    Pattern::Fixed { l, c: 1 },
                    Pattern::Fixed { l, c: 2 },
                    Pattern::Fixed { l, c: l + 3 },
                ] {
                    for i in 0..n {
                        let want: Vec<u32> = (0..n)
                            .filter(|&j| member(p, i, j))
                            .map(|j| j as u32)
                            .collect();
                        assert_eq!(p.columns(i), want, "{p:?} row {i}");
                        assert_eq!(p.row_len(i), want.len());
                    }
                }
            }
        }
    }

    #[test]
    fn default_stride_is_ceil_sqrt() {
        for n in 1..5000usize {
            let l = default_stride(n);
            assert!(l * l >= n && (l - 1) * (l - 1) < n, "n={n} l={l}");
        }
    }

    #[test]
    fn top_selection_breaks_ties_by_lower_column() {
        let row = [1.0, 3.0, 3.0, 0.5, 3.0, 2.0];
        let mut out = [0u32; 2];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2]);
        let mut out = [0u32; 4];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2, 4, 5]);
        // −0 and +0 tie; a NaN never wins.
        let row = [f32::NAN, 0.0, -0.0, -1.0, 0.0];
        let mut out = [0u32; 2];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2]);
        let mut out = [0u32; 4];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn top_selection_matches_a_full_sort() {
        let mut rng = crate::synthetic::Rng::new(4);
        for len in [1usize, 2, 100, 700, 5000] {
            // Coarse values: many exact ties.
            let row: Vec<f32> = (0..len)
                .map(|_| (rng.normal() * 4.0).round() as f32)
                .collect();
            for k in [1usize, 2, 3, 10, 40, len] {
                let k = k.min(len);
                let mut want: Vec<u32> = (0..len as u32).collect();
                want.sort_by(|&a, &b| {
                    row[b as usize]
                        .partial_cmp(&row[a as usize])
                        .unwrap()
                        .then(a.cmp(&b))
                });
                want.truncate(k);
                want.sort_unstable();
                let mut out = vec![0u32; k];
                select_top(&row, &mut out, &mut SelectScratch::default());
                assert_eq!(out, want, "len {len} k {k}");
            }
        }
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        for len in [0usize, 1, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.3).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot::<false>(&a, &b) as f64 - want).abs() < 1e-5);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: checked just above.
                let d = unsafe { dot_avx2_fma(&a, &b) };
                assert!((d as f64 - want).abs() < 1e-5);
            }
        }
    }
}
