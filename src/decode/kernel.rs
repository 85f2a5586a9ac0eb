//! One (batch, head) pair of the decoder in f32: the row recurrence of SPEC §6 over
//! the cached state, and the prefill of an empty state through the full kernels.
//!
//! Dense decoding is block decoding with one unbounded block (`b = usize::MAX`): the
//! "current block" then holds every token and never finishes, so one code path serves
//! both structures.

use crate::config::CoarseQuery;
use crate::cpu::{self, Head, KernelScratch, simd, small};
use crate::error::{Error, Result};

/// What every head of one decoder shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    /// Block size; `usize::MAX` for dense.
    pub b: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f32,
    pub gamma: f32,
}

impl Geom {
    fn dense(&self) -> bool {
        self.b == usize::MAX
    }
    /// First token of the block holding token `t` (0 for dense).
    pub fn block_start(&self, t: usize) -> usize {
        t - t % self.b
    }
    /// Blocks that finish among tokens `len..len + s`.
    fn finished(&self, len: usize, s: usize) -> std::ops::Range<usize> {
        len / self.b..(len + s) / self.b
    }
}

/// Append fallibly: the state grows with the sequence, and a failed allocation must
/// be an error, not an abort. Amortized (`try_reserve`, not `_exact`): steps append a
/// token at a time.
pub(crate) fn push(buf: &mut Vec<f32>, data: &[f32], what: &'static str) -> Result<()> {
    buf.try_reserve(data.len())
        .map_err(|_| Error::OutOfMemory {
            what,
            bytes: (buf.len() + data.len()).saturating_mul(4),
        })?;
    buf.extend_from_slice(data);
    Ok(())
}

/// A copy of `src` allocated fallibly.
pub(crate) fn try_copy(src: &[f32], what: &'static str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    push(&mut v, src, what)?;
    Ok(v)
}

/// Where a state's rows live: a growable `Vec` (the `Decoder`), or a caller's
/// preallocated buffer (the ONNX op's cache tensors, [`Span`]).
pub(crate) trait Rows: std::ops::Deref<Target = [f32]> {
    /// Append values; fails (never aborts) when there is no room.
    fn append(&mut self, data: &[f32], what: &'static str) -> Result<()>;
    /// Make room for `more` values up front.
    fn make_room(&mut self, more: usize, what: &'static str) -> Result<()>;
}

impl Rows for Vec<f32> {
    fn append(&mut self, data: &[f32], what: &'static str) -> Result<()> {
        push(self, data, what)
    }
    fn make_room(&mut self, more: usize, what: &'static str) -> Result<()> {
        self.try_reserve(more).map_err(|_| Error::OutOfMemory {
            what,
            bytes: (self.len() + more).saturating_mul(4),
        })
    }
}

/// The first `len` values of a fixed buffer are the rows; appends fill the rest.
#[derive(Debug)]
#[cfg_attr(not(feature = "ort-op"), allow(dead_code))]
pub(crate) struct Span<'a> {
    pub buf: &'a mut [f32],
    pub len: usize,
}

impl std::ops::Deref for Span<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl Rows for Span<'_> {
    fn append(&mut self, data: &[f32], what: &'static str) -> Result<()> {
        self.make_room(data.len(), what)?;
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(())
    }
    fn make_room(&mut self, more: usize, what: &'static str) -> Result<()> {
        if self.len + more <= self.buf.len() {
            return Ok(());
        }
        Err(Error::Unsupported(format!(
            "{what}: the buffer holds {} values, {} are needed",
            self.buf.len(),
            self.len + more
        )))
    }
}

#[cfg_attr(not(feature = "ort-op"), allow(dead_code))]
impl<S> KvState<S> {
    /// A state over given storage (the ONNX op's buffers).
    pub fn over(ksum: S, tail: S) -> Self {
        Self {
            ksum,
            tail,
            mark: (0, 0),
        }
    }
}

#[cfg_attr(not(feature = "ort-op"), allow(dead_code))]
impl<S> HeadState<S> {
    /// A state over given storage (the ONNX op's buffers).
    pub fn over(zsum: S, tail: S, coarse: Coarse) -> Self {
        // Nothing to save: a call over caller buffers is never rolled back (its state
        // rows at and past the valid length are simply not valid yet).
        let saved = Coarse {
            hsum: Vec::new(),
            ..coarse
        };
        Self {
            zsum,
            tail,
            saved,
            coarse,
            mark: (0, 0),
        }
    }
}

