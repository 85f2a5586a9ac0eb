//! Attention-structure diagnostics: does a model's attention concentrate where a
//! subquadratic structure assumes it does?
//!
//! From one call's Q, K, V (for instance dumped from a real model as `.npy` files and
//! read with [`npy::read`]) [`diagnose`] measures, over all heads, causal:
//!
//! - for each candidate block size `b`, the fraction of dense attention mass inside the
//!   block diagonal (row `i` keeps `A_ij` for `⌊j/b⌋ = ⌊i/b⌋`, `j ≤ i`);
//! - the effective support per row, `|S_ε| = #{j ≤ i : A_ij > ε·max_j A_ij}`, mean and max;
//! - the relative error (Frobenius, over the whole output) of `block` at each `b` and of
//!   `strided`, `fixed` and `topk` against the exact dense resolvent, and their times;
//! - a recommended block size: **the fastest candidate whose relative error is at most
//!   `tol`** (measured times); when none reaches `tol`, the most accurate candidate.
//!
//! [`Report::table`] prints it, [`Report::svg`] plots error and time against `b` (one
//! line per structure; the `b`-independent ones are horizontal). The
//! `blockres-diagnose` command-line tool wraps all of it.
//!
//! ```
//! use blockres::diagnostics::{Options, diagnose};
//! use blockres::synthetic::segmented;
//! use blockres::TensorRef;
//! let x = segmented([1, 2, 2, 256, 16, 16], 32, 4.0, 7);
//! let opts = Options { blocks: vec![16, 32, 64], ..Options::default() };
//! let r = diagnose(
//!     TensorRef::new(&x.q, x.q_shape()).unwrap(),
//!     TensorRef::new(&x.k, x.k_shape()).unwrap(),
//!     TensorRef::new(&x.v, x.v_shape()).unwrap(),
//!     &opts,
//! )
//! .unwrap();
//! assert_eq!(r.block_mass.len(), 3);
//! assert!(r.block_mass[2].1 > r.block_mass[0].1); // bigger blocks hold more mass
//! assert!([16, 32, 64].contains(&r.recommended_block));
//! assert!(r.table().contains("recommended block size"));
//! assert!(r.svg().starts_with("<svg"));
//! ```

pub mod npy;
mod svg;

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::cpu::sparse::Pattern;
use crate::{
    Config, Dims, Error, Result, Structure, TensorRef, auto_block_size, resolvent_attention_alloc,
};

/// What [`diagnose`] measures and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// γ of the resolvent compared (default 0.5, the ONNX default).
    pub gamma: f32,
    /// Logit scale; 0 means `1/sqrt(dk)`.
    pub scale: f32,
    /// Candidate block sizes; empty means the powers of two 8…1024 below n and
    /// [`auto_block_size`].
    pub blocks: Vec<usize>,
    /// ε of the effective support `|S_ε|`, relative to the row maximum (default 0.01).
    pub eps: f32,
    /// Relative error a block size must reach to be recommended (default 0.05).
    pub tol: f64,
    /// The other structures compared (default: `strided`, `fixed`, `topk` with their
    /// default parameters).
    pub others: Vec<Structure>,
    /// Parallelism of every evaluation (default: the rayon pool).
    pub par: Par,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gamma: 0.5,
            scale: 0.0,
            blocks: Vec::new(),
            eps: 0.01,
            tol: 0.05,
            others: vec![
                Structure::Strided { stride: 0 },
                Structure::Fixed {
                    block: 0,
                    summary: 1,
                },
                Structure::TopK {
                    alpha: 0.0,
                    c_exp: 0.0,
                },
            ],
            par: Par::rayon(0),
        }
    }
}

/// One evaluated structure.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The structure as evaluated (for `block`, with [`Entry::param`] as `b`).
    pub structure: Structure,
    /// `b` for `block`, `l` for `strided`/`fixed`, `k` for `topk` (resolved from n).
    pub param: usize,
    /// `‖Y − Y_dense‖_F / ‖Y_dense‖_F`.
    pub rel_error: f64,
    /// Wall time of the evaluation, seconds.
    pub seconds: f64,
}

impl Entry {
    /// A short label such as `b=64`, `l=46, c=1` or `k=91`.
    pub fn param_label(&self) -> String {
        match self.structure {
            Structure::Block => format!("b={}", self.param),
            Structure::Strided { .. } => format!("l={}", self.param),
            Structure::Fixed { summary, .. } => format!("l={}, c={}", self.param, summary.max(1)),
            Structure::TopK { .. } => format!("k={}", self.param),
            _ => String::new(),
        }
    }
}

