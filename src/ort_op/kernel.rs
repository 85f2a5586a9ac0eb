//! The `blockres.ResolventAttention` custom op: one [`Op`] per element type, each
//! creating [`Kernel`]s (one per graph node) whose Compute runs the crate's operator.

use std::ffi::{CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use half::{bf16, f16};
use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtCustomOp, OrtCustomOpInputOutputCharacteristic,
    OrtErrorCode, OrtKernelContext, OrtKernelInfo, OrtMemType, OrtShapeInferContext, OrtStatusPtr,
    OrtTensorTypeAndShapeInfo,
};

use super::API_VERSION;
use super::api::{Api, Attrs, Fail, type_code, type_name};
use super::attrs;
use super::device::{self, Device, MaybeGpu, Target};
use crate::{
    Config, Dims, Element, Par, TensorMut, TensorRef, Workspace, resolvent_attention_with,
};

/// The op type name in the `blockres` domain.
pub(crate) const OP_NAME: &std::ffi::CStr = c"ResolventAttention";

/// An element type together with its ONNX type code (and, in a `cuda` build, the
/// GPU kernels for it).
pub(crate) trait OnnxElement: Element + MaybeGpu {
    const ONNX: ONNXTensorElementDataType;
}
impl OnnxElement for f32 {
    const ONNX: ONNXTensorElementDataType =
        ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
impl OnnxElement for f16 {
    const ONNX: ONNXTensorElementDataType =
        ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}
impl OnnxElement for bf16 {
    const ONNX: ONNXTensorElementDataType =
        ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
}

/// The execution provider a registration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// Host tensors; Compute may offload to the GPU itself (`device`).
    Cpu,
    /// ORT's CUDA execution provider: device tensors and ORT's compute stream.
    #[cfg(feature = "cuda")]
    Cuda,
}

/// One registration of the op for element type `T` and one provider. ORT hands
/// callbacks a pointer to the `ort` field; `repr(C)` with `ort` first lets us get back
/// to the whole struct.
#[repr(C)]
pub(crate) struct Op<T> {
    ort: OrtCustomOp,
    api: Api,
    provider: Provider,
    _t: PhantomData<fn() -> T>,
}

/// The state of one graph node: its parsed attributes and a scratch pool. `Sync`
/// (ORT may call Compute on one kernel from several threads at once): the config is
/// read-only and the workspace hands each call its own buffers.
pub(crate) struct Kernel<T> {
    pub(crate) api: Api,
    provider: Provider,
    pub(crate) cfg: Config,
    device: Device,
    ws: Workspace,
    _t: PhantomData<fn() -> T>,
}

// ORT may run one kernel from several threads at once: keep its state Sync.
const _: () = {
    const fn assert_sync<K: Sync>() {}
    assert_sync::<Kernel<f32>>();
    assert_sync::<Kernel<f16>>();
    assert_sync::<Kernel<bf16>>();
};

const INPUTS: [&str; 3] = ["Q", "K", "V"];

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run a status-returning callback body, turning a panic into an error status.
pub(super) fn guarded(api: Api, f: impl FnOnce() -> Result<(), Fail>) -> OrtStatusPtr {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(Fail::Msg(
            OrtErrorCode::ORT_RUNTIME_EXCEPTION,
            format!(
                "blockres.ResolventAttention: internal error (panic): {}",
                panic_message(p.as_ref())
            ),
        ))
    });
    api.status_of(r)
}

/// Run a value-returning callback that has no way to report an error; a panic (which
/// none of them can raise in practice) yields `fallback` instead of unwinding into C.
pub(super) fn quiet<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