/// The state of one key/value head: `ksum` (finished blocks × dk, the key sums) and
/// `tail` (the keys from the start of the current block on; every key for dense).
#[derive(Debug, Default)]
pub(crate) struct KvState<S = Vec<f32>> {
    pub ksum: S,
    pub tail: S,
    mark: (usize, usize),
}

/// The coarse part of every row of the current block, fixed by its anchor query:
/// with `L_J = scale·q̂·k̄_J` over the finished blocks J and `σ = max_J L_J`,
/// `gsum = Σ_J n_J·e^{L_J−σ}` (their share of the normalizer) and
/// `hsum = Σ_J e^{L_J−σ}·Σ_{j∈J} z_j` (their share of `A·Z`).
#[derive(Debug, Clone)]
pub(crate) struct Coarse {
    pub sigma: f32,
    pub gsum: f32,
    pub hsum: Vec<f32>,
}

/// The state of one query head: `zsum` (finished blocks × dv, the resolved-value
/// sums), `tail` (the resolved values z of the current block's tokens; every token's
/// for dense) and the current block's coarse terms.
#[derive(Debug, Clone)]
pub(crate) struct HeadState<S = Vec<f32>> {
    pub zsum: S,
    pub tail: S,
    pub coarse: Coarse,
    saved: Coarse,
    mark: (usize, usize),
}

impl KvState {
    /// Remember the lengths, so a failed call can be undone.
    pub fn begin(&mut self) {
        self.mark = (self.ksum.len(), self.tail.len());
    }
    pub fn clear(&mut self) {
        self.ksum.clear();
        self.tail.clear();
    }
    pub fn rollback(&mut self) {
        self.ksum.truncate(self.mark.0);
        self.tail.truncate(self.mark.1);
    }
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            ksum: try_copy(&self.ksum, "a copy of the decoder's key sums")?,
            tail: try_copy(&self.tail, "a copy of the decoder's key cache")?,
            mark: self.mark,
        })
    }
}

impl HeadState {
    pub fn new(dv: usize) -> Result<Self> {
        let zeros = |_| -> Result<Coarse> {
            let mut hsum = Vec::new();
            cpu::grow(&mut hsum, dv, "the decoder's coarse terms")?;
            Ok(Coarse {
                sigma: f32::NEG_INFINITY,
                gsum: 0.0,
                hsum,
            })
        };
        Ok(Self {
            zsum: Vec::new(),
            tail: Vec::new(),
            coarse: zeros(())?,
            saved: zeros(())?,
            mark: (0, 0),
        })
    }
    pub fn begin(&mut self) {
        self.mark = (self.zsum.len(), self.tail.len());
        self.saved.sigma = self.coarse.sigma;
        self.saved.gsum = self.coarse.gsum;
        self.saved.hsum.copy_from_slice(&self.coarse.hsum);
    }
    pub fn clear(&mut self) {
        self.zsum.clear();
        self.tail.clear();
        self.coarse.sigma = f32::NEG_INFINITY;
        self.coarse.gsum = 0.0;
        self.coarse.hsum.fill(0.0);
    }
    pub fn rollback(&mut self) {
        self.zsum.truncate(self.mark.0);
        self.tail.truncate(self.mark.1);
        self.coarse.sigma = self.saved.sigma;
        self.coarse.gsum = self.saved.gsum;
        self.coarse.hsum.copy_from_slice(&self.saved.hsum);
    }
    pub fn try_clone(&self) -> Result<Self> {
        let mut c = Self::new(self.coarse.hsum.len())?;
        c.zsum = try_copy(&self.zsum, "a copy of the decoder's resolved-value sums")?;
        c.tail = try_copy(&self.tail, "a copy of the decoder's resolved-value cache")?;
        c.begin();
        c.coarse.sigma = self.coarse.sigma;
        c.coarse.gsum = self.coarse.gsum;
        c.coarse.hsum.copy_from_slice(&self.coarse.hsum);
        Ok(c)
    }
}

simd::multiversion! {
    /// `out[r] = scale · x·row_r` for the rows of `rows` (row length `x.len()`).
    fn dot_rows(x: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
        let d = x.len();
        for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
            let mut acc = [0.0f32; 8];
            let (mut rc, mut xc) = (r.chunks_exact(8), x.chunks_exact(8));
            for (a, b) in (&mut rc).zip(&mut xc) {
                for ((s, &u), &w) in acc.iter_mut().zip(a).zip(b) {
                    *s += u * w;
                }
            }
            let tail: f32 = rc.remainder().iter().zip(xc.remainder()).map(|(a, b)| a * b).sum();
            *o = scale * (acc.iter().sum::<f32>() + tail);
        }
    }
}

