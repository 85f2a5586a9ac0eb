//! Loading the kernels: the SASS for sm_90 embedded at build time (H100/H200: no JIT),
//! else the embedded PTX (NVRTC 13.0, see build.rs), or the embedded sources compiled
//! with the system NVRTC when the build had no compiler (see `nvrtc.rs`: loaded by
//! absolute path, version-checked).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cudarc::driver::sys::{self, CUfunction_attribute_enum};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::dev_err;
use super::params::{
    CoarseParams, CombineParams, DecodeParams, LocalParams, MeansParams, ReducedParams,
};
use crate::error::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));
}

/// How the embedded PTX was made at build time ("NVRTC 13.0 (cuda/compile_ptx.py), SASS
/// for sm_90", "nvcc 13.0", or "none (run-time NVRTC)").
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
    pub local_tc: [[CudaFunction; 5]; 2],
    pub reduced: CudaFunction,
    /// `reduced_causal_small`: m ≤ [`super::plan::REDUCED_SMALL_M`], inverses included.
    pub reduced_small: CudaFunction,
    pub reduced_inverses: CudaFunction,
    pub combine: [CudaFunction; 3],
    /// `local_bidir_b{B}v{D}_{type}`: [type][variant], variants in the order of
    /// [`super::plan::BIDIR_VARIANTS`].
    pub local_bidir: [[CudaFunction; 4]; 3],
    /// `local_bidir_tc_b{B}v{D}_{f16,bf16}`: [type − 1][variant], variants as above.
    pub local_bidir_tc: [[CudaFunction; 4]; 2],
    /// build, step (one per panel), apply.
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
    let &(_, src, ptx, sass) = embedded::UNITS
        .iter()
        .find(|u| u.0 == name)
        .ok_or_else(|| Error::Device(format!("kernel unit {name}.cu missing from the build")))?;
    if cc_major < 8 {
        return Err(Error::Unsupported(format!(
            "GPU compute capability {cc_major}.{cc_minor}: the kernels need 8.0 or newer (tensor-core mma)"
        )));
    }
    if let (Some(bin), (9, 0)) = (sass, (cc_major, cc_minor)) {
        // The build's SASS for this architecture: nothing to compile at load (the PTX of
        // all units costs the driver about 25 s of JIT compilation, uncached). Should the
        // driver refuse it, the PTX below is the fallback.
        if let Ok(m) = ctx.load_module(Ptx::from_binary(bin.to_vec())) {
            return Ok(m);
        }
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

/// One kernel family: the unit (`cuda/<unit>.cu`) that defines it, its entry points,
/// and the size of the parameter struct each of them takes (`params.rs`). The one list
/// of kernel names: loading, and the ABI test below, read it.
pub(crate) struct Family {
    pub unit: &'static str,
    pub entries: &'static [&'static str],
    pub params: usize,
}

/// `NAME_f32`, `NAME_f16`, `NAME_bf16`: a template's entry points, in the order of
/// [`super::GpuElement::INDEX`].
macro_rules! typed {
    ($base:literal) => {
        &[
            concat!($base, "_f32"),
            concat!($base, "_f16"),
            concat!($base, "_bf16"),
        ]
    };
}

