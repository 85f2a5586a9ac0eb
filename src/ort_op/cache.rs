//! `blockres.ResolventAttentionWithCache`: causal resolvent attention that continues a
//! sequence from cached state (SPEC §6), for decoding in an ONNX Runtime host. The
//! state tensors follow ONNX Runtime's `GroupQueryAttention`: optional `past_*` inputs,
//! `present_*` outputs, a capacity dimension, and the number of valid tokens as an
//! input, so a host may bind one preallocated buffer as both `past_x` and `present_x`
//! (IOBinding, onnxruntime-genai's `past_present_share_buffer`): a step then writes only
//! its new rows, in place. The layout is in `docs/decoding.md`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr;

use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtCustomOp, OrtCustomOpInputOutputCharacteristic,
    OrtKernelContext, OrtKernelInfo, OrtStatusPtr, OrtValue,
};

use super::API_VERSION;
use super::api::{Api, Attrs, Fail, type_code, type_name};
use super::attrs;
use super::kernel::{self, OnnxElement};
use crate::decode::kernel::{Coarse, Geom, HeadState, KvState, Span};
use crate::decode::{States, check_decodable, parallel_pays, run_heads, widen};
use crate::{Config, Dims, Error, Par, Structure};

pub(crate) const OP_NAME: &CStr = c"ResolventAttentionWithCache";
const NAME: &str = "blockres.ResolventAttentionWithCache";

/// Input slots.
const PAST_KEY: usize = 3;
const PAST_VALUE: usize = 4;
const PAST_LEN: usize = 5;
const PAST_BLOCK_KEY: usize = 6;
const PAST_BLOCK_VALUE: usize = 7;
const PAST_COARSE: usize = 8;
const INPUT_NAMES: [&str; 9] = [
    "query",
    "key",
    "value",
    "past_key",
    "past_value",
    "past_sequence_length",
    "past_block_key",
    "past_block_value",
    "past_coarse",
];
const OUTPUT_NAMES: [&str; 6] = [
    "output",
    "present_key",
    "present_value",
    "present_block_key",
    "present_block_value",
    "present_coarse",
];
/// `past_x` (input) may share its buffer with `present_x` (output).
const IN_PLACE: [(c_int, c_int); 5] = [(3, 1), (4, 2), (6, 3), (7, 4), (8, 5)];
/// Leading entries of a `past_coarse` row before `hsum`: block index, σ, gsum.
const COARSE_HEAD: usize = 3;

fn invalid(message: impl std::fmt::Display) -> Fail {
    Fail::invalid(format!("{NAME}: {message}"))
}

fn from_error(e: Error) -> Fail {
    Fail::of(NAME, e)
}

/// One registration for element type `T` (CPU provider). `repr(C)` with `ort` first:
/// ORT hands callbacks a pointer to it.
#[repr(C)]
pub(crate) struct CacheOp<T> {
    ort: OrtCustomOp,
    api: Api,
    _t: PhantomData<fn() -> T>,
}

struct CacheKernel<T> {
    api: Api,
    cfg: Config,
    _t: PhantomData<fn() -> T>,
}

impl<T: OnnxElement> CacheOp<T> {
    pub(crate) fn new(api: Api) -> Self {
        CacheOp {
            ort: OrtCustomOp {
                version: API_VERSION,
                CreateKernel: None,
                GetName: Some(get_name),
                GetExecutionProviderType: Some(get_provider),
                GetInputType: Some(get_input_type::<T>),
                GetInputTypeCount: Some(get_input_count),
                GetOutputType: Some(get_output_type::<T>),
                GetOutputTypeCount: Some(get_output_count),
                KernelCompute: None,
                KernelDestroy: Some(kernel_destroy::<T>),
                GetInputCharacteristic: Some(get_input_characteristic),
                GetOutputCharacteristic: Some(get_output_characteristic),
                GetInputMemoryType: Some(kernel::get_input_memory_type),
                GetVariadicInputMinArity: Some(kernel::get_variadic_min_arity),
                GetVariadicInputHomogeneity: Some(kernel::get_variadic_homogeneity),
                GetVariadicOutputMinArity: Some(kernel::get_variadic_min_arity),
                GetVariadicOutputHomogeneity: Some(kernel::get_variadic_homogeneity),
                CreateKernelV2: Some(create_kernel::<T>),
                KernelComputeV2: Some(kernel_compute::<T>),
                InferOutputShapeFn: None,
                GetStartVersion: Some(kernel::get_start_version),
                GetEndVersion: Some(kernel::get_end_version),
                GetMayInplace: Some(get_may_inplace),
                ReleaseMayInplace: Some(release_may_inplace),
                GetAliasMap: None,
                ReleaseAliasMap: None,
            },
            api,
            _t: PhantomData,
        }
    }

