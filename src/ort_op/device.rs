//! Where a Compute call runs: the node's `device` attribute, the `BLOCKRES_DEVICE`
//! environment variable, and the rule `auto` follows. The decision is a pure function
//! of the setting, the call's dimensions and whether a GPU is usable, so it is tested
//! here without one.

use std::sync::OnceLock;

use crate::{Config, Dims, Error, Structure, TensorMut, TensorRef};

/// The environment variable that sets the device of nodes without a `device`
/// attribute.
pub(crate) const ENV: &str = "BLOCKRES_DEVICE";

/// The accepted values, for messages.
pub(crate) const ALLOWED: &str = "one of 'auto', 'cpu', 'gpu'";

/// Smallest B·H·n·max(dk, dv) that `auto` sends to the GPU. Below it the copies to and
/// from the device and the launches cost more than the CPU kernels save (2^20 is
/// e.g. 16 heads × 1024 tokens × 64).
pub(crate) const GPU_MIN_WORK: usize = 1 << 20;

/// Widest dk, dv the GPU kernels take (`gpu::MAX_HEAD_DIM`, which exists only with the
/// feature; checked equal below).
const GPU_MAX_HEAD_DIM: usize = 128;
#[cfg(feature = "cuda")]
const _: () = assert!(GPU_MAX_HEAD_DIM == crate::gpu::MAX_HEAD_DIM);

/// The `device` setting of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Device {
    /// The GPU when it is usable and the call suits it ([`choose`]), else the CPU.
    Auto,
    /// The CPU kernels; CUDA is never touched.
    Cpu,
    /// The GPU, or the GPU's error.
    Gpu,
}

impl Device {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Device::Auto),
            "cpu" => Some(Device::Cpu),
            "gpu" => Some(Device::Gpu),
            _ => None,
        }
    }
}

/// Where one call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Cpu,
    /// On the GPU; with `fallback`, an [`Error::Unsupported`] from it sends the call to
    /// the CPU instead of failing it (a limit `auto` does not check beforehand, such as
    /// B·H > 65535).
    Gpu {
        fallback: bool,
    },
}

/// Whether a call is of the kind the GPU path computes and large enough to pay for
/// the copies: causal, structure block or dense, dk and
/// dv ≤ 128, and B·H·n·max(dk, dv) ≥ [`GPU_MIN_WORK`].
pub(crate) fn gpu_suits(dims: &Dims, cfg: &Config) -> bool {
    let work = [dims.batch, dims.heads, dims.n, dims.dk.max(dims.dv)]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    let gpu_structure = matches!(cfg.structure, Structure::Block | Structure::Dense);
    cfg.causal
        && gpu_structure
        && dims.dk <= GPU_MAX_HEAD_DIM
        && dims.dv <= GPU_MAX_HEAD_DIM
        && work >= GPU_MIN_WORK
}

/// Where a call with `setting` runs. `gpu_available`: this build has the GPU path and
/// `gpu::available()` is `Ok`; it is only consulted for [`Device::Auto`] (a forced
/// GPU reports the GPU's own error instead).
pub(crate) fn choose(setting: Device, dims: &Dims, cfg: &Config, gpu_available: bool) -> Target {
    match setting {
        Device::Cpu => Target::Cpu,
        Device::Gpu => Target::Gpu { fallback: false },
        Device::Auto if gpu_available && gpu_suits(dims, cfg) => Target::Gpu { fallback: true },
        Device::Auto => Target::Cpu,
    }
}

/// `BLOCKRES_DEVICE` as found in the environment: `None` when unset or empty, the
/// message naming the variable when its value is not one of the allowed ones.
fn parse_env(value: Option<&std::ffi::OsStr>) -> Result<Option<Device>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value.to_str().and_then(Device::parse).map(Some).ok_or_else(|| {
        format!(
            "blockres.ResolventAttention: environment variable {ENV}: expected {ALLOWED} (or unset), got '{}'",
            value.to_string_lossy()
        )
    })
}

/// `BLOCKRES_DEVICE`, read on first use and kept for the life of the process: every
/// node of every session sees the same value.
pub(crate) fn env_setting() -> Result<Option<Device>, String> {
    static SETTING: OnceLock<Result<Option<Device>, String>> = OnceLock::new();
    SETTING
        .get_or_init(|| parse_env(std::env::var_os(ENV).as_deref()))
        .clone()
}

