//! CUDA path (feature `cuda`): the block structure (SPEC §2) and the exact dense
//! operator, causal and bidirectional, on an NVIDIA GPU through the driver API
//! ([`cudarc`]).
//!
//! Two levels:
//! - [`Gpu`] + [`GpuWorkspace`] + [`resolvent_attention_device`]: tensors already on
//!   the device, work enqueued on the [`Gpu`]'s stream, no host synchronization;
//! - [`resolvent_attention_host`]: host slices in, host `Vec` out (copies both ways
//!   through a process-wide [`Gpu`] on device 0).
//!
//! The kernels (`cuda/*.cu`) are embedded as PTX built with NVRTC 13.0 at build time
//! (`build.rs`), or compiled from the embedded sources with NVRTC at run time when
//! the build had no compiler (`BLOCKRES_NVRTC=/path/to/libnvrtc.so.13` picks the
//! library; otherwise `libnvrtc.so.13` from the loader path, and never an NVRTC newer
//! than the driver). Every missing piece (no driver, no device,
//! no PTX and no NVRTC, an unsupported shape) is an [`Error`], never a panic.
//!
//! Limits of this path: `dk ≤ 128`, `dv ≤ 128`, `B·H ≤ 65535`, compute capability ≥ 9.0
//! for the embedded PTX (8.0 with run-time NVRTC); bidirectional attention takes blocks of
//! at most 128 rows (64 when d > 64), at most 2048 blocks and γ ≤
//! [`MAX_BIDIRECTIONAL_GAMMA`], and is correct but not tuned (the local and reduced systems by Gauss–Jordan elimination, f32); anything else
//! is [`Error::Unsupported`]. Both coarse queries (`mean`, `first`) are computed.
//! Arithmetic is f32; f16/bf16 logits use the tensor cores
//! with f32 accumulation.
//!
//! ```no_run
//! use blockres::{Config, TensorRef, gpu};
//! let (h, n, d) = (4, 1000, 64);
//! let x: Vec<half::bf16> = (0..h * n * d).map(|i| half::bf16::from_f32(((i % 17) as f32) / 17.0)).collect();
//! let t = TensorRef::new(&x, [1, h, n, d]).unwrap();
//! let y = gpu::resolvent_attention_host(t, t, t, &Config::default()).unwrap();
//! assert_eq!(y.len(), h * n * d);
//! ```

mod decode;
mod external;
mod module;
mod nvrtc;
mod params;
mod plan;

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};

use crate::attention::Dims;
use crate::config::{CoarseQuery, Config};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::TensorRef;

pub use decode::GpuDecoder;
pub use external::resolvent_attention_on_stream;
use module::Kernels;
pub use module::ptx_tool;
use params::{Args, CoarseParams, CombineParams, LocalParams, MeansParams, ReducedParams};
use plan::{Local, Plan, STATIC_SMEM};
pub use plan::{MAX_BIDIRECTIONAL_GAMMA, MAX_HEAD_DIM, auto_block_size};

/// An element type the GPU kernels take: `f32`, [`half::f16`], [`half::bf16`].
///
/// ```
/// # #[cfg(feature = "cuda")] {
/// use blockres::gpu::GpuElement;
/// assert_eq!(<half::bf16 as GpuElement>::SUFFIX, "bf16");
/// # }
/// ```
pub trait GpuElement: Element + DeviceRepr + ValidAsZeroBits {
    /// Suffix of the kernel names for this type (`f32`, `f16`, `bf16`).
    const SUFFIX: &'static str;
    #[doc(hidden)]
    const INDEX: usize;
}
impl GpuElement for f32 {
    const SUFFIX: &'static str = "f32";
    const INDEX: usize = 0;
}
impl GpuElement for half::f16 {
    const SUFFIX: &'static str = "f16";
    const INDEX: usize = 1;
}
impl GpuElement for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    const INDEX: usize = 2;
}