impl<T: OnnxElement> Op<T> {
    pub(crate) fn new(api: Api, provider: Provider) -> Self {
        Op {
            ort: OrtCustomOp {
                version: API_VERSION,
                CreateKernel: None,
                GetName: Some(get_name),
                GetExecutionProviderType: Some(get_execution_provider_type),
                GetInputType: Some(get_type::<T>),
                GetInputTypeCount: Some(get_input_count),
                GetOutputType: Some(get_type::<T>),
                GetOutputTypeCount: Some(get_output_count),
                KernelCompute: None,
                KernelDestroy: Some(kernel_destroy::<T>),
                GetInputCharacteristic: Some(get_characteristic),
                GetOutputCharacteristic: Some(get_characteristic),
                GetInputMemoryType: Some(get_input_memory_type),
                GetVariadicInputMinArity: Some(get_variadic_min_arity),
                GetVariadicInputHomogeneity: Some(get_variadic_homogeneity),
                GetVariadicOutputMinArity: Some(get_variadic_min_arity),
                GetVariadicOutputHomogeneity: Some(get_variadic_homogeneity),
                CreateKernelV2: Some(create_kernel::<T>),
                KernelComputeV2: Some(kernel_compute::<T>),
                InferOutputShapeFn: Some(infer_output_shape::<T>),
                GetStartVersion: Some(get_start_version),
                GetEndVersion: Some(get_end_version),
                GetMayInplace: None,
                ReleaseMayInplace: None,
                GetAliasMap: None,
                ReleaseAliasMap: None,
            },
            api,
            provider,
            _t: PhantomData,
        }
    }

    /// The pointer ORT is given for this op.
    pub(crate) fn as_ort(&'static self) -> *const OrtCustomOp {
        &self.ort
    }

    /// # Safety
    /// `op` must be the `ort` field of a live `Op<T>`.
    unsafe fn from_ort<'a>(op: *const OrtCustomOp) -> &'a Self {
        // SAFETY: `ort` is the first field of a repr(C) struct.
        unsafe { &*op.cast::<Self>() }
    }
}

unsafe extern "system" fn get_name(_op: *const OrtCustomOp) -> *const c_char {
    OP_NAME.as_ptr()
}

unsafe extern "system" fn get_execution_provider_type(op: *const OrtCustomOp) -> *const c_char {
    // SAFETY: ORT passes back an op it was given; every registration is an `Op<f32>`,
    // `Op<f16>` or `Op<bf16>`, whose layouts agree up to `provider` (T is a marker).
    let provider = unsafe { Op::<f32>::from_ort(op) }.provider;
    match provider {
        // Null selects the CPU execution provider.
        Provider::Cpu => ptr::null(),
        #[cfg(feature = "cuda")]
        Provider::Cuda => c"CUDAExecutionProvider".as_ptr(),
    }
}

unsafe extern "system" fn get_type<T: OnnxElement>(
    _op: *const OrtCustomOp,
    _index: usize,
) -> ONNXTensorElementDataType {
    T::ONNX
}

unsafe extern "system" fn get_input_count(_op: *const OrtCustomOp) -> usize {
    3
}

unsafe extern "system" fn get_output_count(_op: *const OrtCustomOp) -> usize {
    1
}

unsafe extern "system" fn get_characteristic(
    _op: *const OrtCustomOp,
    _index: usize,
) -> OrtCustomOpInputOutputCharacteristic {
    OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
}

pub(super) unsafe extern "system" fn get_input_memory_type(
    _op: *const OrtCustomOp,
    _index: usize,
) -> OrtMemType {
    OrtMemType::OrtMemTypeDefault
}

pub(super) unsafe extern "system" fn get_variadic_min_arity(_op: *const OrtCustomOp) -> c_int {
    1
}

pub(super) unsafe extern "system" fn get_variadic_homogeneity(_op: *const OrtCustomOp) -> c_int {
    1
}

pub(super) unsafe extern "system" fn get_start_version(_op: *const OrtCustomOp) -> c_int {
    1
}

pub(super) unsafe extern "system" fn get_end_version(_op: *const OrtCustomOp) -> c_int {
    c_int::MAX
}

