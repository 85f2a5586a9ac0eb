//! A thin, checked layer over the ONNX Runtime C API table the host passes in.
//!
//! Every call that can fail goes through [`Api::check`], which turns a non-null
//! `OrtStatus` into [`Fail::Status`] so it can be handed back to ORT unchanged; our own
//! errors become [`Fail::Msg`] and are turned into a status only at the FFI boundary.

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtErrorCode, OrtKernelContext, OrtKernelInfo, OrtStatus,
    OrtStatusPtr, OrtTensorTypeAndShapeInfo, OrtValue,
};

/// Why a callback failed.
pub(crate) enum Fail {
    /// A status ORT gave us; ownership passes back to ORT with it.
    Status(*mut OrtStatus),
    /// Our own message, with the ORT error code to report it under.
    Msg(OrtErrorCode, String),
}

impl Fail {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Fail::Msg(OrtErrorCode::ORT_INVALID_ARGUMENT, message.into())
    }
}

impl Fail {
    /// A crate error as reported by the op `op`, under the ORT code that fits it.
    pub(crate) fn of(op: &str, e: crate::Error) -> Self {
        let code = match e {
            crate::Error::Unsupported(_) => OrtErrorCode::ORT_NOT_IMPLEMENTED,
            crate::Error::Device(_) | crate::Error::OutOfMemory { .. } => OrtErrorCode::ORT_FAIL,
            _ => OrtErrorCode::ORT_INVALID_ARGUMENT,
        };
        Fail::Msg(code, format!("{op}: {e}"))
    }
}

impl From<crate::Error> for Fail {
    fn from(e: crate::Error) -> Self {
        Fail::of("blockres.ResolventAttention", e)
    }
}

