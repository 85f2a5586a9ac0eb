//! The public entry points: shape checks, the walk over (batch, head) pairs, element
//! conversion, and dispatch to the kernel of the requested structure.

use std::sync::Mutex;

use faer::Par;
use rayon::prelude::*;

use crate::config::{Config, Structure};
use crate::cpu::{self, Head, Scratch};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};

/// The dimensions of one call, checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Batch size `B`.
    pub batch: usize,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads `Hkv` (`H % Hkv == 0`).
    pub kv_heads: usize,
    /// Sequence length `n`.
    pub n: usize,
    /// Query/key width `dk`.
    pub dk: usize,
    /// Value width `dv`.
    pub dv: usize,
}

impl Dims {
    /// Check `Q: [B, H, n, dk]`, `K: [B, Hkv, n, dk]`, `V: [B, Hkv, n, dv]` (SPEC §4).
    ///
    /// ```
    /// use blockres::Dims;
    /// let d = Dims::from_shapes([1, 8, 100, 64], [1, 2, 100, 64], [1, 2, 100, 32]).unwrap();
    /// assert_eq!((d.heads, d.kv_heads, d.dv), (8, 2, 32));
    /// let e = Dims::from_shapes([1, 8, 100, 64], [1, 3, 100, 64], [1, 3, 100, 32]).unwrap_err();
    /// assert!(e.to_string().contains("K"));
    /// ```
    pub fn from_shapes(q: [usize; 4], k: [usize; 4], v: [usize; 4]) -> Result<Self> {
        let [b, h, n, dk] = q;
        let shape_err = |tensor, message| Err(Error::Shape { tensor, message });
        if b == 0 || h == 0 || n == 0 || dk == 0 {
            return shape_err(
                "Q",
                format!("expected [B, H, n, dk] with every dimension > 0, got {q:?}"),
            );
        }
        if k[0] != b || k[2] != n || k[3] != dk || k[1] == 0 {
            return shape_err(
                "K",
                format!("expected [B={b}, Hkv, n={n}, dk={dk}] with Hkv > 0, got {k:?}"),
            );
        }
        let hkv = k[1];
        if h % hkv != 0 {
            return shape_err(
                "K",
                format!(
                    "head count Hkv={hkv} must divide the query heads H={h} (grouped-query attention)"
                ),
            );
        }
        if v[0] != b || v[1] != hkv || v[2] != n || v[3] == 0 {
            return shape_err(
                "V",
                format!("expected [B={b}, Hkv={hkv}, n={n}, dv] with dv > 0, got {v:?}"),
            );
        }
        Ok(Self {
            batch: b,
            heads: h,
            kv_heads: hkv,
            n,
            dk,
            dv: v[3],
        })
    }

    /// The shape of the output `Y: [B, H, n, dv]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.n, self.dv]
    }

    /// Check a `Dims` built by hand (its fields are public) as [`Dims::from_shapes`]
    /// checks shapes: every dimension > 0, `H % Hkv == 0`, element counts that fit.
    ///
    /// ```
    /// use blockres::Dims;
    /// let ok = Dims { batch: 1, heads: 4, kv_heads: 2, n: 10, dk: 8, dv: 8 };
    /// assert!(ok.validate().is_ok());
    /// assert!(Dims { n: 0, ..ok }.validate().is_err());
    /// assert!(Dims { kv_heads: 3, ..ok }.validate().unwrap_err().to_string().contains("divide"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let d = Dims::from_shapes(
            [self.batch, self.heads, self.n, self.dk],
            [self.batch, self.kv_heads, self.n, self.dk],
            [self.batch, self.kv_heads, self.n, self.dv],
        )?;
        let count = |dims: [usize; 4]| dims.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        let shape = [
            self.batch,
            self.heads.max(self.kv_heads),
            self.n,
            self.dk.max(self.dv),
        ];
        if count(shape).is_none() {
            return Err(Error::Shape {
                tensor: "Q",
                message: format!("{shape:?}: the element count overflows usize"),
            });
        }
        debug_assert_eq!(d, *self);
        Ok(())
    }

    /// `Ok` when `y_shape` is [`Self::output_shape`], else the error naming `Y`.
    ///
    /// ```
    /// use blockres::Dims;
    /// let d = Dims::from_shapes([1, 2, 10, 8], [1, 2, 10, 8], [1, 2, 10, 4]).unwrap();
    /// assert!(d.check_output([1, 2, 10, 4]).is_ok());
    /// assert!(d.check_output([1, 2, 10, 8]).is_err());
    /// ```
    pub fn check_output(&self, y_shape: [usize; 4]) -> Result<()> {
        if y_shape == self.output_shape() {
            return Ok(());
        }
        Err(Error::Shape {
            tensor: "Y",
            message: format!(
                "expected [B, H, n, dv] = {:?}, got {:?}",
                self.output_shape(),
                y_shape
            ),
        })
    }
}

