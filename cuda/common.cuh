// Shared helpers of the blockres kernels (SPEC §2).
//
// No NVIDIA header is included anywhere: element conversions and the tensor-core
// product are written as inline PTX, so every kernel compiles with a bare NVRTC
// (the PyPI nvidia-cuda-nvrtc wheel on a machine without a GPU or a toolkit).
// Each .cu file includes this one; the compile step (cuda/compile_ptx.py and
// src/gpu/module.rs) substitutes it textually.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Half-precision storage types: the raw bits, so no header types are needed.
struct bf16_t { u16 x; };
struct f16_t { u16 x; };

// The kernel ABI: every entry point of a kernel family takes that family's parameter
// struct by value (FlashAttention's Flash_fwd_params), not a list of ~20 positional
// arguments whose order two languages must keep in step. src/gpu/params.rs mirrors
// each struct field for field (#[repr(C)]); its tests read every entry point's
// parameter size out of the built PTX and compare it with the Rust struct's size.
// Element pointers are untyped here: the typed entry points (NAME_f32, NAME_f16,
// NAME_bf16) cast them to their T. Shapes and sizes as in SPEC §4; b is the block
// size and m = ceil(n / b) the number of blocks.

// block_means_*: per-block means of Q, K and V (t = 0, 1, 2) in one launch, grid
// (m, max heads, 3), blockIdx.z = t; tensor t's non-finite flag in bad[t].
struct MeansParams {
    const void* x[3];
    float* out[3];
    u64* bad;
    int heads[3];
    int d[3];
    int n, b, m;
    int first;  // 1: Q's block's first row instead of its mean (coarse_query = first)
    u64 epoch;  // the call's epoch in its workspace (rec_value)
};

// coarse: G̃, σ, gsum and h from the block means. h = 0 (deferred h, see LocalParams):
// G̃, σ, gsum only, and v̄ is not read.
struct CoarseParams {
    const float *qbar, *kbar, *vbar;
    float *g, *sigma, *gsum, *h;
    int H, Hkv, n, dk, dv, b, m;
    float scale;
    int causal;
    int nbuf;  // staging buffers, 1 or 2
};

// local_causal_*, local_tc_*, local_bidir_*: the within-block stage. With `fused` (the
// causal local_tc only) the kernel also does the means and the coarse row (cuda/local_tc.cu):
// then sigma, gsum, h are unused, and it writes k̄, v̄ (one copy per query head) and G̃, and
// uses bad[0..3) (non-finite record), bad[3] (CTA ticket counter, not reset per call: the
// CTA's ticket is its count less ticket0, the workspace's count before the call) and
// bad[4 ..) (per-block flags, set to the call's epoch when published). Without `fused`,
// h = 0 (the causal local_tc only) defers h: P leaves out z⊗h (P′ = P − w⊗h, SPEC §2
// step 3 without its second term), the kernel keeps V's non-finite record (bad[2])
// itself and writes v̄_I + γ·p̄′_I where p̄_I goes, and the reduced and combine stages
// put h back (ReducedParams, CombineParams).
struct LocalParams {
    const void *q, *k, *v;
    void* y;
    float *w, *pbar, *cvec;
    const float *sigma, *gsum, *h;
    float *kbar, *vbar, *g;
    u64* bad;
    int H, Hkv, n, dk, dv, b, m;
    float scale, gamma;
    int first, fused;
    u64 epoch, ticket0;
};

// reduced_inverses, reduced_causal(_small), reduced_bidir_{build,step,apply}: the m×m system.
// minv holds the causal panels' inverses, or the bidirectional augmented matrices and
// their side buffers; p0 is the first pivot of the bidirectional elimination's current
// (step) or last (apply) panel. With deferred h (causal, LocalParams) pbar holds
// v̄ + γ·p̄′, p̄′ the means of P′ = P − w⊗h, and the same solve gives x = v̄ + γ·u
// (R·u = p̄′ + c⊙h with h = G̃·v̄ makes R·(v̄ + γu) = v̄ − γc⊙h + γp̄′ + γc⊙h), so
// s = G̃·x = h + γ·G̃·u: the kernels do not know which.
struct ReducedParams {
    const float *g, *pbar, *cvec;
    float *minv, *s;
    int m, dv;
    float gamma;
    int p0;
};

