//! Host slices in, host results out: one process-wide [`Gpu`] on device 0 and its
//! workspace, shared by every caller (the ONNX Runtime op's CPU registration included).

use std::sync::{Mutex, OnceLock};

use super::{Gpu, GpuElement, GpuWorkspace, dev_err, resolvent_attention_device};
use crate::attention::Dims;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::tensor::TensorRef;

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
