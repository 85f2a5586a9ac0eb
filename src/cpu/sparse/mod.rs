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
//!
//! The parts: [`Pattern`] here (the allowed sets); `compact` (the compact copies);
//! `panel` (the loop over panels, and phase 2); `rows` (phase 1); `far` (`strided`'s
//! far part, computed ahead); `select` (`topk`'s choice and the row softmax). Their
//! inner loops take AVX2 + FMA where the CPU has them, through `cpu::simd`.

mod compact;
mod far;
mod panel;
mod rows;
mod select;

use faer::Par;

use super::{Head, KernelScratch};
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
    panel::run(h, pattern, y, s, par)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::tests::portable;

    /// The AVX2 + FMA bodies (where this CPU has them) against the portable ones.
    #[test]
    fn portable_path_matches_the_vectorized_one() {
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
                    let mut s = KernelScratch::default();
                    if path == 0 {
                        evaluate(&h, structure, true, y, &mut s, Par::rayon(2)).unwrap();
                    } else {
                        // Sequential: the switch to the portable bodies holds on this
                        // thread only.
                        portable(|| evaluate(&h, structure, true, y, &mut s, Par::Seq)).unwrap();
                    }
                }
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
}
