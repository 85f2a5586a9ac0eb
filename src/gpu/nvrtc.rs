//! Run-time compilation of the embedded kernel sources when the build embedded no PTX.
//!
//! NVRTC is loaded here, by absolute path when `BLOCKRES_NVRTC` names the library
//! (`…/libnvrtc.so.13`; `libnvrtc-builtins.so.13.0` beside it is loaded first), else by
//! its versioned name `libnvrtc.so.13`, never the unversioned `libnvrtc.so` (which may
//! be another release). Its version must not be newer than the driver's CUDA version:
//! PTX from a newer NVRTC is rejected by the driver (CUDA_ERROR_UNSUPPORTED_PTX_VERSION),
//! so that is reported before anything is compiled.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;

use crate::error::{Error, Result};

#[link(name = "dl")]
unsafe extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;
const RTLD_GLOBAL: c_int = 0x100;

type Prog = *mut c_void;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type CreateFn = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type TextFn = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Prog) -> c_int;

struct Api {
    version: VersionFn,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: TextFn,
    ptx_size: SizeFn,
    ptx: TextFn,
    destroy: DestroyFn,
}

fn open(path: &str) -> std::result::Result<*mut c_void, String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: `c` is NUL-terminated and outlives the call; the library is NVRTC (or the
    // one BLOCKRES_NVRTC names), whose initialisers run as a linked library's would.
    let h = unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: no arguments; reads this thread's error state.
        let e = unsafe { dlerror() };
        let msg = if e.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: a non-null dlerror result is a NUL-terminated string that stays
            // valid until the next dl* call on this thread; it is copied at once.
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        };
        Err(msg)
    } else {
        Ok(h)
    }
}

fn load() -> Result<(Api, String)> {
    let (handle, name) = match std::env::var_os("BLOCKRES_NVRTC") {
        Some(p) => {
            let p = PathBuf::from(p);
            if let Some(dir) = p.parent() {
                // Best effort: the builtins library NVRTC itself would look for.
                let _ = open(&dir.join("libnvrtc-builtins.so.13.0").to_string_lossy());
            }
            let s = p.to_string_lossy().into_owned();
            (
                open(&s).map_err(|e| Error::Unsupported(format!("BLOCKRES_NVRTC={s}: {e}")))?,
                s,
            )
        }
        None => {
            let s = "libnvrtc.so.13".to_string();
            (open(&s).map_err(|e| {
                Error::Unsupported(format!(
                    "no GPU kernels: this build embeds no PTX and NVRTC ({s}) could not be loaded ({e}); \
                     set BLOCKRES_NVRTC to the library's path or build with CUDA 13.0 NVRTC present"
                ))
            })?, s)
        }
    };
    let sym = |n: &str| -> Result<*mut c_void> {
        let c = CString::new(n)
            .map_err(|_| Error::Device(format!("symbol name {n:?} holds a NUL byte")))?;
        // SAFETY: `handle` is a live dlopen handle (never closed), `c` NUL-terminated.
        let p = unsafe { dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            Err(Error::Device(format!("{name} lacks {n}")))
        } else {
            Ok(p)
        }
    };
    // SAFETY: the symbols are NVRTC's C API with these signatures (nvrtc.h).
    let api = unsafe {
        Api {
            version: std::mem::transmute::<*mut c_void, VersionFn>(sym("nvrtcVersion")?),
            create: std::mem::transmute::<*mut c_void, CreateFn>(sym("nvrtcCreateProgram")?),
            compile: std::mem::transmute::<*mut c_void, CompileFn>(sym("nvrtcCompileProgram")?),
            log_size: std::mem::transmute::<*mut c_void, SizeFn>(sym("nvrtcGetProgramLogSize")?),
            log: std::mem::transmute::<*mut c_void, TextFn>(sym("nvrtcGetProgramLog")?),
            ptx_size: std::mem::transmute::<*mut c_void, SizeFn>(sym("nvrtcGetPTXSize")?),
            ptx: std::mem::transmute::<*mut c_void, TextFn>(sym("nvrtcGetPTX")?),
            destroy: std::mem::transmute::<*mut c_void, DestroyFn>(sym("nvrtcDestroyProgram")?),
        }
    };
    Ok((api, name))
}

/// The CUDA version the driver supports, as (major, minor).
fn driver_version() -> Result<(i32, i32)> {
    let mut v: c_int = 0;
    // SAFETY: writes one int to `v`; needs no context.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Device(format!("cuDriverGetVersion: {r:?}")));
    }
    Ok((v / 1000, (v % 1000) / 10))
}

/// Compile `src` (one unit, header already inlined) to PTX for `arch`
/// (`compute_90`, ...).
pub(crate) fn compile(name: &str, src: &str, arch: &str) -> Result<String> {
    let (api, lib) = load()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion(int*, int*) writes the two ints; they start at 0 should it
    // fail.
    unsafe { (api.version)(&mut major, &mut minor) };
    let (dmaj, dmin) = driver_version()?;
    if (major, minor) > (dmaj, dmin) {
        return Err(Error::Unsupported(format!(
            "NVRTC {major}.{minor} ({lib}) is newer than the driver's CUDA {dmaj}.{dmin}: its PTX would be \
             rejected; point BLOCKRES_NVRTC at a CUDA {dmaj}.{dmin} (or older) libnvrtc.so"
        )));
    }
    let csrc =
        CString::new(src).map_err(|_| Error::Device("kernel source holds a NUL byte".into()))?;
    let cname = CString::new(format!("{name}.cu"))
        .map_err(|_| Error::Device("kernel name holds a NUL byte".into()))?;
    let mut prog: Prog = std::ptr::null_mut();
    // SAFETY: `csrc` and `cname` are NUL-terminated and outlive the call (NVRTC copies
    // them); no headers, so both header arrays may be null.
    let r = unsafe {
        (api.create)(
            &mut prog,
            csrc.as_ptr(),
            cname.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error::Device(format!(
            "nvrtcCreateProgram({name}.cu) failed: {r}"
        )));
    }
    let opts: Vec<CString> = [format!("--gpu-architecture={arch}"), "--std=c++17".into()]
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Device("NVRTC option holds a NUL byte".into()))?;
    let optp: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `prog` was created above; `optp` holds `optp.len()` NUL-terminated
    // strings owned by `opts`, which outlives the call.
    let r = unsafe { (api.compile)(prog, optp.len() as c_int, optp.as_ptr()) };
    let result = if r != 0 {
        let mut n = 0usize;
        // SAFETY: `prog` is live and `n` a valid slot (NVRTC's only failure cases), so
        // n becomes the log's size including its NUL.
        unsafe { (api.log_size)(prog, &mut n) };
        let mut buf = vec![0u8; n.max(1)];
        // SAFETY: `buf` holds the n bytes NVRTC just said the log takes.
        unsafe { (api.log)(prog, buf.as_mut_ptr().cast()) };
        Err(Error::Device(format!(
            "NVRTC {major}.{minor} could not compile {name}.cu: {}",
            String::from_utf8_lossy(&buf).trim_end_matches('\0')
        )))
    } else {
        let mut n = 0usize;
        // SAFETY: `prog` is live and compiled, so n is the PTX's size including its NUL.
        unsafe { (api.ptx_size)(prog, &mut n) };
        let mut buf = vec![0u8; n.max(1)];
        // SAFETY: `buf` holds the n bytes NVRTC just said the PTX takes.
        unsafe { (api.ptx)(prog, buf.as_mut_ptr().cast()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    };
    // SAFETY: `prog` was created above and is destroyed once, after its last use.
    unsafe { (api.destroy)(&mut prog) };
    result
}