unsafe extern "system" fn create_kernel<T: OnnxElement>(
    op: *const OrtCustomOp,
    api: *const OrtApi,
    info: *const OrtKernelInfo,
    out: *mut *mut c_void,
) -> OrtStatusPtr {
    // SAFETY: ORT passes back the op it was given.
    let this = unsafe { Op::<T>::from_ort(op) };
    // Prefer the table ORT passes for this op's version; it is the same host.
    let api = if api.is_null() {
        this.api
    } else {
        // SAFETY: ORT's API tables live for the whole process.
        Api(unsafe { &*api })
    };
    guarded(api, || {
        if out.is_null() {
            return Err(Fail::invalid(
                "blockres.ResolventAttention: CreateKernelV2 got no output slot",
            ));
        }
        let attrs = Attrs { api, info };
        let cfg = attrs::parse_config(&attrs)?;
        let device = attrs::parse_device(&attrs)?;
        #[cfg(feature = "cuda")]
        if this.provider == Provider::Cuda {
            super::cuda::check_config(&cfg)?;
        }
        let kernel = Box::new(Kernel::<T> {
            api,
            provider: this.provider,
            cfg,
            device,
            ws: Workspace::new(),
            _t: PhantomData,
        });
        // SAFETY: `out` is a valid slot; ORT hands the pointer back to Compute/Destroy.
        unsafe { *out = Box::into_raw(kernel).cast() };
        Ok(())
    })
}

unsafe extern "system" fn kernel_destroy<T: OnnxElement>(kernel: *mut c_void) {
    quiet((), || {
        if !kernel.is_null() {
            // SAFETY: created by `create_kernel::<T>` and destroyed once by ORT.
            drop(unsafe { Box::from_raw(kernel.cast::<Kernel<T>>()) });
        }
    })
}

unsafe extern "system" fn kernel_compute<T: OnnxElement>(
    kernel: *mut c_void,
    ctx: *mut OrtKernelContext,
) -> OrtStatusPtr {
    // SAFETY: created by `create_kernel::<T>`; only shared references are taken, so
    // concurrent Compute calls on one kernel are fine.
    let kernel = unsafe { &*kernel.cast::<Kernel<T>>() };
    guarded(kernel.api, || match kernel.provider {
        Provider::Cpu => kernel.compute(ctx),
        #[cfg(feature = "cuda")]
        Provider::Cuda => super::cuda::compute(kernel, ctx),
    })
}

/// The inputs and output of one Compute call, checked: element type, rank, shapes,
/// alignment. The pointers are ORT's (host or device memory, by provider) and valid
/// until Compute returns.
pub(crate) struct Call {
    pub(crate) shapes: [[usize; 4]; 3],
    pub(crate) data: [*mut u8; 3],
    pub(crate) dims: Dims,
    pub(crate) out_shape: [usize; 4],
    pub(crate) y: *mut u8,
    /// Input Q, for where it lives.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) q_value: *const ort_sys::OrtValue,
}