    pub(crate) fn as_ort(&'static self) -> *const OrtCustomOp {
        &self.ort
    }
}

unsafe extern "system" fn get_name(_op: *const OrtCustomOp) -> *const c_char {
    OP_NAME.as_ptr()
}

unsafe extern "system" fn get_provider(_op: *const OrtCustomOp) -> *const c_char {
    ptr::null()
}

unsafe extern "system" fn get_input_type<T: OnnxElement>(
    _op: *const OrtCustomOp,
    index: usize,
) -> ONNXTensorElementDataType {
    match index {
        0..=2 => T::ONNX,
        PAST_LEN => ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
        _ => ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    }
}

unsafe extern "system" fn get_output_type<T: OnnxElement>(
    _op: *const OrtCustomOp,
    index: usize,
) -> ONNXTensorElementDataType {
    match index {
        0 => T::ONNX,
        _ => ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    }
}

unsafe extern "system" fn get_input_count(_op: *const OrtCustomOp) -> usize {
    INPUT_NAMES.len()
}

unsafe extern "system" fn get_output_count(_op: *const OrtCustomOp) -> usize {
    OUTPUT_NAMES.len()
}

unsafe extern "system" fn get_input_characteristic(
    _op: *const OrtCustomOp,
    index: usize,
) -> OrtCustomOpInputOutputCharacteristic {
    if index < 3 {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
    } else {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
    }
}

unsafe extern "system" fn get_output_characteristic(
    _op: *const OrtCustomOp,
    index: usize,
) -> OrtCustomOpInputOutputCharacteristic {
    if index == 0 {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
    } else {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
    }
}

/// ORT frees nothing of ours: the arrays are handed back to `release_may_inplace`.
unsafe extern "system" fn get_may_inplace(
    input_index: *mut *mut c_int,
    output_index: *mut *mut c_int,
) -> usize {
    kernel::quiet(0, || {
        if input_index.is_null() || output_index.is_null() {
            return 0;
        }
        let ins: Box<[c_int; 5]> = Box::new(IN_PLACE.map(|(i, _)| i));
        let outs: Box<[c_int; 5]> = Box::new(IN_PLACE.map(|(_, o)| o));
        // SAFETY: both slots are valid (checked non-null); ownership of the arrays
        // passes to ORT until it calls `release_may_inplace` with these pointers.
        unsafe {
            *input_index = Box::into_raw(ins).cast();
            *output_index = Box::into_raw(outs).cast();
        }
        IN_PLACE.len()
    })
}

unsafe extern "system" fn release_may_inplace(input_index: *mut c_int, output_index: *mut c_int) {
    kernel::quiet((), || {
        for p in [input_index, output_index] {
            if !p.is_null() {
                // SAFETY: allocated by `get_may_inplace` as a `Box<[c_int; 5]>`, released once.
                drop(unsafe { Box::from_raw(p.cast::<[c_int; 5]>()) });
            }
        }
    })
}

unsafe extern "system" fn create_kernel<T: OnnxElement>(
    op: *const OrtCustomOp,
    api: *const OrtApi,
    info: *const OrtKernelInfo,
    out: *mut *mut c_void,
) -> OrtStatusPtr {
    // SAFETY: ORT passes back the op it was given: the `ort` field of a `CacheOp<T>`.
    let this = unsafe { &*op.cast::<CacheOp<T>>() };
    let api = if api.is_null() {
        this.api
    } else {
        // SAFETY: ORT's API tables live for the whole process.
        Api(unsafe { &*api })
    };
    kernel::guarded(api, || {
        if out.is_null() {
            return Err(invalid("CreateKernelV2 got no output slot"));
        }
        let cfg = attrs::parse_config(&Attrs { api, info })?;
        check_decodable(&cfg).map_err(from_error)?;
        let k = Box::new(CacheKernel::<T> {
            api,
            cfg,
            _t: PhantomData,
        });
        // SAFETY: `out` is a valid slot; ORT hands the pointer back to Compute/Destroy.
        unsafe { *out = Box::into_raw(k).cast() };
        Ok(())
    })
}

