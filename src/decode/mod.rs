//! Incremental evaluation of causal resolvent attention (SPEC §6): a [`Decoder`] holds
//! the state of the tokens seen so far, and each call appends tokens and returns their
//! rows of `Y`, equal to the rows one call on the whole sequence would give.

pub(crate) mod kernel;

use faer::Par;
use rayon::prelude::*;

use crate::attention::Dims;
use crate::config::{CoarseQuery, Config, Structure};
use crate::cpu::{self, KernelScratch};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};
use kernel::{Geom, HeadState, KvState, Rows};

/// The decoding state of one batch of sequences: for each key/value head the cached keys
/// (every key for `dense`; for `block`, the current block's keys and one key sum per
/// finished block), and for each query head the resolved values `z = v + γ·w` (all of
/// them for `dense`; for `block`, the current block's and one sum per finished block),
/// all in f32.
///
/// The first call on an empty decoder (the prefill) runs the full kernels; later calls
/// run the row recurrence of SPEC §6: per token O(t·d) for `dense` and O((b + m/b)·d)
/// on average for `block` (b the block size, m the number of finished blocks), however
/// long the context. A call may append any number of tokens; every split of a sequence
/// into calls gives the rows of one full call (to rounding). A failed call leaves the
/// state as it was.
///
/// Decodable configurations are causal, and either `dense` or `block` with
/// `coarse_query = first` and a fixed `block_size > 0` (a `mean` row depends on later
/// queries of its block; an automatic size depends on the final length).
///
/// ```
/// use blockres::{CoarseQuery, Config, Decoder, Par, Structure, TensorMut, TensorRef};
/// use blockres::resolvent_attention_alloc;
/// let (n, d) = (40, 8);
/// let x: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
/// let cfg = Config {
///     gamma: 0.8,
///     block_size: 16,
///     structure: Structure::Block,
///     coarse_query: CoarseQuery::First,
///     ..Config::default()
/// };
/// let full = TensorRef::new(&x, [1, 1, n, d]).unwrap();
/// let want = resolvent_attention_alloc(full, full, full, &cfg, Par::Seq).unwrap();
///
/// let mut dec = Decoder::new(&cfg, 1, 1, 1, d, d).unwrap();
/// let mut y = vec![0.0f32; n * d];
/// // A prefill of 25 tokens, then one token at a time.
/// for (lo, hi) in std::iter::once((0, 25)).chain((25..n).map(|t| (t, t + 1))) {
///     let part = TensorRef::new(&x[lo * d..hi * d], [1, 1, hi - lo, d]).unwrap();
///     let out = TensorMut::new(&mut y[lo * d..hi * d], [1, 1, hi - lo, d]).unwrap();
///     dec.extend(part, part, part, out, Par::Seq).unwrap();
/// }
/// assert_eq!(dec.len(), n);
/// assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
/// ```
#[derive(Debug)]
pub struct Decoder {
    g: Geom,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    len: usize,
    kv: Vec<KvState>,
    hs: Vec<HeadState>,
    /// Per query head: logits scratch for steps.
    bufs: Vec<Vec<f32>>,
}

/// One query head's share of a call: its state, its logits scratch, its rows of Y.
type HeadTask<'a, S> = (
    usize,
    ((&'a mut HeadState<S>, &'a mut Vec<f32>), &'a mut [f32]),
);

/// Work (multiply-adds) below which a call stays on the calling thread: a one-token
/// step of a few heads is microseconds, less than waking a pool.
const PARALLEL_WORK: usize = 1 << 18;

