//! What a GPU call will do, decided before anything is enqueued: the block size, every
//! limit of the kernels, the scratch sizes, and each launch's kernel choice and shared
//! memory. Pure arithmetic on the shapes and the device's shared-memory limit, so it is
//! tested here without a GPU; the launcher (`mod.rs`) only follows it. The shared-memory
//! formulas mirror the kernels' layouts in `cuda/*.cu` (each says which).

use crate::attention::Dims;
use crate::config::{Config, Structure};
use crate::error::{Error, Result};

use super::module::LOCAL_TC_VARIANTS;

/// Largest `dk` and `dv` the kernels take (register and shared-memory tiles).
pub const MAX_HEAD_DIM: usize = 128;

/// Largest γ of the bidirectional GPU path. Its f32 solves lose accuracy like
/// ε/(1 − γ): measured on the H200 (n = 600, b = 128) 1.2e-4 at γ = 0.999 and 5.6e-4 at
/// 0.9999 against the float64 reference (results/v21_gpu_tests.txt).
pub const MAX_BIDIRECTIONAL_GAMMA: f32 = 0.99;

/// Columns of u per CTA of the reduced solve (`CW` in cuda/reduced.cu).
pub(crate) const REDUCED_CW: usize = 8;

/// Blocks per head up to which the causal reduced solve forms its panels' inverses
/// itself instead of in a `reduced_inverses` launch before it (`SMALL_M` in
/// cuda/reduced.cu): one launch less where the call is short.
pub(crate) const REDUCED_SMALL_M: usize = 64;

/// Shared memory kept back from the device's opt-in limit for the kernels' static
/// arrays (227 − 200 KiB on the H100, where the limits were first measured).
pub(crate) const STATIC_SMEM: usize = 27 * 1024;

/// Blocks per head up to which the causal tensor-core local kernel also does the means
/// and coarse stages (`Plan::fused`). Each CTA then forms its own row of the coarse
/// matrix, reading every earlier block's k̄ and v̄ from L2: O(m) dependent work per CTA,
/// in series with the rest of the CTA, which the separate coarse kernel shares over 8
/// rows. Measured on the H100 in one call (B = 1, H = 16, d = 64, bf16, automatic b,
/// `results/v31_mode*.txt`), fused against separate, ms: 0.043 / 0.049 at n = 2048 (m =
/// 32), 0.069–0.075 / 0.077 at 4096 (m = 64), 0.136 / 0.131 at 8192 (m = 128), 0.270 /
/// 0.239 at 16384, 0.506 / 0.476 at 32768. Measured again with a lighter prologue (h =
/// G̃·v̄ left to the reduced solve, so only k̄ read from L2; `results/v37_*`, BENCHMARKS.md),
/// against these kernels in the same call: 0.128–0.129 / 0.131–0.133 at 8192, 0.251–0.262
/// / 0.239–0.240 at 16384, 0.460–0.469 / 0.451–0.454 at 32768, 0.957–0.969 / 0.891–0.900
/// at 65536.
pub(crate) const FUSED_MAX_BLOCKS: usize = 64;

/// Groups of query heads a large causal call is split into, each enqueued on its own
/// stream (launch.rs): when `B·H·m ≥ HEAD_GROUP_MIN_BLOCKS` with the 8-warp local kernel
/// (`b ≥ 128`), and the means and coarse stages separate.
/// A group's means (bandwidth-bound) and coarse and reduced stages (one partial wave of
/// small CTAs) then run beside another group's local kernel instead of leaving most of
/// the GPU idle. Measured on the H100 with the library split (B = 1, H = 16, d = 64,
/// bf16, automatic b, `BLOCKRES_GPU_GROUPS` = 1 / 2 / 4 alternated twice in one call), ms:
/// - with h deferred (`results/v72b_perf.log`, 2026-12-07): n = 65536 0.724–0.726 /
///   0.705–0.707 / 0.715–0.718; n = 32768 (B·H·m = 4096) 0.368 / 0.358 / 0.391–0.397.
/// - before it (`results/v56_groups_sweep.txt`): n = 65536 0.804–0.806 / 0.791–0.796 /
///   0.762–0.763; n = 32768 0.401–0.414 / 0.399–0.403 / 0.426–0.433; n = 16384 (b = 64)
///   0.222–0.226 / 0.219–0.220 / 0.278–0.335.
///
/// Deferring h made each group's means and coarse stages shorter, so two groups now
/// overlap enough from 4096 blocks on, and four split the local kernel into launches too
/// short for it. (A gpu_bench prototype had found 4 groups 1.05× faster at 32768, v54.)
pub(crate) const HEAD_GROUPS: usize = 2;
/// See [`HEAD_GROUPS`].
pub(crate) const HEAD_GROUP_MIN_BLOCKS: usize = 4096;