unsafe extern "system" fn kernel_destroy<T: OnnxElement>(k: *mut c_void) {
    kernel::quiet((), || {
        if !k.is_null() {
            // SAFETY: created by `create_kernel::<T>` and destroyed once by ORT.
            drop(unsafe { Box::from_raw(k.cast::<CacheKernel<T>>()) });
        }
    })
}

unsafe extern "system" fn kernel_compute<T: OnnxElement>(
    k: *mut c_void,
    ctx: *mut OrtKernelContext,
) -> OrtStatusPtr {
    // SAFETY: created by `create_kernel::<T>`; only shared references are taken.
    let k = unsafe { &*k.cast::<CacheKernel<T>>() };
    kernel::guarded(k.api, || k.compute(ctx))
}

/// One input tensor: its shape and data.
struct In {
    dims: Vec<usize>,
    data: *mut u8,
}

/// A tensor of `len` f32 at `p`, checked.
fn f32_parts(p: *mut u8, len: usize, name: &str) -> Result<*mut f32, Fail> {
    if len == 0 {
        return Ok(ptr::NonNull::<f32>::dangling().as_ptr());
    }
    if p.is_null() || !(p as usize).is_multiple_of(align_of::<f32>()) {
        return Err(invalid(format!(
            "{name}: tensor buffer is null or misaligned"
        )));
    }
    Ok(p.cast())
}