/// Whether the GPU path can run in this process (cached by `gpu::available`; the
/// first call opens the device). Always false without the `cuda` feature.
pub(crate) fn gpu_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        crate::gpu::available().is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// The GPU path of the op: copies in, evaluates, copies out into `y`.
#[cfg(feature = "cuda")]
pub(crate) fn run_gpu<T: crate::gpu::GpuElement>(
    q: TensorRef<'_, T>,
    k: TensorRef<'_, T>,
    v: TensorRef<'_, T>,
    y: TensorMut<'_, T>,
    cfg: &Config,
) -> crate::Result<()> {
    // One operator per node wherever it runs: `block_size = 0` resolves with the crate's
    // rule (crate::auto_block_size, the CPU's) before the GPU sees it, so `auto` never
    // changes the math when a call crosses the size threshold. (The GPU's own automatic
    // rule, gpu::auto_block_size, applies to direct calls of the Rust GPU API.)
    let mut cfg = *cfg;
    if cfg.structure == crate::Structure::Block && cfg.block_size == 0 {
        let [_, _, n, dk] = q.shape();
        cfg.block_size = crate::auto_block_size(n, dk.max(v.shape()[3]));
    }
    crate::gpu::resolvent_attention_host_into(q, k, v, y, &cfg)
}

/// Without the feature there is no GPU path: say so, and how to get one.
#[cfg(not(feature = "cuda"))]
pub(crate) fn run_gpu<T>(
    _q: TensorRef<'_, T>,
    _k: TensorRef<'_, T>,
    _v: TensorRef<'_, T>,
    _y: TensorMut<'_, T>,
    _cfg: &Config,
) -> crate::Result<()> {
    Err(Error::Unsupported(format!(
        "device 'gpu' was requested, but this library was built without the `cuda` feature; \
         rebuild it with `cargo build --release --features cuda`, or use device 'cpu' or 'auto' \
         (attribute device or {ENV})"
    )))
}

/// The element types the GPU path takes, as a bound that holds for every type when the
/// feature is off (so the op's generic code is the same in both builds).
#[cfg(feature = "cuda")]
pub(crate) trait MaybeGpu: crate::gpu::GpuElement {}
#[cfg(feature = "cuda")]
impl<T: crate::gpu::GpuElement> MaybeGpu for T {}
/// The element types the GPU path takes (every type: there is no GPU path).
#[cfg(not(feature = "cuda"))]
pub(crate) trait MaybeGpu {}
#[cfg(not(feature = "cuda"))]
impl<T> MaybeGpu for T {}