// combine_*: y ← (1−γ)·(y + coef·w⊗s), in place: coef = γ, or 1 with deferred h (where
// y holds P′ and s = h + γ·G̃·u, which gives the same Y).
struct CombineParams {
    void* y;
    const float *w, *s;
    int n, dv, b, m;
    float gamma, coef;
};

// The local family's body arguments, in its kernels' parameter order.
#define BLOCKRES_LOCAL_ARGS(T, p)                                                             \
    static_cast<const T*>(p.q), static_cast<const T*>(p.k), static_cast<const T*>(p.v),     \
        static_cast<T*>(p.y), p.w, p.pbar, p.cvec, p.sigma, p.gsum, p.h, p.H, p.Hkv, p.n, p.dk, \
        p.dv, p.b, p.m, p.scale, p.gamma

// decode_keys_*, decode_step_*, decode_prefill_*: incremental decoding (SPEC §6).
struct DecodeParams {
    const void *q, *k, *v;
    void* y;
    float *kc, *zc, *ks, *zs, *co;
    u64* bad;
    int H, Hkv, s, len, cap, dk, dv, b, maxb;
    float scale, gamma;
};

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16_t v) { return __uint_as_float(((u32)v.x) << 16); }
__device__ __forceinline__ float to_f(f16_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
    return f;
}

template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16_t from_f<bf16_t>(float v) {
    bf16_t r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.x) : "f"(v));
    return r;
}
template <> __device__ __forceinline__ f16_t from_f<f16_t>(float v) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(v));
    return r;
}

// Non-finite records (the host's `bad` buffers) hold max(FLAG − flat index) over the
// non-finite elements found, so 0 means none and the smallest index wins (atomicMax);
// src/gpu/decode.rs counts down from the same value.
#define FLAG (1ull << 62)

// The block path's records carry the call's epoch above REC_MASK − flat index: a record
// left by an earlier call is always smaller, the call's smallest index wins, and the host
// clears the buffer when it allocates it (and when epochs wrap), not before every call
// (a memset and its gap before the first kernel). src/gpu/mod.rs decodes the same way.
// Flat indices stay below 2^40: no device holds a tensor of 2^40 elements.
#define REC_SHIFT 40
#define REC_MASK ((1ull << REC_SHIFT) - 1)
__device__ __forceinline__ u64 rec_value(u64 epoch, u64 index) { return (epoch << REC_SHIFT) | (REC_MASK - index); }

// True for finite values; written without isfinite() so it needs no header.
__device__ __forceinline__ bool finite_f(float x) { return (x - x) == 0.0f; }

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Warp-wide sum and max.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reduction through `red` (32 floats of shared memory); every thread gets
// the result. blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : neg_inf();
    return warp_max(v);
}

// The kv head that query head `bh` (flattened batch·H + h) reads: grouped-query
// attention maps H/Hkv consecutive query heads to one kv head (SPEC §4).
// Without grouping it is bh itself: no run-time division (three of them cost about 80
// instructions a warp, ncu v31, beside a local kernel's 3,500).
__device__ __forceinline__ long long kv_head(int bh, int H, int Hkv) {
    if (H == Hkv) return bh;
    return (long long)(bh / H) * Hkv + (bh % H) / (H / Hkv);
}

