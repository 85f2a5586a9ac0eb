//! The launcher: [`resolvent_attention_device`] enqueues the launches of one call (means,
//! coarse, local, two reduced, combine; three where the plan fuses the first two into the
//! local kernel and the reduced solve forms its own panel inverses, m ≤ 64) as [`Plan`]
//! decided them, each with its family's parameter struct (`params.rs`). Large causal
//! calls are split into groups of query heads on the workspace's own streams
//! (`plan::head_groups`), so that one group's short and bandwidth-bound stages overlap
//! another's local kernel; the call stays ordered as one unit on the caller's stream.

use std::sync::OnceLock;

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, DriverError, LaunchConfig, PushKernelArg, sys,
};

use super::params::{
    Args, CoarseParams, CombineParams, LocalParams, MeansParams, Ptr, ReducedParams,
};
use super::plan::{self, Local, Plan};
use super::{Gpu, GpuElement, GpuWorkspace, dev_err};
use crate::attention::Dims;
use crate::config::{CoarseQuery, Config};
use crate::error::{Error, Result};

pub(super) fn cfg1(grid: (u32, u32), threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Enqueue `f`, whose one parameter is the struct `p`, on `st`. With `pdl` (programmatic
/// dependent launch, sm_90+) the kernel's CTAs may start once every CTA of the kernel
/// before it on the stream has signalled (`pdl_trigger`, cuda/common.cuh) instead of
/// when that kernel has finished, so one kernel's tail overlaps the next one's start and
/// the local kernels' loads of Q, K, V overlap the coarse stage; each kernel waits
/// (`pdl_wait`) before it reads what an earlier one wrote. Only the call's own kernels
/// after its first are enqueued this way: work before the call stays fully ordered.
///
/// # Safety
/// As for [`cudarc::driver::LaunchArgs::launch`]: `f` takes exactly one parameter of
/// type `P`, and `c` fits the kernel's launch bounds and the buffers `p` points to.
pub(super) unsafe fn enqueue<P: DeviceRepr>(
    st: &Arc<CudaStream>,
    f: &CudaFunction,
    c: LaunchConfig,
    p: &P,
    pdl: bool,
) -> std::result::Result<(), DriverError> {
    if !pdl {
        let mut lb = st.launch_builder(f);
        lb.arg(p);
        // SAFETY: the caller's contract.
        return unsafe { lb.launch(c) }.map(|_| ());
    }
    st.context().bind_to_thread()?;
    // SAFETY: a plain C struct of integers and a union of them; all zero is its
    // documented "no attribute value" state, then the two fields are set.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let cfg = sys::CUlaunchConfig {
        gridDimX: c.grid_dim.0,
        gridDimY: c.grid_dim.1,
        gridDimZ: c.grid_dim.2,
        blockDimX: c.block_dim.0,
        blockDimY: c.block_dim.1,
        blockDimZ: c.block_dim.2,
        sharedMemBytes: c.shared_mem_bytes,
        hStream: st.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // The driver copies the parameter out of `p` before cuLaunchKernelEx returns.
    let mut args = [p as *const P as *mut std::ffi::c_void];
    // SAFETY: `cfg`, `attr` and `args` outlive the call; `f` belongs to the stream's
    // context, bound above; the rest is the caller's contract.
    unsafe {
        sys::cuLaunchKernelEx(
            &cfg,
            f.cu_function(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
}

pub(super) fn to_i32(x: usize, name: &'static str) -> Result<i32> {
    i32::try_from(x).map_err(|_| {
        Error::Unsupported(format!(
            "{name} = {x} exceeds the GPU path's 32-bit index range"
        ))
    })
}

/// The tensor-core local kernels take f16/bf16 blocks of at most 128 rows; unset or any
/// value but `general` lets them; `BLOCKRES_GPU_LOCAL=general` forces the general causal
/// kernel (cuda/local.cu) and the pivot-by-pivot bidirectional one (`local_bidir`,
/// cuda/bidir.cu) instead of `local_tc` and `local_bidir_tc`, for comparisons.
fn local_tc_allowed() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| std::env::var("BLOCKRES_GPU_LOCAL").map_or(true, |v| v != "general"))
}

/// Where the plan allows it (`plan::FUSED_MAX_BLOCKS`), the causal tensor-core local
/// kernel does the block means and the coarse row itself (one pass over Q, K, V, three
/// launches a call instead of six); `BLOCKRES_GPU_FUSED=0` runs the separate means and
/// coarse kernels instead, for comparisons.
fn fused_allowed() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| std::env::var("BLOCKRES_GPU_FUSED").map_or(true, |v| v != "0"))
}

/// Where the plan defers h (`Plan::defer_h`: the separate causal tensor-core path),
/// `BLOCKRES_GPU_DEFER_H=0` keeps it in the local stage instead (the means pass then
/// reads V too, and the coarse stage forms h = G̃·v̄), for comparisons.
fn defer_h_allowed() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| std::env::var("BLOCKRES_GPU_DEFER_H").map_or(true, |v| v != "0"))
}

