//! The GPU path on memory and a stream the host owns: ONNX Runtime's CUDA execution
//! provider hands a custom op raw device pointers and its compute stream. Nothing is
//! copied and nothing waits: the kernels are enqueued on the host's stream behind the
//! work before them, and the host orders what comes after.
//!
//! Per device, the kernels are loaded once and kept for the process. Scratch memory is
//! kept per host stream (work on one stream runs in order, so a stream's calls can
//! share it; two streams never do) and allocated on the context's default stream, so
//! it stays valid when the host destroys its stream. The context's event tracking is
//! off: it would record events on every borrowed buffer, and the host's stream already
//! orders the work.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream, sys};

use super::{Gpu, GpuElement, GpuWorkspace, dev_err, resolvent_attention_device};
use crate::attention::Dims;
use crate::config::Config;
use crate::error::{Error, Result};

/// Host streams whose scratch is kept per device; past it the oldest entry is dropped
/// (after the device is idle: its buffers may still be in use).
const MAX_STREAMS: usize = 16;

/// What one host stream uses: a [`Gpu`] whose stream is the host's (borrowed, never
/// destroyed here) and its scratch.
struct OnStream {
    gpu: Gpu,
    ws: GpuWorkspace,
}

struct Device {
    base: Gpu,
    null: Arc<CudaStream>,
    streams: Mutex<Vec<(usize, Arc<Mutex<OnStream>>)>>,
}

/// Devices opened so far, by ordinal; a failure is kept too, so a machine without a
/// usable GPU answers quickly every time.
static DEVICES: Mutex<Vec<(usize, std::result::Result<&'static Device, Error>)>> =
    Mutex::new(Vec::new());

fn device(ordinal: usize) -> Result<&'static Device> {
    let mut all = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = all.iter().find(|(o, _)| *o == ordinal) {
        return d.clone();
    }
    // cudarc panics when the driver library lacks a symbol it expects.
    let opened = std::panic::catch_unwind(|| Gpu::new(ordinal))
        .unwrap_or_else(|_| Err(Error::Device("the CUDA driver could not be loaded".into())))
        .map(|base| {
            // SAFETY: no buffer of this context exists yet; all later ones are borrowed
            // or workspace buffers ordered by explicit synchronization.
            unsafe { base.ctx.disable_event_tracking() };
            let null = base.ctx.default_stream();
            &*Box::leak(Box::new(Device {
                base,
                null,
                streams: Mutex::new(Vec::new()),
            }))
        });
    all.push((ordinal, opened.clone()));
    opened
}

impl Device {
    fn on_stream(&self, stream: sys::CUstream) -> Result<Arc<Mutex<OnStream>>> {
        let key = stream as usize;
        let mut list = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = list.iter().find(|(k, _)| *k == key) {
            return Ok(s.clone());
        }
        if list.len() >= MAX_STREAMS {
            self.base
                .ctx
                .synchronize()
                .map_err(|e| dev_err("synchronizing before freeing scratch", e))?;
            list.remove(0);
        }
        let gpu = Gpu {
            ctx: self.base.ctx.clone(),
            // SAFETY: the host's stream of this device's context; the wrapper never
            // destroys it, and is used only while the host runs a call on it.
            stream: unsafe { self.base.ctx.wrap_borrowed_stream(stream) },
            k: self.base.k.clone(),
            name: self.base.name.clone(),
            smem: self.base.smem,
            // Not on the default streams (null, CU_STREAM_LEGACY = 1,
            // CU_STREAM_PER_THREAD = 2), whose implicit synchronization with other
            // streams is the ordering a host relying on them expects.
            pdl: self.base.pdl && stream as usize > 2,
        };
        let ws = GpuWorkspace {
            alloc: Some(self.null.clone()),
            // The host may capture its calls into a CUDA graph (ONNX Runtime's
            // `enable_cuda_graph`): clearing the record before every call keeps the path
            // checked under graph replay on the device (cuda/ort_ep_check.sh), whether
            // or not the capture is seen when the call is enqueued.
            clear_each_call: true,
            ..GpuWorkspace::default()
        };
        let s = Arc::new(Mutex::new(OnStream { gpu, ws }));
        list.push((key, s.clone()));
        Ok(s)
    }
}

/// A host buffer seen as a [`CudaSlice`] for one call; given back (not freed) on drop.
struct Borrowed<T>(Option<CudaSlice<T>>);

impl<T> Drop for Borrowed<T> {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.leak();
        }
    }
}