const MEANS: Family = Family {
    unit: "means",
    entries: typed!("block_means"),
    params: size_of::<MeansParams>(),
};
const COARSE: Family = Family {
    unit: "coarse",
    entries: &["coarse"],
    params: size_of::<CoarseParams>(),
};
const LOCAL: Family = Family {
    unit: "local",
    entries: typed!("local_causal"),
    params: size_of::<LocalParams>(),
};
/// `local_tc_{f16,bf16}_{W}_{D}`, f16 first, each in the order of [`LOCAL_TC_VARIANTS`].
const LOCAL_TC: Family = Family {
    unit: "local_tc",
    entries: &[
        "local_tc_f16_4_64",
        "local_tc_f16_8_64",
        "local_tc_f16_4_128",
        "local_tc_f16_8_128",
        "local_tc_f16_6_128",
        "local_tc_bf16_4_64",
        "local_tc_bf16_8_64",
        "local_tc_bf16_4_128",
        "local_tc_bf16_8_128",
        "local_tc_bf16_6_128",
    ],
    params: size_of::<LocalParams>(),
};
/// `reduced_inverses`, `reduced_causal`, `reduced_causal_small`.
const REDUCED: Family = Family {
    unit: "reduced",
    entries: &["reduced_inverses", "reduced_causal", "reduced_causal_small"],
    params: size_of::<ReducedParams>(),
};
const COMBINE: Family = Family {
    unit: "combine",
    entries: typed!("combine"),
    params: size_of::<CombineParams>(),
};
/// `local_bidir_b{B}v{D}_{type}`, by type, each in the order of
/// [`super::plan::BIDIR_VARIANTS`].
const LOCAL_BIDIR: Family = Family {
    unit: "bidir",
    entries: &[
        "local_bidir_b64v64_f32",
        "local_bidir_b64v128_f32",
        "local_bidir_b128v64_f32",
        "local_bidir_b128v128_f32",
        "local_bidir_b64v64_f16",
        "local_bidir_b64v128_f16",
        "local_bidir_b128v64_f16",
        "local_bidir_b128v128_f16",
        "local_bidir_b64v64_bf16",
        "local_bidir_b64v128_bf16",
        "local_bidir_b128v64_bf16",
        "local_bidir_b128v128_bf16",
    ],
    params: size_of::<LocalParams>(),
};
/// `local_bidir_tc_b{B}v{D}_{f16,bf16}`, f16 first, each in the order of
/// [`super::plan::BIDIR_VARIANTS`].
const LOCAL_BIDIR_TC: Family = Family {
    unit: "bidir_tc",
    entries: &[
        "local_bidir_tc_b64v64_f16",
        "local_bidir_tc_b64v128_f16",
        "local_bidir_tc_b128v64_f16",
        "local_bidir_tc_b128v128_f16",
        "local_bidir_tc_b64v64_bf16",
        "local_bidir_tc_b64v128_bf16",
        "local_bidir_tc_b128v64_bf16",
        "local_bidir_tc_b128v128_bf16",
    ],
    params: size_of::<LocalParams>(),
};
const REDUCED_BIDIR: Family = Family {
    unit: "bidir",
    entries: &[
        "reduced_bidir_build",
        "reduced_bidir_step",
        "reduced_bidir_apply",
    ],
    params: size_of::<ReducedParams>(),
};
const DECODE_KEYS: Family = Family {
    unit: "decode",
    entries: typed!("decode_keys"),
    params: size_of::<DecodeParams>(),
};
const DECODE_STEP: Family = Family {
    unit: "decode",
    entries: typed!("decode_step"),
    params: size_of::<DecodeParams>(),
};
const DECODE_PREFILL: Family = Family {
    unit: "decode",
    entries: typed!("decode_prefill"),
    params: size_of::<DecodeParams>(),
};

/// Every kernel family the crate launches (the ABI test walks it; loading names each).
#[cfg(test)]
const FAMILIES: [&Family; 12] = [
    &MEANS,
    &COARSE,
    &LOCAL,
    &LOCAL_TC,
    &REDUCED,
    &COMBINE,
    &LOCAL_BIDIR,
    &LOCAL_BIDIR_TC,
    &REDUCED_BIDIR,
    &DECODE_KEYS,
    &DECODE_STEP,
    &DECODE_PREFILL,
];

/// (warps at most, bound of dk and dv) of the `local_tc` entry points.
pub(crate) const LOCAL_TC_VARIANTS: [(usize, usize); 5] =
    [(4, 64), (8, 64), (4, 128), (8, 128), (6, 128)];

