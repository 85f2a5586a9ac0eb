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
//!   `strided`, `fixed` and `topk` against the exact dense resolvent, and their times
//!   (each the median of at least [`MIN_TIMED_RUNS`] runs after one warm-up run, see
//!   [`Entry::seconds`]);
//! - a recommended block size (the rule is on [`Report::recommended_block`]): **the
//!   fastest candidate whose relative error is at most `tol` and whose measured time is
//!   at least 10% below the exact dense resolvent's**; when none of those faster than
//!   dense reaches `tol`, the most accurate of them; none when no block size is faster
//!   than dense (small n: use the dense operator);
//! - a sparse structure (`strided`, `fixed` or `topk`) that reaches `tol` and is faster
//!   than that recommendation (or than dense, when no block size reaching `tol` is
//!   recommended), when there is one ([`Report::cheaper_sparse`]).
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
//! if let Some(b) = r.recommended_block {
//!     assert!([16, 32, 64].contains(&b));
//! }
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
    /// Wall time of the evaluation, seconds: the median of `runs` timed runs after one
    /// untimed warm-up run (see [`timed_runs`]).
    pub seconds: f64,
    /// How many timed runs `seconds` is the median of (at least [`MIN_TIMED_RUNS`]).
    pub runs: usize,
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
    /// Wall time of the exact dense resolvent, seconds, timed as [`Entry::seconds`].
    pub dense_seconds: f64,
    /// `block` at each candidate `b` (ascending), then the other structures.
    pub entries: Vec<Entry>,
    /// The recommended block size.
    ///
    /// A block size is recommended only where the block operator is cheaper than the
    /// exact dense one at this n: the cost compared is the *measured* time (the
    /// median of [`Entry::seconds`] against [`Report::dense_seconds`], same inputs, same
    /// parallelism), because the kernels have no calibrated cost model: the
    /// `c₁·n·b·d + c₂·(n/b)²·d` of [`auto_block_size`] leaves its constants, and the
    /// dense path's, to measurement. "Faster" means at least 10% faster ([`FASTER`]).
    /// Among the candidates faster than dense:
    /// the fastest whose relative error is at most `tol` ([`Report::meets_tol`] true);
    /// when none of them reaches `tol`, the most accurate of them (`meets_tol` false).
    /// `None` when no candidate is faster than dense (typically small n, or only
    /// `b ≥ n/2`, which is the dense operator itself): use `dense`.
    pub recommended_block: Option<usize>,
    /// Whether the recommended block size reaches the tolerance (false when none is
    /// recommended).
    pub meets_tol: bool,
    /// The fastest of the other structures (`strided`, `fixed`, `topk`) whose relative
    /// error is at most `tol` and whose time is at least 10% ([`FASTER`]) below the
    /// recommended block size's when that reaches `tol`, else below the dense time;
    /// `None` when there is none.
    pub cheaper_sparse: Option<Entry>,
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

/// "Faster" in the recommendation means a median time at most this fraction of the
/// other's (10% faster), so that timing noise between two equally costly operators
/// (a block size of at least n/2 is the dense operator itself) decides nothing.
pub const FASTER: f64 = 0.9;

/// The fewest timed runs behind a time in the report.
pub const MIN_TIMED_RUNS: usize = 3;

/// How many timed runs follow the warm-up run that took `warmup` seconds: enough for
/// about 0.25 s of timing, odd, at least [`MIN_TIMED_RUNS`] and at most 9 (so a run of
/// 1 ms is timed 9 times, one of 0.1 s or more 3 times).
pub fn timed_runs(warmup: f64) -> usize {
    let want = if warmup > 0.0 { 0.25 / warmup } else { 9.0 };
    (want.min(9.0) as usize).max(MIN_TIMED_RUNS) | 1
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_unstable_by(f64::total_cmp);
    let m = t.len() / 2;
    if t.len() % 2 == 1 {
        t[m]
    } else {
        0.5 * (t[m - 1] + t[m])
    }
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
    // One warm-up run (its output is the one compared), then the median of
    // `timed_runs` timed runs.
    let run = |structure: Structure, block_size: usize| -> Result<(Vec<T>, f64, usize)> {
        let cfg = Config {
            structure,
            block_size,
            ..base
        };
        let t0 = Instant::now();
        let y = resolvent_attention_alloc(q, k, v, &cfg, opts.par)?;
        let runs = timed_runs(t0.elapsed().as_secs_f64());
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            let again = resolvent_attention_alloc(q, k, v, &cfg, opts.par)?;
            times.push(t0.elapsed().as_secs_f64());
            drop(std::hint::black_box(again));
        }
        Ok((y, median(times), runs))
    };
    let (dense, dense_seconds, _) = run(Structure::Dense, 0)?;
    let mut entries = Vec::new();
    for &b in &blocks {
        let (y, s, runs) = run(Structure::Block, b)?;
        entries.push(Entry {
            structure: Structure::Block,
            param: b,
            rel_error: rel_err(&y, &dense),
            seconds: s,
            runs,
        });
    }
    for &st in &opts.others {
        let (y, s, runs) = run(st, 0)?;
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
            runs,
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

    let (recommended, meets_tol, cheaper_sparse) = recommend(
        &entries[..blocks.len()],
        &entries[blocks.len()..],
        dense_seconds,
        opts.tol,
    );
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
        recommended_block: recommended.map(|e| e.param),
        meets_tol,
        cheaper_sparse: cheaper_sparse.cloned(),
        tol: opts.tol,
        entries,
    })
}

