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
//! at most 128 rows, at most [`MAX_BIDIRECTIONAL_BLOCKS`] blocks and γ ≤
//! [`MAX_BIDIRECTIONAL_GAMMA`] (its local and reduced systems are solved by Gauss–Jordan
//! elimination without pivoting: f32 blocks in registers, f16/bf16 blocks by 16-row panels
//! on the tensor cores with hi + lo operands, the m×m system by panels in f32); anything
//! else is [`Error::Unsupported`]. Both coarse queries (`mean`, `first`) are computed.
//! Arithmetic is f32; f16/bf16 products use the tensor cores with f32 accumulation.
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
mod host;
mod launch;
mod module;
mod nvrtc;
mod params;
mod plan;

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits,
};

use crate::element::Element;
use crate::error::{Error, Result};

pub use decode::GpuDecoder;
pub use external::resolvent_attention_on_stream;
pub use host::{available, resolvent_attention_host, resolvent_attention_host_into};
pub use launch::resolvent_attention_device;
use launch::{cfg1, to_i32};
use module::Kernels;
pub use module::ptx_tool;
use params::Ptr;
use plan::STATIC_SMEM;
pub use plan::{
    MAX_BIDIRECTIONAL_BLOCKS, MAX_BIDIRECTIONAL_GAMMA, MAX_HEAD_DIM, auto_block_size,
    auto_block_size_bidirectional,
};

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
    /// Enqueue a call's kernels after the first with programmatic dependent launch
    /// (compute capability 9.0+ and `BLOCKRES_GPU_PDL=1`; see launch.rs).
    pdl: bool,
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
        let (cc_major, _) = ctx
            .compute_capability()
            .map_err(|e| dev_err("reading the compute capability", e))?;
        // Off unless asked for: on the H200 it measured 0.5–4% slower than plain launches
        // in the same run (results/v26_perf_summary.txt), the early CTAs of the next
        // kernel competing with the latency-bound coarse and reduced stages.
        let pdl = cc_major >= 9 && std::env::var("BLOCKRES_GPU_PDL").is_ok_and(|v| v == "1");
        Ok(Self {
            ctx,
            stream,
            k,
            name,
            smem,
            pdl,
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
/// plus the record of non-finite inputs of the last call. Large causal calls also keep
/// here the streams and events of their head groups (see the launcher), so a workspace
/// serves one call at a time, as its `&mut` in the call says. Its buffers live on the
/// stream of the [`Gpu`] that last used it: a call with a `Gpu` on another stream first
/// waits (on the host) for the previous one's work and allocates them anew; keep one
/// workspace per stream.
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
    /// The device addresses of `bufs` and `bad`, taken when they were allocated (the
    /// kernels get these; launch.rs says why not through cudarc's per-use events).
    ptrs: Vec<Ptr>,
    bad_ptr: Ptr,
    /// Where buffers are allocated (and later freed) when the calls run on a stream
    /// this crate does not own (see `external`): the host may destroy its stream while
    /// the buffers live on. `None`: on the calling [`Gpu`]'s stream.
    alloc: Option<Arc<CudaStream>>,
    /// The head groups of a split call (`plan::head_groups`), each with its own stream,
    /// scratch and join event; `fork` orders them after the call's stream.
    parts: Vec<Part>,
    fork: Option<CudaEvent>,
    /// How many of `parts` the last call used (0: it ran on this workspace's own buffers).
    parts_used: usize,
    /// The last call's epoch (0: none since `bad` was cleared): its non-finite records
    /// and flags carry it, so `bad` is cleared only when allocated and when epochs wrap.
    epoch: u64,
    /// Tickets the fused local kernels have taken from `bad[3]` since it was cleared.
    tickets: u64,
    /// Set once a call on this workspace was captured into a CUDA graph: a graph replays
    /// the epoch and ticket base it was captured with, so from then on every call clears
    /// the record first (in a graph, a memset node before its kernels), as before epochs.
    clear_each_call: bool,
}

/// One head group's stream and scratch; `offsets`: where its heads start in Q, K, V
/// (elements), for the non-finite record's indices.
struct Part {
    ws: GpuWorkspace,
    stream: Arc<CudaStream>,
    join: CudaEvent,
    offsets: [usize; 3],
}

impl std::fmt::Debug for GpuWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuWorkspace")
            .field("buffers", &self.bufs.len())
            .finish()
    }
}

/// The non-finite record (`rec_value` in cuda/common.cuh): the call's epoch above
/// `REC_MASK − index`, taken with atomicMax, so the call's smallest index wins and a
/// record of an earlier call is smaller than any of the call's own.
const REC_SHIFT: u32 = 40;
const REC_MASK: u64 = (1 << REC_SHIFT) - 1;
/// Epochs before the record buffer is cleared and they start again at 1.
const EPOCHS: u64 = 1 << (64 - REC_SHIFT);