impl Call {
    /// Read and check the inputs and allocate the output.
    pub(crate) fn read<T: OnnxElement>(api: Api, ctx: *mut OrtKernelContext) -> Result<Self, Fail> {
        // SAFETY: `ctx` is the context of this Compute call; values it returns stay
        // valid until Compute returns.
        let count = unsafe { api.input_count(ctx)? };
        if count != 3 {
            return Err(Fail::invalid(format!(
                "blockres.ResolventAttention: expected 3 inputs (Q, K, V), got {count}"
            )));
        }
        let mut shapes = [[0usize; 4]; 3];
        let mut data = [ptr::null_mut::<u8>(); 3];
        let mut q_value = ptr::null();
        for (i, name) in INPUTS.iter().enumerate() {
            // SAFETY: as above; i < count = 3.
            let value = unsafe { api.input(ctx, i)? }.ok_or_else(|| {
                Fail::invalid(format!(
                    "blockres.ResolventAttention: input {name} is missing"
                ))
            })?;
            if i == 0 {
                q_value = value;
            }
            // SAFETY: a non-null input of this call, a tensor (the op declares tensor
            // inputs), valid until Compute returns.
            let ts = unsafe { api.describe_value(value)? };
            if ts.elem != type_code(T::ONNX) {
                return Err(Fail::invalid(format!(
                    "blockres.ResolventAttention: input {name}: element type {} does not match Q's {}; Q, K and V must share one type (float, float16 or bfloat16)",
                    type_name(ts.elem),
                    T::NAME
                )));
            }
            let form = if *name == "V" {
                "[B, Hkv, n, dv]"
            } else if *name == "K" {
                "[B, Hkv, n, dk]"
            } else {
                "[B, H, n, dk]"
            };
            if ts.dims.len() != 4 {
                return Err(Fail::invalid(format!(
                    "blockres.ResolventAttention: input {name}: expected a rank-4 tensor {form}, got rank {} with shape {:?}",
                    ts.dims.len(),
                    ts.dims
                )));
            }
            for (slot, &d) in shapes[i].iter_mut().zip(&ts.dims) {
                *slot = usize::try_from(d).map_err(|_| {
                    Fail::invalid(format!(
                        "blockres.ResolventAttention: input {name}: negative dimension in shape {:?}",
                        ts.dims
                    ))
                })?;
            }
            // SAFETY: as above; inputs are only read.
            data[i] = unsafe { api.data(value)? };
        }
        let dims = Dims::from_shapes(shapes[0], shapes[1], shapes[2])?;
        let out_shape = dims.output_shape();
        let out_dims = out_shape.map(|d| d as i64);
        // SAFETY: `ctx` is this Compute call's context.
        let y_value = unsafe { api.output(ctx, 0, &out_dims)? };
        // SAFETY: the output tensor ORT just allocated for this call, ours to write.
        let y = unsafe { api.data(y_value)? };
        Ok(Call {
            shapes,
            data,
            dims,
            out_shape,
            y,
            q_value,
        })
    }
}

impl<T: OnnxElement> Kernel<T> {
    fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), Fail> {
        let Call {
            shapes,
            data,
            dims,
            out_shape,
            y: y_data,
            ..
        } = Call::read::<T>(self.api, ctx)?;

        let view = |p: *mut u8, shape: [usize; 4], name: &str| -> Result<&[T], Fail> {
            slice_parts::<T>(p, shape, name).map(|(p, len)| {
                // SAFETY: ORT owns `len` initialized elements of type T at `p` for the
                // duration of Compute; inputs are only read.
                unsafe { std::slice::from_raw_parts(p, len) }
            })
        };
        let q = view(data[0], shapes[0], "Q")?;
        let k = view(data[1], shapes[1], "K")?;
        let v = view(data[2], shapes[2], "V")?;
        let (yp, ylen) = slice_parts::<T>(y_data, out_shape, "Y")?;
        // SAFETY: the output buffer was allocated for this call and nothing else refers
        // to it (the op declares no in-place reuse of inputs).
        let y = unsafe { std::slice::from_raw_parts_mut(yp.cast_mut(), ylen) };
        let (q, k, v) = (
            TensorRef::new(q, shapes[0])?,
            TensorRef::new(k, shapes[1])?,
            TensorRef::new(v, shapes[2])?,
        );
        // Opening the device costs a context and a module load: `auto` asks only for
        // calls it would send there.
        let gpu_available = self.device == Device::Auto
            && device::gpu_suits(&dims, &self.cfg)
            && device::gpu_available();
        let target = device::choose(self.device, &dims, &self.cfg, gpu_available);
        if let Target::Gpu { fallback } = target {
            match device::run_gpu(q, k, v, TensorMut::new(&mut *y, out_shape)?, &self.cfg) {
                Ok(()) => return Ok(()),
                Err(e) if fallback && device::falls_back(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let y = TensorMut::new(y, out_shape)?;
        match super::pool::current() {
            Some(pool) => pool.install(|| {
                let par = Par::rayon(pool.current_num_threads());
                resolvent_attention_with(q, k, v, y, &self.cfg, par, &self.ws)
            })?,
            None => resolvent_attention_with(q, k, v, y, &self.cfg, Par::Seq, &self.ws)?,
        }
        Ok(())
    }
}

/// Check that a tensor buffer can be viewed as `[T]` of the shape's length.
pub(super) fn slice_parts<T>(
    p: *mut u8,
    shape: [usize; 4],
    name: &str,
) -> Result<(*const T, usize), Fail> {
    let len = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Fail::invalid(format!(
                "blockres.ResolventAttention: {name}: shape {shape:?} is too large"
            ))
        })?;
    if len == 0 {
        return Ok((ptr::NonNull::<T>::dangling().as_ptr(), 0));
    }
    if p.is_null() || !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Fail::Msg(
            OrtErrorCode::ORT_FAIL,
            format!("blockres.ResolventAttention: {name}: tensor buffer is null or misaligned"),
        ));
    }
    Ok((p.cast::<T>(), len))
}