simd::multiversion! {
    /// `acc += Σ_r w[r] · row_r` (row length `acc.len()`).
    fn axpy_rows(w: &[f32], rows: &[f32], acc: &mut [f32]) {
        let d = acc.len();
        for (&wr, r) in w.iter().zip(rows.chunks_exact(d)) {
            for (a, &x) in acc.iter_mut().zip(r) {
                *a += wr * x;
            }
        }
    }
}

/// Sum of `rows` (row length `out.len()`) into `out`.
fn sum_rows(rows: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for r in rows.chunks_exact(out.len()) {
        for (a, &x) in out.iter_mut().zip(r) {
            *a += x;
        }
    }
}

/// Append the keys of tokens `len..len + s` to one kv head and the key sums of the
/// blocks they finish. Runs before any query head, which read both.
pub(crate) fn push_keys<S: Rows>(
    kv: &mut KvState<S>,
    k: &[f32],
    g: &Geom,
    len: usize,
) -> Result<()> {
    let s = k.len() / g.dk;
    kv.tail.append(k, "the decoder's key cache")?;
    let start = g.block_start(len);
    let mut sum = Vec::new();
    for bi in g.finished(len, s) {
        if sum.is_empty() {
            cpu::grow(&mut sum, g.dk, "the decoder's key sums")?;
        }
        let lo = bi * g.b - start;
        sum_rows(&kv.tail[lo * g.dk..(lo + g.b) * g.dk], &mut sum);
        kv.ksum.append(&sum, "the decoder's key sums")?;
    }
    Ok(())
}

/// Set the coarse terms of block `bi` from its anchor query `qa` and the finished
/// blocks `0..bi` (`buf` holds at least `bi` logits).
fn start_block<S: Rows>(
    h: &mut HeadState<S>,
    kv: &KvState<S>,
    qa: &[f32],
    bi: usize,
    g: &Geom,
    buf: &mut [f32],
) {
    let c = &mut h.coarse;
    c.hsum.fill(0.0);
    if bi == 0 {
        c.sigma = f32::NEG_INFINITY;
        c.gsum = 0.0;
        return;
    }
    let lg = &mut buf[..bi];
    // k̄_J = Σk_J / n_J, and every finished block has n_J = b tokens.
    dot_rows(qa, &kv.ksum[..bi * g.dk], g.scale / g.b as f32, lg);
    c.sigma = small::max_f32(lg);
    c.gsum = small::exp_shift_sum(lg, c.sigma) * g.b as f32;
    axpy_rows(lg, &h.zsum[..bi * g.dv], &mut c.hsum);
}

/// Rows `len..len + s` by the recurrence of SPEC §6, for a state that holds tokens
/// `0..len`. `q: s×dk`, `v: s×dv`, `y: s×dv`; the keys are in `kv` already.
///
/// Row t of block I: local logits `ℓ_j = scale·q_t·k_j` over `j ∈ [I·b, t]`, the
/// block's coarse terms, `μ = max(max_j ℓ_j, σ)`, `e_j = e^{ℓ_j−μ}`, `c = e^{σ−μ}`:
///
/// `w_t = (Σ_{j<t} e_j·z_j + e_t·v_t + c·hsum) / (Σ_j e_j + c·gsum − γ·e_t)`,
///
/// the SPEC's `(Σ A_tj z_j + A_tt v_t)/(1 − γ·A_tt)` with numerator and denominator
/// multiplied by the row normalizer. The denominator is at least `min(1, 1−γ)`: the
/// term at μ is 1 and only `e_t` is discounted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extend_head<S: Rows>(
    h: &mut HeadState<S>,
    kv: &KvState<S>,
    q: &[f32],
    v: &[f32],
    y: &mut [f32],
    g: &Geom,
    len: usize,
    buf: &mut Vec<f32>,
) -> Result<()> {
    let Geom {
        b,
        dk,
        dv,
        gamma,
        scale,
    } = *g;
    let s = q.len() / dk;
    let start = g.block_start(len);
    let total = len + s;
    let logits = (total - start).min(b).max(total / b);
    cpu::grow(buf, logits + dv, "the decoder's logits")?;
    let (lgbuf, acc) = buf.split_at_mut(logits);
    let acc = &mut acc[..dv];
    h.tail
        .make_room(s * dv, "the decoder's resolved-value cache")?;
    let zmark = h.zsum.len();
    for (i, ((qt, vt), yt)) in q
        .chunks_exact(dk)
        .zip(v.chunks_exact(dv))
        .zip(y.chunks_exact_mut(dv))
        .enumerate()
    {
        let t = len + i;
        let r0 = g.block_start(t);
        if t == r0 {
            start_block(h, kv, qt, t / b, g, lgbuf);
        }
        let (lo, hi) = (r0 - start, t + 1 - start);
        let lg = &mut lgbuf[..hi - lo];
        dot_rows(qt, &kv.tail[lo * dk..hi * dk], scale, lg);
        let c = &h.coarse;
        let mu = small::max_f32(lg).max(c.sigma);
        let sum = small::exp_shift_sum(lg, mu);
        let ec = if c.gsum > 0.0 {
            small::exp(c.sigma - mu)
        } else {
            0.0
        };
        let et = lg[hi - lo - 1];
        for (a, &hs) in acc.iter_mut().zip(&c.hsum) {
            *a = ec * hs;
        }
        axpy_rows(&lg[..hi - lo - 1], &h.tail[lo * dv..(hi - 1) * dv], acc);
        let inv = 1.0 / (sum + ec * c.gsum - gamma * et);
        for ((a, o), &vv) in acc.iter_mut().zip(yt.iter_mut()).zip(vt) {
            let w = (*a + et * vv) * inv;
            *o = (1.0 - gamma) * w;
            *a = vv + gamma * w;
        }
        h.tail.append(acc, "the decoder's resolved-value cache")?;
        if (t + 1).is_multiple_of(b) {
            sum_rows(&h.tail[lo * dv..hi * dv], acc);
            h.zsum.append(acc, "the decoder's resolved-value sums")?;
        }
    }
    finite(y, &h.tail[(len - start) * dv..], &h.zsum[zmark..])
}