// One m16n8k16 tensor-core product D = A·B + D, f32 accumulation (sm_80+).
// A: 16×16 row-major fragment (4 regs of two 16-bit values), B: 16×8 column-major (2
// regs), C/D: 16×8 f32 (4 regs). Fragment layout (PTX ISA, "mma.m16n8k16"): with
// g = lane/4, t = lane%4: a0 (row g, k 2t..2t+1), a1 (row g+8), a2 (row g, k+8),
// a3 (row g+8, k+8); b0 (k 2t..2t+1, col g), b1 (k+8); c0,c1 (row g, cols 2t, 2t+1),
// c2,c3 (row g+8).
template <class T> struct Mma;
template <> struct Mma<bf16_t> {
    static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
            "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};
template <> struct Mma<f16_t> {
    static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
            "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

// The shared-memory (state space) address of a generic pointer to shared memory, for
// the instructions that take one (ldmatrix, cp.async, mbarrier).
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16-byte asynchronous copy global → shared (sm_80+); completes at cp.async.wait_group.
// `dst` as a shared-memory address, for loops that step it instead of converting a
// pointer per copy.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) { cp_async16(smem_addr(dst), src); }

// Fast exponentials and reciprocals for the softmax and the diagonal solves, one
// instruction each (the IEEE-rounded reciprocal and __expf's denormal handling cost a
// dozen; their arguments here are never denormal). rcp.approx and ex2.approx err by at
// most about one ulp (PTX ISA).
#define LOG2E 1.4426950408889634f
__device__ __forceinline__ float rcp_approx(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// e^(scale·s − mx) = 2^(s·kl + mb) with kl = scale·log2(e) and mb = exp_offset(mx): one
// FFMA and one ex2 (FlashAttention's softmax_scale_log2). s = −inf gives 0; a row whose
// maximum is −inf (nothing allowed) gets offset 0, so it gives 0 rather than NaN.
__device__ __forceinline__ float exp_offset(float mx) { return mx == neg_inf() ? 0.0f : -mx * LOG2E; }
__device__ __forceinline__ float scaled_exp(float s, float kl, float mb) { return ex2_approx(fmaf(s, kl, mb)); }

// The warp's index in the CTA, broadcast from lane 0: the compiler then knows it is
// warp-uniform, so conditions on it (a warp's share of a causal block, its panel) become
// uniform branches instead of predicated code with a convergence check (WARPSYNC,
// BSSY/BSYNC) around every ldmatrix, mma and shuffle they guard. Call it where all 32
// lanes are converged.
__device__ __forceinline__ int warp_index() { return __shfl_sync(0xffffffffu, threadIdx.x >> 5, 0); }

// Programmatic dependent launch (sm_90+). The launcher enqueues every kernel of a call
// after the first with the programmatic-serialization attribute (src/gpu/launch.rs), so
// a kernel's CTAs may start while the kernel before it is still running: once every CTA
// of that kernel has called pdl_trigger (or exited). A kernel may therefore run code
// before pdl_wait concurrently with any earlier kernel of the call: that code reads
// only the call's inputs (Q, K, V, which no kernel writes) and writes only shared
// memory. pdl_wait returns when the kernels before have finished and their writes are
// visible. Both are no-ops in a launch without the attribute and before sm_90.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Publishing what a CTA wrote to other CTAs, after a __syncthreads: an acquire-release
// fence at GPU scope, then a relaxed atomic (the pattern of CUTLASS's barriers).
__device__ __forceinline__ void gpu_release_store(u64* c, u64 v) {
    asm volatile("fence.acq_rel.gpu;\n\tst.relaxed.gpu.global.u64 [%0], %1;" ::"l"(c), "l"(v) : "memory");
}

// The launcher sizes each launch's dynamic shared memory from src/gpu/plan.rs, whose
// formulas mirror the kernels' layouts. Each kernel checks that the layout it is about
// to carve fits what it was given (%dynamic_smem_size), so a mismatch between the two
// sides is a launch error (trap), never a silent write past the allocation.
__device__ __forceinline__ void require_smem(long long need) {
    u32 have;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(have));
    if (need > (long long)have) asm volatile("trap;");
}

// Two floats packed as the 16-bit type, the first in the low half (lower k or column).
template <class T> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<bf16_t>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ u32 pack2<f16_t>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// The two halves of a packed pair back in f32.
template <class T> __device__ __forceinline__ void unpack2(u32 p, float& lo, float& hi);
template <> __device__ __forceinline__ void unpack2<bf16_t>(u32 p, float& lo, float& hi) {
    lo = __uint_as_float(p << 16);
    hi = __uint_as_float(p & 0xffff0000u);
}
template <> __device__ __forceinline__ void unpack2<f16_t>(u32 p, float& lo, float& hi) {
    f16_t a, b;
    a.x = (u16)(p & 0xffffu);
    b.x = (u16)(p >> 16);
    lo = to_f(a);
    hi = to_f(b);
}
// hi = the pair rounded to T, lo = what hi missed, rounded to T: hi + lo carries about
// twice T's significand through the tensor cores.
template <class T> __device__ __forceinline__ void split2(float a, float b, u32& hi, u32& lo) {
    hi = pack2<T>(a, b);
    float ha, hb;
    unpack2<T>(hi, ha, hb);
    lo = pack2<T>(a - ha, b - hb);
}

// Two adjacent 16-bit values (a fragment register of mma.m16n8k16) from shared memory.
template <class T> __device__ __forceinline__ u32 ld_u32(const T* p) {
    return *reinterpret_cast<const u32*>(p);
}

// Rows [0, rows) of a row-major rows_valid × cols source of a 16-bit type into dst, kept
// as is (tensor-core operands), row stride ld, zero past rows_valid and in columns
// [cols, zero_to). ld is a multiple of 8 elements, so 16-byte rows stay aligned.
template <class T>
__device__ __forceinline__ void stage_rows16(T* dst, int ld, const T* __restrict__ src, int rows,
                                             int rows_valid, int cols, int zero_to, int tid, int nt) {
    const T zero = from_f<T>(0.0f);
    if (cols % 8 == 0 && ((unsigned long long)src & 15) == 0) {
        const int vr = cols / 8;
        for (int idx = tid; idx < rows * vr; idx += nt) {
            const int r = idx / vr, c = (idx - r * vr) * 8;
            *reinterpret_cast<uint4*>(dst + r * ld + c) =
                r < rows_valid ? *reinterpret_cast<const uint4*>(src + (long long)r * cols + c)
                               : make_uint4(0, 0, 0, 0);
        }
    } else {
        for (int idx = tid; idx < rows * cols; idx += nt) {
            const int r = idx / cols, c = idx - r * cols;
            dst[r * ld + c] = r < rows_valid ? src[(long long)r * cols + c] : zero;
        }
    }
    const int zw = zero_to - cols;
    for (int idx = tid; idx < rows * zw; idx += nt) {
        const int r = idx / zw;
        dst[r * ld + cols + idx - r * zw] = zero;
    }
}

// The transpose of rows [0, rows) of a row-major rows_valid × cols source, 16-bit kept as
// is: dst[c·ld + r] for c < zero_to (zero from cols on, and past rows_valid).
template <class T>
__device__ __forceinline__ void stage_cols16(T* dst, int ld, const T* __restrict__ src, int rows,
                                             int rows_valid, int cols, int zero_to, int tid, int nt) {
    const T zero = from_f<T>(0.0f);
    for (int idx = tid; idx < rows * zero_to; idx += nt) {
        const int r = idx / zero_to, c = idx - r * zero_to;
        dst[c * ld + r] = r < rows_valid && c < cols ? src[(long long)r * cols + c] : zero;
    }
}

// The row normalizer of a softmax held in mma accumulators: rows g (h = 0) and g + 8
// (h = 1) of a warp's strip, each spread over the 4 lanes of a quad. quad_max2 takes the
// rows' maxima over the quad; after the caller's exponentials, quad_normalizer sums them
// over the quad and adds the coarse part: invz = 1/(Σ_local + e^(σ − max)·gsum) for a
// live row (0 for padding), zr = e^(σ − max)·invz, its weight on the coarse value.
__device__ __forceinline__ void quad_max2(float* mx) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
}
// From the raw (unscaled) row maxima of a thread's two rows: the rows' maxima over the
// quad, scaled and folded with the coarse shift σ (mx, in the logits' units, for
// quad_normalizer), and the offsets mb for scaled_exp.
__device__ __forceinline__ void quad_shift(float* mx, float scale, float sig, float* mb) {
    quad_max2(mx);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h] * scale, sig);
        mb[h] = exp_offset(mx[h]);
    }
}
__device__ __forceinline__ void quad_normalizer(float* lsum, const float* mx, float sig, float gs,
                                                const bool* live, float* invz, float* zr) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        lsum[h] += __shfl_xor_sync(0xffffffffu, lsum[h], 1);
        lsum[h] += __shfl_xor_sync(0xffffffffu, lsum[h], 2);
        const float ecross = (gs > 0.0f && live[h]) ? __expf(sig - mx[h]) : 0.0f;
        invz[h] = live[h] ? rcp_approx(lsum[h] + ecross * gs) : 0.0f;  // argument ≥ 1
        zr[h] = ecross * invz[h];
    }
}