pub(crate) fn dev_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("{what}: {e:?}"))
}

/// A CUDA device with its stream and loaded kernels.
///
/// ```no_run
/// let gpu = blockres::gpu::Gpu::new(0).unwrap();
/// println!("{}", gpu.name());
/// ```
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    name: String,
    /// Dynamic shared memory a kernel may ask for on this device: its opt-in limit per
    /// block (H100/H200 227 KiB, A100 163 KiB, sm_86/89 99 KiB) less [`STATIC_SMEM`].
    smem: usize,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("name", &self.name).finish()
    }
}

impl Gpu {
    /// Open device `ordinal`, make a stream and load the kernels. Fails with
    /// [`Error::Unsupported`] when there is no CUDA driver or no such device, and with
    /// [`Error::Device`] when the kernels cannot be loaded.
    pub fn new(ordinal: usize) -> Result<Self> {
        // cudarc panics when a library it needs is missing: check first.
        // SAFETY: only tries to load the system's CUDA driver library (running its
        // initialisers, as linking it would); nothing is called through it here.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Unsupported(
                "no CUDA driver (libcuda.so) on this machine; use the CPU path".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| {
            Error::Unsupported(format!("the CUDA driver reports no usable device ({e:?})"))
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Unsupported(format!(
                "CUDA device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| dev_err("creating the CUDA context", e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| dev_err("creating a stream", e))?;
        let k = Kernels::load(&ctx)?;
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let optin = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(|e| dev_err("reading the shared-memory limit", e))?;
        let smem = usize::try_from(optin)
            .unwrap_or(0)
            .saturating_sub(STATIC_SMEM);
        Ok(Self {
            ctx,
            stream,
            k,
            name,
            smem,
        })
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The stream all work of this `Gpu` is enqueued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// The driver context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// Copy a host slice to a new device buffer (on this stream).
    pub fn upload<T: DeviceRepr>(&self, x: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(x)
            .map_err(|e| dev_err("copying to the device", e))
    }
    /// Copy a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, x: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(x)
            .map_err(|e| dev_err("copying from the device", e))
    }
    /// A zeroed device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(|e| dev_err("allocating device memory", e))
    }
    /// Wait until every enqueued operation of the stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("synchronizing the stream", e))
    }
}

/// Device scratch memory of [`resolvent_attention_device`], grown on demand and kept,
/// plus the record of non-finite inputs of the last call.
///
/// ```no_run
/// use blockres::gpu::{Gpu, GpuWorkspace};
/// let gpu = Gpu::new(0).unwrap();
/// let mut ws = GpuWorkspace::new();
/// // ... resolvent_attention_device(&gpu, &q, &k, &v, &mut y, &dims, &cfg, &mut ws)?;
/// ws.check_finite(&gpu).unwrap();
/// ```
#[derive(Default)]
pub struct GpuWorkspace {
    bufs: Vec<CudaSlice<f32>>,
    bad: Option<CudaSlice<u64>>,
    /// Where buffers are allocated (and later freed) when the calls run on a stream
    /// this crate does not own (see `external`): the host may destroy its stream while
    /// the buffers live on. `None`: on the calling [`Gpu`]'s stream.
    alloc: Option<Arc<CudaStream>>,
}

impl std::fmt::Debug for GpuWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuWorkspace")
            .field("buffers", &self.bufs.len())
            .finish()
    }
}

/// Offset the non-finite record counts down from: the kernels store `FLAG − index`
/// with atomicMax, so 0 means "none" and the smallest index wins.
const FLAG: u64 = 1 << 62;

impl GpuWorkspace {
    /// An empty workspace; device memory is allocated by the first call.
    pub fn new() -> Self {
        Self::default()
    }

