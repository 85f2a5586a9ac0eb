//! The ONNX Runtime custom operator `blockres.ResolventAttention` (SPEC §5).
//!
//! The cdylib exports one symbol, `RegisterCustomOps(OrtSessionOptions*, const
//! OrtApiBase*)`, which every ONNX Runtime host finds by name when it loads a custom-op
//! library (`SessionOptions.register_custom_ops_library` in Python,
//! `RegisterCustomOpsLibrary_V2` in C, `SessionBuilder::with_operator_library` in Rust
//! `ort`). The library does not link libonnxruntime: it only calls through the API
//! table the host passes in, so one build serves every ORT ≥ 1.18.
//!
//! The op is registered once per element type (float, float16, bfloat16) and provider;
//! ORT merges them into one schema and picks the kernel from the node's provider and
//! input type. Built with the `cuda` feature, the library also registers the three for
//! ORT's CUDA execution provider (`cuda.rs`): device tensors in and out, the kernels
//! on ORT's compute stream.
//!
//! Built with the `cuda` feature, Compute may run on the GPU instead, copying ORT's
//! host tensors in and out (node attribute `device`, variable `BLOCKRES_DEVICE`; the
//! rule is in `device.rs`), so that a CPU-only ORT still gets the GPU path.

mod api;
mod attrs;
mod cache;
#[cfg(feature = "cuda")]
mod cuda;
mod device;
mod kernel;
mod pool;

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Mutex;

use half::{bf16, f16};
use ort_sys::{OrtApiBase, OrtCustomOpDomain, OrtErrorCode, OrtSessionOptions, OrtStatus};

use api::{Api, Fail};
use kernel::{OnnxElement, Op, Provider};

/// The C API version requested from the host (ORT 1.18). Spelled out rather than taken
/// from `ort_sys::ORT_API_VERSION`, which cargo feature unification can raise: asking a
/// host for a newer table than we use would refuse older runtimes for no reason.
pub(crate) const API_VERSION: u32 = 18;

/// The custom-op domain name.
const DOMAIN: &CStr = c"blockres";

/// One domain per host runtime (keyed by the address of its API table), created on the
/// first registration and leaked on purpose: ORT keeps raw pointers to the domain and
/// its ops in every session created with it, and sessions may outlive any handle we
/// could hold. Reusing it keeps repeated registrations from leaking more.
static DOMAINS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn leak_op<T: OnnxElement>(api: Api, provider: Provider) -> *const ort_sys::OrtCustomOp {
    let op: &'static Op<T> = Box::leak(Box::new(Op::<T>::new(api, provider)));
    op.as_ort()
}

fn leak_cache_op<T: OnnxElement>(api: Api) -> *const ort_sys::OrtCustomOp {
    let op: &'static cache::CacheOp<T> = Box::leak(Box::new(cache::CacheOp::<T>::new(api)));
    op.as_ort()
}

/// The domain for this host, creating and filling it on first use.
fn domain_for(api: Api) -> Result<*mut OrtCustomOpDomain, Fail> {
    let key = ptr::from_ref(api.0) as usize;
    let mut cache = DOMAINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, d)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(d as *mut OrtCustomOpDomain);
    }
    let mut domain: *mut OrtCustomOpDomain = ptr::null_mut();
    // SAFETY: `DOMAIN` is NUL-terminated; `domain` receives a new object we keep.
    unsafe { api.check((api.0.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain))? };
    let mut ops = vec![
        leak_op::<f32>(api, Provider::Cpu),
        leak_op::<f16>(api, Provider::Cpu),
        leak_op::<bf16>(api, Provider::Cpu),
    ];
    ops.extend([
        leak_cache_op::<f32>(api),
        leak_cache_op::<f16>(api),
        leak_cache_op::<bf16>(api),
    ]);
    // A session without the CUDA execution provider never picks these.
    #[cfg(feature = "cuda")]
    ops.extend([
        leak_op::<f32>(api, Provider::Cuda),
        leak_op::<f16>(api, Provider::Cuda),
        leak_op::<bf16>(api, Provider::Cuda),
    ]);
    for op in ops {
        // SAFETY: the ops are leaked, so they outlive the domain.
        unsafe { api.check((api.0.CustomOpDomain_Add)(domain, op))? };
    }
    cache.push((key, domain as usize));
    Ok(domain)
}

/// The entry point ONNX Runtime looks up in a custom-op library: adds the `blockres`
/// domain with `ResolventAttention` to `options`. Returns null on success, an error
/// status otherwise (also when the host's C API is older than version 18).
///
/// # Safety
/// Called by ONNX Runtime with valid session options and its own `OrtApiBase`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RegisterCustomOps(
    options: *mut OrtSessionOptions,
    api_base: *const OrtApiBase,
) -> *mut OrtStatus {
    if api_base.is_null() {
        // Without an API table there is no way to build an error status.
        return ptr::null_mut();
    }
    // SAFETY: the host's API base is valid for the life of the process.
    let base = unsafe { &*api_base };
    // SAFETY: GetApi returns null for versions the host does not have.
    let table = unsafe { (base.GetApi)(API_VERSION) };
    if table.is_null() {
        return too_old(base);
    }
    // SAFETY: API tables are static in the host.
    let api = Api(unsafe { &*table });
    let r = catch_unwind(AssertUnwindSafe(|| {
        if options.is_null() {
            return Err(Fail::invalid(
                "blockres: RegisterCustomOps was called without session options",
            ));
        }
        let domain = domain_for(api)?;
        // SAFETY: both pointers are valid; the domain outlives the options.
        unsafe { api.check((api.0.AddCustomOpDomain)(options, domain)) }
    }))
    .unwrap_or_else(|_| {
        Err(Fail::Msg(
            OrtErrorCode::ORT_RUNTIME_EXCEPTION,
            "blockres: internal error (panic) while registering the custom op".into(),
        ))
    });
    api.status_of(r).0
}

/// The error for a host older than API version 18, built with the version-1 table
/// (which every ORT provides, and whose `CreateStatus` is at the same place).
fn too_old(base: &OrtApiBase) -> *mut OrtStatus {
    // SAFETY: version 1 always exists; the version string is static in the host.
    unsafe {
        let v1 = (base.GetApi)(1);
        if v1.is_null() {
            return ptr::null_mut();
        }
        let vs: *const c_char = (base.GetVersionString)();
        let version = if vs.is_null() {
            "unknown".into()
        } else {
            CStr::from_ptr(vs).to_string_lossy()
        };
        let msg = format!(
            "blockres: this library needs ONNX Runtime 1.18 or newer (C API version {API_VERSION}); the host is ONNX Runtime {version}"
        );
        let c = std::ffi::CString::new(msg).unwrap_or_default();
        // Read only the one field: the host's table is smaller than our version-18 struct.
        let create = (*v1).CreateStatus;
        create(OrtErrorCode::ORT_FAIL, c.as_ptr()).0
    }
}