/// The rule of [`Report::recommended_block`] and [`Report::cheaper_sparse`]:
/// `(recommended block entry, whether it meets tol, cheaper sparse entry)`.
fn recommend<'a>(
    blocks: &'a [Entry],
    others: &'a [Entry],
    dense_seconds: f64,
    tol: f64,
) -> (Option<&'a Entry>, bool, Option<&'a Entry>) {
    let by_time = |a: &&Entry, b: &&Entry| a.seconds.total_cmp(&b.seconds);
    let faster: Vec<&Entry> = blocks
        .iter()
        .filter(|e| e.seconds <= FASTER * dense_seconds)
        .collect();
    let (best, meets) = match faster
        .iter()
        .copied()
        .filter(|e| e.rel_error <= tol)
        .min_by(by_time)
    {
        Some(e) => (Some(e), true),
        None => (
            faster
                .iter()
                .copied()
                .min_by(|a, b| a.rel_error.total_cmp(&b.rel_error)),
            false,
        ),
    };
    let bar = match best {
        Some(e) if meets => e.seconds,
        _ => dense_seconds,
    };
    let sparse = others
        .iter()
        .filter(|e| e.rel_error <= tol && e.seconds <= FASTER * bar)
        .min_by(by_time);
    (best, meets, sparse)
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
            "exact dense resolvent: {:.3} ms (times: median of ≥ {MIN_TIMED_RUNS} runs after a warm-up)",
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
                "{:<9} {:<14} {:>16} {:>12.3e} {:>11.3}",
                e.structure.name(),
                e.param_label(),
                mass,
                e.rel_error,
                e.seconds * 1e3
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{}", self.recommendation());
        s
    }

    /// The recommendation as one line: the block size (or none, when no block size
    /// is faster than dense) and, when one reaches the tolerance faster, a sparse
    /// structure.
    pub fn recommendation(&self) -> String {
        let ms = |t: f64| format!("{:.3} ms", t * 1e3);
        let dense = ms(self.dense_seconds);
        let block_time = |b: usize| {
            self.entries
                .iter()
                .find(|e| e.structure == Structure::Block && e.param == b)
                .map_or(0.0, |e| e.seconds)
        };
        let mut s = match self.recommended_block {
            Some(b) if self.meets_tol => format!(
                "recommended block size: b = {b} (the fastest with relative error ≤ {} that is faster than dense: {} vs {dense})",
                self.tol,
                ms(block_time(b))
            ),
            Some(b) => format!(
                "recommended block size: b = {b} (no block size faster than dense reaches relative error ≤ {}; the most accurate of those faster than dense: {} vs {dense})",
                self.tol,
                ms(block_time(b))
            ),
            None => format!(
                "recommended block size: none (no candidate block size is faster than the exact dense resolvent at n = {}, {dense}: use dense)",
                self.dims.n
            ),
        };
        if let Some(e) = &self.cheaper_sparse {
            let than = match self.recommended_block {
                Some(b) if self.meets_tol => format!("b = {b}"),
                _ => "dense".into(),
            };
            s.push_str(&format!(
                "; but {} ({}) reaches relative error ≤ {} and is faster than {than}: {}",
                e.structure.name(),
                e.param_label(),
                self.tol,
                ms(e.seconds)
            ));
        }
        s
    }

    /// An SVG plot: relative error (left) and time (right) against the block size, one
    /// line per structure, log scales.
    pub fn svg(&self) -> String {
        svg::plot(self)
    }
}