// acc[j] += Q·Kᵀ for the 16 rows at q16 (row 16w of a warp's strip) against the keys
// 8j .. 8j + 7 (j < NT8), both 16-bit in shared memory with row stride ld, over dk16
// (a multiple of 16) columns; g = lane/4, t = lane%4 (the mma fragment roles).
template <class T, int NT8>
__device__ __forceinline__ void strip_logits(float (*acc)[4], const T* q16, const T* k16, int ld,
                                             int dk16, int g, int t) {
    for (int kc = 0; kc < dk16; kc += 16) {
        const T* qa = q16 + g * ld + kc + 2 * t;
        const u32 af[4] = {ld_u32(qa), ld_u32(qa + 8 * ld), ld_u32(qa + 8), ld_u32(qa + 8 * ld + 8)};
#pragma unroll
        for (int j = 0; j < NT8; ++j) {
            const T* kb = k16 + (8 * j + g) * ld + kc + 2 * t;
            const u32 bf[2] = {ld_u32(kb), ld_u32(kb + 8)};
            Mma<T>::run(acc[j], af, bf);
        }
    }
}

// A block's [P | w], f32 in shared memory (nb rows, stride dv + 1), to its rows of Y
// (the element type; 16-byte stores where the rows allow), of w, and to the block means
// p̄_I (pbar_i, dv floats) and c_I: the last step of the bidirectional local kernels.
template <class T>
__device__ __forceinline__ void store_block_outputs(const float* ps, int nb, int dv, T* yh,
                                                    float* wh, float* pbar_i, float* c_i,
                                                    int tid, int nt) {
    const int lp1 = dv + 1;
    constexpr int E = 16 / sizeof(T);
    if (dv % E == 0 && ((unsigned long long)yh & 15) == 0) {
        const int vr = dv / E;
        for (int idx = tid; idx < nb * vr; idx += nt) {
            const int r = idx / vr, c = (idx - r * vr) * E;
            uint4 raw;
            T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
            for (int t = 0; t < E; ++t) e[t] = from_f<T>(ps[r * lp1 + c + t]);
            *reinterpret_cast<uint4*>(yh + (long long)r * dv + c) = raw;
        }
    } else {
        for (int idx = tid; idx < nb * dv; idx += nt) {
            const int r = idx / dv, c = idx - r * dv;
            yh[idx] = from_f<T>(ps[r * lp1 + c]);
        }
    }
    for (int r = tid; r < nb; r += nt) wh[r] = ps[r * lp1 + dv];
    const float invn = 1.0f / (float)nb;
    for (int c = tid; c <= dv; c += nt) {
        float s = 0.0f;
        for (int r = 0; r < nb; ++r) s += ps[r * lp1 + c];
        if (c < dv)
            pbar_i[c] = s * invn;
        else
            *c_i = s * invn;
    }
}

// Instantiate `extern "C"` entry points of a kernel template for the three element
// types, named NAME_f32, NAME_f16 and NAME_bf16 (the Rust side looks them up so).
#define BLOCKRES_FOR_TYPES(M) M(float, f32) M(f16_t, f16) M(bf16_t, bf16)