/// The host's API table. ORT keeps it in static storage for the life of the process.
#[derive(Clone, Copy)]
pub(crate) struct Api(pub(crate) &'static OrtApi);

/// The numeric code of an ONNX element type. Read as a plain integer because a newer
/// runtime may report a code the Rust enum does not list.
pub(crate) fn type_code(t: ONNXTensorElementDataType) -> i32 {
    t as i32
}

/// ONNX's name for an element type code, for messages.
pub(crate) fn type_name(code: i32) -> String {
    match code {
        1 => "float".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        4 => "uint16".into(),
        5 => "int16".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        8 => "string".into(),
        9 => "bool".into(),
        10 => "float16".into(),
        11 => "double".into(),
        16 => "bfloat16".into(),
        other => format!("element type {other}"),
    }
}

/// Element type and dimensions of one tensor (dimensions may be -1 when unknown at
/// graph time).
pub(crate) struct TypeShape {
    pub(crate) elem: i32,
    pub(crate) dims: Vec<i64>,
    /// Symbolic names of the dimensions (empty string when none); only filled by
    /// [`Api::describe_symbolic`].
    pub(crate) symbols: Vec<String>,
}

impl Api {
    /// `Ok` for a null status, the status itself otherwise.
    pub(crate) fn check(&self, s: OrtStatusPtr) -> Result<(), Fail> {
        if s.0.is_null() {
            Ok(())
        } else {
            Err(Fail::Status(s.0))
        }
    }

    /// Free a status we decided not to report.
    pub(crate) fn release(&self, s: OrtStatusPtr) {
        if !s.0.is_null() {
            // SAFETY: a non-null status from this API, released once.
            unsafe { (self.0.ReleaseStatus)(s.0) }
        }
    }

    /// A new status carrying `message` (interior NULs would truncate it, so they are
    /// replaced).
    pub(crate) fn status(&self, code: OrtErrorCode, message: &str) -> OrtStatusPtr {
        let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: CreateStatus copies the message.
        unsafe { (self.0.CreateStatus)(code, c.as_ptr()) }
    }

    /// Turn a result into what a V2 callback returns.
    pub(crate) fn status_of(&self, r: Result<(), Fail>) -> OrtStatusPtr {
        match r {
            Ok(()) => OrtStatusPtr(ptr::null_mut()),
            Err(Fail::Status(s)) => OrtStatusPtr(s),
            Err(Fail::Msg(code, m)) => self.status(code, &m),
        }
    }

    /// Element type and shape of a type-and-shape info (not released here).
    ///
    /// # Safety
    /// `info` must be a valid `OrtTensorTypeAndShapeInfo`.
    pub(crate) unsafe fn read_info(
        &self,
        info: *const OrtTensorTypeAndShapeInfo,
    ) -> Result<TypeShape, Fail> {
        let mut elem: i32 = 0;
        let mut rank: usize = 0;
        // SAFETY: `elem` is an i32 slot of the enum's size (repr(i32)); we never read it
        // back as the enum.
        unsafe {
            self.check((self.0.GetTensorElementType)(
                info,
                (&mut elem as *mut i32).cast::<ONNXTensorElementDataType>(),
            ))?;
            self.check((self.0.GetDimensionsCount)(info, &mut rank))?;
        }
        let mut dims = vec![0i64; rank];
        // SAFETY: `dims` holds `rank` slots.
        unsafe { self.check((self.0.GetDimensions)(info, dims.as_mut_ptr(), rank))? };
        Ok(TypeShape {
            elem,
            dims,
            symbols: Vec::new(),
        })
    }

    /// [`Api::read_info`] plus the symbolic dimension names.
    ///
    /// # Safety
    /// `info` must be a valid `OrtTensorTypeAndShapeInfo`.
    pub(crate) unsafe fn describe_symbolic(
        &self,
        info: *const OrtTensorTypeAndShapeInfo,
    ) -> Result<TypeShape, Fail> {
        // SAFETY: forwarded.
        let mut ts = unsafe { self.read_info(info)? };
        let mut names: Vec<*const c_char> = vec![ptr::null(); ts.dims.len()];
        // SAFETY: `names` holds one slot per dimension; the strings belong to `info`.
        unsafe {
            self.check((self.0.GetSymbolicDimensions)(
                info,
                names.as_mut_ptr(),
                names.len(),
            ))?;
        }
        ts.symbols = names
            .iter()
            .map(|&p| {
                if p.is_null() {
                    String::new()
                } else {
                    // SAFETY: NUL-terminated strings owned by `info`.
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                }
            })
            .collect();
        Ok(ts)
    }

    /// Element type and shape of a tensor value.
    ///
    /// # Safety
    /// `value` must be a valid tensor `OrtValue`.
    pub(crate) unsafe fn describe_value(&self, value: *const OrtValue) -> Result<TypeShape, Fail> {
        let mut info: *mut OrtTensorTypeAndShapeInfo = ptr::null_mut();
        // SAFETY: `value` is valid; `info` is released below on every path.
        unsafe {
            self.check((self.0.GetTensorTypeAndShape)(value, &mut info))?;
            let r = self.read_info(info);
            (self.0.ReleaseTensorTypeAndShapeInfo)(info);
            r
        }
    }

    /// Input `index` of a kernel context (`None` when the input is absent).
    ///
    /// # Safety
    /// `ctx` must be the context of the running Compute call.
    pub(crate) unsafe fn input(
        &self,
        ctx: *const OrtKernelContext,
        index: usize,
    ) -> Result<Option<*const OrtValue>, Fail> {
        let mut v: *const OrtValue = ptr::null();
        // SAFETY: forwarded.
        unsafe { self.check((self.0.KernelContext_GetInput)(ctx, index, &mut v))? };
        Ok((!v.is_null()).then_some(v))
    }

    /// Number of inputs the node was given.
    ///
    /// # Safety
    /// `ctx` must be the context of the running Compute call.
    pub(crate) unsafe fn input_count(&self, ctx: *const OrtKernelContext) -> Result<usize, Fail> {
        let mut n = 0usize;
        // SAFETY: forwarded.
        unsafe { self.check((self.0.KernelContext_GetInputCount)(ctx, &mut n))? };
        Ok(n)
    }

    /// The data pointer of a tensor value.
    ///
    /// # Safety
    /// `value` must be a valid tensor `OrtValue`; the caller must not write through the
    /// pointer unless the value is an output.
    pub(crate) unsafe fn data(&self, value: *const OrtValue) -> Result<*mut u8, Fail> {
        let mut p: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: forwarded; ORT's API takes a mutable pointer even for reading.
        unsafe { self.check((self.0.GetTensorMutableData)(value.cast_mut(), &mut p))? };
        Ok(p.cast())
    }

    /// Allocate output `index` with `dims`.
    ///
    /// # Safety
    /// `ctx` must be the context of the running Compute call.
    pub(crate) unsafe fn output(
        &self,
        ctx: *mut OrtKernelContext,
        index: usize,
        dims: &[i64],
    ) -> Result<*mut OrtValue, Fail> {
        let mut v: *mut OrtValue = ptr::null_mut();
        // SAFETY: forwarded; `dims` outlives the call.
        unsafe {
            self.check((self.0.KernelContext_GetOutput)(
                ctx,
                index,
                dims.as_ptr(),
                dims.len(),
                &mut v,
            ))?
        };
        if v.is_null() {
            return Err(Fail::Msg(
                OrtErrorCode::ORT_FAIL,
                "blockres.ResolventAttention: ONNX Runtime returned no buffer for output Y".into(),
            ));
        }
        Ok(v)
    }
}

#[cfg(feature = "cuda")]
impl Api {
    /// The CUDA stream ORT runs this node on (null when the provider has none).
    ///
    /// # Safety
    /// `ctx` must be the context of the running Compute call.
    pub(crate) unsafe fn gpu_stream(
        &self,
        ctx: *const OrtKernelContext,
    ) -> Result<*mut std::ffi::c_void, Fail> {
        let mut s: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: forwarded.
        unsafe { self.check((self.0.KernelContext_GetGPUComputeStream)(ctx, &mut s))? };
        Ok(s)
    }

    /// Where a tensor lives: the allocator's name ("Cpu", "Cuda", "CudaPinned", ...)
    /// and the device id.
    ///
    /// # Safety
    /// `value` must be a valid tensor `OrtValue`.
    pub(crate) unsafe fn location(&self, value: *const OrtValue) -> Result<(String, i32), Fail> {
        let mut info: *const ort_sys::OrtMemoryInfo = ptr::null();
        let mut name: *const c_char = ptr::null();
        let mut id: std::ffi::c_int = 0;
        // SAFETY: forwarded; the memory info belongs to the value (not released), its
        // name is a static string of the host.
        unsafe {
            self.check((self.0.GetTensorMemoryInfo)(value, &mut info))?;
            self.check((self.0.MemoryInfoGetName)(info, &mut name))?;
            self.check((self.0.MemoryInfoGetId)(info, &mut id))?;
            let name = if name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            };
            Ok((name, id))
        }
    }
}