/// Whether an error from the GPU in `auto` sends the call to the CPU.
pub(crate) fn falls_back(e: &Error) -> bool {
    matches!(e, Error::Unsupported(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoarseQuery;
    use std::ffi::OsStr;

    fn dims(batch: usize, heads: usize, n: usize, dk: usize, dv: usize) -> Dims {
        Dims {
            batch,
            heads,
            kv_heads: heads,
            n,
            dk,
            dv,
        }
    }

    fn cfg(structure: Structure, causal: bool) -> Config {
        Config {
            structure,
            causal,
            ..Config::default()
        }
    }

    const BIG: (usize, usize, usize, usize, usize) = (1, 16, 1024, 64, 64);

    fn big() -> Dims {
        let (b, h, n, dk, dv) = BIG;
        dims(b, h, n, dk, dv)
    }

    #[test]
    fn parse_accepts_the_three_values_only() {
        assert_eq!(Device::parse("auto"), Some(Device::Auto));
        assert_eq!(Device::parse("cpu"), Some(Device::Cpu));
        assert_eq!(Device::parse("gpu"), Some(Device::Gpu));
        for bad in ["", "GPU", " gpu", "cuda", "bogus"] {
            assert_eq!(Device::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpu_and_gpu_are_forced_whatever_the_call() {
        let c = cfg(Structure::Block, true);
        let small = dims(1, 1, 4, 8, 8);
        for avail in [false, true] {
            assert_eq!(choose(Device::Cpu, &big(), &c, avail), Target::Cpu);
            assert_eq!(
                choose(Device::Gpu, &small, &cfg(Structure::Block, false), avail),
                Target::Gpu { fallback: false }
            );
        }
    }

    #[test]
    fn auto_takes_the_gpu_for_large_causal_block_and_dense() {
        for s in [Structure::Block, Structure::Dense] {
            assert_eq!(
                choose(Device::Auto, &big(), &cfg(s, true), true),
                Target::Gpu { fallback: true }
            );
            assert_eq!(
                choose(Device::Auto, &big(), &cfg(s, true), false),
                Target::Cpu
            );
        }
    }

    #[test]
    fn auto_stays_on_the_cpu_for_what_the_gpu_does_not_take() {
        let avail = true;
        let d = big();
        assert_eq!(
            choose(Device::Auto, &d, &cfg(Structure::Block, false), avail),
            Target::Cpu
        );
        for s in [
            Structure::Strided { stride: 0 },
            Structure::Fixed {
                block: 0,
                summary: 1,
            },
            Structure::TopK {
                alpha: 0.0,
                c_exp: 0.0,
            },
        ] {
            assert_eq!(choose(Device::Auto, &d, &cfg(s, true), avail), Target::Cpu);
        }
        let c = cfg(Structure::Block, true);
        assert_eq!(
            choose(Device::Auto, &dims(1, 16, 1024, 129, 64), &c, avail),
            Target::Cpu
        );
        assert_eq!(
            choose(Device::Auto, &dims(1, 16, 1024, 64, 129), &c, avail),
            Target::Cpu
        );
        assert!(gpu_suits(&dims(1, 16, 1024, 128, 128), &c));
        // The GPU computes both coarse queries.
        let first = Config {
            coarse_query: CoarseQuery::First,
            ..c
        };
        assert_eq!(
            choose(Device::Auto, &d, &first, avail),
            Target::Gpu { fallback: true }
        );
    }

    #[test]
    fn auto_threshold_is_b_h_n_max_d() {
        let c = cfg(Structure::Block, true);
        // Exactly 2^20 with the wider of dk and dv counting.
        assert!(gpu_suits(&dims(2, 8, 1024, 8, 64), &c));
        assert!(gpu_suits(&dims(1, 1, 1 << 14, 64, 16), &c));
        assert!(!gpu_suits(&dims(1, 1, (1 << 14) - 1, 64, 16), &c));
        assert!(!gpu_suits(&dims(1, 16, 1023, 64, 64), &c));
        // Products that overflow count as large, not as small.
        assert!(gpu_suits(&dims(usize::MAX, 2, 2, 2, 2), &c));
    }

    #[test]
    fn env_values() {
        assert_eq!(parse_env(None), Ok(None));
        assert_eq!(parse_env(Some(OsStr::new(""))), Ok(None));
        assert_eq!(parse_env(Some(OsStr::new("gpu"))), Ok(Some(Device::Gpu)));
        assert_eq!(parse_env(Some(OsStr::new("cpu"))), Ok(Some(Device::Cpu)));
        assert_eq!(parse_env(Some(OsStr::new("auto"))), Ok(Some(Device::Auto)));
        let e = parse_env(Some(OsStr::new("cuda"))).unwrap_err();
        assert!(
            e.contains(ENV) && e.contains("'cuda'") && e.contains("'auto'"),
            "{e}"
        );
    }

    #[test]
    fn only_unsupported_falls_back() {
        assert!(falls_back(&Error::Unsupported("x".into())));
        assert!(!falls_back(&Error::Device("x".into())));
        assert!(!falls_back(&Error::NonFinite {
            tensor: "Q",
            index: 0
        }));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpu_without_the_feature_is_an_error_naming_it() {
        let x = [0.0f32; 4];
        let mut y = [0.0f32; 4];
        let t = TensorRef::new(&x, [1, 1, 1, 4]).unwrap();
        let e = run_gpu(
            t,
            t,
            t,
            TensorMut::new(&mut y, [1, 1, 1, 4]).unwrap(),
            &Config::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
        assert!(e.to_string().contains("`cuda` feature"), "{e}");
        assert!(!gpu_available());
    }
}