    fn ensure(&mut self, gpu: &Gpu, sizes: &[usize]) -> Result<()> {
        let grows = self.bufs.len() != sizes.len()
            || self.bad.is_none()
            || sizes
                .iter()
                .zip(&self.bufs)
                .any(|(&len, b)| b.len() < len.max(1));
        if !grows {
            return Ok(());
        }
        let alloc = self.alloc.clone().unwrap_or_else(|| gpu.stream.clone());
        if self.alloc.is_some() {
            // The old buffers may still be read by work queued on the caller's stream,
            // and the allocation stream is not ordered with it: wait for both sides.
            gpu.synchronize()?;
        }
        let zeros = |len: usize| {
            alloc
                .alloc_zeros::<f32>(len)
                .map_err(|e| dev_err("allocating device memory", e))
        };
        if self.bufs.len() != sizes.len() {
            self.bufs.clear();
        }
        for (i, &len) in sizes.iter().enumerate() {
            let len = len.max(1);
            if self.bufs.get(i).is_none_or(|b| b.len() < len) {
                let b = zeros(len)?;
                if i < self.bufs.len() {
                    self.bufs[i] = b;
                } else {
                    self.bufs.push(b);
                }
            }
        }
        if self.bad.is_none() {
            self.bad = Some(
                alloc
                    .alloc_zeros::<u64>(3)
                    .map_err(|e| dev_err("allocating device memory", e))?,
            );
        }
        if self.alloc.is_some() {
            alloc
                .synchronize()
                .map_err(|e| dev_err("synchronizing the allocation stream", e))?;
        }
        Ok(())
    }

    /// Wait for the last call and report the first NaN or infinity it found in Q, K or
    /// V as [`Error::NonFinite`] (flat index into that tensor); `Ok` when all were
    /// finite. The output of a call with non-finite input is not meaningful.
    pub fn check_finite(&self, gpu: &Gpu) -> Result<()> {
        let Some(bad) = &self.bad else { return Ok(()) };
        let v = gpu.download(bad)?;
        for (name, &f) in ["Q", "K", "V"].iter().zip(&v) {
            if f != 0 {
                return Err(Error::NonFinite {
                    tensor: name,
                    index: (FLAG - f) as usize,
                });
            }
        }
        Ok(())
    }
}

fn cfg1(grid: (u32, u32), threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

fn to_i32(x: usize, name: &'static str) -> Result<i32> {
    i32::try_from(x).map_err(|_| {
        Error::Unsupported(format!(
            "{name} = {x} exceeds the GPU path's 32-bit index range"
        ))
    })
}

/// The tensor-core local kernel takes f16/bf16 blocks of at most 128 rows; unset or any
/// value but `general` lets it; `BLOCKRES_GPU_LOCAL=general` forces the general kernel
/// (cuda/local.cu), for comparisons.
fn local_tc_allowed() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| std::env::var("BLOCKRES_GPU_LOCAL").map_or(true, |v| v != "general"))
}