/// What an attribute lookup found.
pub(crate) enum Attr<T> {
    /// Not given on the node: use the default.
    Missing,
    /// Given with the expected type.
    Value(T),
    /// Given, but as another type (the name of that type, for the message).
    WrongType(&'static str),
}

/// Reads node attributes at kernel creation, telling "absent" apart from "present with
/// the wrong type" (ORT reports both as a failed lookup).
pub(crate) struct Attrs {
    pub(crate) api: Api,
    pub(crate) info: *const OrtKernelInfo,
}

impl Attrs {
    fn name(name: &str) -> CString {
        CString::new(name).unwrap_or_default()
    }

    fn try_float(&self, name: &CStr) -> Option<f32> {
        let mut x = 0f32;
        // SAFETY: `info` is valid during CreateKernel; `name` is NUL-terminated.
        let s =
            unsafe { (self.api.0.KernelInfoGetAttribute_float)(self.info, name.as_ptr(), &mut x) };
        if s.0.is_null() {
            Some(x)
        } else {
            self.api.release(s);
            None
        }
    }

    fn try_int(&self, name: &CStr) -> Option<i64> {
        let mut x = 0i64;
        // SAFETY: as above.
        let s =
            unsafe { (self.api.0.KernelInfoGetAttribute_int64)(self.info, name.as_ptr(), &mut x) };
        if s.0.is_null() {
            Some(x)
        } else {
            self.api.release(s);
            None
        }
    }