impl Decoder {
    /// An empty decoder for `batch` sequences of `heads` query heads and `kv_heads`
    /// key/value heads (`heads % kv_heads == 0`), key width `dk` and value width `dv`.
    ///
    /// Errors name the parameter that makes `cfg` undecodable.
    ///
    /// ```
    /// use blockres::{CoarseQuery, Config, Decoder, Structure};
    /// let dense = Config { structure: Structure::Dense, ..Config::default() };
    /// assert!(Decoder::new(&dense, 2, 8, 2, 64, 64).is_ok());
    /// // The default block config has mean coarse queries and an automatic block size.
    /// let e = Decoder::new(&Config::default(), 1, 1, 1, 64, 64).unwrap_err();
    /// assert!(e.to_string().contains("coarse_query"));
    /// let first = Config { coarse_query: CoarseQuery::First, ..Config::default() };
    /// assert!(Decoder::new(&first, 1, 1, 1, 64, 64).unwrap_err().to_string().contains("block_size"));
    /// ```
    pub fn new(
        cfg: &Config,
        batch: usize,
        heads: usize,
        kv_heads: usize,
        dk: usize,
        dv: usize,
    ) -> Result<Self> {
        check_new(cfg, [batch, heads, kv_heads, dk, dv])?;
        let b = match cfg.structure {
            Structure::Dense => usize::MAX,
            _ => cfg.block_size,
        };
        let g = Geom {
            b,
            dk,
            dv,
            scale: cfg.effective_scale(dk),
            gamma: cfg.gamma,
        };
        let mut kv = Vec::new();
        kv.try_reserve_exact(batch * kv_heads)
            .map_err(|_| oom(batch * kv_heads))?;
        kv.resize_with(batch * kv_heads, KvState::default);
        let mut hs = Vec::new();
        hs.try_reserve_exact(batch * heads)
            .map_err(|_| oom(batch * heads))?;
        for _ in 0..batch * heads {
            hs.push(HeadState::new(dv)?);
        }
        let mut bufs = Vec::new();
        bufs.try_reserve_exact(batch * heads)
            .map_err(|_| oom(batch * heads))?;
        bufs.resize_with(batch * heads, Vec::new);
        Ok(Self {
            g,
            batch,
            heads,
            kv_heads,
            len: 0,
            kv,
            hs,
            bufs,
        })
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No token seen yet (the next call is a prefill).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget every token, keeping the memory for the next sequence.
    pub fn reset(&mut self) {
        self.len = 0;
        self.kv.iter_mut().for_each(KvState::clear);
        self.hs.iter_mut().for_each(HeadState::clear);
    }

    /// Reserve room for `tokens` more tokens, so that later calls do not reallocate
    /// (and copy) the caches: for `dense` the key and resolved-value caches grow with
    /// every token, as a KV cache does.
    pub fn reserve(&mut self, tokens: usize) -> Result<()> {
        let g = self.g;
        let blocks = if g.b == usize::MAX {
            0
        } else {
            tokens / g.b + 1
        };
        let rows = tokens.min(g.b);
        let err = |bytes: usize| Error::OutOfMemory {
            what: "the decoder's reserved caches",
            bytes,
        };
        for st in &mut self.kv {
            let more = rows.saturating_mul(g.dk);
            st.tail.try_reserve(more).map_err(|_| err(more * 4))?;
            st.ksum
                .try_reserve(blocks * g.dk)
                .map_err(|_| err(blocks * g.dk * 4))?;
        }
        for st in &mut self.hs {
            let more = rows.saturating_mul(g.dv);
            st.tail.try_reserve(more).map_err(|_| err(more * 4))?;
            st.zsum
                .try_reserve(blocks * g.dv)
                .map_err(|_| err(blocks * g.dv * 4))?;
        }
        Ok(())
    }

    /// Drop the last tokens, back to `len` (e.g. draft tokens a speculative step
    /// rejected). `dense` can go back to any length; `block` only to the start of the
    /// current block or later, since a finished block is kept as sums only.
    ///
    /// ```
    /// use blockres::{CoarseQuery, Config, Decoder, Par, TensorMut, TensorRef};
    /// let cfg = Config { block_size: 4, coarse_query: CoarseQuery::First, ..Config::default() };
    /// let mut dec = Decoder::new(&cfg, 1, 1, 1, 2, 2).unwrap();
    /// let x = [0.5f32; 12];
    /// let mut y = [0.0f32; 12];
    /// let t = TensorRef::new(&x, [1, 1, 6, 2]).unwrap();
    /// dec.extend(t, t, t, TensorMut::new(&mut y, [1, 1, 6, 2]).unwrap(), Par::Seq).unwrap();
    /// assert!(dec.truncate(5).is_ok()); // still in the block of tokens 4..8
    /// assert!(dec.truncate(3).is_err()); // token 3 is in a finished block
    /// assert_eq!(dec.len(), 5);
    /// ```
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        let g = self.g;
        let start = g.block_start(self.len);
        if len > self.len || len < start {
            return Err(Error::Param {
                name: "len",
                message: format!(
                    "can truncate {} tokens back to {start}..={} only (tokens before {start} \
                     are in finished blocks, kept as sums), got {len}",
                    self.len, self.len
                ),
            });
        }
        for st in &mut self.kv {
            st.tail.truncate((len - start) * g.dk);
        }
        for st in &mut self.hs {
            st.tail.truncate((len - start) * g.dv);
        }
        self.len = len;
        Ok(())
    }