impl<T: OnnxElement> CacheKernel<T> {
    /// Input `i` if the node has it, checked for element type.
    fn input(
        &self,
        ctx: *mut OrtKernelContext,
        count: usize,
        i: usize,
    ) -> Result<Option<In>, Fail> {
        if i >= count {
            return Ok(None);
        }
        // SAFETY: `ctx` is this Compute call's context; values stay valid until it returns.
        let Some(v) = (unsafe { self.api.input(ctx, i)? }) else {
            return Ok(None);
        };
        // SAFETY: `v` is a non-null input of this call, a tensor (the op's inputs are
        // declared as tensors), valid until Compute returns.
        let ts = unsafe { self.api.describe_value(v)? };
        let want = match i {
            0..=2 => type_code(T::ONNX),
            PAST_LEN => 7,
            _ => 1,
        };
        if ts.elem != want {
            return Err(invalid(format!(
                "input {}: element type {} where {} is expected",
                INPUT_NAMES[i],
                type_name(ts.elem),
                type_name(want)
            )));
        }
        let dims = ts
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid(format!("input {}: negative dimension", INPUT_NAMES[i])))?;
        Ok(Some(In {
            dims,
            // SAFETY: as above; an input's data is only read (through the present
            // output where ORT gave both one buffer).
            data: unsafe { self.api.data(v)? },
        }))
    }

    /// Output `i` with `dims`, or `None` when the node does not use it.
    fn output(
        &self,
        ctx: *mut OrtKernelContext,
        count: usize,
        i: usize,
        dims: &[usize],
    ) -> Result<Option<*mut u8>, Fail> {
        if i >= count {
            return Ok(None);
        }
        let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
        let mut v: *mut OrtValue = ptr::null_mut();
        // SAFETY: `ctx` is this Compute call's context; `d` outlives the call.
        unsafe {
            self.api.check((self.api.0.KernelContext_GetOutput)(
                ctx,
                i,
                d.as_ptr(),
                d.len(),
                &mut v,
            ))?;
        }
        if v.is_null() {
            return Ok(None);
        }
        // SAFETY: `v` is the non-null output tensor ORT just allocated for this call;
        // it is ours to write until Compute returns.
        Ok(Some(unsafe { self.api.data(v)? }))
    }

    fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), Fail> {
        let api = self.api;
        // SAFETY: as above.
        let count = unsafe { api.input_count(ctx)? };
        let mut out_count = 0usize;
        // SAFETY: `ctx` as above; `out_count` is a valid slot.
        unsafe { api.check((api.0.KernelContext_GetOutputCount)(ctx, &mut out_count))? };
        let mut qkv = Vec::with_capacity(3);
        for (i, name) in INPUT_NAMES.iter().enumerate().take(3) {
            let t = self
                .input(ctx, count, i)?
                .ok_or_else(|| invalid(format!("input {name} is missing")))?;
            let d: [usize; 4] = t.dims.as_slice().try_into().map_err(|_| {
                invalid(format!(
                    "input {name}: expected rank 4, got shape {:?}",
                    t.dims
                ))
            })?;
            qkv.push((d, t.data));
        }
        let dims = Dims::from_shapes(qkv[0].0, qkv[1].0, qkv[2].0).map_err(from_error)?;
        let Dims {
            batch,
            heads,
            kv_heads,
            n: s,
            dk,
            dv,
        } = dims;
        let block = self.cfg.structure == Structure::Block;
        let b = if block {
            self.cfg.block_size
        } else {
            usize::MAX
        };
        let g = Geom {
            b,
            dk,
            dv,
            scale: self.cfg.effective_scale(dk),
            gamma: self.cfg.gamma,
        };

        let p = match self.input(ctx, count, PAST_LEN)? {
            None => 0,
            Some(t) => {
                if t.dims.iter().product::<usize>() != 1 {
                    return Err(invalid(format!(
                        "input past_sequence_length: expected one int64 (shape [] or [1]), got shape {:?}",
                        t.dims
                    )));
                }
                // SAFETY: one int64, checked above; ORT aligns tensor buffers.
                let x = unsafe { t.data.cast::<i64>().read_unaligned() };
                usize::try_from(x).map_err(|_| {
                    invalid(format!("input past_sequence_length: must be >= 0, got {x}"))
                })?
            }
        };
        let total = p
            .checked_add(s)
            .ok_or_else(|| invalid("sequence length overflows"))?;
        let (start, done, now) = (g.block_start(p), p / b.max(1), total / b.max(1));
        let (done, now) = if block { (done, now) } else { (0, 0) };

        // Past state: [B, heads, capacity, width] each, capacity ≥ what is valid.
        let past = |i: usize,
                    h: usize,
                    width: usize,
                    need: usize|
         -> Result<Option<(usize, *mut u8)>, Fail> {
            let Some(t) = self.input(ctx, count, i)? else {
                if need > 0 {
                    return Err(invalid(format!(
                        "input {} is missing, but past_sequence_length = {p} needs it",
                        INPUT_NAMES[i]
                    )));
                }
                return Ok(None);
            };
            let name = INPUT_NAMES[i];
            match t.dims.as_slice() {
                &[b0, h0, cap, w] if b0 == batch && h0 == h && w == width && cap >= need => {
                    Ok(Some((cap, t.data)))
                }
                other => Err(invalid(format!(
                    "input {name}: expected [B={batch}, {h}, capacity >= {need}, {width}], got {other:?}"
                ))),
            }
        };
        let pk = past(PAST_KEY, kv_heads, dk, p)?;
        let pv = past(PAST_VALUE, heads, dv, p)?;
        let (pbk, pbv) = if block {
            (
                past(PAST_BLOCK_KEY, kv_heads, dk, done)?,
                past(PAST_BLOCK_VALUE, heads, dv, done)?,
            )
        } else {
            (None, None)
        };
        // The current block's coarse terms are needed when p is inside a block.
        let mid_block = block && p > start;
        let pc = if block {
            match self.input(ctx, count, PAST_COARSE)? {
                None if mid_block => {
                    return Err(invalid(format!(
                        "input past_coarse is missing, but past_sequence_length = {p} is inside block {done}"
                    )));
                }
                None => None,
                Some(t) => match t.dims.as_slice() {
                    &[b0, h0, w] if b0 == batch && h0 == heads && w == dv + COARSE_HEAD => {
                        Some(t.data)
                    }
                    other => {
                        return Err(invalid(format!(
                            "input past_coarse: expected [B={batch}, H={heads}, dv+3={}], got {other:?}",
                            dv + COARSE_HEAD
                        )));
                    }
                },
            }
        } else {
            None
        };

        // Outputs. A shared buffer keeps its capacity; otherwise present holds exactly
        // what is valid (capacity = max(past capacity, total)).
        let cap = pk.map_or(0, |x| x.0).max(pv.map_or(0, |x| x.0)).max(total);
        let mcap = pbk.map_or(0, |x| x.0).max(pbv.map_or(0, |x| x.0)).max(now);
        let y = self
            .output(ctx, out_count, 0, &[batch, heads, s, dv])?
            .ok_or_else(|| invalid("output 'output' was not given a buffer"))?;
        let need_out = |i: usize, dims: &[usize]| -> Result<*mut u8, Fail> {
            self.output(ctx, out_count, i, dims)?.ok_or_else(|| {
                invalid(format!(
                    "output {} is required for structure '{}' (it carries the state to the next call)",
                    OUTPUT_NAMES[i],
                    self.cfg.structure.name()
                ))
            })
        };
        let ok = need_out(1, &[batch, kv_heads, cap, dk])?;
        let ov = need_out(2, &[batch, heads, cap, dv])?;
        let (obk, obv, oc) = if block {
            (
                need_out(3, &[batch, kv_heads, mcap, dk])?,
                need_out(4, &[batch, heads, mcap, dv])?,
                need_out(5, &[batch, heads, dv + COARSE_HEAD])?,
            )
        } else {
            for (i, d) in [(3, [batch, kv_heads, 0, dk]), (4, [batch, heads, 0, dv])] {
                self.output(ctx, out_count, i, &d)?;
            }
            self.output(ctx, out_count, 5, &[batch, heads, 0])?;
            (ptr::null_mut(), ptr::null_mut(), ptr::null_mut())
        };

        // Views. Inputs that alias their present output are read through the output.
        // SAFETY: float output 1 of this call, allocated with these dims, viewed once;
        // past_key is read through it when aliased (`copy_past`).
        let pk_out = unsafe { view(ok, batch * kv_heads * cap * dk, "present_key")? };
        // SAFETY: float output 2, likewise (with past_value).
        let pv_out = unsafe { view(ov, batch * heads * cap * dv, "present_value")? };
        copy_past(pk, pk_out, batch * kv_heads, cap, p * dk, dk)?;
        copy_past(pv, pv_out, batch * heads, cap, p * dv, dv)?;
        let (mut bk_out, mut bv_out, mut c_out): (&mut [f32], &mut [f32], &mut [f32]) =
            (&mut [], &mut [], &mut []);
        if block {
            // SAFETY: float outputs 3, 4 and 5 of this call, allocated with these dims
            // when `block`, each viewed once; an aliased past input is read only through
            // its view (`copy_past`, the past_coarse check below).
            bk_out = unsafe { view(obk, batch * kv_heads * mcap * dk, "present_block_key")? };
            // SAFETY: as for `bk_out`.
            bv_out = unsafe { view(obv, batch * heads * mcap * dv, "present_block_value")? };
            // SAFETY: as for `bk_out`.
            c_out = unsafe { view(oc, batch * heads * (dv + COARSE_HEAD), "present_coarse")? };
            copy_past(pbk, bk_out, batch * kv_heads, mcap, done * dk, dk)?;
            copy_past(pbv, bv_out, batch * heads, mcap, done * dv, dv)?;
            if let Some(pc) = pc {
                let w = batch * heads * (dv + COARSE_HEAD);
                let src = f32_parts(pc, w, "past_coarse")?;
                if src != c_out.as_mut_ptr() {
                    // SAFETY: `w` f32 of input past_coarse, a different buffer.
                    c_out.copy_from_slice(unsafe { std::slice::from_raw_parts(src, w) });
                }
            }
        }

        // States over the present buffers.
        let mut kvs = Vec::new();
        kvs.try_reserve_exact(batch * kv_heads)
            .map_err(|_| from_error(oom()))?;
        let mut bk_rest = &mut *bk_out;
        for slab in pk_out.chunks_mut(cap * dk).take(batch * kv_heads) {
            let (sums, rest) = std::mem::take(&mut bk_rest).split_at_mut(mcap * dk);
            bk_rest = rest;
            kvs.push(KvState::over(
                Span {
                    buf: sums,
                    len: done * dk,
                },
                Span {
                    buf: &mut slab[start * dk..],
                    len: (p - start) * dk,
                },
            ));
        }
        let mut hs = Vec::new();
        hs.try_reserve_exact(batch * heads)
            .map_err(|_| from_error(oom()))?;
        let mut bv_rest = &mut *bv_out;
        let width = dv + COARSE_HEAD;
        for (i, slab) in pv_out.chunks_mut(cap * dv).take(batch * heads).enumerate() {
            let (sums, rest) = std::mem::take(&mut bv_rest).split_at_mut(mcap * dv);
            bv_rest = rest;
            let mut coarse = Coarse {
                sigma: f32::NEG_INFINITY,
                gsum: 0.0,
                hsum: Vec::new(),
            };
            crate::cpu::grow(&mut coarse.hsum, dv, "the coarse terms").map_err(from_error)?;
            if mid_block {
                let row = &c_out[i * width..(i + 1) * width];
                if row[0] != done as f32 {
                    return Err(invalid(format!(
                        "input past_coarse: row {i} belongs to block {}, but past_sequence_length \
                         = {p} is inside block {done}; pass the state of the same step",
                        row[0]
                    )));
                }
                coarse.sigma = row[1];
                coarse.gsum = row[2];
                coarse.hsum.copy_from_slice(&row[COARSE_HEAD..]);
            }
            hs.push(HeadState::over(
                Span {
                    buf: sums,
                    len: done * dv,
                },
                Span {
                    buf: &mut slab[start * dv..],
                    len: (p - start) * dv,
                },
                coarse,
            ));
        }
        let mut bufs = Vec::new();
        bufs.try_reserve_exact(batch * heads)
            .map_err(|_| from_error(oom()))?;
        bufs.resize_with(batch * heads, Vec::new);

        // Compute in f32.
        let view_in = |i: usize, len: usize| -> &[T] {
            // SAFETY: input tensor of `len` elements of T (type checked), read only.
            unsafe { std::slice::from_raw_parts(qkv[i].1.cast::<T>(), len) }
        };
        let qf = widen("query", view_in(0, batch * heads * s * dk)).map_err(from_error)?;
        let kf = widen("key", view_in(1, batch * kv_heads * s * dk)).map_err(from_error)?;
        let vf = widen("value", view_in(2, batch * kv_heads * s * dv)).map_err(from_error)?;
        let mut yf = Vec::new();
        crate::cpu::grow(&mut yf, batch * heads * s * dv, "the f32 output").map_err(from_error)?;
        let states = States {
            kv: &mut kvs,
            hs: &mut hs,
            bufs: &mut bufs,
        };
        let run = |par| {
            run_heads(
                states,
                [&qf, &kf, &vf],
                &mut yf,
                &g,
                p,
                heads,
                kv_heads,
                par,
            )
        };
        // A step of a few heads is microseconds: hopping to the pool would cost more.
        let pool = parallel_pays(batch * heads, s, p, &g)
            .then(super::pool::current)
            .flatten();
        match pool {
            Some(pool) => pool.install(|| run(Par::rayon(pool.current_num_threads()))),
            None => run(Par::Seq),
        }
        .map_err(from_error)?;
        if yf.iter().any(|v| v.abs() > T::MAX) {
            return Err(from_error(Error::Overflow(format!(
                "a row of the output exceeds the range of {}; scale V down or lower gamma",
                T::NAME
            ))));
        }
        if block {
            for (i, h) in hs.iter().enumerate() {
                let row = &mut c_out[i * width..(i + 1) * width];
                row[0] = now as f32;
                // −∞ (no finished block yet) is stored as the lowest finite value.
                row[1] = h.coarse.sigma.max(f32::MIN);
                row[2] = h.coarse.gsum;
                row[COARSE_HEAD..].copy_from_slice(&h.coarse.hsum);
            }
        }
        let ylen = batch * heads * s * dv;
        let yp = kernel::slice_parts::<T>(y, [batch, heads, s, dv], "output")?.0;
        // SAFETY: output buffer of `ylen` elements of T allocated for this call.
        T::narrow(&yf, unsafe {
            std::slice::from_raw_parts_mut(yp.cast_mut(), ylen)
        });
        Ok(())
    }
}

