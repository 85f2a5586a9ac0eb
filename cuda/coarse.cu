// SPEC §2 step 1b: coarse logits, the shifted coarse matrix G̃ and h = G̃·v̄ (h = 0 in the
// parameters: deferred h, common.cuh, and the v̄ passes are skipped).
//
// For the allowed J of block row I (J < I when causal, J ≠ I otherwise):
// L_IJ = scale·q̄_I·k̄_J + ln n_J, σ_I = max_J L_IJ, G̃_IJ = exp(L_IJ − σ_I) (0 where not
// allowed), gsum_I = Σ_J G̃_IJ and h_I = Σ_J G̃_IJ·v̄_J. The shift keeps every
// exponential ≤ 1; the local kernel folds σ_I back into the row normalizer. Block 0 of
// a causal head has no allowed J: σ = −inf, gsum = 0, h = 0, and the local kernel then
// adds no cross-block mass.
//
// Two small matrix products per head, register-tiled: one CTA (8 warps) per (group of
// RG = 16 block rows, query head), warp w owning rows 2w, 2w + 1 (RPW = 2) and lane l
// columns l and l + 32 of each 64-wide tile of J. Pass A: L tiles from q̄ (kept in shared
// memory) and staged k̄, written to g, with each row's running max. Pass B: each thread
// reads back its own L, writes G̃ over it, sums its rows, and the warp multiplies its rows
// of G̃ (through shared memory, transposed) by the staged v̄ tile into h. k̄ and v̄ tiles
// run through a two-deep cp.async pipeline, so a tile's copy overlaps the previous tile's
// products (p.nbuf = 2; one buffer, copies and products in turn, where shared memory is
// short: dk = dv = 128 on sm_86/89). Causal row groups run heaviest first (blockIdx.x
// reversed), so the CTAs with the most tiles are not the last to start. Still
// latency-bound, at 128 registers. 16 rows a CTA (twice the CTAs of 32: two an SM at
// n = 32768, H = 16, each rereading k̄ and v̄ from L2) measured faster than 32, and 8
// slower than 16 (BENCHMARKS.md, v59 and v60).
#include "common.cuh"

#define RPW 2          // block rows per warp
#define RG (8 * RPW)   // block rows per CTA
#define TJ 64  // columns J per tile
#define GT (32 + RPW)  // row stride of the transposed G̃ tile: RPW-float accesses by 32 lanes, no bank conflict

// A lane's RPW rows of one column of gT, moved as one RPW-float access.
struct alignas(4 * RPW) Rows {
    float v[RPW];
};

// Rows [0, nj) × columns [0, w4·4) of a row-major f32 matrix of width d into `dst` (row
// stride ld), zero past d; w4 ≤ 32 (d ≤ 128, the plan's limit). Asynchronous when d
// allows 16-byte copies; the caller commits, waits (cp.async.wait_group) and
// synchronizes. A power of two of threads per row and the addresses stepped, not
// recomputed (a flat index divided by w4 cost about 45 instructions a copy).
__device__ __forceinline__ void stage(float* dst, const float* src, int nj, int d, int w4, int ld) {
    const int tl = w4 <= 1 ? 0 : 32 - __clz(w4 - 1);  // log2 of threads per row
    const int q = threadIdx.x & ((1 << tl) - 1), rpp = blockDim.x >> tl;
    const int c = 4 * q;
    int jl = threadIdx.x >> tl;
    if (q < w4) {
        const float* sr = src + (long long)jl * d + c;
        float* o = dst + jl * ld + c;
        if (d % 4 == 0 && c + 4 <= d) {
            u32 oa = smem_addr(o);
            for (; jl < nj; jl += rpp, sr += (long long)rpp * d, oa += 4 * rpp * ld)
                cp_async16(oa, sr);
        } else {
            for (; jl < nj; jl += rpp, sr += (long long)rpp * d, o += rpp * ld)
#pragma unroll
                for (int u = 0; u < 4; ++u) o[u] = c + u < d ? sr[u] : 0.0f;
        }
    }
}