/// The query-head ranges `[h0, h1)` of `B·H = bh` heads a call is split into (one range:
/// no split). Groups take whole sets of `r = H/Hkv` query heads, so each reads a
/// contiguous range of K and V heads. `eligible`: causal, separate means and coarse
/// stages; `forced`: `BLOCKRES_GPU_GROUPS` (tests, comparisons), any size then.
pub(crate) fn head_groups(
    bh: usize,
    r: usize,
    m: usize,
    b: usize,
    eligible: bool,
    forced: Option<usize>,
) -> Vec<(usize, usize)> {
    let units = (bh / r.max(1)).max(1);
    let want = match forced {
        Some(g) => g,
        None if b >= 128 && bh * m >= HEAD_GROUP_MIN_BLOCKS => HEAD_GROUPS,
        None => 1,
    };
    let g = if eligible { want.clamp(1, units) } else { 1 };
    (0..g)
        .map(|i| (i * units / g * r, (i + 1) * units / g * r))
        .collect()
}

/// The GPU's automatic block size for causal attention (`block_size = 0`), from n and
/// d = max(dk, dv): 64 up to n = 24,576, then 128 at d ≤ 64 and 96 at d > 64 (the
/// 6-warp tiles, two CTAs per SM, where the 8-warp ones run one); above 128·4096 tokens
/// b grows so that m = n/b stays ≤ 4096. Never more than n. Measured on the H200 in one
/// run (B = 1, H = 16, bf16, 2026-12-06, `results/v29_blocks96_d{64,128}.txt`), b = 64 /
/// 96 / 128 in ms: d = 64: 0.226 / 0.269 / 0.235 at n = 16384, 0.488 / 0.522 / 0.453 at
/// 32768, 1.154 / 1.075 / 0.885 at 65536; d = 128: 0.387 / 0.391 / 0.488 at 16384,
/// 0.814 / 0.752 / 0.941 at 32768, 1.964 / 1.610 / 1.925 at 65536. The switch sits
/// between the measured lengths. (Larger blocks keep the m×m stages small; smaller ones
/// let the 4-warp local kernel run 5 CTAs per SM at d ≤ 64, 3 at d ≤ 128.) Swept again on
/// the H100 after h was deferred (2026-12-07, `results/v72b_perf.log`), b = 64 / 96 / 128:
/// d = 64: 0.109 / 0.136 / 0.118 at 8192, 0.196 / 0.235 / 0.202 at 16384, 0.391 / 0.438
/// / 0.364 at 32768; d = 128: 0.178 / 0.189 / 0.254, 0.327 / 0.329 / 0.413, 0.652 /
/// 0.629 / 0.781; at 4096 (d = 64) 64 against 128: 0.060–0.062 / 0.062–0.064.
///
/// It differs from the CPU rule ([`crate::auto_block_size`], 1.5·n^(1/3)), which was
/// tuned for the CPU kernels: the same attributes with `block_size = 0` give slightly
/// different (equally valid) block operators on CPU and GPU. Pass an explicit
/// `block_size` where both must agree.
///
/// ```
/// # #[cfg(feature = "cuda")] {
/// use blockres::gpu::auto_block_size;
/// assert_eq!(auto_block_size(4096, 64), 64);
/// assert_eq!(auto_block_size(16384, 64), 64);
/// assert_eq!(auto_block_size(32768, 64), 128);
/// assert_eq!(auto_block_size(16384, 128), 64);
/// assert_eq!(auto_block_size(32768, 128), 96);
/// assert_eq!(auto_block_size(65536, 128), 96);
/// assert_eq!(auto_block_size(100, 64), 64.min(100));
/// assert_eq!(auto_block_size(1 << 22, 64), 1024);
/// # }
/// ```
pub fn auto_block_size(n: usize, d: usize) -> usize {
    let b = match (n <= 24_576, d > 64) {
        (true, _) => 64,
        (false, false) => 128,
        (false, true) => 96,
    };
    b.max(n.div_ceil(4096).div_ceil(16) * 16).min(n.max(1))
}