/// Reusable scratch memory. Calls that share one `Workspace` reuse its buffers instead
/// of allocating per call; it is `Sync`, so concurrent calls may share it too (each
/// takes its own buffers from the pool).
///
/// ```
/// use blockres::{Config, Par, TensorMut, TensorRef, Workspace, resolvent_attention_with};
/// let (n, d) = (64, 16);
/// let x: Vec<f32> = (0..n * d).map(|i| ((i * 7 % 13) as f32) / 13.0).collect();
/// let mut y = vec![0.0f32; n * d];
/// let ws = Workspace::new();
/// for _ in 0..3 {
///     let t = TensorRef::new(&x, [1, 1, n, d]).unwrap();
///     let out = TensorMut::new(&mut y, [1, 1, n, d]).unwrap();
///     resolvent_attention_with(t, t, t, out, &Config::default(), Par::Seq, &ws).unwrap();
/// }
/// ```
#[derive(Default, Debug)]
pub struct Workspace {
    pool: Mutex<Vec<Scratch>>,
}

impl Workspace {
    /// An empty workspace; buffers are allocated on first use and then kept.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self) -> Scratch {
        self.pool
            .lock()
            .map(|mut p| p.pop())
            .unwrap_or(None)
            .unwrap_or_default()
    }

    fn give(&self, s: Scratch) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(s);
        }
    }
}

/// Evaluate resolvent attention `Y = (1−γ)·A·(I−γA)⁻¹·V` into `y`.
///
/// `q: [B, H, n, dk]`, `k: [B, Hkv, n, dk]`, `v: [B, Hkv, n, dv]`, `y: [B, H, n, dv]`
/// (grouped-query attention when `Hkv < H`). Accumulation and solves are in f32.
/// `par` is faer's parallelism argument: `Par::Seq` keeps everything on the calling
/// thread; `Par::rayon(0)` uses the current rayon pool, across (batch, head) pairs and
/// across blocks of one head.
///
/// ```
/// use blockres::{Config, Par, Structure, TensorMut, TensorRef, resolvent_attention};
/// let (n, d) = (100, 8);
/// let q: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
/// let k: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.11).cos()).collect();
/// let v = vec![2.5f32; n * d]; // constant values pass through unchanged
/// let mut y = vec![0.0f32; n * d];
/// let cfg = Config { gamma: 0.5, block_size: 16, structure: Structure::Block, ..Config::default() };
/// resolvent_attention(
///     TensorRef::new(&q, [1, 1, n, d]).unwrap(),
///     TensorRef::new(&k, [1, 1, n, d]).unwrap(),
///     TensorRef::new(&v, [1, 1, n, d]).unwrap(),
///     TensorMut::new(&mut y, [1, 1, n, d]).unwrap(),
///     &cfg,
///     Par::rayon(0),
/// ).unwrap();
/// assert!(y.iter().all(|&x| (x - 2.5).abs() < 1e-5));
/// ```
pub fn resolvent_attention<T: Element>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    y: TensorMut<'_, T>,
    cfg: &Config,
    par: Par,
) -> Result<()> {
    resolvent_attention_with(q, k, v, y, cfg, par, &Workspace::new())
}