/// What [`diagnose`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The checked dimensions of the input.
    pub dims: Dims,
    /// γ used.
    pub gamma: f32,
    /// `(b, mean fraction of attention mass inside the block diagonal)`, over all rows
    /// of all heads.
    pub block_mass: Vec<(usize, f64)>,
    /// ε of the support measure.
    pub eps: f32,
    /// Mean `|S_ε|` over all rows of all heads.
    pub support_mean: f64,
    /// Largest `|S_ε|`.
    pub support_max: usize,
    /// Wall time of the exact dense resolvent, seconds.
    pub dense_seconds: f64,
    /// `block` at each candidate `b` (ascending), then the other structures.
    pub entries: Vec<Entry>,
    /// The recommended block size (see the module documentation for the rule).
    pub recommended_block: usize,
    /// Whether the recommended block size reaches the tolerance.
    pub meets_tol: bool,
    /// The tolerance used.
    pub tol: f64,
}

fn rel_err<T: crate::Element>(y: &[T], r: &[T]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in y.iter().zip(r) {
        let (a, b) = (a.to_f32() as f64, b.to_f32() as f64);
        num += (a - b) * (a - b);
        den += b * b;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Block-diagonal mass for each `b` and `|S_ε|` (sum over rows, max) of one head, from
/// its dense causal attention, computed in row panels (never n×n at once).
fn head_structure(
    q: &[f32],
    k: &[f32],
    n: usize,
    dk: usize,
    scale: f32,
    blocks: &[usize],
    eps: f32,
) -> (Vec<f64>, f64, usize) {
    const PANEL: usize = 64;
    let mut mass = vec![0.0f64; blocks.len()];
    let (mut ssum, mut smax) = (0.0f64, 0usize);
    let mut buf = vec![0.0f32; PANEL * n];
    let mut prefix = vec![0.0f64; n + 1];
    let ln_eps = (eps as f64).ln();
    for p0 in (0..n).step_by(PANEL) {
        let p1 = (p0 + PANEL).min(n);
        let rows = p1 - p0;
        matmul(
            MatMut::from_row_major_slice_mut(&mut buf[..rows * p1], rows, p1),
            Accum::Replace,
            MatRef::from_row_major_slice(&q[p0 * dk..p1 * dk], rows, dk),
            MatRef::from_row_major_slice(&k[..p1 * dk], p1, dk).transpose(),
            scale,
            Par::Seq,
        );
        for r in 0..rows {
            let i = p0 + r;
            let row = &buf[r * p1..r * p1 + i + 1];
            let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let mut acc = 0.0f64;
            let mut support = 0usize;
            for (j, &x) in row.iter().enumerate() {
                let e = x as f64 - mx;
                acc += e.exp();
                prefix[j + 1] = acc;
                support += (e > ln_eps) as usize;
            }
            for (m, &b) in mass.iter_mut().zip(blocks) {
                let start = i / b * b;
                *m += (acc - prefix[start]) / acc;
            }
            ssum += support as f64;
            smax = smax.max(support);
        }
    }
    (mass, ssum, smax)
}

/// The default candidate block sizes for `n` tokens of width `d`.
pub fn default_blocks(n: usize, d: usize) -> Vec<usize> {
    let mut b: Vec<usize> = (3..=10).map(|e| 1usize << e).filter(|&b| b < n).collect();
    let auto = auto_block_size(n, d);
    if auto < n {
        b.push(auto);
    }
    if b.is_empty() {
        b.push(n.max(1));
    }
    b.sort_unstable();
    b.dedup();
    b
}

/// Measure the attention structure of one call (causal). See the module
/// documentation for what is measured and the recommendation rule.
pub fn diagnose<T: crate::Element>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    opts: &Options,
) -> Result<Report> {
    let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
    let Dims {
        batch,
        heads,
        kv_heads,
        n,
        dk,
        dv,
    } = dims;
    let mut blocks = if opts.blocks.is_empty() {
        default_blocks(n, dk.max(dv))
    } else {
        opts.blocks.clone()
    };
    if let Some(&b) = blocks.iter().find(|&&b| b == 0) {
        return Err(Error::Param {
            name: "block_size",
            message: format!("candidate block sizes must be ≥ 1, got {b}"),
        });
    }
    blocks.sort_unstable();
    blocks.dedup();
    if !(opts.eps > 0.0 && opts.eps < 1.0) {
        return Err(Error::Param {
            name: "eps",
            message: format!("must lie in (0, 1), got {}", opts.eps),
        });
    }
    let base = Config {
        gamma: opts.gamma,
        scale: opts.scale,
        causal: true,
        structure: Structure::Dense,
        ..Config::default()
    };
    base.validate()?;
    let run = |structure: Structure, block_size: usize| -> Result<(Vec<T>, f64)> {
        let cfg = Config {
            structure,
            block_size,
            ..base
        };
        let t0 = Instant::now();
        let y = resolvent_attention_alloc(q, k, v, &cfg, opts.par)?;
        Ok((y, t0.elapsed().as_secs_f64()))
    };
    let (dense, dense_seconds) = run(Structure::Dense, 0)?;
    let mut entries = Vec::new();
    for &b in &blocks {
        let (y, s) = run(Structure::Block, b)?;
        entries.push(Entry {
            structure: Structure::Block,
            param: b,
            rel_error: rel_err(&y, &dense),
            seconds: s,
        });
    }
    for &st in &opts.others {
        let (y, s) = run(st, 0)?;
        let param = match Pattern::resolve(st, n) {
            Some(Pattern::Strided { l }) | Some(Pattern::Fixed { l, .. }) => l,
            Some(Pattern::TopK { k }) => k,
            None => 0,
        };
        entries.push(Entry {
            structure: st,
            param,
            rel_error: rel_err(&y, &dense),
            seconds: s,
        });
    }

    // Attention structure, one head per task, in f32 widened from T.
    let scale = base.effective_scale(dk);
    let widen = |x: &[T]| x.iter().map(|a| a.to_f32()).collect::<Vec<f32>>();
    let (qd, kd) = (q.data(), k.data());
    let group = heads / kv_heads;
    let per_head = |bh: usize| {
        let kvh = (bh / heads) * kv_heads + (bh % heads) / group;
        let qs = widen(&qd[bh * n * dk..(bh + 1) * n * dk]);
        let ks = widen(&kd[kvh * n * dk..(kvh + 1) * n * dk]);
        head_structure(&qs, &ks, n, dk, scale, &blocks, opts.eps)
    };
    let parts: Vec<_> = if matches!(opts.par, Par::Seq) {
        (0..batch * heads).map(per_head).collect()
    } else {
        (0..batch * heads).into_par_iter().map(per_head).collect()
    };
    let rows = (batch * heads * n) as f64;
    let mut mass = vec![0.0f64; blocks.len()];
    let (mut ssum, mut smax) = (0.0, 0);
    for (m, s, x) in parts {
        mass.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        ssum += s;
        smax = smax.max(x);
    }

    let block_entries = &entries[..blocks.len()];
    let meeting = block_entries.iter().filter(|e| e.rel_error <= opts.tol);
    let (best, meets_tol) = match meeting.min_by(|a, b| a.seconds.total_cmp(&b.seconds)) {
        Some(e) => (e, true),
        None => (
            block_entries
                .iter()
                .min_by(|a, b| a.rel_error.total_cmp(&b.rel_error))
                .expect("at least one block size"),
            false,
        ),
    };
    Ok(Report {
        dims,
        gamma: opts.gamma,
        block_mass: blocks
            .iter()
            .zip(mass)
            .map(|(&b, m)| (b, m / rows))
            .collect(),
        eps: opts.eps,
        support_mean: ssum / rows,
        support_max: smax,
        dense_seconds,
        recommended_block: best.param,
        meets_tol,
        tol: opts.tol,
        entries,
    })
}

impl Report {
    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let d = &self.dims;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "input: B={} H={} Hkv={} n={} dk={} dv={}; causal, γ = {}",
            d.batch, d.heads, d.kv_heads, d.n, d.dk, d.dv, self.gamma
        );
        let _ = writeln!(
            s,
            "effective support |S_ε| (ε = {} of the row max): mean {:.1}, max {} (of up to {} keys)",
            self.eps, self.support_mean, self.support_max, d.n
        );
        let _ = writeln!(
            s,
            "exact dense resolvent: {:.2} ms",
            self.dense_seconds * 1e3
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<9} {:<14} {:>16} {:>12} {:>11}",
            "structure", "parameter", "block-diag mass", "rel. error", "time (ms)"
        );
        for e in &self.entries {
            let mass = self
                .block_mass
                .iter()
                .find(|(b, _)| e.structure == Structure::Block && *b == e.param)
                .map(|(_, m)| format!("{m:.4}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<9} {:<14} {:>16} {:>12.3e} {:>11.2}",
                e.structure.name(),
                e.param_label(),
                mass,
                e.rel_error,
                e.seconds * 1e3
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "recommended block size: b = {} ({})",
            self.recommended_block,
            if self.meets_tol {
                format!("the fastest with relative error ≤ {}", self.tol)
            } else {
                format!(
                    "no candidate reaches relative error ≤ {}; the most accurate",
                    self.tol
                )
            }
        );
        s
    }

    /// An SVG plot: relative error (left) and time (right) against the block size, one
    /// line per structure, log scales.
    pub fn svg(&self) -> String {
        svg::plot(self)
    }
}