/// The GPU's automatic block size for bidirectional attention (`causal = false`,
/// `block_size = 0`): 64 up to n = 24,576 and 128 above, never more than n. Its reduced
/// system is a dense m × m solve per head, O(m³), so it takes over sooner than the
/// causal one: on the H200 (B = 1, H = 16, d = 64, bf16, results/v25_bidir_*.txt)
/// b = 64 ran n = 16,384 in 0.84 ms against 1.23 ms with b = 128, and b = 128 ran
/// n = 65,536 in 5.65 ms against 10.35 ms with b = 64; the switch is set between the
/// two measured lengths. Blocks stay ≤ 128 rows, the bidirectional kernels' limit, so
/// n ≤ 128·[`MAX_BIDIRECTIONAL_BLOCKS`].
///
/// ```
/// # #[cfg(feature = "cuda")] {
/// use blockres::gpu::auto_block_size_bidirectional;
/// assert_eq!(auto_block_size_bidirectional(16384, 64), 64);
/// assert_eq!(auto_block_size_bidirectional(65536, 64), 128);
/// assert_eq!(auto_block_size_bidirectional(40, 64), 40);
/// # }
/// ```
pub fn auto_block_size_bidirectional(n: usize, _d: usize) -> usize {
    let b = if n <= 24_576 { 64 } else { 128 };
    b.min(n.max(1))
}

/// Shared memory of the general local kernel: Q and K tiles, the 64×65 probability
/// tile, the operands of D·U (f32 U tile, or 16-bit D and Uᵀ tiles for the tensor
/// cores), the 64×(dv+1) right side and four per-row vectors (z, inverse diagonal,
/// 1/Z, rescale). Mirrors the layout in `cuda/local.cu`.
pub(crate) fn local_smem(elem_half: bool, dk: usize, dv: usize) -> usize {
    let (ld, es) = if elem_half {
        (dk.div_ceil(16) * 16 + 8, 2)
    } else {
        (dk + 1, 4)
    };
    let qbytes = (64 * ld * es + 15) & !15;
    let uw = dv + 1;
    let mid = if elem_half {
        (64 * 72 + 8 * uw.div_ceil(8) * 72) * 2
    } else {
        64 * uw * 4
    };
    2 * qbytes + 64 * 65 * 4 + ((mid + 15) & !15) + 64 * uw * 4 + 4 * 64 * 4
}

/// The `local_bidir_b{B}v{D}` entry point for blocks of `b` rows and `dv` value
/// columns: (index into [`BIDIR_VARIANTS`], B, D), the smallest that holds them
/// (B ≥ b, D ≥ dv). It runs 2B threads (8 rows of the block system per thread).
pub(crate) fn bidir_variant(b: usize, dv: usize) -> (usize, usize, usize) {
    let i = 2 * usize::from(b > 64) + usize::from(dv > 64);
    let (bm, dm) = BIDIR_VARIANTS[i];
    (i, bm, dm)
}

/// (B, D) of the `local_bidir` entry points, in the order of their names in module.rs.
pub(crate) const BIDIR_VARIANTS: [(usize, usize); 4] = [(64, 64), (64, 128), (128, 64), (128, 128)];

/// Shared memory of `local_bidir` for blocks of `b` rows (mirrors cuda/bidir.cu): one
/// region for Q and K (B rows of `lq` floats), then D and V, then P and w; after it
/// the double-buffered pivot column and row.
pub(crate) fn bidir_smem(b: usize, dk: usize, dv: usize) -> usize {
    let (_, nr, nv) = bidir_variant(b, dv);
    let nc = nr + nv;
    let lq = dk.div_ceil(8) * 8 + 4;
    let region = (2 * nr * lq).max(nr * (nr + 4) + nr * nv).max(b * (dv + 1));
    (region + 2 * nr + 2 * (nc + 1)) * 4
}

/// Shared memory of `local_bidir_tc` (mirrors the region in cuda/bidir_tc.cu, sized
/// for b rows): Q and K, then Vᵀ, then the elimination's E, W and two panels of Uᵀ
/// (hi, lo), then [P | w], one region reused.
pub(crate) fn bidir_tc_smem(b: usize, dk: usize, dv: usize) -> usize {
    let (_, nr, dm) = bidir_variant(b, dv);
    let nt = nr / 8 + dm / 8 + 1;
    let lqh = dk.div_ceil(16) * 16 + 8;
    let elim = 16 * 17 + 16 * (8 * nt + 4) + 2 * (8 * nt * 24);
    let region = (nr * lqh)
        .max(dm * (nr + 8) / 2)
        .max(elim)
        .max(b * (dv + 1));
    region * 4
}

/// Pivots per panel and columns (and rows) per CTA of the bidirectional reduced solve
/// (`KP` and `TW` in cuda/bidir.cu; its side buffers hold two panels per head).
pub(crate) const BIDIR_PANEL: usize = 32;
pub(crate) const BIDIR_TILE: usize = 64;