/// Output type and shape at graph time: `Y: [B, H, n, dv]` from `Q: [B, H, n, dk]` and
/// `V: [B, Hkv, n, dv]`. Inconsistent or unknown shapes are left to Compute, which
/// reports them with a message: some ORT versions ignore the status returned here.
unsafe extern "system" fn infer_output_shape<T: OnnxElement>(
    op: *const OrtCustomOp,
    ctx: *mut OrtShapeInferContext,
) -> OrtStatusPtr {
    // SAFETY: ORT passes back the op it was given.
    let api = unsafe { Op::<T>::from_ort(op) }.api;
    guarded(api, || {
        let t = api.0;
        let mut count = 0usize;
        // SAFETY: `ctx` is valid during this call; the input infos it returns are owned
        // by the context and must not be released.
        unsafe { api.check((t.ShapeInferContext_GetInputCount)(ctx, &mut count))? };
        if count < 3 {
            return Ok(());
        }
        let input = |i: usize| -> Result<super::api::TypeShape, Fail> {
            let mut info: *mut OrtTensorTypeAndShapeInfo = ptr::null_mut();
            // SAFETY: `ctx` is valid during this call and i < count; on success `info`
            // is a valid info owned by the context, read here and not released.
            unsafe {
                api.check((t.ShapeInferContext_GetInputTypeShape)(ctx, i, &mut info))?;
                api.describe_symbolic(info)
            }
        };
        let q = input(0)?;
        let v = input(2)?;
        // The output takes Q's type: ORT builds one schema for the three registrations
        // and calls the shape function of the first one whatever the node's type.
        let elem = [f32::ONNX, f16::ONNX, bf16::ONNX]
            .into_iter()
            .find(|&t| type_code(t) == q.elem);
        let Some(elem) = elem else { return Ok(()) };
        if q.dims.len() != 4 || v.dims.len() != 4 {
            return Ok(());
        }
        let picks = [(&q, 0), (&q, 1), (&q, 2), (&v, 3)];
        let dims: Vec<i64> = picks.iter().map(|(s, i)| s.dims[*i]).collect();
        let symbols: Vec<CString> = picks
            .iter()
            .map(|(s, i)| {
                CString::new(s.symbols.get(*i).cloned().unwrap_or_default()).unwrap_or_default()
            })
            .collect();
        if dims
            .iter()
            .zip(&symbols)
            .any(|(&d, s)| d < 0 && s.is_empty())
        {
            return Ok(());
        }
        let mut sym_ptrs: Vec<*const c_char> = symbols.iter().map(|s| s.as_ptr()).collect();
        let mut info: *mut OrtTensorTypeAndShapeInfo = ptr::null_mut();
        // SAFETY: `info` is ours once created and released once on every later path;
        // `dims` and `sym_ptrs` (NUL-terminated strings owned by `symbols`) outlive the
        // calls, which copy them; `ctx` is valid during this call.
        unsafe {
            api.check((t.CreateTensorTypeAndShapeInfo)(&mut info))?;
            let r = (|| {
                api.check((t.SetTensorElementType)(info, elem))?;
                api.check((t.SetDimensions)(info, dims.as_ptr(), dims.len()))?;
                api.check((t.SetSymbolicDimensions)(
                    info,
                    sym_ptrs.as_mut_ptr(),
                    sym_ptrs.len(),
                ))?;
                api.check((t.ShapeInferContext_SetOutputTypeShape)(ctx, 0, info))
            })();
            (t.ReleaseTensorTypeAndShapeInfo)(info);
            r
        }
    })
}