/// [`resolvent_attention`] returning a new output `Vec` of shape `[B, H, n, dv]`.
///
/// ```
/// use blockres::{Config, Par, TensorRef, resolvent_attention_alloc};
/// let x = vec![half::f16::from_f32(0.25); 2 * 3 * 4];
/// let t = TensorRef::new(&x, [1, 2, 3, 4]).unwrap();
/// let y = resolvent_attention_alloc(t, t, t, &Config::default(), Par::Seq).unwrap();
/// assert_eq!(y.len(), 24);
/// ```
pub fn resolvent_attention_alloc<T: Element>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    cfg: &Config,
    par: Par,
) -> Result<Vec<T>> {
    let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
    let shape = dims.output_shape();
    let mut out = Vec::new();
    cpu::grow(&mut out, shape.iter().product(), "the output Y")?;
    resolvent_attention(q, k, v, TensorMut::new(&mut out, shape)?, cfg, par)?;
    Ok(out)
}

/// [`resolvent_attention`] with a caller-owned [`Workspace`], for callers that run many
/// times and want no allocation after the first call.
pub fn resolvent_attention_with<T: Element>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    mut y: TensorMut<'_, T>,
    cfg: &Config,
    par: Par,
    ws: &Workspace,
) -> Result<()> {
    cfg.validate()?;
    let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
    dims.check_output(y.shape())?;
    let Dims {
        heads,
        kv_heads,
        n,
        dk,
        dv,
        ..
    } = dims;
    let group = heads / kv_heads;
    let (qd, kd, vd) = (q.data(), k.data(), v.data());
    let total = dims.batch * heads;
    let threads = match par {
        Par::Seq => 1,
        Par::Rayon(t) => t.get(),
    };
    // Heads first: they are independent and coarse. Only when there are fewer heads
    // than threads does each head parallelize inside (over its blocks, its GEMMs).
    let inner = if total >= threads { Par::Seq } else { par };
    let run = |bh: usize, out: &mut [T]| -> Result<()> {
        let kvh = (bh / heads) * kv_heads + (bh % heads) / group;
        let qs = &qd[bh * n * dk..(bh + 1) * n * dk];
        let ks = &kd[kvh * n * dk..(kvh + 1) * n * dk];
        let vs = &vd[kvh * n * dv..(kvh + 1) * n * dv];
        let mut s = ws.take();
        let r = run_head(qs, ks, vs, [bh, kvh], out, &dims, cfg, &mut s, inner);
        ws.give(s);
        r
    };
    let yd = y.data_mut();
    if threads > 1 && total > 1 {
        yd.par_chunks_mut(n * dv)
            .enumerate()
            .with_max_len(1)
            .try_for_each(|(bh, out)| run(bh, out))
    } else {
        yd.chunks_mut(n * dv)
            .enumerate()
            .try_for_each(|(bh, out)| run(bh, out))
    }
}

/// Elements per parallel task of the f16/bf16 conversions.
const CONVERT_CHUNK: usize = 1 << 16;