// Row stride (floats) of a staged f32 matrix of width d: rounded up to 4 and to an odd
// number of float4s, so the 8 lanes of a 16-byte load phase reading 8 consecutive rows
// hit different banks. Mirrored by coarse_smem() in src/gpu/plan.rs.
__device__ __forceinline__ int odd_stride(int d) {
    const int d4 = (d + 3) / 4;
    return (d4 % 2 == 0 ? d4 + 1 : d4) * 4;
}

extern "C" __global__ void __launch_bounds__(256, 2) coarse(const CoarseParams p) {
    pdl_trigger();
    pdl_wait();
    const int H = p.H, Hkv = p.Hkv, n = p.n, dk = p.dk, dv = p.dv, b = p.b, m = p.m;
    const float scale = p.scale;
    const int causal = p.causal;
    const bool defer = p.h == nullptr;  // deferred h: G̃, σ, gsum only, v̄ not read
    const int tid = threadIdx.x, lane = tid & 31, warp = warp_index();
    const int I0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * RG;
    const int bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const float* kb = p.kbar + kvh * m * dk;
    const float* vb = p.vbar + kvh * m * dv;
    float* gh = p.g + (long long)bh * m * m;
    const int ldk = odd_stride(dk), ldv = odd_stride(dv), dk4 = (dk + 3) / 4, dv4 = (dv + 3) / 4;
    const int ldb = max(ldk, ldv), nbuf = p.nbuf;
    // q̄ rows (RG × ldk), nbuf staging buffers (TJ × ldb each), the transposed G̃ tile.
    extern __shared__ __align__(16) float sm[];
    float* qs = sm;
    float* buf0 = qs + RG * ldk;
    float* gT = buf0 + nbuf * TJ * ldb;
    require_smem(4ll * (RG * ldk + nbuf * TJ * ldb + TJ * GT));
    // Every row of the group allows no J at or past jend; T tiles cover [0, jend).
    const int jend = causal ? min(m, I0 + RG - 1) : m;
    const int T = (jend + TJ - 1) / TJ;
    stage(qs, p.qbar + ((long long)bh * m + I0) * dk, min(RG, m - I0), dk, dk4, ldk);
    // Job s < T stages k̄ tile s, job T + t stages v̄ tile t, alternating buffers.
    auto slot = [&](int s) { return buf0 + (nbuf == 2 ? (s & 1) : 0) * TJ * ldb; };
    auto issue = [&](int s) {
        if (s < 2 * T) {
            const int t = s < T ? s : s - T, nj = min(TJ, jend - t * TJ);
            float* dst = slot(s);
            if (s < T) stage(dst, kb + (long long)t * TJ * dk, nj, dk, dk4, ldk);
            else if (!defer) stage(dst, vb + (long long)t * TJ * dv, nj, dv, dv4, ldv);
        }
        asm volatile("cp.async.commit_group;");
    };
    issue(0);  // in the same group as q̄
    const float ln_b = logf((float)b);
    const float ln_last = logf((float)(n - (m - 1) * b));
    const int r0 = RPW * warp;  // the warp's first row in the group
    float mx[RPW], sum[RPW], hacc[RPW][4];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        mx[i] = neg_inf();
        sum[i] = 0.0f;
#pragma unroll
        for (int u = 0; u < 4; ++u) hacc[i][u] = 0.0f;
    }
    for (int s = 0; s < 2 * T; ++s) {
        if (nbuf == 2) {
            issue(s + 1);
            asm volatile("cp.async.wait_group 1;" ::: "memory");
        } else {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
        }
        __syncthreads();
        const float* st = slot(s);
        const int t = s < T ? s : s - T, J0 = t * TJ, nj = min(TJ, jend - J0);
        if (s < T) {
            // Pass A: L for rows r0..r0+RPW−1, columns lane and lane + 32.
            float acc[RPW][2];
#pragma unroll
            for (int i = 0; i < RPW; ++i) acc[i][0] = acc[i][1] = 0.0f;
            const float* k0 = st + lane * ldk;
            const float* k1 = k0 + 32 * ldk;
            for (int c4 = 0; c4 < dk4; ++c4) {
                const float4 ka = *reinterpret_cast<const float4*>(k0 + 4 * c4);
                const float4 kc = *reinterpret_cast<const float4*>(k1 + 4 * c4);
#pragma unroll
                for (int i = 0; i < RPW; ++i) {
                    const float4 q = *reinterpret_cast<const float4*>(qs + (r0 + i) * ldk + 4 * c4);
                    acc[i][0] = fmaf(q.x, ka.x, fmaf(q.y, ka.y, fmaf(q.z, ka.z, fmaf(q.w, ka.w, acc[i][0]))));
                    acc[i][1] = fmaf(q.x, kc.x, fmaf(q.y, kc.y, fmaf(q.z, kc.z, fmaf(q.w, kc.w, acc[i][1]))));
                }
            }
#pragma unroll
            for (int i = 0; i < RPW; ++i) {
                const int I = I0 + r0 + i;
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int jl = lane + 32 * c, J = J0 + jl;
                    const bool ok = jl < nj && I < m && (causal ? J < I : J != I);
                    const float l = ok ? scale * acc[i][c] + (J == m - 1 ? ln_last : ln_b) : neg_inf();
                    mx[i] = fmaxf(mx[i], l);
                    if (I < m && J < m) gh[(long long)I * m + J] = l;
                }
            }
            if (s == T - 1) {
#pragma unroll
                for (int i = 0; i < RPW; ++i) mx[i] = warp_max(mx[i]);
            }
        } else {
            // Pass B: G̃ over this thread's own L (no other thread wrote it), the tile
            // transposed into gT for the warp's product with v̄.
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                const int jl = lane + 32 * c, J = J0 + jl;
                Rows ev;
                float* e = ev.v;
#pragma unroll
                for (int i = 0; i < RPW; ++i) {
                    const int I = I0 + r0 + i;
                    const bool in = I < m && J < m;
                    const float l = in && jl < nj ? gh[(long long)I * m + J] : neg_inf();
                    e[i] = l == neg_inf() ? 0.0f : __expf(l - mx[i]);
                    sum[i] += e[i];
                    if (in) gh[(long long)I * m + J] = e[i];
                }
                if (!defer) *reinterpret_cast<Rows*>(gT + jl * GT + r0) = ev;
            }
            __syncwarp();
            for (int jl = 0; jl < (defer ? 0 : nj); ++jl) {
                const Rows gv = *reinterpret_cast<const Rows*>(gT + jl * GT + r0);
                const float* vr = st + jl * ldv + lane;
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    // Only the lane's own columns: a read past dv would reach the other
                    // buffer (being staged) or gT (being written by other warps).
                    if (lane + 32 * u < dv) {
                        const float v = vr[32 * u];
#pragma unroll
                        for (int i = 0; i < RPW; ++i) hacc[i][u] = fmaf(gv.v[i], v, hacc[i][u]);
                    }
                }
            }
        }
        __syncthreads();  // the buffer is staged over next (one buffer) or two jobs on
        if (nbuf == 1) issue(s + 1);
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int I = I0 + r0 + i;
        if (I >= m) continue;
        const float gs = warp_sum(sum[i]);
        const long long row = (long long)bh * m + I;
        if (lane == 0) {
            p.sigma[row] = mx[i];
            p.gsum[row] = gs;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (!defer && lane + 32 * u < dv) p.h[row * dv + lane + 32 * u] = hacc[i][u];
        // Columns past the last tile: no J there is allowed.
        for (int J = T * TJ + lane; J < m; J += 32) gh[(long long)I * m + J] = 0.0f;
    }
}
