//! Incremental decoding on the GPU (SPEC §6): [`GpuDecoder`], the device counterpart of
//! [`crate::Decoder`], with its whole state in device memory (cuda/decode.cu).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::params::{Args, DecodeParams};
use super::{Gpu, GpuElement, GpuWorkspace, MAX_HEAD_DIM, cfg1, dev_err, to_i32};
use crate::attention::Dims;
use crate::config::{Config, Structure};
use crate::error::{Error, Result};

/// Threads per CTA of the decode kernels (`DEC_THREADS` in cuda/decode.cu).
const THREADS: u32 = 256;

/// The decoding state of one batch of sequences on the GPU: every cached key (f32,
/// `[B·Hkv, capacity, dk]`) and resolved value `z = v + γ·w` (f32, `[B·H, capacity,
/// dv]`), the key and z sums of the finished blocks (`[B·Hkv, capacity/b, dk]`,
/// `[B·H, capacity/b, dv]`) and, per query head, the current block's coarse terms
/// (`[B·H, dv + 2]`: σ, gsum, hsum). It computes what [`crate::Decoder`] computes, for
/// the same configurations (causal; `dense`, or `block` with `coarse_query = first` and
/// a fixed `block_size`).
///
/// The capacity is fixed at construction, as for a KV cache: the caches are allocated
/// once and a call never reallocates or moves them, so a step is two kernel launches
/// and nothing else. A call that would pass the capacity is an error.
///
/// The first call on an empty decoder of two tokens or more (the prefill) runs the
/// full GPU kernels ([`super::resolvent_attention_device`]) and derives the state from
/// their output; every other call runs the row recurrence, one CTA per query head,
/// O(t·d) per token for `dense` and O((b + m)·d) at a block start, O(b·d) otherwise,
/// for `block`. With f16/bf16 the prefill's z are rebuilt from Y in the element type
/// (`z = v + γ/(1−γ)·y`), so they carry its rounding times γ/(1−γ).
///
/// The decoder borrows the [`Gpu`]: its launches go on the `Gpu`'s stream, after
/// whatever the caller enqueued there (the uploads of Q, K, V).
///
/// Non-finite values: [`extend`](Self::extend) never waits, so it cannot refuse a NaN or
/// infinity in device buffers. Its kernels record instead, in a device flag of the
/// decoder, any non-finite value they read from the new tokens' Q, K, V, and any
/// non-finite value they write (Y, the cached z, the block sums, the coarse terms: from
/// finite inputs, an overflow). Callers with device buffers call
/// [`check_finite`](Self::check_finite) when they want to know (it waits), as for
/// [`super::resolvent_attention_device`] and [`GpuWorkspace::check_finite`];
/// [`extend_host`](Self::extend_host) checks its inputs on the host and calls it.
///
/// ```no_run
/// use blockres::gpu::{Gpu, GpuDecoder};
/// use blockres::{CoarseQuery, Config, Structure};
/// let gpu = Gpu::new(0).unwrap();
/// let cfg = Config {
///     block_size: 64,
///     structure: Structure::Block,
///     coarse_query: CoarseQuery::First,
///     ..Config::default()
/// };
/// let (h, d, prompt) = (4, 32, 100);
/// let mut dec = GpuDecoder::new(&gpu, &cfg, 1, h, h, d, d, 4096).unwrap();
/// // The prefill, from host memory:
/// let x = vec![0.25f32; h * prompt * d];
/// let y = dec.extend_host(&x, &x, &x, prompt).unwrap();
/// assert_eq!(y.len(), h * prompt * d);
/// // Then one token at a time, on device buffers:
/// let t = gpu.upload(&vec![0.5f32; h * d]).unwrap();
/// let mut yt = gpu.zeros::<f32>(h * d).unwrap();
/// dec.extend(&t, &t, &t, &mut yt, 1).unwrap();
/// assert_eq!(dec.len(), prompt + 1);
/// // Device buffers are not checked by `extend`: ask when it matters (this waits).
/// dec.check_finite().unwrap();
/// ```
pub struct GpuDecoder<'g> {
    gpu: &'g Gpu,
    /// For the prefill through the full kernels.
    cfg: Config,
    /// Block size; `capacity + 1` for dense (one block that never finishes).
    b: usize,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    dk: usize,
    dv: usize,
    capacity: usize,
    /// Finished blocks the sums have room for.
    maxb: usize,
    len: usize,
    scale: f32,
    gamma: f32,
    kc: CudaSlice<f32>,
    zc: CudaSlice<f32>,
    ks: CudaSlice<f32>,
    zs: CudaSlice<f32>,
    co: CudaSlice<f32>,
    /// The non-finite record the kernels set (cuda/decode.cu): `FLAG − index` of the
    /// first NaN/∞ seen in Q, K, V (slots 0..3, 0 = none), 1 in slot 3 for a non-finite
    /// result. Zeroed by `new` and by `check_finite`.
    bad: CudaSlice<u64>,
    ws: GpuWorkspace,
}