/// Enqueue resolvent attention on `gpu`'s stream: `y ← (1−γ)·A·(I−γA)⁻¹·V` for device
/// tensors `q: [B,H,n,dk]`, `k: [B,Hkv,n,dk]`, `v: [B,Hkv,n,dv]`, `y: [B,H,n,dv]`
/// (row-major, shapes in `dims`). Structures: [`Structure::Block`] and
/// [`Structure::Dense`] (evaluated as one block of `n`, which SPEC §2 makes exactly the
/// dense operator), causal or bidirectional (see the module's limits). Returns once the work is enqueued; call
/// [`GpuWorkspace::check_finite`] (which waits) to learn whether the inputs were all
/// finite. `block_size = 0` picks `b` by the GPU's rule ([`auto_block_size`]).
///
/// ```no_run
/// use blockres::{Config, Dims, gpu::{self, Gpu, GpuWorkspace}};
/// let g = Gpu::new(0).unwrap();
/// let dims = Dims::from_shapes([1, 2, 500, 32], [1, 1, 500, 32], [1, 1, 500, 32]).unwrap();
/// let q = g.upload(&vec![0.1f32; 2 * 500 * 32]).unwrap();
/// let kv = g.upload(&vec![0.2f32; 500 * 32]).unwrap();
/// let mut y = g.zeros::<f32>(2 * 500 * 32).unwrap();
/// let mut ws = GpuWorkspace::new();
/// gpu::resolvent_attention_device(&g, &q, &kv, &kv, &mut y, &dims, &Config::default(), &mut ws).unwrap();
/// ws.check_finite(&g).unwrap();
/// let out = g.download(&y).unwrap();
/// assert!((out[0] - 0.2).abs() < 1e-5);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn resolvent_attention_device<T: GpuElement>(
    gpu: &Gpu,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
    dims: &Dims,
    cfg: &Config,
    ws: &mut GpuWorkspace,
) -> Result<()> {
    cfg.validate()?;
    // `Dims` has public fields: a hand-built one (n = 0, H % Hkv ≠ 0) would index
    // out of range in the kernels.
    dims.validate()?;
    let Dims {
        batch,
        heads,
        kv_heads,
        n,
        dk,
        dv,
    } = *dims;
    let bh = batch * heads;
    let bhkv = batch * kv_heads;
    for (name, got, want) in [
        ("Q", q.len(), bh * n * dk),
        ("K", k.len(), bhkv * n * dk),
        ("V", v.len(), bhkv * n * dv),
        ("Y", y.len(), bh * n * dv),
    ] {
        if got != want {
            return Err(Error::Shape {
                tensor: name,
                message: format!("device buffer holds {got} elements, the shapes need {want}"),
            });
        }
    }
    let plan = Plan::new(dims, cfg, T::INDEX, gpu.smem, local_tc_allowed())?;
    let (b, m) = (plan.b, plan.m);
    ws.ensure(gpu, &plan.scratch)?;
    let [qbar, kbar, vbar, g, sigma, gsum, h, w, pbar, cvec, s, minv] = &mut ws.bufs[..] else {
        unreachable!("ensure made 12 buffers")
    };
    let bad = ws.bad.as_mut().expect("ensure made the flag buffer");
    let st = &gpu.stream;
    st.memset_zeros(bad)
        .map_err(|e| dev_err("clearing the non-finite record", e))?;
    let (ni, dki, dvi, bi, mi) = (
        to_i32(n, "n")?,
        to_i32(dk, "dk")?,
        to_i32(dv, "dv")?,
        to_i32(b, "block_size")?,
        to_i32(m, "blocks")?,
    );
    let (hi, hkvi) = (to_i32(heads, "H")?, to_i32(kv_heads, "Hkv")?);
    let scale = cfg.effective_scale(dk);
    let gamma = cfg.gamma;
    let causal = i32::from(cfg.causal);
    let kx = &gpu.k;
    let launch = |r: std::result::Result<_, cudarc::driver::DriverError>, what: &str| {
        r.map(|_| ()).map_err(|e| dev_err(what, e))
    };

    // 1. Block means (and the non-finite scan) of Q, K, V, in one launch.
    {
        let mut a = Args::new(st);
        let p = MeansParams {
            x: [a.r(q), a.r(k), a.r(v)],
            out: [a.w(&mut *qbar), a.w(&mut *kbar), a.w(&mut *vbar)],
            bad: a.w(bad),
            heads: [
                to_i32(bh, "B·H")?,
                to_i32(bhkv, "B·Hkv")?,
                to_i32(bhkv, "B·Hkv")?,
            ],
            d: [dki, dki, dvi],
            n: ni,
            b: bi,
            m: mi,
            first: i32::from(cfg.coarse_query == CoarseQuery::First),
        };
        let mut lb = st.launch_builder(&kx.means[T::INDEX]);
        lb.arg(&p);
        launch(
            // SAFETY: `block_means_*` (cuda/means.cu) takes one MeansParams; Q, K, V
            // were checked against the shapes, the outputs sized by the plan for their
            // heads' m blocks of d, `bad` holds three u64; grid (m, B·H ≥ B·Hkv, 3 tensors)
            // within the limits the plan checked; 256 threads as its launch bounds, no
            // dynamic shared memory.
            unsafe {
                lb.launch(LaunchConfig {
                    grid_dim: (m as u32, bh as u32, 3),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                })
            },
            "launching block_means",
        )?;
    }
    // 1b. Coarse logits, G̃, σ, gsum, h: up to 8 block rows per CTA, their rows of G̃
    // in shared memory.
    {
        // ig rows of G̃ per CTA in shared memory next to the k̄/v̄ staging (plan.rs).
        let (ig, smem) = (plan.coarse_rows, plan.coarse_smem);
        kx.allow_smem(&kx.coarse, smem)?;
        let mut a = Args::new(st);
        let p = CoarseParams {
            qbar: a.r(&*qbar),
            kbar: a.r(&*kbar),
            vbar: a.r(&*vbar),
            g: a.w(&mut *g),
            sigma: a.w(&mut *sigma),
            gsum: a.w(&mut *gsum),
            h: a.w(&mut *h),
            heads: hi,
            kv_heads: hkvi,
            n: ni,
            dk: dki,
            dv: dvi,
            b: bi,
            m: mi,
            scale,
            causal,
            ig: ig as i32,
        };
        let mut lb = st.launch_builder(&kx.coarse);
        lb.arg(&p);
        launch(
            // SAFETY: `coarse` (cuda/coarse.cu) takes one CoarseParams; the scratch
            // buffers hold at least the plan's sizes for these dims; `smem` is the plan's
            // coarse_smem for `ig` rows, within the device limit the plan checked and
            // allowed above; 256 threads as its launch bounds.
            unsafe { lb.launch(cfg1((m.div_ceil(ig) as u32, bh as u32), 256, smem as u32)) },
            "launching coarse",
        )?;
    }
    // 2.–5. Per block: local attention, local solves, block means of P and w.
    {
        let f = match plan.local {
            Local::Bidir => &kx.local_bidir[T::INDEX],
            Local::Tc { variant, .. } => &kx.local_tc[T::INDEX - 1][variant],
            Local::General => &kx.local[T::INDEX],
        };
        let (threads, smem) = (plan.local_threads, plan.local_smem);
        kx.allow_smem(f, smem)?;
        let mut a = Args::new(st);
        let p = LocalParams {
            q: a.r(q),
            k: a.r(k),
            v: a.r(v),
            y: a.w(&mut *y),
            w: a.w(&mut *w),
            pbar: a.w(&mut *pbar),
            cvec: a.w(&mut *cvec),
            sigma: a.r(&*sigma),
            gsum: a.r(&*gsum),
            h: a.r(&*h),
            heads: hi,
            kv_heads: hkvi,
            n: ni,
            dk: dki,
            dv: dvi,
            b: bi,
            m: mi,
            scale,
            gamma,
        };
        let mut lb = st.launch_builder(f);
        lb.arg(&p);
        launch(
            // SAFETY: `local_causal_*` (cuda/local.cu), `local_tc_*` (cuda/local_tc.cu)
            // and `local_bidir_*` (cuda/bidir.cu) take one LocalParams; Q, K, V, Y were
            // checked against the shapes and the scratch holds the plan's sizes; the
            // plan picked `threads` within the chosen kernel's launch bounds and `smem`
            // for its layout, within the device limit it checked and allowed above.
            unsafe { lb.launch(cfg1((m as u32, bh as u32), threads, smem as u32)) },
            "launching the local kernel",
        )?;
    }
    // 6. Reduced system. Causal: the panels' inverses (all at once), then the blocked
    // solve. Bidirectional: Gauss–Jordan on [I − γ·diag(c)·G̃ | p̄], then s = G̃·u. All
    // five kernels take one ReducedParams.
    let mut a = Args::new(st);
    let rp = ReducedParams {
        g: a.r(&*g),
        pbar: a.r(&*pbar),
        cvec: a.r(&*cvec),
        minv: a.w(&mut *minv),
        s: a.w(&mut *s),
        m: mi,
        dv: dvi,
        gamma,
    };
    let reduced = |f: &CudaFunction, grid: (usize, usize), threads: usize, smem: usize, what| {
        let mut lb = st.launch_builder(f);
        lb.arg(&rp);
        let c = cfg1((grid.0 as u32, grid.1 as u32), threads as u32, smem as u32);
        launch(
            // SAFETY: the five reduced kernels (cuda/reduced.cu, cuda/bidir.cu) take one
            // ReducedParams; `minv` holds the plan's ⌈m/32⌉ 32×32 panels per head
            // (causal) or its m × (m + dv) system (bidirectional), `s` bh·m·dv. The
            // callers pass each kernel's launch bounds (reduced_bidir_apply: dv ≤
            // MAX_HEAD_DIM = 128, checked by the plan) and, for reduced_causal, the
            // plan's m·REDUCED_CW floats, within the device limit it checked and allowed;
            // the others use static shared memory only.
            unsafe { lb.launch(c) },
            what,
        )
    };
    if !cfg.causal {
        let [build, solve, apply] = &kx.reduced_bidir;
        reduced(build, (m, bh), 256, 0, "launching reduced_bidir_build")?;
        reduced(solve, (bh, 1), 1024, 0, "launching reduced_bidir_solve")?;
        reduced(apply, (m, bh), dv, 0, "launching reduced_bidir_apply")?;
    } else {
        let (panels, smem) = (m.div_ceil(32), plan.reduced_smem);
        kx.allow_smem(&kx.reduced, smem)?;
        reduced(
            &kx.reduced_inverses,
            (panels, bh),
            32,
            0,
            "launching reduced_inverses",
        )?;
        let cols = dv.div_ceil(plan::REDUCED_CW);
        reduced(
            &kx.reduced,
            (cols, bh),
            256,
            smem,
            "launching reduced_causal",
        )?;
    }
    drop(a);
    // 7. Combine in place.
    {
        let mut a = Args::new(st);
        let p = CombineParams {
            y: a.w(&mut *y),
            w: a.r(&*w),
            s: a.r(&*s),
            n: ni,
            dv: dvi,
            b: bi,
            m: mi,
            gamma,
        };
        let mut lb = st.launch_builder(&kx.combine[T::INDEX]);
        lb.arg(&p);
        let blocks = (n * dv).div_ceil(256).min(1024) as u32;
        launch(
            // SAFETY: `combine_*` (cuda/combine.cu) takes one CombineParams; Y was
            // checked against the shapes, `w` and `s` hold the plan's sizes; the kernel
            // strides over the n·dv values of a head, no shared memory.
            unsafe { lb.launch(cfg1((blocks, bh as u32), 256, 0)) },
            "launching combine",
        )?;
    }
    Ok(())
}