    /// Benchmarks only: grow a `dense` state to `len` tokens that all have the key
    /// `key` and the resolved value `z`, without computing rows (a real dense prefill
    /// of 2^20 tokens takes hours; a step's cost depends only on the length).
    #[doc(hidden)]
    pub fn fill_dense_for_benchmarks(&mut self, len: usize, key: &[f32], z: &[f32]) -> Result<()> {
        if self.g.b != usize::MAX || key.len() != self.g.dk || z.len() != self.g.dv {
            return Err(Error::Unsupported(
                "a dense decoder and one key/value row".into(),
            ));
        }
        let add = len.saturating_sub(self.len);
        for st in &mut self.kv {
            for _ in 0..add {
                kernel::push(&mut st.tail, key, "the decoder's key cache")?;
            }
        }
        for st in &mut self.hs {
            for _ in 0..add {
                kernel::push(&mut st.tail, z, "the decoder's resolved-value cache")?;
            }
        }
        self.len = self.len.max(len);
        Ok(())
    }

    /// Bytes of cached state (keys, resolved values and their block sums).
    pub fn state_bytes(&self) -> usize {
        let kv: usize = self.kv.iter().map(|s| s.ksum.len() + s.tail.len()).sum();
        let h: usize = self
            .hs
            .iter()
            .map(|s| s.zsum.len() + s.tail.len() + 2 * s.coarse.hsum.len())
            .sum();
        4 * (kv + h)
    }

    /// A copy of the state (to branch a sequence: beam search, speculative steps),
    /// allocated fallibly.
    pub fn try_clone(&self) -> Result<Self> {
        let kv = self
            .kv
            .iter()
            .map(KvState::try_clone)
            .collect::<Result<Vec<_>>>()?;
        let hs = self
            .hs
            .iter()
            .map(HeadState::try_clone)
            .collect::<Result<Vec<_>>>()?;
        let mut bufs = Vec::new();
        bufs.resize_with(hs.len(), Vec::new);
        Ok(Self {
            kv,
            hs,
            bufs,
            ..*self
        })
    }