/// Rows `0..s` of an empty state by the full causal kernel (GEMM-based and parallel),
/// then the state from them: `z = v + γ·w` with `w = y/(1−γ)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prefill_head<S: Rows>(
    h: &mut HeadState<S>,
    kv: &KvState<S>,
    [q, k, v]: [&[f32]; 3],
    y: &mut [f32],
    g: &Geom,
    ks: &mut KernelScratch,
    buf: &mut Vec<f32>,
    par: faer::Par,
) -> Result<()> {
    let Geom {
        b,
        dk,
        dv,
        scale,
        gamma,
    } = *g;
    let s = q.len() / dk;
    let head = Head {
        q,
        k,
        v,
        n: s,
        dk,
        dv,
        scale,
        gamma,
    };
    let r = if g.dense() {
        cpu::dense::evaluate(&head, true, y, ks, par)
    } else {
        cpu::block::evaluate(&head, b, true, CoarseQuery::First, y, ks, par)
    };
    match r {
        // Inputs were checked finite: a non-finite block mean is an overflow.
        Err(Error::NonFinite { tensor, .. }) => return Err(overflow(tensor)),
        r => r?,
    }
    let f = gamma / (1.0 - gamma);
    h.tail
        .make_room(s * dv, "the decoder's resolved-value cache")?;
    let mut z = Vec::new();
    cpu::grow(&mut z, dv, "the decoder's resolved values")?;
    for (yr, vr) in y.chunks_exact(dv).zip(v.chunks_exact(dv)) {
        for ((zz, &yy), &vv) in z.iter_mut().zip(yr).zip(vr) {
            *zz = vv + f * yy;
        }
        h.tail.append(&z, "the decoder's resolved-value cache")?;
    }
    let mut sum = Vec::new();
    for bi in g.finished(0, s) {
        cpu::grow(&mut sum, dv, "the decoder's resolved-value sums")?;
        sum_rows(&h.tail[bi * b * dv..(bi + 1) * b * dv], &mut sum);
        h.zsum.append(&sum, "the decoder's resolved-value sums")?;
    }
    let cur = g.block_start(s);
    if !g.dense() && cur < s {
        cpu::grow(buf, s / b, "the decoder's logits")?;
        start_block(h, kv, &q[cur * dk..(cur + 1) * dk], s / b, g, buf);
    }
    finite(y, &h.tail, &h.zsum)
}

fn overflow(what: &str) -> Error {
    Error::Overflow(format!(
        "decoding gave a result that is not finite in float32 although the inputs are: \
         {what} (the logits scale·q·k, the block sums, the values V or W = Y/(1−γ) exceed \
         its range); scale Q/K or V down, or lower gamma"
    ))
}

/// Finite inputs must not leave a NaN/∞ in the output or in the state.
fn finite(y: &[f32], z: &[f32], zsum: &[f32]) -> Result<()> {
    for (what, x) in [
        ("the output Y", y),
        ("the resolved values z", z),
        ("the resolved-value sums", zsum),
    ] {
        if small::any_non_finite(x) {
            return Err(overflow(what));
        }
    }
    Ok(())
}