struct Shared {
    gpu: Gpu,
    ws: Mutex<GpuWorkspace>,
}

fn shared() -> Result<&'static Shared> {
    static S: OnceLock<std::result::Result<Shared, Error>> = OnceLock::new();
    S.get_or_init(|| {
        // cudarc panics when the driver library lacks a symbol it expects (an old or
        // stub libcuda): that is "no usable GPU", so the op's `auto` keeps the CPU.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Gpu::new(0)))
            .unwrap_or_else(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown reason");
                Err(Error::Device(format!(
                    "the CUDA driver could not be loaded: {why}"
                )))
            });
        opened.map(|gpu| Shared {
            gpu,
            ws: Mutex::new(GpuWorkspace::new()),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether the GPU path can run here: `Ok` when device 0 opened and the kernels
/// loaded, else the reason (the same error every GPU call would return).
///
/// ```no_run
/// match blockres::gpu::available() {
///     Ok(()) => println!("GPU path available"),
///     Err(e) => println!("CPU only: {e}"),
/// }
/// ```
pub fn available() -> Result<()> {
    shared().map(|_| ())
}

/// Host convenience: copy `q`, `k`, `v` to device 0, evaluate, copy `Y` back.
/// Same contract and errors as [`crate::resolvent_attention`] (including
/// [`Error::NonFinite`]), plus the GPU path's limits (see the module docs).
///
/// ```no_run
/// use blockres::{Config, TensorRef, gpu};
/// let x = vec![0.5f32; 3 * 100 * 16];
/// let t = TensorRef::new(&x, [1, 3, 100, 16]).unwrap();
/// let y = gpu::resolvent_attention_host(t, t, t, &Config::default()).unwrap();
/// assert!(y.iter().all(|&v| (v - 0.5).abs() < 1e-5));
/// ```
pub fn resolvent_attention_host<T: GpuElement>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    cfg: &Config,
) -> Result<Vec<T>> {
    let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
    let shape = dims.output_shape();
    let mut y = vec![T::default(); shape.iter().product()];
    resolvent_attention_host_into(q, k, v, crate::tensor::TensorMut::new(&mut y, shape)?, cfg)?;
    Ok(y)
}

/// [`resolvent_attention_host`] writing into a caller-provided `y: [B, H, n, dv]`:
/// the result is copied from the device straight into `y`, with no intermediate host
/// buffer (the ONNX Runtime op passes its output tensor). `y` is only written when the
/// call succeeds. Calls from several threads are serialized (one shared device
/// context and workspace).
///
/// ```no_run
/// use blockres::{Config, TensorMut, TensorRef, gpu};
/// let x = vec![half::f16::from_f32(0.5); 2 * 300 * 32];
/// let t = TensorRef::new(&x, [1, 2, 300, 32]).unwrap();
/// let mut y = vec![half::f16::ZERO; x.len()];
/// let out = TensorMut::new(&mut y, [1, 2, 300, 32]).unwrap();
/// gpu::resolvent_attention_host_into(t, t, t, out, &Config::default()).unwrap();
/// assert!(y.iter().all(|v| (v.to_f32() - 0.5).abs() < 1e-3));
/// ```
pub fn resolvent_attention_host_into<T: GpuElement>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    mut y: crate::tensor::TensorMut<'_, T>,
    cfg: &Config,
) -> Result<()> {
    cfg.validate()?;
    let dims = Dims::from_shapes(q.shape(), k.shape(), v.shape())?;
    dims.check_output(y.shape())?;
    let sh = shared()?;
    let gpu = &sh.gpu;
    let mut ws = sh
        .ws
        .lock()
        .map_err(|_| Error::Device("GPU workspace lock poisoned".into()))?;
    // The caller's thread may never have used the context (a thread of the host's
    // pool); not every driver call below makes it current by itself.
    gpu.ctx
        .bind_to_thread()
        .map_err(|e| dev_err("making the CUDA context current", e))?;
    let dq = gpu.upload(q.data())?;
    let dk = gpu.upload(k.data())?;
    let dv = gpu.upload(v.data())?;
    let mut dy = gpu.zeros::<T>(y.data_mut().len())?;
    resolvent_attention_device(gpu, &dq, &dk, &dv, &mut dy, &dims, cfg, &mut ws)?;
    ws.check_finite(gpu)?;
    gpu.stream
        .memcpy_dtoh(&dy, y.data_mut())
        .map_err(|e| dev_err("copying from the device", e))?;
    // The copy is asynchronous and cudarc does not wait for it on a plain slice: wait
    // before the caller reads `y`.
    gpu.synchronize()
}