/// Offset the kernels' non-finite record counts down from (`FLAG` in cuda/decode.cu):
/// they store `FLAG − index` with atomicMax, so 0 means "none" and the smallest index
/// wins.
const FLAG: u64 = 1 << 62;

impl std::fmt::Debug for GpuDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDecoder")
            .field("batch", &self.batch)
            .field("heads", &self.heads)
            .field("kv_heads", &self.kv_heads)
            .field("dk", &self.dk)
            .field("dv", &self.dv)
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .finish()
    }
}

impl<'g> GpuDecoder<'g> {
    /// An empty decoder on `gpu` for `batch` sequences of `heads` query heads and
    /// `kv_heads` key/value heads, key width `dk`, value width `dv`, and room for
    /// `capacity` tokens per sequence (all device memory is allocated here).
    ///
    /// Errors: an undecodable `cfg` (the same checks and messages as
    /// [`crate::Decoder::new`]), bad dimensions, `dk` or `dv` above
    /// [`MAX_HEAD_DIM`](super::MAX_HEAD_DIM) or `B·H` above 65535 ([`Error::Unsupported`]),
    /// `capacity` 0 or beyond the 32-bit token index ([`Error::Param`]), device memory
    /// ([`Error::OutOfMemory`]).
    ///
    /// ```no_run
    /// use blockres::gpu::{Gpu, GpuDecoder};
    /// use blockres::{Config, Structure};
    /// let gpu = Gpu::new(0).unwrap();
    /// let dense = Config { structure: Structure::Dense, ..Config::default() };
    /// assert!(GpuDecoder::new(&gpu, &dense, 2, 8, 2, 64, 64, 1 << 16).is_ok());
    /// // The default block config has mean coarse queries: not decodable.
    /// let e = GpuDecoder::new(&gpu, &Config::default(), 1, 1, 1, 64, 64, 1024).unwrap_err();
    /// assert!(e.to_string().contains("coarse_query"));
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &'g Gpu,
        cfg: &Config,
        batch: usize,
        heads: usize,
        kv_heads: usize,
        dk: usize,
        dv: usize,
        capacity: usize,
    ) -> Result<Self> {
        crate::decode::check_new(cfg, [batch, heads, kv_heads, dk, dv])?;
        if dk > MAX_HEAD_DIM || dv > MAX_HEAD_DIM {
            return Err(Error::Unsupported(format!(
                "the GPU decoder takes dk, dv ≤ {MAX_HEAD_DIM}, got dk = {dk}, dv = {dv}; use \
                 the CPU Decoder"
            )));
        }
        if batch * heads > 65535 {
            return Err(Error::Unsupported(format!(
                "B·H = {} exceeds the GPU grid limit 65535",
                batch * heads
            )));
        }
        // Dense runs as one block longer than any sequence, so `capacity + 1` must
        // still be a 32-bit token index.
        if capacity == 0 || capacity >= i32::MAX as usize {
            return Err(Error::Param {
                name: "capacity",
                message: format!(
                    "the GPU decoder's capacity is a token count in 1..{}, got {capacity}",
                    i32::MAX
                ),
            });
        }
        let b = match cfg.structure {
            Structure::Dense => capacity + 1,
            _ => cfg.block_size,
        };
        let maxb = capacity / b;
        let elems = |rows: usize, per: usize, d: usize| {
            rows.checked_mul(per)
                .and_then(|x| x.checked_mul(d))
                .ok_or_else(|| Error::Param {
                    name: "capacity",
                    message: format!(
                        "{capacity} tokens × {rows} heads × {d} overflow the address space"
                    ),
                })
        };
        let (bh, bhkv) = (batch * heads, batch * kv_heads);
        let sizes = [
            elems(bhkv, capacity, dk)?,
            elems(bh, capacity, dv)?,
            elems(bhkv, maxb, dk)?,
            elems(bh, maxb, dv)?,
            elems(bh, 1, dv + 2)?,
        ];
        // Zeroed: the dense benchmark fill relies on finite contents, and gsum = 0 is
        // an empty coarse part.
        let alloc = |len: usize| {
            gpu.stream
                .alloc_zeros::<f32>(len.max(1))
                .map_err(|_| Error::OutOfMemory {
                    what: "the GPU decoder's caches",
                    bytes: len.saturating_mul(4),
                })
        };
        let [kc, zc, ks, zs, co] = [
            alloc(sizes[0])?,
            alloc(sizes[1])?,
            alloc(sizes[2])?,
            alloc(sizes[3])?,
            alloc(sizes[4])?,
        ];
        let bad = gpu
            .stream
            .alloc_zeros::<u64>(4)
            .map_err(|e| dev_err("allocating device memory", e))?;
        Ok(Self {
            gpu,
            cfg: *cfg,
            b,
            batch,
            heads,
            kv_heads,
            dk,
            dv,
            capacity,
            maxb,
            len: 0,
            scale: cfg.effective_scale(dk),
            gamma: cfg.gamma,
            kc,
            zc,
            ks,
            zs,
            co,
            bad,
            ws: GpuWorkspace::new(),
        })
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No token seen yet (the next call of two tokens or more is a prefill).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the caches hold at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget every token, keeping the device memory for the next sequence. Nothing is
    /// cleared: every call writes a row or sum before anything reads it.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes of device memory held by the state (caches, sums, coarse terms).
    pub fn state_bytes(&self) -> usize {
        4 * (self.kc.len() + self.zc.len() + self.ks.len() + self.zs.len() + self.co.len())
    }

    /// Benchmarks only: make a `dense` decoder hold `len` tokens without computing them
    /// (the caches keep whatever finite values they hold: zeros, or an earlier
    /// sequence's). A dense prefill of 2^20 tokens is O(n²); a step's cost depends only
    /// on the length.
    #[doc(hidden)]
    pub fn fill_dense_for_benchmarks(&mut self, len: usize) -> Result<()> {
        if self.cfg.structure != Structure::Dense || len > self.capacity {
            return Err(Error::Unsupported(
                "a dense decoder and a length within its capacity".into(),
            ));
        }
        self.gpu
            .stream
            .memset_zeros(&mut self.co)
            .map_err(|e| dev_err("clearing the coarse terms", e))?;
        self.len = len;
        Ok(())
    }

    /// Checks of one call's buffers; nothing is enqueued before they pass, so a refused
    /// call leaves the state as it was.
    fn check(&self, lens: [usize; 4], s: usize) -> Result<()> {
        if s == 0 {
            return Err(Error::Shape {
                tensor: "Q",
                message: "a decoding call appends s ≥ 1 tokens, got s = 0".into(),
            });
        }
        let (bh, bhkv) = (self.batch * self.heads, self.batch * self.kv_heads);
        let want = [
            ("Q", bh, self.dk, self.heads),
            ("K", bhkv, self.dk, self.kv_heads),
            ("V", bhkv, self.dv, self.kv_heads),
            ("Y", bh, self.dv, self.heads),
        ];
        for ((name, rows, d, h), got) in want.into_iter().zip(lens) {
            if rows.checked_mul(s).and_then(|x| x.checked_mul(d)) != Some(got) {
                return Err(Error::Shape {
                    tensor: name,
                    message: format!(
                        "expected [B={}, {h}, s={s}, {d}] = {} elements, got {got}",
                        self.batch,
                        rows.saturating_mul(s).saturating_mul(d)
                    ),
                });
            }
        }
        if s > self.capacity - self.len {
            return Err(Error::Shape {
                tensor: "Q",
                message: format!(
                    "{s} more tokens exceed the decoder's capacity: it holds {} of {} \
                     (make the GpuDecoder with a larger capacity)",
                    self.len, self.capacity
                ),
            });
        }
        Ok(())
    }

    /// Append `s` tokens to every sequence and write their rows of `Y` into `y`.
    ///
    /// `q: [B, H, s, dk]`, `k: [B, Hkv, s, dk]`, `v: [B, Hkv, s, dv]`,
    /// `y: [B, H, s, dv]`, row-major device buffers with the decoder's dimensions and
    /// any `s ≥ 1` that fits in the capacity. Returns once the work is enqueued on the
    /// `Gpu`'s stream. Inputs are not refused for NaN/∞ here (that would need a wait):
    /// they propagate to `Y` and the state, and the kernels record them (and any
    /// non-finite result) for [`check_finite`](Self::check_finite), which the caller
    /// runs when it wants to know. [`GpuDecoder::extend_host`] does both.
    ///
    /// A call refused for its shapes or the capacity enqueues nothing and leaves the
    /// state as it was.
    pub fn extend<T: GpuElement>(
        &mut self,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
        y: &mut CudaSlice<T>,
        s: usize,
    ) -> Result<()> {
        self.check([q.len(), k.len(), v.len(), y.len()], s)?;
        let gpu = self.gpu;
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("making the CUDA context current", e))?;
        let dims = Dims {
            batch: self.batch,
            heads: self.heads,
            kv_heads: self.kv_heads,
            n: s,
            dk: self.dk,
            dv: self.dv,
        };
        // Cannot fail after `check` and `new`; converted before anything is enqueued.
        let i = |x: usize, name| to_i32(x, name);
        let (hi, hkvi, si, leni, capi) = (
            i(self.heads, "H")?,
            i(self.kv_heads, "Hkv")?,
            i(s, "s")?,
            i(self.len, "len")?,
            i(self.capacity, "capacity")?,
        );
        let (dki, dvi, bi, maxbi) = (
            i(self.dk, "dk")?,
            i(self.dv, "dv")?,
            i(self.b, "block_size")?,
            i(self.maxb, "blocks")?,
        );
        // A one-token prefill is a step: one launch instead of the full path's eight.
        let full = if self.len == 0 && s > 1 {
            match super::resolvent_attention_device(gpu, q, k, v, y, &dims, &self.cfg, &mut self.ws)
            {
                Ok(()) => true,
                // Beyond the full kernels' limits (too many blocks): the recurrence
                // takes any length. These errors come before any launch.
                Err(Error::Unsupported(_)) => false,
                Err(e) => return Err(e),
            }
        } else {
            false
        };
        let (scale, gamma) = (self.scale, self.gamma);
        let st = &gpu.stream;
        let kx = &gpu.k;
        let launch = |r: std::result::Result<_, cudarc::driver::DriverError>, what: &str| {
            r.map(|_| ()).map_err(|e| dev_err(what, e))
        };
        let (bh, bhkv) = (
            (self.batch * self.heads) as u32,
            (self.batch * self.kv_heads) as u32,
        );
        // The three decode kernels share DecodeParams; each reads the fields it needs.
        let base = DecodeParams {
            heads: hi,
            kv_heads: hkvi,
            s: si,
            len: leni,
            cap: capi,
            dk: dki,
            dv: dvi,
            b: bi,
            maxb: maxbi,
            scale,
            gamma,
            ..DecodeParams::default()
        };
        {
            let mut a = Args::new(st);
            let p = DecodeParams {
                k: a.r(k),
                kc: a.w(&mut self.kc),
                ks: a.w(&mut self.ks),
                bad: a.w(&mut self.bad),
                ..base
            };
            let mut lb = st.launch_builder(&kx.decode_keys[T::INDEX]);
            lb.arg(&p);
            launch(
                // SAFETY: `decode_keys` (cuda/decode.cu) takes one DecodeParams; `check`
                // sized K for s tokens and kept len + s within the capacity `new`
                // allocated kc and ks for; one CTA of THREADS per kv head, static shared
                // memory only.
                unsafe { lb.launch(cfg1((bhkv, 1), THREADS, 0)) },
                "launching decode_keys",
            )?;
        }
        let mut a = Args::new(st);
        let (f, p, what) = if full {
            let p = DecodeParams {
                q: a.r(q),
                v: a.r(v),
                y: a.r(&*y),
                ks: a.r(&self.ks),
                zc: a.w(&mut self.zc),
                zs: a.w(&mut self.zs),
                co: a.w(&mut self.co),
                bad: a.w(&mut self.bad),
                ..base
            };
            (&kx.decode_prefill[T::INDEX], p, "launching decode_prefill")
        } else {
            let p = DecodeParams {
                q: a.r(q),
                v: a.r(v),
                y: a.w(&mut *y),
                kc: a.r(&self.kc),
                zc: a.w(&mut self.zc),
                ks: a.r(&self.ks),
                zs: a.w(&mut self.zs),
                co: a.w(&mut self.co),
                bad: a.w(&mut self.bad),
                ..base
            };
            (&kx.decode_step[T::INDEX], p, "launching decode_step")
        };
        let mut lb = st.launch_builder(f);
        lb.arg(&p);
        launch(
            // SAFETY: `decode_prefill` and `decode_step` (cuda/decode.cu) take one
            // DecodeParams; `check` sized Q, V, Y for s tokens (prefill: s ≤ capacity)
            // and kept len + s within the capacity of the state `new` allocated; one CTA
            // of THREADS per query head (B·H ≤ 65535 and dv ≤ MAX_HEAD_DIM checked in
            // `new`), static shared memory only.
            unsafe { lb.launch(cfg1((bh, 1), THREADS, 0)) },
            what,
        )?;
        drop(a);
        self.len += s;
        Ok(())
    }

    /// Wait for the calls enqueued so far and report what their kernels saw since the
    /// last check (or since [`new`](Self::new)), then clear the record:
    ///
    /// - [`Error::NonFinite`] for a NaN or infinity read from the new tokens' Q, K or V,
    ///   the first of those three tensors holding one. `index` is a flat index into that
    ///   tensor as passed to the call that read it: the smallest among the offending
    ///   elements the kernels saw, which is the first one of a single call, but with
    ///   several calls since the last check it does not say which call (a prefill
    ///   through the full kernels reads Q, K, V whole; a step reads all of them too).
    /// - [`Error::Overflow`] when the inputs were finite but a result was not: Y, the
    ///   cached z = v + γ·w, a block's key or z sum or the coarse terms overflowed f32
    ///   (or, for Y, the element type), as large V with γ near 1 can.
    ///
    /// Either way the state now holds non-finite values: [`reset`](Self::reset) before
    /// decoding on (the record itself is cleared here). `Ok` when everything was finite.
    /// Errors of the device itself are [`Error::Device`].
    ///
    /// ```no_run
    /// use blockres::gpu::{Gpu, GpuDecoder};
    /// use blockres::{Config, Error, Structure};
    /// let gpu = Gpu::new(0).unwrap();
    /// let dense = Config { structure: Structure::Dense, ..Config::default() };
    /// let mut dec = GpuDecoder::new(&gpu, &dense, 1, 1, 1, 4, 4, 8).unwrap();
    /// let (q, mut k, v) = (vec![0.5f32; 4], vec![0.5f32; 4], vec![0.5f32; 4]);
    /// k[2] = f32::NAN;
    /// let (dq, dk, dv) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap(), gpu.upload(&v).unwrap());
    /// let mut dy = gpu.zeros::<f32>(4).unwrap();
    /// dec.extend(&dq, &dk, &dv, &mut dy, 1).unwrap(); // enqueued, not checked
    /// assert_eq!(dec.check_finite(), Err(Error::NonFinite { tensor: "K", index: 2 }));
    /// assert!(dec.check_finite().is_ok()); // the record was cleared
    /// ```
    pub fn check_finite(&mut self) -> Result<()> {
        let gpu = self.gpu;
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("making the CUDA context current", e))?;
        // The copy waits for the stream, so every call enqueued so far has run.
        let rec = gpu.download(&self.bad)?;
        if rec.iter().any(|&f| f != 0) {
            gpu.stream
                .memset_zeros(&mut self.bad)
                .map_err(|e| dev_err("clearing the non-finite record", e))?;
        }
        for (name, &f) in ["Q", "K", "V"].iter().zip(&rec) {
            if f != 0 {
                return Err(Error::NonFinite {
                    tensor: name,
                    index: (FLAG - f) as usize,
                });
            }
        }
        if rec[3] != 0 {
            return Err(Error::Overflow(
                "the GPU decoder produced a non-finite value (Y, a cached z, a block sum or \
                 a coarse term) from finite inputs; the values are too large for f32 (or \
                 the element type), as with large V and γ near 1"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Host convenience: check the inputs (finite, shapes, capacity), copy them to the
    /// device, [`extend`](Self::extend), copy `Y: [B, H, s, dv]` back (waits) and
    /// [`check_finite`](Self::check_finite). A refused call (shapes, capacity, a NaN or
    /// infinity in the inputs) leaves the state as it was; a non-finite result
    /// ([`Error::Overflow`]) is found after the state took the tokens (it then holds
    /// non-finite values: [`reset`](Self::reset)). A record left by earlier unchecked
    /// [`extend`](Self::extend) calls on device buffers is reported here too.
    ///
    /// ```no_run
    /// use blockres::gpu::{Gpu, GpuDecoder};
    /// use blockres::{Config, Error, Structure};
    /// let gpu = Gpu::new(0).unwrap();
    /// let dense = Config { structure: Structure::Dense, ..Config::default() };
    /// let mut dec = GpuDecoder::new(&gpu, &dense, 1, 2, 1, 8, 8, 16).unwrap();
    /// let (q, kv) = (vec![0.1f32; 2 * 10 * 8], vec![0.3f32; 10 * 8]);
    /// let y = dec.extend_host(&q, &kv, &kv, 10).unwrap();
    /// assert!(y.iter().all(|v| (v - 0.3).abs() < 1e-5));
    /// // 10 more tokens do not fit in 16: refused, the state unchanged.
    /// let (q2, kv2) = (vec![0.1f32; 2 * 10 * 8], vec![0.3f32; 10 * 8]);
    /// assert!(matches!(dec.extend_host(&q2, &kv2, &kv2, 10), Err(Error::Shape { .. })));
    /// assert_eq!(dec.len(), 10);
    /// ```
    pub fn extend_host<T: GpuElement>(
        &mut self,
        q: &[T],
        k: &[T],
        v: &[T],
        s: usize,
    ) -> Result<Vec<T>> {
        let ylen = (self.batch * self.heads)
            .saturating_mul(s)
            .saturating_mul(self.dv);
        self.check([q.len(), k.len(), v.len(), ylen], s)?;
        for (name, x) in [("Q", q), ("K", k), ("V", v)] {
            if let Some(index) = x.iter().position(|e| !e.to_f32().is_finite()) {
                return Err(Error::NonFinite {
                    tensor: name,
                    index,
                });
            }
        }
        let gpu = self.gpu;
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("making the CUDA context current", e))?;
        let (dq, dk, dv) = (gpu.upload(q)?, gpu.upload(k)?, gpu.upload(v)?);
        let mut dy = gpu.zeros::<T>(ylen)?;
        self.extend(&dq, &dk, &dv, &mut dy, s)?;
        let y = gpu.download(&dy)?;
        self.check_finite()?;
        Ok(y)
    }
}