    /// Append `s` tokens to every sequence and write their rows of `Y`.
    ///
    /// `q: [B, H, s, dk]`, `k: [B, Hkv, s, dk]`, `v: [B, Hkv, s, dv]`, `y: [B, H, s, dv]`
    /// with the decoder's `B, H, Hkv, dk, dv` and any `s ≥ 1`. Inputs must be finite; a
    /// result that overflows is an error, and after any error the state is unchanged.
    pub fn extend<T: Element>(
        &mut self,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
        mut y: TensorMut<'_, T>,
        par: Par,
    ) -> Result<()> {
        let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
        self.check_dims(&dims)?;
        dims.check_output(y.shape())?;
        let s = dims.n;
        self.len.checked_add(s).ok_or_else(|| Error::Shape {
            tensor: "Q",
            message: format!("{} + {s} tokens overflow usize", self.len),
        })?;
        let (qf, kf, vf) = (
            widen("Q", q.data())?,
            widen("K", k.data())?,
            widen("V", v.data())?,
        );
        let mut yf = Vec::new();
        cpu::grow(
            &mut yf,
            y.data_mut().len(),
            "the f32 result of a decoding call",
        )?;

        for st in &mut self.kv {
            st.begin();
        }
        for st in &mut self.hs {
            st.begin();
        }
        let r = self.run(&qf, &kf, &vf, &mut yf, par).and_then(|()| {
            if yf.iter().any(|v| v.abs() > T::MAX) {
                return Err(Error::Overflow(format!(
                    "a row of Y exceeds the range of {}; scale V down or lower gamma",
                    T::NAME
                )));
            }
            Ok(())
        });
        if let Err(e) = r {
            for st in &mut self.kv {
                st.rollback();
            }
            for st in &mut self.hs {
                st.rollback();
            }
            return Err(e);
        }
        let (start, end) = (
            self.g.block_start(self.len),
            self.g.block_start(self.len + s),
        );
        for st in &mut self.kv {
            st.tail.drain(..(end - start) * self.g.dk);
        }
        for st in &mut self.hs {
            st.tail.drain(..(end - start) * self.g.dv);
        }
        self.len += s;
        T::narrow(&yf, y.data_mut());
        Ok(())
    }

    fn check_dims(&self, d: &Dims) -> Result<()> {
        let want = (self.batch, self.heads, self.kv_heads, self.g.dk, self.g.dv);
        let got = (d.batch, d.heads, d.kv_heads, d.dk, d.dv);
        if want == got {
            return Ok(());
        }
        Err(Error::Shape {
            tensor: if (d.batch, d.heads, d.dk) != (want.0, want.1, want.3) {
                "Q"
            } else if d.kv_heads != want.2 {
                "K"
            } else {
                "V"
            },
            message: format!(
                "the decoder was made for B={}, H={}, Hkv={}, dk={}, dv={}; got B={}, \
                 H={}, Hkv={}, dk={}, dv={}",
                want.0, want.1, want.2, want.3, want.4, got.0, got.1, got.2, got.3, got.4
            ),
        })
    }

    fn run(&mut self, q: &[f32], k: &[f32], v: &[f32], y: &mut [f32], par: Par) -> Result<()> {
        let st = States {
            kv: &mut self.kv,
            hs: &mut self.hs,
            bufs: &mut self.bufs,
        };
        run_heads(
            st,
            [q, k, v],
            y,
            &self.g,
            self.len,
            self.heads,
            self.kv_heads,
            par,
        )
    }
}

/// Whether a call of `s` tokens on `heads` query heads holding `len` tokens has work
/// enough to pay for waking a thread pool (a prefill always has).
pub(crate) fn parallel_pays(heads: usize, s: usize, len: usize, g: &Geom) -> bool {
    let span = (len + s - g.block_start(len)).min(g.b);
    len == 0 || heads * s * span * (g.dk + g.dv) >= PARALLEL_WORK
}

/// The states of one call: per kv head, per query head, and per query head a logits
/// scratch.
pub(crate) struct States<'a, S> {
    pub kv: &'a mut [KvState<S>],
    pub hs: &'a mut [HeadState<S>],
    pub bufs: &'a mut [Vec<f32>],
}