/// Largest m = ⌈n/b⌉ of the bidirectional path: its reduced system is a dense
/// m × (m + dv) matrix per head, solved in O(m³).
pub const MAX_BIDIRECTIONAL_BLOCKS: usize = 4096;

/// CTAs per head of the combine kernel (256 threads, grid-striding): one thread per
/// 16-byte access of Y, or per element when `dv` is not a multiple of one (as
/// cuda/combine.cu chooses), at most 1024. Sizing it by elements left 7 of 8 threads
/// of the 16-bit kernels idle, and at small n launching those CTAs, not moving the
/// memory, was the cost.
pub(crate) fn combine_blocks(n: usize, dv: usize, elem_bytes: usize) -> u32 {
    let per = 16 / elem_bytes;
    let items = if dv.is_multiple_of(per) {
        n * dv / per
    } else {
        n * dv
    };
    items.div_ceil(256).clamp(1, 1024) as u32
}

/// Shared memory of a `local_tc` variant (mirrors the layout in cuda/local_tc.cu).
pub(crate) fn local_tc_smem(warps: usize, d: usize) -> usize {
    let (rows, ld) = (16 * warps, d + 8);
    3 * rows * ld * 2
        + warps * 384 * 4
        + (2 * warps + 1) * ld * 4
        + (2 * warps + 2) * 8
        + 32 * 4
        + 8
}

/// Block rows per CTA of the coarse kernel (RG in cuda/coarse.cu).
pub(crate) const COARSE_ROWS: usize = 16;

/// Shared memory of the coarse kernel (mirrors cuda/coarse.cu): RG rows of q̄ and `nbuf`
/// staging tiles of 64 rows of k̄ or v̄, each with its row stride rounded up to an odd
/// number of float4s, and a 64 × (32 + rows per warp) tile of G̃.
pub(crate) fn coarse_smem(dk: usize, dv: usize, nbuf: usize) -> usize {
    let odd = |d: usize| {
        let d4 = d.div_ceil(4);
        (if d4.is_multiple_of(2) { d4 + 1 } else { d4 }) * 4
    };
    4 * (COARSE_ROWS * odd(dk) + nbuf * 64 * odd(dk).max(odd(dv)) + 64 * (32 + COARSE_ROWS / 8))
}

/// The local kernel of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// `local_bidir_*[variant]`: the block's whole system in the registers of one CTA
    /// (2B threads), variants as in [`BIDIR_VARIANTS`].
    Bidir { variant: usize },
    /// `local_bidir_tc_*[variant]` (f16/bf16): the same systems as mma tiles of B/16
    /// warps, eliminated by 16-row panels on the tensor cores.
    BidirTc { variant: usize },
    /// `local_tc_*[variant]` (f16/bf16, causal, b ≤ 128), `warps` warps.
    Tc { variant: usize, warps: usize },
    /// `local` (256 threads): any type and block size.
    General,
}

/// Everything the launcher needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Block size (≤ n).
    pub b: usize,
    /// Blocks per head.
    pub m: usize,
    /// Lengths of the 12 scratch buffers: q̄, k̄, v̄, G̃, σ, gsum, h, w, p̄, c, s, and
    /// the reduced system's panel inverses (causal) or augmented matrices and side buffers
    /// (bidirectional).
    pub scratch: [usize; 12],
    /// Staging buffers of the coarse kernel (2: copies overlap products; 1 where shared
    /// memory is short) and its shared memory.
    pub coarse_bufs: usize,
    pub coarse_smem: usize,
    pub local: Local,
    pub local_threads: u32,
    pub local_smem: usize,
    /// The causal tensor-core local kernel also does the means and coarse stages (no
    /// launches of their own; k̄ and v̄ then per query head).
    pub fused: bool,
    /// The separate causal tensor-core path leaves h out of the local stage (cuda/common.cuh,
    /// LocalParams): the means pass reads Q and K only, the local kernel forms v̄ and the
    /// reduced system's right side, the reduced solve and the combine put h back.
    pub defer_h: bool,
    /// u64s of the record buffer: the non-finite record (3), and with `fused` the CTA
    /// ticket and one flag per block of every head.
    pub record: usize,
    /// Shared memory of the causal reduced solve.
    pub reduced_smem: usize,
}