/// An output buffer as f32.
///
/// # Safety
/// `ptr` must be an output tensor of `len` f32 owned by ORT for this Compute call,
/// viewed once; an input aliasing it is only read through this view.
unsafe fn view<'a>(ptr: *mut u8, len: usize, name: &str) -> Result<&'a mut [f32], Fail> {
    let p = f32_parts(ptr, len, name)?;
    // SAFETY: per the contract above.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn oom() -> Error {
    Error::OutOfMemory {
        what: "the per-head decoding state",
        bytes: 0,
    }
}

/// Copy the valid rows (`valid` values per head) of a past input into its present
/// output, unless ORT gave both the same buffer (a shared cache: nothing to copy).
fn copy_past(
    past: Option<(usize, *mut u8)>,
    out: &mut [f32],
    heads: usize,
    cap_out: usize,
    valid: usize,
    width: usize,
) -> Result<(), Fail> {
    let Some((cap, data)) = past else {
        return Ok(());
    };
    let len = heads * cap * width;
    let src = f32_parts(data, len, "past state")?;
    if ptr::eq(src, out.as_ptr()) {
        return Ok(());
    }
    // SAFETY: `len` f32 of an input tensor, distinct from `out` (checked above; ORT
    // never hands overlapping distinct tensors).
    let src = unsafe { std::slice::from_raw_parts(src, len) };
    for h in 0..heads {
        out[h * cap_out * width..][..valid].copy_from_slice(&src[h * cap * width..][..valid]);
    }
    Ok(())
}