/// Enqueue resolvent attention on `gpu`'s stream: `y ← (1−γ)·A·(I−γA)⁻¹·V` for device
/// tensors `q: [B,H,n,dk]`, `k: [B,Hkv,n,dk]`, `v: [B,Hkv,n,dv]`, `y: [B,H,n,dv]`
/// (row-major, shapes in `dims`). Structures: [`Structure::Block`](crate::Structure::Block) and
/// [`Structure::Dense`](crate::Structure::Dense) (evaluated as one block of `n`, which SPEC §2 makes exactly the
/// dense operator), causal or bidirectional (see the module's limits). Returns once the work is enqueued; call
/// [`GpuWorkspace::check_finite`] (which waits) to learn whether the inputs were all
/// finite. `block_size = 0` picks `b` by the GPU's rule ([`auto_block_size`](super::auto_block_size)).
///
/// ```no_run
/// use blockres::{Config, Dims, gpu::{self, Gpu, GpuWorkspace}};
/// let g = Gpu::new(0).unwrap();
/// let dims = Dims::from_shapes([1, 2, 500, 32], [1, 1, 500, 32], [1, 1, 500, 32]).unwrap();
/// let q = g.upload(&vec![0.1f32; 2 * 500 * 32]).unwrap();
/// let kv = g.upload(&vec![0.2f32; 500 * 32]).unwrap();
/// let mut y = g.zeros::<f32>(2 * 500 * 32).unwrap();
/// let mut ws = GpuWorkspace::new();
/// gpu::resolvent_attention_device(&g, &q, &kv, &kv, &mut y, &dims, &Config::default(), &mut ws).unwrap();
/// ws.check_finite(&g).unwrap();
/// let out = g.download(&y).unwrap();
/// assert!((out[0] - 0.2).abs() < 1e-5);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn resolvent_attention_device<T: GpuElement>(
    gpu: &Gpu,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
    dims: &Dims,
    cfg: &Config,
    ws: &mut GpuWorkspace,
) -> Result<()> {
    cfg.validate()?;
    // `Dims` has public fields: a hand-built one (n = 0, H % Hkv ≠ 0) would index
    // out of range in the kernels.
    dims.validate()?;
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
    for (name, got, want) in [
        ("Q", q.len(), bh * n * dk),
        ("K", k.len(), bhkv * n * dk),
        ("V", v.len(), bhkv * n * dv),
        ("Y", y.len(), bh * n * dv),
    ] {
        if got != want {
            return Err(Error::Shape {
                tensor: name,
                message: format!("device buffer holds {got} elements, the shapes need {want}"),
            });
        }
    }
    let plan = Plan::new(
        dims,
        cfg,
        T::INDEX,
        gpu.smem,
        local_tc_allowed(),
        fused_allowed(),
    )?;
    let r = heads / kv_heads;
    let eligible = cfg.causal && !plan.fused && matches!(plan.local, Local::Tc { .. });
    let groups = plan::head_groups(bh, r, plan.m, plan.b, eligible, groups_forced());
    let st = &gpu.stream;
    // A call captured into a CUDA graph is replayed with the epoch it was captured with
    // (GpuWorkspace::next_epoch): it and every later call clear the record instead.
    let capturing = st
        .capture_status()
        .map_err(|e| dev_err("asking whether the stream is capturing", e))?
        != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // The tensors' addresses, taken once on the call's stream: with cudarc's event
    // tracking that orders the call after their pending work on other streams, and the
    // guards, dropped after the groups' join, record the whole call as their latest use.
    let mut a = Args::new(st);
    let t = [a.r(q), a.r(k), a.r(v), a.w(&mut *y)];
    if groups.len() == 1 {
        ws.parts_used = 0;
        let res = enqueue_heads::<T>(gpu, st, t, dims, cfg, &plan, ws, capturing);
        drop(a);
        return res;
    }
    ws.ensure_parts(gpu, groups.len())?;
    // The groups' own workspaces clear their records whenever the call's would.
    let clear = capturing || ws.clear_each_call;
    let fork = ws.fork.as_ref().expect("ensure_parts made the fork event");
    fork.record(st)
        .map_err(|e| dev_err("recording the call's start", e))?;
    let es = std::mem::size_of::<T>();
    let mut res = Ok(());
    // The groups that enqueued anything: only their records are this call's.
    let mut used = 0;
    for (part, &(h0, h1)) in ws.parts.iter_mut().zip(&groups) {
        used += 1;
        let dg = Dims {
            batch: 1,
            heads: h1 - h0,
            kv_heads: (h1 - h0) / r,
            ..*dims
        };
        let off = [h0 * n * dk, h0 / r * n * dk, h0 / r * n * dv, h0 * n * dv];
        part.offsets = [off[0], off[1], off[2]];
        let tg = [0, 1, 2, 3].map(|j| t[j] + (off[j] * es) as u64);
        res = part
            .stream
            .wait(fork)
            .map_err(|e| dev_err("ordering a head group after the call's stream", e))
            .and_then(|_| {
                let pg = Plan::new(&dg, cfg, T::INDEX, gpu.smem, local_tc_allowed(), false)?;
                enqueue_heads::<T>(gpu, &part.stream, tg, &dg, cfg, &pg, &mut part.ws, clear)
            });
        // Joined even after a failure: whatever the group enqueued must finish before
        // the guards below let the tensors be reused or freed.
        let joined = part
            .join
            .record(&part.stream)
            .and_then(|_| st.wait(&part.join))
            .map_err(|e| dev_err("joining a head group", e));
        res = res.and(joined);
        if res.is_err() {
            break;
        }
    }
    ws.parts_used = used;
    drop(a);
    res
}