/// Append `s` tokens (`q: [B·H, s, dk]`, `k: [B·Hkv, s, dk]`, `v: [B·Hkv, s, dv]`, f32)
/// to states holding `len` tokens and write `y: [B·H, s, dv]`: the keys first (every
/// query head of a group reads them), then the heads, in parallel where the work pays.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_heads<S: Rows + Send + Sync>(
    st: States<'_, S>,
    [q, k, v]: [&[f32]; 3],
    y: &mut [f32],
    g: &Geom,
    len: usize,
    heads: usize,
    kv_heads: usize,
    par: Par,
) -> Result<()> {
    let g = *g;
    let s = q.len() / (st.hs.len() * g.dk);
    let group = heads / kv_heads;
    let total = st.hs.len();
    let par = if cpu::threads(par) > 1 && parallel_pays(total, s, len, &g) {
        par
    } else {
        Par::Seq
    };
    let parallel = cpu::threads(par) > 1;
    let push = |(i, kv): (usize, &mut KvState<S>)| {
        kernel::push_keys(kv, &k[i * s * g.dk..(i + 1) * s * g.dk], &g, len)
    };
    if parallel {
        st.kv.par_iter_mut().enumerate().try_for_each(push)?;
    } else {
        st.kv.iter_mut().enumerate().try_for_each(push)?;
    }
    let kvs = &*st.kv;
    // Heads first; only a prefill of fewer heads than threads splits a head.
    let inner = if total >= cpu::threads(par) {
        Par::Seq
    } else {
        par
    };
    let head = |(bh, ((h, buf), yh)): HeadTask<'_, S>| {
        let kvh = (bh / heads) * kv_heads + (bh % heads) / group;
        let kv = &kvs[kvh];
        let qh = &q[bh * s * g.dk..(bh + 1) * s * g.dk];
        let vh = &v[kvh * s * g.dv..(kvh + 1) * s * g.dv];
        if len == 0 {
            let kh = &k[kvh * s * g.dk..(kvh + 1) * s * g.dk];
            let mut ks = KernelScratch::default();
            kernel::prefill_head(h, kv, [qh, kh, vh], yh, &g, &mut ks, buf, inner)
        } else {
            kernel::extend_head(h, kv, qh, vh, yh, &g, len, buf)
        }
    };
    if parallel {
        st.hs
            .par_iter_mut()
            .zip(st.bufs.par_iter_mut())
            .zip(y.par_chunks_mut(s * g.dv))
            .enumerate()
            .with_max_len(1)
            .try_for_each(head)
    } else {
        st.hs
            .iter_mut()
            .zip(st.bufs.iter_mut())
            .zip(y.chunks_mut(s * g.dv))
            .enumerate()
            .try_for_each(head)
    }
}

/// What every decoder (CPU or GPU) checks before it allocates: the parameters, that
/// they are decodable, and the head counts and widths `[B, H, Hkv, dk, dv]`.
pub(crate) fn check_new(cfg: &Config, [batch, heads, kv_heads, dk, dv]: [usize; 5]) -> Result<()> {
    cfg.validate()?;
    check_decodable(cfg)?;
    Dims {
        batch,
        heads,
        kv_heads,
        n: 1,
        dk,
        dv,
    }
    .validate()
}

pub(crate) fn check_decodable(cfg: &Config) -> Result<()> {
    let param = |name, message: &str| {
        Err(Error::Param {
            name,
            message: message.to_string(),
        })
    };
    if !cfg.causal {
        return param(
            "causal",
            "decoding is defined for causal attention only (SPEC §6): set causal = 1",
        );
    }
    match cfg.structure {
        Structure::Dense => Ok(()),
        Structure::Block if cfg.coarse_query != CoarseQuery::First => param(
            "coarse_query",
            "block decoding needs coarse_query = first: with 'mean' a row depends on the \
             later queries of its block, which a decoder has not seen",
        ),
        Structure::Block if cfg.block_size == 0 => param(
            "block_size",
            "block decoding needs a fixed block_size > 0: the automatic size depends on \
             the final sequence length",
        ),
        Structure::Block => Ok(()),
        other => Err(Error::Param {
            name: "structure",
            message: format!(
                "'{}' cannot be decoded incrementally; use 'dense' or 'block' \
                 (coarse_query = first)",
                other.name()
            ),
        }),
    }
}

fn oom(items: usize) -> Error {
    Error::OutOfMemory {
        what: "the decoder's per-head state",
        bytes: items.saturating_mul(std::mem::size_of::<HeadState>()),
    }
}

/// The input in f32 (a fallible copy), or the error naming its first non-finite value.
pub(crate) fn widen<T: Element>(name: &'static str, x: &[T]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    cpu::grow(&mut out, x.len(), "the f32 copy of a decoding input")?;
    T::widen(x, &mut out);
    if cpu::small::any_non_finite(&out) {
        let index = out.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::NonFinite {
            tensor: name,
            index,
        });
    }
    Ok(out)
}
