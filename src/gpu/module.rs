//! Loading the kernels: the PTX embedded at build time (NVRTC 13.0, see build.rs),
//! or the embedded sources compiled with the system NVRTC when the build had no
//! compiler (see `nvrtc.rs`: loaded by absolute path, version-checked).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::dev_err;
use crate::error::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));
}

/// How the embedded PTX was made at build time ("NVRTC 13.0 (cuda/compile_ptx.py)",
/// "nvcc 13.0", or "none (run-time NVRTC)").
///
/// ```
/// # #[cfg(feature = "cuda")]
/// assert!(!blockres::gpu::ptx_tool().is_empty());
/// ```
pub fn ptx_tool() -> &'static str {
    env!("BLOCKRES_PTX_TOOL")
}

#[derive(Clone)]
pub(crate) struct Kernels {
    pub means: [CudaFunction; 3],
    pub coarse: CudaFunction,
    pub local: [CudaFunction; 3],
    /// `local_tc_{f16,bf16}_{W}_{D}`: [type − 1][variant], variants (W, D) in the order
    /// of [`LOCAL_TC_VARIANTS`].
    pub local_tc: [[CudaFunction; 4]; 2],
    pub reduced: CudaFunction,
    pub reduced_inverses: CudaFunction,
    pub combine: [CudaFunction; 3],
    pub local_bidir: [CudaFunction; 3],
    pub reduced_bidir: [CudaFunction; 3],
    /// Incremental decoding (cuda/decode.cu, [`super::GpuDecoder`]), by element type.
    pub decode_keys: [CudaFunction; 3],
    pub decode_step: [CudaFunction; 3],
    pub decode_prefill: [CudaFunction; 3],
}

/// The source of one unit with the shared header inlined (as cuda/compile_ptx.py does).
fn expand(src: &str) -> String {
    let (hname, htext) = embedded::HEADER;
    let inc = format!("#include \"{hname}\"");
    src.lines()
        .map(|l| {
            if l.trim() == inc {
                htext.replace("#pragma once", "")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn module(ctx: &Arc<CudaContext>, name: &str) -> Result<Arc<CudaModule>> {
    let (cc_major, cc_minor) = ctx
        .compute_capability()
        .map_err(|e| dev_err("reading the compute capability", e))?;
    let &(_, src, ptx) = embedded::UNITS
        .iter()
        .find(|u| u.0 == name)
        .ok_or_else(|| Error::Device(format!("kernel unit {name}.cu missing from the build")))?;
    if cc_major < 8 {
        return Err(Error::Unsupported(format!(
            "GPU compute capability {cc_major}.{cc_minor}: the kernels need 8.0 or newer (tensor-core mma)"
        )));
    }
    let ptx = match ptx {
        Some(p) if cc_major >= 9 => Ptx::from_src(p),
        _ => {
            // No PTX for this device from the build: compile the sources here.
            let arch = format!("compute_{cc_major}{cc_minor}");
            Ptx::from_src(super::nvrtc::compile(name, &expand(src), &arch)?)
        }
    };
    ctx.load_module(ptx).map_err(|e| {
        Error::Device(format!(
            "loading {name} PTX ({}): {e:?}; PTX newer than the driver is rejected, build with CUDA 13.0",
            super::ptx_tool()
        ))
    })
}

fn func(m: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
    m.load_function(name)
        .map_err(|e| dev_err(&format!("kernel {name}"), e))
}

fn typed(m: &Arc<CudaModule>, base: &str) -> Result<[CudaFunction; 3]> {
    Ok([
        func(m, &format!("{base}_f32"))?,
        func(m, &format!("{base}_f16"))?,
        func(m, &format!("{base}_bf16"))?,
    ])
}

/// (warps at most, bound of dk and dv) of the `local_tc` entry points.
pub(crate) const LOCAL_TC_VARIANTS: [(usize, usize); 4] = [(4, 64), (8, 64), (4, 128), (8, 128)];

fn local_tc(m: &Arc<CudaModule>, suffix: &str) -> Result<[CudaFunction; 4]> {
    let f = |(w, d): (usize, usize)| func(m, &format!("local_tc_{suffix}_{w}_{d}"));
    let [a, b, c, d] = LOCAL_TC_VARIANTS;
    Ok([f(a)?, f(b)?, f(c)?, f(d)?])
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let means = module(ctx, "means")?;
        let coarse = module(ctx, "coarse")?;
        let local = module(ctx, "local")?;
        let local_tc_m = module(ctx, "local_tc")?;
        let reduced = module(ctx, "reduced")?;
        let combine = module(ctx, "combine")?;
        let bidir = module(ctx, "bidir")?;
        let decode = module(ctx, "decode")?;
        Ok(Self {
            means: typed(&means, "block_means")?,
            coarse: func(&coarse, "coarse")?,
            local: typed(&local, "local_causal")?,
            local_tc: [
                local_tc(&local_tc_m, "f16")?,
                local_tc(&local_tc_m, "bf16")?,
            ],
            reduced: func(&reduced, "reduced_causal")?,
            reduced_inverses: func(&reduced, "reduced_inverses")?,
            combine: typed(&combine, "combine")?,
            local_bidir: typed(&bidir, "local_bidir")?,
            reduced_bidir: [
                func(&bidir, "reduced_bidir_build")?,
                func(&bidir, "reduced_bidir_solve")?,
                func(&bidir, "reduced_bidir_apply")?,
            ],
            decode_keys: typed(&decode, "decode_keys")?,
            decode_step: typed(&decode, "decode_step")?,
            decode_prefill: typed(&decode, "decode_prefill")?,
        })
    }

    /// Let `f` use `bytes` of dynamic shared memory (above the 48 KiB default).
    pub fn allow_smem(&self, f: &CudaFunction, bytes: usize) -> Result<()> {
        f.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(|e| dev_err(&format!("allowing {bytes} bytes of shared memory"), e))
    }
}