/// Split calls (`plan::head_groups`): `BLOCKRES_GPU_GROUPS=N` asks for N groups of query
/// heads wherever the path allows a split (1: never split), for tests and comparisons;
/// unset, the plan's rule decides.
fn groups_forced() -> Option<usize> {
    static A: OnceLock<Option<usize>> = OnceLock::new();
    *A.get_or_init(|| {
        std::env::var("BLOCKRES_GPU_GROUPS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// The kernels of one call, or of one head group of a split one, on `st`: `t` holds the
/// addresses of Q, K, V, Y for `dims`' heads, which `plan` was made for; `capturing`:
/// the call's stream is capturing a CUDA graph.
#[allow(clippy::too_many_arguments)]
fn enqueue_heads<T: GpuElement>(
    gpu: &Gpu,
    st: &Arc<CudaStream>,
    t: [Ptr; 4],
    dims: &Dims,
    cfg: &Config,
    plan: &Plan,
    ws: &mut GpuWorkspace,
    capturing: bool,
) -> Result<()> {
    let (n, dk, dv) = (dims.n, dims.dk, dims.dv);
    let (heads, kv_heads) = (dims.heads, dims.kv_heads);
    let (bh, bhkv) = (dims.batch * heads, dims.batch * kv_heads);
    let [q, k, v, y] = t;
    let (b, m) = (plan.b, plan.m);
    ws.ensure(gpu, st, &plan.scratch, plan.record)?;
    // The workspace's own buffers go to the kernels as the addresses `ensure` took, not
    // through cudarc's per-use events: `ensure` allocates them on this stream (a head
    // group's own, joined back into the call's by an event), where they are used and
    // later freed, and makes a call on another stream wait for the last one first. The
    // events ordered nothing more, and their waits before each launch (a driver call a
    // buffer, eleven before the first kernel) delayed the call's start: 0.063–0.065 ms
    // against 0.071–0.073 at n = 4096 (H100, results/v66_perf.log).
    let [qbar, kbar, vbar, g, sigma, gsum, h, w, pbar, cvec, s, minv] = ws.ptrs[..] else {
        unreachable!("ensure made 12 buffers")
    };
    let bad = ws.bad_ptr;
    // The record is not cleared before the call: its values carry the call's epoch
    // (cuda/common.cuh, rec_value), and the fused kernel's tickets count on from the
    // workspace's total. That saves a memset and its gap before the first kernel.
    let epoch = ws.next_epoch(st, capturing)?;
    let ticket0 = ws.tickets;
    let (ni, dki, dvi, bi, mi) = (
        to_i32(n, "n")?,
        to_i32(dk, "dk")?,
        to_i32(dv, "dv")?,
        to_i32(b, "block_size")?,
        to_i32(m, "blocks")?,
    );
    let (hi, hkvi) = (to_i32(heads, "H")?, to_i32(kv_heads, "Hkv")?);
    let scale = cfg.effective_scale(dk);
    let gamma = cfg.gamma;
    let causal = i32::from(cfg.causal);
    let kx = &gpu.k;
    let pdl = gpu.pdl;
    let defer = plan.defer_h && defer_h_allowed();
    // Deferred h: the coarse and local kernels take h = 0 (cuda/common.cuh), and the
    // coarse kernel then reads no v̄ either.
    let (h_arg, vbar_coarse) = if defer { (0, 0) } else { (h, vbar) };
    let launch = |r: std::result::Result<_, cudarc::driver::DriverError>, what: &str| {
        r.map(|_| ()).map_err(|e| dev_err(what, e))
    };

    // 1. Block means (and the non-finite scan) of Q, K, V, in one launch. (Fused: in the
    // local kernel, with the coarse stage. Deferred h: Q and K only, the local kernel
    // does V's.)
    if !plan.fused {
        let p = MeansParams {
            x: [q, k, v],
            out: [qbar, kbar, vbar],
            bad,
            heads: [
                to_i32(bh, "B·H")?,
                to_i32(bhkv, "B·Hkv")?,
                to_i32(bhkv, "B·Hkv")?,
            ],
            d: [dki, dki, dvi],
            n: ni,
            b: bi,
            m: mi,
            first: i32::from(cfg.coarse_query == CoarseQuery::First),
            epoch,
        };
        let c = LaunchConfig {
            grid_dim: (m as u32, bh as u32, if defer { 2 } else { 3 }),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(
            // SAFETY: `block_means_*` (cuda/means.cu) takes one MeansParams; Q, K, V
            // were checked against the shapes, the outputs sized by the plan for their
            // heads' m blocks of d, `bad` holds three u64; grid (m, B·H ≥ B·Hkv, 3 tensors)
            // within the limits the plan checked; 256 threads as its launch bounds, no
            // dynamic shared memory. The call's first kernel: fully ordered after the
            // work before it.
            unsafe { enqueue(st, &kx.means[T::INDEX], c, &p, false) },
            "launching block_means",
        )?;
    }
    // 1b. Coarse logits, G̃, σ, gsum, h: plan::COARSE_ROWS block rows per CTA.
    if !plan.fused {
        let smem = plan.coarse_smem;
        kx.allow_smem(&kx.coarse, smem)?;
        let p = CoarseParams {
            qbar,
            kbar,
            vbar: vbar_coarse,
            g,
            sigma,
            gsum,
            h: h_arg,
            heads: hi,
            kv_heads: hkvi,
            n: ni,
            dk: dki,
            dv: dvi,
            b: bi,
            m: mi,
            scale,
            causal,
            nbuf: plan.coarse_bufs as i32,
        };
        launch(
            // SAFETY: `coarse` (cuda/coarse.cu) takes one CoarseParams; the scratch
            // buffers hold at least the plan's sizes for these dims; `smem` is the plan's
            // coarse_smem, within the device limit the plan checked and allowed above;
            // 256 threads as its launch bounds.
            unsafe {
                let c = cfg1(
                    (m.div_ceil(plan::COARSE_ROWS) as u32, bh as u32),
                    256,
                    smem as u32,
                );
                enqueue(st, &kx.coarse, c, &p, pdl)
            },
            "launching coarse",
        )?;
    }
    // 2.–5. Per block: local attention, local solves, block means of P and w.
    {
        let f = match plan.local {
            Local::Bidir { variant } => &kx.local_bidir[T::INDEX][variant],
            Local::BidirTc { variant } => &kx.local_bidir_tc[T::INDEX - 1][variant],
            Local::Tc { variant, .. } => &kx.local_tc[T::INDEX - 1][variant],
            Local::General => &kx.local[T::INDEX],
        };
        let (threads, smem) = (plan.local_threads, plan.local_smem);
        kx.allow_smem(f, smem)?;
        let p = LocalParams {
            q,
            k,
            v,
            y,
            w,
            pbar,
            cvec,
            sigma,
            gsum,
            h: h_arg,
            kbar,
            vbar,
            g,
            bad,
            heads: hi,
            kv_heads: hkvi,
            n: ni,
            dk: dki,
            dv: dvi,
            b: bi,
            m: mi,
            scale,
            gamma,
            first: i32::from(cfg.coarse_query == CoarseQuery::First),
            fused: i32::from(plan.fused),
            epoch,
            ticket0,
        };
        launch(
            // SAFETY: `local_causal_*` (cuda/local.cu), `local_tc_*` (cuda/local_tc.cu),
            // `local_bidir_*` (cuda/bidir.cu) and `local_bidir_tc_*` (cuda/bidir_tc.cu,
            // 16-bit types only, as the plan picks it) take one LocalParams; Q, K, V, Y were
            // checked against the shapes and the scratch holds the plan's sizes; the
            // plan picked `threads` within the chosen kernel's launch bounds and `smem`
            // for its layout, within the device limit it checked and allowed above. Fused
            // (local_tc only): k̄ and v̄ hold B·H·m rows, the record the plan's `record`
            // u64s, cleared when allocated, its flags below this call's epoch; the grid
            // has exactly the m·B·H CTAs its tickets count from `ticket0`. It is then the
            // call's first kernel, so fully ordered after the work before the call.
            unsafe {
                enqueue(
                    st,
                    f,
                    cfg1((m as u32, bh as u32), threads, smem as u32),
                    &p,
                    pdl && !plan.fused,
                )
            },
            "launching the local kernel",
        )?;
        if plan.fused {
            ws.tickets += (m * bh) as u64;
        }
    }
    // 6. Reduced system. Causal: the panels' inverses (all at once), then the blocked
    // solve. Bidirectional: blocked Gauss–Jordan on [I − γ·diag(c)·G̃ | p̄] (one launch
    // per panel of BIDIR_PANEL pivots), then s = G̃·u. All take one ReducedParams.
    let mut rp = ReducedParams {
        g,
        pbar,
        cvec,
        minv,
        s,
        m: mi,
        dv: dvi,
        gamma,
        p0: 0,
    };
    let reduced = |f: &CudaFunction,
                   rp: &ReducedParams,
                   grid: (usize, usize, usize),
                   threads: usize,
                   smem: usize,
                   what| {
        let c = LaunchConfig {
            grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        launch(
            // SAFETY: the six reduced kernels (cuda/reduced.cu, cuda/bidir.cu) take one
            // ReducedParams; `minv` holds the plan's ⌈m/32⌉ 32×32 panels per head
            // (causal) or its m × (m + dv) systems and two 32 × (m + dv) side buffers per
            // head (bidirectional, whose kernels take the head count from the grid as
            // passed here), `s` bh·m·dv; `p0` is a panel's first pivot, < m. The callers pass each kernel's launch bounds
            // and the grids their indexing assumes; for reduced_causal, the plan's
            // m·REDUCED_CW floats, within the device limit it checked and allowed; the
            // others use static shared memory only.
            unsafe { enqueue(st, f, c, rp, pdl) },
            what,
        )
    };
    if !cfg.causal {
        let [build, step, apply] = &kx.reduced_bidir;
        let w = m + dv;
        let what = "launching reduced_bidir_build";
        reduced(build, &rp, (m, bh, 1), 256, 0, what)?;
        for p0 in (0..m).step_by(plan::BIDIR_PANEL) {
            rp.p0 = p0 as i32;
            let right = w - (p0 + plan::BIDIR_PANEL).min(m);
            let grid = (
                right.div_ceil(plan::BIDIR_TILE),
                m.div_ceil(plan::BIDIR_TILE),
                bh,
            );
            reduced(step, &rp, grid, 256, 0, "launching reduced_bidir_step")?;
        }
        // The last panel's rows are in its side buffer; apply reads them there.
        rp.p0 = ((m - 1) / plan::BIDIR_PANEL * plan::BIDIR_PANEL) as i32;
        let grid = (
            m.div_ceil(plan::BIDIR_TILE),
            dv.div_ceil(plan::BIDIR_TILE),
            bh,
        );
        reduced(apply, &rp, grid, 256, 0, "launching reduced_bidir_apply")?;
    } else {
        let (panels, smem) = (m.div_ceil(32), plan.reduced_smem);
        let small = m <= plan::REDUCED_SMALL_M;
        let f = if small {
            &kx.reduced_small
        } else {
            &kx.reduced
        };
        kx.allow_smem(f, smem)?;
        if !small {
            reduced(
                &kx.reduced_inverses,
                &rp,
                (panels, bh, 1),
                32,
                0,
                "launching reduced_inverses",
            )?;
        }
        let cols = dv.div_ceil(plan::REDUCED_CW);
        reduced(
            f,
            &rp,
            (cols, bh, 1),
            256,
            smem,
            if small {
                "launching reduced_causal_small"
            } else {
                "launching reduced_causal"
            },
        )?;
    }
    // 7. Combine in place.
    {
        let p = CombineParams {
            y,
            w,
            s,
            n: ni,
            dv: dvi,
            b: bi,
            m: mi,
            gamma,
            coef: if defer { 1.0 } else { gamma },
        };
        let blocks = plan::combine_blocks(n, dv, std::mem::size_of::<T>());
        launch(
            // SAFETY: `combine_*` (cuda/combine.cu) takes one CombineParams; Y was
            // checked against the shapes, `w` and `s` hold the plan's sizes; the kernel
            // strides over the n·dv values of a head, no shared memory.
            unsafe {
                enqueue(
                    st,
                    &kx.combine[T::INDEX],
                    cfg1((blocks, bh as u32), 256, 0),
                    &p,
                    pdl,
                )
            },
            "launching combine",
        )?;
    }
    Ok(())
}