impl GpuWorkspace {
    /// An empty workspace; device memory is allocated by the first call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers of at least `sizes` f32s and a record buffer of at least `record` u64s,
    /// for a call on `st`.
    fn ensure(
        &mut self,
        gpu: &Gpu,
        st: &Arc<CudaStream>,
        sizes: &[usize],
        record: usize,
    ) -> Result<()> {
        // The buffers belong to the stream of the calls that use them (no per-use events
        // order them across streams): a workspace moving to another stream waits for the
        // old one's work and allocates anew on this one.
        let moved = self.alloc.is_none()
            && self
                .bufs
                .first()
                .is_some_and(|b| b.stream().cu_stream() != st.cu_stream());
        if moved {
            self.bufs[0]
                .stream()
                .synchronize()
                .map_err(|e| dev_err("waiting for the workspace's last call", e))?;
            self.bufs.clear();
            self.bad = None;
        }
        let grows = self.bufs.len() != sizes.len()
            || self.bad.as_ref().is_none_or(|b| b.len() < record)
            || sizes
                .iter()
                .zip(&self.bufs)
                .any(|(&len, b)| b.len() < len.max(1));
        if !grows {
            return Ok(());
        }
        // On the call's stream (a head group's own), so the new buffers are ready in its
        // order: the kernels take their addresses without cudarc's events.
        let alloc = self.alloc.clone().unwrap_or_else(|| st.clone());
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
        if self.bad.as_ref().is_none_or(|b| b.len() < record) {
            self.bad = Some(
                alloc
                    .alloc_zeros::<u64>(record.max(3))
                    .map_err(|e| dev_err("allocating device memory", e))?,
            );
            (self.epoch, self.tickets) = (0, 0);
        }
        self.ptrs = self.bufs.iter().map(|b| b.device_ptr(&alloc).0).collect();
        self.bad_ptr = self.bad.as_ref().map_or(0, |b| b.device_ptr(&alloc).0);
        if self.alloc.is_some() {
            alloc
                .synchronize()
                .map_err(|e| dev_err("synchronizing the allocation stream", e))?;
        }
        Ok(())
    }

    /// The next call's epoch on `st` (after `ensure`). When epochs run out, or for a
    /// call being captured into a CUDA graph (`capturing`) and every call after one, the
    /// record is cleared on `st` first and they start again.
    fn next_epoch(&mut self, st: &Arc<CudaStream>, capturing: bool) -> Result<u64> {
        self.clear_each_call |= capturing;
        if self.clear_each_call || self.epoch + 1 >= EPOCHS {
            let len = self.bad.as_ref().map_or(0, |b| b.len());
            st.context()
                .bind_to_thread()
                // SAFETY: `bad_ptr` is the record buffer of `len` u64s (ensure), alive
                // while the workspace is; the memset is ordered on `st` before the call.
                .and_then(|_| unsafe {
                    cudarc::driver::result::memset_d8_async(
                        self.bad_ptr,
                        0,
                        len * 8,
                        st.cu_stream(),
                    )
                })
                .map_err(|e| dev_err("clearing the non-finite record", e))?;
            (self.epoch, self.tickets) = (0, 0);
        }
        self.epoch += 1;
        Ok(self.epoch)
    }

    /// Wait for the last call and report the first NaN or infinity it found in Q, K or
    /// V as [`Error::NonFinite`] (flat index into that tensor); `Ok` when all were
    /// finite. The output of a call with non-finite input is not meaningful.
    pub fn check_finite(&self, gpu: &Gpu) -> Result<()> {
        // Per tensor, the smallest flagged index over the call's groups (one: this one).
        let mut first: [Option<usize>; 3] = [None; 3];
        let mut note = |ws: &GpuWorkspace, st: &Arc<CudaStream>, off: [usize; 3]| {
            let Some(bad) = &ws.bad else { return Ok(()) };
            let v = st
                .clone_dtoh(&bad.slice(..3))
                .map_err(|e| dev_err("copying from the device", e))?;
            for ((f, &x), o) in first.iter_mut().zip(&v).zip(off) {
                if ws.epoch != 0 && x >> REC_SHIFT == ws.epoch {
                    let i = o + (REC_MASK - (x & REC_MASK)) as usize;
                    *f = Some(f.map_or(i, |j| j.min(i)));
                }
            }
            Ok::<(), Error>(())
        };
        if self.parts_used == 0 {
            note(self, &gpu.stream, [0; 3])?;
        }
        for p in &self.parts[..self.parts_used] {
            note(&p.ws, &p.stream, p.offsets)?;
        }
        for (name, f) in ["Q", "K", "V"].iter().zip(first) {
            if let Some(index) = f {
                return Err(Error::NonFinite {
                    tensor: name,
                    index,
                });
            }
        }
        Ok(())
    }

    /// `count` head-group parts, with streams and events of `gpu`'s context.
    fn ensure_parts(&mut self, gpu: &Gpu, count: usize) -> Result<()> {
        if self.fork.is_none() {
            self.fork = Some(
                gpu.ctx
                    .new_event(None)
                    .map_err(|e| dev_err("creating an event", e))?,
            );
        }
        while self.parts.len() < count {
            self.parts.push(Part {
                ws: GpuWorkspace {
                    alloc: self.alloc.clone(),
                    ..GpuWorkspace::default()
                },
                stream: gpu
                    .ctx
                    .new_stream()
                    .map_err(|e| dev_err("creating a stream", e))?,
                join: gpu
                    .ctx
                    .new_event(None)
                    .map_err(|e| dev_err("creating an event", e))?,
                offsets: [0; 3],
            });
        }
        Ok(())
    }
}