/// Widen one head's inputs (borrowing them when they are f32 already), reject
/// non-finite values, run the kernel, and round the result into `out`.
#[allow(clippy::too_many_arguments)]
fn run_head<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    [bh, kvh]: [usize; 2],
    out: &mut [T],
    dims: &Dims,
    cfg: &Config,
    s: &mut Scratch,
    par: Par,
) -> Result<()> {
    let Dims { n, dk, dv, .. } = *dims;
    let Scratch {
        qf,
        kf,
        vf,
        yf,
        kernel,
    } = s;
    // Conversions are memory-bound passes over whole heads: split them across the
    // threads the kernel itself will use, or they cap a long head's speed-up.
    let split = cpu::threads(par) > 1;
    let widen = |x: &'_ [T], buf: &'_ mut Vec<f32>| -> Result<()> {
        if T::as_f32(x).is_none() {
            cpu::grow(buf, x.len(), "the widened f32 copy of one head's input")?;
            buf.truncate(x.len());
            if split {
                buf.par_chunks_mut(CONVERT_CHUNK)
                    .zip(x.par_chunks(CONVERT_CHUNK))
                    .for_each(|(d, s)| T::widen(s, d));
            } else {
                T::widen(x, buf);
            }
        }
        Ok(())
    };
    widen(q, qf)?;
    widen(k, kf)?;
    widen(v, vf)?;
    let q32 = T::as_f32(q).unwrap_or(qf);
    let k32 = T::as_f32(k).unwrap_or(kf);
    let v32 = T::as_f32(v).unwrap_or(vf);
    let locate = || -> Option<Error> {
        [
            ("Q", q32, bh * n * dk),
            ("K", k32, kvh * n * dk),
            ("V", v32, kvh * n * dv),
        ]
        .into_iter()
        .find_map(|(tensor, x, base)| {
            first_non_finite(x).map(|i| Error::NonFinite {
                tensor,
                index: base + i,
            })
        })
    };
    // The block kernel reads every input once for its block means, and a NaN or ±∞
    // anywhere makes a mean non-finite (with coarse_query = first it scans Q instead of
    // averaging it): it reports that, and only then are the inputs searched. Other kernels get the inputs checked up front.
    let checked_by_kernel = cfg.structure == Structure::Block;
    if !checked_by_kernel && let Some(e) = locate() {
        return Err(e);
    }
    let head = Head {
        q: q32,
        k: k32,
        v: v32,
        n,
        dk,
        dv,
        scale: cfg.effective_scale(dk),
        gamma: cfg.gamma,
    };
    let result = match T::as_f32_mut(out) {
        Some(y32) => {
            dispatch(&head, cfg, y32, kernel, par).and_then(|()| finite_result::<T>(y32, bh))
        }
        None => {
            cpu::grow(yf, n * dv, "the f32 result of one head")?;
            yf.truncate(n * dv);
            dispatch(&head, cfg, yf, kernel, par)
                .and_then(|()| finite_result::<T>(yf, bh))
                .map(|()| {
                    if split {
                        out.par_chunks_mut(CONVERT_CHUNK)
                            .zip(yf.par_chunks(CONVERT_CHUNK))
                            .for_each(|(d, s)| T::narrow(s, d));
                    } else {
                        T::narrow(yf, out);
                    }
                })
        }
    };
    match result {
        Err(Error::NonFinite { tensor, .. }) if checked_by_kernel => {
            Err(locate().unwrap_or_else(|| {
                Error::Unsupported(format!(
                    "input {tensor}: block means overflow float32; scale the inputs down"
                ))
            }))
        }
        other => other,
    }
}

fn dispatch(
    head: &Head<'_>,
    cfg: &Config,
    y: &mut [f32],
    s: &mut cpu::KernelScratch,
    par: Par,
) -> Result<()> {
    match cfg.structure {
        Structure::Dense => cpu::dense::evaluate(head, cfg.causal, y, s, par),
        Structure::Block => {
            let b = if cfg.block_size == 0 {
                cpu::block::auto_block_size(head.n, head.dk.max(head.dv))
            } else {
                cfg.block_size
            };
            cpu::block::evaluate(head, b, cfg.causal, cfg.coarse_query, y, s, par)
        }
        Structure::Strided { .. } | Structure::Fixed { .. } | Structure::TopK { .. } => {
            cpu::sparse::evaluate(head, cfg.structure, cfg.causal, y, s, par)
        }
    }
}

/// Finite inputs must not give a silent NaN/∞: a result that overflowed (in f32, or
/// past the element type's range) is an error that says why.
fn finite_result<T: Element>(y: &[f32], bh: usize) -> Result<()> {
    let within = |y: &[f32]| y.iter().fold(true, |ok, v| ok & (v.abs() <= T::MAX));
    if y.chunks(4096).all(within) {
        return Ok(());
    }
    Err(Error::Overflow(format!(
        "the result of (batch·head) {bh} is not finite in {} although the inputs are: the \
         logits scale·q·k, the values V or W = Y/(1−γ) exceed its range; scale Q/K or V \
         down, or lower gamma",
        T::NAME
    )))
}

fn first_non_finite(x: &[f32]) -> Option<usize> {
    if cpu::small::any_non_finite(x) {
        x.iter().position(|v| !v.is_finite())
    } else {
        None
    }
}