    fn try_string(&self, name: &CStr) -> Result<Option<String>, Fail> {
        let mut size = 0usize;
        // SAFETY: a null buffer asks for the size only.
        let s = unsafe {
            (self.api.0.KernelInfoGetAttribute_string)(
                self.info,
                name.as_ptr(),
                ptr::null_mut(),
                &mut size,
            )
        };
        if !s.0.is_null() {
            self.api.release(s);
            return Ok(None);
        }
        let mut buf = vec![0u8; size.max(1)];
        let mut len = buf.len();
        // SAFETY: `buf` holds `len` bytes.
        unsafe {
            self.api.check((self.api.0.KernelInfoGetAttribute_string)(
                self.info,
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut len,
            ))?
        };
        // The size query gave the value's length plus the terminator (what `len` holds
        // after the copy differs between ORT versions), and ORT copies the whole value.
        // Interior NULs are kept, not cut at (which would read "block\0x" as "block"),
        // so that no allowed value matches and the attribute is rejected.
        let end = size.saturating_sub(1).min(buf.len());
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        Ok(Some(text))
    }

    fn is_list(&self, name: &CStr) -> bool {
        let mut size = 0usize;
        // SAFETY: null buffers ask for the sizes only.
        let f = unsafe {
            (self.api.0.KernelInfoGetAttributeArray_float)(
                self.info,
                name.as_ptr(),
                ptr::null_mut(),
                &mut size,
            )
        };
        if f.0.is_null() {
            return true;
        }
        self.api.release(f);
        // SAFETY: as above.
        let i = unsafe {
            (self.api.0.KernelInfoGetAttributeArray_int64)(
                self.info,
                name.as_ptr(),
                ptr::null_mut(),
                &mut size,
            )
        };
        if i.0.is_null() {
            return true;
        }
        self.api.release(i);
        false
    }

    /// The type an attribute actually has when the expected lookup failed.
    fn other_type(&self, name: &CStr, expected: &str) -> Result<Option<&'static str>, Fail> {
        if expected != "float" && self.try_float(name).is_some() {
            return Ok(Some("a float"));
        }
        if expected != "int" && self.try_int(name).is_some() {
            return Ok(Some("an int"));
        }
        if expected != "string" && self.try_string(name)?.is_some() {
            return Ok(Some("a string"));
        }
        if self.is_list(name) {
            return Ok(Some("a list"));
        }
        Ok(None)
    }

    pub(crate) fn float(&self, name: &str) -> Result<Attr<f32>, Fail> {
        let c = Self::name(name);
        if let Some(x) = self.try_float(&c) {
            return Ok(Attr::Value(x));
        }
        Ok(match self.other_type(&c, "float")? {
            Some(t) => Attr::WrongType(t),
            None => Attr::Missing,
        })
    }

    pub(crate) fn int(&self, name: &str) -> Result<Attr<i64>, Fail> {
        let c = Self::name(name);
        if let Some(x) = self.try_int(&c) {
            return Ok(Attr::Value(x));
        }
        Ok(match self.other_type(&c, "int")? {
            Some(t) => Attr::WrongType(t),
            None => Attr::Missing,
        })
    }

    pub(crate) fn string(&self, name: &str) -> Result<Attr<String>, Fail> {
        let c = Self::name(name);
        if let Some(x) = self.try_string(&c)? {
            return Ok(Attr::Value(x));
        }
        Ok(match self.other_type(&c, "string")? {
            Some(t) => Attr::WrongType(t),
            None => Attr::Missing,
        })
    }
}