/// [`super::resolvent_attention_device`] on device pointers and a stream owned by the
/// caller (ONNX Runtime's CUDA execution provider): `q: [B, H, n, dk]`, `k`, `v` per
/// kv head, `y: [B, H, n, dv]`, contiguous, of element type `T`, on device `ordinal`.
/// Returns once the work is enqueued on `stream`; nothing is copied and nothing waits.
///
/// Unlike the other entry points, NaN/∞ in the inputs is not reported (that needs a
/// wait for the device): it propagates to `y`.
///
/// ```no_run
/// use blockres::{Config, Dims};
/// use cudarc::driver::CudaContext;
/// let ctx = CudaContext::new(0).unwrap();
/// let stream = ctx.new_stream().unwrap();
/// let dims = Dims::from_shapes([1, 2, 100, 16], [1, 2, 100, 16], [1, 2, 100, 16]).unwrap();
/// let x = stream.clone_htod(&vec![0.25f32; 3200]).unwrap();
/// let y = stream.alloc_zeros::<f32>(3200).unwrap();
/// let (px, _) = cudarc::driver::DevicePtr::device_ptr(&x, &stream);
/// let (py, _) = cudarc::driver::DevicePtr::device_ptr(&y, &stream);
/// // SAFETY: the buffers hold the shapes' elements and live until the stream is done.
/// unsafe {
///     blockres::gpu::resolvent_attention_on_stream::<f32>(
///         0, stream.cu_stream(), px, px, px, py, &dims, &Config::default(),
///     )
/// }
/// .unwrap();
/// assert!(stream.clone_dtoh(&y).unwrap().iter().all(|v| (v - 0.25).abs() < 1e-5));
/// ```
///
/// # Safety
/// `stream` must be a live stream of device `ordinal`'s primary context; `q`, `k`, `v`,
/// `y` must point to at least as many elements of `T` as the shapes need, on that
/// device, and stay valid until the enqueued work has finished; `y` must not overlap
/// the inputs. Null or misaligned (not 16-byte) pointers are refused with an error.
#[allow(clippy::too_many_arguments)]
pub unsafe fn resolvent_attention_on_stream<T: GpuElement>(
    ordinal: usize,
    stream: sys::CUstream,
    q: sys::CUdeviceptr,
    k: sys::CUdeviceptr,
    v: sys::CUdeviceptr,
    y: sys::CUdeviceptr,
    dims: &Dims,
    cfg: &Config,
) -> Result<()> {
    cfg.validate()?;
    dims.validate()?;
    let bh = dims.batch * dims.heads;
    let bhkv = dims.batch * dims.kv_heads;
    let lens = [
        ("Q", q, bh * dims.n * dims.dk),
        ("K", k, bhkv * dims.n * dims.dk),
        ("V", v, bhkv * dims.n * dims.dv),
        ("Y", y, bh * dims.n * dims.dv),
    ];
    // The kernels move 16 bytes at a time; a misaligned buffer would fault on the
    // device and leave the context unusable, so it is refused here.
    for (name, p, _) in lens {
        if p == 0 || p % 16 != 0 {
            return Err(Error::Shape {
                tensor: name,
                message: format!(
                    "device pointer {p:#x} is null or not 16-byte aligned (the kernels load \
                     16 bytes at a time; ONNX Runtime's and cudaMalloc's buffers are)"
                ),
            });
        }
    }
    let dev = device(ordinal)?;
    dev.base
        .ctx
        .bind_to_thread()
        .map_err(|e| dev_err("making the CUDA context current", e))?;
    let on = dev.on_stream(stream)?;
    let mut on = on.lock().unwrap_or_else(|e| e.into_inner());
    let OnStream { gpu, ws } = &mut *on;
    // SAFETY: the caller guarantees each pointer holds `len` elements of T for the
    // duration of the enqueued work; the guards hand the memory back without freeing.
    let borrow = |(_, p, len): (&str, sys::CUdeviceptr, usize)| unsafe {
        gpu.stream.upgrade_device_ptr::<T>(p, len)
    };
    let [q, k, v, y] = lens.map(|x| Borrowed(Some(borrow(x))));
    let mut y = y;
    match (&q.0, &k.0, &v.0, &mut y.0) {
        (Some(q), Some(k), Some(v), Some(y)) => {
            resolvent_attention_device(gpu, q, k, v, y, dims, cfg, ws)
        }
        _ => Err(Error::Device(
            "a borrowed device buffer went missing".into(),
        )),
    }
}