impl Plan {
    /// The plan of one call with element type index `elem` (0 = f32, 1 = f16,
    /// 2 = bf16) on a device allowing `smem` bytes of dynamic shared memory per block;
    /// `tc` allows the tensor-core local kernel, `fuse` its fused means and coarse stages
    /// (when it is the one chosen). Every request the kernels cannot
    /// serve is [`Error::Unsupported`] naming the limit.
    pub fn new(
        dims: &Dims,
        cfg: &Config,
        elem: usize,
        smem: usize,
        tc: bool,
        fuse: bool,
    ) -> Result<Self> {
        let Dims {
            batch,
            heads,
            kv_heads,
            n,
            dk,
            dv,
        } = *dims;
        let bh = batch * heads;
        let bhkv = batch * kv_heads;
        let unsupported = |m: String| Err(Error::Unsupported(m));
        let b = match cfg.structure {
            Structure::Block if cfg.block_size == 0 && !cfg.causal => {
                auto_block_size_bidirectional(n, dk.max(dv))
            }
            Structure::Block if cfg.block_size == 0 => auto_block_size(n, dk.max(dv)),
            Structure::Block => cfg.block_size,
            Structure::Dense => n,
            other => {
                return unsupported(format!(
                    "structure '{}' is not available on the GPU; use the CPU path",
                    other.name()
                ));
            }
        }
        .clamp(1, n);
        if dk > MAX_HEAD_DIM || dv > MAX_HEAD_DIM {
            return unsupported(format!(
                "the GPU kernels take dk, dv ≤ {MAX_HEAD_DIM}, got dk = {dk}, dv = {dv}; use the CPU path"
            ));
        }
        if bh > 65535 {
            return unsupported(format!("B·H = {bh} exceeds the GPU grid limit 65535"));
        }
        let m = n.div_ceil(b);
        if !cfg.causal && cfg.gamma > MAX_BIDIRECTIONAL_GAMMA {
            return unsupported(format!(
                "bidirectional attention on the GPU solves in f32 and takes γ ≤ \
                 {MAX_BIDIRECTIONAL_GAMMA} (γ = {}: I − γA is too near singular for f32); use the \
                 CPU path, which solves in f64",
                cfg.gamma
            ));
        }
        if !cfg.causal {
            // The block's full system lives in one CTA's registers (8 rows per
            // thread, at most 256 threads) and the m×m reduced system in global memory
            // (cuda/bidir.cu).
            if b > 128 && cfg.structure == Structure::Dense {
                return unsupported(format!(
                    "dense bidirectional attention on the GPU is one block of n rows and takes \
                     n ≤ 128 (n = {n}); use structure 'block' or the CPU path"
                ));
            }
            if b > 128 {
                return unsupported(format!(
                    "bidirectional attention on the GPU takes blocks of at most 128 rows \
                     (b = {b}); pass a smaller block_size or use the CPU path"
                ));
            }
            if m > MAX_BIDIRECTIONAL_BLOCKS {
                return unsupported(format!(
                    "bidirectional attention on the GPU takes at most {MAX_BIDIRECTIONAL_BLOCKS} \
                     blocks (n/b = {m}); use a larger block_size or the CPU path"
                ));
            }
        }
        if m > 65535 {
            return unsupported(format!("n/b = {m} blocks exceed the GPU grid limit 65535"));
        }
        // The reduced solve keeps REDUCED_CW columns of m rows in shared memory (the
        // coarse kernel's shared memory does not depend on m).
        if m * REDUCED_CW * 4 > smem {
            return unsupported(format!(
                "n/b = {m} blocks: on this GPU ({} KiB of shared memory per block) the reduced \
                 stage takes at most {} blocks; use a larger block_size",
                smem / 1024,
                smem / (REDUCED_CW * 4)
            ));
        }
        if n * dv.max(dk) >= i32::MAX as usize {
            return unsupported(format!(
                "n·d = {} exceeds the GPU path's 32-bit per-head index range",
                n * dv.max(dk)
            ));
        }
        let coarse_bufs = if coarse_smem(dk, dv, 2) <= smem { 2 } else { 1 };
        let coarse_smem = coarse_smem(dk, dv, coarse_bufs);
        let (local, local_threads, local_smem) = if !cfg.causal {
            // Both bidirectional kernels run 2·B threads for their variant's B rows.
            let (variant, bm, _) = bidir_variant(b, dv);
            let (local, smem) = if elem != 0 && tc {
                (Local::BidirTc { variant }, bidir_tc_smem(b, dk, dv))
            } else {
                (Local::Bidir { variant }, bidir_smem(b, dk, dv))
            };
            (local, 2 * bm as u32, smem)
        } else if elem != 0 && b <= 128 && tc {
            let warps = b.div_ceil(16);
            // At d > 64 the 6-warp tiles (2 CTAs per SM) take b ≤ 96; the 8-warp ones run 1.
            let variant = match (warps, dk.max(dv) > 64) {
                (..=4, false) => 0,
                (_, false) => 1,
                (..=4, true) => 2,
                (5..=6, true) => 4,
                (_, true) => 3,
            };
            let (wmax, dmax) = LOCAL_TC_VARIANTS[variant];
            (
                Local::Tc { variant, warps },
                32 * warps as u32,
                local_tc_smem(wmax, dmax),
            )
        } else {
            (Local::General, 256, local_smem(elem != 0, dk, dv))
        };
        if local_smem > smem {
            return unsupported(format!(
                "the local kernel needs {local_smem} bytes of shared memory per block at \
                 dk = {dk}, dv = {dv}; this GPU allows {smem}"
            ));
        }
        let fused = fuse && matches!(local, Local::Tc { .. }) && m <= FUSED_MAX_BLOCKS;
        let defer_h = !fused && matches!(local, Local::Tc { .. });
        let kvm = if fused { bh } else { bhkv } * m;
        let scratch = [
            bh * m * dk,
            kvm * dk,
            kvm * dv,
            bh * m * m,
            bh * m,
            bh * m,
            bh * m * dv,
            bh * n,
            bh * m * dv,
            bh * m,
            bh * m * dv,
            if cfg.causal {
                bh * m.div_ceil(32) * 32 * 32
            } else {
                bh * (m + 2 * BIDIR_PANEL) * (m + dv)
            },
        ];
        Ok(Plan {
            b,
            m,
            scratch,
            coarse_bufs,
            coarse_smem,
            local,
            local_threads,
            local_smem,
            fused,
            defer_h,
            record: if fused { 4 + bh * m } else { 3 },
            reduced_smem: m * REDUCED_CW * 4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoarseQuery;

    /// Opt-in shared memory per block less [`STATIC_SMEM`]: H100/H200, A100, sm_86/89.
    const DEVICES: [(&str, usize); 3] = [
        ("sm_90", 227 * 1024 - STATIC_SMEM),
        ("sm_80", 163 * 1024 - STATIC_SMEM),
        ("sm_86", 99 * 1024 - STATIC_SMEM),
    ];

    fn dims(n: usize, dk: usize, dv: usize) -> Dims {
        Dims {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            n,
            dk,
            dv,
        }
    }

    fn cfg(b: usize, causal: bool) -> Config {
        Config {
            block_size: b,
            causal,
            coarse_query: CoarseQuery::First,
            ..Config::default()
        }
    }

    /// Whatever it accepts, every launch's shared memory fits the device.
    #[test]
    fn accepted_plans_fit_shared_memory() {
        for (dev, smem) in DEVICES {
            for n in [1, 7, 100, 4096, 65536, 1 << 20] {
                for (dk, dv) in [(1, 1), (24, 5), (64, 64), (128, 128), (96, 32)] {
                    for b in [0, 1, 16, 64, 128, 256] {
                        for causal in [true, false] {
                            for elem in 0..3 {
                                let Ok(p) = Plan::new(
                                    &dims(n, dk, dv),
                                    &cfg(b, causal),
                                    elem,
                                    smem,
                                    true,
                                    true,
                                ) else {
                                    continue;
                                };
                                let what =
                                    format!("{dev} n={n} dk={dk} dv={dv} b={b} causal={causal}");
                                assert!(p.coarse_smem <= smem, "{what}: coarse {}", p.coarse_smem);
                                assert!(p.local_smem <= smem, "{what}: local {}", p.local_smem);
                                if causal {
                                    assert!(p.reduced_smem <= smem, "{what}: reduced");
                                }
                                assert_eq!(p.m, n.div_ceil(p.b), "{what}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// n = 2^20 with the automatic size (b = 256, m = 4096) fits Hopper; b = 128
    /// (m = 8192) does not, and neither does a 99 KiB device at b = 256: both are
    /// refused by name instead of failing a launch.
    #[test]
    fn long_sequences_fit_on_hopper_and_are_refused_clearly_elsewhere() {
        let d = dims(1 << 20, 64, 64);
        let p = Plan::new(&d, &cfg(0, true), 2, DEVICES[0].1, true, true).unwrap();
        assert_eq!((p.b, p.m), (256, 4096));
        for (b, dev) in [(128, 0), (0, 2)] {
            let e = Plan::new(&d, &cfg(b, true), 2, DEVICES[dev].1, true, true).unwrap_err();
            assert!(e.to_string().contains("shared memory per block"), "{e}");
        }
    }

    #[test]
    fn kernel_choice_follows_type_mask_and_size() {
        let smem = DEVICES[0].1;
        let p = |elem, b, causal, tc| {
            Plan::new(&dims(1000, 64, 64), &cfg(b, causal), elem, smem, tc, true).unwrap()
        };
        assert_eq!(p(0, 64, true, true).local, Local::General);
        assert_eq!(
            p(1, 64, true, true).local,
            Local::Tc {
                variant: 0,
                warps: 4
            }
        );
        assert_eq!(
            p(2, 128, true, true).local,
            Local::Tc {
                variant: 1,
                warps: 8
            }
        );
        assert_eq!(p(2, 128, true, false).local, Local::General);
        assert_eq!(p(1, 64, false, true).local, Local::BidirTc { variant: 0 });
        assert_eq!(p(2, 65, false, true).local, Local::BidirTc { variant: 2 });
        assert_eq!(p(0, 64, false, true).local, Local::Bidir { variant: 0 });
        assert_eq!(p(1, 64, false, false).local, Local::Bidir { variant: 0 });
        assert_eq!(p(1, 256, true, true).local, Local::General);
    }

    #[test]
    fn automatic_bidirectional_blocks_stay_within_the_kernels() {
        // With block_size = 0 a bidirectional plan takes the bidirectional rule (≤ 128
        // rows) up to the longest sequence it can serve, and names the limit past it.
        let smem = DEVICES[0].1;
        let longest = 128 * MAX_BIDIRECTIONAL_BLOCKS;
        for (n, b) in [(1, 1), (100, 64), (16384, 64), (24577, 128), (longest, 128)] {
            let p = Plan::new(&dims(n, 64, 64), &cfg(0, false), 2, smem, true, true).unwrap();
            assert_eq!((p.b, p.m), (b, n.div_ceil(b)), "n = {n}");
        }
        let e = Plan::new(
            &dims(longest + 1, 64, 64),
            &cfg(0, false),
            2,
            smem,
            true,
            true,
        );
        assert!(e.unwrap_err().to_string().contains("at most 4096 blocks"));
    }

    #[test]
    fn bidirectional_tiles_hold_their_blocks() {
        for (b, dv) in (1..=128).flat_map(|b| (1..=128).map(move |dv| (b, dv))) {
            let (_, bm, dm) = bidir_variant(b, dv);
            assert!(b <= bm && dv <= dm && (b > 64) == (bm == 128) && (dv > 64) == (dm == 128));
        }
    }

    #[test]
    fn limits_are_named() {
        let smem = DEVICES[0].1;
        let err = |d: Dims, c: Config| {
            Plan::new(&d, &c, 0, smem, true, true)
                .unwrap_err()
                .to_string()
        };
        assert!(err(dims(100, 129, 64), cfg(16, true)).contains("dk, dv ≤ 128"));
        assert!(err(dims(1000, 64, 64), cfg(256, false)).contains("at most 128 rows"));
        let dense = Config {
            structure: Structure::Dense,
            ..cfg(0, false)
        };
        assert!(err(dims(129, 64, 64), dense).contains("n ≤ 128 (n = 129)"));
        assert!(Plan::new(&dims(128, 64, 64), &dense, 0, smem, true, true).is_ok());
        assert!(err(dims(1 << 20, 64, 64), cfg(128, false)).contains("4096 blocks"));
        let g = Config {
            gamma: 0.995,
            ..cfg(64, false)
        };
        assert!(err(dims(1000, 64, 64), g).contains("γ ≤"));
        let s = Config {
            structure: Structure::Strided { stride: 0 },
            ..cfg(0, true)
        };
        assert!(err(dims(1000, 64, 64), s).contains("not available on the GPU"));
        let many = Dims {
            batch: 70000,
            heads: 1,
            kv_heads: 1,
            ..dims(10, 8, 8)
        };
        assert!(err(many, cfg(4, true)).contains("65535"));
    }

    #[test]
    fn combine_has_a_thread_per_access_up_to_its_cap() {
        // bf16, dv = 64: 8 elements per access; n = 4096 → 32768 accesses → 128 CTAs.
        assert_eq!(combine_blocks(4096, 64, 2), 128);
        assert_eq!(combine_blocks(4096, 64, 4), 256); // f32: 4 per access
        assert_eq!(combine_blocks(4096, 5, 2), 80); // dv not a multiple: per element
        assert_eq!(combine_blocks(1, 1, 2), 1);
        assert_eq!(combine_blocks(1 << 20, 128, 2), 1024);
    }

    #[test]
    fn four_warp_local_tc_fits_its_ctas_per_sm() {
        // sm_90: 228 KiB of shared memory per SM, 1 KiB of it reserved per CTA. The
        // register caps of local_tc_*_4_64, _4_128 and _6_128 (5, 3 and 2 CTAs per SM,
        // cuda/local_tc.cu) pay only if their shared memory lets that many in too.
        assert!(5 * (local_tc_smem(4, 64) + 1024) <= 228 * 1024);
        assert!(3 * (local_tc_smem(4, 128) + 1024) <= 228 * 1024);
        assert!(2 * (local_tc_smem(6, 128) + 1024) <= 228 * 1024);
    }

    #[test]
    fn fused_only_for_the_causal_tensor_core_kernel_up_to_its_block_count() {
        let smem = DEVICES[0].1;
        let p = |n, elem, causal, fuse| {
            Plan::new(&dims(n, 64, 64), &cfg(64, causal), elem, smem, true, fuse).unwrap()
        };
        let q = p(64 * FUSED_MAX_BLOCKS, 2, true, true);
        assert!(q.fused && matches!(q.local, Local::Tc { .. }));
        // B·H = 2 heads of m blocks: the record holds 3 + 1 + 2m u64s, k̄ and v̄ one copy
        // per query head (dims has Hkv = 1).
        assert_eq!(q.record, 4 + 2 * FUSED_MAX_BLOCKS);
        assert_eq!(q.scratch[1], 2 * FUSED_MAX_BLOCKS * 64);
        assert!(!p(64 * FUSED_MAX_BLOCKS + 1, 2, true, true).fused);
        assert!(!p(4096, 0, true, true).fused, "f32: the general kernel");
        assert!(!p(4096, 2, false, true).fused, "bidirectional");
        let off = p(4096, 2, true, false);
        assert!(!off.fused && off.record == 3);
    }

    #[test]
    fn scratch_sizes() {
        let p = Plan::new(
            &dims(100, 8, 4),
            &cfg(16, true),
            0,
            DEVICES[0].1,
            true,
            true,
        )
        .unwrap();
        assert_eq!((p.b, p.m), (16, 7));
        // B·H = 2, B·Hkv = 1.
        assert_eq!(
            p.scratch,
            [112, 56, 28, 98, 14, 14, 56, 200, 56, 14, 56, 2048]
        );
        let d = Plan::new(
            &dims(100, 8, 4),
            &Config {
                structure: Structure::Dense,
                ..cfg(0, true)
            },
            0,
            DEVICES[0].1,
            true,
            true,
        )
        .unwrap();
        assert_eq!((d.b, d.m), (100, 1));
    }

    #[test]
    fn head_groups_take_whole_kv_sets_and_only_large_causal_calls() {
        // H = 16, n = 65536 or 32768 (B·H·m = 4096), b = 128: two groups of eight heads.
        assert_eq!(
            head_groups(16, 1, 512, 128, true, None),
            vec![(0, 8), (8, 16)]
        );
        assert_eq!(
            head_groups(16, 1, 256, 128, true, None),
            vec![(0, 8), (8, 16)]
        );
        // b = 64, too few blocks, or not eligible: one.
        assert_eq!(head_groups(16, 1, 512, 64, true, None).len(), 1);
        assert_eq!(head_groups(8, 1, 256, 128, true, None).len(), 1);
        assert_eq!(head_groups(16, 1, 256, 128, false, None).len(), 1);
        assert_eq!(head_groups(16, 1, 256, 128, false, Some(4)).len(), 1);
        // GQA r = 4 over 24 heads, forced 4: six K/V heads shared 1-2-1-2.
        let g = head_groups(24, 4, 3, 16, true, Some(4));
        assert_eq!(g, vec![(0, 4), (4, 12), (12, 16), (16, 24)]);
        // Never more groups than K/V heads, never an empty one.
        let g = head_groups(6, 3, 3, 16, true, Some(5));
        assert_eq!(g, vec![(0, 3), (3, 6)]);
        for (bh, r, f) in [(7, 7, 3), (5, 1, 4), (12, 3, 2), (1, 1, 8)] {
            let g = head_groups(bh, r, 1, 16, true, Some(f));
            assert_eq!(g.first().unwrap().0, 0);
            assert_eq!(g.last().unwrap().1, bh);
            assert!(g.windows(2).all(|w| w[0].1 == w[1].0));
            assert!(g.iter().all(|&(a, b)| b > a && a % r == 0 && b % r == 0));
        }
    }
}