/// A family's entry points from its unit's module (loaded once per unit).
fn load<const K: usize>(
    ctx: &Arc<CudaContext>,
    units: &mut Vec<(&'static str, Arc<CudaModule>)>,
    f: &Family,
) -> Result<[CudaFunction; K]> {
    let m = match units.iter().find(|u| u.0 == f.unit) {
        Some((_, m)) => m.clone(),
        None => {
            let m = module(ctx, f.unit)?;
            units.push((f.unit, m.clone()));
            m
        }
    };
    let all = f
        .entries
        .iter()
        .map(|name| {
            let k = func(&m, name)?;
            check_abi(&k, name, f.params)?;
            Ok(k)
        })
        .collect::<Result<Vec<_>>>()?;
    all.try_into()
        .map_err(|_| Error::Device(format!("kernel family of {} has a different size", f.unit)))
}

/// The loaded entry point's first parameter is `size` bytes (its family's struct):
/// the check of the PTX test below (which also sees that there is no second one), on
/// what the driver actually loaded, the run-time NVRTC build included. Drivers before
/// CUDA 12.4 (no `cuFuncGetParamInfo`) are not asked.
fn check_abi(k: &CudaFunction, name: &str, size: usize) -> Result<()> {
    // Cleared on the first panic: the default hook prints every caught panic, and one
    // message is enough for a driver without the symbol.
    static ASK: AtomicBool = AtomicBool::new(true);
    if !ASK.load(Ordering::Relaxed) {
        return Ok(());
    }
    let f = k.cu_function();
    // cudarc panics when the driver library lacks the symbol.
    let asked = std::panic::catch_unwind(|| {
        let (mut off, mut len) = (0usize, 0usize);
        // SAFETY: `f` is a function of a loaded module with at least one parameter
        // (every entry point has its struct); `off` and `len` are locals it writes.
        let r = unsafe { sys::cuFuncGetParamInfo(f, 0, &mut off, &mut len) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(len)
    });
    if asked.is_err() {
        ASK.store(false, Ordering::Relaxed);
    }
    match asked {
        Ok(Some(len)) if len != size => Err(Error::Device(format!(
            "kernel {name} takes a {len}-byte parameter, not the {size}-byte struct this \
             build passes: the PTX and the library disagree"
        ))),
        _ => Ok(()),
    }
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let u = &mut Vec::new();
        let [
            f16_a,
            f16_b,
            f16_c,
            f16_d,
            f16_e,
            bf_a,
            bf_b,
            bf_c,
            bf_d,
            bf_e,
        ] = load(ctx, u, &LOCAL_TC)?;
        let [reduced_inverses, reduced, reduced_small] = load(ctx, u, &REDUCED)?;
        let [coarse] = load(ctx, u, &COARSE)?;
        // The largest shared-memory carveout, so that its CTAs (53 KB at d = 64, 94 KB
        // at d = 128) are not held back by the driver's own choice, which for the
        // previous kernel left a second wave at n = 32768 (ncu, results/v47_*).
        coarse
            .set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                100,
            )
            .map_err(|e| dev_err("preferring shared memory for coarse", e))?;
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11] = load(ctx, u, &LOCAL_BIDIR)?;
        let [t0, t1, t2, t3, t4, t5, t6, t7] = load(ctx, u, &LOCAL_BIDIR_TC)?;
        Ok(Self {
            means: load(ctx, u, &MEANS)?,
            coarse,
            local: load(ctx, u, &LOCAL)?,
            local_tc: [
                [f16_a, f16_b, f16_c, f16_d, f16_e],
                [bf_a, bf_b, bf_c, bf_d, bf_e],
            ],
            reduced,
            reduced_small,
            reduced_inverses,
            combine: load(ctx, u, &COMBINE)?,
            local_bidir: [[b0, b1, b2, b3], [b4, b5, b6, b7], [b8, b9, b10, b11]],
            local_bidir_tc: [[t0, t1, t2, t3], [t4, t5, t6, t7]],
            reduced_bidir: load(ctx, u, &REDUCED_BIDIR)?,
            decode_keys: load(ctx, u, &DECODE_KEYS)?,
            decode_step: load(ctx, u, &DECODE_STEP)?,
            decode_prefill: load(ctx, u, &DECODE_PREFILL)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A build by NVRTC embeds, beside each unit's PTX, its SASS for sm_90 as an ELF
    /// object (what the driver loads on H100/H200 without compiling).
    #[test]
    fn sass_is_embedded_beside_the_ptx() {
        if !ptx_tool().contains("SASS") {
            return; // nvcc or no compiler at build time: PTX or sources only
        }
        for &(name, _, ptx, sass) in embedded::UNITS {
            assert!(ptx.is_some(), "{name}: no PTX");
            let sass = sass.unwrap_or_else(|| panic!("{name}: no SASS"));
            assert_eq!(&sass[..4], b"\x7fELF", "{name}: SASS is not an ELF object");
        }
    }

    /// The ABI check: in the PTX this build embeds, every listed entry point exists and
    /// takes exactly one parameter of its family's struct size, and every entry point
    /// of the PTX is listed (a kernel nobody loads is dead code or a missing launch).
    #[test]
    fn every_entry_point_takes_its_family_struct() {
        let mut listed = 0;
        for f in FAMILIES {
            let &(_, _, ptx, _) = embedded::UNITS
                .iter()
                .find(|u| u.0 == f.unit)
                .unwrap_or_else(|| panic!("unit {} not built", f.unit));
            let ptx = ptx.unwrap_or_else(|| {
                panic!(
                    "no PTX embedded ({}): the ABI cannot be checked",
                    ptx_tool()
                )
            });
            for name in f.entries {
                let head = format!(".visible .entry {name}(");
                let at = ptx
                    .find(&head)
                    .unwrap_or_else(|| panic!("{name} missing from {}.ptx", f.unit));
                let params = &ptx[at..at + ptx[at..].find(')').expect("parameter list")];
                let want = format!(".param .align 8 .b8 {name}_param_0[{}]", f.params);
                assert!(
                    params.contains(&want),
                    "{name}: want `{want}`, PTX has {params}"
                );
                assert!(
                    !params.contains("_param_1"),
                    "{name} takes more than one parameter"
                );
                listed += 1;
            }
        }
        let in_ptx: usize = embedded::UNITS
            .iter()
            .map(|u| u.2.map_or(0, |p| p.matches(".visible .entry ").count()))
            .sum();
        assert_eq!(
            listed, in_ptx,
            "entry points in the PTX that no family lists"
        );
    }
}
